//! `[[auth.local.clients]]`: clients the operator registers in the
//! configuration instead of letting them register themselves. They cover
//! machine clients (the `client_credentials` grant, by secret or by
//! `private_key_jwt`) and interactive clients that cannot register (a fixed
//! client id and secret handed to enterprise-managed Claude, or Cursor with a
//! static id). Their ids are stable across restarts and replicas, which is
//! what other settings (trusted enterprise IdPs' `allowed_clients`) refer to.

use std::{path::PathBuf, sync::Arc};

use serde::{Deserialize, Serialize};

use super::client_keys::parse_key_set;
use super::clients::{AuthMethod, ClientMetadata, check_client_name, classify_redirect_uri};
use crate::problems::{is_https_or_loopback_http, read_inline_or_file, read_secret};

/// The grants a configured client may name.
pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// RFC 7523 §2.1, used by enterprise-managed authorization (ID-JAG).
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

const KNOWN_GRANTS: [&str; 4] = [
    GRANT_AUTHORIZATION_CODE,
    GRANT_REFRESH_TOKEN,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_JWT_BEARER,
];

/// Secrets of configured clients: long enough that guessing is hopeless.
const MIN_SECRET_CHARS: usize = 32;

/// `[[auth.local.clients]]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfiguredClient {
    pub client_id: String,
    /// Shown on the consent page (interactive clients).
    pub client_name: Option<String>,
    pub client_secret: Option<String>,
    /// The secret in a file (trimmed), instead of `client_secret`.
    pub client_secret_file: Option<PathBuf>,
    /// The client's public keys for `private_key_jwt`, as JWKS JSON text.
    pub jwks: Option<String>,
    /// The same in a file.
    pub jwks_file: Option<PathBuf>,
    /// Or where to fetch them (https; fetched like a metadata document).
    pub jwks_uri: Option<String>,
    /// One of `client_secret_basic`, `client_secret_post`, `private_key_jwt`,
    /// `none`. Default: both secret methods for a client with a secret,
    /// `private_key_jwt` for one with keys, `none` for one with neither.
    pub token_endpoint_auth_method: Option<String>,
    /// Default: `client_credentials` for a client with a secret or keys,
    /// plus `authorization_code` and `refresh_token` when it has redirect URIs.
    pub grant_types: Option<Vec<String>>,
    /// For the interactive flow; the same rules as dynamic registrations.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// The scopes it may obtain. Default: every scope the server advertises.
    pub scopes: Option<Vec<String>>,
    /// The resources it may obtain tokens for. Default: this server's `/mcp`.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Whom its `client_credentials` tokens act as (their `sub`, and the
    /// owner of what they create). Default: `client:<client_id>`.
    pub subject: Option<String>,
    /// This client's access-token lifetime instead of `access_token_ttl_secs`.
    pub access_token_ttl_secs: Option<u64>,
}

/// Where a client's `private_key_jwt` keys come from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKeys {
    /// A JWKS given in the configuration or a registration.
    Inline(serde_json::Value),
    /// A JWKS URL.
    Uri(String),
}

/// `[[auth.local.clients]]`, validated.
#[derive(Debug, Clone, Serialize)]
pub struct ConfiguredClient {
    pub client_id: String,
    pub client_name: Option<String>,
    #[serde(serialize_with = "crate::problems::redacted_option")]
    pub client_secret: Option<secrecy::SecretString>,
    pub keys: Option<ClientKeys>,
    /// The methods it may authenticate with, in order of preference.
    pub auth_methods: Vec<AuthMethod>,
    pub grant_types: Vec<String>,
    pub redirect_uris: Vec<String>,
    /// `None`: every advertised scope.
    pub scopes: Option<Vec<String>>,
    /// Empty: this server's resource only.
    pub resources: Vec<String>,
    pub subject: String,
    pub access_token_ttl_secs: Option<u64>,
}

