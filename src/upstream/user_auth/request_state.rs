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

/// Only in `requestState`, never stored.
const REQUEST_STATE_CONTEXT: &str = "upstream_connect.request_state";
/// Marks mcpgate's own `requestState` among an upstream's.
pub const REQUEST_STATE_PREFIX: &str = "mcpgate-connect.";
/// As long as the connect link it comes with.
const REQUEST_STATE_TTL_SECS: i64 = super::ELICITATION_TTL_SECS;

/// What the sealed state carries.
#[derive(Debug, Serialize, Deserialize)]
struct ConnectState {
    sub: String,
    iss: String,
    tool: String,
    upstream: String,
    elicitation_id: String,
    expires_at: i64,
}

/// Why a retry's `requestState` was refused (JSON-RPC -32602).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestStateError {
    #[error("requestState was not issued by mcpgate or was altered")]
    Tampered,
    #[error("requestState was issued to another user")]
    WrongUser,
    #[error("requestState was issued for tool {0}, not this one")]
    WrongTool(String),
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

impl UserAuth {
    /// The `requestState` for an `input_required` answer to `principal`'s
    /// call of `tool` that needs `link` followed first.
    pub fn seal_request_state(
        &self,
        principal: &Principal,
        tool: &str,
        link: &ConnectLink,
    ) -> Result<String, UserAuthError> {
        let state = ConnectState {
            sub: principal.subject.clone(),
            iss: principal.issuer.clone(),
            tool: tool.to_owned(),
            upstream: link.upstream.clone(),
            elicitation_id: link.elicitation_id.clone(),
            expires_at: self.clock.now() + REQUEST_STATE_TTL_SECS,
        };
        let sealed = self.sealer.seal_json(REQUEST_STATE_CONTEXT, &state)?;
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
            .sealer
            .open_json(REQUEST_STATE_CONTEXT, sealed)
            .map_err(|_| RequestStateError::Tampered)?;
        let same_user = crate::constant_time::ct_eq(&opened.sub, &principal.subject)
            && crate::constant_time::ct_eq(&opened.iss, &principal.issuer);
        if !same_user {
            return Err(RequestStateError::WrongUser);
        }
        if opened.tool != tool {
            return Err(RequestStateError::WrongTool(opened.tool));
        }
        if opened.expires_at <= self.clock.now() {
            return Err(RequestStateError::Expired);
        }
        Ok(ConnectRetry {
            upstream: opened.upstream,
            elicitation_id: opened.elicitation_id,
        })
    }
}
