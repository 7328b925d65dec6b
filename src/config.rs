//! Configuration: one TOML file plus `MCPGATE_` environment overrides.
//!
//! Loading happens in two stages: figment merges defaults, the file and the
//! environment into a [`RawConfig`] (plain serde, every field optional), and
//! [`RawConfig::validate`] turns that into a typed [`Config`], collecting every
//! problem instead of stopping at the first one.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::problems::{bounded, check_issuer_url, is_loopback_host, read_secret, require_https};

pub use crate::bridge::settings::{BridgeConfig, BridgeRegistrar, RawBridge};

/// Top-level keys an environment variable may override. Anything else with the
/// `MCPGATE_` prefix (`MCPGATE_CONFIG`, test variables) is not configuration.
const ENV_KEYS: &[&str] = &[
    "public_url",
    "listen",
    "data_dir",
    "store",
    "auth",
    "http",
    "server",
    "log",
    "toolsets",
    "gateway",
];

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Canonical external origin, e.g. `https://mcp.example.com`. The MCP
    /// resource is `public_url + "/mcp"`. Default: `http://<listen>`.
    pub public_url: Option<String>,
    /// Socket address to bind. Default `127.0.0.1:8000`.
    pub listen: Option<String>,
    /// Directory for the embedded store and generated files. Default `./data`.
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub http: RawHttp,
    /// Connection limits and timeouts, trusted proxies, operations access.
    #[serde(default)]
    pub server: crate::server::settings::RawServer,
    #[serde(default)]
    pub log: RawLog,
    /// Absent: every built-in toolset on. Present: only the listed ones.
    pub toolsets: Option<RawToolsets>,
    /// How upstream names are combined with theirs.
    pub gateway: Option<crate::upstream::settings::RawGateway>,
    /// MCP servers mcpgate fronts (the gateway).
    #[serde(default)]
    pub upstreams: Vec<crate::upstream::settings::RawUpstream>,
    /// Access rules per tool, resource or prompt pattern; the first rule that
    /// applies to the caller decides, then the built-in defaults.
    #[serde(default)]
    pub policy: Vec<RawPolicy>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `sqlite://PATH` or `postgres://...`. Default `sqlite://<data_dir>/mcpgate.db`.
    pub url: Option<String>,
    /// Connection pool size. Default 8.
    pub max_connections: Option<u32>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `local` (default: mcpgate is the authorization server, users in its
    /// store), `proxy` (the same, users sign in at `[auth.upstream]`),
    /// `resource` (validate tokens of an external authorization server),
    /// `bridge` (the same, plus discovery and registration for IdPs without
    /// open DCR), `auto` (`resource` or `proxy` from the upstream's
    /// discovery) or `none` (loopback development only).
    pub mode: Option<String>,
    pub resource: Option<RawResourceAuth>,
    pub local: Option<RawLocalAuth>,
    pub upstream: Option<RawUpstreamIdp>,
    pub bridge: Option<RawBridge>,
}

/// `[auth.upstream]`: the identity provider users sign in with in `proxy` mode.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamIdp {
    /// oidc (default), auth0, keycloak, okta, entra, google, github, cognito.
    pub preset: Option<String>,
    /// The provider's issuer, exactly as in its discovery document. Fixed by
    /// the `google` and `entra` presets; not used by `github`.
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// Scopes requested upstream. Default: the preset's.
    pub scopes: Option<Vec<String>>,
    /// Auth0: the API identifier sent as `audience`.
    pub audience: Option<String>,
    /// Entra: tenant id, domain, or `common` / `organizations` / `consumers`.
    pub tenant: Option<String>,
    /// Extra authorization-request parameters (e.g. `prompt`, `hd`, `connection`).
    #[serde(default)]
    pub authorize_params: std::collections::BTreeMap<String, String>,
    /// Overrides for providers without discovery (GitHub Enterprise) or a
    /// discovery document that lies. Default: discovery or the preset.
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    /// GitHub API base. Default `https://api.github.com`.
    pub api_base: Option<String>,
    /// Who may sign in. Empty lists admit everyone the provider signs in;
    /// otherwise a user must match one entry of one list. Emails only count
    /// when the provider does not mark them unverified.
    #[serde(default)]
    pub allowed_emails: Vec<String>,
    #[serde(default)]
    pub allowed_email_domains: Vec<String>,
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Provider user names (GitHub login, `preferred_username`).
    #[serde(default)]
    pub allowed_usernames: Vec<String>,
}

