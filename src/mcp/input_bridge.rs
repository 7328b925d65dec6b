//! An upstream's sampling, elicitation and roots requests for 2026-07-28
//! callers, which have no back-channel: asked with `input_required`.
//!
//! A 2026-07-28 `tools/call`, `prompts/get` or `resources/read` runs
//! upstream in the request's own task; when the upstream asks the caller
//! something, the call moves to a task of its own (it must outlive the
//! request: it waits for the retry). When the
//! upstream asks the caller something during it (the link's `RelayClient`
//! hands the request to the call's `asks` channel instead of a session), the
//! client's request is answered with `input_required`: the upstream's
//! request as the one input request, and a `requestState` mcpgate mints:
//! `mcpgate~<replica>~<sealed>`, sealed ([`RequestStateCodec`]) over the
//! pending call's handle and bound to the caller (subject, issuer), the
//! tool (prompt, resource), the upstream and the replica holding the call, for
//! [`PARK_SECS`]. The upstream call stays open meanwhile (its own
//! `call_timeout` still bounds it). The client's retry carries the state
//! and its answer: checked, handed to the waiting upstream request, and the
//! retry then waits for the upstream's next event: the result, or another
//! request (another `input_required`).
//!
//! A retry reaching another replica is handed to the one holding the call
//! through the store (`mcp_response_relay` + NOTIFY, as server-request
//! answers are: `server_requests.rs`), and the outcome comes back the same
//! way. SQLite serves one process: a state naming another replica is gone.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use futures::FutureExt;
use rmcp::{
    ErrorData,
    model::{
        CallToolResult, ClientCapabilities, GetPromptResult, InputRequest, InputRequiredResult,
        InputResponses, ReadResourceResult, ServerResult,
    },
};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use super::detached::DetachOnDrop;
use crate::request_state::{Binding, RequestStateCodec, RequestStateError};
use crate::{
    auth::Principal,
    clock::SharedClock,
    oauth::crypto::random_token,
    store::{RelayedResponse, Store},
    upstream::{
        GatewayError,
        relay::{InputAsk, Origin},
    },
};

/// How long a pending upstream call waits for the client's retry.
pub const PARK_SECS: i64 = 300;
/// How long a retry handed to another replica waits for its outcome (the
/// holder's round is bounded by the upstream's `call_timeout`).
const HANDOFF_WAIT: Duration = Duration::from_secs(PARK_SECS as u64 + 30);
/// What every `requestState` mcpgate mints starts with; any other value is
/// the upstream's own and passes through to it.
const STATE_PREFIX: &str = "mcpgate~";
/// `mcp_response_relay.session` of a retry handed to the holding replica,
/// and of the outcome handed back.
const HANDOFF: &str = "mrtr-retry:";
const REPLY: &str = "mrtr-outcome:";

/// Why a bridged call or its retry failed.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    State(#[from] RequestStateError),
    #[error(
        "requestState names a call that is no longer waiting for input (it finished, expired, or was answered already)"
    )]
    NotWaiting,
    #[error("the gateway replica holding this call is gone; start the request again")]
    HolderGone,
    /// Refused by the replica holding the call (the message says why).
    #[error("{0}")]
    RefusedThere(String),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The holder's JSON-RPC error, relayed.
    #[error("{}", .0.message)]
    Relayed(ErrorData),
}

impl BridgeError {
    /// A bad `requestState` or retry is the client's: -32602 naming why.
    pub fn into_error_data(self) -> ErrorData {
        match self {
            BridgeError::Gateway(e) => e.into_error_data(),
            BridgeError::Relayed(e) => e,
            // Ours, not the client's.
            e @ BridgeError::State(RequestStateError::Seal(_)) => {
                ErrorData::internal_error(e.to_string(), None)
            }
            other => ErrorData::invalid_params(other.to_string(), None),
        }
    }
}

/// What kind of request a bridged call answers (MRTR's three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    Tool,
    Prompt,
    Resource,
}

impl Item {
    fn part(self) -> &'static str {
        match self {
            Item::Tool => "tool",
            Item::Prompt => "prompt",
            Item::Resource => "resource",
        }
    }
}

