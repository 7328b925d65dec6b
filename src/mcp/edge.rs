//! The HTTP edge in front of every MCP route (`/mcp`, `/sse`, `/messages`).
//!
//! rmcp answers malformed requests with plain-text bodies (and invalid JSON
//! with 415). Clients and the spec expect JSON-RPC error bodies and the
//! standard statuses, so this layer checks the request first, in the order a
//! client can act on (Host/Origin, store, media types, size, JSON, version),
//! and turns any remaining non-JSON error from rmcp into a JSON-RPC error.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::{
    auth::{
        Authenticator, Principal, ResourceServerInfo,
        policy::{AccessPolicy, Decision, ItemKind},
        verify::TokenError,
    },
    clock::SharedClock,
    store::{STREAMABLE, Store},
    telemetry::metrics::{McpLabels, McpMethodLabels, Metrics, Outcome, method_label},
};

use super::direct_call::DirectCalls;
pub use super::rpc_errors::{
    JSONRPC_INVALID_REQUEST, JSONRPC_PARSE_ERROR, JSONRPC_SERVER_ERROR, JSONRPC_SESSION_NOT_FOUND,
    JSONRPC_UNSUPPORTED_VERSION, jsonrpc_error, jsonrpc_refusal, jsonrpc_refusal_with,
    store_unavailable,
};
use super::sessions::SessionBook;
use super::token_steps::{record_refused_token, token_reason};
use crate::funnel::{AttemptKey, Funnel, FunnelEvent, Reason, Step};

/// What the edge needs to know; shared by all MCP routes.
pub struct EdgeState {
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub store_healthy: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// Who is calling; with bearer tokens, also what challenges point to.
    pub authenticator: Authenticator,
    /// Present when scopes are enforced.
    pub policy: Option<Arc<AccessPolicy>>,
    /// Where sessions and their owners are kept, for every replica.
    pub store: Store,
    /// Where each token's first call and each refused token go.
    pub funnel: Funnel,
    pub clock: SharedClock,
}

/// The state of the `/mcp` edge: the shared one plus the session records.
#[derive(Clone)]
pub struct StreamableEdge {
    pub edge: Arc<EdgeState>,
    pub sessions: Arc<SessionBook>,
    /// 2026-07-28 calls of upstream tools served here, not by rmcp.
    pub direct: Option<DirectCalls>,
}

/// The `Authorization: Bearer` token; never taken from the query string.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// A `WWW-Authenticate: Bearer` challenge with every value quoted (some
/// clients truncate unquoted values). With an error, RFC 6750 §3 lets it
/// carry `error_description` and `error_uri`: the reason's cause and fix,
/// and its section of `/errors`.
pub fn challenge(
    info: &ResourceServerInfo,
    error: Option<(&str, Reason, &str)>,
    scope: &str,
) -> String {
    let mut parts = Vec::new();
    if let Some((error, reason, detail)) = error {
        parts.push(format!("error=\"{error}\""));
        // A quoted-string may hold neither `"` nor `\` unescaped (RFC 9110 §5.6.4).
        let description: String = reason
            .describe(detail)
            .chars()
            .filter(|c| !matches!(c, '"' | '\\') && !c.is_control())
            .collect();
        parts.push(format!("error_description=\"{description}\""));
        parts.push(format!(
            "error_uri=\"{}\"",
            reason.error_uri(&info.public_origin)
        ));
    }
    parts.push(format!("resource_metadata=\"{}\"", info.metadata_url));
    if !scope.is_empty() {
        parts.push(format!("scope=\"{scope}\""));
    }
    format!("Bearer {}", parts.join(", "))
}

