//! `mcpgate doctor URL`: the checks a remote MCP client's connection runs
//! through, in its order — reach the URL, get the 401 challenge, read the
//! protected-resource metadata (RFC 9728), then the authorization server's
//! (RFC 8414 / OIDC), register (DCR), and call with a token. Works against
//! any MCP server; nothing here assumes mcpgate.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use url::Url;

use crate::auth::challenge::parse_bearer;

use super::{
    Check, DoctorError, Report,
    http::{self, Answer},
    token::{self, ClientCredentials},
};

/// What to check and with what.
pub struct EndpointOptions {
    pub url: String,
    /// An access token to check and call with (read from a file or stdin).
    pub token: Option<SecretString>,
    /// Fetch a token with the client-credentials grant instead.
    pub client_credentials: Option<ClientCredentials>,
    /// Register a throwaway client when the server offers DCR.
    pub register: bool,
    /// The browser origin the CORS preflight pretends to come from.
    pub origin: String,
    /// Per request.
    pub timeout: Duration,
    /// Unix seconds, for the token's `exp`.
    pub now: i64,
}

/// The MCP Inspector's web UI: the browser client people try first.
pub const DEFAULT_ORIGIN: &str = "http://localhost:6274";

const LEGACY_VERSION: &str = "2025-11-25";
const MODERN_VERSION: &str = "2026-07-28";

/// Run every check against `options.url`. Errors only for unusable input.
pub async fn check(options: &EndpointOptions) -> Result<Report, DoctorError> {
    let url = Url::parse(&options.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| DoctorError::BadUrl(options.url.clone()))?;
    let client = http::client(options.timeout)?;
    let mut report = Report::new(options.url.clone());
    let mut run = Run {
        client,
        url,
        origin: options.origin.clone(),
        report: &mut report,
    };
    run.all(options).await;
    // A server may echo what it was sent: no secret leaves through a check.
    let mut secrets: Vec<&str> = Vec::new();
    if let Some(token) = &options.token {
        secrets.push(token.expose_secret());
    }
    if let Some(credentials) = &options.client_credentials {
        secrets.push(credentials.client_secret.expose_secret());
    }
    report.redact(&secrets);
    Ok(report)
}

struct Run<'a> {
    client: reqwest::Client,
    url: Url,
    origin: String,
    report: &'a mut Report,
}

/// What the checks learn on the way, for the later ones.
#[derive(Default)]
struct Learned {
    /// The server answered without asking for a token.
    open: bool,
    challenge_scopes: Vec<String>,
    issuers: Vec<String>,
    metadata: Option<Value>,
}