/// `[auth.local]`: the embedded authorization server.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocalAuth {
    /// Access-token lifetime; also the bound on how long a revoked grant's
    /// access tokens keep working. Default 3600.
    pub access_token_ttl_secs: Option<u64>,
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

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawResourceAuth {
    /// The authorization server's issuer identifier, exactly as in its tokens.
    pub issuer: Option<String>,
    /// Accepted `aud` values. Default: the MCP resource (`public_url + "/mcp"`).
    pub audiences: Option<Vec<String>>,
    /// Default: from the issuer's discovery document.
    pub jwks_uri: Option<String>,
    /// Accepted JWS algorithms. Default: every asymmetric one supported.
    pub algorithms: Option<Vec<String>>,
    /// Advertised in protected-resource metadata and challenges. Default: the policy's scopes.
    pub scopes_supported: Option<Vec<String>>,
    /// Least time between two key-set fetches caused by unknown `kid`s. Default 30.
    pub jwks_refetch_interval_secs: Option<u64>,
    pub introspection: Option<RawIntrospection>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    /// Default: `introspection_endpoint` from discovery.
    pub endpoint: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// The answer's claim naming the caller. Default `sub`; no fallback.
    pub subject_claim: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Tool-name patterns (`*` wildcard).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Resource-URI patterns.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Prompt-name patterns.
    #[serde(default)]
    pub prompts: Vec<String>,
    /// Scopes a caller needs (allow rules).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `allow` (default) or `deny`.
    pub effect: Option<String>,
    /// The rule applies only to these subjects / members of these groups /
    /// callers whose token has these claim values; empty means anyone.
    #[serde(default)]
    pub subjects: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Extra `Host` values accepted besides those derived from `public_url` and `listen`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call `/mcp` (an `Origin` header not listed here gets 403).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Largest accepted request body in bytes. Default 1 MiB.
    pub max_body_bytes: Option<usize>,
    /// Seconds in-flight requests get to finish on shutdown. Default 10.
    pub shutdown_grace_secs: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `pretty` (default) or `json`.
    pub format: Option<String>,
    /// An `EnvFilter` directive, e.g. `info,mcpgate=debug`. Default `info`.
    pub level: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawToolsets {
    pub docs: Option<RawDocs>,
    pub notes: Option<RawEnabled>,
    pub calc: Option<RawEnabled>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDocs {
    pub enabled: Option<bool>,
    /// Folder of Markdown/text files. Default: the sample corpus built into the binary.
    pub path: Option<PathBuf>,
    /// Base URL for result links. Default `<public_url>/docs/`.
    pub url_base: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnabled {
    pub enabled: Option<bool>,
}

/// How callers are identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication: every caller is the anonymous principal. Loopback only.
    None,
    /// Bearer tokens from an external authorization server.
    Resource,
    /// mcpgate is the authorization server; users in its store.
    Local,
    /// mcpgate is the authorization server; users sign in at an upstream IdP.
    Proxy,
    /// The IdP is the authorization server; mcpgate serves its discovery
    /// and client registration, and validates its tokens.
    Bridge,
    /// Decided at start from the upstream IdP's discovery: `resource` or `proxy`.
    Auto,
}

/// `[auth.upstream]`, validated.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamIdpConfig {
    #[serde(serialize_with = "serialize_preset")]
    pub preset: &'static crate::idp::presets::Preset,
    /// Where discovery is read (`None` for providers without OIDC).
    pub issuer: Option<String>,
    pub client_id: String,
    #[serde(serialize_with = "serialize_secret")]
    pub client_secret: secrecy::SecretString,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    pub tenant: Option<String>,
    pub authorize_params: Vec<(String, String)>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub api_base: Option<String>,
    pub allow: SignInAllowList,
}

/// `[auth.upstream] allowed_*`, lower-cased where case does not matter.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SignInAllowList {
    pub emails: Vec<String>,
    pub email_domains: Vec<String>,
    pub groups: Vec<String>,
    pub usernames: Vec<String>,
}

impl SignInAllowList {
    pub fn is_open(&self) -> bool {
        self.emails.is_empty()
            && self.email_domains.is_empty()
            && self.groups.is_empty()
            && self.usernames.is_empty()
    }
}

fn serialize_preset<S: serde::Serializer>(
    preset: &&'static crate::idp::presets::Preset,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(preset.name)
}

/// `[auth.local]`, validated.
#[derive(Debug, Clone, Serialize)]
pub struct LocalAuthConfig {
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    pub refresh_reuse_grace_secs: u64,
    pub code_ttl_secs: u64,
    pub code_replay_window_secs: u64,
    pub session_ttl_secs: u64,
    pub encryption_key: EncryptionKeySource,
    #[serde(serialize_with = "serialize_secrets")]
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
    pub cimd: CimdConfig,
}

/// A resource server allowed to introspect any token.
#[derive(Debug, Clone, Serialize)]
pub struct IntrospectionClient {
    pub client_id: String,
    #[serde(serialize_with = "serialize_secret")]
    pub client_secret: secrecy::SecretString,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionKeySource {
    Inline(#[serde(serialize_with = "serialize_secret")] secrecy::SecretString),
    File(PathBuf),
}

#[derive(Debug, Clone, Serialize)]
pub struct CimdConfig {
    pub enabled: bool,
    pub allow_loopback_http: bool,
    pub fetch_timeout_secs: u64,
    /// `(client_id, document text)`; read at start.
    pub pinned: Vec<(String, String)>,
}

/// `[auth.resource]`, validated.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceAuthConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks_uri: Option<String>,
    pub algorithms: Vec<String>,
    pub scopes_supported: Option<Vec<String>>,
    pub jwks_refetch_interval_secs: u64,
    pub introspection: Option<IntrospectionConfig>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IntrospectionConfig {
    pub endpoint: Option<String>,
    pub client_id: String,
    #[serde(serialize_with = "serialize_secret")]
    pub client_secret: secrecy::SecretString,
    pub subject_claim: String,
}

fn serialize_secrets<S: serde::Serializer>(
    secrets: &[secrecy::SecretString],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(secrets.len()))?;
    for _ in secrets {
        seq.serialize_element("***")?;
    }
    seq.end()
}

fn serialize_secret<S: serde::Serializer>(
    _: &secrecy::SecretString,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str("***")
}

pub const SUPPORTED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The validated configuration the rest of the program uses.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub public_url: Url,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub auth_mode: AuthMode,
    pub resource_auth: Option<ResourceAuthConfig>,
    /// The embedded authorization server's settings (`local` and `proxy`).
    pub local_auth: Option<LocalAuthConfig>,
    pub upstream_idp: Option<UpstreamIdpConfig>,
    pub bridge: Option<BridgeConfig>,
    pub policy: Vec<crate::auth::policy::ScopeRule>,
    pub gateway: crate::upstream::settings::GatewayConfig,
    pub http: HttpConfig,
    pub server: crate::server::ServerConfig,
    pub log: LogConfig,
    pub toolsets: ToolsetsConfig,
}

