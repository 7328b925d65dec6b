//! RFC 8414 authorization-server metadata: one document type for every
//! front (local, proxy, bridge). [`AuthorizationServerMetadata::new`] holds
//! what they all support the same way; each front adds its own endpoints.

use serde::Serialize;

use super::clients::AuthMethod;

/// `/.well-known/oauth-authorization-server`. Optional members are left out
/// when `None`.
///
/// The fields are in alphabetical order on purpose: the documents were
/// built with `json!`, whose map sorts its keys, and serving them in the
/// same order keeps them byte for byte what clients have always fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthorizationServerMetadata {
    pub authorization_endpoint: String,
    /// draft-ietf-oauth-identity-assertion-authz-grant §7.2: the grant
    /// profiles accepted (ID-JAG, when an enterprise IdP is trusted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_grant_profiles_supported: Option<Vec<&'static str>>,
    /// RFC 9207: the authorization response carries `iss`.
    pub authorization_response_iss_parameter_supported: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id_metadata_document_supported: Option<bool>,
    pub code_challenge_methods_supported: Vec<&'static str>,
    pub grant_types_supported: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint_auth_methods_supported: Option<Vec<&'static str>>,
    pub issuer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    pub registration_endpoint: String,
    pub response_modes_supported: Vec<&'static str>,
    pub response_types_supported: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint_auth_methods_supported: Option<Vec<&'static str>>,
    pub scopes_supported: Vec<String>,
    pub token_endpoint: String,
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
}

impl AuthorizationServerMetadata {
    /// What every front serves at `issuer`: `/authorize`, `/token` and
    /// `/register` on its own origin, the code flow with PKCE S256 and query
    /// responses, refresh tokens, `iss` in the response, and every client
    /// authentication method [`AuthMethod`] knows.
    pub fn new(issuer: &str, scopes_supported: Vec<String>) -> AuthorizationServerMetadata {
        AuthorizationServerMetadata {
            authorization_endpoint: format!("{issuer}/authorize"),
            authorization_grant_profiles_supported: None,
            authorization_response_iss_parameter_supported: true,
            client_id_metadata_document_supported: None,
            code_challenge_methods_supported: vec!["S256"],
            grant_types_supported: vec!["authorization_code", "refresh_token"],
            introspection_endpoint: None,
            introspection_endpoint_auth_methods_supported: None,
            issuer: issuer.to_owned(),
            jwks_uri: None,
            registration_endpoint: format!("{issuer}/register"),
            response_modes_supported: vec!["query"],
            response_types_supported: vec!["code"],
            revocation_endpoint: None,
            revocation_endpoint_auth_methods_supported: None,
            scopes_supported,
            token_endpoint: format!("{issuer}/token"),
            token_endpoint_auth_methods_supported: AuthMethod::ALL.map(AuthMethod::as_str).to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The local/proxy server's document, built the way
    /// `AuthorizationServer::metadata` is to build it, is byte for byte the
    /// `json!` document it served before.
    #[test]
    fn the_local_servers_document_is_unchanged() {
        let i = "https://gw.example";
        let scopes = vec!["calc".to_owned(), "offline_access".to_owned()];
        let built = AuthorizationServerMetadata {
            revocation_endpoint: Some(format!("{i}/revoke")),
            revocation_endpoint_auth_methods_supported: Some(
                AuthMethod::ALL.map(AuthMethod::as_str).to_vec(),
            ),
            introspection_endpoint: Some(format!("{i}/introspect")),
            introspection_endpoint_auth_methods_supported: Some(
                [AuthMethod::SecretBasic, AuthMethod::SecretPost]
                    .map(AuthMethod::as_str)
                    .to_vec(),
            ),
            jwks_uri: Some(format!("{i}/jwks.json")),
            client_id_metadata_document_supported: Some(true),
            ..AuthorizationServerMetadata::new(i, scopes.clone())
        };
        let before = json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "registration_endpoint": format!("{i}/register"),
            "revocation_endpoint": format!("{i}/revoke"),
            "introspection_endpoint": format!("{i}/introspect"),
            "jwks_uri": format!("{i}/jwks.json"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": scopes,
            "client_id_metadata_document_supported": true,
            "authorization_response_iss_parameter_supported": true,
        });
        assert_eq!(
            serde_json::to_string(&built).unwrap(),
            serde_json::to_string(&before).unwrap()
        );
    }
}
