//! OAuth clients: RFC 7591 registration metadata, the redirect-URI policy,
//! and redirect matching.

use serde::{Deserialize, Serialize};
use url::Url;

/// Client metadata as registered (RFC 7591 §2), unknown fields dropped.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct ClientMetadata {
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_type: Option<String>,
    /// Only in CIMD documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    None,
    SecretBasic,
    SecretPost,
}

impl AuthMethod {
    pub fn parse(text: &str) -> Option<AuthMethod> {
        Some(match text {
            "none" => AuthMethod::None,
            "client_secret_basic" => AuthMethod::SecretBasic,
            "client_secret_post" => AuthMethod::SecretPost,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::SecretBasic => "client_secret_basic",
            AuthMethod::SecretPost => "client_secret_post",
        }
    }
}

/// Why metadata was refused; the edge maps these to RFC 7591 error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("{0}")]
    RedirectUri(String),
    #[error("{0}")]
    Metadata(String),
}

/// What kind of redirect target a URI is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    Https,
    /// `http://` on a loopback host (RFC 8252 §7.3): any port matches.
    Loopback,
    /// A private-use scheme of a native app (`cursor://...`).
    PrivateScheme,
}

const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "file",
    "vbscript",
    "about",
    "blob",
    "ftp",
    "ws",
    "wss",
    "mailto",
    "tel",
    "sms",
    "chrome",
    "view-source",
];

/// Classify a redirect URI, refusing the dangerous ones. The reason never
/// echoes the URI itself (it may be attacker-chosen markup).
pub fn classify_redirect_uri(uri: &str) -> Result<RedirectKind, MetadataError> {
    let bad = |why: &str| Err(MetadataError::RedirectUri(why.to_owned()));
    if uri.len() > 2000 {
        return bad("a redirect URI is longer than 2000 characters");
    }
    let Ok(url) = Url::parse(uri) else {
        return bad("a redirect URI is not an absolute URI");
    };
    if url.fragment().is_some() || uri.contains('#') {
        return bad("redirect URIs must not contain a fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("redirect URIs must not contain user information");
    }
    let scheme = url.scheme();
    if FORBIDDEN_SCHEMES.contains(&scheme) {
        return bad("this redirect URI scheme is not allowed");
    }
    match scheme {
        "https" => {
            if url.host_str().is_none_or(str::is_empty) {
                return bad("https redirect URIs need a host");
            }
            Ok(RedirectKind::Https)
        }
        "http" => {
            if url.host_str().is_some_and(is_loopback_host) {
                Ok(RedirectKind::Loopback)
            } else {
                bad(
                    "http redirect URIs are only allowed on loopback hosts (127.0.0.1, [::1], localhost)",
                )
            }
        }
        _ => Ok(RedirectKind::PrivateScheme),
    }
}

pub fn is_loopback_host(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1")
}

/// Does `requested` match the registered `registered` URI? Exact string
/// match, except that loopback http URIs may differ in port (RFC 8252 §7.3).
pub fn redirect_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(a), Ok(b)) = (Url::parse(registered), Url::parse(requested)) else {
        return false;
    };
    a.scheme() == "http"
        && b.scheme() == "http"
        && a.host_str().is_some_and(is_loopback_host)
        && a.host_str() == b.host_str()
        && a.path() == b.path()
        && a.query() == b.query()
        && a.fragment().is_none()
        && b.fragment().is_none()
        && b.username().is_empty()
        && b.password().is_none()
}

/// A registered redirect URI matching `requested`, if any.
pub fn find_redirect<'a>(registered: &'a [String], requested: &str) -> Option<&'a String> {
    registered.iter().find(|r| redirect_matches(r, requested))
}

impl ClientMetadata {
    pub fn auth_method(&self) -> AuthMethod {
        self.token_endpoint_auth_method
            .as_deref()
            .and_then(AuthMethod::parse)
            .unwrap_or(AuthMethod::SecretBasic)
    }

    pub fn allows_refresh(&self) -> bool {
        self.grant_types
            .as_ref()
            .is_some_and(|g| g.iter().any(|t| t == "refresh_token"))
    }

