//! `[[upstreams]]` and `[gateway]`: the raw TOML shape and its validation into
//! typed settings. Called from `config`, which collects the errors.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// `auto` (default: prefix names only when there is more than one
    /// upstream or a built-in toolset), `always` or `never`.
    pub prefix: Option<String>,
    /// Between the upstream name and the tool or prompt name. Default `__`.
    pub separator: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: Option<String>,
    /// stdio server: program and arguments.
    pub command: Option<Vec<String>>,
    /// Names of mcpgate's environment variables the child may see (PATH and
    /// HOME always pass); everything else is cleared.
    #[serde(default)]
    pub env: Vec<String>,
    /// Variables set for the child with fixed values.
    #[serde(default)]
    pub set_env: BTreeMap<String, String>,
    /// The child's working directory; not inside `data_dir`. Default: a
    /// fresh empty directory per connection, removed when it closes.
    pub cwd: Option<PathBuf>,
    /// Streamable HTTP server URL.
    pub url: Option<String>,
    /// Static headers for an HTTP upstream (API keys): never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub oauth: Option<RawUpstreamOAuth>,
    /// `shared` (default) or `per-user`.
    pub isolation: Option<String>,
    /// Per-user processes or connections idle this long are closed. Default 600.
    pub idle_timeout_secs: Option<u64>,
    /// Longest a proxied request may take. Default 60.
    pub call_timeout_secs: Option<u64>,
    /// Proxied requests in flight per connection. Default 32.
    pub max_concurrent_calls: Option<usize>,
    /// Per-user connections (processes) open at once. Default 100; beyond
    /// it the least recently used idle one is closed.
    pub max_per_user_links: Option<usize>,
    /// `none` (default), `signed-headers` or `jwt`.
    pub identity: Option<String>,
    /// HMAC key for `signed-headers`.
    pub identity_secret: Option<String>,
    pub identity_secret_file: Option<PathBuf>,
    /// Whom the identity is for: `aud` of minted JWTs, and part of the
    /// signed headers' HMAC. Default: the upstream URL.
    pub identity_audience: Option<String>,
    /// `true`, or a table: each user connects with their own account at the
    /// upstream's authorization server (`user_auth.rs`).
    pub user_auth: Option<RawUserAuthSetting>,
}

pub use super::user_auth::settings::{RawUserAuth, RawUserAuthSetting, UserAuthSettings};

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamOAuth {
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrefixMode {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Serialize)]
pub struct GatewayConfig {
    pub prefix: PrefixMode,
    pub separator: String,
    pub upstreams: Vec<UpstreamConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    Shared,
    PerUser,
}

#[derive(Clone, Serialize)]
pub enum Transport {
    Stdio {
        program: String,
        args: Vec<String>,
        /// Resolved at start: (name, value) pairs the child gets.
        #[serde(skip)]
        env: Vec<(String, String)>,
        env_names: Vec<String>,
        cwd: Option<PathBuf>,
    },
    Http {
        url: Url,
        #[serde(skip)]
        headers: Vec<(String, SecretString)>,
        header_names: Vec<String>,
        #[serde(skip)]
        oauth: Option<Box<ClientCredentialsGrant>>,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Stdio { program, args, .. } => f
                .debug_struct("Stdio")
                .field("program", program)
                .field("args", args)
                .finish_non_exhaustive(),
            Transport::Http { url, .. } => f
                .debug_struct("Http")
                .field("url", &url.as_str())
                .finish_non_exhaustive(),
        }
    }
}

#[derive(Clone)]
pub struct ClientCredentialsGrant {
    pub token_url: Url,
    pub client_id: String,
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
}

#[derive(Clone)]
pub enum CallerIdentityMode {
    None,
    /// `X-MCP-Subject` and friends, with an HMAC-SHA256 signature over them
    /// and `audience`, so upstreams sharing a secret cannot replay each other's.
    SignedHeaders {
        secret: SecretString,
        audience: String,
    },
    /// A short-lived ES256 JWT from mcpgate's own keys, `aud` = this.
    Jwt {
        audience: String,
    },
}