/// The JSON error body beside a challenge: `error_description` is the
/// cause (`detail`) and the reason's fix, `error_uri` its `/errors` section.
fn oauth_error(
    status: StatusCode,
    www_authenticate: String,
    error: &str,
    reason: Reason,
    detail: &str,
    base: &str,
) -> Response {
    let body = json!({
        "error": error,
        "error_description": reason.describe(detail),
        "error_uri": reason.error_uri(base),
    })
    .to_string();
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&www_authenticate) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Who is calling, or the 401/503 that says why we cannot tell.
#[allow(clippy::result_large_err)] // the error is the response itself, built once and returned
async fn authenticate(cfg: &EdgeState, headers: &HeaderMap) -> Result<Principal, Response> {
    let (verifier, info) = match &cfg.authenticator {
        Authenticator::Anonymous => return Ok(Principal::anonymous()),
        Authenticator::Bearer {
            verifier,
            challenge,
        } => (verifier, challenge),
    };
    let baseline = info.scopes_supported.join(" ");
    let base = info.public_origin.as_str();
    let Some(token) = bearer_token(headers) else {
        tracing::info!(target: "audit", outcome = "missing_token", reason = Reason::TokenMissing.code(), "authentication failed");
        cfg.funnel.record(
            FunnelEvent::new(Step::McpCall, "-")
                .unknown_client()
                .stopped(Reason::TokenMissing),
        );
        // No error code in the challenge of a request without credentials
        // (RFC 6750 §3.1); the body says what is missing.
        return Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            challenge(info, None, &baseline),
            "invalid_request",
            Reason::TokenMissing,
            "A bearer access token is required",
            base,
        ));
    };
    match verifier.verify(token).await {
        Ok(principal) => {
            if let Some(client_id) = &principal.client_id {
                cfg.funnel.record_first_call(
                    token,
                    FunnelEvent::new(Step::McpCall, client_id)
                        .keyed(AttemptKey::User)
                        .user(&principal.subject),
                );
            }
            Ok(principal)
        }
        Err(TokenError::Upstream(reason)) => {
            tracing::error!(target: "audit", outcome = "verifier_unavailable", %reason, "authentication failed");
            let mut response = oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                String::new(),
                "temporarily_unavailable",
                Reason::TemporarilyUnavailable,
                "The authorization server's keys cannot be fetched right now",
                base,
            );
            response.headers_mut().remove(header::WWW_AUTHENTICATE);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            Err(response)
        }
        Err(err) => {
            let reason = token_reason(&err);
            tracing::info!(target: "audit", outcome = "invalid_token", reason = reason.code(), detail = %err, "authentication failed");
            record_refused_token(&cfg.funnel, token, reason);
            // A token without a subject is valid but unusable here; saying so
            // tells the operator what to configure and reveals nothing.
            let detail = match reason {
                Reason::TokenNoSubject => "The token names no subject (sub)",
                Reason::TokenExpired => "The access token has expired",
                Reason::AudienceMismatch => "The access token is not meant for this resource",
                _ => "The access token is invalid",
            };
            Err(oauth_error(
                StatusCode::UNAUTHORIZED,
                challenge(info, Some(("invalid_token", reason, detail)), &baseline),
                "invalid_token",
                reason,
                detail,
                base,
            ))
        }
    }
}

/// Supported `MCP-Protocol-Version` values, oldest first.
pub fn supported_versions() -> Vec<&'static str> {
    rmcp::model::ProtocolVersion::KNOWN_VERSIONS
        .iter()
        .map(|v| v.as_str())
        .collect()
}

/// Host and Origin checks against DNS rebinding. `Ok` when both are acceptable.
#[allow(clippy::result_large_err)] // the error is the response itself, built once and returned
pub fn check_host_and_origin(
    headers: &HeaderMap,
    uri: &http::Uri,
    cfg: &EdgeState,
) -> Result<(), Response> {
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()));
    let host_ok = authority
        .as_deref()
        .is_some_and(|authority| host_allowed(authority, &cfg.allowed_hosts));
    if !host_ok {
        return Err(jsonrpc_refusal(
            StatusCode::FORBIDDEN,
            Value::Null,
            JSONRPC_SERVER_ERROR,
            Reason::HostNotAllowed,
            "Forbidden: Host header is not an allowed host for this server",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = origin
            .to_str()
            .ok()
            .is_some_and(|o| cfg.allowed_origins.iter().any(|a| origins_equal(a, o)));
        if !allowed {
            return Err(jsonrpc_refusal(
                StatusCode::FORBIDDEN,
                Value::Null,
                JSONRPC_SERVER_ERROR,
                Reason::OriginNotAllowed,
                "Forbidden: Origin is not allowed for this server",
            ));
        }
    }
    Ok(())
}

fn host_allowed(authority: &str, allowed: &[String]) -> bool {
    let authority = authority.trim().to_ascii_lowercase();
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default().to_owned(),
        None => authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h)
            .to_owned(),
    };
    allowed.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        a == host || a == authority
    })
}

