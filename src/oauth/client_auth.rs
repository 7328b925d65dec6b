//! `private_key_jwt` client authentication (RFC 7523 §2.2, RFC 7521 §4.2):
//! the client proves who it is with a JWT signed by its private key, which
//! this module checks against the client's public keys. Free of HTTP; the
//! flows (`flow::register`) call it and record the assertion's `jti` in the
//! store, which makes it single use across replicas.
//!
//! The rules, each refused with its own [`AssertionError`]:
//! - `alg` is one of [`SIGNING_ALGORITHMS`] (asymmetric only: `none` and
//!   HMAC are refused, an HMAC "signed" with a public key proves nothing),
//!   and the client's `token_endpoint_auth_signing_alg` if it registered one;
//! - the key is the one named by `kid`, or without `kid` any key of the
//!   algorithm's type; a JWK that names another `alg` is not used;
//! - `iss` and `sub` are both the client id;
//! - `aud` is this server's issuer or its token endpoint, with or without a
//!   trailing slash (a string, or an array holding one of them);
//! - `exp` is required, not past (with [`LEEWAY_SECS`] of clock skew), and at
//!   most [`MAX_LIFETIME_SECS`] after `iat` and after now (plus the leeway):
//!   a long-lived assertion is a bearer credential in disguise;
//! - `iat` and `nbf`, when present, are not in the future beyond the leeway;
//! - `jti` is required (and at most [`MAX_JTI_BYTES`]).
//!
//! Times are checked against the server's clock, not jsonwebtoken's system
//! time (its own `exp`/`nbf` checks are off).

use base64::Engine;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, Jwk, JwkSet},
};
use serde::Deserialize;
use serde_json::Value;

use super::client_keys::{ClientKeyCache, ClientKeysError, parse_key_set};

/// RFC 7523 §2.2.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The algorithms client assertions may be signed with, in the order the
/// metadata lists them: every asymmetric algorithm jsonwebtoken verifies.
pub const SIGNING_ALGORITHMS: [(Algorithm, &str); 9] = [
    (Algorithm::RS256, "RS256"),
    (Algorithm::RS384, "RS384"),
    (Algorithm::RS512, "RS512"),
    (Algorithm::PS256, "PS256"),
    (Algorithm::PS384, "PS384"),
    (Algorithm::PS512, "PS512"),
    (Algorithm::ES256, "ES256"),
    (Algorithm::ES384, "ES384"),
    (Algorithm::EdDSA, "EdDSA"),
];

/// The longest an assertion may live: ChatGPT's live for minutes, and a
/// longer one would be a reusable credential once its `jti` record expires.
pub const MAX_LIFETIME_SECS: i64 = 600;
/// Clock skew tolerated on `exp`, `iat` and `nbf`.
pub const LEEWAY_SECS: i64 = 60;
pub const MAX_ASSERTION_BYTES: usize = 8 * 1024;
pub const MAX_JTI_BYTES: usize = 200;

pub fn signing_algorithm_names() -> Vec<&'static str> {
    SIGNING_ALGORITHMS.iter().map(|(_, name)| *name).collect()
}

/// An algorithm name from the allow list; `None` for anything else.
pub fn parse_signing_algorithm(name: &str) -> Option<Algorithm> {
    SIGNING_ALGORITHMS
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(alg, _)| *alg)
}

/// The name of an allowed algorithm (others have none here).
fn algorithm_name(alg: Algorithm) -> &'static str {
    SIGNING_ALGORITHMS
        .iter()
        .find(|(a, _)| *a == alg)
        .map_or("", |(_, name)| *name)
}

/// Where the client's public keys are.
#[derive(Debug, Clone, Copy)]
pub enum ClientKeySource<'a> {
    Inline(&'a Value),
    Uri(&'a str),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("client_assertion_type must be {CLIENT_ASSERTION_TYPE}")]
    WrongType,
    #[error("client_assertion is not a well-formed JWT")]
    Malformed,
    #[error(
        "the client assertion's alg must be one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
    )]
    Algorithm,
    #[error("the client assertion's alg is not the client's token_endpoint_auth_signing_alg")]
    NotRegisteredAlgorithm,
    #[error("no key of the client matches the assertion's kid and alg")]
    UnknownKey,
    #[error("the client assertion's signature does not verify")]
    Signature,
    #[error("the client assertion's iss and sub must both be the client_id")]
    IssuerOrSubject,
    #[error("the client assertion's aud must be this server's token endpoint or issuer")]
    Audience,
    #[error("the client assertion has no exp")]
    MissingExpiry,
    #[error("the client assertion has expired")]
    Expired,
    #[error("the client assertion must expire within 10 minutes of its iat and of now")]
    TooLong,
    #[error("the client assertion is not valid yet (iat or nbf in the future)")]
    NotYetValid,
    #[error("the client assertion needs a jti of at most 200 bytes")]
    MissingJti,
    #[error("the client assertion was already used (its jti is single use)")]
    Replayed,
    #[error("the client has no keys to verify an assertion with")]
    NoKeys,
    #[error(transparent)]
    Keys(#[from] ClientKeysError),
}

