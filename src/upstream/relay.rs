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
        ElicitResult, GetExtensions, Implementation, InputRequest, JsonRpcMessage,
        JsonRpcNotification, ListRootsRequest, ListRootsResult, LoggingMessageNotificationParam,
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
    /// Who called (`Principal::owner_key`), when known: messages that
    /// cannot be tied to one session may still be tied to one caller.
    pub owner: Option<String>,
    pub downstream: Downstream,
    /// The downstream request's progress token, if it asked for progress.
    pub progress: Option<ProgressToken>,
    /// For a 2026-07-28 caller, which has no back-channel: the upstream's
    /// requests go here, to be asked with `input_required` and answered by
    /// the caller's retry (`mcp/input_bridge.rs`), not to `downstream`.
    pub asks: Option<mpsc::Sender<InputAsk>>,
}

/// How many notifications a call served without rmcp keeps for its answer;
/// past that an upstream's flood of log messages is dropped, not buffered.
pub const COLLECTED_NOTIFICATIONS: usize = 256;

/// Where the messages for a proxied request's caller go.
#[derive(Clone)]
pub enum Downstream {
    /// rmcp's peer: the caller's session, or its stateless request.
    Peer(Peer<RoleServer>),
    /// A 2026-07-28 call the edge serves without rmcp (`mcp/direct_call.rs`):
    /// its notifications are kept and sent before its result. Such a caller
    /// has no back-channel, so the upstream's requests go to `Origin::asks`.
    Collected(mpsc::Sender<ServerNotification>),
}

impl Downstream {
    /// The caller's rmcp peer, when there is one to send requests to.
    pub fn peer(&self) -> Option<&Peer<RoleServer>> {
        match self {
            Downstream::Peer(peer) => Some(peer),
            Downstream::Collected(_) => None,
        }
    }

    pub async fn notify_progress(&self, params: ProgressNotificationParam) {
        self.notify(ServerNotification::ProgressNotification(
            rmcp::model::Notification::new(params),
        ))
        .await;
    }

    pub async fn notify_logging_message(&self, params: LoggingMessageNotificationParam) {
        self.notify(ServerNotification::LoggingMessageNotification(
            rmcp::model::Notification::new(params),
        ))
        .await;
    }

