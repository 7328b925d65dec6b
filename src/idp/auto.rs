//! `auth.mode = "auto"`: read the upstream IdP's discovery once at start and
//! pick `resource` when MCP clients can work with the IdP directly (open
//! registration or metadata-document client ids, PKCE S256, and a provider
//! whose tokens can name the MCP resource as audience), else `proxy`.

use super::settings::IdpSettings;
use crate::auth::verify::{self, IssuerMetadata};

/// What `auto` turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// MCP clients work with the IdP directly; mcpgate validates its tokens.
    Resource,
    /// mcpgate is the authorization server; users sign in at the IdP.
    Proxy,
}

impl Choice {
    /// The `auth.mode` value this choice stands for.
    pub fn mode_name(self) -> &'static str {
        match self {
            Choice::Resource => "resource",
            Choice::Proxy => "proxy",
        }
    }
}

/// Presets whose access tokens can carry the MCP resource as `aud` (RFC 8707
/// or an audience mapper). Auth0 needs an API audience, Entra rejects
/// `resource`, Google and GitHub issue opaque tokens, Cognito has no
/// per-resource audience.
const AUDIENCE_CAPABLE: &[&str] = &["oidc", "keycloak", "okta"];

/// The decision and every reason for it, for the log.
pub fn choose(preset: &str, meta: Option<&IssuerMetadata>) -> (Choice, Vec<String>) {
    let mut against = Vec::new();
    let Some(meta) = meta else {
        return (
            Choice::Proxy,
            vec![format!("preset {preset:?} has no OpenID discovery")],
        );
    };
    let dcr = meta.registration_endpoint.is_some();
    let cimd = meta.client_id_metadata_document_supported == Some(true);
    if !dcr && !cimd {
        against.push(
            "the IdP offers neither dynamic registration nor client metadata documents".to_owned(),
        );
    }
    if !meta
        .code_challenge_methods_supported
        .as_ref()
        .is_some_and(|m| m.iter().any(|m| m == "S256"))
    {
        against.push("the IdP does not advertise PKCE S256".to_owned());
    }
    if !AUDIENCE_CAPABLE.contains(&preset) {
        against.push(format!(
            "preset {preset:?} does not issue tokens with the MCP resource as audience"
        ));
    }
    if against.is_empty() {
        let mut why = vec![if dcr {
            "the IdP offers dynamic client registration".to_owned()
        } else {
            "the IdP accepts client metadata documents".to_owned()
        }];
        why.push("PKCE S256 is advertised".to_owned());
        (Choice::Resource, why)
    } else {
        (Choice::Proxy, against)
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "auth.mode = \"auto\": cannot read the identity provider's discovery at {issuer}: {reason}"
)]
pub struct AutoError {
    issuer: String,
    reason: String,
}

/// Read the IdP's discovery (when it has one) and choose. Reshaping the
/// settings is `config::AuthSettings::resolved`'s job.
pub async fn decide(idp: &IdpSettings) -> Result<(Choice, Vec<String>), AutoError> {
    let meta = match &idp.issuer {
        Some(issuer) if idp.preset.fixed_endpoints.is_none() => {
            let client = super::outbound_client().map_err(|e| AutoError {
                issuer: issuer.clone(),
                reason: e.to_string(),
            })?;
            // Entra's multi-tenant document names a templated issuer; it never
            // qualifies for `resource` anyway, so a mismatch is not fatal here.
            match verify::discover(&client, issuer).await {
                Ok(meta) => Some(meta),
                Err(e) if idp.preset.name == "entra" => {
                    tracing::debug!(error = %e, "entra discovery for auto mode");
                    None
                }
                Err(e) => {
                    return Err(AutoError {
                        issuer: issuer.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        _ => None,
    };
    Ok(choose(idp.preset.name, meta.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(dcr: bool, cimd: bool, s256: bool) -> IssuerMetadata {
        serde_json::from_value(serde_json::json!({
            "issuer": "https://idp.example",
            "registration_endpoint": dcr.then_some("https://idp.example/reg"),
            "client_id_metadata_document_supported": cimd,
            "code_challenge_methods_supported": if s256 { vec!["S256"] } else { vec!["plain"] },
        }))
        .unwrap()
    }

    #[test]
    fn resource_only_when_clients_can_register_with_pkce_and_audiences_work() {
        assert_eq!(
            choose("keycloak", Some(&meta(true, false, true))).0,
            Choice::Resource
        );
        assert_eq!(
            choose("oidc", Some(&meta(false, true, true))).0,
            Choice::Resource
        );
        let (mode, why) = choose("oidc", Some(&meta(false, false, true)));
        assert_eq!(mode, Choice::Proxy);
        assert!(why[0].contains("neither dynamic registration"), "{why:?}");
        assert_eq!(
            choose("okta", Some(&meta(true, false, false))).0,
            Choice::Proxy
        );
        let (mode, why) = choose("auth0", Some(&meta(true, false, true)));
        assert_eq!(mode, Choice::Proxy);
        assert!(why[0].contains("auth0"), "{why:?}");
        assert_eq!(choose("github", None).0, Choice::Proxy);
    }
}