#[derive(Clone, Serialize)]
pub struct UpstreamConfig {
    pub name: String,
    pub transport: Transport,
    pub isolation: Isolation,
    pub idle_timeout: Duration,
    pub call_timeout: Duration,
    pub max_concurrent_calls: usize,
    pub max_per_user_links: usize,
    #[serde(skip)]
    pub identity: CallerIdentityMode,
    pub identity_kind: &'static str,
    /// Each user's own token at the upstream's authorization server.
    #[serde(skip)]
    pub user_auth: Option<UserAuthSettings>,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("transport", &self.transport)
            .field("isolation", &self.isolation)
            .field("identity", &self.identity_kind)
            .finish_non_exhaustive()
    }
}

/// The variables every stdio child gets, if mcpgate has them: without PATH
/// and HOME nothing (npx, uvx, python) starts.
const ALWAYS_PASSED: &[&str] = &["PATH", "HOME"];

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// One secret given inline or as a file; `None` when neither is set.
pub(super) fn secret(
    section: &str,
    key: &str,
    inline: Option<&String>,
    file: Option<&PathBuf>,
    errors: &mut Vec<String>,
) -> Option<SecretString> {
    if inline.is_none() && file.is_none() {
        return None;
    }
    crate::problems::read_secret(
        section,
        key,
        inline.map(String::as_str),
        file.map(PathBuf::as_path),
        errors,
    )
    .map(SecretString::from)
}

/// What validation needs to know about the rest of the configuration.
pub struct Surroundings<'a> {
    /// Whether this auth mode has signing keys (local, proxy).
    pub can_mint_jwt: bool,
    /// mcpgate's own MCP resource (`public_url + "/mcp"`): never an identity audience.
    pub own_resource: &'a str,
    /// No child runs in here: it holds the store and the encryption key.
    pub data_dir: &'a Path,
    /// Whether users sign in to mcpgate's own pages (local, proxy): the
    /// connect page of `user_auth` needs to know who the browser is.
    pub has_browser_sign_in: bool,
}

/// The absolute form of `path`, through symlinks as far as it exists.
fn resolved(path: &Path) -> PathBuf {
    path.canonicalize()
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned())
}

/// Audiences compare as URLs when they are URLs (case of scheme and host,
/// default port, trailing slash), else as text.
fn same_audience(a: &str, b: &str) -> bool {
    let norm = |s: &str| match Url::parse(s.trim()) {
        Ok(u) => u.as_str().trim_end_matches('/').to_owned(),
        Err(_) => s.trim().trim_end_matches('/').to_owned(),
    };
    norm(a) == norm(b)
}

