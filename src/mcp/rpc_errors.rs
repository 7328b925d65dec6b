//! JSON-RPC error answers of the MCP endpoints (one place, so every refusal
//! is shaped alike): the JSON-RPC codes, the plain error, the refusal that
//! carries its catalogue reason (`crate::funnel::reasons`), and the store's
//! 503.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::funnel::Reason;

pub const JSONRPC_SERVER_ERROR: i64 = -32000;
pub const JSONRPC_SESSION_NOT_FOUND: i64 = -32001;
pub const JSONRPC_PARSE_ERROR: i64 = -32700;
pub const JSONRPC_INVALID_REQUEST: i64 = -32600;
pub const JSONRPC_UNSUPPORTED_VERSION: i64 = -32022;

/// A JSON-RPC error response with no result, as MCP transports send them.
pub fn jsonrpc_error(
    status: StatusCode,
    id: Value,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Response {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    let body = json!({ "jsonrpc": "2.0", "id": id, "error": error });
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// A refused request (4xx): the message, and in `error.data` the catalogue
/// reason with its fix (`error_description`, cause then fix) and its
/// `/errors` section (`error_uri`, relative to this server), as the OAuth
/// errors carry them; the same reason goes to the log line.
pub fn jsonrpc_refusal(
    status: StatusCode,
    id: Value,
    code: i64,
    reason: Reason,
    message: &str,
) -> Response {
    jsonrpc_refusal_with(status, id, code, reason, message, json!({}))
}

/// [`jsonrpc_refusal`] with more fields in `error.data`.
pub fn jsonrpc_refusal_with(
    status: StatusCode,
    id: Value,
    code: i64,
    reason: Reason,
    message: &str,
    mut data: Value,
) -> Response {
    tracing::info!(
        status = status.as_u16(),
        reason = reason.code(),
        detail = message,
        "mcp request refused"
    );
    data["reason"] = json!(reason.code());
    data["error_description"] = json!(reason.describe(message));
    data["error_uri"] = json!(reason.error_uri(""));
    jsonrpc_error(status, id, code, message, Some(data))
}

pub fn store_unavailable() -> Response {
    let mut response = jsonrpc_error(
        StatusCode::SERVICE_UNAVAILABLE,
        Value::Null,
        JSONRPC_SERVER_ERROR,
        "Service Unavailable: the store is not reachable; retry later",
        None,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}
