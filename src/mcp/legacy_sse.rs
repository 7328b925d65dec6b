//! The 2024-11-05 HTTP+SSE transport for old clients: `GET /sse` opens an
//! event stream whose first `endpoint` event names the POST URL
//! (`/messages?sessionId=...`); answers arrive on the stream as `message`
//! events. Each session runs the same handler as `/mcp`.
//!
//! The session's owner is in the store. A POST reaching a replica that does
//! not hold the stream is checked against that record and relayed over
//! PostgreSQL (a row plus NOTIFY); the replica holding the stream runs it
//! and answers on the stream.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Extension,
    body::Body,
    extract::{Query, Request, State},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{Stream, StreamExt};
use http::{HeaderMap, StatusCode, header};
use rmcp::model::{ClientJsonRpcMessage, GetExtensions, JsonRpcMessage, ServerJsonRpcMessage};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, PollSender};

use super::{
    edge::{
        EdgeState, JSONRPC_INVALID_REQUEST, JSONRPC_SERVER_ERROR, JSONRPC_SESSION_NOT_FOUND,
        jsonrpc_error, jsonrpc_refusal, read_jsonrpc_post, store_unavailable,
    },
    handler::McpHandler,
    sessions::SessionBook,
};
use crate::{
    auth::Principal,
    funnel::Reason,
    store::{LEGACY_SSE, RelayedMessage},
};

/// Messages buffered per direction before a slow peer applies back-pressure.
const CHANNEL_CAPACITY: usize = 64;
/// Open sessions at most; more get 503 rather than exhausting memory.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    principal: Principal,
    to_server: mpsc::Sender<ClientJsonRpcMessage>,
}

#[derive(Clone)]
pub struct LegacySse {
    handler: McpHandler,
    edge: Arc<EdgeState>,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    book: Arc<SessionBook>,
    shutdown: CancellationToken,
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

/// Removes the session when its event stream is dropped (client gone).
struct SessionGuard {
    id: String,
    sse: LegacySse,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        // Ended for every replica: POSTs elsewhere get 404 from now on.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let book = self.sse.book.clone();
            let id = self.id.clone();
            runtime.spawn(async move {
                if let Err(e) = book.end(&id).await {
                    tracing::warn!(error = %e, "legacy SSE session not ended in the store");
                }
            });
        }
        if let Ok(mut sessions) = self.sse.sessions.lock() {
            sessions.remove(&self.id);
            self.sse
                .edge
                .metrics
                .legacy_sse_sessions
                .set(sessions.len() as i64);
        }
    }
}

impl LegacySse {
    /// Also starts, on PostgreSQL, the task that takes messages other
    /// replicas relay to sessions held here.
    pub fn new(
        handler: McpHandler,
        edge: Arc<EdgeState>,
        book: Arc<SessionBook>,
        shutdown: CancellationToken,
    ) -> Self {
        let sse = LegacySse {
            handler,
            edge,
            sessions: Arc::new(Mutex::new(HashMap::new())),
            book,
            shutdown,
        };
        if sse.edge.store.is_shared() {
            tokio::spawn(sse.clone().take_relayed_messages());
        }
        sse
    }

