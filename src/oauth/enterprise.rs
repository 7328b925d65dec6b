//! Enterprise-managed authorization (the ext-auth extension
//! `io.modelcontextprotocol/enterprise-managed-authorization`, SEP-990):
//! the enterprise identity providers whose Identity Assertion JWT
//! Authorization Grants (ID-JAG, `typ: oauth-id-jag+jwt`) mcpgate accepts at
//! `/token` with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`.
//!
//! `[[auth.local.enterprise_idps]]` raw and validated, and the trusted
//! issuers at run time (settings plus a key cache each). The grant itself
//! (verification and minting) is `flow::identity_assertion`.

use std::{path::PathBuf, sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, jwk::JwkSet};
use serde::{Deserialize, Serialize};

use super::client_auth::{SIGNING_ALGORITHMS, parse_signing_algorithm};
use super::clients::AuthMethod;
use super::configured_clients::{ConfiguredClient, GRANT_JWT_BEARER};
use crate::auth::jwks::{JwksCache, keys_from_set};
use crate::problems::{is_https_or_loopback_http, read_inline_or_file};

/// The JOSE `typ` of an ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant §3.1).
pub const ID_JAG_TYP: &str = "oauth-id-jag+jwt";
/// What `authorization_grant_profiles_supported` advertises (extension §6).
pub const GRANT_PROFILE_ID_JAG: &str = "urn:ietf:params:oauth:grant-profile:id-jag";

/// Asymmetric algorithms only (the allow list client assertions use): a
/// shared-secret (HS*) assertion could be forged by anyone holding the
/// secret, and `none` by anyone at all.
fn asymmetric() -> Vec<Algorithm> {
    SIGNING_ALGORITHMS.iter().map(|(alg, _)| *alg).collect()
}

/// An unknown `kid` refetches the issuer's JWKS at most this often, so
/// assertions with random kids cannot make mcpgate flood the IdP.
const MIN_REFETCH: Duration = Duration::from_secs(30);
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// `[[auth.local.enterprise_idps]]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnterpriseIdp {
    /// The ID-JAG's `iss`, matched exactly.
    pub issuer: String,
    /// Where the IdP publishes its signing keys (https; http only on loopback).
    pub jwks_uri: Option<String>,
    /// Or the keys themselves, as JWKS JSON text.
    pub jwks: Option<String>,
    /// Or the same in a file.
    pub jwks_file: Option<PathBuf>,
    /// Configured client ids (`[[auth.local.clients]]`) that may present
    /// this IdP's assertions.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// The claim naming the user. Default `sub`.
    pub user_claim: Option<String>,
    /// The claim holding the user's e-mail. Default `email`.
    pub email_claim: Option<String>,
    /// The claim holding the user's display name. Default `name`.
    pub name_claim: Option<String>,
    /// Signature algorithms accepted. Default: every asymmetric one.
    pub algorithms: Option<Vec<String>>,
    /// The longest `exp - iat` accepted. Default 300.
    pub max_assertion_lifetime_secs: Option<u64>,
}

/// Where an enterprise IdP's keys come from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdpKeys {
    Inline(JwkSet),
    Uri(String),
}

/// `[[auth.local.enterprise_idps]]`, validated.
#[derive(Debug, Clone, Serialize)]
pub struct EnterpriseIdp {
    pub issuer: String,
    pub keys: IdpKeys,
    pub allowed_clients: Vec<String>,
    pub user_claim: String,
    pub email_claim: String,
    pub name_claim: String,
    pub algorithms: Vec<Algorithm>,
    pub max_assertion_lifetime_secs: u64,
}

/// Validate `[[auth.local.enterprise_idps]]` against the configured
/// clients, pushing one line per problem.
pub fn validate(
    raw: &[RawEnterpriseIdp],
    clients: &[Arc<ConfiguredClient>],
    errors: &mut Vec<String>,
) -> Vec<Arc<EnterpriseIdp>> {
    let mut out: Vec<Arc<EnterpriseIdp>> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let at = format!("auth.local.enterprise_idps[{i}]");
        if out.iter().any(|o| o.issuer == r.issuer) {
            errors.push(format!("{at}.issuer: {:?} is listed twice", r.issuer));
            continue;
        }
        if let Some(idp) = validate_one(&at, r, clients, errors) {
            out.push(Arc::new(idp));
        }
    }
    out
}

