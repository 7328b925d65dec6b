//! A client's private key for `private_key_jwt` (RFC 7523 §2.2), from a PEM
//! file (PKCS#8, PKCS#1 or SEC1: RSA, P-256, P-384, Ed25519) or a private
//! JWK (RSA or EC), and the client assertion it signs.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::TokenToolError;

/// RFC 7523 §2.2.
pub const CLIENT_ASSERTION_TYPE: &str = crate::oauth::client_auth::CLIENT_ASSERTION_TYPE;

/// How long an assertion lives: servers refuse long ones (mcpgate: 10 minutes).
const ASSERTION_LIFETIME_SECS: i64 = 300;

pub struct SigningKey {
    key: EncodingKey,
    pub alg: Algorithm,
    /// The JWK's `kid`, or the one given on the command line.
    pub kid: Option<String>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn bad(reason: impl Into<String>) -> TokenToolError {
    TokenToolError::Input(format!("the private key: {}", reason.into()))
}

impl SigningKey {
    /// A PEM or a private JWK (`{"kty": …}`); `kid` overrides the JWK's.
    pub fn parse(text: &SecretString, kid: Option<String>) -> Result<SigningKey, TokenToolError> {
        let text = text.expose_secret().trim();
        let mut key = if text.starts_with('{') {
            from_jwk(text)?
        } else if text.starts_with("-----BEGIN") {
            from_pem(text)?
        } else {
            return Err(bad(
                "neither a PEM (-----BEGIN … PRIVATE KEY-----) nor a private JWK ({\"kty\": …})",
            ));
        };
        if kid.is_some() {
            key.kid = kid;
        }
        Ok(key)
    }

    /// A client assertion for `client_id` at `audience` (the token endpoint),
    /// valid for five minutes from `now`, with a fresh `jti`.
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: i64,
    ) -> Result<String, TokenToolError> {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        let claims = serde_json::json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| bad(format!("cannot sign the client assertion with it: {e}")))
    }
}

fn from_pem(text: &str) -> Result<SigningKey, TokenToolError> {
    let bytes = text.as_bytes();
    let key = |key, alg| SigningKey {
        key,
        alg,
        kid: None,
    };
    if text.contains("ENCRYPTED PRIVATE KEY") {
        return Err(bad(
            "the PEM is encrypted; decrypt it first (openssl pkcs8 -in key.pem -nocrypt)",
        ));
    }
    if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        return from_sec1_pem(text);
    }
    if let Ok(k) = EncodingKey::from_rsa_pem(bytes) {
        return Ok(key(k, Algorithm::RS256));
    }
    if let Ok(k) = EncodingKey::from_ec_pem(bytes) {
        // The curve decides the algorithm; jsonwebtoken keeps PKCS#8 DER.
        let der = k.as_bytes();
        for (signing, alg) in [
            (&ECDSA_P256_SHA256_FIXED_SIGNING, Algorithm::ES256),
            (&ECDSA_P384_SHA384_FIXED_SIGNING, Algorithm::ES384),
        ] {
            if EcdsaKeyPair::from_pkcs8(signing, der).is_ok() {
                return Ok(key(k, alg));
            }
        }
        return Err(bad("an EC key on a curve other than P-256 or P-384"));
    }
    if let Ok(k) = EncodingKey::from_ed_pem(bytes) {
        return Ok(key(k, Algorithm::EdDSA));
    }
    Err(bad(
        "the PEM holds no RSA, EC (PKCS#8) or Ed25519 private key (a public key or a certificate is not enough)",
    ))
}

/// SEC1 `EC PRIVATE KEY` (what `openssl ecparam -genkey` writes), which
/// jsonwebtoken does not read: re-encoded as PKCS#8.
fn from_sec1_pem(text: &str) -> Result<SigningKey, TokenToolError> {
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| bad("the EC PEM's body is not base64"))?;
    for (signing, alg) in [
        (&ECDSA_P256_SHA256_FIXED_SIGNING, Algorithm::ES256),
        (&ECDSA_P384_SHA384_FIXED_SIGNING, Algorithm::ES384),
    ] {
        if let Ok(pair) = EcdsaKeyPair::from_private_key_der(signing, &der) {
            let pkcs8 = pair
                .to_pkcs8v1()
                .map_err(|_| bad("the EC key cannot be serialized"))?;
            return Ok(SigningKey {
                key: EncodingKey::from_ec_der(pkcs8.as_ref()),
                alg,
                kid: None,
            });
        }
    }
    Err(bad("the EC PEM holds no P-256 or P-384 private key"))
}

