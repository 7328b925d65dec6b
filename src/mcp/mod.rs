//! MCP serving. All rmcp types stay inside this module. See README.md for the
//! protocol eras and the session model.

mod detached;
mod direct_call;
pub mod edge;
pub mod events;
pub mod handler;
pub mod input_bridge;
pub mod legacy_sse;
mod post_streams;
mod rpc_errors;
mod server_requests;
pub mod sessions;
mod token_steps;

use std::sync::Arc;

use axum::{
    Router, middleware,
    routing::{get, post},
};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use tokio_util::sync::CancellationToken;

use crate::request_state::RequestStateCodec;

use self::{
    direct_call::DirectCalls,
    edge::{EdgeState, StreamableEdge},
    events::{EventLog, SharedSessions, Tails},
    handler::McpHandler,
    input_bridge::InputBridge,
    legacy_sse::LegacySse,
    server_requests::RequestIds,
    sessions::SessionBook,
};

/// `/mcp`, `/mcp/`, `/sse` and `/messages`, each behind the edge checks.
pub fn routes(
    handler: McpHandler,
    edge: Arc<EdgeState>,
    codec: RequestStateCodec,
    shutdown: CancellationToken,
) -> Router {
    // Sessions live in memory where they are used and in the store for every
    // replica: a replica restores one it has not seen from its stored
    // initialize parameters.
    // Messages a session's handler raises outside a request go to the store,
    // and GET streams read them from there: they reach the stream on
    // whichever replica holds it, and a reconnect with Last-Event-ID
    // resumes on any replica.
    // Server requests name this replica in their ids, so an answer reaching
    // another replica is relayed here; a POST's events name their stream,
    // so a broken one resumes on any replica.
    let ids = RequestIds::new(uuid::Uuid::new_v4().simple().to_string());
    // An upstream's requests for 2026-07-28 callers, asked with
    // `input_required`; a retry on another replica is handed to this one.
    let bridge = handler.gateway().map(|_| {
        InputBridge::new(
            codec,
            ids.origin().to_owned(),
            edge.store.clone(),
            edge.clock.clone(),
            shutdown.child_token(),
        )
    });
    let handler = handler.with_input_bridge(bridge.clone());
    let tails = Arc::new(Tails::default());
    let events = EventLog::new(
        edge.store.clone(),
        edge.clock.clone(),
        tails.clone(),
        ids.clone(),
    );
    let local = Arc::new(LocalSessionManager::default().with_event_store(Arc::new(events)));
    let sessions = Arc::new(SessionBook::new(
        edge.store.clone(),
        edge.clock.clone(),
        local.clone(),
    ));
    sessions.spawn_sweeper(shutdown.clone());
    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(edge.allowed_hosts.clone())
        .with_allowed_origins(edge.allowed_origins.clone())
        .enforce_origin_validation()
        .with_max_request_body_bytes(edge.max_body_bytes)
        .with_legacy_session_mode(true)
        .with_json_response(true)
        .with_cancellation_token(shutdown.child_token());
    config.session_store = Some(sessions.rmcp_store());
    let factory_handler = handler.clone();
    // Calls of upstream tools by 2026-07-28 clients skip rmcp's server.
    let direct = DirectCalls::new(&handler, shutdown.child_token());
    let manager = Arc::new(SharedSessions::new(
        local,
        edge.store.clone(),
        edge.clock.clone(),
        tails,
        ids,
        bridge,
        shutdown.child_token(),
    ));
    let service = StreamableHttpService::new(
        move || Ok(factory_handler.for_new_session()),
        manager,
        config,
    );
    // `/mcp` and `/mcp/` are the same endpoint: clients differ on the slash
    // and a redirect would drop the body or the Authorization header.
    let streamable = Router::new()
        .route_service("/mcp", service.clone())
        .route_service("/mcp/", service)
        .layer(middleware::from_fn_with_state(
            StreamableEdge {
                edge: edge.clone(),
                sessions: sessions.clone(),
                direct,
            },
            edge::streamable_http_edge,
        ));
    let legacy = Router::new()
        .route("/sse", get(legacy_sse::get_sse))
        .route("/messages", post(legacy_sse::post_messages))
        .with_state(LegacySse::new(handler, edge.clone(), sessions, shutdown))
        .layer(middleware::from_fn_with_state(edge, edge::legacy_sse_edge));
    streamable.merge(legacy)
}