    /// To the peer (what rmcp's `notify_*` send), or kept for the answer.
    async fn notify(&self, notification: ServerNotification) {
        match self {
            Downstream::Peer(peer) => {
                let _ = peer.send_notification(notification).await;
            }
            Downstream::Collected(kept) => {
                if kept.try_send(notification).is_err() {
                    tracing::debug!(
                        "a notification for a caller was dropped: too many, or the call ended"
                    );
                }
            }
        }
    }
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
    fn of(origin: Origin) -> Result<Caller, ErrorData> {
        match (origin.asks, origin.downstream) {
            (Some(asks), _) => Ok(Caller::Asks(asks)),
            (None, Downstream::Peer(peer)) => Ok(Caller::Peer(peer)),
            (None, Downstream::Collected(_)) => Err(ErrorData::internal_error(
                "the caller has no channel for the upstream's request",
                None,
            )),
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
    started: Instant,
    /// When the answer arrived. rmcp handles each notification in a task of
    /// its own, so one the upstream sent just before its answer may be
    /// handled just after it: finished calls stay findable for a moment.
    finished: Option<Instant>,
}

/// How long a finished call still receives its late notifications: progress
/// and log messages read just after its answer ([`Relay::settle`] waits for
/// what was read before). A log message on the upstream's GET stream and the
/// answer arrive on different connections, so one sent just before the
/// answer can be read after it, later still on a loaded machine. A kept call
/// holds its caller's `Peer`, and with it that request's whole rmcp service,
/// so a longer grace costs memory in proportion to the call rate (2 s: about
/// 200 MB at 4 000 calls/s).
const LATE_NOTIFICATION_GRACE: Duration = Duration::from_millis(250);
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
                    started: Instant::now(),
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

    /// The downstream session a log message from the upstream's GET stream,
    /// read at `read_at`, belongs to ([`log_recipient`] over the calls that
    /// may have caused it, [`may_have_logged`]); `None` drops it rather than
    /// show it to the wrong caller.
    fn attributable_log(&self, read_at: Instant) -> Option<Origin> {
        let calls = lock(&self.calls);
        let causes: Vec<&InFlight> = calls
            .values()
            .filter(|c| may_have_logged(c.started, c.finished, read_at))
            .collect();
        let session = log_recipient(causes.iter().map(|c| LogCause {
            session: c.origin.session,
            owner: c.origin.owner.as_deref(),
            ended: c.finished.filter(|f| *f <= read_at),
        }))?;
        causes
            .iter()
            .find(|c| c.origin.session == session)
            .map(|c| c.origin.clone())
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

/// Whether a call that started at `started` (and ended at `finished`) may
/// have caused a log message read at `read_at`: it had begun, and it was
/// still running or had ended within [`LATE_NOTIFICATION_GRACE`] (finished
/// calls are forgotten only when a later one finishes). A call of another
/// caller that ended in that time makes the message ambiguous (dropped),
/// never someone else's.
fn may_have_logged(started: Instant, finished: Option<Instant>, read_at: Instant) -> bool {
    started <= read_at
        && finished.is_none_or(|f| read_at.saturating_duration_since(f) <= LATE_NOTIFICATION_GRACE)
}

/// A call that may have caused a log message: its session, its caller, and
/// when it had ended by the time the message was read (`None`: running).
#[derive(Clone, Copy)]
struct LogCause<'a> {
    session: u64,
    owner: Option<&'a str>,
    ended: Option<Instant>,
}

/// The session a log message goes to, given the calls that may have caused
/// it: theirs if they are all one session's. If they are one caller's (a
/// call of another of the caller's sessions that just ended, say: clients
/// such as the conformance runner call back to back from fresh sessions),
/// the one session whose calls were still running gets it, or with none
/// running the session whose call ended last: the caller sees only their own
/// messages either way. Calls of two callers, or two of one caller's
/// sessions still running: `None`.
fn log_recipient<'a>(causes: impl Iterator<Item = LogCause<'a>> + Clone) -> Option<u64> {
    let mut all = causes.clone();
    let first = all.next()?;
    if all.all(|c| c.session == first.session) {
        return Some(first.session);
    }
    let one_caller = first.owner.is_some() && causes.clone().all(|c| c.owner == first.owner);
    if !one_caller {
        return None;
    }
    let mut running = causes
        .clone()
        .filter(|c| c.ended.is_none())
        .map(|c| c.session);
    match running.next() {
        Some(session) => running.all(|s| s == session).then_some(session),
        None => causes.max_by_key(|c| c.ended).map(|c| c.session),
    }
}

/// When the transport read a notification; rmcp hands it to the handler
/// later, in a task of its own, so the handler's clock would be late.
#[derive(Clone, Copy)]
struct ReadAt(Instant);

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
        let mut message = self.inner.receive().await?;
        if is_relayed_notification(&message) {
            self.relay.received.fetch_add(1, Ordering::AcqRel);
            if let JsonRpcMessage::Notification(n) = &mut message {
                n.notification
                    .extensions_mut()
                    .insert(ReadAt(Instant::now()));
            }
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

/// An upstream's sampling request, asked of `origin`'s caller.
async fn sample(
    origin: Origin,
    params: CreateMessageRequestParams,
) -> Result<CreateMessageResult, ErrorData> {
    let peer = match Caller::of(origin)? {
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

/// An upstream's elicitation, asked of `origin`'s caller.
async fn elicit(origin: Origin, params: ElicitRequestParams) -> Result<ElicitResult, ErrorData> {
    let peer = match Caller::of(origin)? {
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

/// An upstream's roots request, asked of `origin`'s caller.
async fn roots(origin: Origin) -> Result<ListRootsResult, ErrorData> {
    let peer = match Caller::of(origin)? {
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

/// The answer to an upstream's request made while serving `origin`'s call
/// (the request came on that call's own answer stream, so it is certainly
/// that caller's).
pub async fn answer_for(origin: Origin, request: ServerRequest) -> Result<ClientResult, ErrorData> {
    match request {
        ServerRequest::PingRequest(_) => Ok(ClientResult::empty(())),
        ServerRequest::CreateMessageRequest(r) => sample(origin, r.params)
            .await
            .map(|r| ClientResult::CreateMessageResult(Box::new(r))),
        ServerRequest::ElicitRequest(r) => elicit(origin, r.params)
            .await
            .map(ClientResult::ElicitResult),
        ServerRequest::ListRootsRequest(_) => {
            roots(origin).await.map(ClientResult::ListRootsResult)
        }
        ServerRequest::CustomRequest(r) => Err(ErrorData::new(
            rmcp::model::ErrorCode::METHOD_NOT_FOUND,
            format!("mcpgate does not relay {} to its clients", r.method),
            None,
        )),
        _ => Err(ErrorData::new(
            rmcp::model::ErrorCode::METHOD_NOT_FOUND,
            "mcpgate does not relay this request to its clients",
            None,
        )),
    }
}

/// Progress for `origin`'s call, under the caller's own token; dropped when
/// the caller asked for none.
pub async fn progress_to(origin: &Origin, mut params: ProgressNotificationParam) {
    if let Some(token) = &origin.progress {
        params.progress_token = token.clone();
        origin.downstream.notify_progress(params).await;
    }
}

impl Relay {
    /// A notification that is not about one call: resource updates to the
    /// sessions that follow the resource, list changes to every session (of
    /// this link's principal).
    pub async fn fan_out(&self, notification: ServerNotification) {
        let owner = self.owner.as_deref();
        match notification {
            ServerNotification::ResourceUpdatedNotification(n) => {
                for peer in self.hub.subscribers(&self.upstream, &n.params.uri) {
                    let _ = peer.notify_resource_updated(n.params.clone()).await;
                }
            }
            ServerNotification::ResourceListChangedNotification(_) => {
                for peer in self.hub.peers(owner) {
                    let _ = peer.notify_resource_list_changed().await;
                }
                for sink in self.hub.sinks(owner) {
                    let _ = sink.notify_resource_list_changed().await;
                }
            }
            ServerNotification::ToolListChangedNotification(_) => {
                for peer in self.hub.peers(owner) {
                    let _ = peer.notify_tool_list_changed().await;
                }
                for sink in self.hub.sinks(owner) {
                    let _ = sink.notify_tool_list_changed().await;
                }
            }
            ServerNotification::PromptListChangedNotification(_) => {
                for peer in self.hub.peers(owner) {
                    let _ = peer.notify_prompt_list_changed().await;
                }
                for sink in self.hub.sinks(owner) {
                    let _ = sink.notify_prompt_list_changed().await;
                }
            }
            _ => {}
        }
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
        sample(origin, params).await
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
        elicit(origin, params).await
    }

    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        let origin = self
            .relay
            .attributable()
            .ok_or_else(|| no_caller("roots request"))?;
        roots(origin).await
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _relayed = Relaying(&self.relay.relayed);
        let origin = lock(&self.relay.calls).values().find_map(|c| {
            (c.upstream_token.as_ref() == Some(&params.progress_token)).then(|| c.origin.clone())
        });
        if let Some(origin) = origin {
            progress_to(&origin, params).await;
        }
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        context: NotificationContext<RoleClient>,
    ) {
        let _relayed = Relaying(&self.relay.relayed);
        let read_at = context
            .extensions
            .get::<ReadAt>()
            .map_or_else(Instant::now, |r| r.0);
        // To the request that was open when it was read (a 2026-07-28
        // caller's first round: its later rounds are other requests, and
        // this one is ignored), or that had just ended: an upstream may log on
        // its GET stream just before answering on the call's own stream, and
        // mcpgate may read the answer first (`http_call.rs`).
        match self.relay.attributable_log(read_at) {
            Some(origin) => {
                origin.downstream.notify_logging_message(params).await;
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
        let notification = rmcp::model::ResourceUpdatedNotification::new(params);
        self.relay
            .fan_out(ServerNotification::ResourceUpdatedNotification(
                notification,
            ))
            .await;
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.relay
            .fan_out(ServerNotification::ResourceListChangedNotification(
                Default::default(),
            ))
            .await;
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.relay
            .fan_out(ServerNotification::ToolListChangedNotification(
                Default::default(),
            ))
            .await;
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.relay
            .fan_out(ServerNotification::PromptListChangedNotification(
                Default::default(),
            ))
            .await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_belongs_to_the_calls_running_when_it_was_read() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Running when read.
        assert!(may_have_logged(at(0), None, at(5)));
        assert!(may_have_logged(at(0), Some(at(10)), at(5)));
        // Ended just before it was read: the answer came first.
        assert!(may_have_logged(
            at(0),
            Some(at(10)),
            at(10) + LATE_NOTIFICATION_GRACE
        ));
        // Not begun yet, or ended well before: not this call's.
        assert!(!may_have_logged(at(6), None, at(5)));
        assert!(!may_have_logged(
            at(0),
            Some(at(10)),
            at(11) + LATE_NOTIFICATION_GRACE
        ));
    }

    #[test]
    fn a_log_goes_to_one_session_or_to_no_one() {
        let t0 = Instant::now();
        let ended = |ms: u64| Some(t0 + Duration::from_millis(ms));
        let cause = |session, owner, ended| LogCause {
            session,
            owner,
            ended,
        };
        let to = |causes: &[LogCause<'static>]| log_recipient(causes.iter().copied());
        assert_eq!(to(&[]), None);
        // One session, running or just ended.
        assert_eq!(to(&[cause(1, Some("a"), ended(5))]), Some(1));
        assert_eq!(
            to(&[cause(1, Some("a"), None), cause(1, Some("a"), ended(5))]),
            Some(1)
        );
        // One caller's two sessions: the one still running, else the one
        // whose call ended last.
        assert_eq!(
            to(&[cause(1, Some("a"), ended(5)), cause(2, Some("a"), None)]),
            Some(2)
        );
        assert_eq!(
            to(&[cause(1, Some("a"), ended(9)), cause(2, Some("a"), ended(5))]),
            Some(1)
        );
        // ... but not when both are running.
        assert_eq!(
            to(&[cause(1, Some("a"), None), cause(2, Some("a"), None)]),
            None
        );
        // Two callers, or callers not known: never, running or not.
        assert_eq!(
            to(&[cause(1, Some("b"), ended(5)), cause(2, Some("a"), None)]),
            None
        );
        assert_eq!(
            to(&[cause(1, Some("b"), ended(9)), cause(2, Some("a"), ended(5))]),
            None
        );
        assert_eq!(to(&[cause(1, None, ended(5)), cause(2, None, None)]), None);
    }
}
