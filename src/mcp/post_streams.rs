//! Resuming a POST's SSE response with `Last-Event-ID`, on any replica.
//!
//! Each POST stream gets a random name; its events carry the ids
//! `<name>.<index>` (the priming event is index 0), so a client that saw
//! one can resume. While the client reads the stream nothing is stored:
//! the events it was sent are kept in memory ([`PostStream`]). Only when
//! the response body is dropped before the stream's end (the client's
//! connection went away) are those events and every later one (the answer
//! when it comes) written to the store, with a NOTIFY; a GET with such a
//! `Last-Event-ID` on any replica reads them, within the session the edge
//! admitted for the caller ([`resume`]).

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt};
use rmcp::{
    model::{JsonRpcMessage, ServerJsonRpcMessage},
    transport::common::server_side_http::ServerSseMessage,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{events::Tails, server_requests::RequestIds};
use crate::{
    clock::SharedClock,
    store::{McpPostEvent, Store},
};

/// Events of a POST stream kept in memory for a resume, at most (the
/// newest; a long call's early progress may go, its answer does not).
const KEPT: usize = 32;
/// How long a resume waits for a stream nothing was stored of yet (its
/// replica may notice the broken connection a moment after the client).
const FIRST_WAIT: Duration = Duration::from_secs(10);
/// A resume whose stream stored nothing new for this long ends (its
/// replica died before the answer: the rows are swept after as long).
const QUIET_LIMIT: Duration = Duration::from_secs(600);
/// How often a resume looks again without a wake-up.
const LOOK_AGAIN: Duration = Duration::from_secs(5);
/// Events read per query.
const BATCH: i64 = 100;
/// Events a resumed stream buffers before a slow client holds it up.
const CAPACITY: usize = 16;

/// A POST stream's event id: its name and the event's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostEventId {
    pub stream: String,
    pub index: i64,
}

impl PostEventId {
    /// An id we issued (`<32 hex>.<index>`), or `None`.
    pub fn parse(text: &str) -> Option<PostEventId> {
        let (stream, index) = text.split_once('.')?;
        let named = stream.len() == 32 && stream.bytes().all(|b| b.is_ascii_hexdigit());
        let index = index.parse::<i64>().ok().filter(|i| *i >= 0)?;
        named.then(|| PostEventId {
            stream: stream.to_owned(),
            index,
        })
    }

    fn text(stream: &str, index: i64) -> String {
        format!("{stream}.{index}")
    }
}

/// What a POST stream needs besides rmcp's channel.
#[derive(Clone)]
pub struct PostStreams {
    pub store: Store,
    pub clock: SharedClock,
    pub tails: Arc<Tails>,
    pub ids: RequestIds,
    pub shutdown: CancellationToken,
}

/// The answer (or error) of the request: the stream's last event.
fn ends_stream(event: &ServerSseMessage) -> bool {
    matches!(
        event.message.as_deref(),
        Some(JsonRpcMessage::Response(_) | JsonRpcMessage::Error(_))
    )
}

/// rmcp's POST stream, its events named and kept until the body ends.
pub struct PostStream<S>
where
    S: Stream<Item = ServerSseMessage> + Send + Unpin + 'static,
{
    inner: Option<S>,
    session: String,
    name: String,
    next: i64,
    kept: VecDeque<(i64, ServerSseMessage)>,
    /// The stream reached its end (the body read it all).
    ended: bool,
    streams: PostStreams,
}

impl<S> PostStream<S>
where
    S: Stream<Item = ServerSseMessage> + Send + Unpin + 'static,
{
    pub fn new(inner: S, session: &str, streams: PostStreams) -> Self {
        PostStream {
            inner: Some(inner),
            session: session.to_owned(),
            name: uuid::Uuid::new_v4().simple().to_string(),
            next: 0,
            kept: VecDeque::new(),
            ended: false,
            streams,
        }
    }
}

/// Give `event` the next index of stream `name` and this replica's name in
/// a server request's id.
fn label(event: &mut ServerSseMessage, name: &str, index: i64, ids: &RequestIds) {
    event.event_id = Some(PostEventId::text(name, index));
    if let Some(message) = &event.message
        && RequestIds::names(message)
    {
        let mut renamed: ServerJsonRpcMessage = (**message).clone();
        ids.outgoing(&mut renamed);
        event.message = Some(Arc::new(renamed));
    }
}