/// What the store must remember of an accepted assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    pub jti: String,
    /// The last second the assertion would be accepted: its `jti` record
    /// must outlive it.
    pub usable_until: i64,
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Value>,
    exp: Option<Value>,
    iat: Option<Value>,
    nbf: Option<Value>,
    jti: Option<String>,
}

pub struct ClientAssertionVerifier {
    keys: ClientKeyCache,
    /// Issuer and token endpoint, without a trailing slash.
    audiences: [String; 2],
}

impl ClientAssertionVerifier {
    pub fn new(keys: ClientKeyCache, issuer: &str) -> ClientAssertionVerifier {
        let issuer = issuer.trim_end_matches('/');
        ClientAssertionVerifier {
            keys,
            audiences: [issuer.to_owned(), format!("{issuer}/token")],
        }
    }

    /// Read the time from `clock` (the key cache's expiry).
    pub fn with_clock(mut self, clock: crate::clock::SharedClock) -> Self {
        self.keys = self.keys.with_clock(clock);
        self
    }

    /// Check `assertion` as `client_id`'s, signed by a key from `keys`
    /// (and with `registered_alg` when the client named one), at `now`.
    /// The caller records the `jti`.
    pub async fn verify(
        &self,
        client_id: &str,
        keys: ClientKeySource<'_>,
        registered_alg: Option<&str>,
        assertion: &str,
        now: i64,
    ) -> Result<VerifiedAssertion, AssertionError> {
        if assertion.len() > MAX_ASSERTION_BYTES {
            return Err(AssertionError::Malformed);
        }
        let header = segment_json(assertion, 0).ok_or(AssertionError::Malformed)?;
        if header.get("crit").is_some() {
            // No JWS extension is understood, so none may be critical.
            return Err(AssertionError::Malformed);
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(parse_signing_algorithm)
            .ok_or(AssertionError::Algorithm)?;
        if registered_alg.is_some_and(|r| r != algorithm_name(alg)) {
            return Err(AssertionError::NotRegisteredAlgorithm);
        }
        let kid = header.get("kid").and_then(Value::as_str);
        let set = match keys {
            ClientKeySource::Inline(value) => std::sync::Arc::new(parse_key_set(value)?),
            ClientKeySource::Uri(uri) => self.keys.key_set(uri, kid).await?,
        };
        let claims = verify_signature(assertion, alg, kid, &set)?;
        self.check_claims(client_id, claims, now)
    }

    fn check_claims(
        &self,
        client_id: &str,
        claims: AssertionClaims,
        now: i64,
    ) -> Result<VerifiedAssertion, AssertionError> {
        if claims.iss.as_deref() != Some(client_id) || claims.sub.as_deref() != Some(client_id) {
            return Err(AssertionError::IssuerOrSubject);
        }
        let ours = |aud: &str| {
            let aud = aud.strip_suffix('/').unwrap_or(aud);
            self.audiences.iter().any(|a| a == aud)
        };
        let audience_ok = match &claims.aud {
            Some(Value::String(aud)) => ours(aud),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(ours),
            _ => false,
        };
        if !audience_ok {
            return Err(AssertionError::Audience);
        }
        let exp = claims
            .exp
            .as_ref()
            .and_then(seconds)
            .ok_or(AssertionError::MissingExpiry)?;
        if exp + LEEWAY_SECS <= now {
            return Err(AssertionError::Expired);
        }
        let iat = claims.iat.as_ref().and_then(seconds);
        let nbf = claims.nbf.as_ref().and_then(seconds);
        if [iat, nbf]
            .into_iter()
            .flatten()
            .any(|t| t > now + LEEWAY_SECS)
        {
            return Err(AssertionError::NotYetValid);
        }
        if exp - now > MAX_LIFETIME_SECS + LEEWAY_SECS
            || iat.is_some_and(|iat| exp - iat > MAX_LIFETIME_SECS)
        {
            return Err(AssertionError::TooLong);
        }
        let jti = claims
            .jti
            .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_BYTES)
            .ok_or(AssertionError::MissingJti)?;
        Ok(VerifiedAssertion {
            jti,
            usable_until: exp + LEEWAY_SECS,
        })
    }
}

/// The client id an assertion claims (its `sub`), unverified: only to find
/// the client whose keys then verify it, when no `client_id` was sent.
pub fn unverified_subject(assertion: &str) -> Option<String> {
    if assertion.len() > MAX_ASSERTION_BYTES {
        return None;
    }
    unverified_claim(assertion, "sub")
}

