//! The calls in flight on one link, and the rmcp client handler that relays
//! what the upstream sends (sampling, elicitation, roots, progress, logging,
//! list changes, resource updates) to the downstream session it belongs to.

// Sampling, roots, logging and resources/subscribe are deprecated by SEP-2577
// but still part of the 2025 revisions the gateway proxies.
#![allow(deprecated)]

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rmcp::{
    ClientHandler, ErrorData, RoleClient, RoleServer, ServiceError,
    model::{
        ClientCapabilities, ClientConfig, ClientResult, CreateMessageRequest,
        CreateMessageRequestParams, CreateMessageResult, ElicitRequest, ElicitRequestParams,
        ElicitResult, Implementation, InputRequest, JsonRpcMessage, JsonRpcNotification,
        ListRootsRequest, ListRootsResult, LoggingMessageNotificationParam,
        ProgressNotificationParam, ProgressToken, ResourceUpdatedNotificationParam,
        ServerNotification, ServerRequest,
    },
    service::{NotificationContext, Peer, RequestContext},
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
    transport::Transport as RmcpTransport,
};

use tokio::sync::{mpsc, oneshot};

use super::{hub::Hub, locks::lock};

/// Where a proxied request came from.
#[derive(Clone)]
pub struct Origin {
    pub session: u64,
    pub peer: Peer<RoleServer>,
    /// The downstream request's progress token, if it asked for progress.
    pub progress: Option<ProgressToken>,
    /// For a 2026-07-28 caller, which has no back-channel: the upstream's
    /// requests go here, to be asked with `input_required` and answered by
    /// the caller's retry (`mcp/input_bridge.rs`), not to `peer`.
    pub asks: Option<mpsc::Sender<InputAsk>>,
}

/// An upstream's sampling, elicitation or roots request for a caller
/// without a back-channel, and where its answer (the client's result) goes.
pub struct InputAsk {
    pub request: InputRequest,
    pub answer: oneshot::Sender<Result<serde_json::Value, ErrorData>>,
}

/// Where an upstream's request for the caller goes.
enum Caller {
    Peer(Peer<RoleServer>),
    Asks(mpsc::Sender<InputAsk>),
}

impl Caller {
    fn of(origin: Origin) -> Caller {
        match origin.asks {
            Some(asks) => Caller::Asks(asks),
            None => Caller::Peer(origin.peer),
        }
    }
}

/// Ask a caller without a back-channel; its answer, read as `T`.
async fn ask<T: serde::de::DeserializeOwned>(
    asks: &mpsc::Sender<InputAsk>,
    request: InputRequest,
    what: &str,
) -> Result<T, ErrorData> {
    let (answer, answered) = oneshot::channel();
    asks.send(InputAsk { request, answer })
        .await
        .map_err(|_| ErrorData::internal_error("the caller's request has ended", None))?;
    let value = answered.await.map_err(|_| {
        ErrorData::internal_error(format!("the client did not answer the {what}"), None)
    })??;
    serde_json::from_value(value).map_err(|e| {
        ErrorData::invalid_params(
            format!("the client's answer to the {what} is malformed: {e}"),
            None,
        )
    })
}

struct InFlight {
    origin: Origin,
    upstream_token: Option<ProgressToken>,
    /// When the answer arrived. rmcp handles each notification in a task of
    /// its own, so one the upstream sent just before its answer may be
    /// handled just after it: finished calls stay findable for a moment.
    finished: Option<Instant>,
}

/// How long a finished call still receives its late notifications.
const LATE_NOTIFICATION_GRACE: Duration = Duration::from_secs(2);
/// The longest a finished call waits for its notifications to be relayed.
const SETTLE_LIMIT: Duration = Duration::from_millis(50);

/// The calls in flight on one link, to attribute what the upstream sends.
pub struct Relay {
    upstream: String,
    owner: Option<String>,
    hub: Arc<Hub>,
    calls: Mutex<HashMap<u64, InFlight>>,
    /// Finished calls in the order they finished, to drop each from `calls`
    /// once its grace is over without scanning them all on every call.
    finished: Mutex<VecDeque<(Instant, u64)>>,
    next: AtomicU64,
    /// Progress and log notifications read from the upstream, and relayed.
    received: AtomicU64,
    relayed: AtomicU64,
}

impl Relay {
    pub fn new(upstream: String, owner: Option<String>, hub: Arc<Hub>) -> Self {
        Relay {
            upstream,
            owner,
            hub,
            calls: Mutex::new(HashMap::new()),
            finished: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(1),
            received: AtomicU64::new(0),
            relayed: AtomicU64::new(0),
        }
    }

