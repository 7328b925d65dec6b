//! `[auth.local]`: the embedded authorization server's settings (local,
//! proxy and auto modes), raw and validated. Called from `config`, which
//! collects the errors.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::problems::{bounded, require_https};

/// `[auth.local]`: the embedded authorization server.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocalAuth {
    /// Access-token lifetime; also the bound on how long a revoked grant's
    /// access tokens keep working. Default 3600.
    pub access_token_ttl_secs: Option<u64>,
    /// `[auth.local.access_token_ttl_by_client]`: access-token lifetime per
    /// known client (`chatgpt = 28800`; names in `oauth::known_clients`),
    /// for clients that refresh badly. A configured client's own
    /// `access_token_ttl_secs` comes first. Default none.
    #[serde(default)]
    pub access_token_ttl_by_client: std::collections::BTreeMap<String, u64>,
    /// Default 30 days.
    pub refresh_token_ttl_secs: Option<u64>,
    /// A rotated refresh token presented again within this window gets the
    /// same response (a lost response retried); later it revokes the family. Default 30.
    pub refresh_reuse_grace_secs: Option<u64>,
    /// Default 300.
    pub code_ttl_secs: Option<u64>,
    /// A code posted again by the same client within this window gets the
    /// same response (ChatGPT posts twice). Default 10.
    pub code_replay_window_secs: Option<u64>,
    /// Browser login session lifetime. Default 12 hours.
    pub session_ttl_secs: Option<u64>,
    /// Base64 32-byte key sealing private keys and replayable responses.
    pub encryption_key: Option<String>,
    /// Default `<data_dir>/mcpgate.key`, created on first start.
    pub encryption_key_file: Option<PathBuf>,
    /// Base64 keys used before `encryption_key`: data sealed under them is
    /// still opened, and re-sealed under the current key at start.
    #[serde(default)]
    pub previous_encryption_keys: Vec<String>,
    /// Scopes advertised besides the policy's. Default none.
    pub extra_scopes: Option<Vec<String>>,
    /// Skip the consent page when the user approved the same client and
    /// scopes before and ticked "remember". Default true.
    pub remember_consent: Option<bool>,
    /// Password sign-in attempts per client address per 5 minutes before
    /// 429, counted before each check; a success gives its attempt back. Default 10.
    pub login_max_failures: Option<u32>,
    /// Attempts per account over all addresses per 5 minutes (addresses
    /// the account signed in from before are exempt). Default 50.
    pub login_max_failures_per_account: Option<u32>,
    /// Dynamic client registrations per client address per minute. Default 60.
    pub registrations_per_minute: Option<u32>,
    /// Clients that obtained no token for this long are deleted. Default 30.
    pub unused_client_ttl_days: Option<u64>,
    /// `/authorize` requests per client address per minute; each stores a
    /// pending request for 10 minutes. Default 60.
    pub authorize_requests_per_minute: Option<u32>,
    /// Dynamic registrations that never obtained a token, at most; beyond
    /// it `/register` answers 503 until one is used or swept. Default 10000.
    pub max_unused_clients: Option<u64>,
    /// Resource servers that may introspect any token. Every other
    /// confidential client learns only about tokens issued to itself.
    #[serde(default)]
    pub introspection_clients: Vec<RawIntrospectionClient>,
    #[serde(default)]
    pub cimd: RawCimd,
    /// `[[auth.local.clients]]`: clients registered here rather than by themselves.
    #[serde(default)]
    pub clients: Vec<super::configured_clients::RawConfiguredClient>,
    /// `[[auth.local.enterprise_idps]]`: enterprise IdPs whose identity
    /// assertions (ID-JAG) the jwt-bearer grant accepts.
    #[serde(default)]
    pub enterprise_idps: Vec<super::enterprise::RawEnterpriseIdp>,
}

/// `[[auth.local.introspection_clients]]`: a resource server's credentials
/// at `/introspect` (HTTP Basic or form fields).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospectionClient {
    pub client_id: String,
    pub client_secret: Option<String>,
    /// The secret in a file (trimmed), instead of `client_secret`.
    pub client_secret_file: Option<PathBuf>,
}

/// Client ID Metadata Documents (URL client ids).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCimd {
    /// Default true.
    pub enabled: Option<bool>,
    /// Development only: also fetch `http://` documents from loopback
    /// addresses. Private and link-local addresses stay refused. Default false.
    pub allow_loopback_http: Option<bool>,
    /// Default 5.
    pub fetch_timeout_secs: Option<u64>,
    /// Documents used instead of a live fetch (e.g. when a CDN challenge blocks it).
    #[serde(default)]
    pub pinned: Vec<RawPinnedDocument>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPinnedDocument {
    pub client_id: String,
    pub document_file: PathBuf,
}