impl ConfiguredClient {
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    /// The client as the flows see its metadata (what a registration would hold).
    pub fn metadata(&self) -> ClientMetadata {
        let (jwks, jwks_uri) = match &self.keys {
            Some(ClientKeys::Inline(set)) => (Some(set.clone()), None),
            Some(ClientKeys::Uri(uri)) => (None, Some(uri.clone())),
            None => (None, None),
        };
        ClientMetadata {
            redirect_uris: self.redirect_uris.clone(),
            token_endpoint_auth_method: self.auth_methods.first().map(|m| m.as_str().to_owned()),
            grant_types: Some(self.grant_types.clone()),
            response_types: Some(vec!["code".to_owned()]),
            client_name: self.client_name.clone(),
            scope: self.scopes.as_ref().map(|s| s.join(" ")),
            jwks,
            jwks_uri,
            ..ClientMetadata::default()
        }
    }
}

/// Validate `[[auth.local.clients]]`, pushing one line per problem.
pub fn validate(
    raw: &[RawConfiguredClient],
    errors: &mut Vec<String>,
) -> Vec<Arc<ConfiguredClient>> {
    let mut out: Vec<Arc<ConfiguredClient>> = Vec::new();
    for (i, c) in raw.iter().enumerate() {
        let at = format!("auth.local.clients[{i}]");
        if let Some(client) = validate_one(&at, c, errors) {
            if out.iter().any(|o| o.client_id == client.client_id) {
                errors.push(format!(
                    "{at}.client_id: {:?} is listed twice",
                    client.client_id
                ));
                continue;
            }
            out.push(Arc::new(client));
        }
    }
    out
}