    /// Whether a call is in flight.
    pub fn busy(&self) -> bool {
        lock(&self.calls).values().any(|c| c.finished.is_none())
    }

    /// Registers one call on behalf of `origin` (a call with none, such as a
    /// list, is only counted); finished when the guard drops.
    pub fn begin(&self, origin: Option<Origin>) -> CallGuard<'_> {
        let call = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(origin) = origin {
            lock(&self.calls).insert(
                call,
                InFlight {
                    origin,
                    upstream_token: None,
                    finished: None,
                },
            );
        }
        CallGuard { relay: self, call }
    }

    /// Marks `call` finished at `now` and forgets the calls whose grace is
    /// over, oldest first: only those are looked at, not every call kept.
    fn finish(&self, call: u64, now: Instant) {
        let mut calls = lock(&self.calls);
        let mut finished = lock(&self.finished);
        if let Some(c) = calls.get_mut(&call) {
            c.finished = Some(now);
            finished.push_back((now, call));
        }
        while let Some(&(at, old)) = finished.front()
            && now.saturating_duration_since(at) >= LATE_NOTIFICATION_GRACE
        {
            finished.pop_front();
            calls.remove(&old);
        }
    }

    /// The downstream session a server-to-client request belongs to. stdio
    /// and HTTP responses do not say which call caused them, so the answer
    /// is only certain when every call in flight comes from one session;
    /// otherwise the request is refused rather than shown to the wrong user.
    fn attributable(&self) -> Option<Origin> {
        let calls = lock(&self.calls);
        let mut sessions = calls
            .values()
            .filter(|c| c.finished.is_none())
            .map(|c| &c.origin);
        let first = sessions.next()?;
        sessions
            .all(|o| o.session == first.session)
            .then(|| first.clone())
    }

    /// rmcp hands each notification to a task of its own, so progress or a
    /// log message the upstream sent before its answer may still be waiting
    /// to be relayed when the answer arrives. The transport counted them as
    /// they came in; wait (briefly) until that many have been relayed, so the
    /// caller gets them before its result and while its call still counts.
    pub async fn settle(&self) {
        let received = self.received.load(Ordering::Acquire);
        let started = Instant::now();
        while self.relayed.load(Ordering::Acquire) < received && started.elapsed() < SETTLE_LIMIT {
            tokio::task::yield_now().await;
            if started.elapsed() > Duration::from_millis(2) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Marks one progress or log notification relayed (or dropped) when dropped.
struct Relaying<'a>(&'a AtomicU64);

impl Drop for Relaying<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

fn is_relayed_notification(message: &RxJsonRpcMessage<RoleClient>) -> bool {
    matches!(
        message,
        JsonRpcMessage::Notification(JsonRpcNotification {
            notification: ServerNotification::ProgressNotification(_)
                | ServerNotification::LoggingMessageNotification(_),
            ..
        })
    )
}

/// An upstream transport that counts the progress and log notifications
/// coming in, in the order rmcp reads them (see [`Relay::settle`]).
pub struct CountingTransport<T> {
    inner: T,
    relay: Arc<Relay>,
}

impl<T> CountingTransport<T> {
    pub fn new(inner: T, relay: Arc<Relay>) -> Self {
        CountingTransport { inner, relay }
    }
}

impl<T: RmcpTransport<RoleClient>> RmcpTransport<RoleClient> for CountingTransport<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        let message = self.inner.receive().await?;
        if is_relayed_notification(&message) {
            self.relay.received.fetch_add(1, Ordering::AcqRel);
        }
        Some(message)
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.inner.close().await
    }
}

/// The rmcp client handler of one link: relays what its upstream sends.
#[derive(Clone)]
pub struct RelayClient {
    relay: Arc<Relay>,
}

impl RelayClient {
    pub fn new(relay: Arc<Relay>) -> Self {
        RelayClient { relay }
    }
}

fn no_caller(what: &str) -> ErrorData {
    ErrorData::invalid_request(
        format!("mcpgate cannot tell which caller this {what} is for; it was not forwarded"),
        None,
    )
}

fn downstream_failed(e: ServiceError) -> ErrorData {
    match e {
        ServiceError::McpError(e) => e,
        other => ErrorData::internal_error(format!("the client did not answer: {other}"), None),
    }
}

