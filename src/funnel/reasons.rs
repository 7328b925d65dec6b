//! The one catalogue of reason codes: why an authorization attempt stopped
//! or a request was refused. Each reason has a snake_case code (on the wire
//! in logs, metrics and the funnel), a cause and a fix (the second half of
//! every `error_description`), and an anchor on the `/errors` page and in
//! `docs/errors.md`. The OAuth, bridge and MCP edges map their errors to a
//! [`Reason`] at their one edge; nothing else invents reason texts.

use serde::Serialize;

/// Where `error_uri` points: mcpgate serves the catalogue itself at
/// `{public_url}/errors`, so the link works without internet access.
pub const ERRORS_PATH: &str = "/errors";

macro_rules! catalogue {
    ($( $variant:ident => $code:literal, $cause:literal, $fix:literal; )*) => {
        /// Why an attempt stopped. [`Reason::code`] is the stable name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason { $( $variant, )* }

        impl Reason {
            /// Every reason, in catalogue order (the page and docs order).
            pub const ALL: &'static [Reason] = &[ $( Reason::$variant, )* ];

            /// The snake_case code.
            pub fn code(self) -> &'static str {
                match self { $( Reason::$variant => $code, )* }
            }

            /// What happened, one clause.
            pub fn cause(self) -> &'static str {
                match self { $( Reason::$variant => $cause, )* }
            }

            /// What to do about it, one imperative clause.
            pub fn fix(self) -> &'static str {
                match self { $( Reason::$variant => $fix, )* }
            }
        }
    };
}