impl Run<'_> {
    async fn all(&mut self, options: &EndpointOptions) {
        self.transport();
        let answer = match self.post_initialize(self.url.as_str(), None, None).await {
            Ok(answer) => answer,
            Err(reason) => {
                self.report.push(Check::fail(
                    "reach",
                    format!("no answer from {}", self.url),
                    reason,
                    "check the DNS name, that the server runs, that a firewall or tunnel lets port 443 through, and (https) that the certificate is valid for this host and chains to a public CA",
                ));
                self.report.push(Check::skip(
                    "rest",
                    "the other checks need the endpoint to answer",
                ));
                return;
            }
        };
        self.report.push(Check::pass(
            "reach",
            format!("{} answered HTTP {}", self.url, answer.status),
        ));
        self.redirects(&answer).await;
        let mut learned = Learned::default();
        if !self.challenge(&answer, &mut learned) {
            self.cors(None).await;
            self.discover(learned.open.then_some("")).await;
            return;
        }
        let prm_url = self.prm(&answer, &mut learned).await;
        if !learned.issuers.is_empty() {
            self.as_metadata(&mut learned).await;
        }
        self.dcr(options, &learned).await;
        self.cors(prm_url.as_deref()).await;
        let token = self.token(options, &learned).await;
        self.discover(token.as_ref().map(|t| t.expose_secret()))
            .await;
    }

    fn transport(&mut self) {
        let host = self.url.host_str().unwrap_or_default().to_owned();
        let loopback = is_loopback(&host);
        let port = self.url.port_or_known_default().unwrap_or(0);
        self.report.push(match (self.url.scheme(), loopback) {
            ("https", _) if port == 443 => Check::pass("transport", "https on port 443"),
            ("https", _) => Check::warn(
                "transport",
                format!("https on port {port}"),
                "claude.ai and Claude Desktop connect to remote MCP servers on port 443 only; other ports fail without a useful message",
                "serve the endpoint on port 443 (a reverse proxy or load balancer in front) and use that URL",
            ),
            (_, true) => Check::pass(
                "transport",
                "http on a loopback address: fine for local clients; remote clients cannot reach it",
            ),
            _ => Check::warn(
                "transport",
                format!("http on {host}, not a loopback address"),
                "ChatGPT, claude.ai and the MCP authorization spec require https for anything but loopback, and bearer tokens would cross the network in clear",
                "put TLS in front (docs/deploy: Caddy, nginx, an ingress, or a tunnel) and use the https URL; for mcpgate set public_url to it",
            ),
        });
    }

    async fn post_initialize(
        &self,
        url: &str,
        token: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Answer, String> {
        let body = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion": LEGACY_VERSION, "capabilities": {},
            "clientInfo": {"name": "mcpgate-doctor", "version": env!("CARGO_PKG_VERSION")}}});
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        match request.send().await {
            Ok(response) => Ok(Answer::read(response).await),
            Err(e) => Err(http::reason(&e)),
        }
    }

    /// `/mcp` must answer itself, and `/mcp/` (what some users paste) should
    /// not redirect: a redirected POST loses its body or its Authorization.
    async fn redirects(&mut self, answer: &Answer) {
        if (300..400).contains(&answer.status) {
            let to = answer.header("location").unwrap_or("?").to_owned();
            self.report.push(Check::fail(
                "path.redirect",
                format!("{} redirects ({}) to {to}", self.url, answer.status),
                "MCP clients do not follow redirects on POST (or drop the Authorization header across them), and the token's audience is the URL they were given",
                format!("give clients the final URL ({to}), or make the proxy serve this path without a redirect (e.g. no trailing-slash or http→https redirect on the MCP path)"),
            ));
            return;
        }
        if matches!(answer.status, 404 | 405) {
            self.report.push(Check::fail(
                "path.redirect",
                format!("{} answered {} to an MCP POST", self.url, answer.status),
                "no Streamable HTTP endpoint at this path",
                "use the MCP endpoint's full URL (mcpgate and most servers: https://host/mcp); a reverse proxy must forward that path unchanged",
            ));
            return;
        }
        let mut other = self.url.clone();
        let path = other.path().to_owned();
        match path.strip_suffix('/') {
            Some(trimmed) if !trimmed.is_empty() => other.set_path(trimmed),
            Some(_) => {}
            None => other.set_path(&format!("{path}/")),
        }
        if other == self.url {
            self.report
                .push(Check::pass("path.redirect", "answers without a redirect"));
            return;
        }
        match self.post_initialize(other.as_str(), None, None).await {
            Ok(a) if (300..400).contains(&a.status) => self.report.push(Check::warn(
                "path.redirect",
                format!("{} answers, but {other} redirects ({}) to {}", self.url, a.status, a.header("location").unwrap_or("?")),
                "users paste the URL with or without the trailing slash; clients do not follow a redirected POST",
                format!("serve both {} and {other} without a redirect, or publish only the one that answers", self.url),
            )),
            _ => self.report.push(Check::pass(
                "path.redirect",
                format!("{} and {other} answer without a redirect", self.url),
            )),
        }
    }

    /// The 401 and its `WWW-Authenticate`. False when there is no challenge
    /// to follow (open server, or a broken answer already reported).
    fn challenge(&mut self, answer: &Answer, learned: &mut Learned) -> bool {
        if answer.status == 200 {
            learned.open = true;
            self.report.push(Check::warn(
                "challenge",
                "the endpoint answered initialize without a token",
                "no authorization: anyone who finds the URL can call its tools, and ChatGPT/Claude will not show a sign-in",
                "put OAuth in front (mcpgate serve with auth.mode local, proxy, bridge or resource), unless this server is meant to be public",
            ));
            return false;
        }
        if answer.status != 401 {
            if !(300..400).contains(&answer.status) && !matches!(answer.status, 404 | 405) {
                self.report.push(Check::fail(
                    "challenge",
                    format!("an MCP request without a token got HTTP {}, not 401: {}", answer.status, answer.excerpt()),
                    "clients start authorization only on a 401 with WWW-Authenticate (MCP authorization, RFC 9728 §5.1)",
                    "answer unauthenticated MCP requests with 401 and WWW-Authenticate: Bearer resource_metadata=\"…\"",
                ));
            }
            return false;
        }
        let Some(header) = answer.header("www-authenticate") else {
            self.report.push(Check::fail(
                "challenge",
                "401 without WWW-Authenticate",
                "clients cannot find the authorization server without the challenge's resource_metadata (and a proxy may strip the header, or CORS may hide it)",
                "send WWW-Authenticate: Bearer resource_metadata=\"https://host/.well-known/oauth-protected-resource/mcp\", scope=\"…\" with the 401",
            ));
            return true;
        };
        let params = parse_bearer(header);
        let Some(params) = params else {
            self.report.push(Check::fail(
                "challenge",
                format!("WWW-Authenticate is not a Bearer challenge: {header}"),
                "MCP clients look for a Bearer challenge",
                "answer with WWW-Authenticate: Bearer resource_metadata=\"…\", scope=\"…\"",
            ));
            return true;
        };
        learned.challenge_scopes = params
            .iter()
            .find(|p| p.name == "scope")
            .map(|p| p.value.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let metadata = params.iter().find(|p| p.name == "resource_metadata");
        self.report.push(match metadata {
            Some(p) if !p.quoted => Check::fail(
                "challenge",
                format!("resource_metadata is not quoted: {header}"),
                "a URL is not an RFC 9110 token, so an unquoted value is malformed; several clients cut it at the first ':' or '/' and never find the metadata",
                "quote every value: resource_metadata=\"https://…\"",
            ),
            None => Check::warn(
                "challenge",
                "401 with a Bearer challenge but no resource_metadata",
                "clients then guess the metadata URL from the well-known path; older ones give up",
                "add resource_metadata=\"<the protected-resource metadata URL>\" to the challenge",
            ),
            Some(_) if learned.challenge_scopes.is_empty() => Check::warn(
                "challenge",
                "401 with a quoted resource_metadata but no scope",
                "without scope clients request every scopes_supported entry (Claude) or none, and get more or less than the tools need",
                "add scope=\"…\" with the scopes the tools need (never offline_access) to the challenge",
            ),
            Some(_) if learned.challenge_scopes.iter().any(|s| s == "offline_access") => Check::warn(
                "challenge",
                format!("the challenge's scope {:?} includes offline_access", learned.challenge_scopes),
                "MCP 2026-07-28: offline_access belongs to the authorization server, never in the resource's challenge or metadata; clients then ask for it at resources that cannot grant it",
                "list only the scopes the tools need in the challenge; the authorization server decides about refresh tokens",
            ),
            Some(_) => Check::pass(
                "challenge",
                format!("401 with quoted resource_metadata and scope {:?}", learned.challenge_scopes),
            ),
        });
        true
    }

    /// RFC 9728 protected-resource metadata; returns its URL when found.
    async fn prm(&mut self, answer: &Answer, learned: &mut Learned) -> Option<String> {
        let from_challenge = answer
            .header("www-authenticate")
            .and_then(parse_bearer)
            .and_then(|params| {
                params
                    .into_iter()
                    .find(|p| p.name == "resource_metadata")
                    .map(|p| p.value)
            });
        let mut candidates = prm_well_known(&self.url);
        if let Some(url) = &from_challenge {
            candidates.retain(|c| c != url);
            candidates.insert(0, url.clone());
        }
        let mut failures = Vec::new();
        let mut found = None;
        for candidate in &candidates {
            match self.get(candidate).await {
                Ok(a) if a.status == 200 => match a.json() {
                    Some(v) if v.is_object() => {
                        found = Some((candidate.clone(), v));
                        break;
                    }
                    _ => failures.push(format!("{candidate} answered 200 but not a JSON object")),
                },
                Ok(a) => failures.push(format!("{candidate} answered {}", a.status)),
                Err(e) => failures.push(format!("{candidate}: {e}")),
            }
        }
        let public_url_fix = format!(
            "make the server's public URL the one clients use: for mcpgate, public_url = \"{}\"; behind a proxy, forward the original Host",
            self.url.origin().ascii_serialization()
        );
        let Some((prm_url, prm)) = found else {
            self.report.push(Check::fail(
                "prm.fetch",
                "no protected-resource metadata",
                failures.join("; "),
                format!("serve RFC 9728 metadata at {} with resource = {} and authorization_servers, and name it in the 401's resource_metadata", candidates.first().cloned().unwrap_or_default(), self.url),
            ));
            return None;
        };
        if let Some(named) = from_challenge.filter(|named| *named != prm_url) {
            self.report.push(Check::fail(
                "prm.fetch",
                format!("the 401 names {named}, which does not answer; the metadata is at {prm_url}"),
                format!("{}: the server advertises another address than the one used (a wrong public URL), so clients following the challenge never find the metadata", failures.join("; ")),
                public_url_fix.clone(),
            ));
        } else {
            self.report
                .push(Check::pass("prm.fetch", format!("read {prm_url}")));
        }
        let resource = prm["resource"].as_str().unwrap_or_default().to_owned();
        let used = self.url.as_str().to_owned();
        self.report.push(if resource == used {
            Check::pass("prm.resource", format!("resource is {resource}, the URL used"))
        } else if resource.is_empty() {
            Check::fail(
                "prm.resource",
                "the metadata has no resource",
                "RFC 9728 requires resource; clients use it as the token's audience (RFC 8707 resource=)",
                format!("set resource = {used}"),
            )
        } else {
            let same_origin = Url::parse(&resource).is_ok_and(|r| r.origin() == self.url.origin());
            let cause = if resource.trim_end_matches('/') == used.trim_end_matches('/') {
                format!("resource {resource} differs from the URL used ({used}) only by a trailing slash; clients compare exactly and request tokens for one while the server expects the other")
            } else if same_origin {
                format!("resource {resource} is another path than the URL used ({used})")
            } else {
                format!("resource {resource} names another host than the URL used ({used}): the server believes it is reached elsewhere (a wrong public URL behind a proxy), so tokens get the wrong audience and clients refuse the metadata (RFC 9728 §3.3)")
            };
            Check::fail(
                "prm.resource",
                format!("resource {resource} is not the URL used, {used}"),
                cause,
                public_url_fix,
            )
        });
        learned.issuers = prm["authorization_servers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if learned.issuers.is_empty() {
            self.report.push(Check::fail(
                "prm.authorization_servers",
                "the metadata lists no authorization_servers",
                "clients cannot find where to sign in",
                "list the authorization server's issuer URL in authorization_servers",
            ));
        } else {
            self.report.push(Check::pass(
                "prm.authorization_servers",
                format!("authorization server {}", learned.issuers[0]),
            ));
        }
        Some(prm_url)
    }

    async fn get(&self, url: &str) -> Result<Answer, String> {
        match self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
        {
            Ok(r) => Ok(Answer::read(r).await),
            Err(e) => Err(http::reason(&e)),
        }
    }
}