impl ClientHandler for RelayClient {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        // Forwarded to the caller's client; refused there if it lacks them.
        capabilities.sampling = Some(Default::default());
        capabilities.elicitation = Some(Default::default());
        ClientConfig::new(
            capabilities,
            Implementation::new("mcpgate", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let origin = self
            .relay
            .attributable()
            .ok_or_else(|| no_caller("sampling request"))?;
        let peer = match Caller::of(origin) {
            Caller::Asks(asks) => {
                let request = CreateMessageRequest::new(params);
                return ask(
                    &asks,
                    InputRequest::CreateMessage(request),
                    "sampling request",
                )
                .await;
            }
            Caller::Peer(peer) => peer,
        };
        match peer
            .send_request(ServerRequest::CreateMessageRequest(
                CreateMessageRequest::new(params),
            ))
            .await
            .map_err(downstream_failed)?
        {
            ClientResult::CreateMessageResult(r) => Ok(*r),
            _ => Err(ErrorData::internal_error(
                "the client answered sampling with something else",
                None,
            )),
        }
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let origin = self
            .relay
            .attributable()
            .ok_or_else(|| no_caller("elicitation"))?;
        let peer = match Caller::of(origin) {
            Caller::Asks(asks) => {
                let request = InputRequest::Elicitation(ElicitRequest::new(params));
                return ask(&asks, request, "elicitation").await;
            }
            Caller::Peer(peer) => peer,
        };
        match peer
            .send_request(ServerRequest::ElicitRequest(ElicitRequest::new(params)))
            .await
            .map_err(downstream_failed)?
        {
            ClientResult::ElicitResult(r) => Ok(r),
            _ => Err(ErrorData::internal_error(
                "the client answered elicitation with something else",
                None,
            )),
        }
    }

    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        let origin = self
            .relay
            .attributable()
            .ok_or_else(|| no_caller("roots request"))?;
        let peer = match Caller::of(origin) {
            Caller::Asks(asks) => {
                let request = InputRequest::ListRoots(ListRootsRequest::default());
                return ask(&asks, request, "roots request").await;
            }
            Caller::Peer(peer) => peer,
        };
        match peer
            .send_request(ServerRequest::ListRootsRequest(ListRootsRequest::default()))
            .await
            .map_err(downstream_failed)?
        {
            ClientResult::ListRootsResult(r) => Ok(r),
            _ => Err(ErrorData::internal_error(
                "the client answered roots/list with something else",
                None,
            )),
        }
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _relayed = Relaying(&self.relay.relayed);
        let target = lock(&self.relay.calls).values().find_map(|c| {
            (c.upstream_token.as_ref() == Some(&params.progress_token))
                .then(|| (c.origin.peer.clone(), c.origin.progress.clone()))
        });
        // Only callers that asked for progress get it, under their own token.
        if let Some((peer, Some(token))) = target {
            let mut forwarded = params;
            forwarded.progress_token = token;
            let _ = peer.notify_progress(forwarded).await;
        }
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _relayed = Relaying(&self.relay.relayed);
        // To the request that is open (a 2026-07-28 caller's first round:
        // its later rounds are other requests, and this one is ignored).
        match self.relay.attributable() {
            Some(origin) => {
                let _ = origin.peer.notify_logging_message(params).await;
            }
            None => tracing::debug!(
                upstream = %self.relay.upstream,
                "log message from the upstream with no single caller to send it to"
            ),
        }
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        for peer in self
            .relay
            .hub
            .subscribers(&self.relay.upstream, &params.uri)
        {
            let _ = peer.notify_resource_updated(params.clone()).await;
        }
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        for peer in self.relay.hub.peers(self.relay.owner.as_deref()) {
            let _ = peer.notify_resource_list_changed().await;
        }
        for sink in self.relay.hub.sinks(self.relay.owner.as_deref()) {
            let _ = sink.notify_resource_list_changed().await;
        }
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        for peer in self.relay.hub.peers(self.relay.owner.as_deref()) {
            let _ = peer.notify_tool_list_changed().await;
        }
        for sink in self.relay.hub.sinks(self.relay.owner.as_deref()) {
            let _ = sink.notify_tool_list_changed().await;
        }
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        for peer in self.relay.hub.peers(self.relay.owner.as_deref()) {
            let _ = peer.notify_prompt_list_changed().await;
        }
        for sink in self.relay.hub.sinks(self.relay.owner.as_deref()) {
            let _ = sink.notify_prompt_list_changed().await;
        }
    }
}

/// One call registered with [`Relay::begin`]; marks it finished when dropped.
pub struct CallGuard<'a> {
    relay: &'a Relay,
    call: u64,
}

impl CallGuard<'_> {
    /// The progress token rmcp gave the call upstream, to route its progress.
    pub fn answers_to(&self, token: ProgressToken) {
        if let Some(c) = lock(&self.relay.calls).get_mut(&self.call) {
            c.upstream_token = Some(token);
        }
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.relay.finish(self.call, Instant::now());
    }
}
