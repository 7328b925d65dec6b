//! The upstream's authorization server: discovery (RFC 9728, then RFC 8414
//! or OpenID metadata, fetched through the SSRF fence), mcpgate's client
//! there (configured, metadata document, or RFC 7591 registration shared by
//! replicas), and the token endpoint.

use std::sync::Arc;

use secrecy::ExposeSecret;
use url::Url;

use super::{
    CLIENT_CONTEXT, ClientCredentials, Discovered, ErrorAnswer, METADATA_MAX_BYTES,
    ResourceMetadata, ServerMetadata, TokenAnswer, UserAuth, UserAuthError,
};
use crate::{oauth::fenced_fetch::FetchError, upstream::locks::lock};

impl UserAuth {
    /// RFC 9728 metadata of the upstream (or the configured issuer), then
    /// the issuer's RFC 8414 / OpenID metadata; cached per process.
    pub(super) async fn discover(&self, upstream: &str) -> Result<Arc<Discovered>, UserAuthError> {
        if let Some(d) = lock(&self.discovered).get(upstream) {
            return Ok(d.clone());
        }
        let target = self.target(upstream)?;
        let (issuer, listed_scopes) = match &target.settings.authorization_server {
            Some(issuer) => (issuer.to_string(), Vec::new()),
            None => {
                let prm = self.resource_metadata(&target.url).await?;
                let issuer = prm
                    .authorization_servers
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        UserAuthError::Discovery(
                            "the protected-resource metadata names no authorization server".into(),
                        )
                    })?;
                (issuer, prm.scopes_supported)
            }
        };
        let server = self.server_metadata(&issuer).await?;
        if server
            .code_challenge_methods_supported
            .as_ref()
            .is_some_and(|m| !m.iter().any(|x| x == "S256"))
        {
            return Err(UserAuthError::Discovery(
                "the authorization server does not support PKCE S256".into(),
            ));
        }
        let scopes = if target.settings.scopes.is_empty() {
            listed_scopes
        } else {
            target.settings.scopes.clone()
        };
        let found = Arc::new(Discovered { server, scopes });
        lock(&self.discovered).insert(upstream.to_owned(), found.clone());
        Ok(found)
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

    async fn resource_metadata(&self, resource: &Url) -> Result<ResourceMetadata, UserAuthError> {
        let path = resource.path().trim_end_matches('/');
        let origin = resource.origin().ascii_serialization();
        let mut last = None;
        for candidate in [
            format!("{origin}/.well-known/oauth-protected-resource{path}"),
            format!("{origin}/.well-known/oauth-protected-resource"),
        ] {
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
            return Ok(ClientCredentials {
                client_id: id.clone(),
                client_secret: target
                    .settings
                    .client_secret
                    .as_ref()
                    .map(|s| s.expose_secret().to_owned()),
            });
        }
        if server.client_id_metadata_document_supported
            && self.public_origin.starts_with("https://")
        {
            return Ok(ClientCredentials {
                client_id: self.client_metadata_url(),
                client_secret: None,
            });
        }
        if let Some(sealed) = self.store.upstream_client(upstream, &server.issuer).await? {
            return Ok(self.sealer.open_json(CLIENT_CONTEXT, &sealed)?);
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
        let client: ClientCredentials = response
            .json()
            .await
            .map_err(|_| UserAuthError::Registration("not a registration answer".into()))?;
        let sealed = self.sealer.seal_json(CLIENT_CONTEXT, &client)?;
        // Another replica may have registered first: everyone uses the stored one.
        let kept = self
            .store
            .save_upstream_client(upstream, &server.issuer, &sealed, self.clock.now())
            .await?;
        Ok(self.sealer.open_json(CLIENT_CONTEXT, &kept)?)
    }

    /// Client authentication: HTTP Basic with a secret, else the client id alone.
    pub(super) fn authenticated(
        &self,
        request: reqwest::RequestBuilder,
        client: &ClientCredentials,
        form: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let request = match &client.client_secret {
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
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|_| UserAuthError::Refused("the token answer is not a token".into()));
        }
        let reason = serde_json::from_slice::<ErrorAnswer>(&body)
            .map(|e| match e.error_description {
                Some(d) => format!("{}: {d}", e.error),
                None => e.error,
            })
            .unwrap_or_else(|_| format!("HTTP {status}"));
        // Shown on a page and logged: only visible characters, bounded.
        let reason: String = reason
            .chars()
            .filter(|c| !crate::visible_text::is_hidden_or_control(*c))
            .take(300)
            .collect();
        Err(UserAuthError::Refused(reason))
    }
}

/// RFC 6749 §2.3.1: client credentials in Basic are form-urlencoded first.
fn form_urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
