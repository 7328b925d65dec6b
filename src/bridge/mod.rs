//! `bridge` mode: the IdP stays the authorization server and issues the
//! tokens; mcpgate fills the gaps MCP clients trip on. It serves RFC 8414
//! metadata on its own origin, registers clients the IdP cannot register
//! itself (Auth0: through the Management API; Keycloak and other IdPs with
//! DCR: relayed), rewrites `/authorize` and relays `/token`. What names the
//! token's audience at the IdP is [`IdpTarget`]: the configured `audience`
//! (Auth0 and Entra want it in place of `resource`), or else mcpgate's own
//! `/mcp` as the RFC 8707 `resource` on both legs, so an IdP with no default
//! resource still issues a token `/mcp` accepts. Tokens on `/mcp` are checked
//! exactly as in `resource` mode.
//!
//! The IdP's answer is bound to the client it was issued for and to the
//! browser that asked (review finding 1: a `client_id` swapped in the IdP URL
//! must not deliver a victim's code to an attacker's redirect URI):
//! - every client has its own callback at the IdP,
//!   `public_url/callback/<callback key>`, so the IdP only sends a client's
//!   codes there, and `/callback/<key>` refuses a state started for another
//!   client;
//! - `/authorize` shows mcpgate's own consent page first (the confused-deputy
//!   rule) and binds the request to the browser with a cookie, which
//!   `/callback` requires;
//! - `/token` relays a code only for the client it was delivered to, with
//!   that client's callback as `redirect_uri`.
//!
//! Clients check `iss` in the authorization response against the issuer they
//! discovered (mcpgate), so the browser comes back through mcpgate, which
//! checks the IdP's `iss`, restores the client's `state` and redirect URI and
//! adds its own `iss`.

mod funnel_steps;
pub mod http;
mod registrar;
pub mod settings;
mod target;

use std::time::Duration;

use serde_json::Value;

pub use settings::{BridgeConfig, BridgeRegistrar};

use funnel_steps::{Trace, challenge_of};
use target::IdpTarget;

use crate::{
    auth::settings::ResourceAuthSettings,
    auth::{jwks::read_capped, verify},
    clock::{self, SharedClock},
    funnel::{Funnel, Reason},
    oauth::{
        client_credentials::{
            ClientCredentialsError, ClientCredentialsRequest, ClientCredentialsToken,
        },
        clients::{BasicCredentials, MetadataError, resolve_redirect},
        crypto::{CryptoError, ct_eq, random_token, sha256_b64},
        error::OAuthErrorCode,
        front::{RepeatedParameter, field},
        metadata::AuthorizationServerMetadata,
        ratelimit::WindowLimiter,
    },
    store::{BridgeCodeRecord, BridgeRequestRecord, BridgeStage, Store, StoreError},
};

/// How long a bridged authorization may take (consent page, then the IdP),
/// and how long a delivered code may wait for `/token`.
const REQUEST_TTL_SECS: i64 = 600;

const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// An authorization request's query, and the client's `state` in it: every
/// pending request is stored before anyone signs in.
const MAX_AUTHORIZE_QUERY_BYTES: usize = 8 * 1024;
const MAX_CLIENT_STATE_BYTES: usize = 1024;
/// Authorization requests per client address per minute: far above what a
/// person clicks through, far below a storage flood.
const AUTHORIZE_PER_MINUTE: u32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidClientMetadata(String),
    #[error("{0}")]
    InvalidRedirectUri(String),
    #[error("{0}")]
    InvalidGrant(String),
    /// The client asked for a resource this server does not serve (RFC 8707).
    #[error("{0}")]
    InvalidTarget(String),
    /// The browser or the client does not match the pending request.
    #[error("{0}")]
    Forbidden(String),
    #[error("the registration is larger than {0} bytes")]
    TooLarge(usize),
    #[error("too many registrations; try again later")]
    RateLimited,
    #[error("too many sign-ins started from your address; wait a minute")]
    TooManyRequests,
    /// The daily budget of Auth0 applications is used up.
    #[error("no more clients can be registered today; try again later")]
    BudgetExhausted { retry_after_secs: i64 },
    /// The IdP (or its Management API) failed or refused; details are logged only.
    #[error("the identity provider could not complete the request")]
    Idp(String),
    /// mcpgate's own store failed; details are logged only.
    #[error("the server cannot complete the request")]
    Store(#[from] StoreError),
    /// Randomness or serialisation failed; details are logged only.
    #[error("the server cannot complete the request")]
    Internal(String),
    #[error("cannot set up the bridge: {0}")]
    Setup(String),
    /// A refusal whose cause the catalogue names more precisely than the
    /// RFC code (`pkce_missing`, `redirect_uri_mismatch`, `unknown_client`,
    /// `code_invalid`), as the local server's `OAuthError::Refused`.
    #[error("{detail}")]
    Refused {
        code: OAuthErrorCode,
        reason: Reason,
        detail: String,
    },
}

