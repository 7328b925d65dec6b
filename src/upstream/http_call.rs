//! A request to a Streamable HTTP upstream, posted by mcpgate itself on the
//! session rmcp opened. rmcp's client hands every request through its
//! service loop, its transport worker, per-request channels, a stream task
//! per SSE answer and a drain timer; for a proxied call that is most of the
//! hop's cost. Here one task posts the request and reads its answer: a JSON
//! body, or an SSE stream whose messages are the response and, before it,
//! what the upstream sends about this call (progress, log messages, its own
//! sampling, elicitation or roots requests, answered on the caller's behalf
//! and posted back). Everything else on the connection (`initialize`, lists,
//! the GET stream, re-initializing an expired session) stays rmcp's.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{FutureExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use rmcp::{
    ErrorData,
    model::{
        ClientNotification, ClientRequest, ClientResult, GetMeta, JsonRpcError, JsonRpcMessage,
        JsonRpcNotification, JsonRpcRequest, JsonRpcResponse, ProgressToken, RequestId,
        ServerJsonRpcMessage, ServerNotification, ServerResult,
    },
};
use tokio_util::sync::CancellationToken;

use super::{
    outbound::{HeaderSources, SessionHeaders, SessionRoute},
    relay::{Origin, Relay, answer_for, progress_to},
};

/// The largest JSON answer or SSE event read from an upstream (rmcp's own
/// limit for a JSON answer).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// How long the rest of an answer stream is read after its response, so the
/// connection goes back to the pool instead of being closed.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Why a posted request has no result.
#[derive(Debug, thiserror::Error)]
pub enum HttpCallError {
    #[error("cannot connect: {0}")]
    Unreachable(reqwest::Error),
    /// The upstream no longer knows the session (HTTP 404): the request was
    /// not run, and rmcp's client re-initializes and sends it again.
    #[error("the upstream's session has ended")]
    SessionGone,
    #[error("the upstream answered HTTP {0}")]
    Status(StatusCode),
    #[error("the upstream's answer is not usable: {0}")]
    Malformed(String),
    #[error("the upstream's answer ended before its response")]
    Ended,
    /// The upstream's JSON-RPC error, passed on unchanged.
    #[error("{}", .0.message)]
    Rpc(ErrorData),
    #[error("no answer within the call timeout")]
    Timeout,
    #[error("cancelled by the client")]
    Cancelled,
}

/// Posts requests on one Streamable HTTP connection's session.
pub struct HttpCaller {
    url: reqwest::Url,
    http: reqwest::Client,
    sources: Arc<HeaderSources>,
    route: Arc<SessionRoute>,
    next: AtomicU64,
}

impl HttpCaller {
    pub fn new(
        url: reqwest::Url,
        http: reqwest::Client,
        sources: Arc<HeaderSources>,
        route: Arc<SessionRoute>,
    ) -> Self {
        HttpCaller {
            url,
            http,
            sources,
            route,
            next: AtomicU64::new(1),
        }
    }

    /// The session to post on, once rmcp has initialized one (none on a
    /// 2026-07-28 connection: its headers are rmcp's to derive).
    pub fn session(&self) -> Option<SessionHeaders> {
        self.route.current()
    }

    /// Sends `request` for `origin` and returns its result, bounded by
    /// `timeout`; on timeout or `cancel` the upstream is told
    /// (`notifications/cancelled`). With [`HttpCallError::SessionGone`]
    /// nothing ran upstream and `request` may be sent again.
    pub async fn request(
        &self,
        relay: &Relay,
        session: SessionHeaders,
        request: &mut ClientRequest,
        origin: Option<&Origin>,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<ServerResult, HttpCallError> {
        // String ids never collide with the numbers rmcp gives its own.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = RequestId::String(format!("mcpgate-{n}").into());
        if origin.is_some_and(|o| o.progress.is_some()) {
            request
                .get_meta_mut()
                .set_progress_token(ProgressToken(id.clone()));
        }
        let body = serde_json::to_vec(&JsonRpcRequest::new(id.clone(), &*request))
            .map_err(|e| HttpCallError::Malformed(e.to_string()))?;
        let exchange = self.exchange(relay, &session, body, &id, origin);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(timeout, exchange) => match outcome {
                Ok(outcome) => return outcome,
                Err(_) => HttpCallError::Timeout,
            },
            _ = cancel.cancelled() => HttpCallError::Cancelled,
        };
        let reason = match outcome {
            HttpCallError::Timeout => "timed out",
            _ => "cancelled by the client",
        };
        self.tell_cancelled(session, id, reason);
        Err(outcome)
    }

