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
//! JSON-RPC body and HTTP status. Notifications the upstream sends before
//! its result (log messages) are kept and sent before it on an SSE answer,
//! where rmcp would have streamed them as they came.

use axum::{body::Body, response::Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use rmcp::{
    ErrorData,
    model::{
        CallToolRequestParams, CallToolResponse, ClientCapabilities, ErrorCode, ProtocolVersion,
        RequestId, RequestMetaObject, ServerJsonRpcMessage, ServerResult,
    },
};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::handler::{CallScope, McpHandler};
use crate::auth::Principal;
use crate::upstream::relay::{COLLECTED_NOTIFICATIONS, Downstream};

/// The one version served here: the one without sessions.
const VERSION: &str = "2026-07-28";

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
}

impl DirectCalls {
    /// Present when there are upstream tools to call.
    pub fn new(handler: &McpHandler) -> Option<DirectCalls> {
        handler.gateway()?;
        Some(DirectCalls {
            handler: handler.clone(),
        })
    }

    /// The call in this request, when it is one rmcp would serve as it is
    /// and the gateway routes to an upstream; `None` leaves it to rmcp.
    /// `message` is the body the edge parsed.
    pub fn take(
        &self,
        headers: &HeaderMap,
        message: &Value,
        has_session: bool,
    ) -> Option<DirectCall> {
        if has_session || single(headers, "mcp-protocol-version")? != VERSION {
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
        let gateway = self.handler.gateway()?;
        if self.handler.is_builtin_tool(name) || gateway.route_name(name).is_none() {
            return None;
        }
        // A request and nothing else, as rmcp's shape check wants; its
        // id and params read as rmcp reads them, from the body the edge
        // parsed (reading it again as rmcp's message type costs more than
        // rmcp's whole service loop).
        let envelope = message.as_object()?;
        if envelope.get("jsonrpc")? != "2.0"
            || envelope
                .keys()
                .any(|key| !matches!(key.as_str(), "jsonrpc" | "id" | "method" | "params"))
        {
            return None;
        }
        let id = RequestId::deserialize(envelope.get("id")?).ok()?;
        let mut params = CallToolRequestParams::deserialize(params).ok()?;
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
        let ct = CancellationToken::new();
        // The caller went away (this future dropped): the call is cancelled,
        // as rmcp cancels a stateless request's handler. Once answered, a
        // call that moved to a task (input_required) runs on its own token.
        let _cancel_when_dropped = ct.clone().drop_guard();
        let scope = CallScope {
            meta,
            protocol_version: Some(ProtocolVersion::V_2026_07_28),
            client_capabilities: capabilities,
            ct,
            downstream: Downstream::Collected(kept),
        };
        let answer = self
            .handler
            .for_new_session()
            .call_tool_as(params, principal, scope)
            .await;
        let message = match answered(answer, declared_tasks) {
            Ok(result) => ServerJsonRpcMessage::response(result, id),
            Err(error) => ServerJsonRpcMessage::error(error, Some(id)),
        };
        let mut before = Vec::new();
        while let Ok(notification) = collected.try_recv() {
            before.push(ServerJsonRpcMessage::notification(notification));
        }
        if before.is_empty() {
            json_response(&message)
        } else {
            before.push(message);
            sse_response(&before)
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
/// 2026-07-28 caller: a task only for a client that declared tasks, list
/// results with their cache hints, and -32602 for a missing resource.
fn answered(
    answer: Result<CallToolResponse, ErrorData>,
    declared_tasks: bool,
) -> Result<ServerResult, ErrorData> {
    answer
        .and_then(|response| {
            if matches!(response, CallToolResponse::Task(_)) && !declared_tasks {
                return Err(ErrorData::missing_required_client_capability(
                    ClientCapabilities::builder().enable_tasks().build(),
                ));
            }
            let mut result = ServerResult::from(response);
            result.fill_missing_cache_hints();
            Ok(result)
        })
        .map_err(|mut error| {
            if error.code == ErrorCode::RESOURCE_NOT_FOUND {
                error.code = ErrorCode::INVALID_PARAMS;
            }
            error
        })
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

/// Notifications, then the answer, as one SSE body.
fn sse_response(messages: &[ServerJsonRpcMessage]) -> Response {
    let mut body = Vec::new();
    for message in messages {
        body.extend_from_slice(b"data: ");
        if let Err(e) = serde_json::to_writer(&mut body, message) {
            return unencodable(&e);
        }
        body.extend_from_slice(b"\n\n");
    }
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// A result serde cannot write (it holds only JSON values, so this is a
/// bug): a 500 the edge turns into a JSON-RPC error body.
fn unencodable(error: &serde_json::Error) -> Response {
    tracing::error!(error = %error, "a tools/call answer could not be encoded");
    let mut response = Response::new(Body::from("the answer could not be encoded"));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}
