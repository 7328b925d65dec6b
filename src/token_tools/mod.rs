//! `mcpgate token`: the token helpers people write per identity provider.
//! [`grant`] fetches tokens at any issuer's token endpoint (client
//! credentials, refresh) with a client secret or a `private_key_jwt`
//! assertion signed by [`signing_key`]; [`verify`] checks a token exactly as
//! mcpgate would (the same `auth::verify::IssuerVerifier`) and names the
//! check that fails. `decode` lives in `doctor::token`. Secrets come from
//! files or stdin only, and nothing here prints: `main` renders.

pub mod grant;
pub mod signing_key;
pub mod verify;

use std::time::Duration;

/// Why a token command could not do its work. [`TokenToolError::exit_code`]
/// separates a refusal (1) from unusable input (2).
#[derive(Debug, thiserror::Error)]
pub enum TokenToolError {
    /// Flags that do not fit together, or a missing one.
    #[error("{0}")]
    Usage(String),
    /// A token, secret or key file that cannot be read or parsed.
    #[error("{0}")]
    Input(String),
    /// The configuration given with `--config` does not yield what to check.
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot discover the authorization server {issuer}: {reason}")]
    Discovery { issuer: String, reason: String },
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The token endpoint answered with an error.
    #[error("{endpoint} answered {status}: {error}{}", description.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused {
        endpoint: String,
        status: u16,
        error: String,
        description: Option<String>,
    },
    #[error("{endpoint} answered {status} without an access_token ({body})")]
    NoToken {
        endpoint: String,
        status: u16,
        body: String,
    },
}

impl TokenToolError {
    /// 1 when the server refused or could not be reached (the thing checked
    /// failed), 2 when the input or the configuration is unusable.
    pub fn exit_code(&self) -> u8 {
        match self {
            TokenToolError::Refused { .. }
            | TokenToolError::NoToken { .. }
            | TokenToolError::Unreachable { .. } => 1,
            TokenToolError::Usage(_)
            | TokenToolError::Input(_)
            | TokenToolError::Config(_)
            | TokenToolError::Discovery { .. } => 2,
        }
    }

    /// What usually causes a token endpoint's error, and what to change.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            TokenToolError::Refused { error, .. } => grant::hint(error),
            _ => None,
        }
    }
}

impl From<crate::doctor::DoctorError> for TokenToolError {
    fn from(e: crate::doctor::DoctorError) -> Self {
        TokenToolError::Input(e.to_string())
    }
}

/// The HTTP client of the token commands: a timeout on every request and
/// redirects never followed (a token endpoint that redirects is misconfigured,
/// and a followed POST would resend the credentials elsewhere).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, TokenToolError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mcpgate-token/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| TokenToolError::Usage(format!("cannot build the HTTP client: {e}")))
}

/// reqwest's terse message ("error sending request") with its causes
/// (connection refused, certificate errors, timeouts).
pub(crate) fn reason(e: &reqwest::Error) -> String {
    let mut reason = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(inner) = cause {
        reason.push_str(": ");
        reason.push_str(&inner.to_string());
        cause = inner.source();
    }
    reason
}
