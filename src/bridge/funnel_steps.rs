//! The bridge's steps on the auth funnel (`crate::funnel`): each public
//! step of [`Bridge`] runs its `_traced` work in `mod.rs`, which fills a
//! [`Trace`] as the checks learn the client, the PKCE challenge and the
//! user, then records one row with the step's reason. How the rows join:
//! src/funnel/README.md.

use serde_json::Value;

use super::{Bridge, BridgeError, ConsentAnswer, ConsentPrompt, Relayed, presented_client};
use crate::{
    funnel::{AttemptKey, FunnelEvent, Reason, Step, StopReason},
    oauth::{client_auth::unverified_claim, front::field},
};

/// What a bridged step has shown about its attempt so far (filled in as the
/// checks learn it), for its funnel row: a client this server registered,
/// the request's PKCE challenge, the user the IdP named.
#[derive(Default)]
pub(super) struct Trace {
    pub(super) client_id: Option<String>,
    pub(super) challenge: Option<String>,
    pub(super) user_id: Option<String>,
}

impl Trace {
    /// The step's event: joined by the challenge when there is one; a
    /// client nobody registered here is counted only.
    fn event(&self, step: Step) -> FunnelEvent {
        let mut event = match &self.client_id {
            Some(client_id) => FunnelEvent::new(step, client_id),
            None => FunnelEvent::new(step, "-").unknown_client(),
        };
        if let Some(challenge) = &self.challenge {
            event = event.challenge(challenge);
        }
        if let Some(user) = &self.user_id {
            event = event.user(user);
        }
        event
    }
}

/// The PKCE challenge of a pending request (its query for the IdP).
pub(super) fn challenge_of(idp_query: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_json::from_str(idp_query).ok()?;
    field(&pairs, "code_challenge").map(str::to_owned)
}

/// The user the IdP's token answer names: `sub` of its access token, or of
/// its ID token. Read without verification: the answer came straight from
/// the IdP's token endpoint, and it only labels a funnel row.
fn subject_of(answer: &Value) -> Option<String> {
    ["access_token", "id_token"]
        .iter()
        .filter_map(|name| answer.get(*name).and_then(Value::as_str))
        .find_map(|jwt| unverified_claim(jwt, "sub"))
        .filter(|sub| sub.len() <= 200)
}

/// The IdP's refusal as a stop reason: `idp_error:<its error code>`.
pub(super) fn idp_refusal(answer: &Relayed) -> StopReason {
    match answer.body.get("error").and_then(Value::as_str) {
        Some(code) => StopReason::idp(code),
        None => StopReason::idp(&format!("http_{}", answer.status)),
    }
}

impl Bridge {
    /// `/authorize`: check the client's request and keep it, bound to the
    /// browser (`held`: the browser secret its cookie already carries), until
    /// the user approves it on mcpgate's consent page. Nothing goes to the IdP
    /// yet. PKCE S256 is required here so no client can downgrade it at the IdP.
    /// `pairs` name each parameter once ([`crate::oauth::front::form_pairs`]).
    pub async fn authorize(
        &self,
        pairs: &[(String, String)],
        held: Option<&str>,
        client_address: &str,
    ) -> Result<ConsentPrompt, BridgeError> {
        let mut trace = Trace::default();
        let result = self
            .authorize_traced(&mut trace, pairs, held, client_address)
            .await;
        let mut event = trace.event(Step::Authorize);
        if let Err(e) = &result {
            event = event.stopped(e.reason());
        }
        self.funnel.record(event);
        result
    }

    /// The consent form: only the browser that started the request, with the
    /// CSRF token derived from its cookie, decides it, once. Approve: on to
    /// the IdP with the client's own callback and a fresh state. Deny:
    /// `access_denied` to the client's checked redirect URI.
    pub async fn decide(
        &self,
        request_id: &str,
        csrf: &str,
        browser: &str,
        answer: ConsentAnswer,
    ) -> Result<String, BridgeError> {
        let mut trace = Trace::default();
        let result = self
            .decide_traced(&mut trace, request_id, csrf, browser, answer)
            .await;
        let event = trace.event(Step::Consent);
        self.funnel.record(match &result {
            Err(e) => event.stopped(e.reason()),
            Ok(_) if answer == ConsentAnswer::Deny => event.stopped(Reason::ConsentDenied),
            Ok(_) => event,
        });
        result
    }

    /// `/callback/<key>`: the IdP's answer goes on to the client with the
    /// client's `state` and mcpgate's `iss`, if it came back for the client
    /// and to the browser that started the request. Single use; an answer
    /// naming another issuer (a mix-up) stops here.
    pub async fn callback(
        &self,
        key: &str,
        pairs: &[(String, String)],
        browser: &str,
    ) -> Result<String, BridgeError> {
        let mut trace = Trace::default();
        let result = self.callback_traced(&mut trace, key, pairs, browser).await;
        let event = trace.event(Step::UpstreamCallback);
        self.funnel.record(match (&result, field(pairs, "error")) {
            (Err(e), _) => event.stopped(e.reason()),
            // Passed on to the client, but the attempt stops here.
            (Ok(_), Some(code)) => event.stopped(StopReason::idp(code)),
            (Ok(_), None) => event,
        });
        result
    }

    /// `/token`: relayed to the IdP with the client's own authentication and
    /// `resource` as [`IdpTarget`] says (none with an audience). A code
    /// is relayed only for the client it came back for, with that client's
    /// callback as `redirect_uri`. `pairs` name each parameter once.
    pub async fn token(
        &self,
        pairs: &[(String, String)],
        authorization: Option<&str>,
    ) -> Result<Relayed, BridgeError> {
        let step = match field(pairs, "grant_type") {
            Some("authorization_code") => Step::CodeRedeemed,
            Some("refresh_token") => Step::Refresh,
            // Other grants are the IdP's own business: relayed, no step.
            _ => {
                return self
                    .token_traced(&mut Trace::default(), pairs, authorization)
                    .await;
            }
        };
        let mut trace = Trace::default();
        let result = self.token_traced(&mut trace, pairs, authorization).await;
        if let Ok(answer) = &result {
            trace.user_id = (answer.status == 200)
                .then(|| subject_of(&answer.body))
                .flatten();
        }
        if step == Step::Refresh {
            // The IdP's refresh token is opaque here: a refresh joins the
            // attempt that redeemed a code for the same client and user. Was
            // the client one of ours? A success has touched it; a refusal
            // costs one read.
            trace.client_id = match &result {
                Ok(answer) if answer.status == 200 => trace.client_id.take(),
                _ => self.registered_client(pairs, authorization).await,
            };
        }
        let mut event = trace.event(step);
        if step == Step::Refresh && trace.user_id.is_some() {
            event = event.keyed(AttemptKey::User);
        }
        self.funnel.record(match &result {
            Err(e) => event.stopped(e.reason()),
            Ok(answer) if answer.status != 200 => event.stopped(idp_refusal(answer)),
            Ok(_) => event,
        });
        result
    }

    /// The client a token request names, if it is registered here.
    async fn registered_client(
        &self,
        pairs: &[(String, String)],
        authorization: Option<&str>,
    ) -> Option<String> {
        let named = presented_client(pairs, authorization)?;
        match self.store.bridge_client(&named).await {
            Ok(Some(_)) => Some(named),
            _ => None,
        }
    }
}
