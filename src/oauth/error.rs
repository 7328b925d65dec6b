//! The error codes of the OAuth RFCs, one enum for every authorization-server
//! front (local, proxy, bridge), and the local/proxy server's error type.

use serde::Serialize;

use super::{client_auth::AssertionError, clients::MetadataError};
use crate::funnel::reasons::Reason;
use crate::store::StoreError;

/// An error code from RFC 6749 §4.1.2.1/§5.2, RFC 7591 §3.2.2 and RFC 8707
/// §2. [`OAuthErrorCode::as_str`] is the code on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    InvalidTarget,
    InvalidRedirectUri,
    InvalidClientMetadata,
    AccessDenied,
    TemporarilyUnavailable,
    ServerError,
}

impl OAuthErrorCode {
    /// The code of every 429 (registrations, sign-ins started from one
    /// address), on every front. RFC 6749 defines no rate-limit code, and
    /// the one used before, `slow_down`, is RFC 8628's device-flow polling
    /// signal ("add 5 seconds to your interval"), which no client of these
    /// endpoints polls for. `temporarily_unavailable` says what is true (the
    /// server will not handle this now; the same request later may succeed),
    /// is what the fronts already answer when a registration budget is used
    /// up, and does not tell a client its request was malformed, as
    /// `invalid_request` would (clients treat that as final).
    pub const RATE_LIMITED: OAuthErrorCode = OAuthErrorCode::TemporarilyUnavailable;

    pub fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::UnsupportedResponseType => "unsupported_response_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::InvalidTarget => "invalid_target",
            OAuthErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
            OAuthErrorCode::InvalidClientMetadata => "invalid_client_metadata",
            OAuthErrorCode::AccessDenied => "access_denied",
            OAuthErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            OAuthErrorCode::ServerError => "server_error",
        }
    }
}

impl std::fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors with their RFC 6749 / 7591 / 8707 codes; the edge picks the status.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("client authentication failed")]
    InvalidClient,
    /// `private_key_jwt`: the assertion was refused, and why.
    #[error("client authentication failed: {0}")]
    ClientAssertion(AssertionError),
    #[error("{0}")]
    InvalidGrant(String),
    /// RFC 6749 §5.2: the client may not use this grant type.
    #[error("{0}")]
    UnauthorizedClient(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    InvalidTarget(String),
    #[error("{0}")]
    UnsupportedGrantType(String),
    #[error("{0}")]
    InvalidRedirectUri(String),
    #[error("{0}")]
    InvalidClientMetadata(String),
    #[error("too many requests; try again later")]
    RateLimited,
    #[error("{0}")]
    TooLarge(String),
    /// The cap on never-used registrations is reached.
    #[error("too many registered clients have never been used; try again later")]
    TooManyClients,
    /// Something the request depends on is out of reach right now (key
    /// sets being fetched at their limit, an identity provider's keys):
    /// 503 `temporarily_unavailable`, so the client retries instead of
    /// treating itself as refused.
    #[error("{0}")]
    Unavailable(String),
    #[error("the server cannot complete the request")]
    Server(String),
    /// A refusal whose cause the catalogue names more precisely than the
    /// RFC code does (`redirect_uri_mismatch`, `pkce_missing`, `code_reused`, ...).
    #[error("{detail}")]
    Refused {
        code: OAuthErrorCode,
        reason: Reason,
        detail: String,
    },
}

impl OAuthError {
    pub fn code(&self) -> OAuthErrorCode {
        match self {
            OAuthError::InvalidRequest(_) => OAuthErrorCode::InvalidRequest,
            OAuthError::InvalidClient | OAuthError::ClientAssertion(_) => {
                OAuthErrorCode::InvalidClient
            }
            OAuthError::InvalidGrant(_) => OAuthErrorCode::InvalidGrant,
            OAuthError::UnauthorizedClient(_) => OAuthErrorCode::UnauthorizedClient,
            OAuthError::InvalidScope(_) => OAuthErrorCode::InvalidScope,
            OAuthError::InvalidTarget(_) => OAuthErrorCode::InvalidTarget,
            OAuthError::UnsupportedGrantType(_) => OAuthErrorCode::UnsupportedGrantType,
            OAuthError::InvalidRedirectUri(_) => OAuthErrorCode::InvalidRedirectUri,
            OAuthError::InvalidClientMetadata(_) => OAuthErrorCode::InvalidClientMetadata,
            OAuthError::RateLimited => OAuthErrorCode::RATE_LIMITED,
            OAuthError::TooLarge(_) => OAuthErrorCode::InvalidRequest,
            OAuthError::TooManyClients => OAuthErrorCode::TemporarilyUnavailable,
            OAuthError::Unavailable(_) => OAuthErrorCode::TemporarilyUnavailable,
            OAuthError::Server(_) => OAuthErrorCode::ServerError,
            OAuthError::Refused { code, .. } => *code,
        }
    }

    pub fn refused(code: OAuthErrorCode, reason: Reason, detail: impl Into<String>) -> OAuthError {
        OAuthError::Refused {
            code,
            reason,
            detail: detail.into(),
        }
    }

    /// The catalogue's reason: the precise one when the domain named it,
    /// otherwise the one of the RFC code.
    pub fn reason(&self) -> Reason {
        match self {
            OAuthError::Refused { reason, .. } => *reason,
            OAuthError::ClientAssertion(AssertionError::Replayed) => {
                Reason::ClientAssertionReplayed
            }
            OAuthError::ClientAssertion(_) => Reason::ClientAssertionInvalid,
            OAuthError::RateLimited => Reason::RateLimited,
            OAuthError::TooLarge(_) => Reason::TooLarge,
            OAuthError::TooManyClients => Reason::TooManyClients,
            other => other.code().reason(),
        }
    }
}

impl OAuthErrorCode {
    /// The catalogue's reason for a bare RFC code.
    pub fn reason(self) -> Reason {
        match self {
            OAuthErrorCode::InvalidRequest => Reason::InvalidRequest,
            OAuthErrorCode::InvalidClient => Reason::InvalidClient,
            OAuthErrorCode::InvalidGrant => Reason::GrantInvalid,
            OAuthErrorCode::UnauthorizedClient => Reason::UnauthorizedClient,
            OAuthErrorCode::UnsupportedGrantType => Reason::UnsupportedGrantType,
            OAuthErrorCode::UnsupportedResponseType => Reason::UnsupportedResponseType,
            OAuthErrorCode::InvalidScope => Reason::InvalidScope,
            OAuthErrorCode::InvalidTarget => Reason::InvalidTarget,
            OAuthErrorCode::InvalidRedirectUri => Reason::InvalidRedirectUri,
            OAuthErrorCode::InvalidClientMetadata => Reason::InvalidClientMetadata,
            OAuthErrorCode::AccessDenied => Reason::ConsentDenied,
            OAuthErrorCode::TemporarilyUnavailable => Reason::TemporarilyUnavailable,
            OAuthErrorCode::ServerError => Reason::ServerError,
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        OAuthError::Server(e.to_string())
    }
}

impl From<MetadataError> for OAuthError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::RedirectUri(m) => OAuthError::InvalidRedirectUri(m),
            MetadataError::Metadata(m) => OAuthError::InvalidClientMetadata(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_code_and_the_serde_name_agree() {
        for code in [
            OAuthErrorCode::InvalidRequest,
            OAuthErrorCode::UnsupportedResponseType,
            OAuthErrorCode::TemporarilyUnavailable,
            OAuthErrorCode::ServerError,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
