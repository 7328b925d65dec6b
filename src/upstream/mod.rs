//! The gateway: MCP servers behind mcpgate, over stdio or Streamable HTTP.
//! See README.md for naming, routing, isolation and what reaches an upstream.

// Logging and resources/subscribe are deprecated by SEP-2577 but still part
// of the 2025 revisions the gateway proxies.
#![allow(deprecated)]

pub mod connect_page;
pub mod http_call;
pub mod hub;
pub mod legacy_sse;
pub mod link;
pub mod lists;
mod locks;
pub mod outbound;
pub mod relay;
pub mod settings;
mod unconnected;
pub mod user_auth;

pub use self::unconnected::{ConnectShape, ToolCaller};

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock, atomic::Ordering},
    time::Duration,
};

use rmcp::{
    ErrorData,
    model::{
        CallToolRequest, CallToolRequestParams, ClientRequest, CompleteRequest,
        CompleteRequestParams, ErrorCode, GetPromptRequest, GetPromptRequestParams,
        ReadResourceRequest, ReadResourceRequestParams, Reference, ResultType, ServerResult,
        SetLevelRequest, SetLevelRequestParams, SubscribeRequest, SubscribeRequestParams, Tool,
        UnsubscribeRequest, UnsubscribeRequestParams,
    },
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use self::{
    hub::{Hub, Subscription},
    link::{Link, LinkState, LinkStatus},
    locks::{lock, read},
    outbound::{CallerIdentity, HeaderSources, TokenSource, UserTokenSource},
    relay::{Origin, Relay},
    settings::{
        CallerIdentityMode, GatewayConfig, Isolation, PrefixMode, Transport, UpstreamConfig,
    },
    user_auth::UserAuth,
};
use crate::{
    auth::Principal,
    oauth::keys::KeyRing,
    telemetry::metrics::{Metrics, UpstreamLabels},
};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("upstream {upstream} is unavailable: {reason}")]
    Unavailable { upstream: String, reason: String },
    #[error("upstream {upstream} did not answer within {secs} s")]
    Timeout { upstream: String, secs: u64 },
    #[error("upstream {upstream} has too many calls in flight")]
    Busy { upstream: String },
    #[error(
        "upstream {upstream} already serves its maximum of {max} users at once, all busy; retry later"
    )]
    TooManyUsers { upstream: String, max: usize },
    #[error("upstream {upstream} closed the connection before answering")]
    Closed { upstream: String },
    /// HTTP 401 or 403 from the upstream itself: the credentials mcpgate
    /// sent are not (or no longer) good there. Nothing ran.
    #[error("upstream {upstream} refused mcpgate's credentials (HTTP {status})")]
    CredentialsRefused { upstream: String, status: u16 },
    #[error("cancelled by the client")]
    Cancelled,
    #[error("{0}")]
    Upstream(ErrorData),
    #[error("upstream {upstream} answered {method} with an unexpected result")]
    UnexpectedResult { upstream: String, method: String },
    #[error("no upstream serves {0}")]
    NotFound(String),
    /// `user_auth`: the caller has not connected their account yet.
    #[error("connect your account at {} first: {}", .0.upstream, .0.url)]
    ConnectRequired(Box<user_auth::ConnectLink>),
    #[error("upstream {upstream}: {reason}")]
    UserAuth { upstream: String, reason: String },
    /// A 2026-07-28 retry whose mcpgate `requestState` does not verify.
    #[error("invalid requestState: {0}")]
    BadRequestState(#[from] user_auth::request_state::RequestStateError),
    #[error("upstream {upstream} still asked for input after {rounds} rounds")]
    InputRounds { upstream: String, rounds: usize },
    /// The caller's client failed an input request asked on its session.
    #[error("{}", .0.message)]
    Downstream(ErrorData),
}

/// The JSON-RPC code clients use for "request timed out".
const REQUEST_TIMEOUT: ErrorCode = ErrorCode(-32001);
/// MCP's "resource not found".
const RESOURCE_NOT_FOUND: ErrorCode = ErrorCode(-32002);
/// 2025-11-25 `URLElicitationRequiredError`.
pub const URL_ELICITATION_REQUIRED: ErrorCode = ErrorCode(-32042);