catalogue! {
    InvalidRequest => "invalid_request",
        "a parameter is missing, repeated or malformed",
        "send each parameter once, as RFC 6749 defines it for this endpoint";
    InvalidClient => "invalid_client",
        "the client could not be authenticated",
        "send the client_id with the secret or assertion registered for it, by exactly one method";
    UnknownClient => "unknown_client",
        "the client_id is not registered here",
        "register the client again (dynamic registration) or use a configured client_id";
    UnauthorizedClient => "unauthorized_client",
        "this client may not use this grant or flow",
        "use a grant listed in the client's grant_types, or change its [[auth.local.clients]] entry";
    UnsupportedGrantType => "unsupported_grant_type",
        "the grant_type is not one this server supports",
        "use a grant listed in grant_types_supported of the authorization server metadata";
    UnsupportedResponseType => "unsupported_response_type",
        "the response_type is not code",
        "send response_type=code (OAuth 2.1 has no implicit flow)";
    InvalidScope => "invalid_scope",
        "a requested scope is not offered or was not granted",
        "ask only for scopes in scopes_supported that this client was granted";
    InvalidTarget => "invalid_target",
        "the resource parameter does not name this server's MCP endpoint",
        "send resource = the resource of the protected-resource metadata (this server's /mcp URL), or leave it out";
    InvalidRedirectUri => "invalid_redirect_uri",
        "a registered redirect URI is not allowed",
        "register https, loopback http or private-use scheme redirect URIs without fragments";
    InvalidClientMetadata => "invalid_client_metadata",
        "the client registration or metadata document is invalid",
        "fix the named field of the registration (RFC 7591) or of the client's metadata document";
    RedirectUriMismatch => "redirect_uri_mismatch",
        "the redirect_uri is not registered for this client or differs from the authorization request",
        "send exactly a registered redirect_uri to /authorize, and the same one to /token";
    PkceMissing => "pkce_missing",
        "a PKCE parameter is missing or not S256",
        "send code_challenge with code_challenge_method=S256 to /authorize and its code_verifier to /token";
    PkceMismatch => "pkce_mismatch",
        "the code_verifier does not match the authorization request's code_challenge",
        "send the verifier from which this authorization request's challenge was made";
    CodeInvalid => "code_invalid",
        "the authorization code is unknown, expired or was issued to another client",
        "start the authorization again and redeem the new code within a few minutes";
    CodeReused => "code_reused",
        "the authorization code was redeemed before, so its tokens are revoked",
        "start the authorization again and redeem each code only once";
    RefreshInvalid => "refresh_invalid",
        "the refresh token is unknown, expired or revoked",
        "sign in again to get a new grant";
    RefreshReused => "refresh_reused",
        "a rotated refresh token was used again, so the whole grant is revoked",
        "keep only the newest refresh token of each response, and sign in again now";
    ClientAssertionInvalid => "client_assertion_invalid",
        "the client's private_key_jwt assertion was refused (signature, key, alg, iss/sub, aud or lifetime)",
        "sign a fresh assertion with a key in the client's registered jwks, iss = sub = the client_id, aud = this server's token endpoint, exp within 10 minutes";
    ClientAssertionReplayed => "client_assertion_replayed",
        "the client assertion's jti was used before (each assertion is single use)",
        "sign a new assertion with a new jti for every token request";
    IdentityAssertionInvalid => "identity_assertion_invalid",
        "the identity assertion (ID-JAG) was refused: untrusted issuer, bad signature, wrong aud, client or resource, or expired",
        "ask the enterprise identity provider for a new ID-JAG for this client with aud = this server's issuer and resource = its /mcp";
    IdentityAssertionReplayed => "identity_assertion_replayed",
        "the identity assertion's jti was used before (each ID-JAG is single use)",
        "ask the enterprise identity provider for a new ID-JAG for every token request";
    GrantInvalid => "invalid_grant",
        "the grant (code, refresh token or assertion) is not valid",
        "get a new grant: sign in again, or ask the identity provider for a new assertion";
    RequestExpired => "request_expired",
        "the sign-in request expired or belongs to another browser",
        "start again from the app and finish the sign-in in the same browser within 10 minutes";
    SignInFailed => "sign_in_failed",
        "the user name or password was wrong",
        "sign in with a user of this server (an operator adds one with mcpgate users add)";
    ConsentDenied => "consent_denied",
        "the user denied the client on the consent page",
        "start again and choose Allow if you trust this client";
    IdpError => "idp_error",
        "the identity provider refused the sign-in or could not be used (idp_error:<its error code>)",
        "read the provider's error code, then check the user's access and this client's settings at the provider";
    UserNotAllowed => "user_not_allowed",
        "the signed-in user is not on the allowed lists, or is a different user than before",
        "sign in as an allowed user, or ask the operator to change the allowed_* lists";
    RateLimited => "rate_limited",
        "too many requests came from this address or for this account",
        "wait for the Retry-After time (or a minute) and try again";
    TooLarge => "too_large",
        "the request body is larger than this endpoint accepts",
        "send a smaller body (a registration is at most 16 KB)";
    TooManyClients => "too_many_clients",
        "too many registered clients have never obtained a token",
        "retry later; an operator can remove unused clients with mcpgate clients remove";
    TemporarilyUnavailable => "temporarily_unavailable",
        "something the request depends on (store, key set, identity provider) is out of reach",
        "retry in a few seconds";
    ServerError => "server_error",
        "the server failed while handling the request",
        "retry; if it persists, an operator should read the server's error log";
    TokenMissing => "token_missing",
        "the request carries no bearer access token",
        "send Authorization: Bearer with a token from the authorization server named in the protected-resource metadata";
    TokenExpired => "token_expired",
        "the access token has expired",
        "refresh the token (or sign in again) and retry";
    AudienceMismatch => "audience_mismatch",
        "the access token was issued for another resource",
        "request the token with resource = this server's /mcp URL";
    TokenInvalid => "token_invalid",
        "the access token is malformed, not signed by a trusted key, from another issuer, or revoked",
        "get a new token from the authorization server named in the protected-resource metadata";
    TokenNoSubject => "token_no_subject",
        "the token names no subject (sub), so it cannot identify a user",
        "configure the authorization server to put a subject in access tokens, or set the introspection subject_claim";
    InsufficientScope => "insufficient_scope",
        "the token lacks a scope this call needs",
        "request the scope named in the challenge (step-up authorization) and retry";
    PolicyDenied => "policy_denied",
        "the access policy does not allow this caller to use it",
        "ask the operator to change the [[policy]] entry";
    SessionNotFound => "session_not_found",
        "the Mcp-Session-Id names no live session of this caller (it ended, expired, or belongs to another user)",
        "start a new session: send initialize without Mcp-Session-Id and use the id it returns";
    McpRequestInvalid => "mcp_request_invalid",
        "the MCP transport refused the request as the message says (a missing Mcp-Session-Id, a second initialize, a wrong method)",
        "send initialize first, then Mcp-Session-Id and MCP-Protocol-Version with every request of the session";
    ProtocolVersionUnsupported => "protocol_version_unsupported",
        "the MCP-Protocol-Version header names a version this server does not speak",
        "send a version the message lists, normally the one initialize negotiated";
    HostNotAllowed => "host_not_allowed",
        "the Host header is not one this server answers to (DNS-rebinding protection)",
        "connect through public_url, or add the host to http.allowed_hosts";
    OriginNotAllowed => "origin_not_allowed",
        "the browser's Origin is not allowed to call this server",
        "add the web client's origin to http.allowed_origins";
    AcceptHeaderInvalid => "accept_header_invalid",
        "the Accept header does not list the media types this transport answers with",
        "send Accept: application/json, text/event-stream (Streamable HTTP) or text/event-stream (GET and legacy SSE)";
    ContentTypeInvalid => "content_type_invalid",
        "the body is not sent as application/json",
        "send Content-Type: application/json";
    MessageTooLarge => "message_too_large",
        "the JSON-RPC message is larger than this server accepts",
        "send a smaller message, or raise http.max_body_bytes";
    JsonRpcInvalid => "jsonrpc_invalid",
        "the body is not one valid JSON-RPC 2.0 message from an MCP client",
        "send one JSON-RPC 2.0 object per POST (no batches), with \"jsonrpc\": \"2.0\"";
}