/// `[auth.local]`, validated.
#[derive(Debug, Clone, Serialize)]
pub struct LocalAuthSettings {
    pub access_token_ttl_secs: u64,
    pub access_token_ttl_by_client: std::collections::BTreeMap<String, u64>,
    pub refresh_token_ttl_secs: u64,
    pub refresh_reuse_grace_secs: u64,
    pub code_ttl_secs: u64,
    pub code_replay_window_secs: u64,
    pub session_ttl_secs: u64,
    pub encryption_key: EncryptionKeySource,
    #[serde(serialize_with = "crate::problems::redacted_list")]
    pub previous_encryption_keys: Vec<secrecy::SecretString>,
    pub extra_scopes: Vec<String>,
    pub remember_consent: bool,
    pub login_max_failures: u32,
    pub login_max_failures_per_account: u32,
    pub registrations_per_minute: u32,
    pub unused_client_ttl_days: u64,
    pub authorize_requests_per_minute: u32,
    pub max_unused_clients: u64,
    pub introspection_clients: Vec<IntrospectionClient>,
    pub cimd: CimdSettings,
    pub clients: Vec<std::sync::Arc<super::configured_clients::ConfiguredClient>>,
    pub enterprise_idps: Vec<std::sync::Arc<super::enterprise::EnterpriseIdp>>,
}