pub fn validate(
    gateway: Option<&RawGateway>,
    raw: &[RawUpstream],
    around: &Surroundings<'_>,
    errors: &mut Vec<String>,
) -> GatewayConfig {
    let can_mint_jwt = around.can_mint_jwt;
    let data_dir = resolved(around.data_dir);
    let prefix = match gateway.and_then(|g| g.prefix.as_deref()) {
        None | Some("auto") => PrefixMode::Auto,
        Some("always") => PrefixMode::Always,
        Some("never") => PrefixMode::Never,
        Some(other) => {
            errors.push(format!(
                "gateway.prefix: {other:?} must be \"auto\", \"always\" or \"never\""
            ));
            PrefixMode::Auto
        }
    };
    let separator = gateway
        .and_then(|g| g.separator.clone())
        .unwrap_or_else(|| "__".to_owned());
    if separator.is_empty() || separator.chars().any(|c| c.is_whitespace() || c == '/') {
        errors.push("gateway.separator: a non-empty string without spaces or slashes".to_owned());
    }
    let mut upstreams: Vec<UpstreamConfig> = Vec::new();
    for (i, u) in raw.iter().enumerate() {
        let section = format!("upstreams[{i}]");
        let name = u.name.clone().unwrap_or_default();
        if !valid_name(&name) {
            errors.push(format!(
                "{section}.name: 1-32 characters of a-z, 0-9, '-' and '_' (got {name:?})"
            ));
        } else if name.contains(&separator) {
            errors.push(format!(
                "{section}.name: {name:?} contains the separator {separator:?}"
            ));
        } else if upstreams.iter().any(|o| o.name == name) {
            errors.push(format!("{section}.name: {name:?} is used twice"));
        }
        let transport = match (&u.command, &u.url) {
            (Some(command), None) => {
                let Some((program, args)) = command.split_first() else {
                    errors.push(format!("{section}.command: name the program to run"));
                    continue;
                };
                if program.is_empty() {
                    errors.push(format!("{section}.command: name the program to run"));
                }
                if !u.headers.is_empty() || u.oauth.is_some() {
                    errors.push(format!(
                        "{section}: headers and oauth are for url upstreams, not command ones"
                    ));
                }
                if let Some(cwd) = &u.cwd {
                    if !cwd.is_dir() {
                        errors.push(format!(
                            "{section}.cwd: {} is not a directory",
                            cwd.display()
                        ));
                    } else if resolved(cwd).starts_with(&data_dir) {
                        // The child runs as mcpgate's user: there it could
                        // read the database and the encryption key by name.
                        errors.push(format!(
                            "{section}.cwd: {} is inside data_dir; give the child a directory of its own",
                            cwd.display()
                        ));
                    }
                }
                let mut env_names: Vec<String> =
                    ALWAYS_PASSED.iter().map(|s| (*s).to_owned()).collect();
                for n in &u.env {
                    if n.is_empty() || n.contains('=') {
                        errors.push(format!("{section}.env: {n:?} is not a variable name"));
                    } else if !env_names.contains(n) {
                        env_names.push(n.clone());
                    }
                }
                let mut env: Vec<(String, String)> = env_names
                    .iter()
                    .filter_map(|n| std::env::var(n).ok().map(|v| (n.clone(), v)))
                    .collect();
                for (k, v) in &u.set_env {
                    if k.is_empty() || k.contains('=') {
                        errors.push(format!("{section}.set_env: {k:?} is not a variable name"));
                    }
                    env.retain(|(n, _)| n != k);
                    env.push((k.clone(), v.clone()));
                }
                Transport::Stdio {
                    program: program.clone(),
                    args: args.to_vec(),
                    env,
                    env_names,
                    cwd: u.cwd.clone(),
                }
            }
            (None, Some(url)) => {
                let parsed = match Url::parse(url) {
                    // Credentials in the URL would reach logs and error texts
                    // with it; headers and [upstreams.oauth] keep them out.
                    Ok(p) if !p.username().is_empty() || p.password().is_some() => {
                        errors.push(format!(
                            "{section}.url: put credentials in headers or [upstreams.oauth], not in the URL"
                        ));
                        continue;
                    }
                    Ok(p) if matches!(p.scheme(), "http" | "https") => p,
                    _ => {
                        errors.push(format!("{section}.url: {url:?} is not an http(s) URL"));
                        continue;
                    }
                };
                if !u.env.is_empty() || !u.set_env.is_empty() || u.cwd.is_some() {
                    errors.push(format!(
                        "{section}: env, set_env and cwd are for command upstreams, not url ones"
                    ));
                }
                let mut headers = Vec::new();
                for (k, v) in &u.headers {
                    let bad_name = http::HeaderName::from_bytes(k.as_bytes()).is_err();
                    let reserved = ["authorization", "host", "content-length", "mcp-session-id"]
                        .contains(&k.to_ascii_lowercase().as_str());
                    if bad_name || reserved || http::HeaderValue::from_str(v).is_err() {
                        errors.push(format!(
                            "{section}.headers: {k:?} is not a header mcpgate can send (invalid, or one it sets itself)"
                        ));
                    } else {
                        headers.push((k.clone(), SecretString::from(v.clone())));
                    }
                }
                let oauth = u.oauth.as_ref().and_then(|o| {
                    let s = format!("{section}.oauth");
                    let token_url = match o.token_url.as_deref().map(Url::parse) {
                        Some(Ok(t)) if matches!(t.scheme(), "http" | "https") => Some(t),
                        _ => {
                            errors.push(format!("{s}.token_url: an http(s) URL is required"));
                            None
                        }
                    };
                    let client_id = o.client_id.clone().filter(|c| !c.is_empty());
                    if client_id.is_none() {
                        errors.push(format!("{s}.client_id: required"));
                    }
                    let client_secret = secret(
                        &s,
                        "client_secret",
                        o.client_secret.as_ref(),
                        o.client_secret_file.as_ref(),
                        errors,
                    );
                    if o.client_secret.is_none() && o.client_secret_file.is_none() {
                        errors.push(format!("{s}: set client_secret or client_secret_file"));
                    }
                    Some(Box::new(ClientCredentialsGrant {
                        token_url: token_url?,
                        client_id: client_id?,
                        client_secret: client_secret?,
                        scopes: o.scopes.clone(),
                        audience: o.audience.clone(),
                        resource: o.resource.clone(),
                    }))
                });
                let header_names = headers.iter().map(|(k, _)| k.clone()).collect();
                Transport::Http {
                    url: parsed,
                    headers,
                    header_names,
                    oauth,
                }
            }
            _ => {
                errors.push(format!("{section}: set exactly one of command, url"));
                continue;
            }
        };
        let user_auth = super::user_auth::settings::validate(&section, u, around, errors);
        let isolation = match u.isolation.as_deref() {
            // Each user's token is their own: a per-user connection carries it.
            None if user_auth.is_some() => Isolation::PerUser,
            Some("shared") if user_auth.is_some() => {
                errors.push(format!(
                    "{section}.isolation: user_auth needs \"per-user\" (each user's own token)"
                ));
                Isolation::Shared
            }
            None | Some("shared") => Isolation::Shared,
            Some("per-user") => Isolation::PerUser,
            Some(other) => {
                errors.push(format!(
                    "{section}.isolation: {other:?} must be \"shared\" or \"per-user\""
                ));
                Isolation::Shared
            }
        };
        let audience = u.identity_audience.clone().or_else(|| u.url.clone());
        if let Some(audience) = &audience
            && u.identity.as_deref().is_some_and(|i| i != "none")
            && same_audience(audience, around.own_resource)
        {
            // mcpgate's own tokens carry this audience: an upstream must not
            // get anything it could present to /mcp.
            errors.push(format!(
                "{section}.identity_audience: {audience:?} is mcpgate's own resource; name the upstream"
            ));
        }
        let (identity, identity_kind) = match u.identity.as_deref() {
            None | Some("none") => (CallerIdentityMode::None, "none"),
            Some("signed-headers") => {
                let key = secret(
                    &section,
                    "identity_secret",
                    u.identity_secret.as_ref(),
                    u.identity_secret_file.as_ref(),
                    errors,
                );
                if key.is_none() && u.identity_secret.is_none() && u.identity_secret_file.is_none()
                {
                    errors.push(format!(
                        "{section}: identity = \"signed-headers\" needs identity_secret or identity_secret_file"
                    ));
                }
                (
                    CallerIdentityMode::SignedHeaders {
                        secret: key.unwrap_or_else(|| SecretString::from(String::new())),
                        audience: audience.clone().unwrap_or_default(),
                    },
                    "signed-headers",
                )
            }
            Some("jwt") => {
                if !can_mint_jwt {
                    errors.push(format!(
                        "{section}.identity: \"jwt\" needs mcpgate's own signing keys (auth.mode = \"local\" or \"proxy\")"
                    ));
                }
                (
                    CallerIdentityMode::Jwt {
                        audience: audience.unwrap_or_default(),
                    },
                    "jwt",
                )
            }
            Some(other) => {
                errors.push(format!(
                    "{section}.identity: {other:?} must be \"none\", \"signed-headers\" or \"jwt\""
                ));
                (CallerIdentityMode::None, "none")
            }
        };
        if identity_kind != "none" {
            if !matches!(transport, Transport::Http { .. }) {
                errors.push(format!(
                    "{section}.identity: identity is sent as HTTP headers, so it needs a url upstream"
                ));
            }
            // A shared connection carries everyone's calls: it has no one caller to name.
            if isolation != Isolation::PerUser {
                errors.push(format!(
                    "{section}.identity: needs isolation = \"per-user\" (a shared connection has no single caller)"
                ));
            }
        }
        let max_concurrent_calls = u.max_concurrent_calls.unwrap_or(32);
        if max_concurrent_calls == 0 {
            errors.push(format!("{section}.max_concurrent_calls: at least 1"));
        }
        let max_per_user_links = u.max_per_user_links.unwrap_or(100);
        if max_per_user_links == 0 {
            errors.push(format!("{section}.max_per_user_links: at least 1"));
        }
        let call_timeout_secs = u.call_timeout_secs.unwrap_or(60);
        if call_timeout_secs == 0 {
            errors.push(format!("{section}.call_timeout_secs: at least 1"));
        }
        upstreams.push(UpstreamConfig {
            name,
            transport,
            isolation,
            idle_timeout: Duration::from_secs(u.idle_timeout_secs.unwrap_or(600).max(1)),
            call_timeout: Duration::from_secs(call_timeout_secs),
            max_concurrent_calls: max_concurrent_calls.max(1),
            max_per_user_links: max_per_user_links.max(1),
            identity,
            identity_kind,
            user_auth,
        });
    }
    GatewayConfig {
        prefix,
        separator,
        upstreams,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const OWN_RESOURCE: &str = "https://gate.example/mcp";

    pub(crate) fn around(can_mint_jwt: bool) -> Surroundings<'static> {
        Surroundings {
            can_mint_jwt,
            own_resource: OWN_RESOURCE,
            data_dir: Path::new("/nonexistent/mcpgate-data"),
            has_browser_sign_in: true,
        }
    }

    #[test]
    fn an_identity_audience_equal_to_mcpgates_own_resource_is_refused() {
        for (identity, audience) in [
            ("jwt", "https://gate.example/mcp"),
            ("jwt", "HTTPS://Gate.Example:443/mcp/"),
            ("signed-headers", "https://gate.example/mcp"),
        ] {
            let raw = RawUpstream {
                name: Some("h".into()),
                url: Some("http://127.0.0.1:1/mcp".into()),
                identity: Some(identity.into()),
                identity_secret: Some("k".into()),
                identity_audience: Some(audience.into()),
                isolation: Some("per-user".into()),
                ..RawUpstream::default()
            };
            let mut errors = Vec::new();
            validate(None, &[raw], &around(true), &mut errors);
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains("identity_audience") && e.contains("own resource")),
                "{identity} {audience}: {errors:?}"
            );
        }
        // The default audience is the upstream URL: pointing at mcpgate itself is refused too.
        let raw = RawUpstream {
            name: Some("h".into()),
            url: Some(OWN_RESOURCE.into()),
            identity: Some("jwt".into()),
            isolation: Some("per-user".into()),
            ..RawUpstream::default()
        };
        let mut errors = Vec::new();
        validate(None, &[raw], &around(true), &mut errors);
        assert!(
            errors.iter().any(|e| e.contains("own resource")),
            "{errors:?}"
        );
    }

    #[test]
    fn a_child_working_directory_inside_data_dir_is_refused() {
        let data = std::env::temp_dir().join(format!("mcpgate-cwd-test-{}", uuid::Uuid::new_v4()));
        let inside = data.join("sub");
        std::fs::create_dir_all(&inside).unwrap();
        for cwd in [data.clone(), inside.clone(), inside.join("..")] {
            let mut raw = stdio("s");
            raw.cwd = Some(cwd.clone());
            let mut errors = Vec::new();
            let around = Surroundings {
                data_dir: &data,
                ..around(false)
            };
            validate(None, &[raw], &around, &mut errors);
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains("cwd") && e.contains("inside data_dir")),
                "{}: {errors:?}",
                cwd.display()
            );
        }
        // A directory beside it is fine.
        let mut raw = stdio("s");
        raw.cwd = Some(std::env::temp_dir());
        let mut errors = Vec::new();
        let around = Surroundings {
            data_dir: &data,
            ..around(false)
        };
        validate(None, &[raw], &around, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        std::fs::remove_dir_all(&data).unwrap();
    }

    fn stdio(name: &str) -> RawUpstream {
        RawUpstream {
            name: Some(name.into()),
            command: Some(vec!["echo".into()]),
            ..RawUpstream::default()
        }
    }

    #[test]
    fn every_problem_is_reported() {
        let mut errors = Vec::new();
        let raw = vec![
            stdio("a"),
            stdio("a"),
            RawUpstream {
                name: Some("Bad Name".into()),
                ..RawUpstream::default()
            },
            RawUpstream {
                name: Some("h".into()),
                url: Some("ftp://x".into()),
                ..RawUpstream::default()
            },
            RawUpstream {
                name: Some("u".into()),
                url: Some("https://user:hunter2@example.com/mcp".into()),
                ..RawUpstream::default()
            },
            RawUpstream {
                name: Some("i".into()),
                url: Some("http://127.0.0.1:1/mcp".into()),
                identity: Some("signed-headers".into()),
                headers: BTreeMap::from([("Authorization".into(), "Bearer x".into())]),
                ..RawUpstream::default()
            },
        ];
        validate(None, &raw, &around(false), &mut errors);
        let all = errors.join("\n");
        assert!(all.contains("used twice"), "{all}");
        assert!(all.contains("upstreams[2].name"), "{all}");
        assert!(all.contains("set exactly one of command, url"), "{all}");
        assert!(all.contains("upstreams[3].url"), "{all}");
        assert!(all.contains("per-user"), "{all}");
        assert!(all.contains("identity_secret"), "{all}");
        assert!(all.contains("\"Authorization\""), "{all}");
        assert!(!all.contains("Bearer x"), "secret value in an error: {all}");
        assert!(all.contains("upstreams[4].url: put credentials"), "{all}");
        assert!(!all.contains("hunter2"), "secret value in an error: {all}");
    }

    #[test]
    fn stdio_env_is_an_allowlist() {
        let mut errors = Vec::new();
        let mut raw = stdio("s");
        raw.env = vec!["MCPGATE_TEST_ALLOWED_VAR".into()];
        raw.set_env = BTreeMap::from([("FIXED".into(), "1".into())]);
        let cfg = validate(None, &[raw], &around(false), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let Transport::Stdio { env, env_names, .. } = &cfg.upstreams[0].transport else {
            panic!("not stdio")
        };
        assert!(env_names.contains(&"PATH".to_owned()));
        assert!(env.contains(&("FIXED".to_owned(), "1".to_owned())));
        assert!(env.iter().all(|(n, _)| n == "PATH"
            || n == "HOME"
            || n == "FIXED"
            || n == "MCPGATE_TEST_ALLOWED_VAR"));
    }

    #[test]
    fn jwt_identity_needs_keys() {
        let mut errors = Vec::new();
        let raw = RawUpstream {
            name: Some("h".into()),
            url: Some("http://127.0.0.1:1/mcp".into()),
            identity: Some("jwt".into()),
            isolation: Some("per-user".into()),
            ..RawUpstream::default()
        };
        validate(
            None,
            std::slice::from_ref(&raw),
            &around(false),
            &mut errors,
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.clear();
        let cfg = validate(None, &[raw], &around(true), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            matches!(&cfg.upstreams[0].identity, CallerIdentityMode::Jwt { audience } if audience == "http://127.0.0.1:1/mcp")
        );
    }
}