impl BridgeError {
    /// The RFC code on the wire; the edge picks the status.
    pub fn code(&self) -> OAuthErrorCode {
        match self {
            BridgeError::InvalidRequest(_) | BridgeError::Forbidden(_) => {
                OAuthErrorCode::InvalidRequest
            }
            // As the local server: the body as a whole, not one field, is wrong.
            BridgeError::TooLarge(_) => OAuthErrorCode::InvalidRequest,
            BridgeError::InvalidClientMetadata(_) => OAuthErrorCode::InvalidClientMetadata,
            BridgeError::InvalidRedirectUri(_) => OAuthErrorCode::InvalidRedirectUri,
            BridgeError::InvalidGrant(_) => OAuthErrorCode::InvalidGrant,
            BridgeError::InvalidTarget(_) => OAuthErrorCode::InvalidTarget,
            BridgeError::RateLimited | BridgeError::TooManyRequests => OAuthErrorCode::RATE_LIMITED,
            BridgeError::BudgetExhausted { .. } | BridgeError::Idp(_) | BridgeError::Setup(_) => {
                OAuthErrorCode::TemporarilyUnavailable
            }
            BridgeError::Store(_) | BridgeError::Internal(_) => OAuthErrorCode::ServerError,
            BridgeError::Refused { code, .. } => *code,
        }
    }

    fn refused(code: OAuthErrorCode, reason: Reason, detail: &str) -> BridgeError {
        BridgeError::Refused {
            code,
            reason,
            detail: detail.to_owned(),
        }
    }

    /// The catalogue's reason (`crate::funnel::reasons`).
    pub fn reason(&self) -> Reason {
        match self {
            BridgeError::Refused { reason, .. } => *reason,
            BridgeError::Forbidden(_) => Reason::RequestExpired,
            BridgeError::TooLarge(_) => Reason::TooLarge,
            BridgeError::RateLimited | BridgeError::TooManyRequests => Reason::RateLimited,
            BridgeError::Idp(_) | BridgeError::Setup(_) => Reason::IdpError,
            other => other.code().reason(),
        }
    }
}

impl From<MetadataError> for BridgeError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::RedirectUri(m) => BridgeError::InvalidRedirectUri(m),
            MetadataError::Metadata(m) => BridgeError::InvalidClientMetadata(m),
        }
    }
}

impl From<ClientCredentialsError> for BridgeError {
    fn from(e: ClientCredentialsError) -> Self {
        BridgeError::Idp(format!("Management API token: {e}"))
    }
}

impl From<CryptoError> for BridgeError {
    fn from(e: CryptoError) -> Self {
        BridgeError::Internal(e.to_string())
    }
}

impl From<RepeatedParameter> for BridgeError {
    fn from(e: RepeatedParameter) -> Self {
        BridgeError::InvalidRequest(e.to_string())
    }
}

/// A relayed answer: the IdP's status and JSON body.
pub struct Relayed {
    pub status: u16,
    pub body: Value,
}

/// What `/authorize` shows: mcpgate's consent page for a pending request,
/// and the browser secret the request is bound to (set as a cookie).
pub struct ConsentPrompt {
    pub request_id: String,
    pub csrf: String,
    pub browser: String,
    pub client_name: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub idp_host: String,
}

/// The user's answer on mcpgate's consent page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentAnswer {
    Approve,
    Deny,
}