fn validate_one(
    at: &str,
    c: &RawConfiguredClient,
    errors: &mut Vec<String>,
) -> Option<ConfiguredClient> {
    let before = errors.len();
    if c.client_id.is_empty()
        || c.client_id.len() > 200
        || !crate::visible_text::is_visible_text(&c.client_id)
        || c.client_id.contains(char::is_whitespace)
    {
        errors.push(format!(
            "{at}.client_id: 1 to 200 printable characters without spaces"
        ));
    }
    // A URL id would shadow a Client ID Metadata Document of the same name.
    if c.client_id.starts_with("https://") || c.client_id.starts_with("http://") {
        errors.push(format!(
            "{at}.client_id: must not be a URL (URL client ids name metadata documents)"
        ));
    }
    if let Some(name) = &c.client_name
        && let Err(e) = check_client_name(name)
    {
        errors.push(format!("{at}.client_name: {e}"));
    }
    let client_secret = match (&c.client_secret, &c.client_secret_file) {
        (None, None) => None,
        (inline, file) => read_secret(
            at,
            "client_secret",
            inline.as_deref(),
            file.as_deref(),
            errors,
        ),
    };
    if client_secret
        .as_ref()
        .is_some_and(|s| s.chars().count() < MIN_SECRET_CHARS)
    {
        errors.push(format!(
            "{at}.client_secret: at least {MIN_SECRET_CHARS} characters"
        ));
    }
    let keys = validate_keys(at, c, errors);
    let auth_methods = match c.token_endpoint_auth_method.as_deref() {
        Some(text) => match AuthMethod::parse(text) {
            Some(method) => vec![method],
            None => {
                errors.push(format!(
                    "{at}.token_endpoint_auth_method: must be none, client_secret_basic, client_secret_post or private_key_jwt"
                ));
                vec![]
            }
        },
        None => match (&client_secret, &keys) {
            (Some(_), _) => vec![AuthMethod::SecretBasic, AuthMethod::SecretPost],
            (None, Some(_)) => vec![AuthMethod::PrivateKeyJwt],
            (None, None) => vec![AuthMethod::None],
        },
    };
    for method in &auth_methods {
        let fits = match method {
            AuthMethod::None => client_secret.is_none() && keys.is_none(),
            AuthMethod::SecretBasic | AuthMethod::SecretPost => client_secret.is_some(),
            AuthMethod::PrivateKeyJwt => keys.is_some(),
        };
        if !fits {
            errors.push(format!(
                "{at}.token_endpoint_auth_method: {} needs {}",
                method.as_str(),
                match method {
                    AuthMethod::None => "no client_secret and no keys",
                    AuthMethod::SecretBasic | AuthMethod::SecretPost => "a client_secret",
                    AuthMethod::PrivateKeyJwt => "jwks, jwks_file or jwks_uri",
                }
            ));
        }
    }
    let confidential = client_secret.is_some() || keys.is_some();
    let grant_types = match &c.grant_types {
        Some(grants) => grants.clone(),
        None => {
            let mut grants = Vec::new();
            if !c.redirect_uris.is_empty() {
                grants.push(GRANT_AUTHORIZATION_CODE.to_owned());
                grants.push(GRANT_REFRESH_TOKEN.to_owned());
            }
            if confidential {
                grants.push(GRANT_CLIENT_CREDENTIALS.to_owned());
            }
            grants
        }
    };
    if grant_types.is_empty() {
        errors.push(format!(
            "{at}: a client needs redirect_uris (interactive) or a secret or keys (client_credentials)"
        ));
    }
    for grant in &grant_types {
        if !KNOWN_GRANTS.contains(&grant.as_str()) {
            errors.push(format!(
                "{at}.grant_types: {grant:?} is not one of {}",
                KNOWN_GRANTS.join(", ")
            ));
        }
    }
    let needs_secret_or_keys = [GRANT_CLIENT_CREDENTIALS, GRANT_JWT_BEARER];
    if !confidential
        && grant_types
            .iter()
            .any(|g| needs_secret_or_keys.contains(&g.as_str()))
    {
        errors.push(format!(
            "{at}.grant_types: client_credentials and jwt-bearer need a client_secret or keys"
        ));
    }
    if grant_types.iter().any(|g| g == GRANT_AUTHORIZATION_CODE) && c.redirect_uris.is_empty() {
        errors.push(format!(
            "{at}.redirect_uris: authorization_code needs at least one"
        ));
    }
    for uri in &c.redirect_uris {
        if let Err(e) = classify_redirect_uri(uri) {
            errors.push(format!("{at}.redirect_uris: {e}"));
        }
    }
    if let Some(scopes) = &c.scopes
        && scopes
            .iter()
            .any(|s| s.is_empty() || s.contains(' ') || s.contains('"'))
    {
        errors.push(format!(
            "{at}.scopes: scopes are non-empty words without spaces or quotes"
        ));
    }
    for resource in &c.resources {
        if url::Url::parse(resource).map_or(true, |u| u.fragment().is_some()) {
            errors.push(format!(
                "{at}.resources: {resource:?} is not an absolute URI without a fragment"
            ));
        }
    }
    let subject = c
        .subject
        .clone()
        .unwrap_or_else(|| format!("client:{}", c.client_id));
    if subject.is_empty() || subject.len() > 255 || !crate::visible_text::is_visible_text(&subject)
    {
        errors.push(format!("{at}.subject: 1 to 255 printable characters"));
    }
    if let Some(ttl) = c.access_token_ttl_secs
        && !(1..=7 * 86_400).contains(&ttl)
    {
        errors.push(format!(
            "{at}.access_token_ttl_secs: {ttl} must be between 1 and 604800"
        ));
    }
    (errors.len() == before).then(|| ConfiguredClient {
        client_id: c.client_id.clone(),
        client_name: c.client_name.clone(),
        client_secret: client_secret.map(secrecy::SecretString::from),
        keys,
        auth_methods,
        grant_types,
        redirect_uris: c.redirect_uris.clone(),
        scopes: c.scopes.clone(),
        resources: c.resources.clone(),
        subject,
        access_token_ttl_secs: c.access_token_ttl_secs,
    })
}