    /// The headers of every post on `session`: the protocol's two, then the
    /// upstream's own (static, token, identity), which win on a clash.
    async fn headers(&self, session: &SessionHeaders) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            HeaderName::from_static("mcp-protocol-version"),
            session.version.clone(),
        );
        if let Some(id) = &session.session
            && let Ok(value) = HeaderValue::from_str(id)
        {
            headers.insert(HeaderName::from_static("mcp-session-id"), value);
        }
        let (bearer, ours) = self.sources.current().await;
        if let Some(token) = bearer
            && let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        for (name, value) in ours {
            headers.insert(name, value);
        }
        headers
    }

    async fn post(
        &self,
        session: &SessionHeaders,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let headers = self.headers(session).await;
        self.http
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
    }

    async fn exchange(
        &self,
        relay: &Relay,
        session: &SessionHeaders,
        body: Vec<u8>,
        id: &RequestId,
        origin: Option<&Origin>,
    ) -> Result<ServerResult, HttpCallError> {
        let response = self.post(session, body).await.map_err(|e| {
            if e.is_connect() {
                HttpCallError::Unreachable(e)
            } else {
                HttpCallError::Malformed(e.to_string())
            }
        })?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND && session.session.is_some() {
            return Err(HttpCallError::SessionGone);
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        match content_type.as_str() {
            "text/event-stream" if status.is_success() => {
                self.read_stream(relay, session, response, id, origin).await
            }
            "application/json" => {
                let body = read_bounded(response).await?;
                match serde_json::from_slice::<ServerJsonRpcMessage>(&body) {
                    Ok(message) => match answer_to(message, id) {
                        Some(answer) => answer,
                        None => Err(HttpCallError::Malformed(
                            "a JSON answer that is not the response to the request".to_owned(),
                        )),
                    },
                    Err(_) if !status.is_success() => Err(HttpCallError::Status(status)),
                    Err(e) => Err(HttpCallError::Malformed(e.to_string())),
                }
            }
            _ if !status.is_success() => Err(HttpCallError::Status(status)),
            other => Err(HttpCallError::Malformed(format!(
                "HTTP {status} with content type {other:?}"
            ))),
        }
    }

    /// Reads an SSE answer up to the response, relaying what comes before it.
    async fn read_stream(
        &self,
        relay: &Relay,
        session: &SessionHeaders,
        response: reqwest::Response,
        id: &RequestId,
        origin: Option<&Origin>,
    ) -> Result<ServerResult, HttpCallError> {
        // Bytes read since the last complete event: an event may not grow
        // past MAX_MESSAGE.
        let pending = Arc::new(AtomicUsize::new(0));
        let counted = pending.clone();
        let bytes = response.bytes_stream().map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            if counted.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len() > MAX_MESSAGE {
                return Err(std::io::Error::other("an SSE event is larger than 16 MiB"));
            }
            Ok(chunk)
        });
        let mut events = sse_stream::SseStream::from_byte_stream(bytes);
        while let Some(event) = events.next().await {
            pending.store(0, Ordering::Relaxed);
            let event = event.map_err(|e| HttpCallError::Malformed(e.to_string()))?;
            if !matches!(event.event.as_deref(), None | Some("") | Some("message")) {
                continue;
            }
            let Some(data) = event
                .data
                .as_deref()
                .map(str::trim)
                .filter(|d| !d.is_empty())
            else {
                continue;
            };
            let message = serde_json::from_str::<ServerJsonRpcMessage>(data)
                .map_err(|e| HttpCallError::Malformed(e.to_string()))?;
            match message {
                JsonRpcMessage::Request(asked) => {
                    let answer = match origin {
                        Some(origin) => answer_for(origin.clone(), asked.request).await,
                        None => Err(ErrorData::invalid_request(
                            "mcpgate has no caller to ask this on behalf of",
                            None,
                        )),
                    };
                    self.reply(session, asked.id, answer).await;
                }
                JsonRpcMessage::Notification(JsonRpcNotification { notification, .. }) => {
                    relay_notification(relay, origin, notification).await;
                }
                message => {
                    if let Some(answer) = answer_to(message, id) {
                        drain(events);
                        return answer;
                    }
                }
            }
        }
        Err(HttpCallError::Ended)
    }

    /// Posts the caller's answer to an upstream's request back upstream.
    async fn reply(
        &self,
        session: &SessionHeaders,
        id: RequestId,
        answer: Result<ClientResult, ErrorData>,
    ) {
        let body = match answer {
            Ok(result) => serde_json::to_vec(&JsonRpcResponse {
                jsonrpc: Default::default(),
                id,
                result,
            }),
            Err(error) => serde_json::to_vec(&JsonRpcError {
                jsonrpc: Default::default(),
                id: Some(id),
                error,
            }),
        };
        let sent = match body {
            Ok(body) => self.post(session, body).await.map(|r| r.status()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode an answer for the upstream");
                return;
            }
        };
        match sent {
            Ok(status) if status.is_success() => {}
            Ok(status) => {
                tracing::warn!(url = %self.url, %status, "the upstream refused an answer to its request")
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "cannot send an answer to the upstream")
            }
        }
    }

    /// Tells the upstream to stop working on `id`, without waiting.
    fn tell_cancelled(&self, session: SessionHeaders, id: RequestId, reason: &str) {
        let notice =
            ClientNotification::CancelledNotification(rmcp::model::CancelledNotification::new(
                rmcp::model::CancelledNotificationParam::new(Some(id), Some(reason.to_owned())),
            ));
        let Ok(body) = serde_json::to_vec(&JsonRpcNotification {
            jsonrpc: Default::default(),
            notification: notice,
        }) else {
            return;
        };
        let http = self.http.clone();
        let url = self.url.clone();
        let sources = self.sources.clone();
        let route = self.route.clone();
        tokio::spawn(async move {
            let caller = HttpCaller::new(url, http, sources, route);
            if let Err(e) = caller.post(&session, body).await {
                tracing::debug!(error = %e, "cannot tell the upstream a call was cancelled");
            }
        });
    }
}

