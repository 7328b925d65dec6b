//! `POST /token`: the authorization-code and refresh-token grants, minting
//! access tokens, and the one rule for a code or refresh token presented
//! again (replay within its window, otherwise revoke the family).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{AuthorizationServer, register::ClientCredentials};
use crate::funnel::{AttemptKey, FunnelEvent, Reason, Step};
use crate::idp::Identity;
use crate::oauth::{
    crypto::{ct_eq, pkce_s256, sha256_b64},
    error::{OAuthError, OAuthErrorCode},
};
use crate::store::Consumed;

pub(in crate::oauth) const CODE_CONTEXT: &str = "auth_codes.response";

pub(in crate::oauth) const REFRESH_CONTEXT: &str = "refresh_tokens.response";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    client_id: &'a str,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    groups: &'a [String],
}

impl AuthorizationServer {
    /// An access token for `client` acting as `user_id`; its lifetime is the
    /// client's ([`AuthorizationServer::access_token_ttl`]).
    pub(super) fn mint(
        &self,
        client: &super::Client,
        user_id: &str,
        scope: &str,
        resource: &str,
        refresh: Option<&str>,
        profile: Option<&Identity>,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.clock.now();
        let ttl = self.access_token_ttl(client);
        let client_id = client.client_id.as_str();
        let claims = AccessClaims {
            iss: &self.issuer,
            sub: user_id,
            aud: resource,
            iat: now,
            nbf: now,
            exp: now + ttl as i64,
            jti: uuid::Uuid::new_v4().to_string(),
            client_id,
            scope: scope.to_owned(),
            email: profile.and_then(|p| p.email.as_deref()),
            name: profile.and_then(|p| p.name.as_deref()),
            groups: profile.map(|p| p.groups.as_slice()).unwrap_or_default(),
        };
        let access_token = self.keys.sign(&claims)?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer".to_owned(),
            expires_in: ttl,
            refresh_token: refresh.map(str::to_owned),
            scope: scope.to_owned(),
        })
    }

    /// `grant_type=authorization_code`; the step goes to the funnel.
    pub async fn redeem_code(
        &self,
        creds: &ClientCredentials,
        code: Option<&str>,
        verifier: Option<&str>,
        redirect_uri: Option<&str>,
        resource: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let mut trace = Trace::default();
        let result = self
            .redeem_code_traced(&mut trace, creds, code, verifier, redirect_uri, resource)
            .await;
        self.record_token_step(Step::CodeRedeemed, trace, &result);
        result
    }

    /// `grant_type=refresh_token`; the step goes to the funnel.
    pub async fn refresh(
        &self,
        creds: &ClientCredentials,
        token: Option<&str>,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let mut trace = Trace::default();
        let result = self
            .refresh_traced(&mut trace, creds, token, scope, resource)
            .await;
        self.record_token_step(Step::Refresh, trace, &result);
        result
    }

    /// One funnel row for a token request: joined by the code's challenge
    /// (redemption) or the grant (refresh). Before the client is
    /// authenticated nothing is known about the attempt: counted only.
    fn record_token_step(
        &self,
        step: Step,
        trace: Trace,
        result: &Result<TokenResponse, OAuthError>,
    ) {
        let mut event = match &trace.client_id {
            Some(client_id) => FunnelEvent::new(step, client_id),
            None => FunnelEvent::new(step, "-").unknown_client(),
        };
        event = match (step, &trace.challenge) {
            (Step::CodeRedeemed, Some(challenge)) => event.challenge(challenge),
            (Step::Refresh, _) if trace.grant.is_some() => event.keyed(AttemptKey::Grant),
            _ => event,
        };
        if let Some(user) = &trace.user_id {
            event = event.user(user);
        }
        if let Some(grant) = &trace.grant {
            event = event.grant(grant);
        }
        if let Err(e) = result {
            event = event.stopped(e.reason());
        }
        self.funnel.record(event);
    }

    async fn redeem_code_traced(
        &self,
        trace: &mut Trace,
        creds: &ClientCredentials,
        code: Option<&str>,
        verifier: Option<&str>,
        redirect_uri: Option<&str>,
        resource: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        // The client and the code are read side by side: two store round
        // trips in the time of one. The client's answer is looked at first.
        let hash = code.map(sha256_b64);
        let (client, record) = tokio::join!(self.authenticate_client(creds), async {
            match &hash {
                Some(hash) => self.store.get_code_and_user(hash).await,
                None => Ok(None),
            }
        });
        let client = client?;
        trace.client_id = Some(client.client_id.clone());
        let (Some(_), Some(hash)) = (code, hash) else {
            return Err(OAuthError::InvalidRequest("code is missing".to_owned()));
        };
        // The attempt is this client's only if the code was issued to it.
        if let Ok(Some((r, _))) = &record
            && r.client_id == client.client_id
        {
            trace.challenge = Some(r.code_challenge.clone());
            trace.user_id = Some(r.user_id.clone());
            trace.grant = Some(r.family_id.clone());
        }
        let verifier = verifier.ok_or_else(|| {
            OAuthError::refused(
                OAuthErrorCode::InvalidRequest,
                Reason::PkceMissing,
                "code_verifier is missing (PKCE)",
            )
        })?;
        if !is_pkce_verifier(verifier) {
            return Err(OAuthError::refused(
                OAuthErrorCode::InvalidGrant,
                Reason::PkceMismatch,
                "code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636)",
            ));
        }
        let now = self.clock.now();
        let (record, user_exists) = record?.ok_or_else(unknown_code)?;
        if record.client_id != client.client_id {
            // Refused, but the grant is left alone: a code seen by another
            // client (a log, a referrer, a shared screen) proves nothing about
            // its holder, and burning the family on that would let anyone who
            // saw a code end the victim's session. A second presentation by
            // the client it was issued to still revokes (below). Worded as
            // for an unknown code: another client learns nothing about
            // whether a code it holds is live.
            return Err(unknown_code());
        }
        if record.expires_at <= now {
            return Err(OAuthError::refused(
                OAuthErrorCode::InvalidGrant,
                Reason::CodeInvalid,
                "the code has expired",
            ));
        }
        match redirect_uri {
            Some(r) if r != record.redirect_uri => {
                return Err(OAuthError::refused(
                    OAuthErrorCode::InvalidGrant,
                    Reason::RedirectUriMismatch,
                    "redirect_uri differs from the authorization request",
                ));
            }
            None if record.redirect_uri_sent => {
                return Err(OAuthError::refused(
                    OAuthErrorCode::InvalidRequest,
                    Reason::RedirectUriMismatch,
                    "redirect_uri is required: the authorization request named one",
                ));
            }
            _ => {}
        }
        if !ct_eq(&pkce_s256(verifier), &record.code_challenge) {
            return Err(OAuthError::refused(
                OAuthErrorCode::InvalidGrant,
                Reason::PkceMismatch,
                "code_verifier does not match the challenge",
            ));
        }
        if resource.is_some_and(|r| !self.is_our_resource(r)) {
            return Err(OAuthError::InvalidTarget(
                "resource differs from the authorized one".to_owned(),
            ));
        }
        if record.redeemed_at.is_none() {
            if !user_exists {
                return Err(OAuthError::InvalidGrant(
                    "the user no longer exists".to_owned(),
                ));
            }
            let refresh = (client.metadata.allows_refresh()
                || record
                    .scope
                    .split_whitespace()
                    .any(|s| s == "offline_access"))
            .then(|| {
                self.issue_refresh_token(
                    &record.family_id,
                    &record.client_id,
                    &record.user_id,
                    &record.scope,
                    &record.resource,
                    now,
                )
            })
            .transpose()?;
            let profile = self.profile_of(&record.user_id).await?;
            let response = self.mint(
                &client,
                &record.user_id,
                &record.scope,
                &record.resource,
                refresh.as_ref().map(|(token, _)| token.as_str()),
                profile.as_ref(),
            )?;
            let sealed = self.sealer.seal_json(CODE_CONTEXT, &response)?;
            let new_refresh = refresh.map(|(_, row)| row);
            let touch = client.touch_due(now).then_some(record.client_id.as_str());
            if self
                .store
                .redeem_code(&hash, now, &sealed, new_refresh.as_ref(), touch)
                .await?
                == Consumed::Won
            {
                return Ok(response);
            }
        }
        // Redeemed before (or lost the race): re-read what the winner stored.
        let record = self.store.get_code(&hash).await?.ok_or_else(unknown_code)?;
        self.replay_or_revoke(
            Reuse::Code,
            Spent {
                used_at: record.redeemed_at,
                revoked: false,
                response_sealed: record.response_sealed,
                family_id: record.family_id,
                client_id: record.client_id,
            },
            now,
        )
        .await
    }

    /// `grant_type=refresh_token`: rotate; a rotated token seen again after
    /// the grace window revokes the whole family (RFC 9700 §4.14.2).
    async fn refresh_traced(
        &self,
        trace: &mut Trace,
        creds: &ClientCredentials,
        token: Option<&str>,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let hash = token.map(sha256_b64);
        // The short way: a token that describes its grant, from a client
        // known without a store read, rotates in one write
        // (`refresh_token.rs`). Anything else, or a write that finds no live
        // row, goes the long way below, which answers exactly.
        if let (Some(token), Some(hash)) = (token, &hash)
            && let Some(claims) = self.refresh_claims(token)
            && let Some(client) = self.authenticate_from_memory(creds).await
            && let Some(response) = self
                .rotate_described(&client, &claims, hash, scope, resource)
                .await?
        {
            trace.client_id = Some(client.client_id);
            trace.user_id = Some(claims.user_id);
            trace.grant = Some(claims.family_id);
            return Ok(response);
        }
        // Side by side, as for codes.
        let (client, record) = tokio::join!(self.authenticate_client(creds), async {
            match &hash {
                Some(hash) => self.store.get_refresh(hash).await,
                None => Ok(None),
            }
        });
        let client = client?;
        trace.client_id = Some(client.client_id.clone());
        let Some(hash) = hash else {
            return Err(OAuthError::InvalidRequest(
                "refresh_token is missing".to_owned(),
            ));
        };
        let now = self.clock.now();
        let record = record?.ok_or_else(unknown_refresh)?;
        if record.client_id != client.client_id {
            // Worded as for an unknown token: /token is no status oracle for
            // stolen refresh tokens (and nothing rotates or is revoked).
            return Err(unknown_refresh());
        }
        trace.user_id = Some(record.user_id.clone());
        trace.grant = Some(record.family_id.clone());
        if record.revoked_at.is_some() || record.expires_at <= now {
            return Err(OAuthError::refused(
                OAuthErrorCode::InvalidGrant,
                Reason::RefreshInvalid,
                "the refresh token is no longer valid",
            ));
        }
        if resource.is_some_and(|r| !self.is_our_resource(r)) {
            return Err(OAuthError::InvalidTarget(
                "resource differs from the authorized one".to_owned(),
            ));
        }
        let scope = narrowed_scope(&record.scope, scope)?;
        // A removed user's refresh tokens were revoked with the user (same
        // transaction), so `revoked_at` above already covers that case.
        if record.rotated_at.is_none() {
            let grant = super::refresh_token::Grant {
                family_id: &record.family_id,
                client_id: &record.client_id,
                user_id: &record.user_id,
                scope: &record.scope,
                resource: &record.resource,
            };
            if let Some(response) = self
                .rotate_to_successor(&client, &grant, &scope, &hash, now)
                .await?
            {
                return Ok(response);
            }
        }
        // Rotated before (or lost the race): re-read what the winner stored.
        let record = self
            .store
            .get_refresh(&hash)
            .await?
            .ok_or_else(unknown_refresh)?;
        self.replay_or_revoke(
            Reuse::RefreshToken,
            Spent {
                used_at: record.rotated_at,
                revoked: record.revoked_at.is_some(),
                response_sealed: record.response_sealed,
                family_id: record.family_id,
                client_id: record.client_id,
            },
            now,
        )
        .await
    }

    /// A code or refresh token presented again after it was used (by a
    /// retry, or by the loser of a concurrent use): within its window the
    /// caller gets the winner's sealed answer again; later, the whole family
    /// is revoked (RFC 9700 §4.14.2: reuse means one copy was stolen).
    async fn replay_or_revoke(
        &self,
        reuse: Reuse,
        spent: Spent,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let window = match reuse {
            Reuse::Code => self.config.code_replay_window_secs,
            Reuse::RefreshToken => self.config.refresh_reuse_grace_secs,
        };
        let within = spent.used_at.is_some_and(|at| now - at <= window as i64);
        if within
            && !spent.revoked
            && let Some(sealed) = &spent.response_sealed
        {
            return Ok(self.sealer.open_json(reuse.sealed_context(), sealed)?);
        }
        let revoked = self.store.revoke_family(&spent.family_id, now).await?;
        let client_id = &spent.client_id;
        match reuse {
            Reuse::Code => {
                tracing::warn!(%client_id, revoked, "authorization code replayed; its tokens are revoked");
                Err(OAuthError::refused(
                    OAuthErrorCode::InvalidGrant,
                    Reason::CodeReused,
                    "the code was already used",
                ))
            }
            Reuse::RefreshToken => {
                tracing::warn!(%client_id, revoked, "rotated refresh token reused; the family is revoked");
                Err(OAuthError::refused(
                    OAuthErrorCode::InvalidGrant,
                    Reason::RefreshReused,
                    "the refresh token was already used",
                ))
            }
        }
    }
}

