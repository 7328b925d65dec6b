//! An upstream that answers `input_required` even to a 2025-revision client
//! (mcpgate's links speak 2025-11-25), which rmcp's `ServerHandler` refuses
//! to do: this wrapper answers the unlisted tool `ask_in_result` itself and
//! hands everything else to the fixture.
//!
//! `ask_in_result` asks for one elicitation (key `who`) with `requestState`
//! `fixture-state`; a retry must echo both, and gets
//! `answered: <content>`.

use std::collections::BTreeMap;

use rmcp::{
    ErrorData, RoleServer, Service,
    model::{
        CallToolResult, ClientNotification, ClientRequest, ContentBlock, ElicitRequest,
        ElicitRequestParams, ElicitationSchema, InputRequest, InputRequiredResult, ProtocolVersion,
        ServerConfig, ServerResult,
    },
    service::{NotificationContext, RequestContext},
};

use crate::server::FixtureServer;

pub const TOOL: &str = "ask_in_result";
const KEY: &str = "who";
const STATE: &str = "fixture-state";

pub struct AsksInResult(pub FixtureServer);

fn ask() -> Result<ServerResult, ErrorData> {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
    });
    let serde_json::Value::Object(schema) = schema else {
        return Err(ErrorData::internal_error("schema", None));
    };
    let requested_schema = ElicitationSchema::from_json_schema(schema)
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    let request = InputRequest::Elicitation(ElicitRequest::new(
        ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: "who is asking?".to_owned(),
            requested_schema,
        },
    ));
    Ok(ServerResult::InputRequiredResult(InputRequiredResult::new(
        Some(BTreeMap::from([(KEY.to_owned(), request)])),
        Some(STATE.to_owned()),
    )))
}

impl Service<RoleServer> for AsksInResult {
    async fn handle_request(
        &self,
        request: ClientRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        let ClientRequest::CallToolRequest(call) = &request else {
            return self.0.handle_request(request, context).await;
        };
        if call.params.name != TOOL {
            return self.0.handle_request(request, context).await;
        }
        let answer = call
            .params
            .input_responses
            .as_ref()
            .and_then(|r| r.get(KEY))
            .filter(|_| call.params.request_state.as_deref() == Some(STATE));
        match answer {
            None => ask(),
            Some(answer) => Ok(ServerResult::CallToolResult(CallToolResult::success(vec![
                ContentBlock::text(format!("answered: {}", answer["content"])),
            ]))),
        }
    }

    async fn handle_notification(
        &self,
        notification: ClientNotification,
        context: NotificationContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.0.handle_notification(notification, context).await
    }

    fn get_info(&self) -> ServerConfig {
        Service::<RoleServer>::get_info(&self.0)
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        Service::<RoleServer>::supported_protocol_versions(&self.0)
    }
}
