//! Server-initiated messages across replicas, and `Last-Event-ID`.
//!
//! Every message rmcp puts on a session's standalone (GET) channel, on any
//! replica, is appended to the store by [`EventLog`] (rmcp's `EventStore`
//! hook). A GET stream is not rmcp's in-memory channel but a reader of those
//! rows ([`SharedSessions`]): it starts at the newest message, or after the
//! `Last-Event-ID` the client sends, and follows the session, woken by
//! PostgreSQL NOTIFY (another replica appended) or by this process. The
//! newest GET stream of a session claims it; older ones stay open but quiet,
//! so a message goes out on one stream only.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use futures::{Stream, StreamExt};
use rmcp::{
    model::{JsonRpcMessage, ServerJsonRpcMessage, ServerNotification},
    transport::{
        WorkerTransport,
        common::server_side_http::ServerSseMessage,
        streamable_http_server::{
            RestoreOutcome, SessionId, SessionManager,
            session::{
                local::{LocalSessionManager, LocalSessionManagerError, LocalSessionWorker},
                store::{EventId, EventStore, EventStoreError, EventStream},
            },
        },
    },
};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{
    post_streams::{self, PostEventId, PostStream, PostStreams},
    server_requests::{CALLER, RequestIds, ResponseInbox, Route},
};
use crate::{
    clock::SharedClock,
    store::{McpEvent, McpWake, Store, StoreError},
};

/// rmcp names a session's standalone channel `<session id>:common`.
const COMMON_SUFFIX: &str = ":common";
/// The id of events that cannot be resumed (priming events, POST streams):
/// resuming from it replays nothing.
const NOT_RESUMABLE: &str = "0";
/// Identical list changes stored by two replicas this close together are
/// one change seen by both replicas' upstream links.
const COALESCE_SECS: i64 = 2;
/// Messages read per query.
const BATCH: i64 = 100;
/// A GET stream opened without `Last-Event-ID` starts with at most this many
/// messages no stream has sent yet (rmcp's own channel caches as many).
const FRESH_BACKLOG: i64 = 16;
/// How soon a client reconnects a GET stream that ended.
const RETRY: Duration = Duration::from_secs(3);
/// After a failed read, look again this much later.
const READ_RETRY: Duration = Duration::from_secs(1);
/// Messages a GET stream buffers before a slow client holds it up.
const STREAM_CAPACITY: usize = 16;

/// This process's GET streams, by session, to wake when messages arrive.
#[derive(Default)]
pub struct Tails {
    waiting: Mutex<HashMap<String, Vec<Weak<Notify>>>>,
}

impl Tails {
    pub(super) fn watch(&self, session: &str) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.retain(|_, v| {
                v.retain(|w| w.strong_count() > 0);
                !v.is_empty()
            });
            waiting
                .entry(session.to_owned())
                .or_default()
                .push(Arc::downgrade(&notify));
        }
        notify
    }

    /// Wake the streams of `session` (a permit is kept for one that is busy).
    pub fn wake(&self, session: &str) {
        if let Ok(waiting) = self.waiting.lock()
            && let Some(streams) = waiting.get(session)
        {
            streams
                .iter()
                .filter_map(Weak::upgrade)
                .for_each(|n| n.notify_one());
        }
    }

    /// Wake every stream: notifications may have been missed.
    fn wake_all(&self) {
        if let Ok(waiting) = self.waiting.lock() {
            waiting
                .values()
                .flatten()
                .filter_map(Weak::upgrade)
                .for_each(|n| n.notify_one());
        }
    }

    /// On PostgreSQL, until `shutdown`: wake the streams of sessions other
    /// replicas append to, and take the answers other replicas relay to
    /// this one (a replica that sent a server request must hear its
    /// answer, so this listens from the start).
    fn spawn_listener(
        self: &Arc<Self>,
        store: &Store,
        inbox: Arc<ResponseInbox>,
        shutdown: &CancellationToken,
    ) {
        if !store.is_shared() {
            return;
        }
        let (tails, store, shutdown) = (self.clone(), store.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut listener = loop {
                match store.mcp_listener().await {
                    Ok(Some(listener)) => break listener,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "MCP listener not started: GET streams see only this replica's messages for now");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            };
            // What was announced before the LISTEN took effect.
            tails.wake_all();
            inbox.take().await;
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = listener.next() => next,
                };
                match next {
                    Ok(McpWake::Session(session)) => tails.wake(&session),
                    Ok(McpWake::Responses(origin)) => {
                        if origin == inbox.ids.origin() {
                            inbox.take().await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "MCP listener interrupted");
                        // What was announced meanwhile is in the store.
                        tails.wake_all();
                        inbox.take().await;
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        });
    }
}