/// What a token request has shown about its attempt so far (filled in as
/// the checks learn it), for its funnel row.
#[derive(Default)]
struct Trace {
    client_id: Option<String>,
    challenge: Option<String>,
    user_id: Option<String>,
    grant: Option<String>,
}

fn unknown_code() -> OAuthError {
    OAuthError::refused(
        OAuthErrorCode::InvalidGrant,
        Reason::CodeInvalid,
        "unknown authorization code",
    )
}

fn unknown_refresh() -> OAuthError {
    OAuthError::refused(
        OAuthErrorCode::InvalidGrant,
        Reason::RefreshInvalid,
        "unknown refresh token",
    )
}

/// Which single-use credential was presented again.
#[derive(Debug, Clone, Copy)]
enum Reuse {
    Code,
    RefreshToken,
}

impl Reuse {
    /// Where the winner's answer is sealed.
    fn sealed_context(self) -> &'static str {
        match self {
            Reuse::Code => CODE_CONTEXT,
            Reuse::RefreshToken => REFRESH_CONTEXT,
        }
    }
}

/// A used code or refresh token as stored after its first use.
struct Spent {
    used_at: Option<i64>,
    /// Its family was revoked since (refresh tokens; codes have no flag).
    revoked: bool,
    response_sealed: Option<String>,
    family_id: String,
    client_id: String,
}

/// The scope of a refreshed access token: the family's `granted` scope, or
/// the part of it the request asks for (RFC 6749 §6: never more).
pub(super) fn narrowed_scope(granted: &str, asked: Option<&str>) -> Result<String, OAuthError> {
    let Some(asked) = asked else {
        return Ok(granted.to_owned());
    };
    let granted: BTreeSet<&str> = granted.split_whitespace().collect();
    let asked: Vec<&str> = asked.split_whitespace().collect();
    if asked.iter().any(|a| !granted.contains(a)) {
        return Err(OAuthError::InvalidScope(
            "a requested scope was not granted".to_owned(),
        ));
    }
    Ok(asked.join(" "))
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters. A short verifier could be
/// guessed from its challenge.
fn is_pkce_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}
