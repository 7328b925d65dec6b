//! The later checks of [`super::check`]: the authorization server's
//! metadata, a throwaway registration, CORS for browser clients, the token,
//! and the 2026-07-28 `server/discover`.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{EndpointOptions, Learned, MODERN_VERSION, Run, token};
use crate::doctor::{Check, http::Answer, token::Expectations};

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Run<'_> {
    /// RFC 8414 / OIDC discovery of the first authorization server, and what
    /// the clients need from it.
    pub(super) async fn as_metadata(&mut self, learned: &mut Learned) {
        let issuer = learned.issuers[0].clone();
        let urls = crate::auth::verify::discovery_urls(&issuer);
        let mut last = format!("{issuer} is not a URL");
        let mut found = None;
        for url in &urls {
            match self.get(url).await {
                Ok(a) if a.status == 200 => match a.json() {
                    Some(v) if v.is_object() => {
                        found = Some((url.clone(), v));
                        break;
                    }
                    _ => last = format!("{url} answered 200 but not a JSON object"),
                },
                Ok(a) => last = format!("{url} answered {}", a.status),
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        let Some((meta_url, meta)) = found else {
            self.report.push(Check::fail(
                "as.fetch",
                format!("no authorization-server metadata for {issuer}"),
                format!("tried {}; last: {last}", urls.join(", ")),
                "serve RFC 8414 metadata at /.well-known/oauth-authorization-server (path-inserted for an issuer with a path) or OIDC discovery, and list exactly that issuer in the protected-resource metadata",
            ));
            return;
        };
        self.report
            .push(Check::pass("as.fetch", format!("read {meta_url}")));
        let named = meta["issuer"].as_str().unwrap_or_default().to_owned();
        self.report.push(if named == issuer {
            Check::pass("as.issuer", format!("issuer {named} matches"))
        } else {
            Check::fail(
                "as.issuer",
                format!("the metadata names issuer {named:?}, fetched for {issuer}"),
                "RFC 8414 §3.3: clients must reject metadata whose issuer differs from the URL they derived it from (mix-up defence); a trailing slash counts",
                format!("make authorization_servers in the protected-resource metadata exactly {named:?}, or the issuer the same as the discovery URL's base"),
            )
        });
        learned.issuers.push(named);
        let methods = strings(&meta["code_challenge_methods_supported"]);
        self.report.push(if methods.iter().any(|m| m == "S256") {
            Check::pass("as.pkce", "PKCE S256 advertised")
        } else {
            Check::fail(
                "as.pkce",
                format!("code_challenge_methods_supported is {methods:?}"),
                "MCP clients must refuse to authorize when the metadata does not list S256 (MCP authorization, PKCE)",
                "support PKCE S256 and list it in code_challenge_methods_supported",
            )
        });
        let dcr = meta["registration_endpoint"].is_string();
        let cimd = meta["client_id_metadata_document_supported"] == json!(true);
        self.report.push(match (dcr, cimd) {
            (true, true) => Check::pass("as.registration", "DCR and Client ID Metadata Documents"),
            (true, false) => Check::pass(
                "as.registration",
                "DCR only: Claude, VS Code and ChatGPT fall back from CIMD to DCR",
            ),
            (false, true) => Check::warn(
                "as.registration",
                "CIMD only, no registration_endpoint",
                "Cursor, Kiro and GitHub Copilot CLI register only by DCR (2026): they cannot connect",
                "enable dynamic client registration (registration_endpoint), or give those users a pre-registered client id",
            ),
            (false, false) => Check::fail(
                "as.registration",
                "neither registration_endpoint nor client_id_metadata_document_supported",
                "clients cannot obtain a client id by themselves; each user must paste a pre-registered one (ChatGPT and Cursor have no field for it in most plans)",
                "enable DCR at the authorization server (Keycloak: client registration policies; Auth0: OIDC Dynamic Application Registration; Okta/Entra have none — use mcpgate bridge or proxy mode), or support CIMD",
            ),
        });
        self.report.push(
            if meta["authorization_response_iss_parameter_supported"] == json!(true) {
                Check::pass("as.iss_param", "iss in authorization responses (RFC 9207)")
            } else {
                Check::warn(
                    "as.iss_param",
                    "authorization_response_iss_parameter_supported is not true",
                    "MCP 2026-07-28 clients check iss in the authorization response against mix-up attacks; without it they fall back to weaker checks",
                    "return iss in authorization responses (RFC 9207) and advertise authorization_response_iss_parameter_supported: true",
                )
            },
        );
        let auth_methods = strings(&meta["token_endpoint_auth_methods_supported"]);
        let has = |m: &str| auth_methods.iter().any(|a| a == m);
        let signing = strings(&meta["token_endpoint_auth_signing_alg_values_supported"]);
        self.report.push(if has("private_key_jwt") && !signing.iter().any(|a| a == "RS256") {
            Check::warn(
                "as.auth_methods",
                format!("private_key_jwt without RS256 in token_endpoint_auth_signing_alg_values_supported ({signing:?})"),
                "ChatGPT signs its client assertions with RS256; a server that does not list it may refuse them",
                "accept RS256 client assertions and list RS256 in token_endpoint_auth_signing_alg_values_supported",
            )
        } else if !cimd || has("private_key_jwt") && has("none") {
            Check::pass(
                "as.auth_methods",
                format!("token endpoint auth methods {auth_methods:?}"),
            )
        } else if !has("private_key_jwt") {
            Check::warn(
                "as.auth_methods",
                format!("CIMD without private_key_jwt ({auth_methods:?})"),
                "ChatGPT's client metadata document declares token_endpoint_auth_method private_key_jwt; an AS that accepts only none never gets a ChatGPT grant",
                "accept private_key_jwt (RFC 7523, RS256 via the document's jwks_uri) and list it with token_endpoint_auth_signing_alg_values_supported",
            )
        } else {
            Check::warn(
                "as.auth_methods",
                format!("CIMD without \"none\" ({auth_methods:?})"),
                "Codex and opencode use CIMD only when \"none\" is listed; otherwise they fall back to DCR",
                "list \"none\" in token_endpoint_auth_methods_supported for public CIMD clients",
            )
        });
        learned.metadata = Some(meta);
    }

    /// A throwaway registration the way Cursor does it, removed again when
    /// the server offers RFC 7592 management.
    pub(super) async fn dcr(&mut self, options: &EndpointOptions, learned: &Learned) {
        let Some(endpoint) = learned
            .metadata
            .as_ref()
            .and_then(|m| m["registration_endpoint"].as_str())
            .map(str::to_owned)
        else {
            self.report
                .push(Check::skip("dcr", "no registration_endpoint to try"));
            return;
        };
        if !options.register {
            self.report
                .push(Check::skip("dcr", "not tried (--no-register)"));
            return;
        }
        let body = json!({
            "client_name": "mcpgate doctor (throwaway, safe to delete)",
            "redirect_uris": ["http://127.0.0.1:33418/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        });
        let answer = match self.client.post(&endpoint).json(&body).send().await {
            Ok(r) => Answer::read(r).await,
            Err(e) => {
                self.report.push(Check::fail(
                    "dcr",
                    format!("{endpoint} did not answer"),
                    crate::doctor::http::reason(&e),
                    "make the registration endpoint reachable from the internet",
                ));
                return;
            }
        };
        let registered = answer.json().filter(|v| v["client_id"].is_string());
        let Some(registered) = registered.filter(|_| matches!(answer.status, 200 | 201)) else {
            self.report.push(Check::fail(
                "dcr",
                format!("registration refused: HTTP {}", answer.status),
                format!("{endpoint} answered {}", answer.oauth_error()),
                "allow anonymous DCR for public clients with loopback redirect URIs (Keycloak: Client Registration → Anonymous access policies, Trusted Hosts; Auth0: enable Dynamic Client Registration and a domain-level connection), or use mcpgate local/proxy/bridge mode, which registers clients itself",
            ));
            return;
        };
        let mut summary = format!(
            "registered a throwaway public client ({})",
            registered["client_id"].as_str().unwrap_or_default()
        );
        if let (Some(uri), Some(access)) = (
            registered["registration_client_uri"].as_str(),
            registered["registration_access_token"].as_str(),
        ) && let Ok(r) = self.client.delete(uri).bearer_auth(access).send().await
            && r.status().is_success()
        {
            summary.push_str(" and deleted it (RFC 7592)");
        }
        self.report.push(Check::pass("dcr", summary));
    }

    /// Browser clients (the Inspector's web UI, web IDEs) need CORS on the
    /// endpoint, its 401 headers exposed, and CORS on the metadata.
    pub(super) async fn cors(&mut self, prm_url: Option<&str>) {
        let origin = self.origin.clone();
        let mut problems = Vec::new();
        let preflight = self
            .client
            .request(reqwest::Method::OPTIONS, self.url.as_str())
            .header("origin", &origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,mcp-protocol-version",
            )
            .send()
            .await;
        match preflight {
            Ok(r) => {
                let a = Answer::read(r).await;
                if !allows(&a, &origin) {
                    problems.push(format!(
                        "the preflight from {origin} got HTTP {} without Access-Control-Allow-Origin for it",
                        a.status
                    ));
                } else if !a.header("access-control-allow-headers").is_some_and(|h| {
                    let h = h.to_ascii_lowercase();
                    h.contains('*') || h.contains("authorization")
                }) {
                    problems
                        .push("the preflight does not allow the Authorization header".to_owned());
                }
            }
            Err(e) => problems.push(format!(
                "the preflight failed: {}",
                crate::doctor::http::reason(&e)
            )),
        }
        if problems.is_empty()
            && let Ok(a) = self
                .post_initialize(self.url.as_str(), None, Some(&origin))
                .await
            && a.status == 401
            && !a.header("access-control-expose-headers").is_some_and(|h| {
                h.to_ascii_lowercase().contains("www-authenticate") || h.contains('*')
            })
        {
            problems.push("the 401 does not expose WWW-Authenticate (Access-Control-Expose-Headers), so a browser client cannot read the challenge".to_owned());
        }
        if let Some(prm_url) = prm_url
            && let Ok(r) = self
                .client
                .get(prm_url)
                .header("origin", &origin)
                .send()
                .await
            && !allows(&Answer::read(r).await, &origin)
        {
            problems.push(
                "the protected-resource metadata has no Access-Control-Allow-Origin".to_owned(),
            );
        }
        self.report.push(if problems.is_empty() {
            Check::pass("cors", format!("browser clients from {origin} may call it"))
        } else {
            Check::warn(
                "cors",
                format!("browser clients from {origin} are blocked"),
                format!("{} (ChatGPT, Claude, VS Code and Cursor call from their servers or apps and are not affected)", problems.join("; ")),
                format!("answer CORS preflights for the browser origins you support and expose WWW-Authenticate and Mcp-Session-Id; for mcpgate add {origin:?} to http.allowed_origins"),
            )
        });
    }

    /// The token to check and call with: given, or fetched with the
    /// client-credentials grant.
    pub(super) async fn token(
        &mut self,
        options: &EndpointOptions,
        learned: &Learned,
    ) -> Option<SecretString> {
        let token = match (&options.token, &options.client_credentials) {
            (Some(t), _) => t.clone(),
            (None, Some(credentials)) => {
                let Some(endpoint) = learned
                    .metadata
                    .as_ref()
                    .and_then(|m| m["token_endpoint"].as_str())
                else {
                    self.report.push(Check::skip(
                        "token.fetch",
                        "no token_endpoint in the metadata",
                    ));
                    return None;
                };
                match token::fetch_client_credentials(
                    &self.client,
                    endpoint,
                    credentials,
                    self.url.as_str(),
                    &learned.challenge_scopes,
                )
                .await
                {
                    Ok(t) => {
                        self.report.push(Check::pass(
                            "token.fetch",
                            format!(
                                "client credentials of {} gave a token",
                                credentials.client_id
                            ),
                        ));
                        t
                    }
                    Err(reason) => {
                        self.report.push(Check::fail(
                            "token.fetch",
                            "the client-credentials grant failed",
                            reason,
                            "allow the client_credentials grant for this client at the authorization server and check its secret; the resource parameter names this MCP URL",
                        ));
                        return None;
                    }
                }
            }
            (None, None) => {
                self.report.push(Check::skip(
                    "token",
                    "no token given (--token FILE|- or --client-credentials FILE|-)",
                ));
                return None;
            }
        };
        let expected = Expectations {
            resource: self.url.as_str().to_owned(),
            issuers: learned.issuers.clone(),
            scopes: learned.challenge_scopes.clone(),
        };
        for check in token::check(token.expose_secret(), &expected, options.now) {
            self.report.push(check);
        }
        match self
            .post_initialize(self.url.as_str(), Some(token.expose_secret()), None)
            .await
        {
            Ok(a) if a.status == 200 => self.report.push(Check::pass(
                "token.accepted",
                "the server accepts the token",
            )),
            Ok(a) => {
                let challenge = a.header("www-authenticate").unwrap_or_default().to_owned();
                self.report.push(Check::fail(
                    "token.accepted",
                    format!("the server answered {} to the token", a.status),
                    format!("{} {challenge}", a.oauth_error()).trim().to_owned(),
                    "see the token checks above: a token for another audience or issuer, an expired one, or missing scopes; fix it at the authorization server",
                ));
            }
            Err(e) => self.report.push(Check::fail(
                "token.accepted",
                "no answer to the call with the token",
                e,
                "check that the server is up",
            )),
        }
        Some(token)
    }

    /// `server/discover` (MCP 2026-07-28): the stateless revision's entry.
    /// `token` is `Some("")` for an open server.
    pub(super) async fn discover(&mut self, token: Option<&str>) {
        let Some(token) = token else {
            self.report.push(Check::skip(
                "discover",
                "server/discover needs a token here; pass --token or --client-credentials",
            ));
            return;
        };
        let body = json!({"jsonrpc":"2.0","id":2,"method":"server/discover","params":{"_meta":{
            "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
            "io.modelcontextprotocol/clientInfo": {"name":"mcpgate-doctor","version":env!("CARGO_PKG_VERSION")},
            "io.modelcontextprotocol/clientCapabilities": {}}}});
        let mut request = self
            .client
            .post(self.url.as_str())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", MODERN_VERSION)
            .header("mcp-method", "server/discover")
            .json(&body);
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        let answer = match request.send().await {
            Ok(r) => Answer::read(r).await,
            Err(e) => {
                self.report.push(Check::fail(
                    "discover",
                    "no answer to server/discover",
                    crate::doctor::http::reason(&e),
                    "check that the server is up",
                ));
                return;
            }
        };
        let message = answer.rpc_message();
        let result = message.as_ref().and_then(|m| m.get("result"));
        let error = message.as_ref().and_then(|m| m.get("error"));
        self.report.push(match (answer.status, result, error) {
            (200, Some(result), _) => {
                let versions = strings(&result["supportedVersions"]);
                Check::pass(
                    "discover",
                    if versions.is_empty() {
                        "server/discover answers (2026-07-28)".to_owned()
                    } else {
                        format!("server/discover answers; versions {versions:?}")
                    },
                )
            }
            (_, _, Some(e)) if e["code"] == json!(-32601) => Check::warn(
                "discover",
                "server/discover is unknown (-32601)",
                "the server speaks only the sessionful revisions (≤ 2025-11-25); 2026-07-28 clients fall back to initialize, or fail when they do not",
                "upgrade the MCP server (or put mcpgate in front, which serves both revisions on one URL)",
            ),
            (401 | 403, _, _) => Check::skip(
                "discover",
                format!("not checked: the server refused the token ({}), see token.accepted", answer.status),
            ),
            (status, _, _) => Check::warn(
                "discover",
                format!("server/discover answered HTTP {status}"),
                answer.oauth_error(),
                "serve the 2026-07-28 stateless revision (server/discover, Mcp-Method headers) beside the older ones",
            ),
        });
    }
}

fn allows(a: &Answer, origin: &str) -> bool {
    a.header("access-control-allow-origin")
        .is_some_and(|v| v == "*" || v.trim_end_matches('/') == origin.trim_end_matches('/'))
}
