//! The top-level router: MCP routes, operations endpoints and the shared
//! layers (request id, tracing, metrics, panic guard).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{MatchedPath, Path, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    trace::TraceLayer,
};

use crate::{
    auth::ResourceServerInfo,
    server::ClientAddress,
    store::Store,
    telemetry::metrics::{HttpLabels, Metrics, RouteLabels, status_class},
    toolsets::docs::DocIndex,
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Shared state for the operations endpoints.
#[derive(Clone)]
pub struct OpsState {
    pub store: Store,
    pub store_healthy: Arc<AtomicBool>,
    /// The round trip `/readyz` asks for (shared with the periodic probe).
    pub store_probe: Arc<tokio::sync::Mutex<crate::store::StoreProbe>>,
    pub metrics: Arc<Metrics>,
    pub docs: Option<Arc<DocIndex>>,
    /// The `/mcp` edge: `/docs/{id}` checks callers exactly as `fetch` does.
    pub docs_auth: Option<Arc<crate::mcp::edge::EdgeState>>,
    pub resource_server: Option<ResourceServerInfo>,
    pub gateway: Option<Arc<crate::upstream::Gateway>>,
    /// Who may read `/metrics` and the `/readyz` detail.
    pub access: Arc<crate::server::OpsAccess>,
    /// Set on shutdown: `/readyz` answers 503 "draining" from then on.
    pub draining: crate::server::Draining,
}

async fn record_http_metrics(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .http_duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            status_class: status_class(response.status().as_u16()),
        })
        .inc();
    response
}

async fn get_healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn get_readyz(
    State(ops): State<OpsState>,
    client: ClientAddress,
    headers: HeaderMap,
) -> Response {
    // First, and without asking the store: the balancer must see this at
    // once so it stops sending before the listener closes.
    if ops.draining.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining", "error": "this replica is shutting down" })),
        )
            .into_response();
    }
    let ready = {
        let mut probe = ops.store_probe.lock().await;
        matches!(
            tokio::time::timeout(Duration::from_secs(2), probe.probe()).await,
            Ok(true)
        )
    };
    ops.store_healthy.store(ready, Ordering::Relaxed);
    ops.metrics.store_up.set(i64::from(ready));
    // An upstream that is down degrades the gateway but does not take it out
    // of rotation: the other upstreams (and the OAuth endpoints) still work.
    let upstreams = ops.gateway.as_ref().map(|g| g.health());
    let degraded = upstreams
        .as_ref()
        .is_some_and(|u| u.iter().any(|h| h.degrades_readiness()));
    // Upstream names and states are for operators; others learn only the verdict.
    if !ops.access.permits(&headers, client) {
        let (code, status) = match (ready, degraded) {
            (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            (true, true) => (StatusCode::OK, "degraded"),
            (true, false) => (StatusCode::OK, "ready"),
        };
        return (code, Json(json!({ "status": status }))).into_response();
    }
    if ready {
        let status = if degraded { "degraded" } else { "ready" };
        let mut body = json!({ "status": status, "store": ops.store.backend() });
        if let Some(upstreams) = upstreams {
            body["upstreams"] = json!(upstreams);
        }
        Json(body).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "store": ops.store.backend(), "error": "store not reachable" })),
        )
            .into_response()
    }
}

async fn get_metrics(
    State(ops): State<OpsState>,
    client: ClientAddress,
    headers: HeaderMap,
) -> Response {
    if !ops.access.permits(&headers, client) {
        return ops_refused(&ops.access);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ops.metrics.render(),
    )
        .into_response()
}

/// 401 with a challenge when a token would open it, 403 otherwise.
fn ops_refused(access: &crate::server::OpsAccess) -> Response {
    if access.wants_token() {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"mcpgate-ops\"")],
            Json(json!({
                "error": "invalid_token",
                "error_description": "this endpoint needs server.metrics_token as a bearer token",
            })),
        )
            .into_response()
    } else {
        (
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": "access_denied",
                "error_description": "this address is not in server.ops_allow",
            })),
        )
            .into_response()
    }
}

/// Non-streaming routes answer within `limit` or get a 503; a stuck
/// dependency must not hold the connection (and its slot) forever.
async fn limit_request_time(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_secs = limit.as_secs(), "request timed out");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONNECTION, "close")],
                Json(json!({
                    "error": "temporarily_unavailable",
                    "error_description": "the request took too long",
                })),
            )
                .into_response()
        }
    }
}

