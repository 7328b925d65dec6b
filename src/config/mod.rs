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

// The sections' raw shapes live with the subsystems that use them; these
// re-exports keep `mcpgate::config::Raw*` working for tests and tools.
use crate::telemetry::settings::LogSettings;

mod auth;

pub use crate::{
    auth::settings::{RawIntrospection, RawPolicy, RawResourceAuth},
    bridge::settings::{BridgeConfig, BridgeRegistrar, RawBridge},
    idp::settings::RawUpstreamIdp,
    oauth::settings::{RawCimd, RawIntrospectionClient, RawLocalAuth, RawPinnedDocument},
    telemetry::settings::RawLog,
};
pub use auth::{AuthSettings, RawAuth, ResolvedAuth};

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
    "telemetry",
    "toolsets",
    "gateway",
    "branding",
    "admin",
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
    /// The audit sink.
    #[serde(default)]
    pub telemetry: crate::telemetry::settings::RawTelemetry,
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
    /// What the browser pages say and look like.
    #[serde(default)]
    pub branding: crate::branding::settings::RawBranding,
    /// Who holds the admin role among identity-provider users (proxy mode).
    #[serde(default)]
    pub admin: crate::admin::settings::RawAdmin,
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
    /// Seconds between a shutdown signal and closing the listener, while
    /// `/readyz` already answers 503 "draining". Default 0.
    pub drain_delay_secs: Option<u64>,
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

/// The validated configuration the rest of the program uses.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub public_url: Url,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    /// The mode and the sections it uses.
    pub auth: AuthSettings,
    pub policy: Vec<crate::auth::policy::ScopeRule>,
    pub gateway: crate::upstream::settings::GatewayConfig,
    pub http: HttpConfig,
    pub server: crate::server::ServerConfig,
    pub log: LogSettings,
    pub telemetry: crate::telemetry::settings::TelemetrySettings,
    pub toolsets: ToolsetsConfig,
    pub branding: crate::branding::settings::BrandingConfig,
    pub admin: crate::admin::settings::AdminRoles,
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
    pub drain_delay_secs: u64,
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

        let mode = auth::parse_mode(self.auth.mode.as_deref(), listen, &mut errors);

        let max_body_bytes = self.http.max_body_bytes.unwrap_or(1024 * 1024);
        if !(1024..=64 * 1024 * 1024).contains(&max_body_bytes) {
            errors.push(format!(
                "http.max_body_bytes: {max_body_bytes} must be between 1024 and 67108864"
            ));
        }
        // 0 by default: without a balancer that probes /readyz (one VM,
        // systemd, development) a delay only slows every stop. Behind one,
        // set it to what the balancer needs to notice (the k8s manifests: 5).
        let drain_delay_secs = self.http.drain_delay_secs.unwrap_or(0);
        if drain_delay_secs > 300 {
            errors.push(format!(
                "http.drain_delay_secs: {drain_delay_secs} must be at most 300"
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
        let telemetry =
            crate::telemetry::settings::validate_telemetry(&self.telemetry, &mut errors);

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
                can_mint_jwt: mode.is_some_and(auth::Mode::mints_jwt),
                own_resource: &own_resource,
                data_dir: &data_dir,
                has_browser_sign_in: mode.is_some_and(auth::Mode::mints_jwt),
            },
            &mut errors,
        );
        let policy = crate::auth::settings::validate_policy(&self.policy, &mut errors);
        let branding = crate::branding::settings::validate(&self.branding, &mut errors);
        let admin = crate::admin::settings::validate(
            &self.admin,
            mode.is_some_and(auth::Mode::signs_in_upstream),
            &mut errors,
        );
        let auth = auth::validate(
            &self.auth,
            mode,
            &auth::Surroundings {
                public_url: &public_url,
                data_dir: &data_dir,
            },
            &mut errors,
        );
        if auth.is_none() && errors.is_empty() {
            // Every path to `None` reports why; this is a safety net.
            errors.push("auth: the mode's settings are incomplete".to_owned());
        }

        match (errors.is_empty(), auth) {
            (true, Some(auth)) => Ok(Config {
                public_url,
                listen,
                data_dir,
                store: StoreConfig {
                    url: store_url,
                    max_connections,
                },
                auth,
                policy,
                gateway,
                http: HttpConfig {
                    allowed_hosts,
                    allowed_origins,
                    max_body_bytes,
                    shutdown_grace_secs: self.http.shutdown_grace_secs.unwrap_or(10),
                    drain_delay_secs,
                },
                server,
                log,
                telemetry,
                toolsets,
                branding,
                admin,
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
mod tests;
