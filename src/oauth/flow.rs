//! The authorization server's domain logic, free of HTTP: registration,
//! the authorization request, login, consent, codes, token grants,
//! revocation and introspection. The HTTP edge (`oauth::http`) parses
//! requests, calls these, and maps [`OAuthError`] to RFC codes. Proxy mode's
//! upstream sign-in is in `oauth::federation`.

use std::{collections::BTreeSet, sync::Arc, time::Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    cimd::CimdResolver,
    clients::{AuthMethod, ClientMetadata, MetadataError, find_redirect},
    crypto::{Sealer, ct_eq, pkce_s256, random_token, sha256_b64},
    keys::KeyRing,
    passwords,
    ratelimit::{LoginLimits, LoginRefusal, WindowLimiter},
};
use crate::{
    idp::{Identity, UpstreamIdp},
    oauth::settings::LocalAuthSettings as LocalAuthConfig,
    store::{AuthRequestRecord, ClientRecord, CodeRecord, Consumed, NewRefresh, Store, StoreError},
};

/// Errors with their RFC 6749 / 7591 / 8707 codes; the edge picks the status.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("client authentication failed")]
    InvalidClient,
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    InvalidTarget(String),
    #[error("{0}")]
    UnsupportedGrantType(String),
    #[error("{0}")]
    InvalidRedirectUri(String),
    #[error("{0}")]
    InvalidClientMetadata(String),
    #[error("too many requests; try again later")]
    RateLimited,
    #[error("{0}")]
    TooLarge(String),
    /// The cap on never-used registrations is reached.
    #[error("too many registered clients have never been used; try again later")]
    TooManyClients,
    #[error("the server cannot complete the request")]
    Server(String),
}

impl OAuthError {
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::InvalidTarget(_) => "invalid_target",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
            OAuthError::InvalidRedirectUri(_) => "invalid_redirect_uri",
            OAuthError::InvalidClientMetadata(_) => "invalid_client_metadata",
            OAuthError::RateLimited => "slow_down",
            OAuthError::TooLarge(_) => "invalid_request",
            OAuthError::TooManyClients => "temporarily_unavailable",
            OAuthError::Server(_) => "server_error",
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        OAuthError::Server(e.to_string())
    }
}

impl From<MetadataError> for OAuthError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::RedirectUri(m) => OAuthError::InvalidRedirectUri(m),
            MetadataError::Metadata(m) => OAuthError::InvalidClientMetadata(m),
        }
    }
}

/// How a password sign-in ended. `Failed` names the user only when the
/// name exists, so what was typed never needs to be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    SignedIn { user_id: String },
    Failed { user_id: Option<String> },
}

/// Why a password sign-in was not even tried.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("too many sign-in attempts; try again in {} minute(s)", retry_after_secs.div_ceil(60))]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("too many sign-in attempts; try again in a minute")]
    Busy,
    #[error(transparent)]
    Flow(#[from] OAuthError),
}

impl LoginError {
    /// Seconds for `Retry-After`, when waiting helps.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            LoginError::TooManyAttempts { retry_after_secs } => Some(*retry_after_secs),
            LoginError::Busy => Some(60),
            LoginError::Flow(_) => None,
        }
    }
}

/// A client as the flows see it: registered (DCR) or described by a document (CIMD).
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub metadata: Arc<ClientMetadata>,
    pub secret_hash: Option<String>,
    /// The document's host for CIMD clients (shown on the consent page).
    pub document_host: Option<String>,
    /// Registered clients: when one last obtained a token (the sweeper's clock).
    pub last_used_at: Option<i64>,
}

/// `last_used_at` is written at most this often: the sweeper counts in days,
/// and a write per refresh would cost every refresh a store round trip.
const TOUCH_INTERVAL_SECS: i64 = 3600;

impl Client {
    fn touch_due(&self, now: i64) -> bool {
        self.document_host.is_none()
            && self
                .last_used_at
                .is_none_or(|at| now - at >= TOUCH_INTERVAL_SECS)
    }
}

/// An authorization request that passed validation, waiting for login and consent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingRequest {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub scope: Vec<String>,
    pub resource: String,
    pub document_host: Option<String>,
    /// Every redirect URI of the client is loopback: warn on the consent page.
    pub loopback_only: bool,
    /// The request named `redirect_uri` (rather than using the only
    /// registered one): `/token` must then repeat it (RFC 6749 §4.1.3).
    #[serde(default)]
    pub redirect_uri_sent: bool,
}

/// Why `/authorize` refused. Every case is answered with a page, never a
/// redirect: the clients of this server register themselves (DCR) or are
/// described by a document anyone can publish (CIMD), so a redirect URI of
/// theirs is no more trusted than the attacker who chose it (RFC 9700
/// §4.11.2). The only redirect without a code is `access_denied`, after
/// the user saw the consent page.
#[derive(Debug)]
pub enum AuthorizeError {
    Page(String),
    /// Too many authorization requests from one address.
    RateLimited,
    Server(String),
}