/// How clients get registered at the IdP, with what each way needs.
enum Registration {
    /// Relayed to the IdP's own registration endpoint (RFC 7591).
    Passthrough { endpoint: String },
    /// Auth0 applications, created through the Management API with its token.
    Auth0 { management: ClientCredentialsToken },
}

pub struct Bridge {
    origin: String,
    store: Store,
    issuer: String,
    target: IdpTarget,
    scopes_supported: Vec<String>,
    authorization_endpoint: String,
    token_endpoint: String,
    revocation_endpoint: Option<String>,
    jwks_uri: Option<String>,
    registration: Registration,
    applications_per_day: u32,
    unused_application_days: u32,
    registrations: WindowLimiter,
    authorizations: WindowLimiter,
    http: reqwest::Client,
    clock: SharedClock,
    /// Where each attempt's steps and stop reasons go (`crate::funnel`).
    funnel: Funnel,
}

impl Bridge {
    /// Read the IdP's discovery once; a misconfigured IdP fails at start.
    pub async fn connect(
        config: &BridgeConfig,
        resource: &ResourceAuthSettings,
        origin: String,
        scopes_supported: Vec<String>,
        store: Store,
    ) -> Result<Bridge, BridgeError> {
        Self::connect_with_clock(
            config,
            resource,
            origin,
            scopes_supported,
            store,
            clock::system(),
        )
        .await
    }

    /// [`Bridge::connect`] reading the time from `clock` (tests: a manual clock).
    pub async fn connect_with_clock(
        config: &BridgeConfig,
        resource: &ResourceAuthSettings,
        origin: String,
        scopes_supported: Vec<String>,
        store: Store,
        clock: SharedClock,
    ) -> Result<Bridge, BridgeError> {
        let http = crate::idp::outbound_client().map_err(|e| BridgeError::Setup(e.to_string()))?;
        let meta = verify::discover(&http, &resource.issuer)
            .await
            .map_err(|e| BridgeError::Setup(e.to_string()))?;
        let missing = |what: &str| {
            BridgeError::Setup(format!("{}: discovery has no {what}", resource.issuer))
        };
        let token_endpoint = meta
            .token_endpoint
            .clone()
            .ok_or_else(|| missing("token_endpoint"))?;
        let registration = match &config.registrar {
            BridgeRegistrar::Passthrough => Registration::Passthrough {
                endpoint: meta.registration_endpoint.clone().ok_or_else(|| {
                    missing(
                        "registration_endpoint (registrar = \"passthrough\" needs the IdP's own DCR)",
                    )
                })?,
            },
            BridgeRegistrar::Auth0 {
                client_id,
                client_secret,
                audience,
            } => Registration::Auth0 {
                management: ClientCredentialsToken::new(
                    ClientCredentialsRequest {
                        token_endpoint: token_endpoint.clone(),
                        client_id: client_id.clone(),
                        client_secret: client_secret.clone(),
                        parameters: vec![("audience", audience.clone())],
                    },
                    http.clone(),
                    clock.clone(),
                ),
            },
        };
        Ok(Bridge {
            store: store.clone(),
            issuer: resource.issuer.clone(),
            target: IdpTarget::of(config.audience.as_deref(), &origin),
            scopes_supported,
            authorization_endpoint: meta
                .authorization_endpoint
                .clone()
                .ok_or_else(|| missing("authorization_endpoint"))?,
            token_endpoint,
            revocation_endpoint: meta.revocation_endpoint.clone(),
            jwks_uri: resource.jwks_uri.clone().or(meta.jwks_uri),
            registration,
            applications_per_day: config.applications_per_day,
            unused_application_days: config.unused_application_days,
            // In the store, shared by every replica (a store failure refuses).
            registrations: WindowLimiter::new(
                "bridge-register",
                config.registrations_per_minute,
                Duration::from_secs(60),
                store.clone(),
            )
            .with_clock(clock.clone()),
            authorizations: WindowLimiter::new(
                "bridge-authorize",
                AUTHORIZE_PER_MINUTE,
                Duration::from_secs(60),
                store,
            )
            .with_clock(clock.clone()),
            http,
            clock,
            origin,
            funnel: Funnel::off(),
        })
    }

