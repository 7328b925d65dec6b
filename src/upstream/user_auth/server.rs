//! The upstream's authorization server: discovery (RFC 9728, then RFC 8414
//! or OpenID metadata, fetched through the SSRF fence), mcpgate's client
//! there (configured, metadata document, or RFC 7591 registration shared by
//! replicas), and the token endpoint.

use std::{collections::HashMap, sync::Arc};

use secrecy::ExposeSecret;
use url::Url;

use super::{
    CLIENT_CONTEXT, ClientCredentials, DISCOVERY_TTL_SECS, Discovered, ErrorAnswer,
    METADATA_MAX_BYTES, ResourceMetadata, ServerMetadata, TokenAnswer, UserAuth, UserAuthError,
};
use crate::{
    auth::challenge::parse_bearer, oauth::fenced_fetch::FetchError, upstream::locks::lock,
};

impl UserAuth {
    /// The upstream's authorization server, as MCP 2025-11-25 finds it: the
    /// configured issuer; else the RFC 9728 metadata its 401 names
    /// (`resource_metadata`, with the challenge's `scope` first), or the
    /// well-known URLs; each server it lists in turn (RFC 8414 / OpenID
    /// metadata); and for an upstream with no such metadata (2025-03-26)
    /// the server at its origin. Kept for an hour per process; a failure is
    /// not kept.
    pub(super) async fn discover(&self, upstream: &str) -> Result<Arc<Discovered>, UserAuthError> {
        let now = self.clock.now();
        if let Some((at, d)) = lock(&self.discovered).get(upstream)
            && now.saturating_sub(*at) < DISCOVERY_TTL_SECS
        {
            return Ok(d.clone());
        }
        let target = self.target(upstream)?;
        let configured_url = resource_uri(&target.url);
        let (server, listed_scopes, resource) = match &target.settings.authorization_server {
            Some(issuer) => (
                self.server_metadata(issuer.as_str()).await?,
                Vec::new(),
                configured_url,
            ),
            None => {
                let challenge = self.challenge(&target.url).await;
                // The challenge's scope is what the upstream asks for now.
                let challenged: Option<Vec<String>> = challenge
                    .get("scope")
                    .map(|s| s.split_whitespace().map(str::to_owned).collect());
                match self
                    .resource_metadata(&target.url, challenge.get("resource_metadata"))
                    .await
                {
                    Ok(prm) => {
                        // RFC 9728 §3.3: the metadata names the resource it
                        // is for; send exactly that (servers compare
                        // `resource` as a string) when it is this URL, give
                        // or take a trailing slash.
                        let resource = prm
                            .resource
                            .clone()
                            .filter(|r| {
                                r.trim_end_matches('/') == configured_url.trim_end_matches('/')
                            })
                            .unwrap_or(configured_url);
                        let server = self.first_server(&prm.authorization_servers).await?;
                        (server, challenged.unwrap_or(prm.scopes_supported), resource)
                    }
                    // 2025-03-26: no protected-resource metadata; the
                    // authorization server is the upstream's origin.
                    Err(no_prm) => {
                        let origin = target.url.origin().ascii_serialization();
                        let server = match self.server_metadata(&origin).await {
                            Ok(m) => m,
                            Err(_) => self.default_endpoints(&origin).map_err(|_| no_prm)?,
                        };
                        (server, challenged.unwrap_or_default(), configured_url)
                    }
                }
            }
        };
        if server
            .code_challenge_methods_supported
            .as_ref()
            .is_some_and(|m| !m.iter().any(|x| x == "S256"))
        {
            return Err(UserAuthError::Discovery(
                "the authorization server does not support PKCE S256".into(),
            ));
        }
        let mut scopes = if target.settings.scopes.is_empty() {
            listed_scopes
        } else {
            target.settings.scopes.clone()
        };
        // Entra ID, Okta and Auth0 issue a refresh token only for
        // `offline_access`; without one the user would connect again at every
        // expiry. Asked for when the server lists it (as the MCP SDKs do).
        if !scopes.is_empty()
            && !scopes.iter().any(|s| s == "offline_access")
            && server
                .scopes_supported
                .as_ref()
                .is_some_and(|listed| listed.iter().any(|s| s == "offline_access"))
        {
            scopes.push("offline_access".to_owned());
        }
        let authorize_params = authorize_params(&server.issuer, &target.settings.authorize_params);
        let found = Arc::new(Discovered {
            server,
            scopes,
            resource: target.settings.resource_indicator.then_some(resource),
            authorize_params,
        });
        lock(&self.discovered).insert(upstream.to_owned(), (now, found.clone()));
        Ok(found)
    }