impl GatewayError {
    /// The one place gateway failures become JSON-RPC errors; upstream
    /// errors pass through unchanged.
    pub fn into_error_data(self) -> ErrorData {
        match self {
            GatewayError::Upstream(e) | GatewayError::Downstream(e) => e,
            GatewayError::Timeout { .. } => ErrorData::new(REQUEST_TIMEOUT, self.to_string(), None),
            GatewayError::NotFound(_) => ErrorData::new(RESOURCE_NOT_FOUND, self.to_string(), None),
            GatewayError::ConnectRequired(link) => ErrorData::new(
                URL_ELICITATION_REQUIRED,
                link.message(),
                Some(serde_json::json!({ "elicitations": [link.url_params()] })),
            ),
            GatewayError::BadRequestState(_) => ErrorData::invalid_params(self.to_string(), None),
            other => ErrorData::internal_error(other.to_string(), None),
        }
    }

    pub fn outcome(&self) -> &'static str {
        match self {
            GatewayError::Upstream(_) => "upstream_error",
            GatewayError::Timeout { .. } => "timeout",
            GatewayError::Busy { .. } | GatewayError::TooManyUsers { .. } => "busy",
            GatewayError::Closed { .. } => "closed",
            GatewayError::CredentialsRefused { .. } => "credentials_refused",
            GatewayError::Cancelled => "cancelled",
            GatewayError::Unavailable { .. } => "unavailable",
            GatewayError::UnexpectedResult { .. } => "bad_result",
            GatewayError::NotFound(_) => "not_found",
            GatewayError::ConnectRequired(_) => "connect_required",
            GatewayError::UserAuth { .. } => "user_auth",
            GatewayError::BadRequestState(_) => "bad_request_state",
            GatewayError::InputRounds { .. } => "input_rounds",
            GatewayError::Downstream(_) => "client_error",
        }
    }
}

/// What an upstream needs to open a connection.
struct Context {
    http: reqwest::Client,
    issuer: String,
    keys: Option<Arc<KeyRing>>,
    metrics: Arc<Metrics>,
    hub: Arc<Hub>,
    user_auth: Option<Arc<UserAuth>>,
}

pub struct Upstream {
    pub config: Arc<UpstreamConfig>,
    shared: Option<Arc<Link>>,
    per_user: Mutex<HashMap<String, Arc<Link>>>,
    token: Option<Arc<TokenSource>>,
    /// Resource URIs and template prefixes this upstream listed last, to
    /// route reads when there are several upstreams.
    resources: RwLock<Vec<String>>,
    templates: RwLock<Vec<String>>,
    /// Unprefixed tool and prompt names it listed last (prefix = "never").
    names: RwLock<Vec<String>>,
    /// `user_auth`: the tools it listed last to anyone, shown to users who
    /// have not connected yet (calling one asks them to connect).
    seen_tools: RwLock<Vec<Tool>>,
}

#[derive(Serialize)]
pub struct UpstreamHealth {
    pub name: String,
    pub transport: &'static str,
    pub isolation: Isolation,
    pub state: UpstreamState,
    pub restarts: u64,
    pub connections: usize,
}

/// What `/readyz` says of one upstream's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamState {
    /// The one shared connection's state.
    Shared(LinkStatus),
    /// How many of the per-user connections are up.
    PerUser { up: usize, open: usize },
}

impl std::fmt::Display for UpstreamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamState::Shared(status) => f.write_str(status.label()),
            UpstreamState::PerUser { up, open } => write!(f, "{up} of {open} up"),
        }
    }
}

impl Serialize for UpstreamState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl UpstreamHealth {
    /// A shared upstream that is not up degrades readiness; per-user
    /// connections come and go with their users and never do.
    pub fn degrades_readiness(&self) -> bool {
        matches!(self.state, UpstreamState::Shared(status) if status != LinkStatus::Up)
    }
}

pub struct Gateway {
    upstreams: Vec<Arc<Upstream>>,
    prefixing: bool,
    separator: String,
    context: Arc<Context>,
    stop: CancellationToken,
}

fn header_sources(upstream: &Upstream, caller: Option<Arc<CallerIdentity>>) -> HeaderSources {
    let mut sources = HeaderSources {
        upstream: upstream.config.name.clone(),
        token: upstream.token.clone(),
        caller,
        ..HeaderSources::default()
    };
    if let Transport::Http { headers, .. } = &upstream.config.transport {
        use secrecy::ExposeSecret;
        sources.static_headers = headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    http::HeaderName::from_bytes(k.as_bytes()).ok()?,
                    http::HeaderValue::from_str(v.expose_secret()).ok()?,
                ))
            })
            .collect();
    }
    sources
}

