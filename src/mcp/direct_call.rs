//! A 2026-07-28 `tools/call` of an upstream's tool, served by the edge
//! without rmcp's server.
//!
//! rmcp serves every stateless request with a service loop, a handler task
//! and a response task of its own, and parses the body a second time; for a
//! proxied call that is a good part of the hop's CPU and three hand-offs
//! between threads (docs/benchmarks.md). Only a request rmcp would take as
//! it is comes here: no session, `MCP-Protocol-Version: 2026-07-28` and the
//! same version in `_meta` with every key that version requires, SEP-2243's
//! `Mcp-Method` and `Mcp-Name` once each and matching the body, no progress
//! token, and a tool the gateway routes to an upstream. Every other request,
//! a malformed one included, goes to rmcp, which answers it as before.
//!
//! The answer is the one rmcp gives: the same handler
//! ([`McpHandler::call_tool_as`]), the same checks on its result, the same
//! JSON-RPC body and HTTP status. When the upstream sends a notification
//! about the call before its result (a log message), the answer becomes an
//! SSE stream, as with rmcp: the notifications as they come, the result
//! last, a keep-alive comment every 15 s. Unlike rmcp's, that stream is not
//! stored for a `Last-Event-ID` resumption. A caller that goes away cancels
//! the call, which still finishes (and is audited) in a task.

use std::{future::Future, time::Duration};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use rmcp::{
    ErrorData,
    model::{
        CallToolRequestParams, CallToolResponse, ClientCapabilities, ErrorCode, ProtocolVersion,
        RequestId, RequestMetaObject, ServerJsonRpcMessage, ServerNotification, ServerResult,
    },
};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::detached::DetachOnDrop;
use super::handler::{CallScope, McpHandler};
use crate::auth::Principal;
use crate::upstream::relay::{COLLECTED_NOTIFICATIONS, Downstream};

/// The one version served here: the one without sessions.
const VERSION: &str = "2026-07-28";

/// How often an SSE answer that waits for its result says it is alive
/// (rmcp's default).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The body as rmcp's message type reads it, minus its cost: a request
/// and nothing else, no field twice (serde refuses a repeated field, as
/// rmcp's parse does, where the edge's JSON value keeps the last one).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    jsonrpc: String,
    id: RequestId,
    /// Checked on the parsed value already; named so it is allowed once.
    #[allow(dead_code)]
    method: serde::de::IgnoredAny,
    params: CallToolRequestParams,
}

/// A call taken from its request, to be served here.
pub struct DirectCall {
    id: RequestId,
    params: CallToolRequestParams,
    meta: RequestMetaObject,
}

/// The 2026-07-28 calls of upstream tools the edge serves itself.
#[derive(Clone)]
pub struct DirectCalls {
    handler: McpHandler,
    /// Cancels the calls in flight when the server stops, as rmcp's token.
    shutdown: CancellationToken,
}

impl DirectCalls {
    /// Present when there are upstream tools to call.
    pub fn new(handler: &McpHandler, shutdown: CancellationToken) -> Option<DirectCalls> {
        handler.gateway()?;
        Some(DirectCalls {
            handler: handler.clone(),
            shutdown,
        })
    }

    /// The call in this request, when it is one rmcp would serve as it is
    /// and the gateway routes to an upstream; `None` leaves it to rmcp.
    /// `message` is the body the edge parsed from `bytes`.
    pub fn take(
        &self,
        headers: &HeaderMap,
        message: &Value,
        bytes: &[u8],
        has_session: bool,
    ) -> Option<DirectCall> {
        if has_session || single(headers, "mcp-protocol-version")? != VERSION {
            return None;
        }
        // An Accept with parameters (quality values) is for rmcp to weigh.
        if headers
            .get_all(header::ACCEPT)
            .iter()
            .any(|value| value.as_bytes().contains(&b';'))
        {
            return None;
        }
        // Cheap refusals first, on the body already parsed.
        let params = message.get("params")?;
        let name = params.get("name")?.as_str()?;
        if message.get("method")?.as_str()? != "tools/call"
            || params
                .get("_meta")
                .is_some_and(|meta| meta.get("progressToken").is_some())
        {
            return None;
        }
        // SEP-2243: rmcp refuses a missing, repeated or different header.
        // A base64-encoded name is left to rmcp to decode.
        let named = single(headers, "mcp-name")?;
        if single(headers, "mcp-method")? != "tools/call"
            || named != name
            || named.starts_with("=?base64?")
        {
            return None;
        }
        // rmcp checks `Mcp-Param-*` headers against the schema `get_tool`
        // gives, which only mcpgate's own tools have (handler.rs): an
        // upstream's tool has nothing more to check.
        let gateway = self.handler.gateway()?;
        if self.handler.is_builtin_tool(name) || gateway.route_name(name).is_none() {
            return None;
        }
        let Envelope {
            jsonrpc,
            id,
            mut params,
            ..
        } = serde_json::from_slice(bytes).ok()?;
        if jsonrpc != "2.0" {
            return None;
        }
        // rmcp hands the handler the `_meta` in its context, not in the params.
        let meta = params.meta.take()?;
        if meta.protocol_version() != Some(ProtocolVersion::V_2026_07_28)
            || !meta
                .missing_required_keys(&ProtocolVersion::V_2026_07_28)
                .is_empty()
        {
            return None;
        }
        Some(DirectCall { id, params, meta })
    }