/// Who retries, for what: every part must match the state's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallerBinding {
    pub subject: String,
    pub issuer: String,
    pub kind: Item,
    /// The tool's or prompt's exposed name, or the resource's URI.
    pub item: String,
    pub upstream: String,
    /// What the client declared it can answer (this request's); not bound.
    #[serde(default)]
    pub capabilities: Option<ClientCapabilities>,
}

impl CallerBinding {
    pub fn new(
        principal: &Principal,
        kind: Item,
        item: &str,
        upstream: &str,
        capabilities: Option<ClientCapabilities>,
    ) -> Self {
        CallerBinding {
            subject: principal.subject.clone(),
            issuer: principal.issuer.clone(),
            kind,
            item: item.to_owned(),
            upstream: upstream.to_owned(),
            capabilities,
        }
    }

    /// Why the client cannot be asked `request`: the spec forbids input
    /// requests of a kind the client did not declare.
    fn cannot_answer(&self, request: &InputRequest) -> Option<&'static str> {
        let caps = self.capabilities.as_ref();
        match request {
            InputRequest::CreateMessage(_) if caps.is_none_or(|c| c.sampling.is_none()) => {
                Some("sampling")
            }
            InputRequest::Elicitation(_) if caps.is_none_or(|c| c.elicitation.is_none()) => {
                Some("elicitation")
            }
            InputRequest::ListRoots(_) if caps.is_none_or(|c| c.roots.is_none()) => Some("roots"),
            _ => None,
        }
    }

    fn binding(&self, replica: &str) -> Binding {
        Binding::new()
            .with("user", self.subject.as_str())
            .with("issuer", self.issuer.as_str())
            .with(self.kind.part(), self.item.as_str())
            .with("upstream", self.upstream.as_str())
            .with("replica", replica)
    }
}

/// The sealed part of a `requestState`.
#[derive(Serialize, Deserialize)]
struct Pending {
    handle: String,
    round: u32,
}

/// An upstream call running for a 2026-07-28 caller; cancelled upstream
/// when dropped (abandoned, expired, or its retry went away).
struct RunningCall {
    upstream: String,
    task: JoinHandle<Result<ServerResult, GatewayError>>,
    asks: mpsc::Receiver<InputAsk>,
    cancel: CancellationToken,
}

impl Drop for RunningCall {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A call waiting for the client's answer to `key`.
struct Parked {
    call: RunningCall,
    key: String,
    request: InputRequest,
    round: u32,
    answer: oneshot::Sender<Result<serde_json::Value, ErrorData>>,
}

/// A retry handed to the replica holding its call.
#[derive(Serialize, Deserialize)]
struct HandOff {
    reply_to: String,
    state: String,
    responses: Option<InputResponses>,
    caller: CallerBinding,
}

/// A round's outcome handed back.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Wire {
    Result(serde_json::Value),
    Error(ErrorData),
    Refused(String),
}

impl From<Result<ServerResult, BridgeError>> for Wire {
    fn from(outcome: Result<ServerResult, BridgeError>) -> Self {
        match outcome {
            Ok(result) => match serde_json::to_value(&result) {
                Ok(value) => Wire::Result(value),
                Err(e) => Wire::Error(ErrorData::internal_error(e.to_string(), None)),
            },
            Err(e @ (BridgeError::Gateway(_) | BridgeError::Relayed(_))) => {
                Wire::Error(e.into_error_data())
            }
            Err(e) => Wire::Refused(e.to_string()),
        }
    }
}

impl Wire {
    fn into_outcome(self, kind: Item) -> Result<ServerResult, BridgeError> {
        let value = match self {
            Wire::Error(e) => return Err(BridgeError::Relayed(e)),
            Wire::Refused(message) => return Err(BridgeError::RefusedThere(message)),
            Wire::Result(value) => value,
        };
        let unreadable = |e: serde_json::Error| {
            BridgeError::Relayed(ErrorData::internal_error(e.to_string(), None))
        };
        if value["resultType"] == "input_required" {
            return serde_json::from_value::<InputRequiredResult>(value)
                .map(ServerResult::InputRequiredResult)
                .map_err(unreadable);
        }
        match kind {
            Item::Tool => {
                serde_json::from_value::<CallToolResult>(value).map(ServerResult::CallToolResult)
            }
            Item::Prompt => {
                serde_json::from_value::<GetPromptResult>(value).map(ServerResult::GetPromptResult)
            }
            Item::Resource => serde_json::from_value::<ReadResourceResult>(value)
                .map(ServerResult::ReadResourceResult),
        }
        .map_err(unreadable)
    }
}