impl Reason {
    /// The anchor on `/errors` and in `docs/errors.md`: the code with
    /// dashes (Markdown heading anchors).
    pub fn anchor(self) -> String {
        self.code().replace('_', "-")
    }

    /// `{base}/errors#anchor`, the RFC 6749 §5.2 `error_uri`.
    pub fn error_uri(self, base: &str) -> String {
        format!(
            "{}{ERRORS_PATH}#{}",
            base.trim_end_matches('/'),
            self.anchor()
        )
    }

    /// One sentence, cause then fix: `detail` (the specific cause, as the
    /// domain worded it) or the catalogue's cause, then the fix.
    pub fn describe(self, detail: &str) -> String {
        let cause = if detail.is_empty() {
            self.cause()
        } else {
            detail.trim_end_matches('.')
        };
        format!("{cause}: {}", self.fix())
    }

    /// A code back from its name, for reading stored rows.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.code() == code)
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A reason with its detail where the catalogue allows one: `idp_error:<code>`
/// carries the identity provider's own error code (bounded, sanitized).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopReason {
    pub reason: Reason,
    /// The identity provider's error code for [`Reason::IdpError`].
    pub idp_code: Option<String>,
}

impl StopReason {
    pub fn idp(code: &str) -> StopReason {
        // An IdP's error is a token per RFC 6749 (%x20-21 / %x23-5B / %x5D-7E);
        // keep a short, safe form of it so it can be a label and a log field.
        let code: String = code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .take(40)
            .collect();
        StopReason {
            reason: Reason::IdpError,
            idp_code: (!code.is_empty()).then_some(code),
        }
    }

    /// `idp_error:access_denied`, or the plain code.
    pub fn code(&self) -> String {
        match &self.idp_code {
            Some(c) => format!("{}:{c}", self.reason.code()),
            None => self.reason.code().to_owned(),
        }
    }
}

impl From<Reason> for StopReason {
    fn from(reason: Reason) -> Self {
        StopReason {
            reason,
            idp_code: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_read_back() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.code()), "{} twice", r.code());
            assert!(
                r.code()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                r.code()
            );
            assert_eq!(Reason::from_code(r.code()), Some(*r));
            assert!(!r.cause().ends_with('.') && !r.fix().ends_with('.'));
        }
    }

    #[test]
    fn a_description_is_the_cause_then_the_fix() {
        assert_eq!(
            Reason::PkceMissing.describe("code_verifier is missing (PKCE)."),
            "code_verifier is missing (PKCE): send code_challenge with code_challenge_method=S256 to /authorize and its code_verifier to /token"
        );
        assert!(
            Reason::TokenExpired
                .describe("")
                .starts_with("the access token has expired: refresh")
        );
        assert_eq!(
            Reason::RedirectUriMismatch.error_uri("https://gw.example/"),
            "https://gw.example/errors#redirect-uri-mismatch"
        );
    }

    #[test]
    fn an_idp_code_is_kept_short_and_safe() {
        assert_eq!(
            StopReason::idp("access_denied").code(),
            "idp_error:access_denied"
        );
        assert_eq!(StopReason::idp("a\"b<c>\n").code(), "idp_error:abc");
        assert_eq!(StopReason::idp("").code(), "idp_error");
    }

    /// Every reason has its section in docs/errors.md, so no `error_uri`
    /// or log line points at a missing anchor.
    #[test]
    fn every_reason_has_a_docs_section() {
        let docs = include_str!("../../docs/errors.md");
        for r in Reason::ALL {
            let tag = format!("<a id=\"{}\"></a>", r.anchor());
            assert!(docs.contains(&tag), "docs/errors.md lacks {tag}");
            assert!(
                docs.contains(&format!("`{}`", r.code())),
                "docs/errors.md does not name `{}`",
                r.code()
            );
        }
    }
}