    /// Runs `call` for `principal` and answers it as rmcp would.
    pub async fn serve(&self, call: DirectCall, principal: Principal) -> Response {
        self.handler.metrics().direct_calls.inc();
        let DirectCall { id, params, meta } = call;
        let (kept, mut collected) = mpsc::channel(COLLECTED_NOTIFICATIONS);
        let capabilities = meta.client_capabilities();
        let declared_tasks = capabilities.as_ref().is_some_and(|c| c.supports_tasks());
        let ct = self.shutdown.child_token();
        let scope = CallScope {
            meta,
            protocol_version: Some(ProtocolVersion::V_2026_07_28),
            client_capabilities: capabilities,
            ct: ct.clone(),
            downstream: Downstream::Collected(kept),
        };
        let handler = self.handler.for_new_session();
        // Dropped with its request (the caller went away), the call is
        // cancelled and finishes in a task: the upstream is told and the
        // call audited, as when rmcp's handler task sees its token cancelled.
        // A call that moved to a task (input_required) runs on its own token.
        let mut call = DetachOnDrop::new(
            async move { handler.call_tool_as(params, principal, scope).await },
            ct,
        );
        tokio::select! {
            biased;
            Some(first) = collected.recv() => {
                sse_stream(first, collected, call, id, declared_tasks)
            }
            answer = &mut call => {
                let message = message_for(answer, id, declared_tasks);
                // Sent in the poll that answered: they still go first.
                let before = drain(&mut collected);
                if before.is_empty() {
                    json_response(&message)
                } else {
                    sse_response(before, &message)
                }
            }
        }
    }
}

/// The single value of a header that must appear once, as text.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

/// What rmcp's server makes of a handler's `tools/call` answer for a
/// 2026-07-28 caller: a task only for a client that declared tasks, and the
/// cache hints of a cacheable result. A handler's error passes unchanged
/// (rmcp returns it before its -32002 to -32602 mapping of other methods).
fn answered(
    answer: Result<CallToolResponse, ErrorData>,
    declared_tasks: bool,
) -> Result<ServerResult, ErrorData> {
    let response = answer?;
    if matches!(response, CallToolResponse::Task(_)) && !declared_tasks {
        return Err(ErrorData::missing_required_client_capability(
            ClientCapabilities::builder().enable_tasks().build(),
        ));
    }
    let mut result = ServerResult::from(response);
    result.fill_missing_cache_hints();
    Ok(result)
}

/// The JSON-RPC message answering `id`.
fn message_for(
    answer: Option<Result<CallToolResponse, ErrorData>>,
    id: RequestId,
    declared_tasks: bool,
) -> ServerJsonRpcMessage {
    let answer = answer.unwrap_or_else(|| {
        Err(ErrorData::internal_error(
            "the call was already answered",
            None,
        ))
    });
    match answered(answer, declared_tasks) {
        Ok(result) => ServerJsonRpcMessage::response(result, id),
        Err(error) => ServerJsonRpcMessage::error(error, Some(id)),
    }
}

