//! Server requests (sampling, elicitation) answered on another replica.
//!
//! Each replica's copy of a session numbers the requests it sends from 0,
//! so a bare id cannot say which replica asked. On the way out the id is
//! rewritten to `"<replica>-<n>"` ([`RequestIds::outgoing`]); the client
//! answers with that id, and the replica the answer reaches either restores
//! the number and hands it to its own session, or relays it through the
//! store to the replica the id names (PostgreSQL: a row plus NOTIFY
//! `mcpgate_mcp_responses` with that replica's id). The asking replica
//! checks the owner again before its pending request completes.

use std::sync::Arc;

use rmcp::{
    model::{
        ClientJsonRpcMessage, JsonRpcMessage, NumberOrString, RequestId, ServerJsonRpcMessage,
        ServerNotification,
    },
    transport::streamable_http_server::{SessionManager, session::local::LocalSessionManager},
};

use crate::{
    clock::SharedClock,
    store::{RelayedResponse, Store, StoreError},
};

tokio::task_local! {
    /// The owner key of the caller whose request rmcp is handling: the edge
    /// has admitted the session for it. A relayed answer carries it.
    pub(super) static CALLER: String;
}

/// This replica's name in the ids of the requests it sends.
#[derive(Clone, Debug)]
pub struct RequestIds {
    origin: String,
}

/// Where a client's message goes.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // built once per message and matched at once
pub enum Route {
    /// To this replica's copy of the session (ids restored).
    Here(ClientJsonRpcMessage),
    /// An answer to a request replica `origin` sent.
    Elsewhere { origin: String },
}