/// Origins compare as (scheme, host, port) with default ports made explicit.
fn origins_equal(allowed: &str, origin: &str) -> bool {
    match (url::Url::parse(allowed), url::Url::parse(origin)) {
        (Ok(a), Ok(o)) => {
            a.scheme() == o.scheme()
                && a.host_str() == o.host_str()
                && a.port_or_known_default() == o.port_or_known_default()
        }
        _ => false,
    }
}

fn accepts(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',').any(|entry| {
                let mut parts = entry.split(';');
                let essence = parts.next().unwrap_or_default().trim();
                let zero_quality = parts.any(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=")
                        .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0))
                });
                essence.eq_ignore_ascii_case(wanted) && !zero_quality
            })
        })
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The checks every POST carrying a JSON-RPC message gets. Returns the parsed
/// message so the caller can label metrics, or the error response.
#[allow(clippy::result_large_err)] // the error is the response itself, built once and returned
pub async fn read_jsonrpc_post(
    headers: &HeaderMap,
    body: Body,
    cfg: &EdgeState,
    require_event_stream: bool,
) -> Result<(bytes::Bytes, Value), Response> {
    // Streamable HTTP requires both types (the answer may be either); the
    // legacy transport answers on its event stream, so any Accept will do.
    if require_event_stream
        && !(accepts(headers, "application/json") && accepts(headers, "text/event-stream"))
    {
        return Err(jsonrpc_refusal(
            StatusCode::NOT_ACCEPTABLE,
            Value::Null,
            JSONRPC_SERVER_ERROR,
            Reason::AcceptHeaderInvalid,
            "Not Acceptable: the Accept header must list both application/json and text/event-stream",
        ));
    }
    if !is_json_content_type(headers) {
        return Err(jsonrpc_refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Value::Null,
            JSONRPC_SERVER_ERROR,
            Reason::ContentTypeInvalid,
            "Unsupported Media Type: Content-Type must be application/json",
        ));
    }
    let bytes = match to_bytes(body, cfg.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return Err(jsonrpc_refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                Value::Null,
                JSONRPC_SERVER_ERROR,
                Reason::MessageTooLarge,
                &format!(
                    "Payload Too Large: the body exceeds {} bytes",
                    cfg.max_body_bytes
                ),
            ));
        }
    };
    let message: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(_) => {
            return Err(jsonrpc_refusal(
                StatusCode::BAD_REQUEST,
                Value::Null,
                JSONRPC_PARSE_ERROR,
                Reason::JsonRpcInvalid,
                "Parse error: the body is not valid JSON",
            ));
        }
    };
    let Some(object) = message.as_object() else {
        let why = if message.is_array() {
            "Invalid Request: JSON-RPC batches are not supported; send one message per POST"
        } else {
            "Invalid Request: the body must be a JSON-RPC object"
        };
        return Err(jsonrpc_refusal(
            StatusCode::BAD_REQUEST,
            Value::Null,
            JSONRPC_INVALID_REQUEST,
            Reason::JsonRpcInvalid,
            why,
        ));
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        let id = object.get("id").cloned().unwrap_or(Value::Null);
        return Err(jsonrpc_refusal(
            StatusCode::BAD_REQUEST,
            id,
            JSONRPC_INVALID_REQUEST,
            Reason::JsonRpcInvalid,
            "Invalid Request: \"jsonrpc\" must be \"2.0\"",
        ));
    }
    Ok((bytes, message))
}