/// rmcp's `EventStore`: keeps the messages of standalone channels in the
/// store. Replay goes through [`SharedSessions::resume`], which knows the
/// session the edge admitted.
pub struct EventLog {
    store: Store,
    clock: SharedClock,
    tails: Arc<Tails>,
    /// This replica, to tell its list changes from another's and to name
    /// it in the ids of the requests it sends.
    ids: RequestIds,
}

impl EventLog {
    pub fn new(store: Store, clock: SharedClock, tails: Arc<Tails>, ids: RequestIds) -> Self {
        EventLog {
            store,
            clock,
            tails,
            ids,
        }
    }
}

/// A list change says "fetch the list again": two identical ones raised
/// together for one session are one.
fn is_list_change(message: &ServerJsonRpcMessage) -> bool {
    matches!(
        message,
        JsonRpcMessage::Notification(n) if matches!(
            n.notification,
            ServerNotification::ToolListChangedNotification(_)
                | ServerNotification::PromptListChangedNotification(_)
                | ServerNotification::ResourceListChangedNotification(_)
        )
    )
}

#[async_trait::async_trait]
impl EventStore for EventLog {
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<EventId, EventStoreError> {
        // POST streams carry one answer to the client that is waiting for it
        // on that connection: not stored (one write per request is too
        // dear); `PostStream` names their events.
        let (Some(session), Some(message)) =
            (stream_id.strip_suffix(COMMON_SUFFIX), &event.message)
        else {
            return Ok(NOT_RESUMABLE.to_owned());
        };
        let text = if RequestIds::names(message) {
            let mut renamed = message.as_ref().clone();
            self.ids.outgoing(&mut renamed);
            serde_json::to_string(&renamed)?
        } else {
            serde_json::to_string(message.as_ref())?
        };
        let now = self.clock.now();
        let coalesce = is_list_change(message).then_some(now - COALESCE_SECS);
        let seq = self
            .store
            .append_mcp_event(session, &text, self.ids.origin(), coalesce, now)
            .await?;
        self.tails.wake(session);
        Ok(seq.to_string())
    }

