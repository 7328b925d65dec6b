//! Prometheus metrics with typed, bounded label sets.

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// `1xx` .. `5xx`.
pub fn status_class(status: u16) -> String {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
    .to_owned()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route template, never the raw path (bounded cardinality).
    pub route: String,
    pub status_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct McpLabels {
    pub method: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct McpMethodLabels {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    pub tool: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    ok,
    /// Refused before reaching a handler (4xx).
    rejected,
    /// The tool ran and reported an error (`isError`).
    tool_error,
    /// A JSON-RPC error answer.
    protocol_error,
    /// A server-side failure (5xx, store down).
    error,
}

/// MCP methods are labels only when known; anything else is `other`.
pub const MCP_METHODS: &[&str] = &[
    "initialize",
    "notifications/initialized",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "notifications/cancelled",
];

pub fn method_label(method: Option<&str>) -> String {
    match method {
        Some(m) if MCP_METHODS.contains(&m) => m.to_owned(),
        Some(_) => "other".to_owned(),
        None => "none".to_owned(),
    }
}

/// `mcpgate_auth_funnel_total`: `client` is a capped set of client ids
/// (others: `other`), `step` and `reason` come from closed catalogues
/// (`reason` is `ok` for a step that passed).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunnelLabels {
    pub client: String,
    pub step: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamCallLabels {
    pub upstream: String,
    pub outcome: Outcome,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    pub mcp_requests: Family<McpLabels, Counter>,
    pub mcp_duration: Family<McpMethodLabels, Histogram>,
    pub tool_calls: Family<ToolLabels, Counter>,
    pub store_up: Gauge,
    pub legacy_sse_sessions: Gauge,
    pub upstream_up: Family<UpstreamLabels, Gauge>,
    pub upstream_restarts: Family<UpstreamLabels, Counter>,
    pub upstream_calls: Family<UpstreamCallLabels, Counter>,
    pub upstream_duration: Family<UpstreamLabels, Histogram>,
    pub password_checks: Counter,
    /// 2026-07-28 calls of upstream tools the edge served without rmcp.
    pub direct_calls: Counter,
    pub auth_funnel: Family<FunnelLabels, Counter>,
    /// Funnel steps not stored because the writer fell behind.
    pub auth_funnel_dropped: Counter,
}

impl Metrics {
    /// `(tool calls, failed calls)` proxied to `upstream` by this replica
    /// (the admin console); reading creates no series.
    pub fn upstream_call_counts(&self, upstream: &str) -> (u64, u64) {
        let mut calls = 0;
        let mut failed = 0;
        for outcome in [
            Outcome::ok,
            Outcome::rejected,
            Outcome::tool_error,
            Outcome::protocol_error,
            Outcome::error,
        ] {
            let labels = UpstreamCallLabels {
                upstream: upstream.to_owned(),
                outcome: outcome.clone(),
            };
            let n = self.upstream_calls.get(&labels).map_or(0, |c| c.get());
            calls += n;
            if outcome != Outcome::ok {
                failed += n;
            }
        }
        (calls, failed)
    }

    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("mcpgate");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status class",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency to response headers",
            http_duration.clone(),
        );
        let mcp_requests = Family::<McpLabels, Counter>::default();
        registry.register(
            "mcp_requests",
            "MCP JSON-RPC messages by method and outcome",
            mcp_requests.clone(),
        );
        let mcp_duration = Family::<McpMethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "mcp_request_duration_seconds",
            "MCP request latency to response headers",
            mcp_duration.clone(),
        );
        let tool_calls = Family::<ToolLabels, Counter>::default();
        registry.register(
            "tool_calls",
            "Built-in tool calls by tool and outcome",
            tool_calls.clone(),
        );
        let store_up = Gauge::default();
        registry.register(
            "store_up",
            "1 when the last store probe succeeded",
            store_up.clone(),
        );
        let legacy_sse_sessions = Gauge::default();
        registry.register(
            "legacy_sse_sessions",
            "Open legacy HTTP+SSE sessions",
            legacy_sse_sessions.clone(),
        );
        let upstream_up = Family::<UpstreamLabels, Gauge>::default();
        registry.register(
            "upstream_up",
            "Shared upstream connections that are up (per-user: how many are up)",
            upstream_up.clone(),
        );
        let upstream_restarts = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_restarts",
            "Upstream reconnections after a crash or disconnect",
            upstream_restarts.clone(),
        );
        let upstream_calls = Family::<UpstreamCallLabels, Counter>::default();
        registry.register(
            "upstream_calls",
            "Proxied tools/call requests by upstream and outcome",
            upstream_calls.clone(),
        );
        let upstream_duration = Family::<UpstreamLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "upstream_call_duration_seconds",
            "Proxied tools/call latency",
            upstream_duration.clone(),
        );
        let password_checks = Counter::default();
        registry.register(
            "password_checks",
            "Argon2 password checks run for sign-ins",
            password_checks.clone(),
        );
        let direct_calls = Counter::default();
        registry.register(
            "mcp_direct_calls",
            "2026-07-28 tools/call requests for upstream tools served by the edge without rmcp's server",
            direct_calls.clone(),
        );
        let auth_funnel = Family::<FunnelLabels, Counter>::default();
        registry.register(
            "auth_funnel",
            "Authorization attempt steps by client, step and reason (ok when the step passed)",
            auth_funnel.clone(),
        );
        let auth_funnel_dropped = Counter::default();
        registry.register(
            "auth_funnel_dropped",
            "Funnel steps counted but not stored because the store writer fell behind",
            auth_funnel_dropped.clone(),
        );
        Arc::new(Metrics {
            registry,
            auth_funnel,
            auth_funnel_dropped,
            http_requests,
            http_duration,
            mcp_requests,
            mcp_duration,
            tool_calls,
            store_up,
            legacy_sse_sessions,
            upstream_up,
            upstream_restarts,
            upstream_calls,
            upstream_duration,
            password_checks,
            direct_calls,
        })
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_series() {
        let m = Metrics::new();
        m.http_requests
            .get_or_create(&HttpLabels {
                route: "/mcp".into(),
                status_class: status_class(404),
            })
            .inc();
        m.mcp_requests
            .get_or_create(&McpLabels {
                method: method_label(Some("tools/call")),
                outcome: Outcome::ok,
            })
            .inc();
        let text = m.render();
        assert!(
            text.contains(r#"mcpgate_http_requests_total{route="/mcp",status_class="4xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"mcpgate_mcp_requests_total{method="tools/call",outcome="ok"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn unknown_methods_collapse() {
        assert_eq!(method_label(Some("x/y")), "other");
        assert_eq!(method_label(None), "none");
    }
}
