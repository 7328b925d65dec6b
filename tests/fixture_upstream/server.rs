//! The `ServerHandler`: one instance per MCP session (per request on the stateless 2026
//! path), all sharing the process-wide [`Shared`] state.

// Logging and resources/subscribe are deprecated (SEP-2577, SEP-2567) but are part of the
// 2025 revisions this fixture serves.
#![allow(deprecated)]

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicU8, AtomicU64, Ordering},
};

use rmcp::{
    ErrorData, Peer, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult,
        GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
        ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, LoggingLevel,
        LoggingMessageNotificationParam, PaginatedRequestParams, ReadResourceRequestParams,
        ReadResourceResponse, ReadResourceResult, ResourceUpdatedNotificationParam,
        ServerCapabilities, ServerConfig, SetLevelRequestParams, SubscribeRequestParams,
        SubscriptionFilter, Tool, UnsubscribeRequestParams,
    },
    service::{RequestContext, SubscriptionContext, SubscriptionSink},
};

use rmcp::model::{GetPromptResult, PromptMessage, ResourceContents, Role};

use crate::{catalog, tools};

/// State every session sees: the tool list, the watched resource and who watches it.
pub struct Shared {
    tools: Vec<Tool>,
    watched_version: AtomicU64,
    next_id: AtomicU64,
    watchers: Mutex<Vec<Watcher>>,
}

/// Someone to tell when the watched resource changes.
#[derive(Clone)]
struct Watcher {
    /// The session's id, or a fresh one per `subscriptions/listen` stream.
    id: u64,
    channel: Channel,
}

#[derive(Clone)]
enum Channel {
    /// `resources/subscribe` from a 2025-era session.
    Session(Peer<RoleServer>),
    /// A 2026-07-28 `subscriptions/listen` stream.
    Listen(SubscriptionSink),
}

impl Shared {
    pub fn new() -> Arc<Self> {
        Arc::new(Shared {
            tools: tools::list(),
            watched_version: AtomicU64::new(1),
            next_id: AtomicU64::new(1),
            watchers: Mutex::new(Vec::new()),
        })
    }

    fn watchers(&self) -> std::sync::MutexGuard<'_, Vec<Watcher>> {
        // The list stays consistent even if a holder panicked: every update is one push/retain.
        self.watchers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone)]
pub struct FixtureServer {
    shared: Arc<Shared>,
    session: u64,
    /// The minimum level of log notifications this session asked for (`logging/setLevel`).
    log_level: Arc<AtomicU8>,
}

impl FixtureServer {
    /// A handler for a new session.
    pub fn new(shared: Arc<Shared>) -> Self {
        let session = shared.next_id.fetch_add(1, Ordering::Relaxed);
        FixtureServer {
            shared,
            session,
            // Until the client chooses, it gets everything.
            log_level: Arc::new(AtomicU8::new(severity(LoggingLevel::Debug))),
        }
    }

    /// Sends a log notification if the session's level lets it through.
    pub async fn log(&self, peer: &Peer<RoleServer>, level: LoggingLevel, message: &str) {
        if severity(level) < self.log_level.load(Ordering::Relaxed) {
            return;
        }
        let param = LoggingMessageNotificationParam::new(level, message.into())
            .with_logger("fixture-upstream");
        if let Err(err) = peer.notify_logging_message(param).await {
            eprintln!("fixture-upstream: log notification failed: {err}");
        }
    }

    /// Changes the watched resource and tells every watcher; returns the new version.
    pub async fn touch_watched(&self) -> u64 {
        let version = self.shared.watched_version.fetch_add(1, Ordering::Relaxed) + 1;
        let watchers = self.shared.watchers().clone();
        let mut gone = Vec::new();
        for watcher in watchers {
            let sent = match &watcher.channel {
                Channel::Session(peer) => peer
                    .notify_resource_updated(ResourceUpdatedNotificationParam::new(
                        catalog::WATCHED,
                    ))
                    .await
                    .is_ok(),
                Channel::Listen(sink) => {
                    sink.notify_resource_updated(catalog::WATCHED).await.is_ok()
                }
            };
            if !sent {
                gone.push(watcher.id);
            }
        }
        // Forget the watchers whose session or stream has ended.
        if !gone.is_empty() {
            self.shared.watchers().retain(|w| !gone.contains(&w.id));
        }
        version
    }

