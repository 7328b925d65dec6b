//! Who is calling, and may they do this.
//!
//! `auth.mode = "none"`: every caller is the anonymous principal and no scope
//! is checked (loopback only). Every other mode: every request carries a
//! bearer token, validated by [`verify::IssuerVerifier`] — of the
//! configured issuer (`resource`, `bridge`, [`bearer`]) or of mcpgate's own
//! authorization server (`local`, `proxy`, built by `oauth::setup`); tools
//! need the scopes [`policy::AccessPolicy`] names. `settings` holds
//! `[auth.resource]` and `[[policy]]`.

pub mod challenge;
pub mod jwks;
pub mod policy;
pub mod settings;
pub mod verify;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use jsonwebtoken::Algorithm;

use settings::ResourceAuthSettings;

/// The authenticated caller, available to every tool handler. Serializable
/// so a legacy SSE message relayed to another replica runs as its sender.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    pub issuer: String,
    pub subject: String,
    pub client_id: Option<String>,
    pub scopes: BTreeSet<String>,
    pub audience: Vec<String>,
    /// Epoch seconds; `None` for principals that do not expire.
    pub expires_at: Option<i64>,
    /// Identity claims when the token carries them (proxy mode, most IdPs).
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// Other top-level string, number and boolean claims of the token, for
    /// `[[policy]]` claim conditions.
    pub claims: std::collections::BTreeMap<String, String>,
}

impl Principal {
    /// A claim's value as text: the named fields first, then the rest.
    pub fn claim(&self, name: &str) -> Option<String> {
        match name {
            "sub" => Some(self.subject.clone()),
            "iss" => Some(self.issuer.clone()),
            "client_id" | "azp" => self.client_id.clone(),
            "email" => self.email.clone(),
            "name" => self.name.clone(),
            _ => self.claims.get(name).cloned(),
        }
    }

    /// The single caller of an unauthenticated (loopback development) server.
    pub fn anonymous() -> Self {
        Principal {
            issuer: "mcpgate:none".to_owned(),
            subject: "anonymous".to_owned(),
            client_id: None,
            scopes: BTreeSet::new(),
            audience: Vec::new(),
            expires_at: None,
            email: None,
            name: None,
            groups: Vec::new(),
            claims: std::collections::BTreeMap::new(),
        }
    }

    /// A stable key for data owned by this principal. Subjects are only
    /// unique per issuer, so both are part of it.
    pub fn owner_key(&self) -> String {
        format!("{}|{}", self.issuer, self.subject)
    }
}

/// How the MCP edge identifies callers.
pub enum Authenticator {
    /// `auth.mode = "none"`: everyone is [`Principal::anonymous`].
    Anonymous,
    /// Every other mode: a bearer token, checked by `verifier`; a caller
    /// without a usable one is sent to `challenge`'s metadata.
    Bearer {
        verifier: Arc<verify::IssuerVerifier>,
        challenge: ResourceServerInfo,
    },
}

impl Authenticator {
    /// What challenges and the protected-resource metadata say, when tokens are checked.
    pub fn resource_server(&self) -> Option<&ResourceServerInfo> {
        match self {
            Authenticator::Anonymous => None,
            Authenticator::Bearer { challenge, .. } => Some(challenge),
        }
    }
}