/// The HTTP status rmcp gives a stateless request's JSON-RPC answer.
fn status_of(message: &ServerJsonRpcMessage) -> StatusCode {
    let ServerJsonRpcMessage::Error(error) = message else {
        return StatusCode::OK;
    };
    match error.error.code {
        ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
        | ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY
        | ErrorCode::HEADER_MISMATCH => StatusCode::BAD_REQUEST,
        ErrorCode::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

fn json_response(message: &ServerJsonRpcMessage) -> Response {
    let mut response = match serde_json::to_vec(message) {
        Ok(body) => Response::new(Body::from(body)),
        Err(e) => return unencodable(&e),
    };
    *response.status_mut() = status_of(message);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An SSE event carrying `message`.
fn event(message: &ServerJsonRpcMessage) -> Bytes {
    let mut event = b"data: ".to_vec();
    if let Err(e) = serde_json::to_writer(&mut event, message) {
        // Only JSON values inside: a bug, reported as the call's error.
        tracing::error!(error = %e, "a message for the caller could not be encoded");
        return Bytes::from_static(b"data: {\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32603,\"message\":\"Internal error\"}}\n\n");
    }
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// The notifications queued now, as SSE events.
fn drain(collected: &mut mpsc::Receiver<ServerNotification>) -> Vec<Bytes> {
    let mut events = Vec::new();
    while let Ok(notification) = collected.try_recv() {
        events.push(event(&ServerJsonRpcMessage::notification(notification)));
    }
    events
}

/// Notifications and the answer, all there, as one SSE body.
fn sse_response(before: Vec<Bytes>, message: &ServerJsonRpcMessage) -> Response {
    let mut body = before.concat();
    body.extend_from_slice(&event(message));
    sse(Body::from(body))
}

fn sse(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The answer as an SSE stream: `first` and the notifications after it as
/// they come, then the result, and a keep-alive comment while it waits.
/// Dropped (the caller went away), it drops `call`, which cancels it.
fn sse_stream<F>(
    first: ServerNotification,
    collected: mpsc::Receiver<ServerNotification>,
    call: DetachOnDrop<F>,
    id: RequestId,
    declared_tasks: bool,
) -> Response
where
    F: Future<Output = Result<CallToolResponse, ErrorData>> + Send + 'static,
{
    struct Open<F: Future<Output = Result<CallToolResponse, ErrorData>> + Send + 'static> {
        collected: mpsc::Receiver<ServerNotification>,
        call: DetachOnDrop<F>,
        id: RequestId,
        declared_tasks: bool,
        keep_alive: tokio::time::Interval,
    }
    let open = Open {
        collected,
        call,
        id,
        declared_tasks,
        keep_alive: tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE),
    };
    let first = event(&ServerJsonRpcMessage::notification(first));
    let rest = futures::stream::unfold(Some(open), |open| async move {
        let mut open = open?;
        let chunk = tokio::select! {
            biased;
            Some(notification) = open.collected.recv() => {
                event(&ServerJsonRpcMessage::notification(notification))
            }
            answer = &mut open.call => {
                let message = message_for(answer, open.id.clone(), open.declared_tasks);
                let mut last = Vec::new();
                for notification in drain(&mut open.collected) {
                    last.extend_from_slice(&notification);
                }
                last.extend_from_slice(&event(&message));
                return Some((Bytes::from(last), None));
            }
            _ = open.keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
        };
        Some((chunk, Some(open)))
    });
    let body = futures::stream::once(async move { first })
        .chain(rest)
        .map(Ok::<_, std::convert::Infallible>);
    sse(Body::from_stream(body))
}

/// A result serde cannot write (it holds only JSON values, so this is a
/// bug): a 500 the edge turns into a JSON-RPC error body.
fn unencodable(error: &serde_json::Error) -> Response {
    tracing::error!(error = %error, "a tools/call answer could not be encoded");
    let mut response = Response::new(Body::from("the answer could not be encoded"));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{CallToolResult, ContentBlock};

    #[test]
    fn a_handlers_error_passes_unchanged_as_rmcp_passes_a_tool_calls() {
        let missing = ErrorData::resource_not_found("no such resource", None);
        let message = message_for(Some(Err(missing)), RequestId::Number(3), false);
        let ServerJsonRpcMessage::Error(error) = &message else {
            panic!("{message:?}");
        };
        assert_eq!(error.error.code, ErrorCode::RESOURCE_NOT_FOUND);
        assert_eq!(status_of(&message), StatusCode::OK);
    }

    #[test]
    fn statuses_are_rmcps_for_a_stateless_answer() {
        let error = |code| ServerJsonRpcMessage::error(ErrorData::new(code, "x", None), None);
        assert_eq!(
            status_of(&error(ErrorCode::HEADER_MISMATCH)),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(&error(ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY)),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(&error(ErrorCode::METHOD_NOT_FOUND)),
            StatusCode::NOT_FOUND
        );
        assert_eq!(status_of(&error(ErrorCode::INVALID_PARAMS)), StatusCode::OK);
        let done = CallToolResult::success(vec![ContentBlock::text("ok")]);
        let message = message_for(
            Some(Ok(CallToolResponse::Complete(done))),
            RequestId::Number(1),
            false,
        );
        assert_eq!(status_of(&message), StatusCode::OK);
        let body = serde_json::to_value(&message).unwrap();
        assert_eq!(body["result"]["resultType"], "complete", "{body}");
    }
}
