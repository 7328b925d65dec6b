//! The `requestState` of a 2026-07-28 "connect first" `input_required`
//! result (MRTR). The client echoes it back on its retry, so it is
//! attacker-controlled input: mcpgate seals it (AEAD, the store's key ring)
//! and binds it to the user (subject and issuer), the exposed tool name, the
//! upstream and an expiry, and a retry that does not match is refused.
//!
//! Only a state that starts with [`REQUEST_STATE_PREFIX`] is mcpgate's; any
//! other is an upstream's own and passes through to it untouched.

use serde::{Deserialize, Serialize};

use super::{ConnectLink, UserAuth, UserAuthError};
use crate::auth::Principal;
use crate::request_state::{self, Binding, RequestStateCodec};

/// Marks mcpgate's own `requestState` among an upstream's.
pub const REQUEST_STATE_PREFIX: &str = "mcpgate-connect.";
/// As long as the connect link it comes with.
const REQUEST_STATE_TTL_SECS: i64 = super::ELICITATION_TTL_SECS;

/// What the sealed state carries besides its binding.
#[derive(Debug, Serialize, Deserialize)]
struct ConnectState {
    upstream: String,
    elicitation_id: String,
}

/// Why a retry's `requestState` was refused (JSON-RPC -32602).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestStateError {
    #[error("requestState was not issued by mcpgate or was altered")]
    Tampered,
    #[error("requestState was issued to another user")]
    WrongUser,
    #[error("requestState was issued for another tool, not this one")]
    WrongTool,
    #[error("requestState has expired; call the tool again without it")]
    Expired,
}

/// An opened, verified state: the connect request the client answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRetry {
    pub upstream: String,
    pub elicitation_id: String,
}

/// Whether `state` is one of mcpgate's (else an upstream's).
pub fn is_own_request_state(state: &str) -> bool {
    state.starts_with(REQUEST_STATE_PREFIX)
}

/// The parts a connect state is bound to: the user (subject and issuer)
/// and the tool as the client named it.
fn binding(principal: &Principal, tool: &str) -> Binding {
    Binding::new()
        .with("subject", principal.subject.clone())
        .with("issuer", principal.issuer.clone())
        .with("tool", tool)
}

impl UserAuth {
    /// The shared `requestState` codec over this store's sealing keys.
    fn request_state_codec(&self) -> RequestStateCodec {
        RequestStateCodec::new(self.sealer.clone())
    }

    /// The `requestState` for an `input_required` answer to `principal`'s
    /// call of `tool` that needs `link` followed first.
    pub fn seal_request_state(
        &self,
        principal: &Principal,
        tool: &str,
        link: &ConnectLink,
    ) -> Result<String, UserAuthError> {
        let state = ConnectState {
            upstream: link.upstream.clone(),
            elicitation_id: link.elicitation_id.clone(),
        };
        let sealed = self
            .request_state_codec()
            .seal(
                &binding(principal, tool),
                &state,
                self.clock.now() + REQUEST_STATE_TTL_SECS,
            )
            .map_err(|e| UserAuthError::Seal(e.to_string()))?;
        Ok(format!("{REQUEST_STATE_PREFIX}{sealed}"))
    }

    /// Open a retry's `requestState`: sealed here, for this user and this
    /// tool, unexpired.
    pub fn open_request_state(
        &self,
        state: &str,
        principal: &Principal,
        tool: &str,
    ) -> Result<ConnectRetry, RequestStateError> {
        let sealed = state
            .strip_prefix(REQUEST_STATE_PREFIX)
            .ok_or(RequestStateError::Tampered)?;
        let opened: ConnectState = self
            .request_state_codec()
            .open(sealed, &binding(principal, tool), self.clock.now())
            .map_err(|e| match e {
                request_state::RequestStateError::Mismatch(part)
                    if part == "subject" || part == "issuer" =>
                {
                    RequestStateError::WrongUser
                }
                request_state::RequestStateError::Mismatch(part) if part == "tool" => {
                    RequestStateError::WrongTool
                }
                request_state::RequestStateError::Expired => RequestStateError::Expired,
                _ => RequestStateError::Tampered,
            })?;
        Ok(ConnectRetry {
            upstream: opened.upstream,
            elicitation_id: opened.elicitation_id,
        })
    }
}