    /// Record the attempts' steps on `funnel`.
    pub fn with_funnel(mut self, funnel: Funnel) -> Self {
        self.funnel = funnel;
        self
    }

    /// `https` origins get a `__Host-` cookie with `Secure`; http loopback
    /// development does not (browsers drop `Secure` cookies on http).
    /// mcpgate's public origin: where `/errors` is served.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn secure_cookies(&self) -> bool {
        self.origin.starts_with("https://")
    }

    /// The redirect URI registered at the IdP for the client with `key`.
    fn callback_url(&self, key: &str) -> String {
        format!("{}/callback/{key}", self.origin)
    }

    /// RFC 8414 metadata on mcpgate's origin (the issuer clients fetch it
    /// from); tokens themselves still name the IdP.
    pub fn metadata(&self) -> AuthorizationServerMetadata {
        metadata(
            &self.origin,
            &self.scopes_supported,
            self.jwks_uri.clone(),
            self.revocation_endpoint.clone(),
        )
    }

    /// [`Bridge::authorize`]'s work; `trace` learns the client and challenge.
    async fn authorize_traced(
        &self,
        trace: &mut Trace,
        pairs: &[(String, String)],
        held: Option<&str>,
        client_address: &str,
    ) -> Result<ConsentPrompt, BridgeError> {
        if !self.authorizations.hit(client_address).await? {
            return Err(BridgeError::TooManyRequests);
        }
        let size: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        if size > MAX_AUTHORIZE_QUERY_BYTES {
            return Err(BridgeError::InvalidRequest(
                "the authorization request is too large".to_owned(),
            ));
        }
        let get = |name: &str| field(pairs, name);
        let client_id = get("client_id")
            .ok_or_else(|| BridgeError::InvalidRequest("client_id is missing".to_owned()))?;
        let client = self.store.bridge_client(client_id).await?.ok_or_else(|| {
            BridgeError::refused(
                OAuthErrorCode::InvalidRequest,
                Reason::UnknownClient,
                "this client is not registered here",
            )
        })?;
        trace.client_id = Some(client_id.to_owned());
        trace.challenge = get("code_challenge").map(str::to_owned);
        if client.callback_key.is_none() {
            // Registered before callbacks were per client: the IdP would send
            // its codes to the shared callback, which no longer exists.
            return Err(BridgeError::InvalidRequest(
                "this client was registered with an older version of this server; remove the server in your app and add it again".to_owned(),
            ));
        }
        let registered: Vec<String> =
            serde_json::from_str(&client.redirect_uris).unwrap_or_default();
        let redirect_uri = resolve_redirect(&registered, get("redirect_uri")).map_err(|e| {
            BridgeError::refused(
                OAuthErrorCode::InvalidRequest,
                Reason::RedirectUriMismatch,
                &e.to_string(),
            )
        })?;
        if get("code_challenge").is_none() || get("code_challenge_method") != Some("S256") {
            return Err(BridgeError::refused(
                OAuthErrorCode::InvalidRequest,
                Reason::PkceMissing,
                "PKCE is required: send code_challenge with code_challenge_method=S256",
            ));
        }
        if get("state").is_some_and(|s| s.len() > MAX_CLIENT_STATE_BYTES) {
            return Err(BridgeError::InvalidRequest(format!(
                "state is longer than {MAX_CLIENT_STATE_BYTES} bytes"
            )));
        }
        // Replaced by mcpgate's own, or able to move the answer elsewhere
        // than the client's callback's query (a request object can carry its
        // own redirect_uri and state; only query responses are supported).
        let forwarded: Vec<(&str, &str)> = pairs
            .iter()
            .filter(|(k, _)| {
                !(matches!(
                    k.as_str(),
                    "resource"
                        | "redirect_uri"
                        | "state"
                        | "request"
                        | "request_uri"
                        | "response_mode"
                ) || (k == "audience" && matches!(self.target, IdpTarget::Audience(_))))
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(
                self.target
                    .resource(get("resource"))?
                    .map(|ours| ("resource", ours)),
            )
            .collect();
        let idp_query =
            serde_json::to_string(&forwarded).map_err(|e| BridgeError::Internal(e.to_string()))?;
        let browser = match held {
            Some(b) if is_token(b) => b.to_owned(),
            _ => random_token(32)?,
        };
        let request_id = random_token(32)?;
        let now = self.clock.now();
        self.store
            .insert_bridge_request(
                BridgeStage::Consent,
                &BridgeRequestRecord {
                    state_hash: sha256_b64(&request_id),
                    client_id: client_id.to_owned(),
                    browser_hash: sha256_b64(&browser),
                    redirect_uri: redirect_uri.clone(),
                    client_state: get("state").map(str::to_owned),
                    idp_query,
                    created_at: now,
                    expires_at: now + REQUEST_TTL_SECS,
                },
            )
            .await?;
        Ok(ConsentPrompt {
            csrf: csrf_token(&request_id, &browser),
            request_id,
            browser,
            client_name: client
                .client_name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| client_id.to_owned()),
            redirect_uri,
            scopes: get("scope")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            idp_host: url::Url::parse(&self.authorization_endpoint)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default(),
        })
    }

    /// [`Bridge::decide`]'s work; `trace` learns the client and challenge.
    async fn decide_traced(
        &self,
        trace: &mut Trace,
        request_id: &str,
        csrf: &str,
        browser: &str,
        answer: ConsentAnswer,
    ) -> Result<String, BridgeError> {
        if browser.is_empty() || !ct_eq(csrf, &csrf_token(request_id, browser)) {
            return Err(BridgeError::Forbidden(
                "this form does not belong to this browser; start again from your app".to_owned(),
            ));
        }
        let now = self.clock.now();
        let request = self
            .store
            .take_bridge_request(BridgeStage::Consent, &sha256_b64(request_id), now)
            .await?
            .ok_or_else(expired)?;
        trace.client_id = Some(request.client_id.clone());
        trace.challenge = challenge_of(&request.idp_query);
        if !ct_eq(&request.browser_hash, &sha256_b64(browser)) {
            return Err(BridgeError::Forbidden(
                "this sign-in was started in another browser; start again from your app".to_owned(),
            ));
        }
        if answer == ConsentAnswer::Deny {
            return self.to_client(
                &request,
                &[
                    ("error", "access_denied"),
                    ("error_description", "the user denied access"),
                ],
            );
        }
        let key = self
            .store
            .bridge_client(&request.client_id)
            .await?
            .and_then(|c| c.callback_key)
            .ok_or_else(|| {
                BridgeError::InvalidRequest("this client is not registered here".to_owned())
            })?;
        let forwarded: Vec<(String, String)> =
            serde_json::from_str(&request.idp_query).unwrap_or_default();
        let state = random_token(32)?;
        self.store
            .insert_bridge_request(
                BridgeStage::Idp,
                &BridgeRequestRecord {
                    state_hash: sha256_b64(&state),
                    created_at: now,
                    expires_at: now + REQUEST_TTL_SECS,
                    ..request
                },
            )
            .await?;
        let mut url = url::Url::parse(&self.authorization_endpoint)
            .map_err(|e| BridgeError::Setup(e.to_string()))?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &forwarded {
                q.append_pair(k, v);
            }
            q.append_pair("redirect_uri", &self.callback_url(&key));
            q.append_pair("state", &state);
            if let IdpTarget::Audience(audience) = &self.target {
                q.append_pair("audience", audience);
            }
        }
        Ok(url.to_string())
    }

    /// [`Bridge::callback`]'s work; `trace` learns the client and challenge.
    async fn callback_traced(
        &self,
        trace: &mut Trace,
        key: &str,
        pairs: &[(String, String)],
        browser: &str,
    ) -> Result<String, BridgeError> {
        let get = |name: &str| field(pairs, name);
        let state = get("state").ok_or_else(|| {
            BridgeError::InvalidRequest("the identity provider's answer has no state".to_owned())
        })?;
        let now = self.clock.now();
        let request = self
            .store
            .take_bridge_request(BridgeStage::Idp, &sha256_b64(state), now)
            .await?
            .ok_or_else(expired)?;
        trace.client_id = Some(request.client_id.clone());
        trace.challenge = challenge_of(&request.idp_query);
        let client = self.store.bridge_client(&request.client_id).await?;
        if client.and_then(|c| c.callback_key).as_deref() != Some(key) {
            // The IdP sent this to another client's callback: the code (if
            // any) was issued to that client, not to the one that asked.
            tracing::warn!(
                client_id = %request.client_id,
                "bridge: an authorization answer came back for another client; refused"
            );
            return Err(BridgeError::Forbidden(
                "this answer belongs to another app's sign-in; start again from your app"
                    .to_owned(),
            ));
        }
        if browser.is_empty() || !ct_eq(&request.browser_hash, &sha256_b64(browser)) {
            return Err(BridgeError::Forbidden(
                "this sign-in was started in another browser; start again from your app".to_owned(),
            ));
        }
        if let Some(iss) = get("iss")
            && iss != self.issuer
        {
            return Err(BridgeError::InvalidRequest(
                "the answer names another identity provider".to_owned(),
            ));
        }
        if let Some(code) = get("code") {
            self.store
                .save_bridge_code(&BridgeCodeRecord {
                    code_hash: sha256_b64(code),
                    client_id: request.client_id.clone(),
                    redirect_uri: request.redirect_uri.clone(),
                    callback: self.callback_url(key),
                    expires_at: now + REQUEST_TTL_SECS,
                    code_challenge: trace.challenge.clone(),
                })
                .await?;
        }
        let passed: Vec<(&str, &str)> = ["code", "error", "error_description", "error_uri"]
            .into_iter()
            .filter_map(|name| get(name).map(|v| (name, v)))
            .collect();
        self.to_client(&request, &passed)
    }

    /// The client's redirect URI (checked at `/authorize`) with `params`, its
    /// `state` and mcpgate's `iss`.
    fn to_client(
        &self,
        request: &BridgeRequestRecord,
        params: &[(&str, &str)],
    ) -> Result<String, BridgeError> {
        let mut url = url::Url::parse(&request.redirect_uri)
            .map_err(|e| BridgeError::Internal(e.to_string()))?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(client_state) = &request.client_state {
                q.append_pair("state", client_state);
            }
            q.append_pair("iss", &self.origin);
        }
        Ok(url.to_string())
    }

    /// [`Bridge::token`]'s work; `trace` learns the client (and, for a
    /// code, the challenge kept with it).
    async fn token_traced(
        &self,
        trace: &mut Trace,
        pairs: &[(String, String)],
        authorization: Option<&str>,
    ) -> Result<Relayed, BridgeError> {
        let presented = presented_client(pairs, authorization);
        let mut relayed: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _)| k != "resource" && k != "redirect_uri")
            .cloned()
            .collect();
        if let Some(ours) = self.target.resource(field(pairs, "resource"))? {
            relayed.push(("resource".to_owned(), ours.to_owned()));
        }
        if field(pairs, "grant_type") == Some("authorization_code") {
            let code = field(pairs, "code")
                .ok_or_else(|| BridgeError::InvalidRequest("code is missing".to_owned()))?;
            let issued = self
                .store
                .bridge_code(&sha256_b64(code), self.clock.now())
                .await?
                .ok_or_else(|| {
                    BridgeError::refused(
                        OAuthErrorCode::InvalidGrant,
                        Reason::CodeInvalid,
                        "the code is unknown or expired, or did not come through this server",
                    )
                })?;
            if presented.as_deref() != Some(issued.client_id.as_str()) {
                tracing::warn!(
                    client_id = %issued.client_id,
                    "bridge: a code was presented by another client; refused"
                );
                return Err(BridgeError::InvalidGrant(
                    "the code was not issued to this client".to_owned(),
                ));
            }
            // The attempt is this client's: the code came back for it.
            trace.client_id = Some(issued.client_id.clone());
            trace.challenge = issued.code_challenge.clone();
            if field(pairs, "redirect_uri").is_some_and(|r| r != issued.redirect_uri) {
                return Err(BridgeError::refused(
                    OAuthErrorCode::InvalidGrant,
                    Reason::RedirectUriMismatch,
                    "redirect_uri does not match the authorization request",
                ));
            }
            relayed.push(("redirect_uri".to_owned(), issued.callback));
        }
        let mut request = self
            .http
            .post(&self.token_endpoint)
            .header("accept", "application/json")
            .form(&relayed);
        if let Some(auth) = authorization {
            request = request.header("authorization", auth);
        }
        let answer = self.relay(request).await?;
        if answer.status == 200
            && let Some(client_id) = &presented
        {
            match self
                .store
                .touch_bridge_client(client_id, self.clock.now())
                .await
            {
                Ok(true) => trace.client_id = Some(client_id.clone()),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "bridge: could not record a client's use"),
            }
        }
        Ok(answer)
    }

    async fn relay(&self, request: reqwest::RequestBuilder) -> Result<Relayed, BridgeError> {
        let response = request
            .send()
            .await
            .map_err(|e| BridgeError::Idp(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let bytes = read_capped(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| BridgeError::Idp(e.to_string()))?;
        if status >= 500 {
            return Err(BridgeError::Idp(format!("HTTP {status}")));
        }
        let body = serde_json::from_slice(&bytes)
            .map_err(|_| BridgeError::Idp(format!("HTTP {status} without a JSON body")))?;
        Ok(Relayed { status, body })
    }
}

/// The bridge's RFC 8414 document: the shared front's, with the IdP's own
/// keys and revocation endpoint (clients revoke at the IdP, which issued the
/// tokens).
fn metadata(
    origin: &str,
    scopes_supported: &[String],
    jwks_uri: Option<String>,
    revocation_endpoint: Option<String>,
) -> AuthorizationServerMetadata {
    // Clients ask for refresh tokens only if they see offline_access.
    let scopes = scopes_supported
        .iter()
        .map(String::as_str)
        .chain(["openid", "offline_access"])
        .map(str::to_owned)
        .collect();
    AuthorizationServerMetadata {
        jwks_uri,
        revocation_endpoint,
        ..AuthorizationServerMetadata::new(origin, scopes)
    }
}

/// The client a token request names (Basic credentials or `client_id`).
/// The IdP judges a malformed header; here it just names no client.
fn presented_client(pairs: &[(String, String)], authorization: Option<&str>) -> Option<String> {
    match authorization.map(BasicCredentials::parse) {
        Some(Ok(Some(basic))) => Some(basic.client_id),
        _ => field(pairs, "client_id").map(str::to_owned),
    }
}

fn expired() -> BridgeError {
    BridgeError::InvalidRequest(
        "this sign-in has expired or was already used; start again from your app".to_owned(),
    )
}

/// A browser secret as mcpgate makes them (32 random bytes, base64url).
fn is_token(text: &str) -> bool {
    text.len() == 43
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The consent form's CSRF token: only the browser holding the cookie can
/// compute it, and it names one request.
fn csrf_token(request_id: &str, browser: &str) -> String {
    sha256_b64(&format!("bridge-csrf|{request_id}|{browser}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_token_depends_on_the_browser_and_the_request() {
        let a = csrf_token("r1", "browser-a");
        assert_ne!(a, csrf_token("r1", "browser-b"));
        assert_ne!(a, csrf_token("r2", "browser-a"));
        assert_eq!(a, csrf_token("r1", "browser-a"));
    }

    /// The shared metadata type serves what the bridge's `json!` document
    /// served, byte for byte.
    #[test]
    fn the_metadata_document_is_unchanged() {
        let o = "https://gw.example";
        let scopes = vec!["calc".to_owned()];
        let built = metadata(
            o,
            &scopes,
            Some("https://idp.example/jwks".to_owned()),
            Some("https://idp.example/revoke".to_owned()),
        );
        let mut before = serde_json::json!({
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
            "scopes_supported": ["calc", "openid", "offline_access"],
        });
        let same = |a: &AuthorizationServerMetadata, b: &Value| {
            assert_eq!(
                serde_json::to_string(a).unwrap(),
                serde_json::to_string(b).unwrap()
            );
        };
        same(&metadata(o, &scopes, None, None), &before);
        before["jwks_uri"] = "https://idp.example/jwks".into();
        before["revocation_endpoint"] = "https://idp.example/revoke".into();
        same(&built, &before);
    }
}
