//! Bearer token validation for `auth.mode = "resource"`: JWTs against the
//! issuer's keys, opaque tokens through RFC 7662 introspection, and a cache of
//! verified tokens so a client reusing its token does not pay a signature
//! check on every call.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Principal,
    jwks::{JwksCache, JwksError, read_capped},
};
use crate::clock::SharedClock;

/// Longer tokens are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
const LEEWAY_SECS: u64 = 60;
const POSITIVE_CACHE_MAX: Duration = Duration::from_secs(300);
const NEGATIVE_CACHE: Duration = Duration::from_secs(10);

/// Why a token was refused. The text is for logs; clients only ever see
/// `invalid_token` with a generic description.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    #[error("token longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(Algorithm),
    #[error("token type {0:?} is not JWT or at+jwt")]
    WrongType(String),
    #[error("no key matches the token's kid")]
    UnknownKeyId,
    #[error("token rejected: bad signature")]
    BadSignature,
    #[error("token rejected: {0}")]
    Rejected(String),
    #[error("token rejected: expired")]
    Expired,
    #[error("token rejected: not valid yet (nbf)")]
    NotYetValid,
    #[error("token rejected: no {0} claim")]
    MissingClaim(String),
    #[error("token is not active")]
    Inactive,
    #[error("the token's audience is not this resource")]
    WrongAudience,
    #[error("the token's issuer is not the configured one")]
    WrongIssuer,
    #[error("cannot reach the authorization server: {0}")]
    Upstream(String),
    #[error("opaque tokens are not accepted (no introspection configured)")]
    OpaqueNotAccepted,
    #[error("the token acts on someone's behalf (act claim); it is not an access token")]
    Delegated,
    #[error("the introspection answer has no {0:?} claim to take the subject from")]
    NoSubject(String),
}

impl From<JwksError> for TokenError {
    fn from(err: JwksError) -> Self {
        TokenError::Upstream(err.to_string())
    }
}

/// RFC 7662 client configuration.
#[derive(Clone)]
pub struct Introspection {
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: secrecy::SecretString,
    /// The answer's claim that names the caller (`sub` unless configured).
    /// There is no fallback: a missing claim refuses the token, or every
    /// user of one client would share one owner key.
    pub subject_claim: String,
}

pub struct IssuerVerifier {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    jwks: Arc<JwksCache>,
    introspection: Option<Introspection>,
    client: reqwest::Client,
    verified: moka::sync::Cache<[u8; 32], Principal>,
    rejected: moka::sync::Cache<[u8; 32], TokenError>,
    /// Clock-skew allowance on `exp`/`nbf`: 60 s for foreign issuers, 0 for
    /// tokens mcpgate signs itself (same clock; clients must see expiry on time).
    leeway: u64,
    /// Tokens mcpgate signs itself: exactly `typ: at+jwt` and no `act`, so
    /// the identity JWTs it signs for upstreams with the same keys never pass.
    own_tokens: bool,
    /// Expiry of cached verdicts and of introspected tokens.
    clock: SharedClock,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(default)]
    aud: Audience,
    exp: i64,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    scope: Option<Value>,
    #[serde(default)]
    scp: Option<Value>,
    // Values, not Strings: an odd claim shape must not reject the token.
    #[serde(default)]
    email: Option<Value>,
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    groups: Option<Value>,
    /// Everything else, for `[[policy]]` claim conditions.
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
    #[default]
    None,
}

impl Audience {
    fn into_vec(self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a],
            Audience::Many(v) => v,
            Audience::None => Vec::new(),
        }
    }
}

/// Top-level strings, numbers and booleans as text; nested values are left out.
fn scalar_claims(claims: &serde_json::Map<String, Value>) -> BTreeMap<String, String> {
    claims
        .iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k.clone(), s.clone())),
            Value::Number(n) => Some((k.clone(), n.to_string())),
            Value::Bool(b) => Some((k.clone(), b.to_string())),
            _ => None,
        })
        .collect()
}

/// `scope` is a space-separated string (RFC 9068); `scp` is often an array.
fn scopes_of(scope: Option<&Value>, scp: Option<&Value>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for value in [scope, scp].into_iter().flatten() {
        match value {
            Value::String(s) => out.extend(s.split_whitespace().map(str::to_owned)),
            Value::Array(items) => {
                out.extend(items.iter().filter_map(Value::as_str).map(str::to_owned))
            }
            _ => {}
        }
    }
    out
}