    /// How many sessions hold a `resources/subscribe` here, for tests that
    /// check a gateway removes the subscriptions it placed.
    pub fn subscribed_sessions(&self) -> usize {
        self.shared
            .watchers()
            .iter()
            .filter(|w| matches!(w.channel, Channel::Session(_)))
            .count()
    }

    fn unwatch(&self, id: u64) {
        self.shared.watchers().retain(|w| w.id != id);
    }
}

/// Asks the client (over the session: 2025 revisions) to sample `question`;
/// the answer's text, as `sampled: <text>`.
#[allow(deprecated)] // sampling: see SEP-2577
async fn sample(context: &RequestContext<RoleServer>, question: &str) -> Result<String, ErrorData> {
    use rmcp::model::{CreateMessageRequestParams, SamplingMessage};
    let params = CreateMessageRequestParams::new(vec![SamplingMessage::user_text(question)], 50);
    let result = context
        .peer
        .create_message(params)
        .await
        .map_err(|e| ErrorData::internal_error(format!("sampling failed: {e}"), None))?;
    Ok(format!("sampled: {}", crate::tools::sampled_text(result)))
}

/// Logging levels in increasing severity, as RFC 5424 orders them.
fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

impl ServerHandler for FixtureServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_logging()
                .enable_completions()
                .enable_prompts()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new(
            "mcpgate-fixture-upstream",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "Fixture upstream for mcpgate tests: the MCP conformance suite's test_* tools, \
             resources and prompts, plus echo, sleep, pid, env, flood, crash and spawn_child.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut listed = ListToolsResult::with_all_items(self.shared.tools.clone());
        // A 2026-07-28 `ttlMs` for the gateway to merge, when a test asks for one.
        listed.ttl_ms = std::env::var("FIXTURE_LIST_TTL_MS")
            .ok()
            .and_then(|v| v.parse().ok());
        Ok(listed)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        tools::call(self, request, context).await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(catalog::resources()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            catalog::resource_templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if request.uri == catalog::ASKS_SAMPLING {
            let text = sample(&context, "which resource?").await?;
            return Ok(ReadResourceResult::new(vec![ResourceContents::text(
                text,
                catalog::ASKS_SAMPLING,
            )])
            .into());
        }
        if request.uri == catalog::META_ECHO {
            return Ok(
                ReadResourceResult::new(vec![catalog::meta_echo_contents(&context.meta)]).into(),
            );
        }
        let version = self.shared.watched_version.load(Ordering::Relaxed);
        let contents = catalog::read(&request.uri, version)?;
        Ok(ReadResourceResult::new(contents).into())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // Only the watched resource ever changes; subscribing to the others is harmless.
        catalog::read(&request.uri, 0)?;
        if request.uri == catalog::WATCHED {
            self.unwatch(self.session);
            self.shared.watchers().push(Watcher {
                id: self.session,
                channel: Channel::Session(context.peer),
            });
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if request.uri == catalog::WATCHED {
            self.unwatch(self.session);
        }
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.clone())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let watches = context
            .accepted()
            .resource_subscriptions
            .as_ref()
            .is_some_and(|uris| uris.iter().any(|uri| uri == catalog::WATCHED));
        if !watches {
            context.cancelled().await;
            return Ok(());
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.shared.watchers().push(Watcher {
            id,
            channel: Channel::Listen(context.sink().clone()),
        });
        context.cancelled().await;
        self.unwatch(id);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(catalog::prompts()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name == catalog::ASKS_SAMPLING_PROMPT {
            let text = sample(&context, "which prompt?").await?;
            return Ok(
                GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)]).into(),
            );
        }
        if request.name == catalog::META_ECHO_PROMPT {
            return Ok(catalog::meta_echo_prompt(&context.meta).into());
        }
        Ok(catalog::get_prompt(&request)?.into())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        Ok(CompleteResult::new(catalog::complete(&request)?))
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.log_level
            .store(severity(request.level), Ordering::Relaxed);
        Ok(())
    }
}