    async fn replay_events_after(&self, _last: &str) -> Result<EventStream, EventStoreError> {
        // Only reached without a session: nothing is replayed to a caller
        // whose session the edge has not checked.
        Ok(Box::pin(futures::stream::empty()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SharedSessionError {
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no admitted caller for a relayed answer")]
    NoCaller,
}

/// rmcp's in-memory sessions, with GET streams read from the store, POST
/// streams resumable and answers routed to the replica that asked.
pub struct SharedSessions {
    local: Arc<LocalSessionManager>,
    store: Store,
    clock: SharedClock,
    tails: Arc<Tails>,
    posts: PostStreams,
    shutdown: CancellationToken,
}

type LocalStream = Pin<Box<dyn Stream<Item = ServerSseMessage> + Send>>;

impl SharedSessions {
    /// Also starts, on PostgreSQL, the listener that wakes GET streams and
    /// takes answers relayed to this replica.
    pub fn new(
        local: Arc<LocalSessionManager>,
        store: Store,
        clock: SharedClock,
        tails: Arc<Tails>,
        ids: RequestIds,
        bridge: Option<Arc<super::input_bridge::InputBridge>>,
        shutdown: CancellationToken,
    ) -> Self {
        let inbox = Arc::new(ResponseInbox {
            ids: ids.clone(),
            bridge,
            local: local.clone(),
            store: store.clone(),
            clock: clock.clone(),
        });
        tails.spawn_listener(&store, inbox, &shutdown);
        let posts = PostStreams {
            store: store.clone(),
            clock: clock.clone(),
            tails: tails.clone(),
            ids,
            shutdown: shutdown.clone(),
        };
        SharedSessions {
            local,
            store,
            clock,
            tails,
            posts,
            shutdown,
        }
    }

    /// A GET stream for `id` from after `from` (`None`: from now on).
    async fn open(
        &self,
        id: &SessionId,
        from: Option<i64>,
    ) -> Result<ReceiverStream<ServerSseMessage>, SharedSessionError> {
        // rmcp's own channel for the session: its messages are in the store
        // already; it ends when the session ends in this process, and so
        // does the stream (the client reconnects and the session is
        // restored, as before).
        let local: LocalStream = Box::pin(self.local.create_standalone_stream(id).await?);
        let claim = uuid::Uuid::new_v4().simple().to_string();
        let (head, sent) = self.store.claim_mcp_stream(id, &claim).await?;
        let cursor = match from {
            // A cursor beyond the newest message would skip the next ones.
            Some(from) => from.min(head),
            // What no stream has sent yet (raised before this stream opened,
            // say, a moment after initialize), as rmcp's own channel replays
            // its cache to a new stream; at most the last few.
            None => sent.clamp(head - FRESH_BACKLOG, head),
        };
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let tail = Tail {
            store: self.store.clone(),
            clock: self.clock.clone(),
            session: id.to_string(),
            claim,
            cursor,
            notify: self.tails.watch(id),
            tx,
            local,
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(tail.run());
        Ok(ReceiverStream::new(rx))
    }
}

/// One GET stream following its session in the store.
struct Tail {
    store: Store,
    clock: SharedClock,
    session: String,
    claim: String,
    cursor: i64,
    notify: Arc<Notify>,
    tx: mpsc::Sender<ServerSseMessage>,
    local: LocalStream,
    shutdown: CancellationToken,
}

impl Tail {
    async fn run(mut self) {
        // The client resumes from here if the stream breaks before a message.
        let priming = ServerSseMessage::priming(self.cursor.to_string(), RETRY);
        if self.tx.send(priming).await.is_err() {
            return;
        }
        loop {
            let wait = match self.deliver().await {
                Ok(Delivered::Ended) => return,
                Ok(Delivered::More) => continue,
                Ok(Delivered::UpToDate) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "GET stream could not read its session's messages");
                    Some(READ_RETRY)
                }
            };
            let retry = async {
                match wait {
                    Some(after) => tokio::time::sleep(after).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = retry => {}
                // A message rmcp sent here is in the store: look.
                next = self.local.next() => if next.is_none() { return },
                _ = self.tx.closed() => return,
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    async fn deliver(&mut self) -> Result<Delivered, StoreError> {
        let view = self
            .store
            .mcp_stream_after(
                &self.session,
                &self.claim,
                self.cursor,
                BATCH,
                self.clock.now(),
            )
            .await?;
        if !view.live {
            return Ok(Delivered::Ended);
        }
        let full = view.events.len() as i64 == BATCH;
        // Recorded before they go out: once the client has one, a stream
        // opened later does not send it again (a resume with Last-Event-ID
        // still would).
        if let Some(last) = view.events.last()
            && let Err(e) = self
                .store
                .mark_mcp_stream_sent(&self.session, &self.claim, last.seq)
                .await
        {
            // A stream opened later may send these again.
            tracing::warn!(error = %e, "GET stream progress not recorded");
        }
        Ok(match self.send(view.events).await {
            Sent::Closed => Delivered::Ended,
            Sent::All if full => Delivered::More,
            Sent::All => Delivered::UpToDate,
        })
    }

    /// Send `events` in order, moving the cursor past each.
    async fn send(&mut self, events: Vec<McpEvent>) -> Sent {
        for event in events {
            self.cursor = event.seq;
            let Ok(message) = serde_json::from_str::<ServerJsonRpcMessage>(&event.message) else {
                tracing::warn!(seq = event.seq, "a stored MCP message could not be read");
                continue;
            };
            let mut sse = ServerSseMessage::from_message(message);
            sse.event_id = Some(event.seq.to_string());
            if self.tx.send(sse).await.is_err() {
                return Sent::Closed;
            }
        }
        Sent::All
    }
}

enum Sent {
    All,
    /// The client has gone.
    Closed,
}

enum Delivered {
    Ended,
    More,
    UpToDate,
}

/// A `Last-Event-ID` we issued: a seq, or [`NOT_RESUMABLE`] and anything
/// else (start from now).
fn resume_point(last_event_id: &str) -> Option<i64> {
    last_event_id.parse::<i64>().ok().filter(|seq| *seq > 0)
}

impl SessionManager for SharedSessions {
    type Error = SharedSessionError;
    type Transport = WorkerTransport<LocalSessionWorker>;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        Ok(self.local.create_session().await?)
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: rmcp::model::ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.local.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.local.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        Ok(self.local.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: rmcp::model::ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.local.create_stream(id, message).await?;
        Ok(PostStream::new(stream, id, self.posts.clone()))
    }

    /// An answer to a request another replica sent goes there (checked
    /// against the stored owner on both sides); everything else is this
    /// replica's.
    async fn accept_message(
        &self,
        id: &SessionId,
        message: rmcp::model::ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        let text = serde_json::to_string(&message).unwrap_or_default();
        match self.posts.ids.incoming(message) {
            Route::Here(message) => Ok(self.local.accept_message(id, message).await?),
            Route::Elsewhere { origin } => {
                // Set by the edge, which admitted the session for the caller.
                let Ok(owner) = CALLER.try_with(Clone::clone) else {
                    tracing::error!("an MCP answer to relay came without its caller");
                    return Err(SharedSessionError::NoCaller);
                };
                self.store
                    .relay_mcp_response(&origin, id, &owner, &text, self.clock.now())
                    .await?;
                Ok(())
            }
        }
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.open(id, None).await
    }

    /// The edge has admitted `id` for the caller; only its messages are
    /// read, whatever the event id names.
    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        if let Some(from) = PostEventId::parse(&last_event_id) {
            return Ok(post_streams::resume(id, from, &self.posts).left_stream());
        }
        Ok(self
            .open(id, resume_point(&last_event_id))
            .await?
            .right_stream())
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        Ok(self.local.restore_session(id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_reaches_the_streams_of_its_session_even_when_they_are_busy() {
        use futures::FutureExt;
        let tails = Tails::default();
        let mine = tails.watch("s");
        let other = tails.watch("t");
        // Woken while not waiting: the permit is kept for the next wait.
        tails.wake("s");
        assert!(
            mine.notified().now_or_never().is_some(),
            "the wake was kept"
        );
        assert!(
            other.notified().now_or_never().is_none(),
            "another session's stream was woken"
        );
        tails.wake_all();
        assert!(other.notified().now_or_never().is_some());
        // A stream that ended is forgotten at the next watch.
        drop(mine);
        let _again = tails.watch("u");
        assert!(tails.waiting.lock().unwrap().get("s").is_none());
    }

    #[test]
    fn only_issued_sequence_numbers_resume() {
        assert_eq!(resume_point("42"), Some(42));
        assert_eq!(resume_point(NOT_RESUMABLE), None);
        assert_eq!(resume_point("-3"), None);
        assert_eq!(resume_point("0/1"), None);
        assert_eq!(resume_point(""), None);
    }

    #[test]
    fn list_changes_coalesce_and_other_messages_do_not() {
        let tools: ServerJsonRpcMessage = serde_json::from_value(
            serde_json::json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}),
        )
        .unwrap();
        let updated: ServerJsonRpcMessage = serde_json::from_value(serde_json::json!({
            "jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"x:/a"}
        }))
        .unwrap();
        assert!(is_list_change(&tools));
        assert!(!is_list_change(&updated));
    }
}