fn validate_one(
    at: &str,
    r: &RawEnterpriseIdp,
    clients: &[Arc<ConfiguredClient>],
    errors: &mut Vec<String>,
) -> Option<EnterpriseIdp> {
    let before = errors.len();
    if !is_https_or_loopback_http(&r.issuer) {
        errors.push(format!(
            "{at}.issuer: must be an https URL (http only on loopback)"
        ));
    }
    let keys = validate_keys(at, r, errors);
    if r.allowed_clients.is_empty() {
        errors.push(format!(
            "{at}.allowed_clients: name at least one client of auth.local.clients"
        ));
    }
    for id in &r.allowed_clients {
        match clients.iter().find(|c| &c.client_id == id) {
            None => errors.push(format!(
                "{at}.allowed_clients: {id:?} is not in auth.local.clients"
            )),
            Some(c) if !c.allows_grant(GRANT_JWT_BEARER) => errors.push(format!(
                "{at}.allowed_clients: {id:?} must list {GRANT_JWT_BEARER} in its grant_types"
            )),
            // The extension requires an authenticated (confidential) client.
            Some(c) if c.auth_methods.contains(&AuthMethod::None) => errors.push(format!(
                "{at}.allowed_clients: {id:?} must authenticate (a secret or keys), not use none"
            )),
            Some(_) => {}
        }
    }
    let claim = |name: &str, value: &Option<String>, default: &str, errors: &mut Vec<String>| {
        let value = value.clone().unwrap_or_else(|| default.to_owned());
        if value.is_empty() || value.len() > 100 || value.contains(char::is_whitespace) {
            errors.push(format!("{at}.{name}: a claim name without spaces"));
        }
        value
    };
    let user_claim = claim("user_claim", &r.user_claim, "sub", errors);
    let email_claim = claim("email_claim", &r.email_claim, "email", errors);
    let name_claim = claim("name_claim", &r.name_claim, "name", errors);
    let algorithms = match &r.algorithms {
        None => asymmetric(),
        Some(names) => {
            let mut algorithms = Vec::new();
            for name in names {
                match parse_signing_algorithm(name) {
                    Some(alg) => algorithms.push(alg),
                    None => errors.push(format!(
                        "{at}.algorithms: {name:?} is not an asymmetric JWS algorithm (RS*, PS*, ES256, ES384, EdDSA)"
                    )),
                }
            }
            if names.is_empty() {
                errors.push(format!("{at}.algorithms: name at least one"));
            }
            algorithms
        }
    };
    let max_assertion_lifetime_secs = crate::problems::bounded(
        &format!("{at}.max_assertion_lifetime_secs"),
        r.max_assertion_lifetime_secs,
        300,
        (10, 3600),
        errors,
    );
    if errors.len() != before {
        return None;
    }
    Some(EnterpriseIdp {
        issuer: r.issuer.clone(),
        keys: keys?,
        allowed_clients: r.allowed_clients.clone(),
        user_claim,
        email_claim,
        name_claim,
        algorithms,
        max_assertion_lifetime_secs,
    })
}

fn validate_keys(at: &str, r: &RawEnterpriseIdp, errors: &mut Vec<String>) -> Option<IdpKeys> {
    let before = errors.len();
    let inline_text = read_inline_or_file(
        at,
        "jwks",
        r.jwks.as_deref(),
        r.jwks_file.as_deref(),
        errors,
    );
    if errors.len() > before {
        return None;
    }
    match (inline_text, &r.jwks_uri) {
        (Some(_), Some(_)) | (None, None) => {
            errors.push(format!(
                "{at}: set exactly one of jwks_uri, jwks, jwks_file"
            ));
            None
        }
        (Some(text), None) => match serde_json::from_str::<JwkSet>(&text) {
            Ok(set) if !keys_from_set(&set).is_empty() => Some(IdpKeys::Inline(set)),
            _ => {
                errors.push(format!(
                    "{at}.jwks: not a JWK set with at least one public signing key"
                ));
                None
            }
        },
        (None, Some(uri)) if is_https_or_loopback_http(uri) => Some(IdpKeys::Uri(uri.clone())),
        (None, Some(_)) => {
            errors.push(format!(
                "{at}.jwks_uri: must be an https URL (http only on loopback)"
            ));
            None
        }
    }
}

/// A trusted enterprise IdP at run time: its settings and its keys.
pub struct TrustedIdp {
    pub settings: Arc<EnterpriseIdp>,
    pub keys: Arc<JwksCache>,
}

/// Every trusted enterprise IdP, looked up by `iss`.
#[derive(Default)]
pub struct EnterpriseTrust {
    idps: Vec<TrustedIdp>,
}

