//! The rmcp `ServerHandler`: the built-in toolsets and, through the
//! gateway, every upstream's tools, resources and prompts. One instance per
//! MCP session (or per stateless request); all of them share the
//! [`Toolbox`] and the [`Gateway`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

#[allow(deprecated)] // logging/setLevel and resources/subscribe: see get_info
use rmcp::model::{SetLevelRequestParams, SubscribeRequestParams, UnsubscribeRequestParams};
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities,
        CompleteRequestParams, CompleteResult, ContentBlock, ErrorCode, GetPromptRequestParams,
        GetPromptResponse, Implementation, ListPromptsResult, ListResourceTemplatesResult,
        ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
        ReadResourceRequestParams, ReadResourceResponse, RequestMetaObject, ServerCapabilities,
        ServerConfig, ServerResult, SubscriptionFilter, Tool, ToolAnnotations,
    },
    service::{NotificationContext, RequestContext, SubscriptionContext},
};

use super::input_bridge::{BridgeError, InputBridge};
use crate::{
    auth::{
        Principal,
        policy::{AccessPolicy, Decision, ItemKind},
    },
    telemetry::metrics::{Metrics, Outcome, ToolLabels, UpstreamCallLabels},
    toolsets::{ToolError, Toolbox},
    upstream::{
        Gateway, GatewayError,
        hub::Subscription,
        lists::shortest,
        relay::{Downstream, Origin},
    },
};
use tokio_util::sync::CancellationToken;

/// A JSON-RPC error for calls the policy refuses regardless of scopes.
const FORBIDDEN: ErrorCode = ErrorCode(-32003);

/// How long a list of mcpgate's own stays fresh for a 2026-07-28 client
/// (`ttlMs`). Its built-in tools do not change while it runs; an upstream's
/// change is announced (`list_changed`), and an upstream's own shorter
/// `ttlMs` wins.
const OWN_LIST_TTL_MS: u64 = 60_000;

/// `ttlMs` and `cacheScope` for a list (SEP-2549): the shortest freshness
/// of its parts, and private to the caller unless every caller is the same
/// anonymous one. A list is filtered by the caller's scopes and policy and
/// may hold per-user upstreams' items, so it must never be served from a
/// cache shared across authorization contexts.
fn cache_hints(principal: &Principal, upstream_ttl: Option<u64>) -> (u64, CacheScope) {
    let ttl = shortest(upstream_ttl, Some(OWN_LIST_TTL_MS)).unwrap_or(OWN_LIST_TTL_MS);
    let scope = if *principal == Principal::anonymous() {
        CacheScope::Public
    } else {
        CacheScope::Private
    };
    (ttl, scope)
}

mod forwarding;

use forwarding::carry_caller_meta;