/// Raw `/authorize` query parameters.
#[derive(Debug, Default, Clone)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub state: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
    /// Names that appeared more than once (RFC 6749 §3.1: an error).
    pub duplicated: Vec<String>,
}

/// The handles the browser keeps for a pending request.
#[derive(Debug, Clone)]
pub struct Pending {
    pub request_id: String,
    pub csrf: String,
    pub request: PendingRequest,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    client_id: &'a str,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    groups: &'a [String],
}

/// An authenticated `/introspect` caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introspector {
    /// A configured resource server: any token.
    ResourceServer,
    /// A registered confidential client: only tokens issued to it. Anything
    /// else is reported inactive (RFC 7662 §2.2 allows it), so the endpoint
    /// is no status oracle for stolen tokens and discloses no subjects.
    Client(String),
}

impl Introspector {
    /// May this caller learn about a token issued to `client_id`?
    pub fn may_see(&self, client_id: Option<&str>) -> bool {
        match self {
            Introspector::ResourceServer => true,
            Introspector::Client(own) => client_id == Some(own.as_str()),
        }
    }
}

/// Credentials a token-endpoint caller presented.
#[derive(Debug, Clone, Default)]
pub struct ClientCredentials {
    pub client_id: Option<String>,
    pub secret: Option<String>,
    /// Presented with HTTP Basic (the method must then be client_secret_basic).
    pub basic: bool,
}

pub struct AuthorizationServer {
    pub issuer: String,
    pub resource: String,
    pub scopes_supported: Vec<String>,
    pub(super) config: LocalAuthConfig,
    pub(super) store: Store,
    keys: Arc<KeyRing>,
    pub(super) sealer: Arc<Sealer>,
    cimd: CimdResolver,
    login_limits: LoginLimits,
    registrations: WindowLimiter,
    /// `/authorize` per address: each request stores a pending row.
    authorizations: WindowLimiter,
    /// Password checks run on a few dedicated threads (see [`passwords::CheckPool`]).
    password_checks: passwords::CheckPool,
    /// Proxy mode: users sign in at this identity provider instead of the login page.
    pub(super) upstream: Option<Arc<UpstreamIdp>>,
    clock: crate::clock::SharedClock,
}

const REQUEST_TTL_SECS: i64 = 600;
/// `state` is stored with the pending request and echoed back; clients
/// use short random values, and anything longer is storage for free.
pub const MAX_STATE_BYTES: usize = 2048;
pub(super) const CODE_CONTEXT: &str = "auth_codes.response";
pub(super) const REFRESH_CONTEXT: &str = "refresh_tokens.response";
/// Scopes accepted in requests besides the resource's own; never in tokens' checks.
const IDENTITY_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

