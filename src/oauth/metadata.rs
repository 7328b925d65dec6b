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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint_auth_signing_alg_values_supported: Option<Vec<&'static str>>,
    pub scopes_supported: Vec<String>,
    pub token_endpoint: String,
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    /// `private_key_jwt`: the algorithms client assertions may use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_signing_alg_values_supported: Option<Vec<&'static str>>,
}

impl AuthorizationServerMetadata {
    /// What every front serves at `issuer`: `/authorize`, `/token` and
    /// `/register` on its own origin, the code flow with PKCE S256 and query
    /// responses, refresh tokens, `iss` in the response, and the client
    /// authentication methods without an assertion (the local and proxy
    /// servers add `private_key_jwt`; the bridge relays `/token` and keeps
    /// what it has always advertised).
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
            revocation_endpoint_auth_signing_alg_values_supported: None,
            scopes_supported,
            token_endpoint: format!("{issuer}/token"),
            token_endpoint_auth_methods_supported: AuthMethod::WITHOUT_ASSERTION
                .map(AuthMethod::as_str)
                .to_vec(),
            token_endpoint_auth_signing_alg_values_supported: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The local/proxy server's document, built the way
    /// `AuthorizationServer::metadata` builds it. It changed on purpose with
    /// `private_key_jwt` (issue 16): that method joined both method lists,
    /// and the signing algorithms are listed for both endpoints.
    #[test]
    fn the_local_servers_document() {
        let i = "https://gw.example";
        let scopes = vec!["calc".to_owned(), "offline_access".to_owned()];
        let algs = crate::oauth::client_auth::signing_algorithm_names();
        let built = AuthorizationServerMetadata {
            revocation_endpoint: Some(format!("{i}/revoke")),
            revocation_endpoint_auth_methods_supported: Some(
                AuthMethod::ALL.map(AuthMethod::as_str).to_vec(),
            ),
            revocation_endpoint_auth_signing_alg_values_supported: Some(algs.clone()),
            introspection_endpoint: Some(format!("{i}/introspect")),
            introspection_endpoint_auth_methods_supported: Some(
                [AuthMethod::SecretBasic, AuthMethod::SecretPost]
                    .map(AuthMethod::as_str)
                    .to_vec(),
            ),
            jwks_uri: Some(format!("{i}/jwks.json")),
            client_id_metadata_document_supported: Some(true),
            token_endpoint_auth_methods_supported: AuthMethod::ALL.map(AuthMethod::as_str).to_vec(),
            token_endpoint_auth_signing_alg_values_supported: Some(algs),
            ..AuthorizationServerMetadata::new(i, scopes.clone())
        };
        let algs = [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
        ];
        let expected = json!({
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
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": algs,
            "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
            "revocation_endpoint_auth_signing_alg_values_supported": algs,
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": scopes,
            "client_id_metadata_document_supported": true,
            "authorization_response_iss_parameter_supported": true,
        });
        assert_eq!(
            serde_json::to_string(&built).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
    }

    /// What the bridge builds on ([`AuthorizationServerMetadata::new`]) did
    /// not change: it relays `/token` and verifies no assertion itself.
    #[test]
    fn the_shared_base_lists_no_assertion_method() {
        let base = serde_json::to_value(AuthorizationServerMetadata::new(
            "https://gw.example",
            vec![],
        ))
        .unwrap();
        assert_eq!(
            base["token_endpoint_auth_methods_supported"],
            json!(["none", "client_secret_basic", "client_secret_post"])
        );
        assert!(
            base.get("token_endpoint_auth_signing_alg_values_supported")
                .is_none()
        );
    }
}
