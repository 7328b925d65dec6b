//! Per-user upstream authorization (`[upstreams.user_auth]`): each mcpgate
//! user connects their own account at an OAuth-protected upstream MCP
//! server, and the upstream gets that user's token for its own resource
//! (RFC 8707 `resource` = the upstream URL), never the client's.
//!
//! A call to an upstream the user has not connected yet gets a URL
//! elicitation ([`Elicitation`], sealed into the URL): the connect page
//! checks that the browser's signed-in user is the one it was made for,
//! then runs the authorization code flow with PKCE S256 at the upstream's
//! authorization server. Tokens are sealed in the store per (user,
//! upstream) and refreshed by one caller at a time across replicas.

use std::{collections::HashMap, sync::Arc, time::Duration};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{
    locks::lock,
    settings::{GatewayConfig, Transport, UserAuthSettings},
};
use crate::{
    clock::SharedClock,
    oauth::{
        crypto::{CryptoError, Sealer, pkce_s256, random_token, sha256_b64},
        fenced_fetch::FencedFetcher,
    },
    store::{ConnectAttemptRecord, Store, StoreError, UserTokenRecord},
};

pub mod admin;
#[cfg(test)]
mod peer_tests;
pub mod request_state;
mod server;
pub mod settings;
#[cfg(test)]
mod tests;

/// AEAD contexts of the sealed values (also `oauth::reseal`).
pub use crate::store::{ATTEMPT_CONTEXT, CLIENT_CONTEXT, TOKENS_CONTEXT};
/// Only in URLs, never stored.
const ELICITATION_CONTEXT: &str = "upstream_connect.elicitation";

/// How long a connect link works after the call that made it.
const ELICITATION_TTL_SECS: i64 = 900;
/// How long the browser may stay at the upstream's sign-in.
const ATTEMPT_TTL_SECS: i64 = 600;
/// A token this close to its expiry is refreshed before use.
const EXPIRY_MARGIN_SECS: i64 = 30;
/// The longest one refresh may hold the lease; then another caller may try.
const REFRESH_LEASE_SECS: i64 = 30;
const METADATA_MAX_BYTES: usize = 64 * 1024;
/// How long a process keeps what discovery found (servers move, rarely).
const DISCOVERY_TTL_SECS: i64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum UserAuthError {
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("sealing failed: {0}")]
    Crypto(#[from] CryptoError),
    #[error("no upstream {0} with user_auth")]
    UnknownUpstream(String),
    #[error("this connect link is not valid or has expired; call the tool again for a new one")]
    BadLink,
    #[error(
        "this connect link was made for another mcpgate user; sign in as that user, or call the tool again as yourself"
    )]
    WrongUser,
    #[error("this connection attempt expired, was already used, or belongs to another browser")]
    BadAttempt,
    #[error("the upstream's authorization server could not be discovered: {0}")]
    Discovery(String),
    #[error("registration at the upstream's authorization server failed: {0}")]
    Registration(String),
    #[error("the upstream's authorization server refused: {0}")]
    Refused(String),
    /// `invalid_client`: the server does not know (or no longer accepts)
    /// mcpgate's client; a registration of ours is forgotten and made anew.
    #[error("the upstream's authorization server does not accept mcpgate's client: {0}")]
    ClientRejected(String),
    /// RFC 9207: the authorization response came from another server than
    /// the one the attempt went to (a mix-up), or did not say which.
    #[error(
        "the authorization response does not come from the authorization server this attempt went to; nothing was connected"
    )]
    WrongIssuer,
    #[error("the upstream's authorization server is unreachable: {0}")]
    Unreachable(String),
    #[error("the connection is being refreshed elsewhere and did not finish in time")]
    RefreshStuck,
    #[error("the requestState could not be sealed: {0}")]
    Seal(String),
}

/// What a connect link carries, sealed: for whom, to what, until when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Elicitation {
    pub id: String,
    pub user_id: String,
    pub upstream: String,
    pub expires_at: i64,
}