fn from_jwk(text: &str) -> Result<SigningKey, TokenToolError> {
    let jwk: Value = serde_json::from_str(text).map_err(|_| bad("not valid JSON"))?;
    // A key set with one key is common (what IdP consoles download).
    let jwk = match jwk.get("keys").and_then(Value::as_array) {
        Some(keys) if keys.len() == 1 => keys[0].clone(),
        Some(_) => return Err(bad("a key set: give a file with exactly one private key")),
        None => jwk,
    };
    let field = |name: &str| -> Result<Vec<u8>, TokenToolError> {
        let text = jwk
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("the JWK has no {name:?} (is it the public half?)")))?;
        URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| bad(format!("the JWK's {name:?} is not base64url")))
    };
    let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
    let named_alg = jwk.get("alg").and_then(Value::as_str);
    match jwk.get("kty").and_then(Value::as_str) {
        Some("EC") => {
            let (signing, alg, size): (&'static EcdsaSigningAlgorithm, _, _) =
                match jwk.get("crv").and_then(Value::as_str) {
                    Some("P-256") => (&ECDSA_P256_SHA256_FIXED_SIGNING, Algorithm::ES256, 32),
                    Some("P-384") => (&ECDSA_P384_SHA384_FIXED_SIGNING, Algorithm::ES384, 48),
                    other => return Err(bad(format!("EC curve {other:?} is not P-256 or P-384"))),
                };
            let (d, x, y) = (field("d")?, field("x")?, field("y")?);
            if x.len() != size || y.len() != size {
                return Err(bad("the JWK's x and y do not fit its curve"));
            }
            let point = [&[4u8][..], &x, &y].concat();
            let pair = EcdsaKeyPair::from_private_key_and_public_key(signing, &d, &point)
                .map_err(|e| bad(format!("the EC JWK is not a valid key pair: {e}")))?;
            let pkcs8 = pair
                .to_pkcs8v1()
                .map_err(|_| bad("the EC JWK cannot be serialized"))?;
            Ok(SigningKey {
                key: EncodingKey::from_ec_der(pkcs8.as_ref()),
                alg,
                kid,
            })
        }
        Some("RSA") => {
            let parts = ["n", "e", "d", "p", "q", "dp", "dq", "qi"]
                .iter()
                .map(|name| field(name))
                .collect::<Result<Vec<_>, _>>()?;
            let der = rsa_private_key_der(&parts);
            // Refuse an inconsistent key here rather than at signing time.
            aws_lc_rs::rsa::KeyPair::from_der(&der)
                .map_err(|e| bad(format!("the RSA JWK is not a valid key: {e}")))?;
            let alg = match named_alg {
                None | Some("RS256") => Algorithm::RS256,
                Some("RS384") => Algorithm::RS384,
                Some("RS512") => Algorithm::RS512,
                Some("PS256") => Algorithm::PS256,
                Some("PS384") => Algorithm::PS384,
                Some("PS512") => Algorithm::PS512,
                Some(other) => return Err(bad(format!("alg {other:?} is not an RSA algorithm"))),
            };
            Ok(SigningKey {
                key: EncodingKey::from_rsa_der(&der),
                alg,
                kid,
            })
        }
        other => Err(bad(format!(
            "kty {other:?}: only RSA and EC private JWKs are read (use a PEM for Ed25519)"
        ))),
    }
}

/// PKCS#1 `RSAPrivateKey` (RFC 8017 A.1.2): version 0, then the eight
/// integers in JWK order n, e, d, p, q, dp, dq, qi.
fn rsa_private_key_der(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut body = der_integer(&[0]);
    for part in parts {
        body.extend(der_integer(part));
    }
    der_tlv(0x30, &body)
}

fn der_integer(unsigned: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = match unsigned.iter().position(|b| *b != 0) {
        Some(i) => &unsigned[i..],
        None => &[0],
    };
    // A leading 1 bit would read as negative: pad with a zero byte.
    let mut value = Vec::with_capacity(trimmed.len() + 1);
    if trimmed[0] & 0x80 != 0 {
        value.push(0);
    }
    value.extend_from_slice(trimmed);
    der_tlv(0x02, &value)
}