/// The documents behind `docs` search results, so result URLs resolve. An
/// operator's folder is as private as the `fetch` tool (same token, scope
/// and policy, checked before the id so ids cannot be probed); the built-in
/// guide is public product documentation.
async fn get_doc(
    State(ops): State<OpsState>,
    Path(id): Path<String>,
    headers: http::HeaderMap,
    uri: http::Uri,
) -> Response {
    let Some(docs) = ops.docs.as_ref() else {
        return not_found().await;
    };
    if !docs.is_public() {
        let Some(edge) = &ops.docs_auth else {
            return not_found().await;
        };
        if let Err(refused) = crate::mcp::edge::admit_as_tool(edge, &headers, &uri, "fetch").await {
            return refused;
        }
    }
    match docs.get(&id) {
        Some(doc) => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            doc.text.clone(),
        )
            .into_response(),
        None => not_found().await,
    }
}

/// RFC 9728 protected-resource metadata for `/mcp`.
async fn get_protected_resource_metadata(State(ops): State<OpsState>) -> Response {
    match &ops.resource_server {
        Some(info) => Json(json!({
            "resource": info.resource,
            "authorization_servers": info.authorization_servers,
            "scopes_supported": info.scopes_supported,
            "bearer_methods_supported": ["header"],
            "resource_name": "mcpgate",
        }))
        .into_response(),
        None => not_found().await,
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "not_found", "error_description": "no such endpoint" })),
    )
        .into_response()
}

/// A panic in a handler becomes a JSON 500; the process keeps serving.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({ "error": "server_error", "error_description": "internal error" })),
    )
        .into_response()
}

pub fn router(
    mcp: Router,
    ops: OpsState,
    allowed_origins: &[String],
    authorization_server: Option<Router>,
    request_timeout: Duration,
) -> Router {
    let origins: Vec<HeaderValue> = allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    // Browser MCP clients need to read these response headers.
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("mcp-protocol-version"),
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("mcp-method"),
            HeaderName::from_static("mcp-name"),
        ])
        .expose_headers([
            HeaderName::from_static("mcp-session-id"),
            header::WWW_AUTHENTICATE,
        ])
        .max_age(Duration::from_secs(3600));
    let mcp = mcp.layer(cors);

    let ops_routes = Router::new()
        .route("/healthz", get(get_healthz))
        .route("/readyz", get(get_readyz))
        .route("/metrics", get(get_metrics))
        .route("/docs/{*id}", get(get_doc))
        .with_state(ops.clone());
    // The only protected resource is `/mcp`; a root document would name the
    // origin as the resource, which no token is issued for, so the root is 404.
    let well_known = Router::new()
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(get_protected_resource_metadata),
        )
        .route("/.well-known/oauth-protected-resource", get(not_found))
        .with_state(ops.clone())
        .layer(CorsLayer::permissive().max_age(Duration::from_secs(3600)));

    let metrics = ops.metrics.clone();
    let authorization_server = authorization_server
        .unwrap_or_default()
        .layer(CorsLayer::permissive().max_age(Duration::from_secs(3600)));
    // MCP routes stream (and wait on tools); everything else is bounded.
    let bounded = Router::new()
        .merge(authorization_server)
        .merge(crate::oauth::errors_page::routes())
        .merge(ops_routes)
        .merge(well_known)
        .layer(middleware::from_fn_with_state(
            request_timeout,
            limit_request_time,
        ));
    Router::new()
        .merge(mcp)
        .merge(bounded)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(metrics, record_http_metrics))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|request: &Request| {
                        let request_id = request
                            .headers()
                            .get(&REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = %request_id)
                    }),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                    header::COOKIE,
                    HeaderName::from_static("mcp-session-id"),
                ]))
                .layer(CatchPanicLayer::custom(panic_response)),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_stuck_handler_gets_503_at_the_request_timeout() {
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .layer(middleware::from_fn_with_state(
                Duration::from_millis(100),
                limit_request_time,
            ));
        let started = Instant::now();
        let response = app
            .oneshot(
                Request::builder()
                    .uri("/slow")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