/// RFC 9728 §3.1: the well-known URL with the resource's path appended,
/// then the origin's root document (what clients try without a challenge).
fn prm_well_known(url: &Url) -> Vec<String> {
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    let mut urls = vec![format!(
        "{origin}/.well-known/oauth-protected-resource{path}"
    )];
    if !path.is_empty() {
        urls.push(format!("{origin}/.well-known/oauth-protected-resource"));
    }
    urls
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

mod authorization;

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge_of(value: &str) -> (bool, crate::doctor::Check) {
        let mut report = Report::new("test");
        let mut run = Run {
            client: reqwest::Client::new(),
            url: Url::parse("https://h.example/mcp").unwrap(),
            origin: String::new(),
            report: &mut report,
        };
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("www-authenticate", value.parse().unwrap());
        let answer = Answer {
            status: 401,
            headers,
            body: Vec::new(),
        };
        let followed = run.challenge(&answer, &mut Learned::default());
        (followed, report.checks[0].clone())
    }

    #[test]
    fn the_challenge_is_read_like_a_strict_client_would() {
        use crate::doctor::Outcome;
        let (followed, check) =
            challenge_of(r#"Bearer resource_metadata="https://h.example/m", scope="a b""#);
        assert!(followed);
        assert_eq!(check.outcome, Outcome::Pass);
        let (_, check) = challenge_of(
            r#"Bearer resource_metadata="https://h.example/m", scope="a offline_access""#,
        );
        assert_eq!(check.outcome, Outcome::Warn);
        assert!(check.cause.unwrap().contains("offline_access"));
        let (_, check) = challenge_of(r#"Bearer resource_metadata="https://h.example/m""#);
        assert_eq!(check.outcome, Outcome::Warn);
        let (_, check) = challenge_of("Bearer scope=\"a\"");
        assert_eq!(check.outcome, Outcome::Warn);
        assert!(check.summary.contains("no resource_metadata"));
        let (_, check) = challenge_of("Basic realm=\"x\"");
        assert_eq!(check.outcome, Outcome::Fail);
    }

    #[test]
    fn well_known_urls_insert_the_path() {
        let url = Url::parse("https://h.example/mcp").unwrap();
        assert_eq!(
            prm_well_known(&url),
            [
                "https://h.example/.well-known/oauth-protected-resource/mcp",
                "https://h.example/.well-known/oauth-protected-resource"
            ]
        );
        assert!(is_loopback("127.0.0.1") && is_loopback("[::1]") && is_loopback("localhost"));
        assert!(!is_loopback("10.0.0.1"));
    }
}