    /// Run messages relayed by other replicas for the sessions held here.
    async fn take_relayed_messages(self) {
        let mut listener = match self.edge.store.relay_listener().await {
            Ok(Some(listener)) => listener,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "legacy SSE relay not listening: POSTs from other replicas will not arrive");
                return;
            }
        };
        loop {
            let next = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                next = listener.next_session() => next,
            };
            match next {
                Ok(session) => self.deliver_relayed(&session).await,
                Err(e) => {
                    tracing::warn!(error = %e, "legacy SSE relay interrupted");
                    // Back off before the listener reconnects.
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn deliver_relayed(&self, session: &str) {
        let Some((owner, sender)) = self.sessions.lock().ok().and_then(|sessions| {
            sessions
                .get(session)
                .map(|s| (s.principal.owner_key(), s.to_server.clone()))
        }) else {
            return; // another replica's session
        };
        let relayed = match self.edge.store.take_relayed(session).await {
            Ok(relayed) => relayed,
            Err(e) => {
                tracing::warn!(error = %e, "relayed legacy SSE messages not taken");
                return;
            }
        };
        for RelayedMessage {
            message, principal, ..
        } in relayed
        {
            let parsed = serde_json::from_str::<ClientJsonRpcMessage>(&message)
                .ok()
                .zip(serde_json::from_str::<Principal>(&principal).ok());
            let Some((mut message, principal)) = parsed else {
                tracing::warn!("a relayed legacy SSE message could not be read");
                continue;
            };
            // The sending replica checked the owner; check again here.
            if principal.owner_key() != owner {
                continue;
            }
            if let JsonRpcMessage::Request(request) = &mut message {
                let (mut parts, ()) = http::Request::new(()).into_parts();
                parts.extensions.insert(principal);
                request.request.extensions_mut().insert(parts);
            }
            if sender.send(message).await.is_err() {
                return;
            }
        }
    }

    async fn open_session(
        &self,
        principal: Principal,
    ) -> Result<
        (
            String,
            impl Stream<Item = Result<Event, Infallible>> + use<>,
        ),
        Response,
    > {
        let id = uuid::Uuid::new_v4().simple().to_string();
        // On record before the client learns the id, so every replica
        // knows whose it is.
        match self
            .book
            .bind(&id, LEGACY_SSE, &principal.owner_key())
            .await
        {
            Ok(true) => {}
            bound => {
                tracing::error!(bound = ?bound, "legacy SSE session owner not recorded");
                return Err(store_unavailable());
            }
        }
        let too_many = || {
            jsonrpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                Value::Null,
                JSONRPC_SERVER_ERROR,
                "Service Unavailable: too many open SSE sessions",
                None,
            )
        };
        let (to_server, from_client) = mpsc::channel::<ClientJsonRpcMessage>(CHANNEL_CAPACITY);
        let (to_client, from_server) = mpsc::channel::<ServerJsonRpcMessage>(CHANNEL_CAPACITY);
        {
            let Ok(mut sessions) = self.sessions.lock() else {
                return Err(too_many());
            };
            if sessions.len() >= MAX_SESSIONS {
                return Err(too_many());
            }
            sessions.insert(
                id.clone(),
                Session {
                    principal: principal.clone(),
                    to_server,
                },
            );
            self.edge
                .metrics
                .legacy_sse_sessions
                .set(sessions.len() as i64);
        }
        let handler = self.handler.for_session(principal);
        let transport = (PollSender::new(to_client), ReceiverStream::new(from_client));
        let session_ct = self.shutdown.child_token();
        tokio::spawn({
            let id = id.clone();
            let session_ct = session_ct.clone();
            async move {
                match rmcp::service::serve_server_with_ct(handler, transport, session_ct).await {
                    Ok(running) => {
                        let _ = running.waiting().await;
                    }
                    Err(err) => {
                        tracing::debug!(session = %id, error = %err, "legacy SSE session ended before initialize")
                    }
                }
            }
        });
        let guard = SessionGuard {
            id: id.clone(),
            sse: self.clone(),
        };
        let endpoint = Event::default()
            .event("endpoint")
            .data(format!("/messages?sessionId={id}"));
        let messages = ReceiverStream::new(from_server).map(move |message| {
            let _keep = &guard;
            let data = serde_json::to_string(&message).unwrap_or_else(|_| "{}".to_owned());
            Ok(Event::default().event("message").data(data))
        });
        let stream = futures::stream::once(async move { Ok(endpoint) })
            .chain(messages)
            .take_until(async move { session_ct.cancelled_owned().await });
        Ok((id, stream))
    }
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',').any(|e| {
                let e = e.split(';').next().unwrap_or_default().trim();
                e.eq_ignore_ascii_case("text/event-stream") || e == "*/*"
            })
        })
}