impl<S> Stream for PostStream<S>
where
    S: Stream<Item = ServerSseMessage> + Send + Unpin + 'static,
{
    type Item = ServerSseMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.poll_next_unpin(cx) {
            Poll::Ready(Some(mut event)) => {
                label(&mut event, &this.name, this.next, &this.streams.ids);
                if this.kept.len() == KEPT {
                    this.kept.pop_front();
                }
                this.kept.push_back((this.next, event.clone()));
                this.next += 1;
                Poll::Ready(Some(event))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S> Drop for PostStream<S>
where
    S: Stream<Item = ServerSseMessage> + Send + Unpin + 'static,
{
    fn drop(&mut self) {
        // Read to its end: delivered, nothing to keep.
        if self.ended {
            return;
        }
        // The answer went out: the client has it unless the connection
        // broke in the last moment (then the request is lost, as before).
        if self.kept.back().is_some_and(|(_, e)| ends_stream(e)) {
            return;
        }
        let (Some(inner), Ok(runtime)) = (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let orphan = Orphan {
            session: std::mem::take(&mut self.session),
            name: std::mem::take(&mut self.name),
            next: self.next,
            kept: std::mem::take(&mut self.kept),
            streams: self.streams.clone(),
        };
        runtime.spawn(orphan.run(inner));
    }
}

/// A POST stream whose client has gone before the answer: what it was
/// sent and everything after goes to the store.
struct Orphan {
    session: String,
    name: String,
    next: i64,
    kept: VecDeque<(i64, ServerSseMessage)>,
    streams: PostStreams,
}

impl Orphan {
    async fn run<S>(mut self, mut inner: S)
    where
        S: Stream<Item = ServerSseMessage> + Send + Unpin + 'static,
    {
        let mut batch: Vec<(i64, ServerSseMessage)> = std::mem::take(&mut self.kept).into();
        loop {
            let ended = batch.last().is_some_and(|(_, e)| ends_stream(e));
            if !batch.is_empty() {
                self.store(&batch, false).await;
            }
            if ended {
                return;
            }
            let next = tokio::select! {
                next = inner.next() => next,
                _ = self.streams.shutdown.cancelled() => None,
            };
            let Some(mut event) = next else {
                // Ended without an answer (the session closed here): the
                // resume ends too.
                self.store(&[], true).await;
                return;
            };
            label(&mut event, &self.name, self.next, &self.streams.ids);
            batch = vec![(self.next, event)];
            self.next += 1;
        }
    }

    async fn store(&self, events: &[(i64, ServerSseMessage)], end: bool) {
        let mut rows: Vec<(i64, Option<String>, bool)> = events
            .iter()
            .map(|(index, event)| {
                let message = event
                    .message
                    .as_deref()
                    .and_then(|m| serde_json::to_string(m).ok());
                (*index, message, ends_stream(event))
            })
            .collect();
        if end {
            rows.push((self.next, None, true));
        }
        let now = self.streams.clock.now();
        match self
            .streams
            .store
            .append_mcp_post_events(&self.session, &self.name, &rows, now)
            .await
        {
            Ok(()) => self.streams.tails.wake(&self.session),
            Err(e) => {
                tracing::warn!(error = %e, "events of a broken POST stream not stored: its resume misses them")
            }
        }
    }
}

/// The rest of POST stream `from.stream` of `session` (admitted for the
/// caller) after `from.index`, as stored; ends after the answer, when the
/// client goes, for a stream of which nothing is stored within
/// [`FIRST_WAIT`] (unknown, another session's, or never broken), or after
/// [`QUIET_LIMIT`] without a new event.
pub fn resume(
    session: &str,
    from: PostEventId,
    streams: &PostStreams,
) -> ReceiverStream<ServerSseMessage> {
    let (tx, rx) = mpsc::channel(CAPACITY);
    let resumed = Resumed {
        notify: streams.tails.watch(session),
        session: session.to_owned(),
        from,
        streams: streams.clone(),
        tx,
    };
    tokio::spawn(resumed.run());
    ReceiverStream::new(rx)
}

struct Resumed {
    session: String,
    from: PostEventId,
    streams: PostStreams,
    notify: Arc<tokio::sync::Notify>,
    tx: mpsc::Sender<ServerSseMessage>,
}

impl Resumed {
    async fn run(mut self) {
        let started = tokio::time::Instant::now();
        let mut last_new = started;
        let mut seen = false;
        loop {
            let read = self
                .streams
                .store
                .mcp_post_events_after(&self.session, &self.from.stream, self.from.index, BATCH)
                .await;
            match read {
                Ok(events) => {
                    if !events.is_empty() {
                        seen = true;
                        last_new = tokio::time::Instant::now();
                    }
                    match self.send(events).await {
                        Some(true) => {}
                        Some(false) | None => return,
                    }
                }
                Err(e) => tracing::warn!(error = %e, "a POST stream resume could not read"),
            }
            if (!seen && started.elapsed() >= FIRST_WAIT) || last_new.elapsed() >= QUIET_LIMIT {
                return;
            }
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(LOOK_AGAIN) => {}
                _ = self.tx.closed() => return,
                _ = self.streams.shutdown.cancelled() => return,
            }
        }
    }

    /// Send `events` in order. `Some(true)`: more may come; `Some(false)`:
    /// the stream ended; `None`: the client has gone.
    async fn send(&mut self, events: Vec<McpPostEvent>) -> Option<bool> {
        for event in events {
            self.from.index = event.idx;
            if let Some(text) = &event.message {
                match serde_json::from_str::<ServerJsonRpcMessage>(text) {
                    Ok(message) => {
                        let mut sse = ServerSseMessage::from_message(message);
                        sse.event_id = Some(PostEventId::text(&self.from.stream, event.idx));
                        self.tx.send(sse).await.ok()?;
                    }
                    Err(_) => tracing::warn!("a stored POST stream event could not be read"),
                }
            }
            if event.ends_stream {
                return Some(false);
            }
        }
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_naming_a_post_stream_and_an_index_parse() {
        let name = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            PostEventId::parse(&format!("{name}.3")),
            Some(PostEventId {
                stream: name.to_owned(),
                index: 3
            })
        );
        for text in [
            "42".to_owned(),
            "0".to_owned(),
            format!("{name}.-1"),
            format!("{name}."),
            format!("{name}x.1"),
            "zz23456789abcdef0123456789abcdef.1".to_owned(),
            format!(".{name}"),
        ] {
            assert_eq!(PostEventId::parse(&text), None, "{text}");
        }
    }
}
