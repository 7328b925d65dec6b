//! What the handler forwards to the gateway: `prompts/get` and
//! `resources/read` of upstream items and proxied `tools/call`, with the
//! caller's `_meta`, through the 2026-07-28 input bridge and the
//! connect-first of `user_auth` upstreams.

use super::*;
use crate::mcp::input_bridge::{CallerBinding, Item};
use crate::upstream::{ConnectShape, ToolCaller};

/// The caller's `_meta` for the upstream: rmcp hands it to the handler in
/// the request context, not in the params, so a forwarded call would lose
/// it. Everything passes — a W3C `traceparent`/`tracestate`/`baggage`
/// (SEP-414), a client's own keys — except what describes the client's hop
/// to mcpgate: its progress token (the link sets its own) and the reserved
/// `io.modelcontextprotocol/` keys (version, capabilities, client info). A
/// key the params already carry is kept.
pub(super) fn carry_caller_meta(
    caller: &rmcp::model::RequestMetaObject,
    params: &mut Option<rmcp::model::RequestMetaObject>,
) {
    let forwarded: Vec<_> = caller
        .0
        .0
        .iter()
        .filter(|(k, _)| *k != "progressToken" && !k.starts_with("io.modelcontextprotocol/"))
        .collect();
    if forwarded.is_empty() {
        return;
    }
    let target = &mut params.get_or_insert_with(Default::default).0.0;
    for (k, v) in forwarded {
        target.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// A retry's `requestState` and answers when mcpgate minted the state (the
/// bridge takes them); an upstream's own stay in the params for it.
fn minted_state(
    state: &mut Option<String>,
    responses: &mut Option<rmcp::model::InputResponses>,
) -> (Option<String>, Option<rmcp::model::InputResponses>) {
    if state.as_deref().is_some_and(InputBridge::minted) {
        (state.take(), responses.take())
    } else {
        (None, None)
    }
}

impl McpHandler {
    pub(super) async fn get_prompt_for(
        &self,
        mut request: GetPromptRequestParams,
        principal: &Principal,
        scope: CallScope,
    ) -> Result<GetPromptResponse, ErrorData> {
        let decision = self.decide(principal, ItemKind::Prompt, &request.name);
        if decision != Decision::Allow {
            return Err(denied("prompt", &request.name, &decision));
        }
        let not_found =
            || ErrorData::invalid_params(format!("no prompt named {}", request.name), None);
        let Some(gateway) = &self.gateway else {
            return Err(not_found());
        };
        let Some((upstream, original)) = gateway.route_name(&request.name) else {
            return Err(not_found());
        };
        carry_caller_meta(&scope.meta, &mut request.meta);
        let name = request.name.clone();
        let upstream_name = upstream.config.name.clone();
        let state = minted_state(&mut request.request_state, &mut request.input_responses);
        let (gateway, who) = (gateway.clone(), principal.clone());
        match self
            .forward_read(
                (Item::Prompt, &name, &upstream_name),
                state,
                principal,
                &scope,
                |origin, cancel| async move {
                    gateway
                        .get_prompt(&upstream, request, original, &who, origin, &cancel)
                        .await
                },
            )
            .await
            .map_err(BridgeError::into_error_data)?
        {
            ServerResult::GetPromptResult(r) => Ok(GetPromptResponse::Complete(r)),
            ServerResult::InputRequiredResult(r) => Ok(GetPromptResponse::InputRequired(r)),
            _ => Err(unexpected("prompts/get")),
        }
    }

    pub(super) async fn read_resource_for(
        &self,
        mut request: ReadResourceRequestParams,
        principal: &Principal,
        scope: CallScope,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let decision = self.decide(principal, ItemKind::Resource, &request.uri);
        if decision != Decision::Allow {
            return Err(denied("resource", &request.uri, &decision));
        }
        let Some(gateway) = &self.gateway else {
            return Err(GatewayError::NotFound(request.uri).into_error_data());
        };
        carry_caller_meta(&scope.meta, &mut request.meta);
        let uri = request.uri.clone();
        let state = minted_state(&mut request.request_state, &mut request.input_responses);
        let (gateway, who) = (gateway.clone(), principal.clone());
        // The URI names the resource on whichever upstream serves it.
        match self
            .forward_read(
                (Item::Resource, &uri, ""),
                state,
                principal,
                &scope,
                |origin, cancel| async move {
                    gateway.read_resource(request, &who, origin, &cancel).await
                },
            )
            .await
            .map_err(BridgeError::into_error_data)?
        {
            ServerResult::ReadResourceResult(r) => Ok(ReadResourceResponse::Complete(r)),
            ServerResult::InputRequiredResult(r) => Ok(ReadResourceResponse::InputRequired(r)),
            _ => Err(unexpected("resources/read")),
        }
    }

    /// A proxied `tools/call`. A 2026-07-28 caller's runs through the
    /// [`InputBridge`], so an upstream's request for the caller becomes
    /// `input_required`; its retry with a `requestState` mcpgate minted is
    /// resumed there. An upstream's own `requestState` passes through.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward_call(
        &self,
        gateway: &Gateway,
        upstream: Arc<crate::upstream::Upstream>,
        mut request: CallToolRequestParams,
        original: &str,
        name: &str,
        principal: &Principal,
        scope: &CallScope,
    ) -> Result<ServerResult, BridgeError> {
        let stateless = scope.stateless();
        // A not-yet-connected `user_auth` upstream asks the user to connect
        // first, in the shape this client supports.
        let shape = ConnectShape::of(
            scope.protocol_version.as_ref(),
            scope.client_capabilities.as_ref(),
        );
        let Some(bridge) = self.bridge.as_ref().filter(|_| stateless) else {
            let caller = ToolCaller {
                principal,
                exposed: name,
                shape,
                origin: self.origin(scope, principal),
                cancel: &scope.ct,
            };
            return Ok(gateway
                .call_tool_connecting(&upstream, request, original.to_owned(), caller)
                .await?);
        };
        let caller = CallerBinding::new(
            principal,
            Item::Tool,
            name,
            &upstream.config.name,
            scope.client_capabilities.clone(),
        );
        if let Some(state) = request.request_state.take() {
            if InputBridge::minted(&state) {
                return bridge
                    .resume(
                        &state,
                        request.input_responses.take(),
                        caller,
                        &principal.owner_key(),
                        &scope.ct,
                    )
                    .await;
            }
            request.request_state = Some(state);
        }
        let (gateway, principal, original, exposed) = (
            self.gateway.clone(),
            principal.clone(),
            original.to_owned(),
            name.to_owned(),
        );
        let Some(gateway) = gateway else {
            return Err(GatewayError::NotFound(original).into());
        };
        bridge
            .start(
                self.origin(scope, &principal),
                caller,
                &scope.ct,
                |origin, cancel| async move {
                    let caller = ToolCaller {
                        principal: &principal,
                        exposed: &exposed,
                        shape,
                        origin,
                        cancel: &cancel,
                    };
                    gateway
                        .call_tool_connecting(&upstream, request, original, caller)
                        .await
                },
            )
            .await
    }

    /// A proxied `prompts/get` or `resources/read` (`run`): for a 2026-07-28
    /// caller through the [`InputBridge`], as [`Self::forward_call`].
    async fn forward_read<F>(
        &self,
        (kind, item, upstream): (Item, &str, &str),
        state: (Option<String>, Option<rmcp::model::InputResponses>),
        principal: &Principal,
        scope: &CallScope,
        run: impl FnOnce(Origin, tokio_util::sync::CancellationToken) -> F,
    ) -> Result<ServerResult, BridgeError>
    where
        F: Future<Output = Result<ServerResult, GatewayError>> + Send + 'static,
    {
        let bridge = self.bridge.as_ref().filter(|_| scope.stateless());
        let caller = CallerBinding::new(
            principal,
            kind,
            item,
            upstream,
            scope.client_capabilities.clone(),
        );
        match (bridge, state) {
            (Some(bridge), (Some(state), responses)) if InputBridge::minted(&state) => {
                bridge
                    .resume(&state, responses, caller, &principal.owner_key(), &scope.ct)
                    .await
            }
            (Some(bridge), _) => {
                bridge
                    .start(self.origin(scope, principal), caller, &scope.ct, run)
                    .await
            }
            (None, _) => Ok(run(self.origin(scope, principal), scope.ct.clone()).await?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_meta_passes_but_its_hop_does_not() {
        let caller: rmcp::model::RequestMetaObject = serde_json::from_value(serde_json::json!({
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "v=1",
            "progressToken": 7,
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "acme/tag": "x"
        }))
        .unwrap();
        let mut params =
            Some(serde_json::from_value(serde_json::json!({"acme/tag": "kept"})).unwrap());
        carry_caller_meta(&caller, &mut params);
        assert_eq!(
            serde_json::to_value(params.unwrap()).unwrap(),
            serde_json::json!({
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "tracestate": "v=1",
                "acme/tag": "kept"
            })
        );
        let mut none = None;
        carry_caller_meta(&rmcp::model::RequestMetaObject::default(), &mut none);
        assert!(none.is_none());
    }
}
