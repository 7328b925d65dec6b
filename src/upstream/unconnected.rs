//! The gateway's side of `user_auth` for a user who has not connected an
//! upstream yet: a call asks them to connect first, in the shape their
//! client supports ([`ConnectShape`]); lists show what the upstream listed
//! last to anyone, or one `connect` tool.

use std::{sync::Arc, time::Duration};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ContentBlock, CustomNotification,
    ElicitRequest, ElicitRequestParams, ElicitationAction, InputRequest, InputRequests,
    InputRequiredResult, ProtocolVersion, ServerNotification, ServerResult, Tool,
};
use tokio_util::sync::CancellationToken;

use super::{
    Gateway, GatewayError, Upstream,
    locks::read,
    relay::Origin,
    user_auth::{
        self, ConnectLink,
        request_state::{RequestStateError, is_own_request_state},
    },
};
use crate::auth::Principal;

/// How long a 2025-11-25 call waits for the user to finish the connect
/// page after the client accepted the URL elicitation.
const ELICITATION_WAIT: Duration = Duration::from_secs(300);
/// How long a 2026-07-28 retry that accepted waits for the same.
const RETRY_WAIT: Duration = Duration::from_secs(30);
/// The store is asked this often at first, then at most every 2 s.
const FIRST_LOOK: Duration = Duration::from_millis(200);
const LONGEST_LOOK: Duration = Duration::from_secs(2);

/// How a caller learns that it must connect an upstream first, by what its
/// client supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectShape {
    /// A 2025-11-25 session that declared `elicitation.url`: mcpgate sends
    /// `elicitation/create` (mode url) during the call, waits for the
    /// connection, and runs the call.
    Elicit,
    /// 2026-07-28 with `elicitation.url`: an `input_required` result with a
    /// URL elicitation and a sealed `requestState`.
    InputRequired,
    /// Everyone else: JSON-RPC error -32042 with the URL.
    Error,
}

impl ConnectShape {
    pub fn of(
        protocol: Option<&ProtocolVersion>,
        capabilities: Option<&ClientCapabilities>,
    ) -> Self {
        let url_mode = capabilities
            .and_then(|c| c.elicitation.as_ref())
            .is_some_and(|e| e.url.is_some());
        // MRTR: no input request the client has not declared support for.
        match (url_mode, protocol) {
            (false, _) | (true, None) => ConnectShape::Error,
            (true, Some(v)) if *v >= ProtocolVersion::V_2026_07_28 => ConnectShape::InputRequired,
            (true, Some(v)) if *v >= ProtocolVersion::V_2025_11_25 => ConnectShape::Elicit,
            (true, Some(_)) => ConnectShape::Error,
        }
    }
}

/// Who calls a tool, for [`Gateway::call_tool_connecting`].
pub struct ToolCaller<'a> {
    pub principal: &'a Principal,
    /// The tool's name as the client sees it (what `requestState` binds).
    pub exposed: &'a str,
    pub shape: ConnectShape,
    pub origin: Origin,
    pub cancel: &'a CancellationToken,
}

/// The key of the connect request in `inputRequests` / `inputResponses`.
fn input_key(upstream: &str) -> String {
    format!("connect_{upstream}")
}

fn url_params(link: &ConnectLink) -> ElicitRequestParams {
    ElicitRequestParams::UrlElicitationParams {
        meta: None,
        message: link.message(),
        url: link.url.clone(),
        elicitation_id: link.elicitation_id.clone(),
    }
}

/// The tool result when the user said no to connecting: the call did not run.
fn refused(upstream: &str, action: &str) -> ServerResult {
    ServerResult::CallToolResult(CallToolResult::error(vec![ContentBlock::text(format!(
        "The user {action} connecting their account at {upstream}, so the tool was not called. \
         Call it again to be asked again."
    ))]))
}

/// A `user_auth` failure at `upstream`, as the gateway reports it.
fn failed(upstream: &str) -> impl Fn(user_auth::UserAuthError) -> GatewayError + '_ {
    move |e| GatewayError::UserAuth {
        upstream: upstream.to_owned(),
        reason: e.to_string(),
    }
}

impl Gateway {
    /// `user_auth` upstreams: `ConnectRequired` (a fresh connect link) when
    /// `principal` has not connected their account there.
    pub(super) async fn require_connection(
        &self,
        upstream: &Upstream,
        principal: &Principal,
    ) -> Result<(), GatewayError> {
        let Some(auth) = &self.context.user_auth else {
            return Ok(());
        };
        let name = &upstream.config.name;
        if !auth.covers(name) {
            return Ok(());
        }
        if auth
            .is_connected(name, &principal.subject)
            .await
            .map_err(failed(name))?
        {
            return Ok(());
        }
        let link = auth
            .connect_link(name, &principal.subject)
            .map_err(failed(name))?;
        Err(GatewayError::ConnectRequired(Box::new(link)))
    }

