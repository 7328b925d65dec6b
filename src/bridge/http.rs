//! HTTP edge of `bridge` mode: parse, call [`Bridge`], map errors to RFC
//! status codes and JSON bodies (a page for the browser's `/authorize`).

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;

use super::{Bridge, BridgeError, Relayed};
use crate::oauth::pages;
use crate::server::ClientAddress;

pub fn routes(bridge: Arc<Bridge>) -> Router {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/.well-known/oauth-authorization-server/mcp", get(metadata))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/register", post(register))
        .route("/callback", get(callback))
        .with_state(bridge)
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn error(err: BridgeError) -> Response {
    let status = match &err {
        BridgeError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        BridgeError::Upstream(detail) | BridgeError::Setup(detail) => {
            tracing::warn!(detail = %detail, "bridge: the identity provider failed");
            StatusCode::BAD_GATEWAY
        }
        _ => StatusCode::BAD_REQUEST,
    };
    no_store(
        (
            status,
            Json(json!({"error": err.code(), "error_description": err.to_string()})),
        )
            .into_response(),
    )
}

fn relayed(answer: Relayed) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    no_store((status, Json(answer.body)).into_response())
}

async fn metadata(State(bridge): State<Arc<Bridge>>) -> Response {
    Json(bridge.metadata()).into_response()
}

fn query_pairs(query: Option<String>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// A browser step: a redirect, or an error page (never a redirect to an
/// address that was not checked).
fn browser_step(result: Result<String, BridgeError>) -> Response {
    match result {
        Ok(location) => match HeaderValue::from_str(&location) {
            Ok(v) => no_store((StatusCode::FOUND, [(header::LOCATION, v)]).into_response()),
            Err(_) => error(BridgeError::Setup("unusable redirect URL".into())),
        },
        Err(e @ (BridgeError::Upstream(_) | BridgeError::Setup(_))) => {
            tracing::warn!(error = ?e, "bridge: browser step failed");
            no_store(
                (
                    StatusCode::BAD_GATEWAY,
                    Html(pages::error("the server could not continue the sign-in")),
                )
                    .into_response(),
            )
        }
        Err(e) => {
            no_store((StatusCode::BAD_REQUEST, Html(pages::error(&e.to_string()))).into_response())
        }
    }
}

async fn authorize(State(bridge): State<Arc<Bridge>>, RawQuery(query): RawQuery) -> Response {
    browser_step(bridge.authorize(&query_pairs(query)).await)
}

async fn callback(State(bridge): State<Arc<Bridge>>, RawQuery(query): RawQuery) -> Response {
    browser_step(bridge.callback(&query_pairs(query)).await)
}

async fn token(State(bridge): State<Arc<Bridge>>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match bridge.token(&body, authorization).await {
        Ok(answer) => relayed(answer),
        Err(e) => error(e),
    }
}

async fn register(
    State(bridge): State<Arc<Bridge>>,
    client: ClientAddress,
    body: Bytes,
) -> Response {
    let value = match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => {
            return error(BridgeError::InvalidClientMetadata(
                "the body must be a JSON object".to_owned(),
            ));
        }
    };
    match bridge.register(value, &client.limit_key()).await {
        Ok(answer) => relayed(answer),
        Err(e) => error(e),
    }
}