    /// Validate and fill defaults (RFC 7591 §2) for a dynamic registration.
    pub fn normalise_for_registration(mut self) -> Result<ClientMetadata, MetadataError> {
        let meta = |m: &str| Err(MetadataError::Metadata(m.to_owned()));
        if self.redirect_uris.is_empty() {
            return Err(MetadataError::RedirectUri(
                "redirect_uris must list at least one URI".to_owned(),
            ));
        }
        if self.redirect_uris.len() > 20 {
            return meta("at most 20 redirect_uris");
        }
        let mut kinds = Vec::new();
        for uri in &self.redirect_uris {
            kinds.push(classify_redirect_uri(uri)?);
        }
        let method = match self.token_endpoint_auth_method.as_deref() {
            None => AuthMethod::SecretBasic,
            Some(m) => match AuthMethod::parse(m) {
                Some(m) => m,
                None => {
                    return meta(
                        "token_endpoint_auth_method must be none, client_secret_basic or client_secret_post",
                    );
                }
            },
        };
        self.token_endpoint_auth_method = Some(method.as_str().to_owned());
        // Grants we do not support (jwt-bearer, client_credentials) are dropped, not fatal.
        let grants: Vec<String> = self
            .grant_types
            .take()
            .unwrap_or_else(|| vec!["authorization_code".to_owned()])
            .into_iter()
            .filter(|g| g == "authorization_code" || g == "refresh_token")
            .collect();
        if !grants.iter().any(|g| g == "authorization_code") {
            return meta("grant_types must include authorization_code");
        }
        self.grant_types = Some(dedup(grants));
        let responses = self
            .response_types
            .take()
            .unwrap_or_else(|| vec!["code".to_owned()]);
        if responses.iter().any(|r| r != "code") {
            return meta("response_types may only contain code");
        }
        self.response_types = Some(vec!["code".to_owned()]);
        match self.application_type.as_deref() {
            None => {
                let native = kinds.iter().any(|k| *k != RedirectKind::Https);
                self.application_type = Some(if native { "native" } else { "web" }.to_owned());
            }
            Some("web" | "native") => {}
            Some(_) => return meta("application_type must be web or native"),
        }
        if let Some(name) = &self.client_name
            && (name.chars().count() > 200 || name.chars().any(char::is_control))
        {
            return meta("client_name must be at most 200 printable characters");
        }
        for (field, value) in [
            ("client_uri", &self.client_uri),
            ("logo_uri", &self.logo_uri),
            ("tos_uri", &self.tos_uri),
            ("policy_uri", &self.policy_uri),
        ] {
            if let Some(v) = value
                && !Url::parse(v).is_ok_and(|u| matches!(u.scheme(), "https" | "http"))
            {
                return Err(MetadataError::Metadata(format!(
                    "{field} must be an http(s) URL"
                )));
            }
        }
        if let Some(scope) = &self.scope
            && (scope.len() > 1000 || scope.contains('"'))
        {
            return meta("scope must be a space-separated list of scope tokens");
        }
        self.client_id = None;
        Ok(self)
    }
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_redirects_real_clients_register() {
        for uri in [
            "http://127.0.0.1:33418/",
            "http://localhost:3334/oauth/callback",
            "http://[::1]:8080/cb",
            "https://claude.ai/api/mcp/auth_callback",
            "https://chatgpt.com/connector_platform_oauth_redirect",
            "https://vscode.dev/redirect",
            "cursor://anysphere.cursor-mcp/oauth/callback",
            "com.example.app:/oauth2redirect",
        ] {
            assert!(classify_redirect_uri(uri).is_ok(), "{uri}");
        }
    }

    #[test]
    fn refuses_dangerous_redirects() {
        for uri in [
            "javascript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
            "vbscript:msgbox",
            "http://evil.example/cb",
            "https://a.example/cb#frag",
            "https://user:pw@a.example/cb",
            "not a uri",
            "http://127.0.0.1.evil.example/cb",
        ] {
            assert!(classify_redirect_uri(uri).is_err(), "{uri}");
        }
    }

    #[test]
    fn loopback_port_relaxation_only_for_loopback() {
        assert!(redirect_matches(
            "http://127.0.0.1:33418/",
            "http://127.0.0.1:5555/"
        ));
        assert!(redirect_matches(
            "http://127.0.0.1/",
            "http://127.0.0.1:5555/"
        ));
        assert!(!redirect_matches(
            "http://127.0.0.1:1/cb",
            "http://127.0.0.1:2/other"
        ));
        assert!(!redirect_matches(
            "http://127.0.0.1:1/cb",
            "http://localhost:1/cb"
        ));
        assert!(!redirect_matches(
            "https://a.example/cb",
            "https://a.example:8443/cb"
        ));
        assert!(!redirect_matches(
            "https://a.example/cb",
            "https://a.example/cb/x"
        ));
        assert!(!redirect_matches(
            "https://a.example/cb",
            "https://b.example/cb"
        ));
        assert!(!redirect_matches(
            "https://a.example/cb",
            "https://a.example/cb?x=1"
        ));
    }

    #[test]
    fn registration_defaults() {
        let m: ClientMetadata = serde_json::from_value(serde_json::json!({
            "redirect_uris": ["http://127.0.0.1:9/cb"],
            "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
            "unknown_field": 1
        }))
        .unwrap();
        let m = m.normalise_for_registration().unwrap();
        assert_eq!(m.auth_method(), AuthMethod::SecretBasic);
        assert!(m.allows_refresh());
        assert_eq!(m.grant_types.as_ref().unwrap().len(), 2);
        assert_eq!(m.application_type.as_deref(), Some("native"));
    }
}