    /// The metadata of the first of `issuers` that has it, in order.
    async fn first_server(&self, issuers: &[String]) -> Result<ServerMetadata, UserAuthError> {
        let mut last = UserAuthError::Discovery(
            "the protected-resource metadata names no authorization server".into(),
        );
        for issuer in issuers {
            match self.server_metadata(issuer).await {
                Ok(m) => return Ok(m),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The parameters of the upstream's `Bearer` challenge to a request
    /// without a token (an `initialize`), if it answers 401 with one.
    async fn challenge(&self, url: &Url) -> HashMap<String, String> {
        let probe = self
            .http
            .post(url.clone())
            .header(
                reqwest::header::ACCEPT,
                "application/json, text/event-stream",
            )
            .json(&serde_json::json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "mcpgate", "version": env!("CARGO_PKG_VERSION")},
                },
            }))
            .send()
            .await;
        match probe {
            Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => r
                .headers()
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(parse_bearer)
                .map(|params| params.into_iter().map(|p| (p.name, p.value)).collect())
                .unwrap_or_default(),
            _ => HashMap::new(),
        }
    }

    /// 2025-03-26's default endpoints at the upstream's origin, for a server
    /// that publishes no metadata at all.
    fn default_endpoints(&self, origin: &str) -> Result<ServerMetadata, UserAuthError> {
        let m = ServerMetadata {
            issuer: origin.to_owned(),
            authorization_endpoint: format!("{origin}/authorize"),
            token_endpoint: format!("{origin}/token"),
            registration_endpoint: Some(format!("{origin}/register")),
            revocation_endpoint: None,
            code_challenge_methods_supported: None,
            client_id_metadata_document_supported: false,
            scopes_supported: None,
            token_endpoint_auth_methods_supported: None,
            authorization_response_iss_parameter_supported: false,
        };
        self.fetcher
            .check_url(&m.authorization_endpoint)
            .map_err(|e| UserAuthError::Discovery(format!("{origin}: {e}")))?;
        Ok(m)
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        what: &'static str,
    ) -> Result<T, FetchError> {
        let url = self.fetcher.check_url(url)?;
        let fetched = self.fetcher.get(&url, METADATA_MAX_BYTES, what).await?;
        serde_json::from_slice(&fetched.body)
            .map_err(|_| FetchError::BadUrl("not the JSON expected"))
    }

    async fn resource_metadata(
        &self,
        resource: &Url,
        named: Option<&String>,
    ) -> Result<ResourceMetadata, UserAuthError> {
        let path = resource.path().trim_end_matches('/');
        let origin = resource.origin().ascii_serialization();
        let mut last = None;
        for candidate in named.cloned().into_iter().chain([
            format!("{origin}/.well-known/oauth-protected-resource{path}"),
            format!("{origin}/.well-known/oauth-protected-resource"),
        ]) {
            match self
                .fetch_json::<ResourceMetadata>(&candidate, "protected-resource metadata")
                .await
            {
                Ok(m) => return Ok(m),
                Err(e) => last = Some(e),
            }
        }
        Err(UserAuthError::Discovery(format!(
            "no protected-resource metadata at {origin}: {}",
            last.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    async fn server_metadata(&self, issuer: &str) -> Result<ServerMetadata, UserAuthError> {
        let parsed = Url::parse(issuer)
            .map_err(|_| UserAuthError::Discovery(format!("{issuer:?} is not a URL")))?;
        let origin = parsed.origin().ascii_serialization();
        let path = parsed.path().trim_end_matches('/');
        let mut last = None;
        for candidate in [
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!("{origin}{path}/.well-known/openid-configuration"),
        ] {
            match self
                .fetch_json::<ServerMetadata>(&candidate, "authorization server metadata")
                .await
            {
                // RFC 8414 §3.3: the document must name the issuer it was asked for.
                Ok(m) if m.issuer.trim_end_matches('/') == issuer.trim_end_matches('/') => {
                    for endpoint in [Some(&m.authorization_endpoint), Some(&m.token_endpoint)]
                        .into_iter()
                        .chain([
                            m.registration_endpoint.as_ref(),
                            m.revocation_endpoint.as_ref(),
                        ])
                        .flatten()
                    {
                        self.fetcher.check_url(endpoint).map_err(|e| {
                            UserAuthError::Discovery(format!("endpoint {endpoint}: {e}"))
                        })?;
                    }
                    return Ok(m);
                }
                Ok(_) => {
                    last = Some("the metadata names another issuer".to_owned());
                }
                Err(e) => last = Some(e.to_string()),
            }
        }
        Err(UserAuthError::Discovery(format!(
            "no metadata for {issuer}: {}",
            last.unwrap_or_default()
        )))
    }

    /// The configured client, else the one registered before (any replica),
    /// else mcpgate's metadata document (https only), else a new registration.
    pub(super) async fn client(
        &self,
        upstream: &str,
        server: &ServerMetadata,
    ) -> Result<ClientCredentials, UserAuthError> {
        let target = self.target(upstream)?;
        if let Some(id) = &target.settings.client_id {
            // Basic unless the server lists only the body method (RFC 8414's
            // default for an absent list is Basic).
            let listed = server.token_endpoint_auth_methods_supported.as_deref();
            let post_only = listed.is_some_and(|m| {
                m.iter().any(|x| x == "client_secret_post")
                    && !m.iter().any(|x| x == "client_secret_basic")
            });
            return Ok(ClientCredentials {
                client_id: id.clone(),
                client_secret: target
                    .settings
                    .client_secret
                    .as_ref()
                    .map(|s| s.expose_secret().to_owned()),
                token_endpoint_auth_method: post_only.then(|| "client_secret_post".to_owned()),
                ..ClientCredentials::default()
            });
        }
        if server.client_id_metadata_document_supported
            && self.public_origin.starts_with("https://")
        {
            return Ok(ClientCredentials {
                client_id: self.client_metadata_url(),
                ..ClientCredentials::default()
            });
        }
        if let Some(sealed) = self.store.upstream_client(upstream, &server.issuer).await? {
            let kept = self.registration(&sealed)?;
            // Made for another `public_url`, or its secret expired: the
            // server would refuse it, so register anew.
            let stale = kept
                .redirect_uri
                .as_deref()
                .is_some_and(|r| r != self.redirect_uri())
                || kept
                    .client_secret_expires_at
                    .is_some_and(|t| t > 0 && t <= self.clock.now());
            if !stale {
                return Ok(kept);
            }
            self.forget_client(upstream, server, &kept).await?;
        }
        let Some(endpoint) = &server.registration_endpoint else {
            return Err(UserAuthError::Registration(
                "the server offers neither registration nor metadata documents; configure [upstreams.user_auth] client_id".into(),
            ));
        };
        let response = self
            .http
            .post(endpoint)
            .json(&serde_json::json!({
                "client_name": "mcpgate",
                "redirect_uris": [self.redirect_uri()],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            }))
            .send()
            .await
            .map_err(|e| UserAuthError::Unreachable(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(UserAuthError::Registration(format!("answered {status}")));
        }
        let mut client: ClientCredentials = response
            .json()
            .await
            .map_err(|_| UserAuthError::Registration("not a registration answer".into()))?;
        client.redirect_uri = Some(self.redirect_uri());
        let sealed = self.sealer.seal_json(CLIENT_CONTEXT, &client)?;
        // Another replica may have registered first: everyone uses the stored one.
        let kept = self
            .store
            .save_upstream_client(upstream, &server.issuer, &sealed, self.clock.now())
            .await?;
        self.registration(&kept)
    }

    /// A registration of mcpgate's as the store keeps it, sealed.
    fn registration(&self, sealed: &str) -> Result<ClientCredentials, UserAuthError> {
        let mut client: ClientCredentials = self.sealer.open_json(CLIENT_CONTEXT, sealed)?;
        client.registered = true;
        Ok(client)
    }

    /// The server answered `invalid_client`: a registration of ours it no
    /// longer knows (expired, its store reset, another redirect URI) is
    /// forgotten, so the next connect registers anew instead of failing for
    /// every user. A configured client is the operator's to fix.
    pub(super) async fn forget_client(
        &self,
        upstream: &str,
        server: &ServerMetadata,
        client: &ClientCredentials,
    ) -> Result<(), UserAuthError> {
        if client.registered {
            tracing::warn!(
                upstream,
                issuer = %server.issuer,
                "the upstream's authorization server no longer accepts mcpgate's registration; registering again on the next connect"
            );
            self.store
                .forget_upstream_client(upstream, &server.issuer)
                .await?;
        }
        Ok(())
    }

    /// Client authentication: the secret in HTTP Basic, or in the body for
    /// `client_secret_post`; without a secret the client id alone. Answers
    /// are asked for as JSON (GitHub answers a form otherwise).
    pub(super) fn authenticated(
        &self,
        request: reqwest::RequestBuilder,
        client: &ClientCredentials,
        form: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let request = request.header(reqwest::header::ACCEPT, "application/json");
        let request = match &client.client_secret {
            Some(secret) if client.secret_in_body() => {
                form.push(("client_id", client.client_id.as_str()));
                form.push(("client_secret", secret.as_str()));
                request
            }
            Some(secret) => request.basic_auth(
                form_urlencode(&client.client_id),
                Some(form_urlencode(secret)),
            ),
            None => {
                form.push(("client_id", client.client_id.as_str()));
                request
            }
        };
        request.form(&form)
    }

    pub(super) async fn token_request(
        &self,
        endpoint: &str,
        client: &ClientCredentials,
        form: &[(&str, &str)],
    ) -> Result<TokenAnswer, UserAuthError> {
        let response = self
            .authenticated(self.http.post(endpoint), client, form)
            .send()
            .await
            .map_err(|e| UserAuthError::Unreachable(e.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| UserAuthError::Unreachable(e.without_url().to_string()))?;
        token_answer(status, &body)
    }
}

/// What a token endpoint's answer means. A token (JSON, or a form as GitHub
/// sends without `Accept`); an OAuth error the server stands by (RFC 6749
/// §5.2: 400 or 401, or GitHub's 200 with `error`), after which a connection
/// is dropped; anything else (5xx, 429, a proxy's page) is a passing failure
/// that leaves the connection as it is.
pub(super) fn token_answer(
    status: reqwest::StatusCode,
    body: &[u8],
) -> Result<TokenAnswer, UserAuthError> {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let form = || -> serde_json::Value {
        url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let fields = json.filter(|v| v.is_object()).unwrap_or_else(form);
    if let Ok(error) = serde_json::from_value::<ErrorAnswer>(fields.clone()) {
        let reason = match error.error_description {
            Some(d) => format!("{}: {d}", error.error),
            None => error.error.clone(),
        };
        // Shown on a page and logged: only visible characters, bounded.
        let reason: String = reason
            .chars()
            .filter(|c| !crate::visible_text::is_hidden_or_control(*c))
            .take(300)
            .collect();
        return Err(match status.as_u16() {
            200..=299 | 400 | 401 if error.error == "invalid_client" => {
                UserAuthError::ClientRejected(reason)
            }
            200..=299 | 400 | 401 => UserAuthError::Refused(reason),
            _ => UserAuthError::Unreachable(format!("answered HTTP {status}: {reason}")),
        });
    }
    if !status.is_success() {
        return Err(UserAuthError::Unreachable(format!(
            "answered HTTP {status}"
        )));
    }
    serde_json::from_value(fields)
        .map_err(|_| UserAuthError::Unreachable("the token answer is not a token".into()))
}

/// The upstream's URL as a `resource` value: as configured, without the
/// slash the URL parser adds to an empty path (`https://mcp.example.com`).
pub(super) fn resource_uri(url: &Url) -> String {
    let text = url.as_str();
    if url.path() == "/" && url.query().is_none() && url.fragment().is_none() {
        text.trim_end_matches('/').to_owned()
    } else {
        text.to_owned()
    }
}

/// RFC 6749 §2.3.1: client credentials in Basic are form-urlencoded first.
fn form_urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Google's authorization server (issuer `https://accounts.google.com`)
/// issues a refresh token only for `access_type=offline`, and again for a
/// user who consented before only with `prompt=consent`; it lists no
/// `offline_access`. Without them the user would connect again every hour.
const GOOGLE_ISSUER: &str = "https://accounts.google.com";

/// The authorization request's extra parameters: the configured ones, and
/// Google's two where the configuration does not name them.
pub(super) fn authorize_params(
    issuer: &str,
    configured: &std::collections::BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = configured
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if issuer.trim_end_matches('/') == GOOGLE_ISSUER {
        for (name, value) in [("access_type", "offline"), ("prompt", "consent")] {
            if !configured.contains_key(name) {
                params.push((name.to_owned(), value.to_owned()));
            }
        }
    }
    params
}
