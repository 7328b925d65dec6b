//! OAuth clients: RFC 7591 registration metadata, the redirect-URI policy,
//! and redirect matching.

use serde::{Deserialize, Serialize};
use url::Url;

use crate::visible_text::is_visible_text;

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
    /// `private_key_jwt` clients: their public keys (RFC 7591 §2), inline...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// ...or where to fetch them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The algorithm its assertions are signed with (OIDC Registration §2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_signing_alg: Option<String>,
    /// Only in CIMD documents: every method the client can use (ChatGPT's
    /// document lists `none` and `private_key_jwt` while naming the latter
    /// in `token_endpoint_auth_method`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "&'static str")]
pub enum AuthMethod {
    None,
    SecretBasic,
    SecretPost,
    /// RFC 7523 §2.2: a JWT signed with the client's private key.
    PrivateKeyJwt,
}

impl From<AuthMethod> for &'static str {
    fn from(method: AuthMethod) -> &'static str {
        method.as_str()
    }
}

impl AuthMethod {
    /// Every method, in the order metadata documents list them (what the
    /// local and proxy servers verify).
    pub const ALL: [AuthMethod; 4] = [
        AuthMethod::None,
        AuthMethod::SecretBasic,
        AuthMethod::SecretPost,
        AuthMethod::PrivateKeyJwt,
    ];

    /// The methods without a client assertion: what the bridge advertises,
    /// since it relays `/token` to an authorization server of its own.
    pub const WITHOUT_ASSERTION: [AuthMethod; 3] = [
        AuthMethod::None,
        AuthMethod::SecretBasic,
        AuthMethod::SecretPost,
    ];