/// A URL elicitation to hand the client (-32042 or `elicitation/create`).
#[derive(Debug, Clone)]
pub struct ConnectLink {
    pub upstream: String,
    pub url: String,
    pub elicitation_id: String,
}

impl ConnectLink {
    pub fn message(&self) -> String {
        format!(
            "Connect your account at {} to use its tools: open the link, sign in there, then retry.",
            self.upstream
        )
    }

    /// `ElicitRequestURLParams` of the 2025-11-25 schema.
    pub fn url_params(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": "url",
            "url": self.url,
            "elicitationId": self.elicitation_id,
            "message": self.message(),
        })
    }
}

/// A user's token set at an upstream, as sealed in the store.
#[derive(Serialize, Deserialize)]
struct TokenSet {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    /// The authorization server that issued them (for refresh and revocation).
    issuer: String,
}

/// What a connect attempt keeps until the callback, sealed.
#[derive(Serialize, Deserialize)]
struct AttemptSecrets {
    verifier: String,
    issuer: String,
}

/// mcpgate's client at an authorization server.
#[derive(Clone, Default, Serialize, Deserialize)]
struct ClientCredentials {
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    /// How the secret goes to the token endpoint: what the registration
    /// answer said (RFC 7591's default is `client_secret_basic`), or for a
    /// configured client what the server's metadata lists.
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    /// RFC 7591: when the secret stops working (0: never).
    #[serde(default)]
    client_secret_expires_at: Option<i64>,
    /// The redirect URI a registration was made with (a changed
    /// `public_url` needs a new one).
    #[serde(default)]
    redirect_uri: Option<String>,
    /// Made by RFC 7591 registration and kept in the store (so it can be
    /// forgotten when the server no longer knows it).
    #[serde(skip)]
    registered: bool,
}

impl ClientCredentials {
    fn secret_in_body(&self) -> bool {
        self.token_endpoint_auth_method.as_deref() == Some("client_secret_post")
    }
}

/// The parts of RFC 8414 metadata used here.
#[derive(Debug, Clone, Deserialize)]
struct ServerMetadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    registration_endpoint: Option<String>,
    #[serde(default)]
    revocation_endpoint: Option<String>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    client_id_metadata_document_supported: bool,
    #[serde(default)]
    scopes_supported: Option<Vec<String>>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// RFC 9207: the server puts `iss` in its authorization responses.
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

#[derive(Deserialize)]
struct ResourceMetadata {
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    authorization_servers: Vec<String>,
    #[serde(default)]
    scopes_supported: Vec<String>,
}

struct Discovered {
    server: ServerMetadata,
    scopes: Vec<String>,
    /// RFC 8707 `resource`: the value the upstream's metadata names for
    /// itself, else its URL as configured; `None` when the settings turn
    /// the parameter off.
    resource: Option<String>,
    /// More parameters of the authorization request: the configured ones,
    /// and what the server's kind needs for a refresh token.
    authorize_params: Vec<(String, String)>,
}

impl Discovered {
    /// `("resource", …)` for a token request's form, when one is sent.
    fn resource_pair(&self) -> Option<(&'static str, &str)> {
        self.resource.as_deref().map(|r| ("resource", r))
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    /// A number, or (Entra's v1 endpoint) a string of digits.
    #[serde(default, deserialize_with = "seconds")]
    expires_in: Option<i64>,
    #[serde(default)]
    scope: Option<String>,
}

fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Some(serde_json::Value::String(t)) => t.trim().parse().ok(),
        _ => None,
    })
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// One upstream with `user_auth`.
struct Target {
    url: Url,
    settings: UserAuthSettings,
}

/// One of a user's connections, for listing.
#[derive(Debug, Clone, Serialize)]
pub struct Connection {
    pub upstream: String,
    pub connected_at: i64,
    pub refreshed_at: i64,
    pub expires_at: Option<i64>,
    pub scope: Option<String>,
}