impl EnterpriseTrust {
    /// Key caches for `idps`: inline keys held as they are; a `jwks_uri`
    /// fetched when first needed and refetched on an unknown `kid` at most
    /// every [`MIN_REFETCH`], with the ordinary outbound client (the URL is
    /// the operator's configuration, not a client's input).
    pub fn build(
        idps: &[Arc<EnterpriseIdp>],
        clock: crate::clock::SharedClock,
    ) -> Result<EnterpriseTrust, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let idps = idps
            .iter()
            .map(|settings| TrustedIdp {
                settings: settings.clone(),
                keys: match &settings.keys {
                    IdpKeys::Inline(set) => JwksCache::preloaded(keys_from_set(set)),
                    IdpKeys::Uri(uri) => {
                        JwksCache::with_clock(uri.clone(), http.clone(), MIN_REFETCH, clock.clone())
                    }
                },
            })
            .collect();
        Ok(EnterpriseTrust { idps })
    }

    pub fn is_empty(&self) -> bool {
        self.idps.is_empty()
    }

    /// The trusted IdP whose issuer is exactly `iss`.
    pub fn find(&self, iss: &str) -> Option<&TrustedIdp> {
        self.idps.iter().find(|idp| idp.settings.issuer == iss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::configured_clients::{RawConfiguredClient, validate as validate_clients};

    const KEY: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

    fn clients() -> Vec<Arc<ConfiguredClient>> {
        let mut errors = Vec::new();
        let secret = Some("s".repeat(40));
        let clients = validate_clients(
            &[
                RawConfiguredClient {
                    client_id: "agent".to_owned(),
                    client_secret: secret.clone(),
                    grant_types: Some(vec![GRANT_JWT_BEARER.to_owned()]),
                    ..RawConfiguredClient::default()
                },
                RawConfiguredClient {
                    client_id: "machine".to_owned(),
                    client_secret: secret,
                    ..RawConfiguredClient::default()
                },
            ],
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        clients
    }

    fn raw() -> RawEnterpriseIdp {
        RawEnterpriseIdp {
            issuer: "https://acme.okta.example".to_owned(),
            jwks: Some(KEY.to_owned()),
            allowed_clients: vec!["agent".to_owned()],
            ..RawEnterpriseIdp::default()
        }
    }

    #[test]
    fn defaults_are_sub_email_name_the_asymmetric_algorithms_and_five_minutes() {
        let mut errors = Vec::new();
        let idps = validate(&[raw()], &clients(), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let idp = &idps[0];
        assert_eq!(
            (
                idp.user_claim.as_str(),
                idp.email_claim.as_str(),
                idp.name_claim.as_str()
            ),
            ("sub", "email", "name")
        );
        assert_eq!(
            idp.algorithms,
            vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
                Algorithm::ES256,
                Algorithm::ES384,
                Algorithm::EdDSA,
            ]
        );
        assert_eq!(idp.max_assertion_lifetime_secs, 300);
    }

    #[test]
    fn each_problem_is_reported() {
        let mut errors = Vec::new();
        let bad = [
            RawEnterpriseIdp {
                issuer: "http://idp.example".to_owned(),
                ..raw()
            },
            RawEnterpriseIdp {
                jwks_uri: Some("https://idp.example/keys".to_owned()),
                ..raw()
            },
            RawEnterpriseIdp {
                allowed_clients: vec!["machine".to_owned(), "ghost".to_owned()],
                ..raw()
            },
            RawEnterpriseIdp {
                algorithms: Some(vec!["HS256".to_owned(), "none".to_owned()]),
                ..raw()
            },
            RawEnterpriseIdp {
                jwks: Some(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.to_owned()),
                ..raw()
            },
            RawEnterpriseIdp {
                max_assertion_lifetime_secs: Some(86_400),
                ..raw()
            },
            raw(),
            raw(),
        ];
        let idps = validate(&bad, &clients(), &mut errors);
        let text = errors.join("\n");
        for needle in [
            "enterprise_idps[0].issuer: must be an https URL",
            "enterprise_idps[1]: set exactly one of jwks_uri, jwks, jwks_file",
            "\"machine\" must list urn:ietf:params:oauth:grant-type:jwt-bearer",
            "\"ghost\" is not in auth.local.clients",
            "\"HS256\" is not an asymmetric",
            "\"none\" is not an asymmetric",
            "enterprise_idps[4].jwks: not a JWK set",
            "enterprise_idps[5].max_assertion_lifetime_secs",
            "enterprise_idps[7].issuer: \"https://acme.okta.example\" is listed twice",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert_eq!(idps.len(), 1, "only the first valid one is kept");
    }
}