/// Sets a list result's `ttlMs` and `cacheScope` from [`cache_hints`].
macro_rules! with_cache_hints {
    ($result:expr, $hints:expr) => {{
        let mut result = $result;
        let (ttl_ms, scope) = $hints;
        result.ttl_ms = Some(ttl_ms);
        result.cache_scope = Some(scope);
        result
    }};
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// What a call needs of the request that carries it: taken from rmcp's
/// request context, or by the edge from a 2026-07-28 call it serves itself
/// (`direct_call.rs`).
pub(crate) struct CallScope {
    /// The request's `_meta` (rmcp moves it out of the params).
    pub meta: RequestMetaObject,
    pub protocol_version: Option<ProtocolVersion>,
    pub client_capabilities: Option<ClientCapabilities>,
    /// Cancelled when the caller cancels or goes away.
    pub ct: CancellationToken,
    pub downstream: Downstream,
}

impl CallScope {
    fn of(context: RequestContext<RoleServer>) -> CallScope {
        CallScope {
            protocol_version: context.protocol_version(),
            client_capabilities: context.client_capabilities(),
            downstream: Downstream::Peer(context.peer),
            meta: context.meta,
            ct: context.ct,
        }
    }

    /// A 2026-07-28 caller: no `initialize`, no session, no back-channel.
    fn stateless(&self) -> bool {
        self.protocol_version
            .as_ref()
            .is_some_and(|version| !version.has_initialize())
    }
}

#[derive(Clone)]
pub struct McpHandler {
    toolbox: Toolbox,
    tools: Arc<Vec<Tool>>,
    metrics: Arc<Metrics>,
    /// Present when scopes are enforced (token-authenticated modes).
    policy: Option<Arc<AccessPolicy>>,
    gateway: Option<Arc<Gateway>>,
    /// Set for legacy SSE sessions, whose messages carry no HTTP parts.
    session_principal: Option<Principal>,
    /// This instance's downstream session, for relaying upstream messages.
    session: u64,
    /// Upstream requests for 2026-07-28 callers (with a gateway).
    bridge: Option<Arc<InputBridge>>,
}

fn denied(kind: &str, name: &str, decision: &Decision) -> ErrorData {
    match decision {
        Decision::NeedScopes(scopes) => ErrorData::invalid_request(
            format!(
                "insufficient_scope: {kind} {name} requires scope {}",
                scopes.iter().cloned().collect::<Vec<_>>().join(" ")
            ),
            None,
        ),
        _ => ErrorData::new(
            FORBIDDEN,
            format!("{kind} {name} is not allowed for this caller"),
            None,
        ),
    }
}

impl McpHandler {
    pub fn new(
        toolbox: Toolbox,
        metrics: Arc<Metrics>,
        policy: Option<Arc<AccessPolicy>>,
        gateway: Option<Arc<Gateway>>,
    ) -> Self {
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
            gateway: gateway.filter(|g| !g.is_empty()),
            session_principal: None,
            session: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            bridge: None,
        }
    }

    pub fn gateway(&self) -> Option<&Arc<Gateway>> {
        self.gateway.as_ref()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn with_input_bridge(self, bridge: Option<Arc<InputBridge>>) -> Self {
        McpHandler { bridge, ..self }
    }

    /// A fresh instance for a new downstream session.
    pub fn for_new_session(&self) -> Self {
        McpHandler {
            session: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            ..self.clone()
        }
    }

    pub fn for_session(&self, principal: Principal) -> Self {
        McpHandler {
            session_principal: Some(principal),
            ..self.for_new_session()
        }
    }

    /// The caller: put into the request's extensions by the HTTP edge, or
    /// fixed for the session on the legacy transport.
    fn principal_of(&self, extensions: &rmcp::model::Extensions) -> Option<Principal> {
        extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Principal>())
            .cloned()
            .or_else(|| self.session_principal.clone())
    }

    fn principal(&self, context: &RequestContext<RoleServer>) -> Option<Principal> {
        self.principal_of(&context.extensions)
    }

    fn require_principal(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Result<Principal, ErrorData> {
        self.principal(context).ok_or_else(|| {
            // The edge always sets a principal; reaching here means a wiring bug.
            tracing::error!("request without a principal");
            ErrorData::internal_error("no authenticated principal", None)
        })
    }

    fn decide(&self, principal: &Principal, kind: ItemKind, name: &str) -> Decision {
        match &self.policy {
            Some(policy) => policy.decide(principal, kind, name),
            None => Decision::Allow,
        }
    }

    fn origin(&self, scope: &CallScope, principal: &Principal) -> Origin {
        Origin {
            session: self.session,
            owner: Some(principal.owner_key()),
            downstream: scope.downstream.clone(),
            progress: scope.meta.get_progress_token(),
            asks: None,
        }
    }

    /// A `tools/call` by `principal`: a built-in tool, or an upstream's
    /// through the gateway. rmcp's handler and the edge's direct 2026-07-28
    /// calls (`direct_call.rs`) both end here.
    pub(crate) async fn call_tool_as(
        &self,
        request: CallToolRequestParams,
        principal: Principal,
        scope: CallScope,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        let name = request.name.to_string();
        // The HTTP edge already answered 403 for scope gaps on /mcp; this
        // covers deny rules and the legacy transport.
        let decision = self.decide(&principal, ItemKind::Tool, &name);
        if decision != Decision::Allow {
            self.count(&name, Outcome::rejected);
            tracing::info!(
                target: "audit",
                subject = %principal.subject,
                client = principal.client_id.as_deref().unwrap_or("-"),
                tool = name.as_str(),
                outcome = "denied",
                "tool call"
            );
            return Err(denied("tool", &name, &decision));
        }
        let builtin = self.is_builtin_tool(&name);
        let route = match (&self.gateway, builtin) {
            (Some(gateway), false) => gateway.route_name(&name),
            _ => None,
        };
        let (Some(gateway), Some((upstream, original))) = (&self.gateway, route) else {
            let (outcome, response) = self.call_builtin(request, &principal).await;
            tracing::info!(
                target: "audit",
                subject = %principal.subject,
                client = principal.client_id.as_deref().unwrap_or("-"),
                tool = name.as_str(),
                outcome = ?outcome,
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "tool call"
            );
            return response;
        };
        let mut request = request;
        carry_caller_meta(&scope.meta, &mut request.meta);
        let result = self
            .forward_call(
                gateway,
                upstream.clone(),
                request,
                &original,
                &name,
                &principal,
                &scope,
            )
            .await;
        let (outcome, response) = match result {
            Ok(ServerResult::CallToolResult(r)) => {
                let outcome = if r.is_error == Some(true) {
                    Outcome::tool_error
                } else {
                    Outcome::ok
                };
                (outcome, Ok(CallToolResponse::Complete(r)))
            }
            Ok(ServerResult::InputRequiredResult(r)) => {
                (Outcome::ok, Ok(CallToolResponse::InputRequired(r)))
            }
            Ok(ServerResult::CreateTaskResult(r)) => (Outcome::ok, Ok(CallToolResponse::Task(r))),
            Ok(_) => (Outcome::error, Err(unexpected("tools/call"))),
            Err(BridgeError::Gateway(GatewayError::Upstream(e)) | BridgeError::Relayed(e)) => {
                (Outcome::protocol_error, Err(e))
            }
            Err(BridgeError::Gateway(e)) => (Outcome::error, Err(e.into_error_data())),
            Err(e) => (Outcome::rejected, Err(e.into_error_data())),
        };
        let detail = match &response {
            Err(e) => e.message.to_string(),
            Ok(_) => String::new(),
        };
        tracing::info!(
            target: "audit",
            subject = %principal.subject,
            client = principal.client_id.as_deref().unwrap_or("-"),
            upstream = %upstream.config.name,
            tool = original.as_str(),
            outcome = ?outcome,
            error = %detail,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "tool call"
        );
        self.metrics
            .upstream_calls
            .get_or_create(&UpstreamCallLabels {
                upstream: upstream.config.name.clone(),
                outcome,
            })
            .inc();
        response
    }

    /// One of mcpgate's own tools, which shadows an upstream's of that name.
    pub(crate) fn is_builtin_tool(&self, name: &str) -> bool {
        self.tools.iter().any(|t| t.name == name)
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

    async fn call_builtin(
        &self,
        request: CallToolRequestParams,
        principal: &Principal,
    ) -> (Outcome, Result<CallToolResponse, ErrorData>) {
        let name = request.name.as_ref();
        let arguments = request.arguments.clone().unwrap_or_default();
        let result = self.toolbox.call(name, arguments, principal).await;
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
        self.count(name, outcome.clone());
        (outcome, response)
    }
}

/// The audit line of a proxied `prompts/get` or `resources/read`.
fn audit_read<T>(
    principal: &Principal,
    kind: &str,
    item: &str,
    started: Instant,
    result: &Result<T, ErrorData>,
) {
    let (outcome, error) = match result {
        Ok(_) => ("ok", String::new()),
        Err(e) => ("error", e.message.to_string()),
    };
    tracing::info!(
        target: "audit",
        subject = %principal.subject,
        client = principal.client_id.as_deref().unwrap_or("-"),
        kind,
        item,
        outcome,
        error = %error,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "read"
    );
}

fn unexpected(method: &str) -> ErrorData {
    ErrorData::internal_error(
        format!("the upstream answered {method} with an unexpected result"),
        None,
    )
}

impl ServerHandler for McpHandler {
    // Logging and subscriptions are deprecated by SEP-2577 but still part of
    // the 2025 revisions we serve.
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        // Resources and prompts are advertised (empty unless upstreams provide
        // some) so clients that list them unconditionally get a clean answer.
        let capabilities = if self.gateway.is_some() {
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_logging()
                .enable_completions()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_resources_list_changed()
                .enable_prompts()
                .enable_prompts_list_changed()
                .build()
        } else {
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .enable_resources()
                .enable_prompts()
                .build()
        };
        let instructions = if self.gateway.is_some() {
            "mcpgate: the tools, resources and prompts of the MCP servers behind this gateway."
        } else {
            "mcpgate built-in tools: search/fetch over documents, per-user notes, and a calculator."
        };
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("mcpgate", env!("CARGO_PKG_VERSION")))
            .with_instructions(instructions)
    }

    /// 2026-07-28 subscriptions: with upstreams, every category the client
    /// asks for (rmcp narrows it to the advertised capabilities).
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        self.gateway.as_ref().map(|_| requested.clone())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let Some(gateway) = &self.gateway else {
            context.cancelled().await;
            return Ok(());
        };
        let principal = self.require_principal(context.request_context())?;
        let stream = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        let uris = context
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        let ct = &context.request_context().ct;
        // Resource updates need a subscription upstream; the stream's own
        // filter then picks what it asked for.
        let mut placed = Vec::new();
        for uri in &uris {
            if self.decide(&principal, ItemKind::Resource, uri) != Decision::Allow {
                continue;
            }
            match gateway
                .subscribe(
                    SubscribeRequestParams::new(uri.clone()),
                    &principal,
                    stream,
                    Subscription::Subscribe,
                    ct,
                )
                .await
            {
                Ok(()) => placed.push(uri.clone()),
                Err(e) => {
                    tracing::debug!(uri = %uri, error = %e, "resource subscription not placed upstream")
                }
            }
        }
        gateway
            .hub()
            .listen(stream, principal.owner_key(), context.sink().clone());
        context.cancelled().await;
        gateway.hub().unlisten(stream);
        // The stream has ended: what it placed upstream goes, unless another
        // session or stream still follows it (the request's own token is
        // cancelled now, so these run on a fresh one).
        let cleanup = tokio_util::sync::CancellationToken::new();
        for uri in placed {
            if let Err(e) = gateway
                .subscribe(
                    SubscribeRequestParams::new(uri.clone()),
                    &principal,
                    stream,
                    Subscription::Unsubscribe,
                    &cleanup,
                )
                .await
            {
                tracing::debug!(uri = %uri, error = %e, "resource subscription not removed upstream");
            }
        }
        Ok(())
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        if let Some(gateway) = &self.gateway {
            let owner = self
                .principal_of(&context.extensions)
                .map(|p| p.owner_key())
                .unwrap_or_default();
            gateway
                .hub()
                .register(self.session, owner, context.peer.clone());
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let Some(principal) = self.principal(&context) else {
            return Ok(ListToolsResult::with_all_items(Vec::new()));
        };
        let mut tools = self.tools.as_ref().clone();
        let mut upstream_ttl = None;
        if let Some(gateway) = &self.gateway {
            let listed = gateway.list_tools(&principal, &context.ct).await;
            tools.extend(listed.items);
            upstream_ttl = listed.ttl_ms;
        }
        // Only what the caller may call.
        tools.retain(|t| self.decide(&principal, ItemKind::Tool, &t.name) == Decision::Allow);
        Ok(with_cache_hints!(
            ListToolsResult::with_all_items(tools),
            cache_hints(&principal, upstream_ttl)
        ))
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        tracing::debug!(level = ?request.level, "client set its logging level");
        if let (Some(gateway), Some(principal)) = (&self.gateway, self.principal(&context)) {
            gateway.set_level(request, &principal, &context.ct).await;
        }
        Ok(())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        // Upstream tools are validated by their upstream.
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let principal = self.require_principal(&context)?;
        self.call_tool_as(request, principal, CallScope::of(context))
            .await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let (Some(gateway), Some(principal)) = (&self.gateway, self.principal(&context)) else {
            return Ok(ListPromptsResult::with_all_items(Vec::new()));
        };
        let listed = gateway.list_prompts(&principal, &context.ct).await;
        let mut prompts = listed.items;
        prompts.retain(|p| self.decide(&principal, ItemKind::Prompt, &p.name) == Decision::Allow);
        Ok(with_cache_hints!(
            ListPromptsResult::with_all_items(prompts),
            cache_hints(&principal, listed.ttl_ms)
        ))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let started = Instant::now();
        let principal = self.require_principal(&context)?;
        let name = request.name.clone();
        let result = self
            .get_prompt_for(request, &principal, CallScope::of(context))
            .await;
        audit_read(&principal, "prompt", &name, started, &result);
        result
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let (Some(gateway), Some(principal)) = (&self.gateway, self.principal(&context)) else {
            return Ok(ListResourcesResult::with_all_items(Vec::new()));
        };
        let listed = gateway.list_resources(&principal, &context.ct).await;
        let mut resources = listed.items;
        resources
            .retain(|r| self.decide(&principal, ItemKind::Resource, &r.uri) == Decision::Allow);
        Ok(with_cache_hints!(
            ListResourcesResult::with_all_items(resources),
            cache_hints(&principal, listed.ttl_ms)
        ))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let (Some(gateway), Some(principal)) = (&self.gateway, self.principal(&context)) else {
            return Ok(ListResourceTemplatesResult::with_all_items(Vec::new()));
        };
        let listed = gateway
            .list_resource_templates(&principal, &context.ct)
            .await;
        Ok(with_cache_hints!(
            ListResourceTemplatesResult::with_all_items(listed.items),
            cache_hints(&principal, listed.ttl_ms)
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let started = Instant::now();
        let principal = self.require_principal(&context)?;
        let uri = request.uri.clone();
        let result = self
            .read_resource_for(request, &principal, CallScope::of(context))
            .await;
        audit_read(&principal, "resource", &uri, started, &result);
        result
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let principal = self.require_principal(&context)?;
        let decision = self.decide(&principal, ItemKind::Resource, &request.uri);
        if decision != Decision::Allow {
            return Err(denied("resource", &request.uri, &decision));
        }
        let Some(gateway) = &self.gateway else {
            return Err(GatewayError::NotFound(request.uri).into_error_data());
        };
        gateway
            .subscribe(
                request,
                &principal,
                self.session,
                Subscription::Subscribe,
                &context.ct,
            )
            .await
            .map_err(GatewayError::into_error_data)
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let principal = self.require_principal(&context)?;
        let Some(gateway) = &self.gateway else {
            return Err(GatewayError::NotFound(request.uri).into_error_data());
        };
        let meta = request.meta;
        let mut request = SubscribeRequestParams::new(request.uri);
        request.meta = meta;
        gateway
            .subscribe(
                request,
                &principal,
                self.session,
                Subscription::Unsubscribe,
                &context.ct,
            )
            .await
            .map_err(GatewayError::into_error_data)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let principal = self.require_principal(&context)?;
        let Some(gateway) = &self.gateway else {
            return Ok(CompleteResult::default());
        };
        match gateway
            .complete(request, &principal, &context.ct)
            .await
            .map_err(GatewayError::into_error_data)?
        {
            ServerResult::CompleteResult(r) => Ok(r),
            _ => Err(unexpected("completion/complete")),
        }
    }
}
