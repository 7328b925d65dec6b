//! What `/mcp` adds to the auth funnel about tokens: the reason a token
//! was refused, and who a refused token names when that can be trusted.

use serde_json::Value;

use crate::{
    auth::verify::TokenError,
    funnel::{AttemptKey, Funnel, FunnelEvent, Reason, Step},
};

/// The catalogue's reason for a refused token.
pub(super) fn token_reason(err: &TokenError) -> Reason {
    match err {
        TokenError::Expired => Reason::TokenExpired,
        // `active: false` from introspection: revoked as likely as expired.
        TokenError::Inactive => Reason::TokenInvalid,
        TokenError::WrongAudience => Reason::AudienceMismatch,
        TokenError::NoSubject(_) => Reason::TokenNoSubject,
        _ => Reason::TokenInvalid,
    }
}

/// A refused token's funnel step. Only an expired token or one for another
/// audience passed the signature check, so only their `client_id` and
/// `sub` are worth a row (any other token's claims are whatever its sender
/// wrote); the rest are counted under `other`.
pub(super) fn record_refused_token(funnel: &Funnel, token: &str, reason: Reason) {
    let signed = matches!(reason, Reason::TokenExpired | Reason::AudienceMismatch);
    let claims = signed.then(|| unverified_claims(token)).flatten();
    let event = match claims {
        Some((client_id, subject)) => FunnelEvent::new(Step::McpCall, &client_id)
            .keyed(AttemptKey::User)
            .user(&subject),
        None => FunnelEvent::new(Step::McpCall, "-").unknown_client(),
    };
    funnel.record(event.stopped(reason));
}

/// `client_id` (or `azp`) and `sub` of a JWT whose signature was checked.
fn unverified_claims(token: &str) -> Option<(String, String)> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let client = claims
        .get("client_id")
        .or_else(|| claims.get("azp"))?
        .as_str()?;
    let subject = claims.get("sub")?.as_str()?;
    (client.len() <= 200 && subject.len() <= 200).then(|| (client.to_owned(), subject.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn refused_tokens_map_to_their_reasons() {
        assert_eq!(token_reason(&TokenError::Expired), Reason::TokenExpired);
        assert_eq!(
            token_reason(&TokenError::WrongAudience),
            Reason::AudienceMismatch
        );
        assert_eq!(
            token_reason(&TokenError::NoSubject("sub".into())),
            Reason::TokenNoSubject
        );
        assert_eq!(
            token_reason(&TokenError::BadSignature),
            Reason::TokenInvalid
        );
    }

    #[test]
    fn claims_are_read_only_from_a_well_formed_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"alice","client_id":"c1"}"#);
        assert_eq!(
            unverified_claims(&format!("h.{payload}.s")),
            Some(("c1".to_owned(), "alice".to_owned()))
        );
        assert_eq!(unverified_claims("a.b.c"), None);
        assert_eq!(unverified_claims("nodots"), None);
    }
}