/// Middleware for `/mcp` (Streamable HTTP): [`admit`] the caller,
/// [`bind_session`], read and check a POST's JSON-RPC message
/// ([`enforce_scope`], [`check_protocol_version`]), run the handler, then
/// [`finish_response`].
pub async fn streamable_http_edge(
    State(state): State<StreamableEdge>,
    request: Request,
    next: Next,
) -> Response {
    let StreamableEdge {
        edge: cfg,
        sessions,
        direct,
    } = state;
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let principal = match admit(&cfg, &parts.headers, &parts.uri).await {
        Ok(principal) => principal,
        Err(response) => {
            count(&cfg, None, Outcome::rejected, started);
            return close_if_body_unread(&parts.headers, response);
        }
    };
    let session_id = match sessions.admit_header(&parts.headers, &principal).await {
        Ok(session_id) => session_id,
        Err(refusal) => {
            count(&cfg, None, Outcome::rejected, started);
            return close_if_body_unread(&parts.headers, refusal.response(Value::Null));
        }
    };
    // Ended in the store first, so no replica serves it once this succeeds.
    if parts.method == Method::DELETE
        && let Some(sid) = &session_id
        && let Err(e) = sessions.end(sid).await
    {
        tracing::error!(error = %e, "session not ended");
        return store_unavailable();
    }
    let exchange = Exchange {
        owner: principal.owner_key(),
        is_delete: parts.method == Method::DELETE,
        started,
    };
    parts.extensions.insert(principal.clone());

    let mut call = Call::default();
    let request = if parts.method == Method::POST {
        let (bytes, message) = match read_jsonrpc_post(&parts.headers, body, &cfg, true).await {
            Ok(ok) => ok,
            Err(response) => {
                count(&cfg, None, Outcome::rejected, started);
                // 406/415/413 are answered with (part of) the body unread.
                let unread = matches!(
                    response.status(),
                    StatusCode::NOT_ACCEPTABLE
                        | StatusCode::UNSUPPORTED_MEDIA_TYPE
                        | StatusCode::PAYLOAD_TOO_LARGE
                );
                return if unread {
                    close_if_body_unread(&parts.headers, response)
                } else {
                    response
                };
            }
        };
        call = Call::of(&message);
        if let Err(response) = enforce_scope(&cfg, &principal, &call, &message) {
            count(&cfg, call.method.as_deref(), Outcome::rejected, started);
            return response;
        }
        if let Err(response) = check_protocol_version(&parts.headers, &call) {
            count(&cfg, call.method.as_deref(), Outcome::rejected, started);
            return response;
        }
        if let Some(direct) = &direct
            && let Some(served) =
                direct.take(&parts.headers, &message, &bytes, session_id.is_some())
        {
            let response = direct.serve(served, principal).await;
            return finish_response(&cfg, &sessions, response, call, exchange).await;
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        Request::from_parts(parts, body)
    };

    // rmcp hands a client's answer to the session manager without the
    // request's parts: it learns the admitted caller from here.
    let response = super::server_requests::CALLER
        .scope(exchange.owner.clone(), next.run(request))
        .await;
    finish_response(&cfg, &sessions, response, call, exchange).await
}

/// The JSON-RPC method and id of a POSTed message, for errors and metrics.
#[derive(Default)]
struct Call {
    method: Option<String>,
    id: Value,
}

impl Call {
    fn of(message: &Value) -> Call {
        Call {
            method: message
                .get("method")
                .and_then(Value::as_str)
                .map(str::to_owned),
            id: message.get("id").cloned().unwrap_or(Value::Null),
        }
    }
}

/// What [`finish_response`] needs to know about the request.
struct Exchange {
    /// The caller's owner key: who a session created now belongs to.
    owner: String,
    is_delete: bool,
    started: Instant,
}

/// The 403 `insufficient_scope` for a call whose tool, prompt or resource
/// needs scopes the caller lacks. Deny rules are answered by the handler as
/// a JSON-RPC error.
#[allow(clippy::result_large_err)] // the error is the response itself, built once and returned
fn enforce_scope(
    cfg: &EdgeState,
    principal: &Principal,
    call: &Call,
    message: &Value,
) -> Result<(), Response> {
    // What the call names: tools and prompts by name, resources by URI.
    let target = match call.method.as_deref() {
        Some("tools/call") => Some((ItemKind::Tool, "/params/name", "tool")),
        Some("prompts/get") => Some((ItemKind::Prompt, "/params/name", "prompt")),
        Some("resources/read" | "resources/subscribe") => {
            Some((ItemKind::Resource, "/params/uri", "resource"))
        }
        _ => None,
    };
    let (Some((kind, pointer, noun)), Some(policy), Some(info)) =
        (target, &cfg.policy, cfg.authenticator.resource_server())
    else {
        return Ok(());
    };
    let item = message
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Decision::NeedScopes(required) = policy.decide(principal, kind, item) else {
        return Ok(());
    };
    tracing::info!(
        target: "audit",
        subject = %principal.subject,
        client = principal.client_id.as_deref().unwrap_or("-"),
        item,
        kind = noun,
        outcome = "insufficient_scope",
        "call denied"
    );
    // Ask for what the caller holds plus what this call needs, so
    // stepping up does not lose scopes.
    let wanted: Vec<String> = principal.scopes.union(&required).cloned().collect();
    let needed: Vec<String> = required.into_iter().collect();
    let detail = format!("The {noun} {item} requires scope {}", needed.join(" "));
    Err(oauth_error(
        StatusCode::FORBIDDEN,
        challenge(
            info,
            Some(("insufficient_scope", Reason::InsufficientScope, &detail)),
            &wanted.join(" "),
        ),
        "insufficient_scope",
        Reason::InsufficientScope,
        &detail,
        &info.public_origin,
    ))
}

/// A POST's `MCP-Protocol-Version`, when sent, must be one we speak.
#[allow(clippy::result_large_err)] // the error is the response itself, built once and returned
fn check_protocol_version(headers: &HeaderMap, call: &Call) -> Result<(), Response> {
    let Some(version) = headers.get("mcp-protocol-version") else {
        return Ok(());
    };
    let supported = supported_versions();
    let requested = version.to_str().unwrap_or_default();
    if supported.contains(&requested) {
        return Ok(());
    }
    Err(jsonrpc_refusal_with(
        StatusCode::BAD_REQUEST,
        call.id.clone(),
        JSONRPC_UNSUPPORTED_VERSION,
        Reason::ProtocolVersionUnsupported,
        &format!(
            "Unsupported MCP-Protocol-Version {requested:?}; supported: {}",
            supported.join(", ")
        ),
        json!({ "supported": supported, "requested": requested }),
    ))
}

/// The handler's answer, with a JSON-RPC body on errors; records who owns
/// a session `initialize` created and forgets one a DELETE ended; counts it.
async fn finish_response(
    cfg: &EdgeState,
    sessions: &SessionBook,
    response: Response,
    call: Call,
    exchange: Exchange,
) -> Response {
    let Call { method, id } = call;
    let mut response = jsonrpc_error_body(response, id).await;
    // rmcp ends a session with 202; the Python SDK counts only 200 and 204 as
    // success and warns "Session termination failed" otherwise.
    if exchange.is_delete && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    if method.as_deref() == Some("initialize")
        && let Some(sid) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    {
        // A session whose owner is not on record would be refused on its
        // next request: end it here and let the client retry initialize.
        let bound = sessions.bind(&sid, STREAMABLE, &exchange.owner).await;
        if !matches!(bound, Ok(true)) {
            tracing::error!(bound = ?bound, "session owner not recorded");
            sessions.forget_local(&sid).await;
            response = store_unavailable();
        }
    }
    let status = response.status();
    let outcome = if status.is_server_error() {
        Outcome::error
    } else if status.is_client_error() {
        Outcome::rejected
    } else {
        Outcome::ok
    };
    if method.is_some() {
        count(cfg, method.as_deref(), outcome, exchange.started);
    }
    response
}

/// Middleware for the legacy `/sse` and `/messages` routes: the same Host,
/// Origin and store checks as `/mcp`; message checks happen in the handlers.
pub async fn legacy_sse_edge(
    State(cfg): State<Arc<EdgeState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let principal = match admit(&cfg, request.headers(), request.uri()).await {
        Ok(principal) => principal,
        Err(response) => return close_if_body_unread(request.headers(), response),
    };
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// For an HTTP route that serves what the tool `tool` serves (`/docs/{id}`
/// and `fetch`): the same checks as that `tools/call` on `/mcp` (Host and
/// Origin, store, bearer token, scopes and `[[policy]]`), answered with the
/// same 401 challenge and 403 `insufficient_scope`.
#[allow(clippy::result_large_err)] // the error is the response itself, built once and returned
pub async fn admit_as_tool(
    cfg: &EdgeState,
    headers: &HeaderMap,
    uri: &http::Uri,
    tool: &str,
) -> Result<Principal, Response> {
    let principal = admit(cfg, headers, uri).await?;
    let (Some(policy), Some(info)) = (&cfg.policy, cfg.authenticator.resource_server()) else {
        return Ok(principal);
    };
    match policy.decide(&principal, ItemKind::Tool, tool) {
        Decision::Allow => Ok(principal),
        Decision::NeedScopes(required) => {
            tracing::info!(target: "audit", subject = %principal.subject, item = tool, kind = "tool", outcome = "insufficient_scope", "http read denied");
            let wanted: Vec<String> = principal.scopes.union(&required).cloned().collect();
            let needed: Vec<String> = required.into_iter().collect();
            let detail = format!("Reading this requires scope {}", needed.join(" "));
            Err(oauth_error(
                StatusCode::FORBIDDEN,
                challenge(
                    info,
                    Some(("insufficient_scope", Reason::InsufficientScope, &detail)),
                    &wanted.join(" "),
                ),
                "insufficient_scope",
                Reason::InsufficientScope,
                &detail,
                &info.public_origin,
            ))
        }
        Decision::Deny => {
            tracing::info!(target: "audit", subject = %principal.subject, item = tool, kind = "tool", outcome = "denied", "http read denied");
            let mut response = oauth_error(
                StatusCode::FORBIDDEN,
                String::new(),
                "access_denied",
                Reason::PolicyDenied,
                "The access policy does not allow this caller to read it",
                &info.public_origin,
            );
            response.headers_mut().remove(header::WWW_AUTHENTICATE);
            Err(response)
        }
    }
}

/// The checks before a request's body is read: Host and Origin, store
/// health, then who is calling.
#[allow(clippy::result_large_err)] // the error is the response itself, built once and returned
async fn admit(
    cfg: &EdgeState,
    headers: &HeaderMap,
    uri: &http::Uri,
) -> Result<Principal, Response> {
    check_host_and_origin(headers, uri, cfg)?;
    if !cfg.store_healthy.load(Ordering::Relaxed) {
        return Err(store_unavailable());
    }
    authenticate(cfg, headers).await
}

/// Answering before the body is read leaves it on the wire, so the
/// connection cannot carry another request; say so instead of letting a
/// pooled client find out with a reset.
fn close_if_body_unread(headers: &HeaderMap, mut response: Response) -> Response {
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0);
    if has_body {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn count(cfg: &EdgeState, method: Option<&str>, outcome: Outcome, started: Instant) {
    let method = method_label(method);
    cfg.metrics
        .mcp_duration
        .get_or_create(&McpMethodLabels {
            method: method.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    cfg.metrics
        .mcp_requests
        .get_or_create(&McpLabels { method, outcome })
        .inc();
}

/// Give an error response from rmcp a JSON-RPC body if it has none.
async fn jsonrpc_error_body(response: Response, id: Value) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let code = if status == StatusCode::NOT_FOUND {
        JSONRPC_SESSION_NOT_FOUND
    } else {
        JSONRPC_SERVER_ERROR
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else if status.is_server_error() {
        // rmcp's 5xx texts can carry internal detail; keep it in the log only.
        tracing::error!(status = status.as_u16(), detail = %text, "mcp transport error");
        "Internal error".to_owned()
    } else {
        text
    };
    let mut converted = if status.is_client_error() {
        let reason = if status == StatusCode::NOT_FOUND {
            Reason::SessionNotFound
        } else {
            Reason::McpRequestInvalid
        };
        jsonrpc_refusal(status, id, code, reason, &message)
    } else {
        jsonrpc_error(status, id, code, &message, None)
    };
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            converted.headers_mut().append(name, value.clone());
        }
    }
    converted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_matching() {
        let allowed = vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            "mcp.example.com:8443".to_owned(),
        ];
        assert!(host_allowed("127.0.0.1:8000", &allowed));
        assert!(host_allowed("LOCALHOST", &allowed));
        assert!(host_allowed("mcp.example.com:8443", &allowed));
        assert!(!host_allowed("mcp.example.com:9999", &allowed));
        assert!(!host_allowed("evil.example.com", &allowed));
        assert!(!host_allowed("127.0.0.1.evil.example:80", &allowed));
        assert!(host_allowed("[::1]:8000", &["::1".to_owned()]));
    }

    #[test]
    fn origin_matching() {
        assert!(origins_equal("https://a.example", "https://a.example:443"));
        assert!(!origins_equal("https://a.example", "http://a.example"));
        assert!(!origins_equal(
            "http://localhost:8000",
            "http://localhost:8001"
        ));
        assert!(!origins_equal("http://localhost:8000", "null"));
    }

    #[test]
    fn accept_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json;q=0, text/event-stream"),
        );
        assert!(!accepts(&h, "application/json"));
        assert!(accepts(&h, "text/event-stream"));
    }
}