/// The most `input_required` rounds mcpgate drives for a session caller.
const INPUT_ROUNDS: usize = rmcp::model::DEFAULT_MRTR_MAX_ROUNDS;

/// Ask a session's client an upstream's input requests (sampling,
/// elicitation, roots) as server requests; its answers, by key.
async fn ask_session(
    peer: &rmcp::service::Peer<rmcp::RoleServer>,
    requests: rmcp::model::InputRequests,
) -> Result<rmcp::model::InputResponses, GatewayError> {
    use rmcp::model::{InputRequest, ServerRequest};
    let mut answers = rmcp::model::InputResponses::new();
    for (key, request) in requests {
        let request = match request {
            InputRequest::CreateMessage(r) => ServerRequest::CreateMessageRequest(r),
            InputRequest::Elicitation(r) => ServerRequest::ElicitRequest(r),
            InputRequest::ListRoots(r) => ServerRequest::ListRootsRequest(r),
            _ => {
                return Err(GatewayError::Downstream(ErrorData::internal_error(
                    "the upstream asked for an input mcpgate cannot ask",
                    None,
                )));
            }
        };
        let answer = peer.send_request(request).await.map_err(|e| match e {
            rmcp::ServiceError::McpError(e) => GatewayError::Downstream(e),
            other => GatewayError::Downstream(ErrorData::internal_error(
                format!("the client did not answer: {other}"),
                None,
            )),
        })?;
        let value = serde_json::to_value(&answer).map_err(|e| {
            GatewayError::Downstream(ErrorData::internal_error(e.to_string(), None))
        })?;
        answers.insert(key, value);
    }
    Ok(answers)
}

/// A result from an upstream on a 2025 revision has no `resultType`; rmcp's
/// own results carry `complete` and drop it for 2025 peers, so forwarded ones
/// must look the same to a 2026-07-28 client.
fn mark_complete(result: &mut ServerResult) {
    let result_type = match result {
        ServerResult::CompleteResult(r) => &mut r.result_type,
        ServerResult::GetPromptResult(r) => &mut r.result_type,
        ServerResult::ReadResourceResult(r) => &mut r.result_type,
        ServerResult::CallToolResult(r) => &mut r.result_type,
        _ => return,
    };
    if result_type.is_none() {
        *result_type = Some(ResultType::COMPLETE);
    }
}