    pub fn parse(text: &str) -> Option<AuthMethod> {
        Some(match text {
            "none" => AuthMethod::None,
            "client_secret_basic" => AuthMethod::SecretBasic,
            "client_secret_post" => AuthMethod::SecretPost,
            "private_key_jwt" => AuthMethod::PrivateKeyJwt,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::SecretBasic => "client_secret_basic",
            AuthMethod::SecretPost => "client_secret_post",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// A client's id and secret from an HTTP Basic `Authorization` header
/// (RFC 6749 §2.3.1: each form-encoded, then `id:secret` in base64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    pub client_id: String,
    pub secret: String,
}

/// A Basic `Authorization` header that does not decode to `id:secret`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Basic authorization header is malformed")]
pub struct MalformedBasic;

impl BasicCredentials {
    /// `Ok(None)` when `authorization` is another scheme (a bearer token).
    pub fn parse(authorization: &str) -> Result<Option<BasicCredentials>, MalformedBasic> {
        use base64::Engine;
        let Some(encoded) = authorization
            .strip_prefix("Basic ")
            .or_else(|| authorization.strip_prefix("basic "))
        else {
            return Ok(None);
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| MalformedBasic)?;
        let text = String::from_utf8(decoded).map_err(|_| MalformedBasic)?;
        let (id, secret) = text.split_once(':').ok_or(MalformedBasic)?;
        let form_decoded = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        Ok(Some(BasicCredentials {
            client_id: form_decoded(id),
            secret: form_decoded(secret),
        }))
    }
}

/// Whether the server a client registers at verifies client assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuthSupport {
    WithAssertion,
    WithoutAssertion,
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

pub use crate::problems::is_loopback_host;

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

/// Why an authorization request has no redirect URI to answer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("redirect_uri is not registered for this client")]
    NotRegistered,
    #[error("redirect_uri is missing")]
    Missing,
}

/// The redirect URI an authorization request answers to (RFC 6749 §3.1.2.3):
/// the requested one if it matches a registration, else the only registered
/// one when none was requested.
pub fn resolve_redirect(
    registered: &[String],
    requested: Option<&str>,
) -> Result<String, RedirectError> {
    match (requested, registered) {
        (Some(requested), _) => find_redirect(registered, requested)
            .map(|_| requested.to_owned())
            .ok_or(RedirectError::NotRegistered),
        (None, [only]) => Ok(only.clone()),
        (None, _) => Err(RedirectError::Missing),
    }
}

impl ClientMetadata {
    /// The keys of a `private_key_jwt` client: exactly one of `jwks` and
    /// `jwks_uri` (a public client may publish keys too, to use either), a
    /// valid public key set, a signing algorithm from the allow list. Where
    /// a `jwks_uri` may point is the fetch fence's decision.
    pub fn check_keys(&self) -> Result<(), MetadataError> {
        let meta = |m: &str| Err(MetadataError::Metadata(m.to_owned()));
        match (&self.jwks, &self.jwks_uri) {
            (Some(_), Some(_)) => return meta("send jwks or jwks_uri, not both"),
            (None, None) if self.auth_method() == AuthMethod::PrivateKeyJwt => {
                return meta("private_key_jwt needs jwks or jwks_uri");
            }
            (Some(set), None) => {
                if let Err(e) = super::client_keys::parse_key_set(set) {
                    return Err(MetadataError::Metadata(e.to_string()));
                }
            }
            (None, Some(uri)) => {
                if uri.len() > MAX_URI_BYTES
                    || !Url::parse(uri).is_ok_and(|u| matches!(u.scheme(), "https" | "http"))
                {
                    return meta("jwks_uri must be an https URL");
                }
            }
            (None, None) => {}
        }
        if let Some(alg) = &self.token_endpoint_auth_signing_alg
            && super::client_auth::parse_signing_algorithm(alg).is_none()
        {
            return meta(
                "token_endpoint_auth_signing_alg must be one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA",
            );
        }
        Ok(())
    }

    /// Does the client publish keys (`jwks` or `jwks_uri`)?
    pub fn has_keys(&self) -> bool {
        self.jwks.is_some() || self.jwks_uri.is_some()
    }

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

    /// Validate and fill defaults (RFC 7591 §2) for a dynamic registration
    /// at a server that verifies no client assertion (the bridge):
    /// `private_key_jwt` is refused and keys are dropped.
    pub fn normalise_for_registration(self) -> Result<ClientMetadata, MetadataError> {
        self.normalise(ClientAuthSupport::WithoutAssertion)
    }

    /// [`ClientMetadata::normalise_for_registration`] at a server that
    /// verifies `private_key_jwt` (local and proxy modes): a client may
    /// register `jwks` or `jwks_uri` and is then issued no secret.
    pub fn normalise_for_registration_with_assertions(
        self,
    ) -> Result<ClientMetadata, MetadataError> {
        self.normalise(ClientAuthSupport::WithAssertion)
    }

    fn normalise(mut self, support: ClientAuthSupport) -> Result<ClientMetadata, MetadataError> {
        let meta = |m: &str| Err(MetadataError::Metadata(m.to_owned()));
        if self.redirect_uris.is_empty() {
            return Err(MetadataError::RedirectUri(
                "redirect_uris must list at least one URI".to_owned(),
            ));
        }
        if self.redirect_uris.len() > MAX_REDIRECT_URIS {
            return meta("at most 20 redirect_uris");
        }
        let mut kinds = Vec::new();
        for uri in &self.redirect_uris {
            kinds.push(classify_redirect_uri(uri)?);
        }
        let method = match (self.token_endpoint_auth_method.as_deref(), support) {
            (None, _) => AuthMethod::SecretBasic,
            (Some(m), ClientAuthSupport::WithAssertion) => AuthMethod::parse(m).ok_or_else(|| {
                MetadataError::Metadata(
                    "token_endpoint_auth_method must be none, client_secret_basic, client_secret_post or private_key_jwt".to_owned(),
                )
            })?,
            (Some(m), ClientAuthSupport::WithoutAssertion) => match AuthMethod::parse(m) {
                Some(AuthMethod::PrivateKeyJwt) | None => {
                    return meta(
                        "token_endpoint_auth_method must be none, client_secret_basic or client_secret_post",
                    );
                }
                Some(m) => m,
            },
        };
        self.token_endpoint_auth_method = Some(method.as_str().to_owned());
        self.token_endpoint_auth_methods_supported = None;
        if matches!(method, AuthMethod::SecretBasic | AuthMethod::SecretPost)
            || support == ClientAuthSupport::WithoutAssertion
        {
            // A client with a secret authenticates with it; keys would be unused.
            self.jwks = None;
            self.jwks_uri = None;
            self.token_endpoint_auth_signing_alg = None;
        }
        self.check_keys()?;
        for (field, list) in [
            ("grant_types", &self.grant_types),
            ("response_types", &self.response_types),
        ] {
            if list.as_ref().is_some_and(|l| l.len() > MAX_LIST_ITEMS) {
                return Err(MetadataError::Metadata(format!(
                    "{field} may list at most {MAX_LIST_ITEMS} values"
                )));
            }
        }
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
        if let Some(name) = &self.client_name {
            check_client_name(name)?;
        }
        for (field, value) in [
            ("client_uri", &self.client_uri),
            ("logo_uri", &self.logo_uri),
            ("tos_uri", &self.tos_uri),
            ("policy_uri", &self.policy_uri),
        ] {
            if let Some(v) = value
                && (v.len() > MAX_URI_BYTES
                    || !Url::parse(v).is_ok_and(|u| matches!(u.scheme(), "https" | "http")))
            {
                return Err(MetadataError::Metadata(format!(
                    "{field} must be an http(s) URL of at most {MAX_URI_BYTES} bytes"
                )));
            }
        }
        if let Some(contacts) = &self.contacts
            && (contacts.len() > MAX_CONTACTS
                || contacts
                    .iter()
                    .any(|c| c.is_empty() || c.len() > MAX_CONTACT_BYTES || !is_visible_text(c)))
        {
            return Err(MetadataError::Metadata(format!(
                "contacts may list at most {MAX_CONTACTS} addresses of at most {MAX_CONTACT_BYTES} printable bytes"
            )));
        }
        for (field, value) in [
            ("software_id", &self.software_id),
            ("software_version", &self.software_version),
        ] {
            if let Some(v) = value
                && (v.len() > MAX_SOFTWARE_BYTES || !is_visible_text(v))
            {
                return Err(MetadataError::Metadata(format!(
                    "{field} must be at most {MAX_SOFTWARE_BYTES} printable bytes"
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

// Size caps on registered metadata: registration is anonymous and rows live
// for `unused_client_ttl_days`, so every stored field is bounded.
const MAX_REDIRECT_URIS: usize = 20;
/// Entries of `grant_types` / `response_types` (only a few values are meaningful).
const MAX_LIST_ITEMS: usize = 10;
const MAX_URI_BYTES: usize = 2000;
const MAX_CONTACTS: usize = 10;
/// RFC 5321's limit on an address path.
const MAX_CONTACT_BYTES: usize = 254;
const MAX_SOFTWARE_BYTES: usize = 200;
const MAX_CLIENT_NAME_CHARS: usize = 200;

/// The name the consent page shows: bounded, and free of characters that
/// change how the rest of the line renders (RTL overrides make
/// `"App\u{202e}gnp.exe"` read as another name) or hide text.
pub fn check_client_name(name: &str) -> Result<(), MetadataError> {
    if name.trim().is_empty()
        || name.chars().count() > MAX_CLIENT_NAME_CHARS
        || !is_visible_text(name)
    {
        return Err(MetadataError::Metadata(format!(
            "client_name must be 1 to {MAX_CLIENT_NAME_CHARS} printable characters, without control, format or bidirectional characters"
        )));
    }
    Ok(())
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
    fn basic_credentials_are_form_decoded() {
        use base64::Engine;
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("my%20client:s%3Acret")
        );
        assert_eq!(
            BasicCredentials::parse(&header),
            Ok(Some(BasicCredentials {
                client_id: "my client".to_owned(),
                secret: "s:cret".to_owned(),
            }))
        );
        assert_eq!(BasicCredentials::parse("Bearer x"), Ok(None));
        assert_eq!(BasicCredentials::parse("Basic !!"), Err(MalformedBasic));
        let no_colon = format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode("id")
        );
        assert_eq!(BasicCredentials::parse(&no_colon), Err(MalformedBasic));
    }

    #[test]
    fn loopback_hosts_are_parsed_not_matched_as_text() {
        for host in [
            "localhost",
            "LocalHost",
            "127.0.0.1",
            "127.0.0.2",
            "127.255.255.254",
            "::1",
            "[::1]",
            "[0:0:0:0:0:0:0:1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "128.0.0.1",
            "126.255.255.255",
            "0.0.0.0",
            "10.0.0.1",
            "::",
            "[::2]",
            "[::1",
            "::1]",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "evil-localhost",
            "127.1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        // What a URL parser hands over: lower-cased names, bracketed IPv6,
        // and IPv4 in its dotted form whatever was written.
        for (uri, loopback) in [
            ("http://LOCALHOST:1/cb", true),
            ("http://[::1]:1/cb", true),
            ("http://127.0.0.9/cb", true),
            ("http://2130706433/cb", true),
            ("http://0x7f000001/cb", true),
            ("http://[::ffff:7f00:1]/cb", false),
            ("http://127.0.0.1.nip.io/cb", false),
        ] {
            let host = Url::parse(uri).unwrap().host_str().unwrap().to_owned();
            assert_eq!(is_loopback_host(&host), loopback, "{uri} ({host})");
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
    fn bidi_overrides_and_invisible_characters_in_client_name_are_refused() {
        for name in [
            "Claude\u{202e}gnp.exe",
            "App\u{2066}x\u{2069}",
            "Zero\u{200b}width",
            "Soft\u{00ad}hyphen",
            "Bom\u{feff}",
            "Tag\u{e0041}",
            "Line\u{2028}break",
            "Bell\u{7}",
            "   ",
        ] {
            assert!(check_client_name(name).is_err(), "{name:?}");
        }
        for name in [
            "Claude",
            "Visual Studio Code",
            "Café ☕",
            "日本語のアプリ",
            "عربي",
        ] {
            assert!(check_client_name(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn oversized_metadata_fields_and_lists_are_refused() {
        let base = || serde_json::json!({"redirect_uris": ["https://a.example/cb"]});
        let long = "x".repeat(3000);
        let cases = [
            ("contacts", serde_json::json!(vec!["a@example.com"; 11])),
            (
                "contacts",
                serde_json::json!([format!("{long}@example.com")]),
            ),
            ("software_id", serde_json::json!(long)),
            ("software_version", serde_json::json!(long)),
            (
                "client_uri",
                serde_json::json!(format!("https://a.example/{long}")),
            ),
            (
                "logo_uri",
                serde_json::json!(format!("https://a.example/{long}")),
            ),
            (
                "tos_uri",
                serde_json::json!(format!("https://a.example/{long}")),
            ),
            (
                "policy_uri",
                serde_json::json!(format!("https://a.example/{long}")),
            ),
            ("client_name", serde_json::json!("n".repeat(201))),
            ("scope", serde_json::json!(long)),
            (
                "grant_types",
                serde_json::json!(vec!["authorization_code"; 11]),
            ),
            ("response_types", serde_json::json!(vec!["code"; 11])),
            (
                "redirect_uris",
                serde_json::json!(vec!["https://a.example/cb"; 21]),
            ),
            (
                "redirect_uris",
                serde_json::json!([format!("https://a.example/{long}")]),
            ),
        ];
        for (field, value) in cases {
            let mut body = base();
            body[field] = value;
            let m: ClientMetadata = serde_json::from_value(body).unwrap();
            assert!(m.normalise_for_registration().is_err(), "{field}");
        }
        let mut ok = base();
        ok["contacts"] = serde_json::json!(["ops@example.com"]);
        ok["software_id"] = serde_json::json!("4NRB1-0XZABZI9E6-5SM3R");
        ok["software_version"] = serde_json::json!("2.1");
        let m: ClientMetadata = serde_json::from_value(ok).unwrap();
        assert!(m.normalise_for_registration().is_ok());
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