/// Where the browser goes next after `begin`, and the cookie value binding
/// the attempt to it.
pub struct Redirect {
    pub location: String,
    pub browser: String,
}

pub struct UserAuth {
    store: Store,
    sealer: Arc<Sealer>,
    clock: SharedClock,
    http: reqwest::Client,
    fetcher: FencedFetcher,
    public_origin: String,
    targets: HashMap<String, Target>,
    /// What discovery found per upstream, and when.
    discovered: std::sync::Mutex<HashMap<String, (i64, Arc<Discovered>)>>,
    /// One refresh per connection in this process; the store lease covers replicas.
    refreshing: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl UserAuth {
    /// `None` when no upstream has `user_auth`.
    pub fn new(
        config: &GatewayConfig,
        store: Store,
        sealer: Arc<Sealer>,
        clock: SharedClock,
        public_origin: String,
    ) -> Result<Option<Arc<UserAuth>>, reqwest::Error> {
        let mut targets = HashMap::new();
        let mut loopback = false;
        for u in &config.upstreams {
            if let (Some(settings), Transport::Http { url, .. }) = (&u.user_auth, &u.transport) {
                loopback |= url.scheme() == "http"
                    && url
                        .host_str()
                        .is_some_and(crate::oauth::clients::is_loopback_host);
                targets.insert(
                    u.name.clone(),
                    Target {
                        url: url.clone(),
                        settings: settings.clone(),
                    },
                );
            }
        }
        if targets.is_empty() {
            return Ok(None);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mcpgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Some(Arc::new(UserAuth {
            store,
            sealer,
            clock,
            http,
            // Metadata the upstream names is fetched through the fence; http
            // on loopback only when the operator put the upstream there.
            fetcher: FencedFetcher::new(loopback, Duration::from_secs(10)),
            public_origin,
            targets,
            discovered: std::sync::Mutex::new(HashMap::new()),
            refreshing: std::sync::Mutex::new(HashMap::new()),
        })))
    }

    pub fn covers(&self, upstream: &str) -> bool {
        self.targets.contains_key(upstream)
    }

    fn target(&self, upstream: &str) -> Result<&Target, UserAuthError> {
        self.targets
            .get(upstream)
            .ok_or_else(|| UserAuthError::UnknownUpstream(upstream.to_owned()))
    }

    pub fn redirect_uri(&self) -> String {
        format!("{}/connect/callback", self.public_origin)
    }

    /// mcpgate's Client ID Metadata Document (served at this URL).
    pub fn client_metadata_url(&self) -> String {
        format!("{}/connect/client-metadata.json", self.public_origin)
    }

    pub fn client_metadata(&self) -> serde_json::Value {
        serde_json::json!({
            "client_id": self.client_metadata_url(),
            "client_name": "mcpgate",
            "redirect_uris": [self.redirect_uri()],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        })
    }

    // -- the elicitation

    /// A connect link for `user_id` to `upstream`, valid for a while.
    pub fn connect_link(
        &self,
        upstream: &str,
        user_id: &str,
    ) -> Result<ConnectLink, UserAuthError> {
        self.target(upstream)?;
        let e = Elicitation {
            id: random_token(16)?,
            user_id: user_id.to_owned(),
            upstream: upstream.to_owned(),
            expires_at: self.clock.now() + ELICITATION_TTL_SECS,
        };
        let sealed = self.sealer.seal_json(ELICITATION_CONTEXT, &e)?;
        Ok(ConnectLink {
            upstream: upstream.to_owned(),
            url: format!("{}/connect/{upstream}?e={sealed}", self.public_origin),
            elicitation_id: e.id,
        })
    }

    /// Open a connect link's `e` for `upstream`: sealed by us, for it, unexpired.
    pub fn open_link(&self, upstream: &str, sealed: &str) -> Result<Elicitation, UserAuthError> {
        let e: Elicitation = self
            .sealer
            .open_json(ELICITATION_CONTEXT, sealed)
            .map_err(|_| UserAuthError::BadLink)?;
        if e.upstream != upstream || e.expires_at <= self.clock.now() {
            return Err(UserAuthError::BadLink);
        }
        Ok(e)
    }

    // -- the browser flow

    /// `GET /connect/{upstream}?e=`: the browser's signed-in user
    /// (`session_user`) must be the one the link was made for; then the
    /// attempt is stored and the browser sent to the authorization server.
    pub async fn begin(
        &self,
        upstream: &str,
        sealed: &str,
        session_user: &str,
        browser: Option<&str>,
    ) -> Result<Redirect, UserAuthError> {
        let e = self.open_link(upstream, sealed)?;
        // The spec's MUST: a link forwarded to (or phished from) another
        // user must not connect the victim's account to the sender's.
        if !crate::constant_time::ct_eq(&e.user_id, session_user) {
            return Err(UserAuthError::WrongUser);
        }
        let found = self.discover(upstream).await?;
        let client = self.client(upstream, &found.server).await?;
        let verifier = random_token(32)?;
        let state = random_token(32)?;
        // The cookie names the browser, not the attempt: a second connect in
        // the same browser (two upstreams at once) keeps the first one valid.
        let browser = match browser.filter(|b| b.len() >= 43) {
            Some(b) => b.to_owned(),
            None => random_token(32)?,
        };
        let now = self.clock.now();
        self.store
            .insert_connect_attempt(&ConnectAttemptRecord {
                state_hash: sha256_b64(&state),
                user_id: e.user_id.clone(),
                upstream: upstream.to_owned(),
                browser_hash: sha256_b64(&browser),
                secrets_sealed: self.sealer.seal_json(
                    ATTEMPT_CONTEXT,
                    &AttemptSecrets {
                        verifier: verifier.clone(),
                        issuer: found.server.issuer.clone(),
                    },
                )?,
                created_at: now,
                expires_at: now + ATTEMPT_TTL_SECS,
            })
            .await?;
        let mut location = Url::parse(&found.server.authorization_endpoint)
            .map_err(|_| UserAuthError::Discovery("authorization_endpoint".into()))?;
        {
            let mut q = location.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &client.client_id)
                .append_pair("redirect_uri", &self.redirect_uri())
                .append_pair("state", &state)
                .append_pair("code_challenge", &pkce_s256(&verifier))
                .append_pair("code_challenge_method", "S256")
                .extend_pairs(found.resource_pair())
                .extend_pairs(found.authorize_params.iter());
            if !found.scopes.is_empty() {
                q.append_pair("scope", &found.scopes.join(" "));
            }
        }
        Ok(Redirect {
            location: location.into(),
            browser,
        })
    }