/// A resource server allowed to introspect any token.
#[derive(Debug, Clone, Serialize)]
pub struct IntrospectionClient {
    pub client_id: String,
    #[serde(serialize_with = "crate::problems::redacted")]
    pub client_secret: secrecy::SecretString,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionKeySource {
    Inline(#[serde(serialize_with = "crate::problems::redacted")] secrecy::SecretString),
    File(PathBuf),
}

#[derive(Debug, Clone, Serialize)]
pub struct CimdSettings {
    pub enabled: bool,
    pub allow_loopback_http: bool,
    pub fetch_timeout_secs: u64,
    /// `(client_id, document text)`; read at start.
    pub pinned: Vec<(String, String)>,
}

/// `[auth.local]`; absent means every default.
pub fn validate(
    raw: Option<&RawLocalAuth>,
    data_dir: &Path,
    public_url: &Url,
    errors: &mut Vec<String>,
) -> LocalAuthSettings {
    let default = RawLocalAuth::default();
    let raw = raw.unwrap_or(&default);
    require_https(public_url, errors);
    let ttl = |name: &str, value, default, range, errors: &mut Vec<String>| {
        bounded(&format!("auth.local.{name}"), value, default, range, errors)
    };
    let access_token_ttl_secs = ttl(
        "access_token_ttl_secs",
        raw.access_token_ttl_secs,
        3600,
        (1, 86_400),
        errors,
    );
    for (name, secs) in &raw.access_token_ttl_by_client {
        if super::known_clients::by_name(name).is_none() {
            errors.push(format!(
                "auth.local.access_token_ttl_by_client.{name}: not a known client ({})",
                super::known_clients::KNOWN_CLIENTS
                    .iter()
                    .map(|k| k.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        ttl(
            &format!("access_token_ttl_by_client.{name}"),
            Some(*secs),
            3600,
            (1, 86_400),
            errors,
        );
    }
    let refresh_token_ttl_secs = ttl(
        "refresh_token_ttl_secs",
        raw.refresh_token_ttl_secs,
        30 * 86_400,
        (60, 400 * 86_400),
        errors,
    );
    let refresh_reuse_grace_secs = ttl(
        "refresh_reuse_grace_secs",
        raw.refresh_reuse_grace_secs,
        30,
        (0, 300),
        errors,
    );
    let code_ttl_secs = ttl("code_ttl_secs", raw.code_ttl_secs, 300, (10, 600), errors);
    let code_replay_window_secs = ttl(
        "code_replay_window_secs",
        raw.code_replay_window_secs,
        10,
        (0, 60),
        errors,
    );
    let session_ttl_secs = ttl(
        "session_ttl_secs",
        raw.session_ttl_secs,
        12 * 3600,
        (60, 30 * 86_400),
        errors,
    );
    let unused_client_ttl_days = ttl(
        "unused_client_ttl_days",
        raw.unused_client_ttl_days,
        30,
        (1, 3650),
        errors,
    );
    let max_unused_clients = ttl(
        "max_unused_clients",
        raw.max_unused_clients,
        10_000,
        (1, 10_000_000),
        errors,
    );
    let encryption_key = match (&raw.encryption_key, &raw.encryption_key_file) {
        (Some(_), Some(_)) => {
            errors.push(
                "auth.local: set at most one of encryption_key, encryption_key_file".to_owned(),
            );
            EncryptionKeySource::File(data_dir.join("mcpgate.key"))
        }
        (Some(key), None) => EncryptionKeySource::Inline(secrecy::SecretString::from(key.clone())),
        (None, Some(path)) => EncryptionKeySource::File(path.clone()),
        (None, None) => EncryptionKeySource::File(data_dir.join("mcpgate.key")),
    };
    let extra_scopes = raw.extra_scopes.clone().unwrap_or_default();
    if extra_scopes
        .iter()
        .any(|s| s.is_empty() || s.contains(' ') || s.contains('"'))
    {
        errors.push(
            "auth.local.extra_scopes: scopes are non-empty words without spaces or quotes"
                .to_owned(),
        );
    }
    let login_max_failures = raw.login_max_failures.unwrap_or(10);
    if login_max_failures == 0 {
        errors.push("auth.local.login_max_failures: must be at least 1".to_owned());
    }
    let login_max_failures_per_account = raw.login_max_failures_per_account.unwrap_or(50);
    if login_max_failures_per_account == 0 {
        errors.push("auth.local.login_max_failures_per_account: must be at least 1".to_owned());
    }
    let registrations_per_minute = raw.registrations_per_minute.unwrap_or(60);
    if registrations_per_minute == 0 {
        errors.push("auth.local.registrations_per_minute: must be at least 1".to_owned());
    }
    let authorize_requests_per_minute = raw.authorize_requests_per_minute.unwrap_or(60);
    if authorize_requests_per_minute == 0 {
        errors.push("auth.local.authorize_requests_per_minute: must be at least 1".to_owned());
    }
    let introspection_clients = validate_introspection_clients(&raw.introspection_clients, errors);
    let mut pinned = Vec::new();
    for (i, doc) in raw.cimd.pinned.iter().enumerate() {
        if !doc.client_id.starts_with("https://") {
            errors.push(format!(
                "auth.local.cimd.pinned[{i}].client_id: must be an https URL"
            ));
        }
        match std::fs::read_to_string(&doc.document_file) {
            Ok(text) => pinned.push((doc.client_id.clone(), text)),
            Err(e) => errors.push(format!(
                "auth.local.cimd.pinned[{i}].document_file: cannot read {}: {}",
                doc.document_file.display(),
                e.kind()
            )),
        }
    }
    let fetch_timeout_secs = raw.cimd.fetch_timeout_secs.unwrap_or(5);
    if !(1..=30).contains(&fetch_timeout_secs) {
        errors.push(format!(
            "auth.local.cimd.fetch_timeout_secs: {fetch_timeout_secs} must be between 1 and 30"
        ));
    }
    let clients = super::configured_clients::validate(&raw.clients, errors);
    let allow_loopback_http = raw.cimd.allow_loopback_http.unwrap_or(false);
    // Key sets are fetched through the same fence as documents: an http
    // (loopback) jwks_uri would pass here and fail at every token request.
    for (i, client) in clients.iter().enumerate() {
        if let Some(super::configured_clients::ClientKeys::Uri(uri)) = &client.keys
            && uri.starts_with("http://")
            && !allow_loopback_http
        {
            errors.push(format!(
                "auth.local.clients[{i}].jwks_uri: http is fetched only with auth.local.cimd.allow_loopback_http = true (development); use https"
            ));
        }
    }
    let enterprise_idps = super::enterprise::validate(&raw.enterprise_idps, &clients, errors);
    LocalAuthSettings {
        access_token_ttl_secs,
        access_token_ttl_by_client: raw.access_token_ttl_by_client.clone(),
        refresh_token_ttl_secs,
        refresh_reuse_grace_secs,
        code_ttl_secs,
        code_replay_window_secs,
        session_ttl_secs,
        encryption_key,
        previous_encryption_keys: raw
            .previous_encryption_keys
            .iter()
            .map(|k| secrecy::SecretString::from(k.clone()))
            .collect(),
        extra_scopes,
        remember_consent: raw.remember_consent.unwrap_or(true),
        login_max_failures,
        login_max_failures_per_account,
        registrations_per_minute,
        unused_client_ttl_days,
        authorize_requests_per_minute,
        max_unused_clients,
        introspection_clients,
        cimd: CimdSettings {
            enabled: raw.cimd.enabled.unwrap_or(true),
            allow_loopback_http,
            fetch_timeout_secs,
            pinned,
        },
        clients,
        enterprise_idps,
    }
}

/// Resource-server credentials: unique ids, secrets long enough that a
/// guess is hopeless (they unlock every token's status and subject).
fn validate_introspection_clients(
    raw: &[RawIntrospectionClient],
    errors: &mut Vec<String>,
) -> Vec<IntrospectionClient> {
    let mut out: Vec<IntrospectionClient> = Vec::new();
    for (i, c) in raw.iter().enumerate() {
        let at = format!("auth.local.introspection_clients[{i}]");
        if c.client_id.is_empty()
            || c.client_id.len() > 200
            || !crate::visible_text::is_visible_text(&c.client_id)
        {
            errors.push(format!("{at}.client_id: 1 to 200 printable characters"));
        }
        if out.iter().any(|o| o.client_id == c.client_id) {
            errors.push(format!("{at}.client_id: {:?} is listed twice", c.client_id));
        }
        let secret = match (&c.client_secret, &c.client_secret_file) {
            (Some(s), None) => s.clone(),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(text) => text.trim().to_owned(),
                Err(e) => {
                    errors.push(format!(
                        "{at}.client_secret_file: cannot read {}: {}",
                        path.display(),
                        e.kind()
                    ));
                    continue;
                }
            },
            _ => {
                errors.push(format!(
                    "{at}: set exactly one of client_secret, client_secret_file"
                ));
                continue;
            }
        };
        if secret.len() < 32 {
            errors.push(format!("{at}.client_secret: at least 32 characters"));
        }
        out.push(IntrospectionClient {
            client_id: c.client_id.clone(),
            client_secret: secrecy::SecretString::from(secret),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_means_every_default_and_the_key_file_in_the_data_dir() {
        let mut errors = Vec::new();
        let url = Url::parse("http://127.0.0.1:8000").unwrap();
        let local = validate(None, Path::new("/data"), &url, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(local.access_token_ttl_secs, 3600);
        assert_eq!(local.authorize_requests_per_minute, 60);
        assert!(local.remember_consent && local.cimd.enabled);
        assert!(
            matches!(&local.encryption_key, EncryptionKeySource::File(p) if p == Path::new("/data/mcpgate.key"))
        );
    }

    #[test]
    fn access_token_ttl_by_client_names_known_clients_within_bounds() {
        let url = Url::parse("http://127.0.0.1:8000").unwrap();
        let raw = |pairs: &[(&str, u64)]| RawLocalAuth {
            access_token_ttl_by_client: pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            ..RawLocalAuth::default()
        };
        let mut errors = Vec::new();
        let local = validate(
            Some(&raw(&[("chatgpt", 28_800)])),
            Path::new("/d"),
            &url,
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(local.access_token_ttl_by_client["chatgpt"], 28_800);
        validate(
            Some(&raw(&[("chatgtp", 600), ("claude", 0)])),
            Path::new("/d"),
            &url,
            &mut errors,
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("access_token_ttl_by_client.chatgtp: not a known client"));
        assert!(errors[1].contains("access_token_ttl_by_client.claude: 0 must be between"));
    }

    #[test]
    fn a_configured_clients_http_jwks_uri_needs_allow_loopback_http() {
        let url = Url::parse("http://127.0.0.1:8000").unwrap();
        let mut raw = RawLocalAuth {
            clients: vec![super::super::configured_clients::RawConfiguredClient {
                client_id: "signer".to_owned(),
                jwks_uri: Some("http://127.0.0.1:9/jwks.json".to_owned()),
                ..Default::default()
            }],
            ..RawLocalAuth::default()
        };
        let mut errors = Vec::new();
        validate(Some(&raw), Path::new("/data"), &url, &mut errors);
        assert!(
            errors
                .join("\n")
                .contains("clients[0].jwks_uri: http is fetched only with"),
            "{errors:?}"
        );
        raw.cimd.allow_loopback_http = Some(true);
        let mut errors = Vec::new();
        validate(Some(&raw), Path::new("/data"), &url, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn bad_values_and_plain_http_off_loopback_are_each_reported() {
        let mut errors = Vec::new();
        let url = Url::parse("http://mcp.example.com").unwrap();
        let raw = RawLocalAuth {
            access_token_ttl_secs: Some(0),
            login_max_failures: Some(0),
            introspection_clients: vec![RawIntrospectionClient {
                client_id: "rs".to_owned(),
                client_secret: Some("short".to_owned()),
                client_secret_file: None,
            }],
            ..RawLocalAuth::default()
        };
        validate(Some(&raw), Path::new("/data"), &url, &mut errors);
        let text = errors.join("\n");
        for needle in [
            "must be https",
            "auth.local.access_token_ttl_secs: 0 must be between 1 and 86400",
            "auth.local.login_max_failures: must be at least 1",
            "introspection_clients[0].client_secret: at least 32",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }
}