/// What a 401/403 challenge and the protected-resource metadata say.
#[derive(Debug, Clone)]
pub struct ResourceServerInfo {
    pub resource: String,
    pub metadata_url: String,
    pub authorization_servers: Vec<String>,
    /// The minimal baseline to request: never `offline_access`.
    pub scopes_supported: Vec<String>,
    /// mcpgate's public origin: challenges' `error_uri` point to its `/errors`.
    pub public_origin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("cannot discover the authorization server {issuer}: {reason}")]
    Discovery { issuer: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The `typ` of identity JWTs mcpgate signs for upstreams: not `at+jwt`, so
/// mcpgate's own access-token check refuses one replayed to `/mcp` whatever
/// its `aud`. Defined here, beside that check; `upstream` signs with it.
pub const IDENTITY_JWT_TYP: &str = "mcpgate-identity+jwt";

/// The JWS algorithms mcpgate verifies: every asymmetric one [`algorithm`]
/// maps (never HMAC: a shared secret is not a public key).
pub const SUPPORTED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

pub(crate) fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The authenticator of the modes that validate an external issuer's tokens
/// (resource, bridge). It reads the issuer's discovery document once here
/// (unless `jwks_uri` and the introspection endpoint are configured) so a
/// misconfigured issuer fails at start, not on first call.
pub async fn bearer(
    resource: &ResourceAuthSettings,
    challenge: ResourceServerInfo,
    clock: crate::clock::SharedClock,
) -> Result<Authenticator, AuthSetupError> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| AuthSetupError::Client(e.to_string()))?;
    Ok(Authenticator::Bearer {
        verifier: Arc::new(resource_verifier(resource, client, clock).await?),
        challenge,
    })
}

/// The verifier of `[auth.resource]` as `bearer` builds it (also what
/// `mcpgate token verify` checks a token with, so it verifies exactly as
/// the server would).
pub async fn resource_verifier(
    resource: &ResourceAuthSettings,
    client: reqwest::Client,
    clock: crate::clock::SharedClock,
) -> Result<verify::IssuerVerifier, AuthSetupError> {
    let needs_discovery = resource.jwks_uri.is_none()
        || resource
            .introspection
            .as_ref()
            .is_some_and(|i| i.endpoint.is_none());
    let metadata = if needs_discovery {
        Some(
            verify::discover(&client, &resource.issuer)
                .await
                .map_err(|e| AuthSetupError::Discovery {
                    issuer: resource.issuer.clone(),
                    reason: e.to_string(),
                })?,
        )
    } else {
        None
    };
    let jwks_uri = resource
        .jwks_uri
        .clone()
        .or_else(|| metadata.as_ref().and_then(|m| m.jwks_uri.clone()))
        .ok_or_else(|| AuthSetupError::Discovery {
            issuer: resource.issuer.clone(),
            reason: "the discovery document has no jwks_uri".to_owned(),
        })?;
    let introspection = match &resource.introspection {
        None => None,
        Some(i) => Some(verify::Introspection {
            endpoint: i
                .endpoint
                .clone()
                .or_else(|| {
                    metadata
                        .as_ref()
                        .and_then(|m| m.introspection_endpoint.clone())
                })
                .ok_or_else(|| AuthSetupError::Discovery {
                    issuer: resource.issuer.clone(),
                    reason: "no introspection_endpoint configured or discovered".to_owned(),
                })?,
            client_id: i.client_id.clone(),
            client_secret: i.client_secret.clone(),
            subject_claim: i.subject_claim.clone(),
        }),
    };
    let jwks = jwks::JwksCache::with_clock(
        jwks_uri,
        client.clone(),
        Duration::from_secs(resource.jwks_refetch_interval_secs),
        clock.clone(),
    );
    let algorithms = resource
        .algorithms
        .iter()
        .filter_map(|a| algorithm(a))
        .collect();
    Ok(verify::IssuerVerifier::new(
        resource.issuer.clone(),
        resource.audiences.clone(),
        algorithms,
        jwks,
        introspection,
        client,
    )
    .with_clock(clock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_key_separates_issuers() {
        let a = Principal {
            issuer: "https://a".into(),
            ..Principal::anonymous()
        };
        let b = Principal {
            issuer: "https://b".into(),
            ..Principal::anonymous()
        };
        assert_ne!(a.owner_key(), b.owner_key());
    }

    #[test]
    fn every_supported_algorithm_has_a_verifier() {
        for name in SUPPORTED_ALGORITHMS {
            assert!(algorithm(name).is_some(), "{name}");
        }
        assert!(algorithm("HS256").is_none());
    }
}