    /// `tools/call` for `caller`, asking them to connect first in their
    /// client's [`ConnectShape`] when `upstream` needs it. A 2026-07-28
    /// retry carrying mcpgate's `requestState` is verified and answered here;
    /// an upstream's own `requestState` passes through untouched.
    pub async fn call_tool_connecting(
        &self,
        upstream: &Upstream,
        mut params: CallToolRequestParams,
        original: String,
        caller: ToolCaller<'_>,
    ) -> Result<ServerResult, GatewayError> {
        let name = upstream.config.name.as_str();
        if let Some(state) = params.request_state.take_if(|s| is_own_request_state(s)) {
            let auth = self
                .context
                .user_auth
                .as_ref()
                .ok_or(RequestStateError::Tampered)?;
            let retry = auth.open_request_state(&state, caller.principal, caller.exposed)?;
            if retry.upstream != name {
                return Err(RequestStateError::WrongTool.into());
            }
            let answer = params
                .input_responses
                .take()
                .and_then(|mut r| r.remove(&input_key(name)));
            match answer
                .as_ref()
                .and_then(|a| a.get("action"))
                .and_then(|a| a.as_str())
            {
                // The user agreed to open the link: give the browser a moment.
                Some("accept") => {
                    self.wait_for_connection(upstream, caller.principal, RETRY_WAIT, caller.cancel)
                        .await?;
                }
                Some(action @ ("decline" | "cancel")) => {
                    let action = if action == "decline" {
                        "declined"
                    } else {
                        "cancelled"
                    };
                    return Ok(refused(name, action));
                }
                // No answer: ask again (below, if still not connected).
                _ => {}
            }
        }
        let mut refreshed = false;
        let first = loop {
            let result = self
                .call_tool(
                    upstream,
                    params.clone(),
                    original.clone(),
                    caller.principal,
                    caller.origin.clone(),
                    caller.cancel,
                )
                .await;
            let Err(GatewayError::CredentialsRefused { .. }) = &result else {
                break result;
            };
            // The user's own token was refused (revoked at the upstream, or
            // expired early): refresh once and retry, then ask to connect.
            let Some(auth) = self.context.user_auth.as_ref().filter(|a| a.covers(name)) else {
                break result;
            };
            if auth
                .refused_by_upstream(name, &caller.principal.subject, refreshed)
                .await
                .map_err(failed(name))?
            {
                refreshed = true;
                continue;
            }
            break Err(GatewayError::ConnectRequired(Box::new(
                auth.connect_link(name, &caller.principal.subject)
                    .map_err(failed(name))?,
            )));
        };
        let link = match first {
            Err(GatewayError::ConnectRequired(link)) => link,
            other => return other,
        };
        match caller.shape {
            ConnectShape::Error => Err(GatewayError::ConnectRequired(link)),
            ConnectShape::InputRequired => {
                let auth = self
                    .context
                    .user_auth
                    .as_ref()
                    .ok_or_else(|| GatewayError::ConnectRequired(link.clone()))?;
                let state = auth
                    .seal_request_state(caller.principal, caller.exposed, &link)
                    .map_err(failed(name))?;
                let mut requests = InputRequests::new();
                requests.insert(
                    input_key(name),
                    InputRequest::Elicitation(ElicitRequest::new(url_params(&link))),
                );
                Ok(ServerResult::InputRequiredResult(InputRequiredResult::new(
                    Some(requests),
                    Some(state),
                )))
            }
            ConnectShape::Elicit => {
                let Some(peer) = caller.origin.downstream.peer().cloned() else {
                    return Err(GatewayError::ConnectRequired(link));
                };
                let asked = tokio::select! {
                    _ = caller.cancel.cancelled() => return Err(GatewayError::Cancelled),
                    answer = peer.create_elicitation_with_timeout(url_params(&link), Some(ELICITATION_WAIT)) => answer,
                };
                match asked.map(|r| r.action) {
                    Ok(ElicitationAction::Accept) => {}
                    Ok(ElicitationAction::Decline) => return Ok(refused(name, "declined")),
                    Ok(_) => return Ok(refused(name, "cancelled")),
                    // The client could not show it: the link as an error, as for everyone else.
                    Err(e) => {
                        tracing::info!(upstream = name, error = %e, "the client did not answer the connect elicitation");
                        return Err(GatewayError::ConnectRequired(link));
                    }
                }
                if !self
                    .wait_for_connection(
                        upstream,
                        caller.principal,
                        ELICITATION_WAIT,
                        caller.cancel,
                    )
                    .await?
                {
                    return Err(GatewayError::ConnectRequired(link));
                }
                let done = CustomNotification::new(
                    "notifications/elicitation/complete",
                    Some(serde_json::json!({ "elicitationId": link.elicitation_id })),
                );
                if let Err(e) = peer
                    .send_notification(ServerNotification::CustomNotification(done))
                    .await
                {
                    tracing::debug!(upstream = name, error = %e, "could not send notifications/elicitation/complete");
                }
                self.call_tool(
                    upstream,
                    params,
                    original,
                    caller.principal,
                    caller.origin,
                    caller.cancel,
                )
                .await
            }
        }
    }