impl Gateway {
    /// Starts every shared upstream; per-user ones start on first use.
    pub fn start(
        config: &GatewayConfig,
        builtin_tools: bool,
        issuer: String,
        keys: Option<Arc<KeyRing>>,
        metrics: Arc<Metrics>,
        user_auth: Option<Arc<UserAuth>>,
    ) -> Result<Arc<Gateway>, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mcpgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let context = Arc::new(Context {
            http: http.clone(),
            issuer,
            keys,
            metrics,
            hub: Arc::new(Hub::default()),
            user_auth,
        });
        let mut upstreams = Vec::new();
        for cfg in &config.upstreams {
            let cfg = Arc::new(cfg.clone());
            let token = match &cfg.transport {
                Transport::Http {
                    oauth: Some(creds), ..
                } => Some(Arc::new(TokenSource::new((**creds).clone(), http.clone()))),
                _ => None,
            };
            let mut upstream = Upstream {
                config: cfg.clone(),
                shared: None,
                per_user: Mutex::new(HashMap::new()),
                token,
                resources: RwLock::new(Vec::new()),
                templates: RwLock::new(Vec::new()),
                names: RwLock::new(Vec::new()),
                seen_tools: RwLock::new(Vec::new()),
            };
            context
                .metrics
                .upstream_up
                .get_or_create(&UpstreamLabels {
                    upstream: cfg.name.clone(),
                })
                .set(0);
            if cfg.isolation == Isolation::Shared {
                let relay = Arc::new(Relay::new(cfg.name.clone(), None, context.hub.clone()));
                upstream.shared = Some(Link::start(
                    cfg.clone(),
                    relay,
                    header_sources(&upstream, None),
                    http.clone(),
                    link::state_hook(context.metrics.clone()),
                ));
            }
            upstreams.push(Arc::new(upstream));
        }
        let prefixing = match config.prefix {
            PrefixMode::Always => true,
            PrefixMode::Never => false,
            PrefixMode::Auto => upstreams.len() > 1 || builtin_tools,
        };
        let gateway = Arc::new(Gateway {
            upstreams,
            prefixing,
            separator: config.separator.clone(),
            context,
            stop: CancellationToken::new(),
        });
        gateway.spawn_reaper();
        Ok(gateway)
    }

    pub fn hub(&self) -> &Hub {
        &self.context.hub
    }

    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// Close idle per-user connections.
    fn spawn_reaper(self: &Arc<Self>) {
        let gateway = Arc::downgrade(self);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(gateway) = gateway.upgrade() else {
                    return;
                };
                for upstream in &gateway.upstreams {
                    let idle = upstream.config.idle_timeout;
                    lock(&upstream.per_user).retain(|owner, link| {
                        let keep = link.busy() || link.idle_for() < idle;
                        if !keep {
                            tracing::info!(upstream = %upstream.config.name, owner = %owner, "closing an idle per-user upstream");
                            link.stop();
                        }
                        keep
                    });
                }
            }
        });
    }

    pub fn shutdown(&self) {
        self.stop.cancel();
        for upstream in &self.upstreams {
            if let Some(link) = &upstream.shared {
                link.stop();
            }
            for link in lock(&upstream.per_user).values() {
                link.stop();
            }
        }
    }

    pub fn health(&self) -> Vec<UpstreamHealth> {
        self.upstreams
            .iter()
            .map(|u| {
                let transport = match u.config.transport {
                    Transport::Stdio { .. } => "stdio",
                    Transport::Http { .. } => "http",
                };
                let (state, restarts, connections) = match &u.shared {
                    Some(link) => (
                        UpstreamState::Shared(link.state().status()),
                        link.restarts.load(Ordering::Relaxed),
                        1,
                    ),
                    None => {
                        let links: Vec<Arc<Link>> = lock(&u.per_user).values().cloned().collect();
                        let up = links
                            .iter()
                            .filter(|l| matches!(l.state(), LinkState::Up(_)))
                            .count();
                        (
                            UpstreamState::PerUser {
                                up,
                                open: links.len(),
                            },
                            links
                                .iter()
                                .map(|l| l.restarts.load(Ordering::Relaxed))
                                .sum(),
                            links.len(),
                        )
                    }
                };
                UpstreamHealth {
                    name: u.config.name.clone(),
                    transport,
                    isolation: u.config.isolation,
                    state,
                    restarts,
                    connections,
                }
            })
            .collect()
    }

    /// The connection serving `principal` on `upstream`. Per-user ones are
    /// capped: a new principal beyond `max_per_user_links` closes the least
    /// recently used idle one, or is refused when every one is busy.
    fn link(&self, upstream: &Upstream, principal: &Principal) -> Result<Arc<Link>, GatewayError> {
        if let Some(link) = &upstream.shared {
            return Ok(link.clone());
        }
        let owner = principal.owner_key();
        let mut links = lock(&upstream.per_user);
        if let Some(link) = links.get(&owner)
            && !matches!(link.state(), LinkState::Stopped)
        {
            return Ok(link.clone());
        }
        let max = upstream.config.max_per_user_links;
        if links.len() >= max {
            links.retain(|_, link| !matches!(link.state(), LinkState::Stopped));
        }
        if links.len() >= max {
            let victim = links
                .iter()
                .filter(|(_, link)| !link.busy())
                .max_by_key(|(_, link)| link.idle_for())
                .map(|(key, _)| key.clone());
            let Some(victim) = victim else {
                tracing::warn!(upstream = %upstream.config.name, max, "per-user upstream connections exhausted; call refused");
                return Err(GatewayError::TooManyUsers {
                    upstream: upstream.config.name.clone(),
                    max,
                });
            };
            if let Some(link) = links.remove(&victim) {
                tracing::info!(upstream = %upstream.config.name, owner = %victim, max, "closing the least recently used per-user upstream to make room");
                link.stop();
            }
        }
        let caller = match &upstream.config.identity {
            CallerIdentityMode::None => None,
            identity => Some(Arc::new(CallerIdentity::new(
                identity.clone(),
                principal.clone(),
                self.context.issuer.clone(),
                self.context.keys.clone(),
            ))),
        };
        let relay = Arc::new(Relay::new(
            upstream.config.name.clone(),
            Some(owner.clone()),
            self.context.hub.clone(),
        ));
        let mut sources = header_sources(upstream, caller);
        if let Some(auth) = &self.context.user_auth
            && auth.covers(&upstream.config.name)
        {
            sources.user_token = Some(UserTokenSource {
                auth: auth.clone(),
                user_id: principal.subject.clone(),
            });
        }
        let link = Link::start(
            upstream.config.clone(),
            relay,
            sources,
            self.context.http.clone(),
            link::state_hook(self.context.metrics.clone()),
        );
        links.insert(owner, link.clone());
        Ok(link)
    }

    fn exposed(&self, upstream: &Upstream, name: &str) -> String {
        if self.prefixing {
            format!("{}{}{name}", upstream.config.name, self.separator)
        } else {
            name.to_owned()
        }
    }

    /// The upstream and its own name for an exposed tool or prompt name.
    pub fn route_name(&self, exposed: &str) -> Option<(Arc<Upstream>, String)> {
        if self.prefixing {
            let (prefix, rest) = exposed.split_once(&self.separator)?;
            let upstream = self.upstreams.iter().find(|u| u.config.name == prefix)?;
            return Some((upstream.clone(), rest.to_owned()));
        }
        if let [only] = self.upstreams.as_slice() {
            return Some((only.clone(), exposed.to_owned()));
        }
        self.upstreams
            .iter()
            .find(|u| read(&u.names).iter().any(|x| x == exposed))
            .map(|u| (u.clone(), exposed.to_owned()))
    }

    /// The upstream serving `uri`; when no list has named it yet (a client may
    /// read a URI it knows without listing), the caller's lists are fetched once.
    async fn find_uri(
        &self,
        uri: &str,
        principal: &Principal,
        cancel: &CancellationToken,
    ) -> Result<Arc<Upstream>, GatewayError> {
        if let Some(upstream) = self.route_uri(uri) {
            return Ok(upstream);
        }
        self.list_resources(principal, cancel).await;
        self.list_resource_templates(principal, cancel).await;
        self.route_uri(uri)
            .ok_or_else(|| GatewayError::NotFound(uri.to_owned()))
    }

    fn route_uri(&self, uri: &str) -> Option<Arc<Upstream>> {
        if let [only] = self.upstreams.as_slice() {
            return Some(only.clone());
        }
        let listed = |u: &&Arc<Upstream>| read(&u.resources).iter().any(|x| x == uri);
        let templated = |u: &&Arc<Upstream>| {
            read(&u.templates)
                .iter()
                .any(|p| !p.is_empty() && uri.starts_with(p.as_str()))
        };
        self.upstreams
            .iter()
            .find(listed)
            .or_else(|| self.upstreams.iter().find(templated))
            .cloned()
    }

    /// One request to `upstream` on behalf of `principal`.
    async fn forward(
        &self,
        upstream: &Upstream,
        principal: &Principal,
        request: ClientRequest,
        origin: Option<Origin>,
        cancel: &CancellationToken,
    ) -> Result<ServerResult, GatewayError> {
        self.require_connection(upstream, principal).await?;
        let link = self.link(upstream, principal)?;
        let mut result = link.request(request, origin, cancel).await?;
        mark_complete(&mut result);
        Ok(result)
    }

    pub async fn call_tool(
        &self,
        upstream: &Upstream,
        mut params: CallToolRequestParams,
        original: String,
        principal: &Principal,
        origin: Origin,
        cancel: &CancellationToken,
    ) -> Result<ServerResult, GatewayError> {
        params.name = original.into();
        // rmcp sets its own progress token upstream; the caller's is kept in `origin`.
        if let Some(meta) = params.meta.as_mut() {
            meta.remove("progressToken");
        }
        let started = std::time::Instant::now();
        let labels = UpstreamLabels {
            upstream: upstream.config.name.clone(),
        };
        // A caller with a back-channel (a session) cannot take an upstream's
        // `input_required`: mcpgate asks it the input requests itself and
        // retries. A 2026-07-28 caller (`origin.asks`) gets it as it is.
        let session = origin
            .asks
            .is_none()
            .then(|| origin.downstream.peer().cloned())
            .flatten();
        let retry = session.as_ref().map(|_| params.clone());
        let mut result = self
            .forward(
                upstream,
                principal,
                ClientRequest::CallToolRequest(CallToolRequest::new(params)),
                Some(origin.clone()),
                cancel,
            )
            .await;
        if let (Some(peer), Some(mut retry)) = (session, retry) {
            let mut rounds = 0;
            while let Ok(ServerResult::InputRequiredResult(asked)) = &result {
                rounds += 1;
                if rounds > INPUT_ROUNDS {
                    return Err(GatewayError::InputRounds {
                        upstream: upstream.config.name.clone(),
                        rounds: INPUT_ROUNDS,
                    });
                }
                retry.input_responses = Some(
                    ask_session(&peer, asked.input_requests.clone().unwrap_or_default()).await?,
                );
                retry.request_state = asked.request_state.clone();
                result = self
                    .forward(
                        upstream,
                        principal,
                        ClientRequest::CallToolRequest(CallToolRequest::new(retry.clone())),
                        Some(origin.clone()),
                        cancel,
                    )
                    .await;
            }
        }
        self.context
            .metrics
            .upstream_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        result
    }

    pub async fn get_prompt(
        &self,
        upstream: &Upstream,
        mut params: GetPromptRequestParams,
        original: String,
        principal: &Principal,
        origin: Origin,
        cancel: &CancellationToken,
    ) -> Result<ServerResult, GatewayError> {
        params.name = original;
        self.forward(
            upstream,
            principal,
            ClientRequest::GetPromptRequest(GetPromptRequest::new(params)),
            Some(origin),
            cancel,
        )
        .await
    }

    pub async fn read_resource(
        &self,
        params: ReadResourceRequestParams,
        principal: &Principal,
        origin: Origin,
        cancel: &CancellationToken,
    ) -> Result<ServerResult, GatewayError> {
        let upstream = self.find_uri(&params.uri, principal, cancel).await?;
        self.forward(
            &upstream,
            principal,
            ClientRequest::ReadResourceRequest(ReadResourceRequest::new(params)),
            Some(origin),
            cancel,
        )
        .await
    }

    pub async fn subscribe(
        &self,
        params: SubscribeRequestParams,
        principal: &Principal,
        session: u64,
        change: Subscription,
        cancel: &CancellationToken,
    ) -> Result<(), GatewayError> {
        let upstream = self.find_uri(&params.uri, principal, cancel).await?;
        let uri = params.uri.clone();
        let request = match change {
            Subscription::Subscribe => {
                ClientRequest::SubscribeRequest(SubscribeRequest::new(params))
            }
            Subscription::Unsubscribe => {
                // The upstream holds one subscription per link: it is
                // removed only when no other session or listen stream on
                // that link still follows the resource.
                self.context
                    .hub
                    .subscribe(&upstream.config.name, &uri, session, change);
                let owner = upstream.shared.is_none().then(|| principal.owner_key());
                if self
                    .context
                    .hub
                    .followed(&upstream.config.name, &uri, owner.as_deref())
                {
                    return Ok(());
                }
                let mut unsubscribe = UnsubscribeRequestParams::new(params.uri);
                unsubscribe.meta = params.meta;
                ClientRequest::UnsubscribeRequest(UnsubscribeRequest::new(unsubscribe))
            }
        };
        self.forward(&upstream, principal, request, None, cancel)
            .await?;
        self.context
            .hub
            .subscribe(&upstream.config.name, &uri, session, change);
        Ok(())
    }

    pub async fn complete(
        &self,
        mut params: CompleteRequestParams,
        principal: &Principal,
        cancel: &CancellationToken,
    ) -> Result<ServerResult, GatewayError> {
        let upstream = match &mut params.r#ref {
            Reference::Prompt(prompt) => {
                let (upstream, original) = self
                    .route_name(&prompt.name)
                    .ok_or_else(|| GatewayError::NotFound(prompt.name.clone()))?;
                prompt.name = original;
                upstream
            }
            Reference::Resource(resource) => {
                self.find_uri(&resource.uri, principal, cancel).await?
            }
            _ => {
                return Err(GatewayError::NotFound(
                    "this completion reference".to_owned(),
                ));
            }
        };
        self.forward(
            &upstream,
            principal,
            ClientRequest::CompleteRequest(CompleteRequest::new(params)),
            None,
            cancel,
        )
        .await
    }

    /// Every upstream gets the caller's level; failures are only logged.
    pub async fn set_level(
        &self,
        params: SetLevelRequestParams,
        principal: &Principal,
        cancel: &CancellationToken,
    ) {
        for upstream in &self.upstreams {
            let request = ClientRequest::SetLevelRequest(SetLevelRequest::new(params.clone()));
            if let Err(e) = self
                .forward(upstream, principal, request, None, cancel)
                .await
            {
                tracing::debug!(upstream = %upstream.config.name, error = %e, "logging/setLevel not applied upstream");
            }
        }
    }
}