/// A string claim of a compact JWS, read before its signature is checked:
/// only to choose whose keys must then verify it.
pub fn unverified_claim(jwt: &str, name: &str) -> Option<String> {
    segment_json(jwt, 1)?
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The `index`th dot-separated part of a compact JWS, decoded as JSON.
fn segment_json(jwt: &str, index: usize) -> Option<Value> {
    let mut parts = jwt.split('.');
    if jwt.split('.').count() != 3 {
        return None;
    }
    let part = parts.nth(index)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Does `jwk` suit `alg` (its key type, and its own `alg` if it names one)?
fn suits(jwk: &Jwk, alg: Algorithm) -> bool {
    let kind_fits = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        AlgorithmParameters::EllipticCurve(_) => {
            matches!(alg, Algorithm::ES256 | Algorithm::ES384)
        }
        AlgorithmParameters::OctetKeyPair(_) => alg == Algorithm::EdDSA,
        _ => false,
    };
    let named_alg_fits = jwk
        .common
        .key_algorithm
        .is_none_or(|named| named.to_string() == algorithm_name(alg));
    kind_fits && named_alg_fits
}

fn verify_signature(
    assertion: &str,
    alg: Algorithm,
    kid: Option<&str>,
    set: &JwkSet,
) -> Result<AssertionClaims, AssertionError> {
    let candidates: Vec<&Jwk> = match kid {
        Some(kid) => set.find(kid).into_iter().collect(),
        None => set.keys.iter().collect(),
    };
    let candidates: Vec<&Jwk> = candidates.into_iter().filter(|k| suits(k, alg)).collect();
    if candidates.is_empty() {
        return Err(AssertionError::UnknownKey);
    }
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let mut outcome = Err(AssertionError::Signature);
    for jwk in candidates {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                if !matches!(
                    e.kind(),
                    jsonwebtoken::errors::ErrorKind::InvalidSignature
                        | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat
                        | jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey
                        | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_)
                ) {
                    outcome = Err(AssertionError::Malformed);
                }
            }
        }
    }
    outcome
}

/// A NumericDate (RFC 7519 §2): seconds, possibly fractional.
fn seconds(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "https://chatgpt.example/oauth/client.json";
    const NOW: i64 = 1_800_000_000;

    fn verifier() -> ClientAssertionVerifier {
        let fetcher = super::super::fenced_fetch::FencedFetcher::new(
            false,
            std::time::Duration::from_secs(1),
        );
        ClientAssertionVerifier::new(
            ClientKeyCache::new(fetcher, crate::clock::system()),
            "https://gw.example",
        )
    }

    fn check(edit: impl FnOnce(&mut Value)) -> Result<VerifiedAssertion, AssertionError> {
        let mut claims = json!({"iss": ID, "sub": ID, "aud": "https://gw.example/token",
            "iat": NOW, "exp": NOW + 300, "jti": "j1"});
        edit(&mut claims);
        let claims: AssertionClaims = serde_json::from_value(claims).unwrap();
        verifier().check_claims(ID, claims, NOW)
    }

    #[test]
    fn the_audience_is_the_issuer_or_the_token_endpoint_with_or_without_a_slash() {
        for aud in [
            json!("https://gw.example/token"),
            json!("https://gw.example/token/"),
            json!("https://gw.example"),
            json!("https://gw.example/"),
            json!(["https://other.example", "https://gw.example/token"]),
        ] {
            assert!(check(|c| c["aud"] = aud.clone()).is_ok(), "{aud}");
        }
        for aud in [
            json!("https://other.example/token"),
            json!("https://gw.example/revoke"),
            json!(["https://other.example"]),
            json!(null),
        ] {
            assert_eq!(
                check(|c| c["aud"] = aud.clone()),
                Err(AssertionError::Audience),
                "{aud}"
            );
        }
    }

    #[test]
    fn each_claim_rule_refuses() {
        assert_eq!(
            check(|c| c["iss"] = json!("https://evil.example/c.json")),
            Err(AssertionError::IssuerOrSubject)
        );
        assert_eq!(
            check(|c| c["sub"] = json!("other")),
            Err(AssertionError::IssuerOrSubject)
        );
        assert_eq!(
            check(|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            Err(AssertionError::MissingExpiry)
        );
        assert_eq!(
            check(|c| c["exp"] = json!(NOW - LEEWAY_SECS)),
            Err(AssertionError::Expired)
        );
        assert_eq!(
            check(|c| c["exp"] = json!(NOW + MAX_LIFETIME_SECS + LEEWAY_SECS + 1)),
            Err(AssertionError::TooLong)
        );
        assert_eq!(
            check(|c| c["iat"] = json!(NOW - 3600)),
            Err(AssertionError::TooLong)
        );
        assert_eq!(
            check(|c| c["nbf"] = json!(NOW + LEEWAY_SECS + 1)),
            Err(AssertionError::NotYetValid)
        );
        assert_eq!(
            check(|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
            Err(AssertionError::MissingJti)
        );
        assert_eq!(
            check(|c| c["jti"] = json!("x".repeat(MAX_JTI_BYTES + 1))),
            Err(AssertionError::MissingJti)
        );
        let ok = check(|_| {}).unwrap();
        assert_eq!(ok.usable_until, NOW + 300 + LEEWAY_SECS);
    }

    #[test]
    fn only_asymmetric_algorithms_are_allowed() {
        for name in ["none", "HS256", "HS384", "HS512", "rs256"] {
            assert!(parse_signing_algorithm(name).is_none(), "{name}");
        }
        assert_eq!(parse_signing_algorithm("RS256"), Some(Algorithm::RS256));
        assert_eq!(signing_algorithm_names().len(), 9);
    }
}