/// `GET /sse`
pub async fn get_sse(
    State(sse): State<LegacySse>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
) -> Response {
    if !accepts_event_stream(&headers) {
        return jsonrpc_refusal(
            StatusCode::NOT_ACCEPTABLE,
            Value::Null,
            JSONRPC_SERVER_ERROR,
            Reason::AcceptHeaderInvalid,
            "Not Acceptable: the Accept header must list text/event-stream",
        );
    }
    match sse.open_session(principal).await {
        Ok((_id, stream)) => Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response(),
        Err(response) => response,
    }
}

/// `POST /messages?sessionId=...`
pub async fn post_messages(
    State(sse): State<LegacySse>,
    Query(query): Query<MessagesQuery>,
    request: Request,
) -> Response {
    let principal = request.extensions().get::<Principal>().cloned();
    let (parts, body): (_, Body) = request.into_parts();
    let Some(session_id) = query.session_id else {
        return jsonrpc_refusal(
            StatusCode::BAD_REQUEST,
            Value::Null,
            JSONRPC_SERVER_ERROR,
            Reason::McpRequestInvalid,
            "Bad Request: sessionId query parameter is required",
        );
    };
    // Legacy clients send loose Accept headers; only the body type matters here.
    let (_bytes, value) = match read_jsonrpc_post(&parts.headers, body, &sse.edge, false).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let text = value.to_string();
    let mut message: ClientJsonRpcMessage = match serde_json::from_value(value) {
        Ok(message) => message,
        Err(_) => {
            return jsonrpc_refusal(
                StatusCode::BAD_REQUEST,
                id,
                JSONRPC_INVALID_REQUEST,
                Reason::JsonRpcInvalid,
                "Invalid Request: not an MCP client message",
            );
        }
    };
    // A session belongs to the principal that opened it: the same issuer and
    // subject, whatever token (refreshed, stepped up) they present now.
    let Some(principal) = principal else {
        tracing::error!("legacy SSE POST without a principal");
        return store_unavailable();
    };
    let owner = principal.owner_key();
    let held = sse.sessions.lock().ok().and_then(|sessions| {
        sessions
            .get(&session_id)
            .map(|s| (s.principal.owner_key() == owner).then(|| s.to_server.clone()))
    });
    let sender = match held {
        Some(sender) => sender,
        None if sse.edge.store.is_shared() => {
            return relay(&sse, &session_id, &text, &principal, id).await;
        }
        None => None,
    };
    // Each request is handled with the principal of its own POST, as on /mcp.
    if let JsonRpcMessage::Request(request) = &mut message {
        request.request.extensions_mut().insert(parts);
    }
    let delivered = match sender {
        Some(sender) => sender.send(message).await.is_ok(),
        None => false,
    };
    if !delivered {
        return jsonrpc_refusal(
            StatusCode::NOT_FOUND,
            id,
            JSONRPC_SESSION_NOT_FOUND,
            Reason::SessionNotFound,
            "Session not found",
        );
    }
    (StatusCode::ACCEPTED, "Accepted").into_response()
}

/// A POST for a session whose stream another replica holds: checked
/// against the stored owner, then handed over through the store.
async fn relay(
    sse: &LegacySse,
    session_id: &str,
    message: &str,
    principal: &Principal,
    id: Value,
) -> Response {
    if let Err(refusal) = sse.book.admit(session_id, LEGACY_SSE, principal).await {
        return refusal.response(id);
    }
    let relayed = match serde_json::to_string(principal) {
        Ok(principal) => {
            sse.edge
                .store
                .relay_legacy_message(session_id, message, &principal, sse.edge.clock.now())
                .await
        }
        Err(e) => Err(crate::store::StoreError::Conflict(e.to_string())),
    };
    match relayed {
        Ok(()) => (StatusCode::ACCEPTED, "Accepted").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "legacy SSE message not relayed");
            store_unavailable()
        }
    }
}
