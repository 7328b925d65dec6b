//! The gateway's side of `user_auth` for a user who has not connected an
//! upstream yet: calls get a connect link (-32042), lists show what the
//! upstream listed last to anyone, or one `connect` tool.

use std::sync::Arc;

use rmcp::model::Tool;

use super::{Gateway, GatewayError, Upstream, locks::read, user_auth};
use crate::auth::Principal;

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
        let failed = |e: user_auth::UserAuthError| GatewayError::UserAuth {
            upstream: name.clone(),
            reason: e.to_string(),
        };
        if auth
            .is_connected(name, &principal.subject)
            .await
            .map_err(failed)?
        {
            return Ok(());
        }
        let link = auth
            .connect_link(name, &principal.subject)
            .map_err(failed)?;
        Err(GatewayError::ConnectRequired(Box::new(link)))
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