impl RequestIds {
    pub fn new(origin: String) -> Self {
        RequestIds { origin }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Name this replica in the id of a request it sends (and in a
    /// cancellation of one); other messages pass unchanged.
    pub fn outgoing(&self, message: &mut ServerJsonRpcMessage) {
        match message {
            JsonRpcMessage::Request(request) => self.name(&mut request.id),
            JsonRpcMessage::Notification(n) => {
                if let ServerNotification::CancelledNotification(c) = &mut n.notification
                    && let Some(id) = &mut c.params.request_id
                {
                    self.name(id);
                }
            }
            _ => {}
        }
    }

    /// Whether [`Self::outgoing`] would change `message`.
    pub fn names(message: &ServerJsonRpcMessage) -> bool {
        match message {
            JsonRpcMessage::Request(_) => true,
            JsonRpcMessage::Notification(n) => matches!(
                &n.notification,
                ServerNotification::CancelledNotification(c) if c.params.request_id.is_some()
            ),
            _ => false,
        }
    }

    fn name(&self, id: &mut RequestId) {
        if let NumberOrString::Number(n) = id {
            *id = NumberOrString::String(format!("{}-{n}", self.origin).into());
        }
    }

    /// Where a client's message goes: an answer to another replica's
    /// request is relayed; everything else stays here, with the number of
    /// an answer to one of ours restored.
    pub fn incoming(&self, mut message: ClientJsonRpcMessage) -> Route {
        let id = match &mut message {
            JsonRpcMessage::Response(response) => Some(&mut response.id),
            JsonRpcMessage::Error(error) => error.id.as_mut(),
            _ => None,
        };
        let Some(id) = id else {
            return Route::Here(message);
        };
        match named(id) {
            Some((origin, n)) if origin == self.origin => {
                *id = NumberOrString::Number(n);
                Route::Here(message)
            }
            Some((origin, _)) => Route::Elsewhere {
                origin: origin.to_owned(),
            },
            None => Route::Here(message),
        }
    }
}

/// The replica and number in a request id we issued.
fn named(id: &RequestId) -> Option<(&str, i64)> {
    let NumberOrString::String(text) = id else {
        return None;
    };
    let (origin, n) = text.split_once('-')?;
    let is_origin = origin.len() == 32 && origin.bytes().all(|b| b.is_ascii_hexdigit());
    is_origin.then_some(())?;
    Some((origin, n.parse().ok()?))
}

/// Takes the answers other replicas relayed to this one and hands them to
/// the sessions here.
pub struct ResponseInbox {
    pub ids: RequestIds,
    /// Takes the rows of 2026-07-28 retries handed between replicas.
    pub bridge: Option<Arc<super::input_bridge::InputBridge>>,
    pub local: Arc<LocalSessionManager>,
    pub store: Store,
    pub clock: SharedClock,
}

impl ResponseInbox {
    /// Take every answer relayed to this replica.
    pub async fn take(&self) {
        let relayed = match self.store.take_mcp_responses(self.ids.origin()).await {
            Ok(relayed) => relayed,
            Err(e) => {
                tracing::warn!(error = %e, "relayed MCP answers not taken");
                return;
            }
        };
        for response in relayed {
            if super::input_bridge::InputBridge::takes(&response.session) {
                if let Some(bridge) = &self.bridge {
                    bridge.take(response);
                }
                continue;
            }
            if let Err(e) = self.deliver(response).await {
                tracing::warn!(error = %e, "a relayed MCP answer was not delivered");
            }
        }
    }

    async fn deliver(&self, relayed: RelayedResponse) -> Result<(), StoreError> {
        let RelayedResponse {
            session,
            owner,
            message,
        } = relayed;
        // The replica that received it admitted the session for its caller;
        // check that again against the stored owner.
        let record = self.store.mcp_session(&session).await?;
        let admitted =
            record.is_some_and(|r| r.admits(crate::store::STREAMABLE, &owner, self.clock.now()));
        if !admitted {
            tracing::warn!(target: "audit", outcome = "foreign_session", "relayed MCP answer rejected");
            return Ok(());
        }
        let Ok(message) = serde_json::from_str::<ClientJsonRpcMessage>(&message) else {
            tracing::warn!("a relayed MCP answer could not be read");
            return Ok(());
        };
        let Route::Here(message) = self.ids.incoming(message) else {
            return Ok(()); // names another replica: not ours to take
        };
        if let Err(e) = self
            .local
            .accept_message(&session.clone().into(), message)
            .await
        {
            // The session ended here meanwhile: its request is gone too.
            tracing::debug!(error = %e, "relayed MCP answer for a session no longer held");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(origin: char) -> RequestIds {
        RequestIds::new(std::iter::repeat_n(origin, 32).collect())
    }

    fn sampling(id: i64) -> ServerJsonRpcMessage {
        serde_json::from_value(serde_json::json!({
            "jsonrpc":"2.0","id":id,"method":"sampling/createMessage",
            "params":{"messages":[],"maxTokens":1}
        }))
        .unwrap()
    }

    fn answer(id: serde_json::Value) -> ClientJsonRpcMessage {
        serde_json::from_value(serde_json::json!({"jsonrpc":"2.0","id":id,"result":{}})).unwrap()
    }

    #[test]
    fn an_answer_goes_to_the_replica_its_request_id_names_with_the_number_restored() {
        let (a, b) = (ids('a'), ids('b'));
        let mut request = sampling(7);
        assert!(RequestIds::names(&request));
        a.outgoing(&mut request);
        let sent = serde_json::to_value(&request).unwrap();
        let id = sent["id"].clone();
        assert_eq!(id, serde_json::json!(format!("{}-7", a.origin())));
        // On A: its own, the number restored.
        match a.incoming(answer(id.clone())) {
            Route::Here(JsonRpcMessage::Response(r)) => {
                assert_eq!(r.id, NumberOrString::Number(7))
            }
            other => panic!("{other:?}"),
        }
        // On B: relayed to A.
        match b.incoming(answer(id)) {
            Route::Elsewhere { origin } => assert_eq!(origin, a.origin()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ids_we_did_not_issue_stay_here_unchanged() {
        let a = ids('a');
        for id in [
            serde_json::json!(3),
            serde_json::json!("x-3"),
            serde_json::json!(format!("{}-x", "a".repeat(32))),
            serde_json::json!(format!("{}-1", "g".repeat(32))),
        ] {
            match a.incoming(answer(id.clone())) {
                Route::Here(message) => {
                    assert_eq!(serde_json::to_value(&message).unwrap()["id"], id)
                }
                other => panic!("{id}: {other:?}"),
            }
        }
    }
}
