//! Whom the IdP issues the token for: `[auth.bridge] audience`, or else
//! mcpgate's own `/mcp` as the RFC 8707 `resource` (src/bridge/README.md).

use super::BridgeError;
use crate::oauth::flow::same_resource;

/// What tells the IdP whom the token is for, on `/authorize` and `/token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum IdpTarget {
    /// `[auth.bridge] audience`: sent as `audience`; the client's `resource`
    /// is dropped (Auth0 and Entra reject or misread it).
    Audience(String),
    /// No audience configured: mcpgate's `/mcp` is sent as `resource`
    /// (RFC 8707), whatever spelling of it the client used, so the token's
    /// `aud` is exactly what `/mcp` accepts. An IdP with no default resource
    /// (oidc-provider as shipped) otherwise issues an opaque token.
    Resource(String),
}

impl IdpTarget {
    pub(super) fn of(audience: Option<&str>, origin: &str) -> IdpTarget {
        match audience {
            Some(a) => IdpTarget::Audience(a.to_owned()),
            None => IdpTarget::Resource(format!("{origin}/mcp")),
        }
    }

    /// The `resource` to send the IdP for a client that asked for
    /// `requested`: none with an audience; mcpgate's `/mcp` otherwise, and
    /// `invalid_target` for any other resource (nothing else is served here).
    pub(super) fn resource(&self, requested: Option<&str>) -> Result<Option<&str>, BridgeError> {
        match self {
            IdpTarget::Audience(_) => Ok(None),
            IdpTarget::Resource(ours) => match requested {
                Some(r) if !same_resource(ours, r) => Err(BridgeError::InvalidTarget(format!(
                    "resource is not served here (this server serves {ours})"
                ))),
                _ => Ok(Some(ours)),
            },
        }
    }
}