fn token_key(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

impl IssuerVerifier {
    pub fn new(
        issuer: String,
        audiences: Vec<String>,
        algorithms: Vec<Algorithm>,
        jwks: Arc<JwksCache>,
        introspection: Option<Introspection>,
        client: reqwest::Client,
    ) -> Self {
        IssuerVerifier {
            issuer,
            audiences,
            algorithms,
            jwks,
            introspection,
            client,
            verified: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(POSITIVE_CACHE_MAX)
                .build(),
            rejected: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(NEGATIVE_CACHE)
                .build(),
            leeway: LEEWAY_SECS,
            own_tokens: false,
            clock: crate::clock::system(),
        }
    }

    /// Read the time from `clock` instead of the system's.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Replace the clock-skew allowance (0 for mcpgate's own tokens).
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway = secs;
        self
    }

    /// Verify mcpgate's own access tokens: no clock-skew allowance, the
    /// `at+jwt` type required and delegation (`act`) tokens refused.
    pub fn for_own_tokens(mut self) -> Self {
        self.leeway = 0;
        self.own_tokens = true;
        self
    }

    pub fn jwks(&self) -> &Arc<JwksCache> {
        &self.jwks
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let key = token_key(token);
        if let Some(principal) = self.verified.get(&key) {
            if principal
                .expires_at
                .is_none_or(|exp| exp + (self.leeway as i64) > self.clock.now())
            {
                return Ok(principal);
            }
            self.verified.invalidate(&key);
        }
        if let Some(err) = self.rejected.get(&key) {
            return Err(err);
        }
        let looks_like_jwt = token.split('.').count() == 3;
        let result = if looks_like_jwt {
            self.verify_jwt(token).await
        } else if self.introspection.is_some() {
            self.introspect(token).await
        } else {
            Err(TokenError::OpaqueNotAccepted)
        };
        // jsonwebtoken reads the system time; the server's clock decides too,
        // so expiry is the same for every check (and for tests' clocks).
        let result = result.and_then(|principal| match principal.expires_at {
            Some(exp) if exp + (self.leeway as i64) <= self.clock.now() => Err(TokenError::Expired),
            _ => Ok(principal),
        });
        match &result {
            Ok(principal) => self.verified.insert(key, principal.clone()),
            // A network failure says nothing about the token, and an unknown
            // kid may be a key the next refetch brings: remember neither.
            Err(TokenError::Upstream(_) | TokenError::UnknownKeyId) => {}
            Err(err) => self.rejected.insert(key, err.clone()),
        }
        result
    }

    /// Signature and claim checks without the caches (what a cache miss costs).
    pub async fn verify_jwt(&self, token: &str) -> Result<Principal, TokenError> {
        let claims: Claims = self.decode_checked(token, true).await?;
        if self.own_tokens && claims.other.contains_key("act") {
            return Err(TokenError::Delegated);
        }
        Ok(self.principal_from_claims(claims))
    }

    /// An OpenID Connect ID token for `nonce`, checked with the same rules as
    /// access tokens (algorithm allowlist, keys, `iss`, `aud` = the client id,
    /// `exp`). An issuer containing `{tenantid}` (Entra multi-tenant) must
    /// match with the token's own `tid` filled in. Returns all claims.
    pub async fn verify_id_token(
        &self,
        token: &str,
        nonce: &str,
    ) -> Result<serde_json::Map<String, Value>, TokenError> {
        let templated = self.issuer.contains("{tenantid}");
        let claims: serde_json::Map<String, Value> = self.decode_checked(token, !templated).await?;
        if templated {
            let tid = claims.get("tid").and_then(Value::as_str).unwrap_or("");
            let expected = self.issuer.replace("{tenantid}", tid);
            if tid.is_empty()
                || claims.get("iss").and_then(Value::as_str) != Some(expected.as_str())
            {
                return Err(TokenError::WrongIssuer);
            }
        }
        match claims.get("nonce").and_then(Value::as_str) {
            Some(n) if crate::constant_time::ct_eq(n, nonce) => Ok(claims),
            _ => Err(TokenError::Rejected("nonce does not match".to_owned())),
        }
    }

    async fn decode_checked<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        check_issuer: bool,
    ) -> Result<T, TokenError> {
        let header = decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        // The allowlist comes from configuration; the header only selects within it.
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgorithmNotAllowed(header.alg));
        }
        if let Some(typ) = header.typ.as_deref() {
            let typ = typ.to_ascii_lowercase();
            if !matches!(typ.as_str(), "jwt" | "at+jwt" | "application/at+jwt") {
                return Err(TokenError::WrongType(typ));
            }
        }
        // mcpgate marks every access token it signs; anything else it signed
        // (identity JWTs for upstreams) is not one, whatever its `aud` says.
        if self.own_tokens
            && !header
                .typ
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt"))
        {
            return Err(TokenError::WrongType(header.typ.unwrap_or_default()));
        }
        let keys = self.jwks.keys_for(header.kid.as_deref()).await?;
        let usable: Vec<_> = keys
            .into_iter()
            .filter(|k| k.family.verifies(header.alg) && k.alg.is_none_or(|a| a == header.alg))
            .collect();
        if usable.is_empty() {
            return Err(TokenError::UnknownKeyId);
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        if check_issuer {
            validation.set_issuer(&[self.issuer.as_str()]);
        }
        validation.set_audience(&self.audiences);
        let mut last = TokenError::UnknownKeyId;
        for key in usable {
            match decode::<T>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(err) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match err.kind() {
                        ErrorKind::InvalidAudience => TokenError::WrongAudience,
                        ErrorKind::ExpiredSignature => TokenError::Expired,
                        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                        // Another key of the same kid may still verify it.
                        ErrorKind::InvalidSignature => TokenError::BadSignature,
                        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                        ErrorKind::MissingRequiredClaim(claim) => {
                            TokenError::MissingClaim(claim.clone())
                        }
                        other => TokenError::Rejected(format!("{other:?}")),
                    };
                    if last != TokenError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn principal_from_claims(&self, claims: Claims) -> Principal {
        let scopes = scopes_of(claims.scope.as_ref(), claims.scp.as_ref());
        Principal {
            issuer: claims.iss,
            subject: claims.sub,
            client_id: claims.client_id.or(claims.azp),
            scopes,
            audience: claims.aud.into_vec(),
            expires_at: Some(claims.exp),
            email: claims
                .email
                .as_ref()
                .and_then(Value::as_str)
                .map(str::to_owned),
            name: claims
                .name
                .as_ref()
                .and_then(Value::as_str)
                .map(str::to_owned),
            groups: scopes_of(claims.groups.as_ref(), None)
                .into_iter()
                .collect(),
            claims: scalar_claims(&claims.other),
        }
    }

    async fn introspect(&self, token: &str) -> Result<Principal, TokenError> {
        use secrecy::ExposeSecret;
        let Some(config) = &self.introspection else {
            return Err(TokenError::OpaqueNotAccepted);
        };
        let response = self
            .client
            .post(&config.endpoint)
            .basic_auth(
                &config.client_id,
                Some(config.client_secret.expose_secret()),
            )
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| TokenError::Upstream(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(TokenError::Upstream(format!(
                "introspection HTTP {}",
                response.status().as_u16()
            )));
        }
        let body = read_capped(response, 64 * 1024).await?;
        let answer: Value =
            serde_json::from_slice(&body).map_err(|e| TokenError::Upstream(e.to_string()))?;
        if answer.get("active").and_then(Value::as_bool) != Some(true) {
            return Err(TokenError::Inactive);
        }
        let issuer = answer
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or(&self.issuer);
        if issuer != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        let audience = match answer.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        // An introspected token must name this resource too: no "any audience" fallback.
        if !audience.iter().any(|a| self.audiences.contains(a)) {
            return Err(TokenError::WrongAudience);
        }
        let exp = answer.get("exp").and_then(Value::as_i64);
        if exp.is_some_and(|exp| exp + (self.leeway as i64) <= self.clock.now()) {
            return Err(TokenError::Inactive);
        }
        // RFC 7662 makes `sub` optional. Falling back to `client_id` would
        // give every user of one client the same notes, sessions and
        // upstream links, so the subject comes from one configured claim only.
        let subject = answer
            .get(config.subject_claim.as_str())
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| TokenError::NoSubject(config.subject_claim.clone()))?;
        Ok(Principal {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            client_id: answer
                .get("client_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
            scopes: scopes_of(answer.get("scope"), answer.get("scp")),
            audience,
            // Cached no longer than the token lives.
            expires_at: exp.or(Some(self.clock.now() + POSITIVE_CACHE_MAX.as_secs() as i64)),
            email: answer
                .get("email")
                .and_then(Value::as_str)
                .map(str::to_owned),
            name: answer
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            groups: scopes_of(answer.get("groups"), None).into_iter().collect(),
            claims: answer.as_object().map(scalar_claims).unwrap_or_default(),
        })
    }
}

/// RFC 8414 / OIDC discovery URLs for an issuer, in the order MCP clients
/// try them; path issuers (Keycloak's `/realms/x`) get both insertions.
pub fn discovery_urls(issuer: &str) -> Vec<String> {
    let Ok(url) = url::Url::parse(issuer) else {
        return Vec::new();
    };
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    if path.is_empty() {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server"),
            format!("{origin}/.well-known/openid-configuration"),
        ]
    } else {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!("{origin}{path}/.well-known/openid-configuration"),
        ]
    }
}