/// The pending upstream calls of 2026-07-28 callers on this replica.
pub struct InputBridge {
    codec: RequestStateCodec,
    replica: String,
    store: Store,
    clock: SharedClock,
    parked: Mutex<HashMap<String, Parked>>,
    /// Retries handed to another replica, waiting for their outcome.
    replies: Mutex<HashMap<String, oneshot::Sender<Wire>>>,
    stop: CancellationToken,
    me: Weak<InputBridge>,
}

/// The gateway's policy (`upstream/locks.rs`): these maps' updates are
/// single statements a panic cannot leave half-done, so recover and go on.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl InputBridge {
    pub fn new(
        codec: RequestStateCodec,
        replica: String,
        store: Store,
        clock: SharedClock,
        stop: CancellationToken,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| InputBridge {
            codec,
            replica,
            store,
            clock,
            parked: Mutex::new(HashMap::new()),
            replies: Mutex::new(HashMap::new()),
            stop,
            me: me.clone(),
        })
    }

    /// Whether mcpgate minted `state` (else it is the upstream's own).
    pub fn minted(state: &str) -> bool {
        state.starts_with(STATE_PREFIX)
    }

    /// Run a 2026-07-28 caller's `tools/call`, `prompts/get` or
    /// `resources/read` upstream (`run`, given the call's origin and
    /// cancellation); its result, or `input_required` when the upstream asks
    /// the caller something.
    pub async fn start<F>(
        &self,
        mut origin: Origin,
        caller: CallerBinding,
        ct: &CancellationToken,
        run: impl FnOnce(Origin, CancellationToken) -> F,
    ) -> Result<ServerResult, BridgeError>
    where
        F: Future<Output = Result<ServerResult, GatewayError>> + Send + 'static,
    {
        let (asks, mut asked) = mpsc::channel(1);
        origin.asks = Some(asks);
        let cancel = self.stop.child_token();
        // Polled here until the upstream asks something. Most calls never
        // do, and a task per call is a spawn and a hand-off between threads
        // more on every call. Once it asks, the call must outlive this
        // request (it waits for the retry), so it moves to a task.
        // A panic in the call ends it as a task's panic did (the link is
        // reported closed), here and after it moved to a task.
        let upstream = caller.upstream.clone();
        let running = std::panic::AssertUnwindSafe(run(origin, cancel.clone()))
            .catch_unwind()
            .map(move |outcome| outcome.unwrap_or(Err(GatewayError::Closed { upstream })));
        let mut inline = DetachOnDrop::new(running, cancel.clone());
        let first = tokio::select! {
            Some(ask) = asked.recv() => ask,
            done = &mut inline => return Ok(done.unwrap_or(Err(GatewayError::Cancelled))?),
            // `inline` dropped: cancelled as a task's call is.
            _ = ct.cancelled() => return Err(GatewayError::Cancelled.into()),
        };
        let call = RunningCall {
            upstream: caller.upstream.clone(),
            task: inline
                .into_task()
                .unwrap_or_else(|| tokio::spawn(async { Err(GatewayError::Cancelled) })),
            asks: asked,
            cancel,
        };
        self.round(call, Some(first), None, 1, &caller, ct).await
    }

    /// Wait for the call's next event: its result, or a request for the
    /// caller (parked, and answered with `input_required`).
    async fn round(
        &self,
        mut call: RunningCall,
        mut first: Option<InputAsk>,
        handle: Option<String>,
        round: u32,
        caller: &CallerBinding,
        ct: &CancellationToken,
    ) -> Result<ServerResult, BridgeError> {
        enum Next {
            Done(Result<ServerResult, GatewayError>),
            Asked(InputAsk),
            Cancelled,
        }
        let ask = loop {
            let next = if let Some(ask) = first.take() {
                Next::Asked(ask)
            } else {
                tokio::select! {
                    Some(ask) = call.asks.recv() => Next::Asked(ask),
                    done = &mut call.task => Next::Done(done.unwrap_or_else(|_| {
                        Err(GatewayError::Closed { upstream: call.upstream.clone() })
                    })),
                    _ = ct.cancelled() => Next::Cancelled,
                }
            };
            let ask = match next {
                Next::Done(result) => return Ok(result?),
                // Dropping the call cancels it upstream.
                Next::Cancelled => return Err(GatewayError::Cancelled.into()),
                Next::Asked(ask) => ask,
            };
            match caller.cannot_answer(&ask.request) {
                None => break ask,
                // Refused to the upstream, which may go on without it.
                Some(kind) => {
                    let _ = ask.answer.send(Err(ErrorData::invalid_request(
                        format!("the client does not support {kind}"),
                        None,
                    )));
                }
            }
        };
        let handle = match handle {
            Some(handle) => handle,
            None => random_token(16).map_err(RequestStateError::from)?,
        };
        let InputAsk { request, answer } = ask;
        let parked = Parked {
            call,
            key: format!("upstream-{round}"),
            request,
            round,
            answer,
        };
        self.ask_again(handle, parked, caller)
    }

    /// Park the call and answer `input_required` for its pending request.
    fn ask_again(
        &self,
        handle: String,
        parked: Parked,
        caller: &CallerBinding,
    ) -> Result<ServerResult, BridgeError> {
        let pending = Pending {
            handle: handle.clone(),
            round: parked.round,
        };
        let sealed = self.codec.seal(
            &caller.binding(&self.replica),
            &pending,
            self.clock.now() + PARK_SECS,
        )?;
        let requests = BTreeMap::from([(parked.key.clone(), parked.request.clone())]);
        self.park(handle, parked);
        Ok(ServerResult::InputRequiredResult(InputRequiredResult::new(
            Some(requests),
            Some(format!("{STATE_PREFIX}{}~{sealed}", self.replica)),
        )))
    }

    /// Keep `parked` until its retry, at most [`PARK_SECS`].
    fn park(&self, handle: String, parked: Parked) {
        let round = parked.round;
        lock(&self.parked).insert(handle.clone(), parked);
        let me = self.me.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(PARK_SECS as u64)) => {}
                _ = stop.cancelled() => {}
            }
            if let Some(bridge) = me.upgrade() {
                let mut parked = lock(&bridge.parked);
                if parked.get(&handle).is_some_and(|p| p.round == round) {
                    // Dropped: cancelled upstream.
                    parked.remove(&handle);
                }
            }
        });
    }

    /// A 2026-07-28 retry carrying a `requestState` mcpgate minted.
    pub async fn resume(
        &self,
        state: &str,
        responses: Option<InputResponses>,
        caller: CallerBinding,
        owner: &str,
        ct: &CancellationToken,
    ) -> Result<ServerResult, BridgeError> {
        let (replica, sealed) = state
            .strip_prefix(STATE_PREFIX)
            .and_then(|rest| rest.split_once('~'))
            .ok_or(RequestStateError::Tampered)?;
        if replica == self.replica {
            return self.resume_here(sealed, responses, &caller, ct).await;
        }
        self.hand_off(replica, state, responses, caller, owner, ct)
            .await
    }

    async fn resume_here(
        &self,
        sealed: &str,
        responses: Option<InputResponses>,
        caller: &CallerBinding,
        ct: &CancellationToken,
    ) -> Result<ServerResult, BridgeError> {
        let pending: Pending =
            self.codec
                .open(sealed, &caller.binding(&self.replica), self.clock.now())?;
        let parked = {
            let mut parked = lock(&self.parked);
            match parked.get(&pending.handle) {
                Some(p) if p.round == pending.round => parked.remove(&pending.handle),
                _ => None,
            }
        }
        .ok_or(BridgeError::NotWaiting)?;
        let Some(answer) = responses.and_then(|mut r| r.remove(&parked.key)) else {
            // The spec's SHOULD: ask for the missing answer again.
            return self.ask_again(pending.handle, parked, caller);
        };
        let Parked {
            call, answer: to, ..
        } = parked;
        let _ = to.send(Ok(answer));
        self.round(
            call,
            None,
            Some(pending.handle),
            pending.round + 1,
            caller,
            ct,
        )
        .await
    }

    /// Hand a retry to `replica`, which holds its call, and wait for the outcome.
    async fn hand_off(
        &self,
        replica: &str,
        state: &str,
        responses: Option<InputResponses>,
        caller: CallerBinding,
        owner: &str,
        ct: &CancellationToken,
    ) -> Result<ServerResult, BridgeError> {
        if !self.store.is_shared() {
            return Err(BridgeError::HolderGone);
        }
        let nonce = random_token(16).map_err(RequestStateError::from)?;
        let kind = caller.kind;
        let message = serde_json::to_string(&HandOff {
            reply_to: self.replica.clone(),
            state: state.to_owned(),
            responses,
            caller,
        })
        .map_err(|e| BridgeError::Relayed(ErrorData::internal_error(e.to_string(), None)))?;
        let (tx, rx) = oneshot::channel();
        lock(&self.replies).insert(nonce.clone(), tx);
        let sent = self
            .store
            .relay_mcp_response(
                replica,
                &format!("{HANDOFF}{nonce}"),
                owner,
                &message,
                self.clock.now(),
            )
            .await;
        let outcome = match sent {
            Err(e) => {
                tracing::warn!(error = %e, "a 2026-07-28 retry was not handed to the replica holding its call");
                None
            }
            Ok(()) => tokio::select! {
                wire = rx => wire.ok(),
                _ = tokio::time::sleep(HANDOFF_WAIT) => None,
                _ = ct.cancelled() => {
                    lock(&self.replies).remove(&nonce);
                    return Err(GatewayError::Cancelled.into());
                }
            },
        };
        lock(&self.replies).remove(&nonce);
        outcome.ok_or(BridgeError::HolderGone)?.into_outcome(kind)
    }

    /// Whether a relayed row is the bridge's (a retry or its outcome).
    pub fn takes(session: &str) -> bool {
        session.starts_with(HANDOFF) || session.starts_with(REPLY)
    }

    /// A row relayed to this replica: a retry for a call held here (run,
    /// and its outcome relayed back), or the outcome of one handed away.
    pub fn take(&self, relayed: RelayedResponse) {
        if let Some(nonce) = relayed.session.strip_prefix(REPLY) {
            let waiting = lock(&self.replies).remove(nonce);
            match (waiting, serde_json::from_str::<Wire>(&relayed.message)) {
                (Some(waiting), Ok(wire)) => {
                    let _ = waiting.send(wire);
                }
                (None, _) => tracing::debug!("a 2026-07-28 retry's outcome came after its wait"),
                (_, Err(e)) => tracing::warn!(error = %e, "a relayed retry outcome is unreadable"),
            }
            return;
        }
        let Some(nonce) = relayed.session.strip_prefix(HANDOFF) else {
            return;
        };
        let handoff: HandOff = match serde_json::from_str(&relayed.message) {
            Ok(handoff) => handoff,
            Err(e) => {
                tracing::warn!(error = %e, "a relayed 2026-07-28 retry is unreadable");
                return;
            }
        };
        let (Some(me), nonce) = (self.me.upgrade(), nonce.to_owned()) else {
            return;
        };
        tokio::spawn(async move {
            let outcome = match handoff
                .state
                .strip_prefix(STATE_PREFIX)
                .and_then(|rest| rest.split_once('~'))
            {
                Some((replica, sealed)) if replica == me.replica => {
                    let ct = me.stop.child_token();
                    me.resume_here(sealed, handoff.responses, &handoff.caller, &ct)
                        .await
                }
                _ => Err(BridgeError::HolderGone),
            };
            let wire = match serde_json::to_string(&Wire::from(outcome)) {
                Ok(wire) => wire,
                Err(e) => {
                    tracing::warn!(error = %e, "a retry outcome could not be written");
                    return;
                }
            };
            if let Err(e) = me
                .store
                .relay_mcp_response(
                    &handoff.reply_to,
                    &format!("{REPLY}{nonce}"),
                    &relayed.owner,
                    &wire,
                    me.clock.now(),
                )
                .await
            {
                tracing::warn!(error = %e, "a retry outcome was not relayed back");
            }
        });
    }
}