/// The result of `message` if it answers `id`; `None` for anything else.
fn answer_to(
    message: ServerJsonRpcMessage,
    id: &RequestId,
) -> Option<Result<ServerResult, HttpCallError>> {
    match message {
        JsonRpcMessage::Response(r) if &r.id == id => Some(Ok(r.result)),
        JsonRpcMessage::Error(e) if e.id.as_ref().is_none_or(|i| i == id) => {
            Some(Err(HttpCallError::Rpc(e.error)))
        }
        _ => None,
    }
}

/// What the upstream says about a call while running it goes to that
/// call's caller; list changes and resource updates to whoever follows them.
async fn relay_notification(
    relay: &Relay,
    origin: Option<&Origin>,
    notification: ServerNotification,
) {
    match notification {
        ServerNotification::ProgressNotification(n) => {
            if let Some(origin) = origin {
                progress_to(origin, n.params).await;
            }
        }
        ServerNotification::LoggingMessageNotification(n) => {
            if let Some(origin) = origin {
                origin.downstream.notify_logging_message(n.params).await;
            }
        }
        other => relay.fan_out(other).await,
    }
}

/// Reads what is left of an answer stream (usually only its end), so its
/// connection is kept alive; in a task of its own when it is not over yet.
fn drain<S>(mut events: S)
where
    S: futures::Stream + Unpin + Send + 'static,
{
    match events.next().now_or_never() {
        Some(None) => {}
        _ => {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(DRAIN_LIMIT, async {
                    while events.next().await.is_some() {}
                })
                .await;
            });
        }
    }
}

/// A JSON body, at most [`MAX_MESSAGE`] bytes.
async fn read_bounded(response: reqwest::Response) -> Result<Vec<u8>, HttpCallError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_MESSAGE as u64)
    {
        return Err(HttpCallError::Malformed(
            "a JSON answer larger than 16 MiB".to_owned(),
        ));
    }
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| HttpCallError::Malformed(e.to_string()))?;
        if body.len() + chunk.len() > MAX_MESSAGE {
            return Err(HttpCallError::Malformed(
                "a JSON answer larger than 16 MiB".to_owned(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(value: serde_json::Value) -> ServerJsonRpcMessage {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn only_the_answer_to_this_request_ends_it() {
        let id = RequestId::String("mcpgate-7".into());
        let ok = message(serde_json::json!({"jsonrpc": "2.0", "id": "mcpgate-7",
            "result": {"content": [{"type": "text", "text": "hi"}], "isError": false}}));
        assert!(matches!(
            answer_to(ok, &id),
            Some(Ok(ServerResult::CallToolResult(_)))
        ));
        // rmcp's own numeric ids, or another call's, are not this answer.
        for other in [serde_json::json!(7), serde_json::json!("mcpgate-8")] {
            let stray = message(serde_json::json!({"jsonrpc": "2.0", "id": other, "result": {}}));
            assert!(answer_to(stray, &id).is_none());
        }
        let failed = message(serde_json::json!({"jsonrpc": "2.0", "id": "mcpgate-7",
            "error": {"code": -32602, "message": "unknown tool: x"}}));
        match answer_to(failed, &id) {
            Some(Err(HttpCallError::Rpc(e))) => {
                assert_eq!(e.code.0, -32602);
                assert_eq!(e.message, "unknown tool: x");
            }
            other => panic!("{other:?}"),
        }
        // An error the server could not tie to a request (no id) ends it too.
        let unreadable = message(serde_json::json!({"jsonrpc": "2.0",
            "error": {"code": -32700, "message": "parse error"}}));
        assert!(matches!(
            answer_to(unreadable, &id),
            Some(Err(HttpCallError::Rpc(_)))
        ));
    }
}