/// The authorization server's metadata fields mcpgate uses.
#[derive(Debug, Clone, Deserialize)]
pub struct IssuerMetadata {
    pub issuer: String,
    pub jwks_uri: Option<String>,
    pub introspection_endpoint: Option<String>,
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub registration_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub client_id_metadata_document_supported: Option<bool>,
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: Option<bool>,
}

/// Fetch the first discovery document that answers, and check that it is
/// the configured issuer's (a mismatch is a mix-up, not a fallback).
pub async fn discover(
    client: &reqwest::Client,
    issuer: &str,
) -> Result<IssuerMetadata, TokenError> {
    discover_as(client, issuer, issuer).await
}

/// `expected` may end in `/*/v2.0`-style wildcard segment `*`: Entra names
/// a domain tenant by its GUID in its documents.
fn issuer_matches(actual: &str, expected: &str) -> bool {
    match expected.split_once('*') {
        Some((prefix, suffix)) => {
            actual.len() > prefix.len() + suffix.len()
                && actual.starts_with(prefix)
                && actual.ends_with(suffix)
                && !actual[prefix.len()..actual.len() - suffix.len()].contains('/')
        }
        None => actual == expected,
    }
}

/// [`discover`] where the document's `issuer` differs from where it is
/// served by design (Entra's `common` endpoint names `{tenantid}`).
pub async fn discover_as(
    client: &reqwest::Client,
    issuer: &str,
    expected_issuer: &str,
) -> Result<IssuerMetadata, TokenError> {
    let mut last = TokenError::Upstream("no discovery URL".to_owned());
    for url in discovery_urls(issuer) {
        let started = Instant::now();
        match client
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => {
                let body = read_capped(response, 256 * 1024).await?;
                let meta: IssuerMetadata = serde_json::from_slice(&body)
                    .map_err(|e| TokenError::Upstream(format!("{url}: {e}")))?;
                if !issuer_matches(&meta.issuer, expected_issuer) {
                    // Another server's document (Okta answers the RFC 8414 path
                    // of a custom server with its org server's): never used,
                    // but the next candidate URL may be the right one.
                    last = TokenError::Upstream(format!(
                        "{url} names issuer {:?}, expected {expected_issuer:?}",
                        meta.issuer
                    ));
                    continue;
                }
                tracing::debug!(%url, elapsed_ms = started.elapsed().as_millis() as u64, "issuer discovered");
                return Ok(meta);
            }
            Ok(response) => {
                last = TokenError::Upstream(format!("{url}: HTTP {}", response.status().as_u16()))
            }
            Err(e) => last = TokenError::Upstream(format!("{url}: {}", e.without_url())),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, SystemClock};

    #[test]
    fn issuer_wildcards_match_one_path_segment() {
        let pattern = "https://login.microsoftonline.com/*/v2.0";
        assert!(issuer_matches(
            "https://login.microsoftonline.com/72f988bf-86f1/v2.0",
            pattern
        ));
        assert!(!issuer_matches(
            "https://login.microsoftonline.com/a/b/v2.0",
            pattern
        ));
        assert!(!issuer_matches("https://evil.example/x/v2.0", pattern));
        assert!(!issuer_matches(
            "https://login.microsoftonline.com//v2.0",
            pattern
        ));
        assert!(issuer_matches("https://a/x", "https://a/x"));
        assert!(!issuer_matches("https://a/x/", "https://a/x"));
    }

    #[test]
    fn discovery_path_rules() {
        assert_eq!(
            discovery_urls("https://kc.example/realms/mcp"),
            vec![
                "https://kc.example/.well-known/oauth-authorization-server/realms/mcp",
                "https://kc.example/.well-known/openid-configuration/realms/mcp",
                "https://kc.example/realms/mcp/.well-known/openid-configuration",
            ]
        );
        assert_eq!(discovery_urls("https://a.example").len(), 2);
    }

    /// A verifier of mcpgate's own tokens over one fresh P-256 key, and a
    /// signer with that key taking the header `typ` and the claims.
    fn own_verifier_and_signer() -> (
        IssuerVerifier,
        impl Fn(Option<&str>, serde_json::Value) -> String,
    ) {
        use aws_lc_rs::{
            rand::SystemRandom,
            signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
        };
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        let key = super::super::jwks::VerificationKey {
            kid: Some("k1".into()),
            key: jsonwebtoken::DecodingKey::from_ec_components(&x, &y).unwrap(),
            alg: Some(Algorithm::ES256),
            family: super::super::jwks::KeyFamily::Ec,
        };
        let verifier = IssuerVerifier::new(
            "https://gate".into(),
            vec!["https://gate/mcp".into()],
            vec![Algorithm::ES256],
            JwksCache::preloaded(vec![key]),
            None,
            reqwest::Client::new(),
        )
        .for_own_tokens();
        let encoding = jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref());
        let sign = move |typ: Option<&str>, claims: serde_json::Value| {
            let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
            header.typ = typ.map(str::to_owned);
            header.kid = Some("k1".into());
            jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
        };
        (verifier, sign)
    }

    fn claims(extra: serde_json::Value) -> serde_json::Value {
        let mut claims = serde_json::json!({
            "iss": "https://gate", "sub": "alice", "aud": "https://gate/mcp",
            "exp": SystemClock.now() + 60, "iat": SystemClock.now(),
        });
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        claims
    }

    #[tokio::test]
    async fn own_tokens_must_be_access_tokens_not_identity_or_delegation_tokens() {
        let (verifier, sign) = own_verifier_and_signer();
        let good = sign(Some("at+jwt"), claims(serde_json::json!({})));
        assert_eq!(verifier.verify(&good).await.unwrap().subject, "alice");
        // An identity JWT for an upstream, even with mcpgate's own audience.
        let identity = sign(
            Some(crate::upstream::outbound::IDENTITY_JWT_TYP),
            claims(serde_json::json!({"act": {"sub": "mcpgate"}})),
        );
        assert!(matches!(
            verifier.verify(&identity).await,
            Err(TokenError::WrongType(_))
        ));
        // The same claims with a plain JWT type, or with none.
        for typ in [Some("JWT"), None] {
            let token = sign(typ, claims(serde_json::json!({})));
            assert!(
                matches!(verifier.verify(&token).await, Err(TokenError::WrongType(_))),
                "{typ:?}"
            );
        }
        // An access-token type carrying `act`.
        let delegated = sign(
            Some("at+jwt"),
            claims(serde_json::json!({"act": {"sub": "mcpgate"}})),
        );
        assert_eq!(
            verifier.verify(&delegated).await.unwrap_err(),
            TokenError::Delegated
        );
    }

    #[test]
    fn scopes_from_scope_or_scp() {
        let s = scopes_of(
            Some(&Value::String("a b".into())),
            Some(&serde_json::json!(["c"])),
        );
        assert_eq!(s.into_iter().collect::<Vec<_>>(), vec!["a", "b", "c"]);
    }
}
