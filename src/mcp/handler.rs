//! The rmcp `ServerHandler` that serves the built-in toolsets. One instance
//! per MCP session (or per stateless request); all of them share the
//! [`Toolbox`].

use std::{sync::Arc, time::Instant};

#[allow(deprecated)] // logging/setLevel: see get_info
use rmcp::model::SetLevelRequestParams;
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
        ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
        ToolAnnotations,
    },
    service::RequestContext,
};

use crate::{
    auth::{Principal, policy::ScopePolicy},
    telemetry::metrics::{Metrics, Outcome, ToolLabels},
    toolsets::{ToolError, Toolbox},
};

#[derive(Clone)]
pub struct McpHandler {
    toolbox: Toolbox,
    tools: Arc<Vec<Tool>>,
    metrics: Arc<Metrics>,
    /// Present when scopes are enforced (token-authenticated modes).
    policy: Option<Arc<ScopePolicy>>,
    /// Set for legacy SSE sessions, whose messages carry no HTTP parts.
    session_principal: Option<Principal>,
}

impl McpHandler {
    pub fn new(toolbox: Toolbox, metrics: Arc<Metrics>, policy: Option<Arc<ScopePolicy>>) -> Self {
        let tools = toolbox
            .specs()
            .iter()
            .map(|spec| {
                Tool::new(spec.name, spec.description, spec.input_schema.clone())
                    .with_title(spec.title)
                    .with_annotations(
                        ToolAnnotations::with_title(spec.title)
                            .read_only(spec.read_only)
                            .destructive(spec.destructive),
                    )
            })
            .collect();
        McpHandler {
            toolbox,
            tools: Arc::new(tools),
            metrics,
            policy,
            session_principal: None,
        }
    }

    pub fn for_session(&self, principal: Principal) -> Self {
        McpHandler {
            session_principal: Some(principal),
            ..self.clone()
        }
    }

    /// The caller: put into the request's extensions by the HTTP edge, or
    /// fixed for the session on the legacy transport.
    fn principal(&self, context: &RequestContext<RoleServer>) -> Option<Principal> {
        context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Principal>())
            .cloned()
            .or_else(|| self.session_principal.clone())
    }

    fn count(&self, tool: &str, outcome: Outcome) {
        // Only known tool names become labels: the set stays bounded.
        let tool = if self.tools.iter().any(|t| t.name == tool) {
            tool
        } else {
            "unknown"
        };
        self.metrics
            .tool_calls
            .get_or_create(&ToolLabels {
                tool: tool.to_owned(),
                outcome,
            })
            .inc();
    }
}

impl ServerHandler for McpHandler {
    // Logging is deprecated by SEP-2577 but still part of the 2025 revisions we serve.
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        // Resources and prompts are advertised (empty until upstreams provide
        // some) so clients that list them unconditionally get a clean answer.
        ServerConfig::new(
            ServerCapabilities::builder().enable_tools().enable_logging().enable_resources().enable_prompts().build(),
        )
            .with_server_info(Implementation::new("mcpgate", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "mcpgate built-in tools: search/fetch over documents, per-user notes, and a calculator.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = match (&self.policy, self.principal(&context)) {
            (None, _) => self.tools.as_ref().clone(),
            // Only what the caller may call.
            (Some(policy), Some(principal)) => self
                .tools
                .iter()
                .filter(|t| policy.allows(&principal, &t.name))
                .cloned()
                .collect(),
            (Some(_), None) => Vec::new(),
        };
        Ok(ListToolsResult::with_all_items(tools))
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // The built-in tools send no log notifications, so any level is honoured trivially.
        tracing::debug!(level = ?request.level, "client set its logging level");
        Ok(())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        let name = request.name.as_ref();
        let Some(principal) = self.principal(&context) else {
            // The edge always sets a principal; reaching here means a wiring bug.
            tracing::error!(tool = name, "tool call without a principal");
            return Err(ErrorData::internal_error(
                "no authenticated principal",
                None,
            ));
        };
        // The HTTP edge already answered 403 for /mcp; this covers the legacy transport.
        if let Some(policy) = &self.policy
            && !policy.allows(&principal, name)
        {
            self.count(name, Outcome::rejected);
            let needed = policy
                .required(name)
                .into_iter()
                .collect::<Vec<_>>()
                .join(" ");
            return Err(ErrorData::invalid_request(
                format!("insufficient_scope: {name} requires scope {needed}"),
                None,
            ));
        }
        let arguments = request.arguments.clone().unwrap_or_default();
        let result = self.toolbox.call(name, arguments, &principal).await;
        let (outcome, response) = match result {
            Ok(output) => {
                let mut result = CallToolResult::success(vec![ContentBlock::text(output.text)]);
                result.structured_content = output.structured;
                (Outcome::ok, Ok(result.into()))
            }
            Err(ToolError::Failed(message)) => (
                Outcome::tool_error,
                Ok(CallToolResult::error(vec![ContentBlock::text(message)]).into()),
            ),
            Err(err @ (ToolError::UnknownTool(_) | ToolError::InvalidArguments(_))) => (
                Outcome::protocol_error,
                Err(ErrorData::invalid_params(err.to_string(), None)),
            ),
            Err(ToolError::Store(err)) => {
                tracing::error!(tool = name, error = %err, "tool call failed: store unavailable");
                (
                    Outcome::error,
                    Err(ErrorData::internal_error(
                        "the store is unavailable; nothing was changed",
                        None,
                    )),
                )
            }
        };
        tracing::info!(
            target: "audit",
            subject = %principal.subject,
            client = principal.client_id.as_deref().unwrap_or("-"),
            tool = name,
            outcome = ?outcome,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "tool call"
        );
        self.count(name, outcome);
        response
    }
}