fn validate_keys(
    at: &str,
    c: &RawConfiguredClient,
    errors: &mut Vec<String>,
) -> Option<ClientKeys> {
    let before = errors.len();
    let inline_text = read_inline_or_file(
        at,
        "jwks",
        c.jwks.as_deref(),
        c.jwks_file.as_deref(),
        errors,
    );
    if errors.len() > before {
        return None;
    }
    match (inline_text, &c.jwks_uri) {
        (Some(_), Some(_)) => {
            errors.push(format!(
                "{at}: set jwks (or jwks_file) or jwks_uri, not both"
            ));
            None
        }
        // The same parse the assertion check uses, so a set it would
        // refuse at every token request is refused here.
        (Some(text), None) => match serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .filter(|set| parse_key_set(set).is_ok())
        {
            Some(set) => Some(ClientKeys::Inline(set)),
            None => {
                errors.push(format!(
                    "{at}.jwks: not a JWK set with at least one public signing key"
                ));
                None
            }
        },
        (None, Some(uri)) if is_https_or_loopback_http(uri) => Some(ClientKeys::Uri(uri.clone())),
        (None, Some(_)) => {
            errors.push(format!(
                "{at}.jwks_uri: must be an https URL (http only on loopback)"
            ));
            None
        }
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: &str) -> RawConfiguredClient {
        RawConfiguredClient {
            client_id: id.to_owned(),
            ..RawConfiguredClient::default()
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn defaults_follow_what_the_client_has() {
        let mut errors = Vec::new();
        let machine = RawConfiguredClient {
            client_secret: Some(SECRET.to_owned()),
            ..raw("bot")
        };
        let interactive = RawConfiguredClient {
            redirect_uris: vec!["cursor://anysphere.cursor-mcp/oauth/callback".to_owned()],
            ..raw("cursor")
        };
        let keyed = RawConfiguredClient {
            jwks: Some(r#"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#.to_owned()),
            ..raw("signer")
        };
        let clients = validate(&[machine, interactive, keyed], &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            clients[0].auth_methods,
            vec![AuthMethod::SecretBasic, AuthMethod::SecretPost]
        );
        assert_eq!(clients[0].grant_types, vec![GRANT_CLIENT_CREDENTIALS]);
        assert_eq!(clients[0].subject, "client:bot");
        assert_eq!(clients[1].auth_methods, vec![AuthMethod::None]);
        assert_eq!(
            clients[1].grant_types,
            vec![GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN]
        );
        assert_eq!(clients[2].auth_methods, vec![AuthMethod::PrivateKeyJwt]);
        assert!(clients[2].metadata().jwks.is_some());
    }

    #[test]
    fn each_problem_is_reported() {
        let mut errors = Vec::new();
        let cases = [
            raw("https://looks.like/a/document"),
            RawConfiguredClient {
                client_secret: Some("short".to_owned()),
                ..raw("a")
            },
            RawConfiguredClient {
                grant_types: Some(vec!["client_credentials".to_owned()]),
                ..raw("b")
            },
            RawConfiguredClient {
                client_secret: Some(SECRET.to_owned()),
                grant_types: Some(vec!["password".to_owned()]),
                ..raw("c")
            },
            RawConfiguredClient {
                jwks: Some("{}".to_owned()),
                ..raw("d")
            },
            RawConfiguredClient {
                jwks_uri: Some("http://keys.example/jwks".to_owned()),
                ..raw("e")
            },
            RawConfiguredClient {
                client_secret: Some(SECRET.to_owned()),
                token_endpoint_auth_method: Some("private_key_jwt".to_owned()),
                ..raw("f")
            },
            RawConfiguredClient {
                redirect_uris: vec!["javascript:alert(1)".to_owned()],
                ..raw("g")
            },
            RawConfiguredClient {
                client_secret: Some(SECRET.to_owned()),
                access_token_ttl_secs: Some(0),
                ..raw("h")
            },
            RawConfiguredClient {
                client_secret: Some(SECRET.to_owned()),
                ..raw("i")
            },
            RawConfiguredClient {
                client_secret: Some(SECRET.to_owned()),
                ..raw("i")
            },
            // Symmetric material: the assertion check would refuse it at every use.
            RawConfiguredClient {
                jwks: Some(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.to_owned()),
                ..raw("j")
            },
        ];
        validate(&cases, &mut errors);
        let text = errors.join("\n");
        for needle in [
            "clients[0].client_id: must not be a URL",
            "clients[1].client_secret: at least 32",
            "clients[2].grant_types: client_credentials and jwt-bearer need",
            "clients[3].grant_types: \"password\" is not one of",
            "clients[4].jwks: not a JWK set",
            "clients[5].jwks_uri: must be an https URL",
            "clients[6].token_endpoint_auth_method: private_key_jwt needs",
            "clients[7].redirect_uris:",
            "clients[8].access_token_ttl_secs: 0 must be",
            "clients[10].client_id: \"i\" is listed twice",
            "clients[11].jwks: not a JWK set with at least one public signing key",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }
}