    /// `GET /connect/callback`: the attempt `state` names, made in this
    /// browser by this user, is redeemed once. Returns the upstream's name.
    pub async fn finish(
        &self,
        state: &str,
        code: &str,
        iss: Option<&str>,
        browser: &str,
        session_user: Option<&str>,
    ) -> Result<String, UserAuthError> {
        let attempt = self.take_attempt(state, browser, session_user).await?;
        let secrets: AttemptSecrets = self
            .sealer
            .open_json(ATTEMPT_CONTEXT, &attempt.secrets_sealed)?;
        let found = self.discover(&attempt.upstream).await?;
        if found.server.issuer != secrets.issuer {
            return Err(UserAuthError::BadAttempt);
        }
        // RFC 9207 §2.4: an `iss` must be the attempt's server; a server that
        // says it sends one must have sent it. Every upstream shares one
        // redirect URI, so this is what stops a mix-up between them.
        match iss {
            Some(iss) if iss != secrets.issuer => return Err(UserAuthError::WrongIssuer),
            None if found.server.authorization_response_iss_parameter_supported => {
                return Err(UserAuthError::WrongIssuer);
            }
            _ => {}
        }
        let client = self.client(&attempt.upstream, &found.server).await?;
        let redirect_uri = self.redirect_uri();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", secrets.verifier.as_str()),
        ];
        form.extend(found.resource_pair());
        let answer = match self
            .token_request(&found.server.token_endpoint, &client, &form)
            .await
        {
            Err(UserAuthError::ClientRejected(reason)) => {
                self.forget_client(&attempt.upstream, &found.server, &client)
                    .await?;
                return Err(UserAuthError::ClientRejected(reason));
            }
            other => other?,
        };
        self.save(
            &attempt.upstream,
            &attempt.user_id,
            &found.server,
            answer,
            None,
        )
        .await?;
        tracing::info!(upstream = %attempt.upstream, user = %attempt.user_id, "user connected an upstream account");
        Ok(attempt.upstream)
    }

    /// The callback with `error=` (the user said no, or the server refused):
    /// the attempt is used up either way.
    pub async fn abandon(
        &self,
        state: &str,
        browser: &str,
        session_user: Option<&str>,
    ) -> Result<String, UserAuthError> {
        Ok(self
            .take_attempt(state, browser, session_user)
            .await?
            .upstream)
    }

    async fn take_attempt(
        &self,
        state: &str,
        browser: &str,
        session_user: Option<&str>,
    ) -> Result<ConnectAttemptRecord, UserAuthError> {
        let attempt = self
            .store
            .take_connect_attempt(&sha256_b64(state), self.clock.now())
            .await?
            .ok_or(UserAuthError::BadAttempt)?;
        if !crate::constant_time::ct_eq(&attempt.browser_hash, &sha256_b64(browser)) {
            return Err(UserAuthError::BadAttempt);
        }
        // Signed out or switched user meanwhile: not this attempt's user any more.
        if session_user.is_some_and(|u| u != attempt.user_id) {
            return Err(UserAuthError::WrongUser);
        }
        Ok(attempt)
    }

    async fn save(
        &self,
        upstream: &str,
        user_id: &str,
        server: &ServerMetadata,
        answer: TokenAnswer,
        previous: Option<(&UserTokenRecord, TokenSet)>,
    ) -> Result<Option<SecretString>, UserAuthError> {
        let now = self.clock.now();
        let set = TokenSet {
            access_token: answer.access_token,
            // A server that does not rotate keeps the old refresh token valid.
            refresh_token: answer
                .refresh_token
                .or_else(|| previous.as_ref().and_then(|(_, p)| p.refresh_token.clone())),
            // RFC 6749 §5.1: a refresh may leave out an unchanged scope.
            scope: answer
                .scope
                .or_else(|| previous.as_ref().and_then(|(_, p)| p.scope.clone())),
            issuer: server.issuer.clone(),
        };
        let expires_at = answer.expires_in.map(|s| now + s.max(0));
        let sealed = self.sealer.seal_json(TOKENS_CONTEXT, &set)?;
        match previous {
            None => {
                self.store
                    .put_user_upstream_tokens(upstream, user_id, &sealed, expires_at, now)
                    .await?;
            }
            Some((record, _)) => {
                let written = self
                    .store
                    .finish_user_upstream_refresh(
                        &record.connection_id,
                        record.version,
                        &sealed,
                        expires_at,
                        now,
                    )
                    .await?;
                if !written {
                    // Revoked or reconnected meanwhile: that state stands.
                    return Ok(None);
                }
            }
        }
        Ok(Some(SecretString::from(set.access_token)))
    }

    // -- tokens for calls

    /// Whether `user_id` has connected `upstream`.
    pub async fn is_connected(&self, upstream: &str, user_id: &str) -> Result<bool, UserAuthError> {
        Ok(self
            .store
            .user_upstream_tokens(upstream, user_id)
            .await?
            .is_some())
    }

    /// The user's access token for `upstream`, refreshed if it is about to
    /// expire; `None` when not connected (or the refresh was refused: the
    /// connection is then removed, and the next call asks again).
    pub async fn token(
        &self,
        upstream: &str,
        user_id: &str,
    ) -> Result<Option<SecretString>, UserAuthError> {
        let Some(record) = self.store.user_upstream_tokens(upstream, user_id).await? else {
            return Ok(None);
        };
        if fresh(&record, self.clock.now()) {
            let set: TokenSet = self.sealer.open_json(TOKENS_CONTEXT, &record.sealed)?;
            return Ok(Some(SecretString::from(set.access_token)));
        }
        let gate = {
            let mut map = lock(&self.refreshing);
            map.entry(record.connection_id.clone()).or_default().clone()
        };
        let _one_here = gate.lock().await;
        self.refresh_once(upstream, user_id).await
    }

    /// With the process gate held: reuse what another caller refreshed, or
    /// take the store lease and refresh, or wait for the lease holder.
    async fn refresh_once(
        &self,
        upstream: &str,
        user_id: &str,
    ) -> Result<Option<SecretString>, UserAuthError> {
        for _ in 0..(REFRESH_LEASE_SECS * 10 + 20) {
            let Some(record) = self.store.user_upstream_tokens(upstream, user_id).await? else {
                return Ok(None);
            };
            let now = self.clock.now();
            let set: TokenSet = self.sealer.open_json(TOKENS_CONTEXT, &record.sealed)?;
            if fresh(&record, now) {
                return Ok(Some(SecretString::from(set.access_token)));
            }
            if let Some(refreshed) = self
                .refresh_under_lease(upstream, user_id, &record, set, now)
                .await?
            {
                return Ok(refreshed);
            }
            // Another replica holds the lease: its result lands in the row.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(UserAuthError::RefreshStuck)
    }

    async fn refresh(
        &self,
        upstream: &str,
        user_id: &str,
        record: &UserTokenRecord,
        set: TokenSet,
    ) -> Result<Option<SecretString>, UserAuthError> {
        let Some(refresh_token) = set.refresh_token.clone() else {
            // Nothing to refresh with: the user connects again.
            self.store
                .delete_user_upstream_tokens(upstream, user_id)
                .await?;
            return Ok(None);
        };
        let found = self.discover(upstream).await?;
        let client = self.client(upstream, &found.server).await?;
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
        ];
        form.extend(found.resource_pair());
        match self
            .token_request(&found.server.token_endpoint, &client, &form)
            .await
        {
            Ok(answer) => {
                self.save(
                    upstream,
                    user_id,
                    &found.server,
                    answer,
                    Some((record, set)),
                )
                .await
            }
            Err(refused @ (UserAuthError::Refused(_) | UserAuthError::ClientRejected(_))) => {
                if matches!(refused, UserAuthError::ClientRejected(_)) {
                    self.forget_client(upstream, &found.server, &client).await?;
                }
                let reason = refused.to_string();
                tracing::info!(
                    upstream,
                    user = user_id,
                    reason,
                    "the upstream refused a refresh; the user connects again"
                );
                self.store
                    .delete_user_upstream_tokens(upstream, user_id)
                    .await?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The upstream refused the user's token (401, or 403 for scope).
    /// A token it no longer takes may just be older than its expiry said
    /// (or said nothing): refresh it now, whatever its expiry, and `true`
    /// means "retry the call". `false`: nothing to refresh with, or the
    /// server refused; the connection is then gone and the user connects again.
    pub async fn refused_by_upstream(
        &self,
        upstream: &str,
        user_id: &str,
        refreshed_already: bool,
    ) -> Result<bool, UserAuthError> {
        let Some(record) = self.store.user_upstream_tokens(upstream, user_id).await? else {
            return Ok(false);
        };
        if refreshed_already {
            // Refused again with a new token: connecting again is the way out.
            tracing::info!(
                upstream,
                user = user_id,
                "the upstream refused the user's token again; the user connects again"
            );
            self.store
                .delete_user_upstream_tokens(upstream, user_id)
                .await?;
            return Ok(false);
        }
        let set: TokenSet = self.sealer.open_json(TOKENS_CONTEXT, &record.sealed)?;
        match self
            .refresh_under_lease(upstream, user_id, &record, set, self.clock.now())
            .await?
        {
            Some(refreshed) => Ok(refreshed.is_some()),
            // Someone is refreshing it now: the retry takes their token.
            None => Ok(true),
        }
    }

    /// Take the row's refresh lease and refresh; `None`: another caller
    /// holds the lease. A failure that is not a refusal (the server was
    /// down) gives the lease back, so the next call tries again at once.
    async fn refresh_under_lease(
        &self,
        upstream: &str,
        user_id: &str,
        record: &UserTokenRecord,
        set: TokenSet,
        now: i64,
    ) -> Result<Option<Option<SecretString>>, UserAuthError> {
        if !self
            .store
            .lease_user_upstream_refresh(
                &record.connection_id,
                record.version,
                now,
                now + REFRESH_LEASE_SECS,
            )
            .await?
        {
            return Ok(None);
        }
        let refreshed = self.refresh(upstream, user_id, record, set).await;
        if refreshed.is_err() {
            self.store
                .release_user_upstream_refresh(&record.connection_id, record.version)
                .await?;
        }
        refreshed.map(Some)
    }

    // -- connections

    pub async fn connections(&self, user_id: &str) -> Result<Vec<Connection>, UserAuthError> {
        let rows = self.store.user_upstream_connections(user_id).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let scope = self
                    .sealer
                    .open_json::<TokenSet>(TOKENS_CONTEXT, &r.sealed)
                    .ok()
                    .and_then(|s| s.scope);
                Connection {
                    upstream: r.upstream,
                    connected_at: r.created_at,
                    refreshed_at: r.updated_at,
                    expires_at: r.expires_at,
                    scope,
                }
            })
            .collect())
    }

    /// Remove a connection; its tokens are revoked at the authorization
    /// server when it has a revocation endpoint (best effort). `false`: there was none.
    pub async fn revoke(&self, upstream: &str, user_id: &str) -> Result<bool, UserAuthError> {
        let Some(record) = self
            .store
            .delete_user_upstream_tokens(upstream, user_id)
            .await?
        else {
            return Ok(false);
        };
        if let Err(e) = self.revoke_upstream(upstream, &record).await {
            tracing::warn!(upstream, error = %e, "revoking at the upstream's authorization server failed; the connection is removed here");
        }
        Ok(true)
    }

    async fn revoke_upstream(
        &self,
        upstream: &str,
        record: &UserTokenRecord,
    ) -> Result<(), UserAuthError> {
        let set: TokenSet = self.sealer.open_json(TOKENS_CONTEXT, &record.sealed)?;
        let found = self.discover(upstream).await?;
        let Some(endpoint) = found.server.revocation_endpoint.clone() else {
            return Ok(());
        };
        let client = self.client(upstream, &found.server).await?;
        // The refresh token first: revoking it ends the grant at most servers.
        let (token, hint) = match &set.refresh_token {
            Some(r) => (r.as_str(), "refresh_token"),
            None => (set.access_token.as_str(), "access_token"),
        };
        let form = vec![("token", token), ("token_type_hint", hint)];
        let response = self
            .authenticated(self.http.post(&endpoint), &client, &form)
            .send()
            .await
            .map_err(|e| UserAuthError::Unreachable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(UserAuthError::Refused(format!(
                "revocation answered {}",
                response.status()
            )));
        }
        Ok(())
    }
}

fn fresh(record: &UserTokenRecord, now: i64) -> bool {
    record
        .expires_at
        .is_none_or(|exp| exp - EXPIRY_MARGIN_SECS > now)
}