impl AuthorizationServer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        issuer: String,
        resource: String,
        scopes_supported: Vec<String>,
        config: LocalAuthConfig,
        store: Store,
        keys: Arc<KeyRing>,
        sealer: Arc<Sealer>,
        cimd: CimdResolver,
    ) -> AuthorizationServer {
        let login_limits = LoginLimits::new(
            config.login_max_failures,
            config.login_max_failures_per_account,
            std::time::Duration::from_secs(300),
        );
        let registrations = WindowLimiter::new(
            config.registrations_per_minute,
            std::time::Duration::from_secs(60),
        );
        let authorizations = WindowLimiter::new(
            config.authorize_requests_per_minute,
            std::time::Duration::from_secs(60),
        );
        AuthorizationServer {
            issuer,
            resource,
            scopes_supported,
            config,
            store,
            keys,
            sealer,
            cimd,
            login_limits,
            registrations,
            authorizations,
            password_checks: passwords::CheckPool::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            upstream: None,
            clock: crate::clock::system(),
        }
    }

    /// Read the time from `clock` (tests move a manual clock instead of sleeping).
    pub fn with_clock(mut self, clock: crate::clock::SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Count the password checks on `counter` (`/metrics`).
    pub fn counting_password_checks(
        mut self,
        counter: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        self.password_checks.count_on(counter);
        self
    }

    /// Proxy mode: sign users in at `upstream`.
    pub fn with_upstream(mut self, upstream: Arc<UpstreamIdp>) -> Self {
        self.upstream = Some(upstream);
        self
    }

    pub fn is_proxy(&self) -> bool {
        self.upstream.is_some()
    }

    /// RFC 8414 metadata.
    pub fn metadata(&self) -> serde_json::Value {
        let i = &self.issuer;
        let mut scopes = self.scopes_supported.clone();
        scopes.push("offline_access".to_owned());
        json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "registration_endpoint": format!("{i}/register"),
            "revocation_endpoint": format!("{i}/revoke"),
            "introspection_endpoint": format!("{i}/introspect"),
            "jwks_uri": format!("{i}/jwks.json"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": scopes,
            "client_id_metadata_document_supported": self.config.cimd.enabled,
            "authorization_response_iss_parameter_supported": true,
        })
    }

    // ------------------------------------------------------------ registration

    /// RFC 7591: validate, store, answer with the registered metadata.
    pub async fn register(
        &self,
        body: serde_json::Value,
        client_address: &str,
    ) -> Result<serde_json::Value, OAuthError> {
        if !self.registrations.hit(client_address) {
            return Err(OAuthError::RateLimited);
        }
        let metadata: ClientMetadata = serde_json::from_value(body).map_err(|_| {
            OAuthError::InvalidClientMetadata("the body is not valid client metadata".to_owned())
        })?;
        let metadata = metadata.normalise_for_registration()?;
        let client_id = random_token(18).map_err(|e| OAuthError::Server(e.to_string()))?;
        let secret = match metadata.auth_method() {
            AuthMethod::None => None,
            _ => Some(random_token(32).map_err(|e| OAuthError::Server(e.to_string()))?),
        };
        let now = self.clock.now();
        let stored =
            serde_json::to_string(&metadata).map_err(|e| OAuthError::Server(e.to_string()))?;
        let max_unused = i64::try_from(self.config.max_unused_clients).unwrap_or(i64::MAX);
        let inserted = self
            .store
            .insert_client_capped(
                &ClientRecord {
                    client_id: client_id.clone(),
                    secret_hash: secret.as_deref().map(sha256_b64),
                    metadata: stored,
                    created_at: now,
                    last_used_at: None,
                },
                max_unused,
            )
            .await?;
        if !inserted {
            tracing::warn!(
                max_unused_clients = self.config.max_unused_clients,
                "registration refused: too many registered clients have never been used"
            );
            return Err(OAuthError::TooManyClients);
        }
        let mut response =
            serde_json::to_value(&metadata).map_err(|e| OAuthError::Server(e.to_string()))?;
        if let Some(obj) = response.as_object_mut() {
            obj.insert("client_id".into(), json!(client_id));
            obj.insert("client_id_issued_at".into(), json!(now));
            if let Some(secret) = secret {
                obj.insert("client_secret".into(), json!(secret));
                obj.insert("client_secret_expires_at".into(), json!(0));
            }
        }
        Ok(response)
    }

    /// Look a client up by id: a document URL or a registration.
    pub async fn client(&self, client_id: &str) -> Result<Option<Client>, OAuthError> {
        if self.config.cimd.enabled && self.cimd.is_document_id(client_id) {
            let metadata = self
                .cimd
                .resolve(client_id)
                .await
                .map_err(|e| OAuthError::InvalidClientMetadata(e.to_string()))?;
            return Ok(Some(Client {
                client_id: client_id.to_owned(),
                metadata,
                secret_hash: None,
                last_used_at: None,
                document_host: url::Url::parse(client_id)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned)),
            }));
        }
        let Some(record) = self.store.get_client(client_id).await? else {
            return Ok(None);
        };
        let metadata: ClientMetadata = serde_json::from_str(&record.metadata)
            .map_err(|e| OAuthError::Server(format!("stored client metadata: {e}")))?;
        Ok(Some(Client {
            client_id: record.client_id,
            metadata: Arc::new(metadata),
            secret_hash: record.secret_hash,
            document_host: None,
            last_used_at: record.last_used_at,
        }))
    }

    // ------------------------------------------------------------ authorization request

    /// Validate `/authorize`; every refusal is a page (see [`AuthorizeError`]).
    /// `browser` is the binding secret the browser already holds, reused so
    /// sign-ins started in several tabs all stay valid; returns the one to set.
    /// `client_address` is the limit key of the caller: each request stores
    /// a pending row, so requests are counted per address before anything
    /// else (a metadata-document client id also costs a fetch).
    pub async fn begin(
        &self,
        params: AuthorizeParams,
        browser: Option<&str>,
        client_address: &str,
    ) -> Result<(Pending, String), AuthorizeError> {
        if !self.authorizations.hit(client_address) {
            return Err(AuthorizeError::RateLimited);
        }
        let page = |m: &str| Err(AuthorizeError::Page(m.to_owned()));
        if let Some(name) = params.duplicated.first() {
            return Err(AuthorizeError::Page(format!(
                "invalid_request: the parameter {name} appears more than once"
            )));
        }
        let client_id = params
            .client_id
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| AuthorizeError::Page("client_id is missing".to_owned()))?;
        // Checked before the client is looked up: an oversized request is
        // refused the same way for every client, and nothing is stored.
        if params
            .state
            .as_ref()
            .is_some_and(|s| s.len() > MAX_STATE_BYTES)
        {
            return page(&format!(
                "invalid_request: state is longer than {MAX_STATE_BYTES} bytes"
            ));
        }
        let client = match self.client(&client_id).await {
            Ok(Some(c)) => c,
            Ok(None) => return page("this client is not registered here"),
            Err(OAuthError::InvalidClientMetadata(m)) => return Err(AuthorizeError::Page(m)),
            Err(e) => return Err(AuthorizeError::Server(e.to_string())),
        };
        let redirect_uri = match &params.redirect_uri {
            Some(requested) => match find_redirect(&client.metadata.redirect_uris, requested) {
                Some(_) => requested.clone(),
                None => return page("redirect_uri is not registered for this client"),
            },
            None if client.metadata.redirect_uris.len() == 1 => {
                client.metadata.redirect_uris[0].clone()
            }
            None => return page("redirect_uri is missing"),
        };
        let state = params.state.clone();
        if params.response_type.as_deref() != Some("code") {
            return page("unsupported_response_type: response_type must be code");
        }
        let Some(challenge) = params.code_challenge.clone() else {
            return page(
                "invalid_request: PKCE is required: send code_challenge with code_challenge_method=S256",
            );
        };
        if params.code_challenge_method.as_deref() != Some("S256") {
            return page("invalid_request: code_challenge_method must be S256");
        }
        if challenge.len() != 43
            || !challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return page("invalid_request: code_challenge is not a S256 challenge");
        }
        let resource = match &params.resource {
            None => self.resource.clone(),
            Some(r) if self.is_our_resource(r) => self.resource.clone(),
            Some(_) => return page("invalid_target: resource is not served here"),
        };
        let scope = self.grantable_scopes(params.scope.as_deref());
        let request = PendingRequest {
            client_name: client
                .metadata
                .client_name
                .clone()
                .unwrap_or_else(|| client_id.clone()),
            client_id,
            redirect_uri,
            state,
            code_challenge: challenge,
            scope,
            resource,
            document_host: client.document_host.clone(),
            loopback_only: client
                .metadata
                .redirect_uris
                .iter()
                .all(|u| u.starts_with("http://")),
            redirect_uri_sent: params.redirect_uri.is_some(),
        };
        let request_id = random_token(32).map_err(|e| AuthorizeError::Server(e.to_string()))?;
        let browser = match browser.filter(|b| is_browser_secret(b)) {
            Some(existing) => existing.to_owned(),
            None => random_token(32).map_err(|e| AuthorizeError::Server(e.to_string()))?,
        };
        let csrf = csrf_token(&request_id, &browser);
        let now = self.clock.now();
        let text =
            serde_json::to_string(&request).map_err(|e| AuthorizeError::Server(e.to_string()))?;
        self.store
            .insert_auth_request(&AuthRequestRecord {
                id_hash: sha256_b64(&request_id),
                browser_hash: sha256_b64(&browser),
                csrf_hash: sha256_b64(&csrf),
                request: text,
                created_at: now,
                expires_at: now + REQUEST_TTL_SECS,
            })
            .await
            .map_err(|e| AuthorizeError::Server(e.to_string()))?;
        Ok((
            Pending {
                request_id,
                csrf,
                request,
            },
            browser,
        ))
    }

    /// RFC 8707: our resource, tolerating case in scheme/host, a trailing
    /// slash, and query parameters some clients append.
    pub fn is_our_resource(&self, candidate: &str) -> bool {
        let (Ok(ours), Ok(theirs)) = (url::Url::parse(&self.resource), url::Url::parse(candidate))
        else {
            return false;
        };
        theirs.fragment().is_none()
            && ours.scheme() == theirs.scheme()
            && ours.host_str() == theirs.host_str()
            && ours.port_or_known_default() == theirs.port_or_known_default()
            && ours.path().trim_end_matches('/') == theirs.path().trim_end_matches('/')
    }

    /// Requested scopes we know, or the baseline when none are known.
    pub fn grantable_scopes(&self, requested: Option<&str>) -> Vec<String> {
        let known: BTreeSet<String> = requested
            .unwrap_or_default()
            .split_whitespace()
            .filter(|s| self.scopes_supported.iter().any(|k| k == s) || IDENTITY_SCOPES.contains(s))
            .map(str::to_owned)
            .collect();
        if known.iter().all(|s| IDENTITY_SCOPES.contains(&s.as_str())) {
            let mut all: BTreeSet<String> = self.scopes_supported.iter().cloned().collect();
            all.extend(known);
            return all.into_iter().collect();
        }
        known.into_iter().collect()
    }

    // ------------------------------------------------------------ login and consent

    /// The CSRF token of a form: only a holder of the browser cookie can compute it.
    pub fn csrf_token(&self, request_id: &str, browser: &str) -> String {
        csrf_token(request_id, browser)
    }

    /// Load a pending request the browser holds, checking its binding and CSRF token.
    pub async fn pending(
        &self,
        request_id: &str,
        browser: &str,
        csrf: Option<&str>,
    ) -> Result<PendingRequest, String> {
        let record = self
            .store
            .get_auth_request(&sha256_b64(request_id), self.clock.now())
            .await
            .map_err(|e| e.to_string())?
            .ok_or(
                "this sign-in request has expired or was already used; start again from your app",
            )?;
        if !ct_eq(&record.browser_hash, &sha256_b64(browser)) {
            return Err("this sign-in request was started in another browser".to_owned());
        }
        if let Some(csrf) = csrf
            && !ct_eq(&record.csrf_hash, &sha256_b64(csrf))
        {
            return Err("the form has expired; start again from your app".to_owned());
        }
        serde_json::from_str(&record.request).map_err(|e| e.to_string())
    }

    /// Check a password. The attempt is counted against the address's and
    /// the account's allowances *before* the check (see [`LoginLimits`]),
    /// so a concurrent burst gets no more checks than the limit.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client_address: &str,
    ) -> Result<LoginOutcome, LoginError> {
        // A digest: what was typed (maybe a password) is neither kept nor
        // bounded in size in the limiter's memory.
        let account = sha256_b64(username);
        let attempt = self
            .login_limits
            .begin(&account, client_address, Instant::now())
            .map_err(|refusal| match refusal {
                LoginRefusal::Exhausted(wait) => LoginError::TooManyAttempts {
                    retry_after_secs: wait.as_secs().max(1),
                },
                LoginRefusal::Busy => LoginError::Busy,
            })?;
        let user = self
            .store
            .find_local_user(username)
            .await
            .map_err(OAuthError::from)?;
        let hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| passwords::decoy_hash().to_owned());
        let ok = match self.password_checks.verify(password.to_owned(), hash).await {
            Ok(ok) => ok,
            // Nothing was checked: the attempt is given back.
            Err(passwords::PoolBusy) => {
                attempt.abandoned();
                return Err(LoginError::Busy);
            }
        };
        match user {
            Some(user) if ok => {
                attempt.succeeded(Instant::now());
                Ok(LoginOutcome::SignedIn { user_id: user.id })
            }
            user => {
                attempt.failed();
                Ok(LoginOutcome::Failed {
                    user_id: user.map(|u| u.id),
                })
            }
        }
    }

    /// Start a browser session for `user_id`; returns the cookie value.
    pub async fn start_session(&self, user_id: &str) -> Result<String, OAuthError> {
        let id = random_token(32).map_err(|e| OAuthError::Server(e.to_string()))?;
        self.store
            .insert_session(
                &sha256_b64(&id),
                user_id,
                self.clock.now() + self.config.session_ttl_secs as i64,
            )
            .await?;
        Ok(id)
    }

    /// The user id of a live session cookie.
    pub async fn session_user(&self, cookie: &str) -> Result<Option<String>, OAuthError> {
        Ok(self
            .store
            .session_user(&sha256_b64(cookie), self.clock.now())
            .await?
            .map(|u| u.id))
    }

    /// Has the user already approved this client for these scopes?
    pub async fn remembered(
        &self,
        user_id: &str,
        request: &PendingRequest,
    ) -> Result<bool, OAuthError> {
        if !self.config.remember_consent {
            return Ok(false);
        }
        Ok(
            match self.store.consent(user_id, &request.client_id).await? {
                Some(scope) => {
                    let granted: BTreeSet<&str> = scope.split_whitespace().collect();
                    request.scope.iter().all(|s| granted.contains(s.as_str()))
                }
                None => false,
            },
        )
    }

    /// Consume the pending request (single use) and, if approved, issue a
    /// code. Returns the URL to send the browser to.
    pub async fn decide(
        &self,
        request_id: &str,
        user_id: &str,
        approve: bool,
        remember: bool,
    ) -> Result<String, OAuthError> {
        self.decide_hashed(&sha256_b64(request_id), user_id, approve, remember, None)
            .await
    }

    /// [`Self::decide`] by the stored hash of the request id; `family_id`
    /// names the grant in advance (proxy mode stores upstream tokens under it).
    pub(super) async fn decide_hashed(
        &self,
        request_hash: &str,
        user_id: &str,
        approve: bool,
        remember: bool,
        family_id: Option<String>,
    ) -> Result<String, OAuthError> {
        let record = self
            .store
            .take_auth_request(request_hash, self.clock.now())
            .await?
            .ok_or_else(|| {
                OAuthError::InvalidRequest(
                    "the sign-in request expired or was already used".to_owned(),
                )
            })?;
        let request: PendingRequest =
            serde_json::from_str(&record.request).map_err(|e| OAuthError::Server(e.to_string()))?;
        if !approve {
            return Ok(self.redirect_with(
                &request.redirect_uri,
                &[("error", "access_denied")],
                request.state.as_deref(),
            ));
        }
        let scope = request.scope.join(" ");
        if remember && self.config.remember_consent {
            self.store
                .save_consent(user_id, &request.client_id, &scope)
                .await?;
        }
        let code = random_token(32).map_err(|e| OAuthError::Server(e.to_string()))?;
        let now = self.clock.now();
        self.store
            .insert_code(&CodeRecord {
                code_hash: sha256_b64(&code),
                client_id: request.client_id.clone(),
                user_id: user_id.to_owned(),
                redirect_uri: request.redirect_uri.clone(),
                code_challenge: request.code_challenge.clone(),
                scope,
                resource: request.resource.clone(),
                family_id: family_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                created_at: now,
                expires_at: now + self.config.code_ttl_secs as i64,
                redeemed_at: None,
                response_sealed: None,
                redirect_uri_sent: request.redirect_uri_sent,
            })
            .await?;
        Ok(self.redirect_with(
            &request.redirect_uri,
            &[("code", &code)],
            request.state.as_deref(),
        ))
    }

    /// `redirect_uri` plus parameters, `state` and `iss` (RFC 9207), each once.
    pub fn redirect_with(
        &self,
        redirect_uri: &str,
        params: &[(&str, &str)],
        state: Option<&str>,
    ) -> String {
        let mut url = match url::Url::parse(redirect_uri) {
            Ok(u) => u,
            Err(_) => return redirect_uri.to_owned(),
        };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(state) = state {
                q.append_pair("state", state);
            }
            q.append_pair("iss", &self.issuer);
        }
        url.to_string()
    }

    // ------------------------------------------------------------ token endpoint

    async fn authenticate_client(&self, creds: &ClientCredentials) -> Result<Client, OAuthError> {
        let client_id = creds
            .client_id
            .as_deref()
            .ok_or(OAuthError::InvalidClient)?;
        let client = match self.client(client_id).await {
            Ok(Some(c)) => c,
            Ok(None) | Err(OAuthError::InvalidClientMetadata(_)) => {
                return Err(OAuthError::InvalidClient);
            }
            Err(e) => return Err(e),
        };
        match (client.metadata.auth_method(), &client.secret_hash) {
            (AuthMethod::None, _) => Ok(client),
            (method, Some(hash)) => {
                let presented = creds.secret.as_deref().ok_or(OAuthError::InvalidClient)?;
                if (method == AuthMethod::SecretBasic) != creds.basic {
                    return Err(OAuthError::InvalidClient);
                }
                if ct_eq(hash, &sha256_b64(presented)) {
                    Ok(client)
                } else {
                    Err(OAuthError::InvalidClient)
                }
            }
            (_, None) => Err(OAuthError::InvalidClient),
        }
    }

    fn mint(
        &self,
        client_id: &str,
        user_id: &str,
        scope: &str,
        resource: &str,
        refresh: Option<&str>,
        profile: Option<&Identity>,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.clock.now();
        let ttl = self.config.access_token_ttl_secs;
        let claims = AccessClaims {
            iss: &self.issuer,
            sub: user_id,
            aud: resource,
            iat: now,
            nbf: now,
            exp: now + ttl as i64,
            jti: uuid::Uuid::new_v4().to_string(),
            client_id,
            scope: scope.to_owned(),
            email: profile.and_then(|p| p.email.as_deref()),
            name: profile.and_then(|p| p.name.as_deref()),
            groups: profile.map(|p| p.groups.as_slice()).unwrap_or_default(),
        };
        let access_token = self
            .keys
            .sign(&claims)
            .map_err(|e| OAuthError::Server(e.to_string()))?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer".to_owned(),
            expires_in: ttl,
            refresh_token: refresh.map(str::to_owned),
            scope: scope.to_owned(),
        })
    }

    fn seal(&self, context: &str, response: &TokenResponse) -> Result<String, OAuthError> {
        let bytes = serde_json::to_vec(response).map_err(|e| OAuthError::Server(e.to_string()))?;
        self.sealer
            .seal(context, &bytes)
            .map_err(|e| OAuthError::Server(e.to_string()))
    }

    fn unseal(&self, context: &str, sealed: &str) -> Result<TokenResponse, OAuthError> {
        let bytes = self
            .sealer
            .open(context, sealed)
            .map_err(|e| OAuthError::Server(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| OAuthError::Server(e.to_string()))
    }

    /// `grant_type=authorization_code`.
    pub async fn redeem_code(
        &self,
        creds: &ClientCredentials,
        code: Option<&str>,
        verifier: Option<&str>,
        redirect_uri: Option<&str>,
        resource: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let client = self.authenticate_client(creds).await?;
        let code = code.ok_or_else(|| OAuthError::InvalidRequest("code is missing".to_owned()))?;
        let verifier = verifier.ok_or_else(|| {
            OAuthError::InvalidRequest("code_verifier is missing (PKCE)".to_owned())
        })?;
        if !is_pkce_verifier(verifier) {
            return Err(OAuthError::InvalidGrant(
                "code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636)"
                    .to_owned(),
            ));
        }
        let now = self.clock.now();
        let hash = sha256_b64(code);
        let record = self
            .store
            .get_code(&hash)
            .await?
            .ok_or_else(|| OAuthError::InvalidGrant("unknown authorization code".to_owned()))?;
        if record.client_id != client.client_id {
            // Refused, but the grant is left alone: a code seen by another
            // client (a log, a referrer, a shared screen) proves nothing about
            // its holder, and burning the family on that would let anyone who
            // saw a code end the victim's session. A second presentation by
            // the client it was issued to still revokes (below). Worded as
            // for an unknown code: another client learns nothing about
            // whether a code it holds is live.
            return Err(OAuthError::InvalidGrant(
                "unknown authorization code".to_owned(),
            ));
        }
        if record.expires_at <= now {
            return Err(OAuthError::InvalidGrant("the code has expired".to_owned()));
        }
        match redirect_uri {
            Some(r) if r != record.redirect_uri => {
                return Err(OAuthError::InvalidGrant(
                    "redirect_uri differs from the authorization request".to_owned(),
                ));
            }
            None if record.redirect_uri_sent => {
                return Err(OAuthError::InvalidRequest(
                    "redirect_uri is required: the authorization request named one".to_owned(),
                ));
            }
            _ => {}
        }
        if !ct_eq(&pkce_s256(verifier), &record.code_challenge) {
            return Err(OAuthError::InvalidGrant(
                "code_verifier does not match the challenge".to_owned(),
            ));
        }
        if resource.is_some_and(|r| !self.is_our_resource(r)) {
            return Err(OAuthError::InvalidTarget(
                "resource differs from the authorized one".to_owned(),
            ));
        }
        if record.redeemed_at.is_none() {
            if self.store.find_user(&record.user_id).await?.is_none() {
                return Err(OAuthError::InvalidGrant(
                    "the user no longer exists".to_owned(),
                ));
            }
            let refresh = (client.metadata.allows_refresh()
                || record
                    .scope
                    .split_whitespace()
                    .any(|s| s == "offline_access"))
            .then(|| random_token(32))
            .transpose()
            .map_err(|e| OAuthError::Server(e.to_string()))?;
            let profile = self.profile_of(&record.user_id).await?;
            let response = self.mint(
                &record.client_id,
                &record.user_id,
                &record.scope,
                &record.resource,
                refresh.as_deref(),
                profile.as_ref(),
            )?;
            let sealed = self.seal(CODE_CONTEXT, &response)?;
            let new_refresh = refresh.as_deref().map(|r| NewRefresh {
                token_hash: sha256_b64(r),
                family_id: record.family_id.clone(),
                client_id: record.client_id.clone(),
                user_id: record.user_id.clone(),
                scope: record.scope.clone(),
                resource: record.resource.clone(),
                expires_at: now + self.config.refresh_token_ttl_secs as i64,
            });
            if self
                .store
                .redeem_code(&hash, now, &sealed, new_refresh.as_ref())
                .await?
                == Consumed::Won
            {
                if client.touch_due(now) {
                    self.store.touch_client(&record.client_id, now).await?;
                }
                return Ok(response);
            }
        }
        // Redeemed before: the same client retrying at once gets the same answer.
        let record = self
            .store
            .get_code(&hash)
            .await?
            .ok_or_else(|| OAuthError::InvalidGrant("unknown authorization code".to_owned()))?;
        let within = record
            .redeemed_at
            .is_some_and(|at| now - at <= self.config.code_replay_window_secs as i64);
        if within && let Some(sealed) = &record.response_sealed {
            return self.unseal(CODE_CONTEXT, sealed);
        }
        let revoked = self.store.revoke_family(&record.family_id, now).await?;
        tracing::warn!(client_id = %record.client_id, revoked, "authorization code replayed; its tokens are revoked");
        Err(OAuthError::InvalidGrant(
            "the code was already used".to_owned(),
        ))
    }

    /// `grant_type=refresh_token`: rotate; a rotated token seen again after
    /// the grace window revokes the whole family (RFC 9700 §4.14.2).
    pub async fn refresh(
        &self,
        creds: &ClientCredentials,
        token: Option<&str>,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let client = self.authenticate_client(creds).await?;
        let token = token
            .ok_or_else(|| OAuthError::InvalidRequest("refresh_token is missing".to_owned()))?;
        let hash = sha256_b64(token);
        let now = self.clock.now();
        let record = self
            .store
            .get_refresh(&hash)
            .await?
            .ok_or_else(|| OAuthError::InvalidGrant("unknown refresh token".to_owned()))?;
        if record.client_id != client.client_id {
            // Worded as for an unknown token: /token is no status oracle for
            // stolen refresh tokens (and nothing rotates or is revoked).
            return Err(OAuthError::InvalidGrant("unknown refresh token".to_owned()));
        }
        if record.revoked_at.is_some() || record.expires_at <= now {
            return Err(OAuthError::InvalidGrant(
                "the refresh token is no longer valid".to_owned(),
            ));
        }
        if resource.is_some_and(|r| !self.is_our_resource(r)) {
            return Err(OAuthError::InvalidTarget(
                "resource differs from the authorized one".to_owned(),
            ));
        }
        let granted: BTreeSet<&str> = record.scope.split_whitespace().collect();
        let scope = match scope {
            Some(s) => {
                let asked: Vec<&str> = s.split_whitespace().collect();
                if asked.iter().any(|a| !granted.contains(a)) {
                    return Err(OAuthError::InvalidScope(
                        "a requested scope was not granted".to_owned(),
                    ));
                }
                asked.join(" ")
            }
            None => record.scope.clone(),
        };
        // A removed user's refresh tokens were revoked with the user (same
        // transaction), so `revoked_at` above already covers that case.
        if record.rotated_at.is_none() {
            let profile = self.profile_of(&record.user_id).await?;
            let next = random_token(32).map_err(|e| OAuthError::Server(e.to_string()))?;
            let response = self.mint(
                &record.client_id,
                &record.user_id,
                &scope,
                &record.resource,
                Some(&next),
                profile.as_ref(),
            )?;
            let sealed = self.seal(REFRESH_CONTEXT, &response)?;
            let new = NewRefresh {
                token_hash: sha256_b64(&next),
                family_id: record.family_id.clone(),
                client_id: record.client_id.clone(),
                user_id: record.user_id.clone(),
                scope: record.scope.clone(),
                resource: record.resource.clone(),
                expires_at: now + self.config.refresh_token_ttl_secs as i64,
            };
            if self.store.rotate_refresh(&hash, now, &sealed, &new).await? == Consumed::Won {
                // Proxy mode: only the winner of the rotation talks to the IdP
                // (concurrent upstream refreshes would look like a replay
                // there), and a grant the IdP ended ends here too.
                self.check_upstream_grant(&record.family_id, now).await?;
                if client.touch_due(now) {
                    self.store.touch_client(&record.client_id, now).await?;
                }
                return Ok(response);
            }
        }
        let record = self
            .store
            .get_refresh(&hash)
            .await?
            .ok_or_else(|| OAuthError::InvalidGrant("unknown refresh token".to_owned()))?;
        let within = record
            .rotated_at
            .is_some_and(|at| now - at <= self.config.refresh_reuse_grace_secs as i64);
        if within
            && record.revoked_at.is_none()
            && let Some(sealed) = &record.response_sealed
        {
            return self.unseal(REFRESH_CONTEXT, sealed);
        }
        let revoked = self.store.revoke_family(&record.family_id, now).await?;
        tracing::warn!(client_id = %record.client_id, revoked, "rotated refresh token reused; the family is revoked");
        Err(OAuthError::InvalidGrant(
            "the refresh token was already used".to_owned(),
        ))
    }

    /// Authenticate an introspection caller: a configured resource server
    /// (`introspection_clients`), or a confidential client, which learns only
    /// about its own tokens. Public clients cannot introspect (401).
    pub async fn introspector(
        &self,
        creds: &ClientCredentials,
    ) -> Result<Introspector, OAuthError> {
        if let Some(id) = creds.client_id.as_deref()
            && let Some(rs) = self
                .config
                .introspection_clients
                .iter()
                .find(|c| c.client_id == id)
        {
            use secrecy::ExposeSecret;
            let presented = creds.secret.as_deref().ok_or(OAuthError::InvalidClient)?;
            // Hashed first, so the comparison's time says nothing about length.
            return if ct_eq(
                &sha256_b64(rs.client_secret.expose_secret()),
                &sha256_b64(presented),
            ) {
                Ok(Introspector::ResourceServer)
            } else {
                Err(OAuthError::InvalidClient)
            };
        }
        let client = self.authenticate_client(creds).await?;
        if client.metadata.auth_method() == AuthMethod::None {
            return Err(OAuthError::InvalidClient);
        }
        Ok(Introspector::Client(client.client_id))
    }

    /// RFC 7662 for a refresh token: inactive unless the caller may see it.
    pub async fn introspect_refresh(
        &self,
        caller: &Introspector,
        token: &str,
    ) -> Result<serde_json::Value, OAuthError> {
        let now = self.clock.now();
        Ok(match self.store.get_refresh(&sha256_b64(token)).await? {
            Some(r)
                if r.revoked_at.is_none()
                    && r.rotated_at.is_none()
                    && r.expires_at > now
                    && caller.may_see(Some(&r.client_id)) =>
            {
                json!({
                    "active": true,
                    "iss": self.issuer,
                    "sub": r.user_id,
                    "client_id": r.client_id,
                    "scope": r.scope,
                    "exp": r.expires_at,
                    "token_type": "refresh_token",
                })
            }
            _ => json!({"active": false}),
        })
    }

    /// RFC 7009: revoke a refresh token's family; unknown tokens are fine.
    pub async fn revoke(&self, creds: &ClientCredentials, token: &str) -> Result<(), OAuthError> {
        let client = self.authenticate_client(creds).await?;
        if let Some(record) = self.store.get_refresh(&sha256_b64(token)).await?
            && record.client_id == client.client_id
        {
            self.store
                .revoke_family(&record.family_id, self.clock.now())
                .await?;
            self.end_upstream_grant(&record.family_id).await?;
        }
        // Access tokens are self-contained JWTs: they lapse at `exp`.
        Ok(())
    }
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters. A short verifier could be
/// guessed from its challenge.
fn is_pkce_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A value we could have minted (32 random bytes, base64url): anything else
/// in the cookie is replaced rather than trusted as a binding secret.
fn is_browser_secret(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn csrf_token(request_id: &str, browser: &str) -> String {
    sha256_b64(&format!("csrf|{request_id}|{browser}"))
}