fn der_tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::KeyPair;
    use jsonwebtoken::{DecodingKey, Validation};

    fn verify(assertion: &str, key: &DecodingKey, alg: Algorithm) -> Value {
        let mut validation = Validation::new(alg);
        validation.set_audience(&["https://as.example/token"]);
        validation.validate_exp = false;
        jsonwebtoken::decode::<Value>(assertion, key, &validation)
            .unwrap()
            .claims
    }

    #[test]
    fn an_ec_jwk_signs_an_assertion_its_public_half_verifies() {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let d =
            aws_lc_rs::encoding::AsBigEndian::<aws_lc_rs::encoding::EcPrivateKeyBin>::as_be_bytes(
                &pair.private_key(),
            )
            .unwrap();
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..]),
        );
        let jwk = serde_json::json!({"kty":"EC","crv":"P-256","kid":"k-1","x":x,"y":y,
            "d": URL_SAFE_NO_PAD.encode(d.as_ref())});
        let key = SigningKey::parse(&SecretString::from(jwk.to_string()), None).unwrap();
        assert_eq!(
            (key.alg, key.kid.as_deref()),
            (Algorithm::ES256, Some("k-1"))
        );
        let assertion = key
            .assertion("client-1", "https://as.example/token", 1000)
            .unwrap();
        let header = jsonwebtoken::decode_header(&assertion).unwrap();
        assert_eq!(header.kid.as_deref(), Some("k-1"));
        let claims = verify(
            &assertion,
            &DecodingKey::from_ec_components(&x, &y).unwrap(),
            Algorithm::ES256,
        );
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(claims["exp"], 1300);
        assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
        // Another key's public half does not verify it.
        let other = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let p = other.public_key().as_ref();
        let wrong = DecodingKey::from_ec_components(
            &URL_SAFE_NO_PAD.encode(&p[1..33]),
            &URL_SAFE_NO_PAD.encode(&p[33..]),
        )
        .unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.validate_aud = false;
        validation.validate_exp = false;
        assert!(jsonwebtoken::decode::<Value>(&assertion, &wrong, &validation).is_err());
    }

    #[test]
    fn an_rsa_jwk_becomes_pkcs1_der_that_signs() {
        // A throwaway test key (node crypto.generateKeyPairSync, exported as JWK).
        let text = include_str!("testdata/rsa-private.jwk.json");
        let jwk: Value = serde_json::from_str(text).unwrap();
        let key = SigningKey::parse(&SecretString::from(text), Some("given".into())).unwrap();
        assert_eq!(
            (key.alg, key.kid.as_deref()),
            (Algorithm::RS256, Some("given"))
        );
        let assertion = key
            .assertion("client-2", "https://as.example/token", 1000)
            .unwrap();
        let public = DecodingKey::from_rsa_components(
            jwk["n"].as_str().unwrap(),
            jwk["e"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(
            verify(&assertion, &public, Algorithm::RS256)["sub"],
            "client-2"
        );
    }

    #[test]
    fn a_sec1_ec_pem_is_read_as_p256() {
        let text = include_str!("testdata/ec-sec1.pem");
        let key = SigningKey::parse(&SecretString::from(text), None).unwrap();
        assert_eq!((key.alg, key.kid.as_deref()), (Algorithm::ES256, None));
        assert!(key.assertion("c", "https://as.example/token", 1).is_ok());
    }

    #[test]
    fn der_integers_are_minimal_and_positive() {
        assert_eq!(der_integer(&[0, 0, 5]), vec![2, 1, 5]);
        assert_eq!(der_integer(&[0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(der_integer(&[0]), vec![2, 1, 0]);
        let long = der_tlv(0x04, &[7u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn garbage_and_public_keys_are_refused_naming_the_cause() {
        for (text, cause) in [
            ("hello", "neither a PEM"),
            ("{not json", "not valid JSON"),
            (r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#, "\"d\""),
            (r#"{"kty":"oct","k":"c2VjcmV0"}"#, "only RSA and EC"),
            (
                "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----",
                "no RSA, EC",
            ),
        ] {
            let err = SigningKey::parse(&SecretString::from(text), None).unwrap_err();
            assert!(err.to_string().contains(cause), "{text}: {err}");
            assert_eq!(err.exit_code(), 2);
        }
    }
}