#[derive(Clone, Serialize)]
pub struct StoreConfig {
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    pub max_connections: u32,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpConfig {
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ToolsetsConfig {
    pub docs: Option<DocsConfig>,
    pub notes: bool,
    pub calc: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DocsConfig {
    /// `None`: the built-in sample corpus.
    pub path: Option<PathBuf>,
    pub url_base: String,
}

impl Config {
    /// The MCP resource identifier: `public_url + "/mcp"`, no trailing slash.
    pub fn mcp_resource(&self) -> String {
        format!("{}/mcp", self.public_origin())
    }

    /// `public_url` as written by the operator, without a trailing slash.
    pub fn public_origin(&self) -> String {
        self.public_url.as_str().trim_end_matches('/').to_owned()
    }

    /// The effective configuration as TOML, with secrets redacted.
    pub fn to_redacted_toml(&self) -> Result<String, ConfigErrors> {
        toml::to_string_pretty(self).map_err(|e| ConfigErrors(vec![format!("render: {e}")]))
    }
}

/// Every problem found while loading, one line each.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Load from an optional TOML file and the process environment.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
    load_from(path, Env::prefixed("MCPGATE_"))
}

/// Load with an explicit environment provider (tests pass a fixed one).
pub fn load_from(path: Option<&Path>, env: Env) -> Result<Config, ConfigErrors> {
    let mut figment = Figment::new();
    if let Some(path) = path {
        if !path.is_file() {
            return Err(ConfigErrors(vec![format!(
                "config file {} does not exist or is not a file",
                path.display()
            )]));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let env = env
        .filter(|key| {
            let top = key.as_str().split("__").next().unwrap_or_default();
            ENV_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
        })
        .split("__");
    figment = figment.merge(env);
    let raw: RawConfig = figment.extract().map_err(|err| {
        ConfigErrors(
            err.into_iter()
                .map(|e| {
                    let key = e.path.join(".");
                    let source = e
                        .metadata
                        .as_ref()
                        .and_then(|m| m.source.as_ref().map(|s| format!(" (from {s})")))
                        .unwrap_or_default();
                    if key.is_empty() {
                        format!("{}{source}", e.kind)
                    } else {
                        format!("{key}: {}{source}", e.kind)
                    }
                })
                .collect(),
        )
    })?;
    raw.validate()
}

impl RawConfig {
    pub fn validate(self) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();

        let listen = match self.listen.as_deref().unwrap_or("127.0.0.1:8000").parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                errors.push(format!(
                    "listen: {:?} is not a socket address like 127.0.0.1:8000",
                    self.listen.as_deref().unwrap_or_default()
                ));
                None
            }
        };
        let listen: SocketAddr = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8000)));

        let public_url = match &self.public_url {
            None => Url::parse(&format!("http://{listen}")).ok(),
            Some(text) => match Url::parse(text) {
                Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                    errors.push(format!("public_url: {text:?} must be an http or https URL"));
                    None
                }
                Ok(url)
                    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() =>
                {
                    errors.push(format!(
                        "public_url: {text:?} must be an origin only (no path, query or fragment); the MCP endpoint is <public_url>/mcp"
                    ));
                    None
                }
                Ok(url) if url.host_str().is_none() => {
                    errors.push(format!("public_url: {text:?} has no host"));
                    None
                }
                Ok(url) => Some(url),
                Err(e) => {
                    errors.push(format!("public_url: {text:?} is not a URL ({e})"));
                    None
                }
            },
        };
        let public_url = public_url.unwrap_or_else(|| {
            #[allow(clippy::unwrap_used)] // a literal that always parses
            Url::parse("http://127.0.0.1:8000").unwrap()
        });

        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./data"));

        let store_url = self
            .store
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("mcpgate.db").display()));
        if !(store_url.starts_with("sqlite:")
            || store_url.starts_with("postgres://")
            || store_url.starts_with("postgresql://"))
        {
            errors.push(format!(
                "store.url: {:?} must start with sqlite:// or postgres://",
                redact_url(&store_url)
            ));
        }
        let max_connections = self.store.max_connections.unwrap_or(8);
        if max_connections == 0 || max_connections > 1000 {
            errors.push(format!(
                "store.max_connections: {max_connections} must be between 1 and 1000"
            ));
        }

        let auth_mode = match self.auth.mode.as_deref().unwrap_or("local") {
            "none" => {
                if !listen.ip().is_loopback() {
                    errors.push(format!(
                        "auth.mode: \"none\" serves every caller without authentication, so it is only allowed when listen is a loopback address (127.0.0.1, ::1); listen is {listen}"
                    ));
                }
                Some(AuthMode::None)
            }
            "resource" => Some(AuthMode::Resource),
            "local" => Some(AuthMode::Local),
            "proxy" => Some(AuthMode::Proxy),
            "bridge" => Some(AuthMode::Bridge),
            "auto" => Some(AuthMode::Auto),
            other => {
                errors.push(format!(
                    "auth.mode: {other:?} is not one of none, local, resource, proxy, bridge, auto"
                ));
                None
            }
        };

        let max_body_bytes = self.http.max_body_bytes.unwrap_or(1024 * 1024);
        if !(1024..=64 * 1024 * 1024).contains(&max_body_bytes) {
            errors.push(format!(
                "http.max_body_bytes: {max_body_bytes} must be between 1024 and 67108864"
            ));
        }
        for origin in &self.http.allowed_origins {
            match Url::parse(origin) {
                Ok(url) if url.host_str().is_some() && url.path() == "/" => {}
                _ => errors.push(format!(
                    "http.allowed_origins: {origin:?} must be an origin like https://app.example.com"
                )),
            }
        }
        let mut allowed_origins = derived_origins(&public_url, listen);
        for origin in &self.http.allowed_origins {
            let origin = origin.trim_end_matches('/').to_owned();
            if !allowed_origins.contains(&origin) {
                allowed_origins.push(origin);
            }
        }
        let mut allowed_hosts = derived_hosts(&public_url, listen);
        for host in &self.http.allowed_hosts {
            if host.is_empty() || host.contains('/') || host.contains(' ') {
                errors.push(format!(
                    "http.allowed_hosts: {host:?} must be a host or host:port"
                ));
            } else if !allowed_hosts.contains(host) {
                allowed_hosts.push(host.clone());
            }
        }

        let server = crate::server::settings::validate(&self.server, &mut errors);

        let log_format = match self.log.format.as_deref().unwrap_or("pretty") {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                errors.push(format!(
                    "log.format: {other:?} must be \"pretty\" or \"json\""
                ));
                LogFormat::Pretty
            }
        };
        let log_level = self.log.level.clone().unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            errors.push(format!(
                "log.level: {log_level:?} is not a valid filter directive"
            ));
        }

        let toolsets = match &self.toolsets {
            // A gateway serves its upstreams' tools, not a calculator.
            None if !self.upstreams.is_empty() => ToolsetsConfig {
                docs: None,
                notes: false,
                calc: false,
            },
            None => ToolsetsConfig {
                docs: Some(DocsConfig {
                    path: None,
                    url_base: format!("{}/docs/", public_url.as_str().trim_end_matches('/')),
                }),
                notes: true,
                calc: true,
            },
            Some(t) => {
                let docs = match &t.docs {
                    Some(d) if d.enabled.unwrap_or(true) => {
                        if let Some(path) = &d.path
                            && !path.is_dir()
                        {
                            errors.push(format!(
                                "toolsets.docs.path: {} is not a directory",
                                path.display()
                            ));
                        }
                        let url_base = d.url_base.clone().unwrap_or_else(|| {
                            format!("{}/docs/", public_url.as_str().trim_end_matches('/'))
                        });
                        Some(DocsConfig {
                            path: d.path.clone(),
                            url_base,
                        })
                    }
                    _ => None,
                };
                ToolsetsConfig {
                    docs,
                    notes: t.notes.as_ref().is_some_and(|n| n.enabled.unwrap_or(true)),
                    calc: t.calc.as_ref().is_some_and(|n| n.enabled.unwrap_or(true)),
                }
            }
        };
        let own_resource = format!("{}/mcp", public_url.as_str().trim_end_matches('/'));
        let gateway = crate::upstream::settings::validate(
            self.gateway.as_ref(),
            &self.upstreams,
            &crate::upstream::settings::Surroundings {
                can_mint_jwt: matches!(auth_mode, Some(AuthMode::Local | AuthMode::Proxy)),
                own_resource: &own_resource,
                data_dir: &data_dir,
            },
            &mut errors,
        );
        let policy = validate_policy(&self.policy, &mut errors);
        let resource_auth = match auth_mode {
            Some(AuthMode::Resource | AuthMode::Bridge) => {
                validate_resource_auth(self.auth.resource.as_ref(), &public_url, &mut errors)
            }
            // Auto: what `resource` mode would use, if discovery picks it;
            // by default the upstream issuer with the MCP resource as audience.
            Some(AuthMode::Auto) => {
                let derived = self.auth.upstream.as_ref().and_then(|u| {
                    u.issuer.clone().map(|issuer| RawResourceAuth {
                        issuer: Some(issuer),
                        ..RawResourceAuth::default()
                    })
                });
                match self.auth.resource.as_ref().or(derived.as_ref()) {
                    Some(raw) => validate_resource_auth(Some(raw), &public_url, &mut errors),
                    None => None,
                }
            }
            _ => {
                if self.auth.resource.is_some() {
                    errors.push(
                        "auth.resource: only used with auth.mode = \"resource\", \"bridge\" or \"auto\""
                            .to_owned(),
                    );
                }
                None
            }
        };
        let bridge = match auth_mode {
            Some(AuthMode::Bridge) => {
                require_https(&public_url, &mut errors);
                crate::bridge::settings::validate(
                    self.auth.bridge.as_ref(),
                    resource_auth.as_ref(),
                    &mut errors,
                )
            }
            _ => {
                if self.auth.bridge.is_some() {
                    errors.push("auth.bridge: only used with auth.mode = \"bridge\"".to_owned());
                }
                None
            }
        };

        let local_auth = match auth_mode {
            Some(AuthMode::Local | AuthMode::Proxy | AuthMode::Auto) => Some(validate_local_auth(
                self.auth.local.as_ref(),
                &data_dir,
                &public_url,
                &mut errors,
            )),
            _ => {
                if self.auth.local.is_some() {
                    errors.push(
                        "auth.local: only used with auth.mode = \"local\", \"proxy\" or \"auto\""
                            .to_owned(),
                    );
                }
                None
            }
        };
        let upstream_idp = match auth_mode {
            Some(AuthMode::Proxy | AuthMode::Auto) => {
                validate_upstream_idp(self.auth.upstream.as_ref(), &mut errors)
            }
            _ => {
                if self.auth.upstream.is_some() {
                    errors.push(
                        "auth.upstream: only used with auth.mode = \"proxy\" or \"auto\""
                            .to_owned(),
                    );
                }
                None
            }
        };

        match (errors.is_empty(), auth_mode) {
            (true, Some(auth_mode)) => Ok(Config {
                public_url,
                listen,
                data_dir,
                store: StoreConfig {
                    url: store_url,
                    max_connections,
                },
                auth_mode,
                resource_auth,
                local_auth,
                upstream_idp,
                bridge,
                policy,
                gateway,
                http: HttpConfig {
                    allowed_hosts,
                    allowed_origins,
                    max_body_bytes,
                    shutdown_grace_secs: self.http.shutdown_grace_secs.unwrap_or(10),
                },
                server,
                log: LogConfig {
                    format: log_format,
                    level: log_level,
                },
                toolsets,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

fn validate_policy(
    raw: &[RawPolicy],
    errors: &mut Vec<String>,
) -> Vec<crate::auth::policy::ScopeRule> {
    use crate::auth::policy::{Effect, ScopeRule};
    let mut rules = Vec::new();
    for (i, rule) in raw.iter().enumerate() {
        let patterns = [&rule.tools, &rule.resources, &rule.prompts];
        if patterns.iter().all(|p| p.is_empty())
            || patterns.iter().any(|p| p.iter().any(String::is_empty))
        {
            errors.push(format!(
                "policy[{i}]: name at least one non-empty pattern in tools, resources or prompts"
            ));
        }
        if rule
            .scopes
            .iter()
            .any(|s| s.is_empty() || s.contains(' ') || s.contains('"'))
        {
            errors.push(format!(
                "policy[{i}].scopes: scopes are non-empty words without spaces or quotes"
            ));
        }
        let effect = match rule.effect.as_deref() {
            None | Some("allow") => Effect::Allow,
            Some("deny") => {
                if !rule.scopes.is_empty() {
                    errors.push(format!(
                        "policy[{i}]: a deny rule refuses whatever the scopes; drop scopes"
                    ));
                }
                Effect::Deny
            }
            Some(other) => {
                errors.push(format!(
                    "policy[{i}].effect: {other:?} must be \"allow\" or \"deny\""
                ));
                Effect::Allow
            }
        };
        rules.push(ScopeRule {
            tools: rule.tools.clone(),
            resources: rule.resources.clone(),
            prompts: rule.prompts.clone(),
            scopes: rule.scopes.iter().cloned().collect(),
            effect,
            subjects: rule.subjects.clone(),
            groups: rule.groups.clone(),
            claims: rule.claims.clone(),
        });
    }
    rules
}

fn validate_resource_auth(
    raw: Option<&RawResourceAuth>,
    public_url: &Url,
    errors: &mut Vec<String>,
) -> Option<ResourceAuthConfig> {
    let Some(raw) = raw else {
        errors.push("auth.resource: required with auth.mode = \"resource\" or \"bridge\" (at least issuer = \"https://...\")".to_owned());
        return None;
    };
    let issuer = raw.issuer.clone().unwrap_or_default();
    match Url::parse(&issuer) {
        Ok(url)
            if matches!(url.scheme(), "https" | "http")
                && url.fragment().is_none()
                && url.query().is_none() =>
        {
            if url.scheme() == "http" && !url.host_str().is_some_and(is_loopback_host) {
                errors.push(format!(
                    "auth.resource.issuer: {issuer:?} must be https (http only for loopback)"
                ));
            }
        }
        _ => errors.push(format!(
            "auth.resource.issuer: {issuer:?} must be an https URL"
        )),
    }
    let resource = format!("{}/mcp", public_url.as_str().trim_end_matches('/'));
    let audiences = raw.audiences.clone().unwrap_or_else(|| vec![resource]);
    if audiences.is_empty() || audiences.iter().any(|a| a.is_empty() || a == "*") {
        errors.push(
            "auth.resource.audiences: list the exact audiences to accept (no empty or \"*\")"
                .to_owned(),
        );
    }
    let algorithms = raw.algorithms.clone().unwrap_or_else(|| {
        SUPPORTED_ALGORITHMS
            .iter()
            .map(|a| (*a).to_owned())
            .collect()
    });
    for alg in &algorithms {
        if !SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
            errors.push(format!(
                "auth.resource.algorithms: {alg:?} is not one of {}",
                SUPPORTED_ALGORITHMS.join(", ")
            ));
        }
    }
    if let Some(uri) = &raw.jwks_uri
        && Url::parse(uri).is_err()
    {
        errors.push(format!("auth.resource.jwks_uri: {uri:?} is not a URL"));
    }
    let introspection = raw.introspection.as_ref().and_then(|i| {
        let client_id = i.client_id.clone().unwrap_or_default();
        if client_id.is_empty() {
            errors.push("auth.resource.introspection.client_id: required".to_owned());
        }
        let secret = read_secret(
            "auth.resource.introspection",
            "client_secret",
            i.client_secret.as_deref(),
            i.client_secret_file.as_deref(),
            errors,
        );
        let subject_claim = i.subject_claim.clone().unwrap_or_else(|| "sub".to_owned());
        if subject_claim.trim().is_empty() {
            errors.push("auth.resource.introspection.subject_claim: a claim name".to_owned());
        }
        Some(IntrospectionConfig {
            endpoint: i.endpoint.clone(),
            subject_claim,
            client_id,
            client_secret: secrecy::SecretString::from(secret?),
        })
    });
    Some(ResourceAuthConfig {
        issuer,
        audiences,
        jwks_uri: raw.jwks_uri.clone(),
        algorithms,
        scopes_supported: raw.scopes_supported.clone(),
        jwks_refetch_interval_secs: raw.jwks_refetch_interval_secs.unwrap_or(30).max(1),
        introspection,
    })
}

fn validate_upstream_idp(
    raw: Option<&RawUpstreamIdp>,
    errors: &mut Vec<String>,
) -> Option<UpstreamIdpConfig> {
    use crate::idp::presets;
    let Some(raw) = raw else {
        errors.push("auth.upstream: required with auth.mode = \"proxy\" or \"auto\" (preset, issuer, client_id, client_secret)".to_owned());
        return None;
    };
    let preset_name = raw.preset.as_deref().unwrap_or("oidc");
    let Some(preset) = presets::find(preset_name) else {
        errors.push(format!(
            "auth.upstream.preset: {preset_name:?} is not one of {}",
            presets::names().join(", ")
        ));
        return None;
    };
    let tenant = raw.tenant.clone().filter(|t| !t.is_empty());
    if preset.needs_tenant && tenant.is_none() {
        errors.push(format!(
            "auth.upstream.tenant: required with preset {preset_name:?} (a tenant id, or common / organizations)"
        ));
    }
    if !preset.needs_tenant && tenant.is_some() {
        errors.push(format!(
            "auth.upstream.tenant: not used by preset {preset_name:?}"
        ));
    }
    if raw.audience.is_some() && !preset.audience_param {
        errors.push(format!(
            "auth.upstream.audience: not used by preset {preset_name:?} (only auth0 sends one)"
        ));
    }
    let issuer = match (preset.issuer_template, &raw.issuer, preset.fixed_endpoints) {
        (_, Some(_), Some(_)) => {
            errors.push(format!(
                "auth.upstream.issuer: preset {preset_name:?} has no OpenID issuer; set authorization_endpoint, token_endpoint and api_base to change its endpoints"
            ));
            None
        }
        (_, None, Some(_)) => None,
        // A preset with a fixed issuer may still be pointed elsewhere (a
        // sovereign cloud, a test IdP).
        (_, Some(issuer), None) => {
            check_issuer_url("auth.upstream.issuer", issuer, errors);
            Some(issuer.clone())
        }
        (Some(template), None, None) => {
            Some(template.replace("{tenant}", tenant.as_deref().unwrap_or("common")))
        }
        (None, None, None) => {
            errors.push(format!(
                "auth.upstream.issuer: required with preset {preset_name:?}"
            ));
            None
        }
    };
    let client_id = raw.client_id.clone().unwrap_or_default();
    if client_id.is_empty() {
        errors.push("auth.upstream.client_id: required".to_owned());
    }
    let secret = read_secret(
        "auth.upstream",
        "client_secret",
        raw.client_secret.as_deref(),
        raw.client_secret_file.as_deref(),
        errors,
    );
    let scopes = raw.scopes.clone().unwrap_or_else(|| {
        preset
            .default_scopes
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    });
    if preset.identity == presets::IdentitySource::IdToken && !scopes.iter().any(|s| s == "openid")
    {
        errors.push(format!(
            "auth.upstream.scopes: must include \"openid\" with preset {preset_name:?}"
        ));
    }
    for (name, value) in [
        ("authorization_endpoint", &raw.authorization_endpoint),
        ("token_endpoint", &raw.token_endpoint),
        ("api_base", &raw.api_base),
    ] {
        if let Some(v) = value
            && Url::parse(v).is_err()
        {
            errors.push(format!("auth.upstream.{name}: {v:?} is not a URL"));
        }
    }
    let reserved = [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "scope",
    ];
    for key in raw.authorize_params.keys() {
        if reserved.contains(&key.as_str()) {
            errors.push(format!(
                "auth.upstream.authorize_params: {key:?} is set by mcpgate"
            ));
        }
    }
    let mut authorize_params: Vec<(String, String)> = preset
        .authorize_params
        .iter()
        .filter(|(k, _)| !raw.authorize_params.contains_key(*k))
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    authorize_params.extend(raw.authorize_params.clone());
    Some(UpstreamIdpConfig {
        preset,
        issuer,
        client_id,
        client_secret: secrecy::SecretString::from(secret?),
        scopes,
        audience: raw.audience.clone(),
        tenant,
        authorize_params,
        authorization_endpoint: raw.authorization_endpoint.clone(),
        token_endpoint: raw.token_endpoint.clone(),
        api_base: raw.api_base.clone(),
        allow: SignInAllowList {
            emails: raw
                .allowed_emails
                .iter()
                .map(|e| e.to_lowercase())
                .collect(),
            email_domains: raw
                .allowed_email_domains
                .iter()
                .map(|d| d.trim_start_matches('@').to_lowercase())
                .collect(),
            groups: raw.allowed_groups.clone(),
            usernames: raw.allowed_usernames.clone(),
        },
    })
}

fn validate_local_auth(
    raw: Option<&RawLocalAuth>,
    data_dir: &Path,
    public_url: &Url,
    errors: &mut Vec<String>,
) -> LocalAuthConfig {
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
    LocalAuthConfig {
        access_token_ttl_secs,
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
        cimd: CimdConfig {
            enabled: raw.cimd.enabled.unwrap_or(true),
            allow_loopback_http: raw.cimd.allow_loopback_http.unwrap_or(false),
            fetch_timeout_secs,
            pinned,
        },
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

/// Hosts a request may name: the public origin's, and the listen address's
/// (plus `localhost` when listening on loopback) so local clients keep working.
fn derived_hosts(public_url: &Url, listen: SocketAddr) -> Vec<String> {
    let mut hosts = Vec::new();
    if let Some(host) = public_url.host_str() {
        hosts.push(host.trim_matches(['[', ']']).to_owned());
    }
    let ip = listen.ip();
    if ip.is_unspecified() {
        // Bound to every interface: the public host is the only name we know.
    } else {
        hosts.push(ip.to_string());
        if ip.is_loopback() {
            hosts.push("localhost".to_owned());
        }
    }
    let mut unique = Vec::new();
    for h in hosts {
        if !unique.contains(&h) {
            unique.push(h);
        }
    }
    unique
}

/// Origins a browser page may call from: the public origin, and on a
/// loopback listener the loopback spellings of the same port.
fn derived_origins(public_url: &Url, listen: SocketAddr) -> Vec<String> {
    let mut origins = vec![public_url.origin().ascii_serialization()];
    if listen.ip().is_loopback() {
        let port = listen.port();
        for host in ["127.0.0.1", "localhost", "[::1]"] {
            let origin = format!("http://{host}:{port}");
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
    }
    origins
}

fn serialize_redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

/// Replace a password in a connection URL with `***`.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_none() -> Env {
        Env::prefixed("MCPGATE_TEST_NOTHING_")
    }

    fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        load_from(Some(&path), env_none())
    }

    #[test]
    fn gateway_and_policy_sections_are_validated() {
        let err = from_toml(
            "[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nurl = \"http://h/mcp\"\n\
             [[upstreams]]\nname = \"b\"\nurl = \"http://h/mcp\"\nidentity = \"jwt\"\n\
             [gateway]\nprefix = \"sometimes\"\n\
             [[policy]]\nscopes = [\"x\"]\n\
             [[policy]]\ntools = [\"t\"]\neffect = \"deny\"\nscopes = [\"x\"]\n\
             [[policy]]\nprompts = [\"p\"]\neffect = \"maybe\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        for key in [
            "upstreams[0]: set exactly one of command, url",
            "upstreams[1].identity: needs isolation = \"per-user\"",
            "gateway.prefix",
            "policy[0]: name at least one non-empty pattern",
            "policy[1]: a deny rule refuses whatever the scopes",
            "policy[2].effect",
        ] {
            assert!(text.contains(key), "missing {key:?} in:\n{text}");
        }
        // Local mode mints JWTs, so identity = "jwt" is fine there.
        let cfg = from_toml(
            "[[upstreams]]\nname = \"b\"\nurl = \"http://h/mcp\"\nidentity = \"jwt\"\nisolation = \"per-user\"\n\
             [[policy]]\nresources = [\"file:///*\"]\ngroups = [\"ops\"]\n",
        )
        .unwrap();
        assert_eq!(cfg.gateway.upstreams.len(), 1);
        assert_eq!(cfg.policy[0].groups, vec!["ops".to_owned()]);
        // A gateway serves no built-in toolset unless [toolsets] asks for one.
        assert!(!cfg.toolsets.calc && !cfg.toolsets.notes && cfg.toolsets.docs.is_none());
    }

    #[test]
    fn defaults_without_a_file() {
        let cfg = load_from(None, env_none()).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(cfg.mcp_resource(), "http://127.0.0.1:8000/mcp");
        assert_eq!(cfg.store.url, "sqlite://./data/mcpgate.db");
        assert_eq!(cfg.auth_mode, AuthMode::Local);
        assert!(cfg.toolsets.calc && cfg.toolsets.notes && cfg.toolsets.docs.is_some());
        assert!(cfg.http.allowed_hosts.contains(&"localhost".to_owned()));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = from_toml(
            "listen = \"nope\"\npublic_url = \"ftp://x\"\n[store]\nurl = \"mysql://a\"\n[log]\nformat = \"xml\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        for key in ["listen:", "public_url:", "store.url:", "log.format:"] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
        assert_eq!(err.0.len(), 4, "{text}");
    }

    #[test]
    fn proxy_mode_validates_the_upstream_per_preset() {
        let err = from_toml("[auth]\nmode = \"proxy\"\n").unwrap_err();
        assert!(err.to_string().contains("auth.upstream: required"), "{err}");
        let err = from_toml(
            "[auth]\nmode = \"proxy\"\n[auth.upstream]\npreset = \"entra\"\naudience = \"x\"\nscopes = [\"profile\"]\n",
        )
        .unwrap_err();
        let text = err.to_string();
        for key in [
            "auth.upstream.tenant: required",
            "auth.upstream.audience: not used",
            "auth.upstream.client_id: required",
            "exactly one of client_secret, client_secret_file",
            "must include \"openid\"",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
        let err = from_toml(
            "[auth]\nmode = \"proxy\"\n[auth.upstream]\npreset = \"okta\"\nclient_id = \"c\"\nclient_secret = \"s\"\nauthorize_params = { state = \"x\" }\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("auth.upstream.issuer: required"),
            "{err}"
        );
        assert!(
            err.to_string().contains("\"state\" is set by mcpgate"),
            "{err}"
        );
        let err = from_toml("[auth]\nmode = \"proxy\"\n[auth.upstream]\npreset = \"saml\"\n")
            .unwrap_err();
        assert!(
            err.to_string().contains("is not one of oidc, auth0"),
            "{err}"
        );

        let cfg = from_toml(
            "[auth]\nmode = \"proxy\"\n[auth.upstream]\npreset = \"entra\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"c\"\nclient_secret = \"hunter2\"\n",
        )
        .unwrap();
        let up = cfg.upstream_idp.as_ref().unwrap();
        assert_eq!(
            up.issuer.as_deref(),
            Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0")
        );
        assert!(
            cfg.local_auth.is_some(),
            "proxy mode runs the authorization server"
        );
        let shown = cfg.to_redacted_toml().unwrap();
        assert!(
            !shown.contains("hunter2") && shown.contains("preset = \"entra\""),
            "{shown}"
        );

        let cfg = from_toml(
            "[auth]\nmode = \"proxy\"\n[auth.upstream]\npreset = \"google\"\nclient_id = \"c\"\nclient_secret = \"s\"\nauthorize_params = { prompt = \"select_account consent\", hd = \"example.com\" }\n",
        )
        .unwrap();
        let up = cfg.upstream_idp.as_ref().unwrap();
        assert_eq!(up.issuer.as_deref(), Some("https://accounts.google.com"));
        assert_eq!(
            up.authorize_params,
            vec![
                ("access_type".to_owned(), "offline".to_owned()),
                ("hd".to_owned(), "example.com".to_owned()),
                ("prompt".to_owned(), "select_account consent".to_owned()),
            ]
        );
        let err = from_toml(
            "[auth]\nmode = \"proxy\"\n[auth.upstream]\npreset = \"github\"\nissuer = \"https://github.com\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("has no OpenID issuer"), "{err}");
        let err = from_toml("[auth.upstream]\nclient_id = \"c\"\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("only used with auth.mode = \"proxy\""),
            "{err}"
        );
    }

    #[test]
    fn bridge_and_auto_modes_are_validated() {
        let err = from_toml("[auth]\nmode = \"bridge\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("auth.resource: required"), "{text}");
        assert!(text.contains("auth.bridge: required"), "{text}");
        let err = from_toml(
            "[auth]\nmode = \"bridge\"\n[auth.resource]\nissuer = \"https://t.auth0.com/\"\n[auth.bridge]\nregistrar = \"auth0\"\naudience = \"https://elsewhere\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        for key in [
            "auth.bridge.management_client_id: required",
            "auth.bridge: set exactly one of management_client_secret, management_client_secret_file",
            "auth.bridge.audience: \"https://elsewhere\" must be one of auth.resource.audiences",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
        let cfg = from_toml(
            "[auth]\nmode = \"bridge\"\n[auth.resource]\nissuer = \"https://t.auth0.com/\"\n[auth.bridge]\nregistrar = \"auth0\"\nmanagement_client_id = \"m\"\nmanagement_client_secret = \"hunter2\"\n",
        )
        .unwrap();
        let bridge = cfg.bridge.as_ref().unwrap();
        assert_eq!(
            bridge.audience.as_deref(),
            Some("http://127.0.0.1:8000/mcp")
        );
        match &bridge.registrar {
            BridgeRegistrar::Auth0 { audience, .. } => {
                assert_eq!(audience, "https://t.auth0.com/api/v2/")
            }
            other => panic!("{other:?}"),
        }
        assert!(!cfg.to_redacted_toml().unwrap().contains("hunter2"));
        let err = from_toml(
            "[auth]\nmode = \"bridge\"\n[auth.resource]\nissuer = \"https://kc.example/realms/x\"\n[auth.bridge]\nregistrar = \"passthrough\"\nmanagement_client_id = \"m\"\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("only used with registrar = \"auth0\""),
            "{err}"
        );

        // Auto needs the upstream (for proxy) and derives resource settings from it.
        let cfg = from_toml(
            "[auth]\nmode = \"auto\"\n[auth.upstream]\npreset = \"keycloak\"\nissuer = \"https://kc.example/realms/x\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
        )
        .unwrap();
        assert_eq!(cfg.auth_mode, AuthMode::Auto);
        assert_eq!(
            cfg.resource_auth.as_ref().unwrap().issuer,
            "https://kc.example/realms/x"
        );
        assert!(cfg.local_auth.is_some() && cfg.upstream_idp.is_some());
    }

    #[test]
    fn unknown_keys_name_the_key() {
        let err = from_toml("[store]\nurll = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("urll"), "{err}");
    }

    #[test]
    fn auth_none_is_refused_off_loopback() {
        let err = from_toml(
            "listen = \"0.0.0.0:8000\"\npublic_url = \"https://mcp.example.com\"\n[auth]\nmode = \"none\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        // The default (local) is fine off loopback behind https.
        let cfg =
            from_toml("listen = \"0.0.0.0:8000\"\npublic_url = \"https://mcp.example.com\"\n")
                .unwrap();
        assert_eq!(cfg.auth_mode, AuthMode::Local);
    }

    #[test]
    fn local_mode_needs_https_off_loopback_and_reports_every_bad_value() {
        let err = from_toml(
            "listen = \"0.0.0.0:8000\"\npublic_url = \"http://mcp.example.com\"\n[auth.local]\naccess_token_ttl_secs = 0\ncode_ttl_secs = 99999\nencryption_key = \"x\"\nencryption_key_file = \"/k\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "must be https",
            "access_token_ttl_secs",
            "code_ttl_secs",
            "at most one of encryption_key",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        let cfg = from_toml(
            "[auth.local]\nencryption_key = \"c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXkh\"\n",
        )
        .unwrap();
        let shown = cfg.to_redacted_toml().unwrap();
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
    }

    #[test]
    fn local_auth_limits_and_introspection_clients_are_validated() {
        let err = from_toml(
            "[auth.local]\nauthorize_requests_per_minute = 0\nmax_unused_clients = 0\n[[auth.local.introspection_clients]]\nclient_id = \"rs\"\nclient_secret = \"short\"\n[[auth.local.introspection_clients]]\nclient_id = \"rs\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "authorize_requests_per_minute",
            "max_unused_clients",
            "introspection_clients[0].client_secret: at least 32",
            "introspection_clients[1]: set exactly one of",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        let cfg = from_toml(
            "[auth.local]\n[[auth.local.introspection_clients]]\nclient_id = \"rs\"\nclient_secret = \"0123456789abcdef0123456789abcdef-rs\"\n",
        )
        .unwrap();
        let local = cfg.local_auth.as_ref().unwrap();
        assert_eq!(local.authorize_requests_per_minute, 60);
        assert_eq!(local.max_unused_clients, 10_000);
        assert_eq!(local.introspection_clients[0].client_id, "rs");
        let shown = cfg.to_redacted_toml().unwrap();
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    #[test]
    fn public_url_with_path_is_refused() {
        let err = from_toml("public_url = \"https://h.example/mcp\"\n").unwrap_err();
        assert!(err.to_string().contains("origin only"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("MCPGATE_LISTEN", "127.0.0.1:9100");
            jail.set_env("MCPGATE_STORE__URL", "postgres://u:secret@127.0.0.1/db");
            jail.set_env("MCPGATE_CONFIG", "/ignored/not/a/key");
            let cfg = load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(cfg.listen.to_string(), "127.0.0.1:9100");
            assert_eq!(cfg.store.url, "postgres://u:secret@127.0.0.1/db");
            let shown = cfg.to_redacted_toml().map_err(|e| e.to_string())?;
            assert!(!shown.contains("secret"), "{shown}");
            assert!(!format!("{cfg:?}").contains("secret"));
            Ok(())
        });
    }

    #[test]
    fn resource_mode_config() {
        let cfg = from_toml(
            "public_url = \"https://mcp.example.com\"\nlisten = \"0.0.0.0:8000\"\n[auth]\nmode = \"resource\"\n[auth.resource]\nissuer = \"https://idp.example.com/realms/x\"\n[auth.resource.introspection]\nclient_id = \"rs\"\nclient_secret = \"s3cret\"\n[[policy]]\ntools = [\"add\"]\nscopes = [\"math\"]\n",
        )
        .unwrap();
        let resource = cfg.resource_auth.clone().unwrap();
        assert_eq!(resource.audiences, vec!["https://mcp.example.com/mcp"]);
        assert_eq!(resource.algorithms.len(), SUPPORTED_ALGORITHMS.len());
        assert!(!cfg.to_redacted_toml().unwrap().contains("s3cret"));
        assert!(!format!("{cfg:?}").contains("s3cret"));
        assert_eq!(cfg.policy.len(), 1);
    }

    #[test]
    fn resource_mode_problems_are_listed() {
        let err = from_toml(
            "[auth]\nmode = \"resource\"\n[auth.resource]\nissuer = \"http://idp.example.com\"\naudiences = [\"*\"]\nalgorithms = [\"HS256\"]\n",
        )
        .unwrap_err();
        let text = err.to_string();
        for key in [
            "auth.resource.issuer",
            "auth.resource.audiences",
            "auth.resource.algorithms",
        ] {
            assert!(text.contains(key), "{key}: {text}");
        }
    }

    #[test]
    fn public_host_is_allowed() {
        let cfg = from_toml("public_url = \"http://localhost:8000\"\n").unwrap();
        assert_eq!(cfg.http.allowed_hosts[0], "localhost");
        assert!(cfg.http.allowed_hosts.contains(&"127.0.0.1".to_owned()));
    }
}
