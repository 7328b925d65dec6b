//! `bridge` mode: the IdP stays the authorization server and issues the
//! tokens; mcpgate fills the gaps MCP clients trip on. It serves RFC 8414
//! metadata on its own origin, registers clients the IdP cannot register
//! itself (Auth0: through the Management API; Keycloak and other IdPs with
//! DCR: relayed), rewrites `/authorize` (`resource` becomes the IdP's
//! `audience`) and relays `/token` without `resource`. Tokens on `/mcp` are
//! checked exactly as in `resource` mode.
//!
//! The IdP only ever sees mcpgate's `/callback` as redirect URI: clients
//! check `iss` in the authorization response against the issuer they
//! discovered (mcpgate), so the browser comes back through mcpgate, which
//! checks the IdP's `iss`, restores the client's `state` and redirect URI and
//! adds its own `iss`.

pub mod http;

use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::{
    auth::{jwks::read_capped, verify},
    config::{BridgeConfig, BridgeRegistrar, ResourceAuthConfig},
    oauth::{
        clients::{AuthMethod, ClientMetadata, find_redirect},
        crypto::{random_token, sha256_b64},
        ratelimit::WindowLimiter,
    },
    store::{BridgeRequestRecord, Store, now_epoch},
};

/// How long a bridged authorization may take at the IdP.
const REQUEST_TTL_SECS: i64 = 600;

const MAX_RESPONSE_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidClientMetadata(String),
    #[error("{0}")]
    InvalidRedirectUri(String),
    #[error("too many registrations; try again later")]
    RateLimited,
    /// The IdP (or its Management API) failed or refused; details are logged only.
    #[error("the identity provider could not complete the request")]
    Upstream(String),
    #[error("cannot set up the bridge: {0}")]
    Setup(String),
}

impl BridgeError {
    pub fn code(&self) -> &'static str {
        match self {
            BridgeError::InvalidRequest(_) => "invalid_request",
            BridgeError::InvalidClientMetadata(_) => "invalid_client_metadata",
            BridgeError::InvalidRedirectUri(_) => "invalid_redirect_uri",
            BridgeError::RateLimited => "slow_down",
            BridgeError::Upstream(_) | BridgeError::Setup(_) => "temporarily_unavailable",
        }
    }
}

/// A relayed answer: the IdP's status and JSON body.
pub struct Relayed {
    pub status: u16,
    pub body: Value,
}

struct ManagementToken {
    token: String,
    expires_at: i64,
}

pub struct Bridge {
    origin: String,
    /// `origin + "/callback"`: the only redirect URI registered at the IdP.
    callback: String,
    store: Store,
    issuer: String,
    audience: Option<String>,
    scopes_supported: Vec<String>,
    authorization_endpoint: String,
    token_endpoint: String,
    revocation_endpoint: Option<String>,
    registration_endpoint: Option<String>,
    jwks_uri: Option<String>,
    registrar: BridgeRegistrar,
    management_token: Mutex<Option<ManagementToken>>,
    registrations: WindowLimiter,
    http: reqwest::Client,
}

impl Bridge {
    /// Read the IdP's discovery once; a misconfigured IdP fails at start.
    pub async fn connect(
        config: &BridgeConfig,
        resource: &ResourceAuthConfig,
        origin: String,
        scopes_supported: Vec<String>,
        store: Store,
    ) -> Result<Bridge, BridgeError> {
        let http = crate::idp::outbound_client().map_err(|e| BridgeError::Setup(e.to_string()))?;
        let meta = verify::discover(&http, &resource.issuer)
            .await
            .map_err(|e| BridgeError::Setup(e.to_string()))?;
        let missing = |what: &str| {
            BridgeError::Setup(format!("{}: discovery has no {what}", resource.issuer))
        };
        let registration_endpoint = meta.registration_endpoint.clone();
        if matches!(config.registrar, BridgeRegistrar::Passthrough)
            && registration_endpoint.is_none()
        {
            return Err(missing(
                "registration_endpoint (registrar = \"passthrough\" needs the IdP's own DCR)",
            ));
        }
        Ok(Bridge {
            callback: format!("{origin}/callback"),
            store,
            origin,
            issuer: resource.issuer.clone(),
            audience: config.audience.clone(),
            scopes_supported,
            authorization_endpoint: meta
                .authorization_endpoint
                .clone()
                .ok_or_else(|| missing("authorization_endpoint"))?,
            token_endpoint: meta
                .token_endpoint
                .clone()
                .ok_or_else(|| missing("token_endpoint"))?,
            revocation_endpoint: meta.revocation_endpoint.clone(),
            registration_endpoint,
            jwks_uri: resource.jwks_uri.clone().or(meta.jwks_uri),
            registrar: config.registrar.clone(),
            management_token: Mutex::new(None),
            registrations: WindowLimiter::new(
                config.registrations_per_minute,
                Duration::from_secs(60),
            ),
            http,
        })
    }