    /// Wait until `principal` has connected `upstream` (on any replica: the
    /// tokens land in the shared store), at most `limit`; `false` if not.
    /// The backoff runs on tokio's clock, which tests pause and advance.
    async fn wait_for_connection(
        &self,
        upstream: &Upstream,
        principal: &Principal,
        limit: Duration,
        cancel: &CancellationToken,
    ) -> Result<bool, GatewayError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut pause = FIRST_LOOK;
        let Some(auth) = &self.context.user_auth else {
            return Ok(true);
        };
        let name = &upstream.config.name;
        loop {
            let connected = auth
                .is_connected(name, &principal.subject)
                .await
                .map_err(|e| GatewayError::UserAuth {
                    upstream: name.clone(),
                    reason: e.to_string(),
                })?;
            if connected {
                return Ok(true);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(GatewayError::Cancelled),
                _ = tokio::time::sleep(pause.min(deadline - now)) => {}
            }
            pause = (pause * 2).min(LONGEST_LOOK);
        }
    }

    /// For a user not connected to a `user_auth` upstream: the tools it
    /// listed last to anyone, or one `connect` tool, so the model can ask
    /// for them; any call then answers with the connect link.
    pub(super) async fn unconnected_tools(&self, principal: &Principal) -> Vec<Tool> {
        let mut tools = Vec::new();
        for u in &self.upstreams {
            if !matches!(
                self.require_connection(u, principal).await,
                Err(GatewayError::ConnectRequired(_))
            ) {
                continue;
            }
            let seen = read(&u.seen_tools).clone();
            if seen.is_empty() {
                let schema = serde_json::json!({"type": "object", "properties": {}});
                let schema = match schema {
                    serde_json::Value::Object(m) => m,
                    _ => serde_json::Map::new(),
                };
                tools.push(Tool::new(
                    self.exposed(u, "connect"),
                    format!(
                        "Connect your account at {} to use its tools (opens a sign-in link).",
                        u.config.name
                    ),
                    Arc::new(schema),
                ));
            } else {
                tools.extend(seen.into_iter().map(|mut t| {
                    t.name = self.exposed(u, &t.name).into();
                    t
                }));
            }
        }
        tools
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::{ElicitationCapability, FormElicitationCapability, UrlElicitationCapability};

    use super::*;

    fn capabilities(elicitation: Option<ElicitationCapability>) -> ClientCapabilities {
        let mut c = ClientCapabilities::default();
        c.elicitation = elicitation;
        c
    }

    #[test]
    fn the_shape_follows_the_protocol_and_the_declared_url_mode() {
        let url = capabilities(Some(
            ElicitationCapability::new().with_url(UrlElicitationCapability::new()),
        ));
        let form = capabilities(Some(
            ElicitationCapability::new().with_form(FormElicitationCapability::default()),
        ));
        // `elicitation: {}` means form mode only.
        let bare = capabilities(Some(ElicitationCapability::new()));
        let none = capabilities(None);
        let modern = ProtocolVersion::V_2026_07_28;
        let sessionful = ProtocolVersion::V_2025_11_25;
        let older = ProtocolVersion::V_2025_06_18;
        let shape = ConnectShape::of;
        assert_eq!(shape(Some(&sessionful), Some(&url)), ConnectShape::Elicit);
        assert_eq!(
            shape(Some(&modern), Some(&url)),
            ConnectShape::InputRequired
        );
        for c in [&form, &bare, &none] {
            assert_eq!(shape(Some(&sessionful), Some(c)), ConnectShape::Error);
            assert_eq!(shape(Some(&modern), Some(c)), ConnectShape::Error);
        }
        assert_eq!(shape(Some(&older), Some(&url)), ConnectShape::Error);
        assert_eq!(shape(None, Some(&url)), ConnectShape::Error);
        assert_eq!(shape(Some(&modern), None), ConnectShape::Error);
    }
}
