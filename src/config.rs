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

use crate::problems::require_https;

// The sections' raw shapes live with the subsystems that use them; these
// re-exports keep `mcpgate::config::Raw*` working for tests and tools.
use crate::{
    auth::settings::ResourceAuthSettings, idp::settings::IdpSettings,
    oauth::settings::LocalAuthSettings, telemetry::settings::LogSettings,
};
pub use crate::{
    auth::settings::{RawIntrospection, RawPolicy, RawResourceAuth},
    bridge::settings::{BridgeConfig, BridgeRegistrar, RawBridge},
    idp::settings::RawUpstreamIdp,
    oauth::settings::{RawCimd, RawIntrospectionClient, RawLocalAuth, RawPinnedDocument},
    telemetry::settings::RawLog,
};

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

/// The validated configuration the rest of the program uses.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub public_url: Url,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub auth_mode: AuthMode,
    pub resource_auth: Option<ResourceAuthSettings>,
    /// The embedded authorization server's settings (`local` and `proxy`).
    pub local_auth: Option<LocalAuthSettings>,
    pub upstream_idp: Option<IdpSettings>,
    pub bridge: Option<BridgeConfig>,
    pub policy: Vec<crate::auth::policy::ScopeRule>,
    pub gateway: crate::upstream::settings::GatewayConfig,
    pub http: HttpConfig,
    pub server: crate::server::ServerConfig,
    pub log: LogSettings,
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

        let log = crate::telemetry::settings::validate(&self.log, &mut errors);

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
        let policy = crate::auth::settings::validate_policy(&self.policy, &mut errors);
        let resource_auth = match auth_mode {
            Some(AuthMode::Resource | AuthMode::Bridge) => {
                crate::auth::settings::validate_resource(
                    self.auth.resource.as_ref(),
                    &public_url,
                    &mut errors,
                )
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
                    Some(raw) => crate::auth::settings::validate_resource(
                        Some(raw),
                        &public_url,
                        &mut errors,
                    ),
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
            Some(AuthMode::Local | AuthMode::Proxy | AuthMode::Auto) => {
                Some(crate::oauth::settings::validate(
                    self.auth.local.as_ref(),
                    &data_dir,
                    &public_url,
                    &mut errors,
                ))
            }
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
                crate::idp::settings::validate(self.auth.upstream.as_ref(), &mut errors)
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
                log,
                toolsets,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }
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
    use crate::auth::SUPPORTED_ALGORITHMS;

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
