//! The 2024-11-05 HTTP+SSE transport for old clients: `GET /sse` opens an
//! event stream whose first `endpoint` event names the POST URL
//! (`/messages?sessionId=...`); answers arrive on the stream as `message`
//! events. Each session runs the same handler as `/mcp`.

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
        jsonrpc_error, read_jsonrpc_post,
    },
    handler::McpHandler,
};
use crate::auth::Principal;

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
    pub fn new(handler: McpHandler, edge: Arc<EdgeState>, shutdown: CancellationToken) -> Self {
        LegacySse {
            handler,
            edge,
            sessions: Arc::new(Mutex::new(HashMap::new())),
            shutdown,
        }
    }

    fn open_session(
        &self,
        principal: Principal,
    ) -> Option<(
        String,
        impl Stream<Item = Result<Event, Infallible>> + use<>,
    )> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (to_server, from_client) = mpsc::channel::<ClientJsonRpcMessage>(CHANNEL_CAPACITY);
        let (to_client, from_server) = mpsc::channel::<ServerJsonRpcMessage>(CHANNEL_CAPACITY);
        {
            let mut sessions = self.sessions.lock().ok()?;
            if sessions.len() >= MAX_SESSIONS {
                return None;
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
        Some((id, stream))
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
        return jsonrpc_error(
            StatusCode::NOT_ACCEPTABLE,
            Value::Null,
            JSONRPC_SERVER_ERROR,
            "Not Acceptable: the Accept header must list text/event-stream",
            None,
        );
    }
    match sse.open_session(principal) {
        Some((_id, stream)) => Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response(),
        None => jsonrpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            Value::Null,
            JSONRPC_SERVER_ERROR,
            "Service Unavailable: too many open SSE sessions",
            None,
        ),
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
        return jsonrpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            JSONRPC_SERVER_ERROR,
            "Bad Request: sessionId query parameter is required",
            None,
        );
    };
    // Legacy clients send loose Accept headers; only the body type matters here.
    let (_bytes, value) = match read_jsonrpc_post(&parts.headers, body, &sse.edge, false).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let mut message: ClientJsonRpcMessage = match serde_json::from_value(value) {
        Ok(message) => message,
        Err(_) => {
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                id,
                JSONRPC_INVALID_REQUEST,
                "Invalid Request: not an MCP client message",
                None,
            );
        }
    };
    // A session belongs to the principal that opened it: the same issuer and
    // subject, whatever token (refreshed, stepped up) they present now.
    let owner = principal.as_ref().map(Principal::owner_key);
    let sender = sse.sessions.lock().ok().and_then(|sessions| {
        sessions
            .get(&session_id)
            .filter(|s| Some(s.principal.owner_key()) == owner)
            .map(|s| s.to_server.clone())
    });
    // Each request is handled with the principal of its own POST, as on /mcp.
    if let JsonRpcMessage::Request(request) = &mut message {
        request.request.extensions_mut().insert(parts);
    }
    let delivered = match sender {
        Some(sender) => sender.send(message).await.is_ok(),
        None => false,
    };
    if !delivered {
        return jsonrpc_error(
            StatusCode::NOT_FOUND,
            id,
            JSONRPC_SESSION_NOT_FOUND,
            "Session not found",
            None,
        );
    }
    (StatusCode::ACCEPTED, "Accepted").into_response()
}