    /// RFC 8414 metadata on mcpgate's origin (the issuer clients fetch it
    /// from); tokens themselves still name the IdP.
    pub fn metadata(&self) -> Value {
        let o = &self.origin;
        let mut meta = json!({
            "issuer": o,
            "authorization_endpoint": format!("{o}/authorize"),
            "token_endpoint": format!("{o}/token"),
            "registration_endpoint": format!("{o}/register"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": true,
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            // Clients ask for refresh tokens only if they see offline_access.
            "scopes_supported": self
                .scopes_supported
                .iter()
                .map(String::as_str)
                .chain(["openid", "offline_access"])
                .collect::<Vec<_>>(),
        });
        if let Some(obj) = meta.as_object_mut() {
            if let Some(jwks) = &self.jwks_uri {
                obj.insert("jwks_uri".into(), json!(jwks));
            }
            if let Some(revocation) = &self.revocation_endpoint {
                obj.insert("revocation_endpoint".into(), json!(revocation));
            }
        }
        meta
    }

    /// The IdP authorization URL for a client's `/authorize` query: every
    /// parameter kept except `resource` (which becomes `audience`), and the
    /// client's `redirect_uri` and `state`, which mcpgate keeps and replaces
    /// with its callback and a state of its own. PKCE S256 is required here
    /// so no client can downgrade it at the IdP.
    pub async fn authorize(&self, pairs: &[(String, String)]) -> Result<String, BridgeError> {
        let mut seen = std::collections::HashSet::new();
        for (k, _) in pairs {
            if !seen.insert(k.as_str()) {
                return Err(BridgeError::InvalidRequest(format!(
                    "the parameter {k} appears more than once"
                )));
            }
        }
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let client_id = get("client_id")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| BridgeError::InvalidRequest("client_id is missing".to_owned()))?;
        let registered: Vec<String> = match self.store.bridge_client_redirects(client_id).await {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_default(),
            Ok(None) => {
                return Err(BridgeError::InvalidRequest(
                    "this client is not registered here".to_owned(),
                ));
            }
            Err(e) => return Err(BridgeError::Upstream(e.to_string())),
        };
        let redirect_uri = match get("redirect_uri") {
            Some(requested) => find_redirect(&registered, requested)
                .map(|_| requested.to_owned())
                .ok_or_else(|| {
                    BridgeError::InvalidRequest(
                        "redirect_uri is not registered for this client".to_owned(),
                    )
                })?,
            None if registered.len() == 1 => registered[0].clone(),
            None => {
                return Err(BridgeError::InvalidRequest(
                    "redirect_uri is missing".to_owned(),
                ));
            }
        };
        if get("code_challenge").is_none_or(str::is_empty)
            || get("code_challenge_method") != Some("S256")
        {
            return Err(BridgeError::InvalidRequest(
                "PKCE is required: send code_challenge with code_challenge_method=S256".to_owned(),
            ));
        }
        let state = random_token(32).map_err(|e| BridgeError::Upstream(e.to_string()))?;
        let now = now_epoch();
        self.store
            .insert_bridge_request(&BridgeRequestRecord {
                state_hash: sha256_b64(&state),
                client_id: client_id.to_owned(),
                redirect_uri,
                client_state: get("state").map(str::to_owned),
                created_at: now,
                expires_at: now + REQUEST_TTL_SECS,
            })
            .await
            .map_err(|e| BridgeError::Upstream(e.to_string()))?;
        let mut url = url::Url::parse(&self.authorization_endpoint)
            .map_err(|e| BridgeError::Setup(e.to_string()))?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                let replaced = matches!(k.as_str(), "resource" | "redirect_uri" | "state")
                    || (k == "audience" && self.audience.is_some());
                if !replaced {
                    q.append_pair(k, v);
                }
            }
            q.append_pair("redirect_uri", &self.callback);
            q.append_pair("state", &state);
            if let Some(audience) = &self.audience {
                q.append_pair("audience", audience);
            }
        }
        Ok(url.to_string())
    }

    /// `/callback`: the IdP's answer goes on to the client with the client's
    /// `state` and mcpgate's `iss`. Single use; an answer naming another
    /// issuer (a mix-up) stops here.
    pub async fn callback(&self, pairs: &[(String, String)]) -> Result<String, BridgeError> {
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let state = get("state").ok_or_else(|| {
            BridgeError::InvalidRequest("the identity provider's answer has no state".to_owned())
        })?;
        let request = self
            .store
            .take_bridge_request(&sha256_b64(state), now_epoch())
            .await
            .map_err(|e| BridgeError::Upstream(e.to_string()))?
            .ok_or_else(|| {
                BridgeError::InvalidRequest(
                    "this sign-in has expired or was already used; start again from your app"
                        .to_owned(),
                )
            })?;
        if let Some(iss) = get("iss")
            && iss != self.issuer
        {
            return Err(BridgeError::InvalidRequest(
                "the answer names another identity provider".to_owned(),
            ));
        }
        let mut url = url::Url::parse(&request.redirect_uri)
            .map_err(|e| BridgeError::Upstream(e.to_string()))?;
        {
            let mut q = url.query_pairs_mut();
            for name in ["code", "error", "error_description", "error_uri"] {
                if let Some(value) = get(name) {
                    q.append_pair(name, value);
                }
            }
            if let Some(client_state) = &request.client_state {
                q.append_pair("state", client_state);
            }
            q.append_pair("iss", &self.origin);
        }
        Ok(url.to_string())
    }

    /// `/token`: relayed to the IdP without `resource` (Auth0 and Entra
    /// reject or misread it) and with mcpgate's callback as `redirect_uri`,
    /// with the client's own authentication.
    pub async fn token(
        &self,
        body: &[u8],
        authorization: Option<&str>,
    ) -> Result<Relayed, BridgeError> {
        let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(body)
            .into_owned()
            .filter(|(k, _)| k != "resource" && k != "redirect_uri")
            .collect();
        // The code was issued to mcpgate's callback.
        if pairs
            .iter()
            .any(|(k, v)| k == "grant_type" && v == "authorization_code")
        {
            pairs.push(("redirect_uri".to_owned(), self.callback.clone()));
        }
        let mut request = self
            .http
            .post(&self.token_endpoint)
            .header("accept", "application/json")
            .form(&pairs);
        if let Some(auth) = authorization {
            request = request.header("authorization", auth);
        }
        self.relay(request).await
    }

    /// RFC 7591 registration. The client's redirect URIs pass mcpgate's
    /// policy and are kept here; the IdP registers only mcpgate's callback.
    pub async fn register(
        &self,
        body: Value,
        client_address: &str,
    ) -> Result<Relayed, BridgeError> {
        if !self.registrations.hit(client_address) {
            return Err(BridgeError::RateLimited);
        }
        let metadata: ClientMetadata = serde_json::from_value(body.clone()).map_err(|_| {
            BridgeError::InvalidClientMetadata("the body is not valid client metadata".to_owned())
        })?;
        let metadata = metadata.normalise_for_registration().map_err(|e| match e {
            crate::oauth::clients::MetadataError::RedirectUri(m) => {
                BridgeError::InvalidRedirectUri(m)
            }
            crate::oauth::clients::MetadataError::Metadata(m) => {
                BridgeError::InvalidClientMetadata(m)
            }
        })?;
        let own_redirects = metadata.redirect_uris.clone();
        let mut answer = match &self.registrar {
            BridgeRegistrar::Passthrough => {
                let endpoint = self
                    .registration_endpoint
                    .as_deref()
                    .ok_or_else(|| BridgeError::Upstream("no registration endpoint".into()))?;
                let mut relayed = body;
                relayed["redirect_uris"] = json!([self.callback]);
                self.relay(self.http.post(endpoint).json(&relayed)).await?
            }
            BridgeRegistrar::Auth0 {
                client_id,
                client_secret,
                audience,
            } => {
                let token = self
                    .management_token(client_id, client_secret.expose_secret(), audience)
                    .await?;
                self.create_auth0_client(&token, metadata).await?
            }
        };
        if let (200 | 201, Some(new_id)) = (answer.status, answer.body["client_id"].as_str()) {
            let text = serde_json::to_string(&own_redirects)
                .map_err(|e| BridgeError::Upstream(e.to_string()))?;
            self.store
                .save_bridge_client(new_id, &text, now_epoch())
                .await
                .map_err(|e| BridgeError::Upstream(e.to_string()))?;
            answer.body["redirect_uris"] = json!(own_redirects);
        }
        Ok(answer)
    }

    async fn management_token(
        &self,
        client_id: &str,
        secret: &str,
        audience: &str,
    ) -> Result<String, BridgeError> {
        let mut cached = self.management_token.lock().await;
        if let Some(t) = cached.as_ref()
            && t.expires_at > now_epoch() + 60
        {
            return Ok(t.token.clone());
        }
        let answer = self
            .relay(self.http.post(&self.token_endpoint).form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("audience", audience),
            ]))
            .await?;
        let token = match (answer.status, answer.body["access_token"].as_str()) {
            (200, Some(token)) => token.to_owned(),
            (status, _) => {
                return Err(BridgeError::Upstream(format!(
                    "Management API token: HTTP {status} {}",
                    answer.body["error"].as_str().unwrap_or("")
                )));
            }
        };
        let expires_in = answer.body["expires_in"].as_i64().unwrap_or(300);
        *cached = Some(ManagementToken {
            token: token.clone(),
            expires_at: now_epoch() + expires_in,
        });
        Ok(token)
    }

    async fn create_auth0_client(
        &self,
        management_token: &str,
        metadata: ClientMetadata,
    ) -> Result<Relayed, BridgeError> {
        let method = metadata.auth_method();
        let auth0_method = match method {
            AuthMethod::None => "none",
            AuthMethod::SecretBasic => "client_secret_basic",
            AuthMethod::SecretPost => "client_secret_post",
        };
        let body = json!({
            "name": metadata.client_name.clone().unwrap_or_else(|| "MCP client".to_owned()),
            "app_type": if method == AuthMethod::None { "native" } else { "regular_web" },
            "callbacks": [self.callback],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": auth0_method,
            "oidc_conformant": true,
            "client_metadata": {"created_by": "mcpgate"},
        });
        let url = format!("{}/api/v2/clients", self.issuer.trim_end_matches('/'));
        let created = self
            .relay(
                self.http
                    .post(&url)
                    .bearer_auth(management_token)
                    .json(&body),
            )
            .await?;
        if created.status != 201 && created.status != 200 {
            // Auth0's 4xx here is about our request or our rights, not the client's input.
            return Err(BridgeError::Upstream(format!(
                "Management API create client: HTTP {} {}",
                created.status,
                created.body["message"].as_str().unwrap_or("")
            )));
        }
        let new_id = created.body["client_id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| BridgeError::Upstream("created client has no client_id".into()))?;
        let mut response =
            serde_json::to_value(&metadata).map_err(|e| BridgeError::Upstream(e.to_string()))?;
        if let Some(obj) = response.as_object_mut() {
            obj.insert("client_id".into(), json!(new_id));
            obj.insert("client_id_issued_at".into(), json!(now_epoch()));
            if method != AuthMethod::None
                && let Some(secret) = created.body["client_secret"].as_str()
            {
                obj.insert("client_secret".into(), json!(secret));
                obj.insert("client_secret_expires_at".into(), json!(0));
            }
        }
        Ok(Relayed {
            status: 201,
            body: response,
        })
    }

    async fn relay(&self, request: reqwest::RequestBuilder) -> Result<Relayed, BridgeError> {
        let response = request
            .send()
            .await
            .map_err(|e| BridgeError::Upstream(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let bytes = read_capped(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| BridgeError::Upstream(e.to_string()))?;
        if status >= 500 {
            return Err(BridgeError::Upstream(format!("HTTP {status}")));
        }
        let body = serde_json::from_slice(&bytes)
            .map_err(|_| BridgeError::Upstream(format!("HTTP {status} without a JSON body")))?;
        Ok(Relayed { status, body })
    }
}
