//! Proxy mode (`auth.mode = "proxy"`): users sign in at the identity
//! provider instead of the login page. Consent comes first (the confused-deputy rule: no
//! redirect upstream for a client the user has not approved); the upstream
//! `state` is created only then, single use, bound to the browser, and
//! consumed at `/callback`. Upstream tokens are kept sealed per grant and
//! refreshed when the grant is refreshed, never on the `/mcp` path.

use serde::{Deserialize, Serialize};

use super::{
    crypto::{ct_eq, pkce_s256, random_token, sha256_b64},
    error::OAuthError,
    flow::{AuthorizationServer, PendingRequest, RememberConsent},
};
use crate::{
    funnel::{FunnelEvent, Reason, Step, StopReason},
    idp::{Identity, IdpError, UpstreamTokens},
    store::{IdpLoginRecord, IdpTokenRecord, StoreError, now_epoch},
};

const LOGIN_TTL_SECS: i64 = 600;
/// An upstream login the admin console started has no pending authorization
/// request: its `request_hash` holds this marker, which no SHA-256 (43
/// base64url characters) equals.
const CONSOLE_LOGIN: &str = "admin-console";
/// Where a console sign-in lands.
const CONSOLE_HOME: &str = "/admin";
pub(super) const LOGIN_CONTEXT: &str = "upstream_logins.secrets";
pub(super) const TOKENS_CONTEXT: &str = "upstream_tokens.sealed";
/// Refresh upstream tokens this long before they expire.
const REFRESH_MARGIN_SECS: i64 = 60;

#[derive(Serialize, Deserialize)]
struct LoginSecrets {
    verifier: String,
    nonce: String,
}

/// Why a callback cannot finish: shown as a page, never a redirect with
/// details, and nothing is stored.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("this sign-in has expired or was already used; start again from your app")]
    UnknownState,
    #[error("this sign-in was started in another browser; start again from your app")]
    WrongBrowser,
    #[error("the identity provider could not be reached; try again in a moment")]
    Unreachable,
    #[error("the identity provider's answer could not be verified; start again from your app")]
    Unverified,
    #[error(
        "you signed in as a different account than the one that approved this app; start again from your app"
    )]
    DifferentUser,
    #[error("your account is not allowed to use this server; ask its operator")]
    NotAllowed,
    #[error("your account conflicts with an existing user here; ask this server's operator")]
    Conflict,
    #[error("{0}")]
    Flow(OAuthError),
}

impl CallbackError {
    /// The catalogue's reason (`crate::funnel::reasons`).
    pub fn reason(&self) -> Reason {
        match self {
            CallbackError::UnknownState | CallbackError::WrongBrowser => Reason::RequestExpired,
            CallbackError::Unreachable | CallbackError::Unverified => Reason::IdpError,
            CallbackError::DifferentUser | CallbackError::NotAllowed | CallbackError::Conflict => {
                Reason::UserNotAllowed
            }
            CallbackError::Flow(e) => e.reason(),
        }
    }
}

/// What the callback has shown about its attempt, for its funnel step.
#[derive(Default)]
struct CallbackTrace {
    request: Option<PendingRequest>,
    /// The admin console's sign-in: no client, no funnel step.
    console: bool,
}

/// What the callback ends with: back to the client (code or
/// `access_denied`), with a session for `user_id` if someone signed in.
pub struct CallbackOutcome {
    pub location: String,
    pub user_id: Option<String>,
}

impl AuthorizationServer {
    /// The provider's name for pages.
    pub fn upstream_name(&self) -> Option<&'static str> {
        self.upstream.as_ref().map(|u| u.preset_name())
    }

    /// After consent: record the upstream login and return the URL to send
    /// the browser to. `consented_user` is the signed-in user whose
    /// remembered consent skipped the page (the callback must match them).
    pub async fn begin_idp_login(
        &self,
        request_id: &str,
        browser: &str,
        remember: RememberConsent,
        consented_user: Option<&str>,
    ) -> Result<String, OAuthError> {
        self.begin_upstream_login(sha256_b64(request_id), browser, remember, consented_user)
            .await
    }

    /// The admin console's sign-in (`/admin/login` in proxy mode): the same
    /// upstream login (single-use state bound to `browser`, PKCE, nonce),
    /// for no client; `/callback` ends it with a session and `/admin`.
    pub async fn begin_console_login(&self, browser: &str) -> Result<String, OAuthError> {
        self.begin_upstream_login(
            CONSOLE_LOGIN.to_owned(),
            browser,
            RememberConsent::ThisTimeOnly,
            None,
        )
        .await
    }

    async fn begin_upstream_login(
        &self,
        request_hash: String,
        browser: &str,
        remember: RememberConsent,
        consented_user: Option<&str>,
    ) -> Result<String, OAuthError> {
        let upstream = self
            .upstream
            .as_ref()
            .ok_or_else(|| OAuthError::Server("no upstream identity provider".to_owned()))?;
        let state = random_token(32)?;
        let secrets = LoginSecrets {
            verifier: random_token(32)?,
            nonce: random_token(24)?,
        };
        let now = now_epoch();
        self.store
            .insert_upstream_login(&IdpLoginRecord {
                state_hash: sha256_b64(&state),
                request_hash,
                browser_hash: sha256_b64(browser),
                secrets_sealed: self.sealer.seal_json(LOGIN_CONTEXT, &secrets)?,
                remember: i64::from(remember == RememberConsent::Remember),
                consented_user: consented_user.map(str::to_owned),
                created_at: now,
                expires_at: now + LOGIN_TTL_SECS,
            })
            .await?;
        Ok(upstream.authorize_url(&state, &secrets.nonce, &pkce_s256(&secrets.verifier)))
    }

    /// `/callback`: check the state and its browser, exchange the code,
    /// verify who signed in, then issue our code. Every check happens before
    /// the first write, so a failure leaves nothing behind but the spent state.
    pub async fn finish_idp_login(
        &self,
        state: &str,
        browser: &str,
        code: Option<&str>,
        upstream_error: Option<&str>,
    ) -> Result<CallbackOutcome, CallbackError> {
        let mut trace = CallbackTrace::default();
        let result = self
            .finish_idp_login_traced(&mut trace, state, browser, code, upstream_error)
            .await;
        if trace.console {
            return result;
        }
        // The step joins its attempt when the pending request was found
        // (client and challenge); otherwise it is counted only.
        let mut event = match &trace.request {
            Some(request) => FunnelEvent::new(Step::UpstreamCallback, &request.client_id)
                .challenge(&request.code_challenge),
            None => FunnelEvent::new(Step::UpstreamCallback, "-").unknown_client(),
        };
        if let Some(user_id) = result.as_ref().ok().and_then(|o| o.user_id.as_deref()) {
            event = event.user(user_id);
        }
        self.funnel.record(match (&result, upstream_error) {
            (_, Some(refused)) => event.stopped(StopReason::idp(refused)),
            (Ok(_), None) => event,
            (Err(e), None) => event.stopped(e.reason()),
        });
        result
    }

    async fn finish_idp_login_traced(
        &self,
        trace: &mut CallbackTrace,
        state: &str,
        browser: &str,
        code: Option<&str>,
        upstream_error: Option<&str>,
    ) -> Result<CallbackOutcome, CallbackError> {
        let upstream = self
            .upstream
            .as_ref()
            .ok_or_else(|| CallbackError::Flow(OAuthError::Server("not in proxy mode".into())))?;
        let login = self
            .store
            .take_upstream_login(&sha256_b64(state), now_epoch())
            .await
            .map_err(|e| CallbackError::Flow(e.into()))?
            .ok_or(CallbackError::UnknownState)?;
        trace.console = login.request_hash == CONSOLE_LOGIN;
        if !ct_eq(&login.browser_hash, &sha256_b64(browser)) {
            return Err(CallbackError::WrongBrowser);
        }
        // For the funnel only: which attempt this is (a read; a missing or
        // unreadable request leaves the step unjoined, nothing else).
        if !trace.console
            && let Ok(Some(record)) = self
                .store
                .get_auth_request(&login.request_hash, now_epoch())
                .await
        {
            trace.request = serde_json::from_str(&record.request).ok();
        }
        if let Some(error) = upstream_error
            && trace.console
        {
            tracing::info!(upstream_error = %error, "console sign-in not completed upstream");
            return Ok(CallbackOutcome {
                location: "/admin/login".to_owned(),
                user_id: None,
            });
        }
        if let Some(error) = upstream_error {
            // The user declined (or the IdP refused) upstream: the client
            // hears access_denied, whatever the IdP said.
            tracing::info!(upstream_error = %error, reason = %StopReason::idp(error).code(), "upstream sign-in not completed");
            let location = self
                .deny_hashed(&login.request_hash)
                .await
                .map_err(CallbackError::Flow)?;
            return Ok(CallbackOutcome {
                location,
                user_id: None,
            });
        }
        let code = code.ok_or(CallbackError::Unverified)?;
        let secrets: LoginSecrets = self
            .sealer
            .open_json(LOGIN_CONTEXT, &login.secrets_sealed)
            .map_err(|e| CallbackError::Flow(e.into()))?;
        let tokens = upstream
            .exchange(code, &secrets.verifier)
            .await
            .map_err(upstream_failure)?;
        let identity = upstream
            .identify(&tokens, &secrets.nonce)
            .await
            .map_err(upstream_failure)?;
        if identity.subject.is_empty() {
            return Err(CallbackError::Unverified);
        }
        if !upstream.admits(&identity) {
            tracing::info!(username = %identity.username, "upstream user not in the allow list");
            upstream.revoke(&tokens).await;
            return Err(CallbackError::NotAllowed);
        }
        let user_id = self.upstream_user_id(&identity.subject);
        if login
            .consented_user
            .as_deref()
            .is_some_and(|u| u != user_id)
        {
            return Err(CallbackError::DifferentUser);
        }
        let profile =
            serde_json::to_string(&identity).map_err(|e| CallbackError::Flow(e.into()))?;
        let family_id = uuid::Uuid::new_v4().to_string();
        let sealed = self.seal_tokens(&tokens).map_err(CallbackError::Flow)?;
        let now = now_epoch();
        let stored = self
            .store
            .upsert_upstream_user(
                &user_id,
                &format!("{}:{}", upstream.preset_name(), identity.username),
                &profile,
                now,
            )
            .await;
        match stored {
            Ok(()) => {}
            Err(StoreError::Conflict(detail)) => {
                tracing::warn!(%detail, "upstream user not stored");
                upstream.revoke(&tokens).await;
                return Err(CallbackError::Conflict);
            }
            Err(e) => return Err(CallbackError::Flow(e.into())),
        }
        let user = self
            .store
            .find_user(&user_id)
            .await
            .map_err(|e| CallbackError::Flow(e.into()))?;
        // An admin disabled this account: the identity provider's word does not override that.
        if user.as_ref().is_some_and(|u| u.disabled_at.is_some()) {
            tracing::info!(user_id = %user_id, "disabled user refused at the callback");
            upstream.revoke(&tokens).await;
            return Err(CallbackError::NotAllowed);
        }
        if let Some(user) = &user {
            self.follow_admin_mapping(user, &identity)
                .await
                .map_err(|e| CallbackError::Flow(e.into()))?;
        }
        if trace.console {
            // The console needs who signed in, not the provider's tokens.
            tracing::info!(target: "audit", who = %user_id, action = "console.sign_in", object = "/admin", outcome = "ok", "admin console sign-in at the identity provider");
            return Ok(CallbackOutcome {
                location: CONSOLE_HOME.to_owned(),
                user_id: Some(user_id),
            });
        }
        self.store
            .save_upstream_tokens(&IdpTokenRecord {
                family_id: family_id.clone(),
                user_id: user_id.clone(),
                sealed,
                expires_at: tokens.expires_at,
                updated_at: now,
            })
            .await
            .map_err(|e| CallbackError::Flow(e.into()))?;
        let remember = if login.remember == 1 {
            RememberConsent::Remember
        } else {
            RememberConsent::ThisTimeOnly
        };
        let location = self
            .approve_hashed(
                &login.request_hash,
                &user_id,
                remember,
                Some(family_id.clone()),
            )
            .await;
        match location {
            Ok(location) => Ok(CallbackOutcome {
                location,
                user_id: Some(user_id),
            }),
            Err(e) => {
                // The pending request expired while the user was upstream.
                let _ = self.store.delete_upstream_tokens(&family_id).await;
                upstream.revoke(&tokens).await;
                Err(CallbackError::Flow(e))
            }
        }
    }

    /// `[admin]`: the role follows the provider's claims at every sign-in,
    /// granted and withdrawn (no mapping configured: left as it is).
    async fn follow_admin_mapping(
        &self,
        user: &crate::store::UserRecord,
        identity: &Identity,
    ) -> Result<(), StoreError> {
        let Some(role) = self
            .admin_roles
            .as_ref()
            .and_then(|rule| rule.admin_role(identity))
        else {
            return Ok(());
        };
        if role == user.is_admin {
            return Ok(());
        }
        self.store.set_admin(&user.id, role).await?;
        tracing::info!(
            target: "audit",
            who = "idp",
            action = if role { "user.grant_admin" } else { "user.revoke_admin" },
            object = %user.username,
            outcome = "ok",
            "admin role follows the identity provider's claims"
        );
        Ok(())
    }

    /// A stable user id per upstream subject: the same on every replica and
    /// after restarts, without a lookup.
    fn upstream_user_id(&self, subject: &str) -> String {
        let namespace = self.upstream.as_ref().map(|u| u.namespace()).unwrap_or("");
        format!(
            "idp_{}",
            &sha256_b64(&format!("{namespace}|{subject}"))[..27]
        )
    }

    fn seal_tokens(&self, tokens: &UpstreamTokens) -> Result<String, OAuthError> {
        Ok(self.sealer.seal_json(TOKENS_CONTEXT, tokens)?)
    }

    fn open_tokens(&self, sealed: &str) -> Result<UpstreamTokens, OAuthError> {
        Ok(self.sealer.open_json(TOKENS_CONTEXT, sealed)?)
    }

    /// The identity claims for tokens (proxy mode only).
    pub(super) async fn profile_of(&self, user_id: &str) -> Result<Option<Identity>, OAuthError> {
        if self.upstream.is_none() {
            return Ok(None);
        }
        Ok(self
            .store
            .user_profile(user_id)
            .await?
            .and_then(|p| serde_json::from_str(&p).ok()))
    }

    /// On a downstream refresh: refresh the upstream tokens when they are
    /// about to expire. If the provider ended the grant, end ours (instead of
    /// issuing tokens the provider would no longer back, or looping). If it is
    /// unreachable, keep serving: the tokens mcpgate issues do not depend on it.
    pub(super) async fn check_idp_grant(
        &self,
        family_id: &str,
        now: i64,
    ) -> Result<(), OAuthError> {
        let Some(upstream) = &self.upstream else {
            return Ok(());
        };
        let Some(record) = self.store.upstream_tokens(family_id).await? else {
            return Ok(());
        };
        if record
            .expires_at
            .is_none_or(|at| at - REFRESH_MARGIN_SECS > now)
        {
            return Ok(());
        }
        let current = self.open_tokens(&record.sealed)?;
        if current.refresh_token.is_none() {
            return Ok(());
        }
        match upstream.refresh(&current).await {
            Ok(tokens) => {
                self.store
                    .save_upstream_tokens(&IdpTokenRecord {
                        family_id: family_id.to_owned(),
                        user_id: record.user_id,
                        sealed: self.seal_tokens(&tokens)?,
                        expires_at: tokens.expires_at,
                        updated_at: now,
                    })
                    .await?;
                Ok(())
            }
            Err(IdpError::InvalidGrant(reason)) => {
                tracing::info!(%reason, "the identity provider ended the grant; revoking it here");
                self.store.revoke_family(family_id, now).await?;
                self.store.delete_upstream_tokens(family_id).await?;
                Err(OAuthError::InvalidGrant(
                    "the identity provider ended this sign-in; sign in again".to_owned(),
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "upstream refresh failed; the grant stays");
                Ok(())
            }
        }
    }

    /// On revocation: revoke upstream too and forget the tokens.
    pub(super) async fn end_upstream_grant(&self, family_id: &str) -> Result<(), OAuthError> {
        let Some(upstream) = &self.upstream else {
            return Ok(());
        };
        if let Some(record) = self.store.upstream_tokens(family_id).await? {
            if let Ok(tokens) = self.open_tokens(&record.sealed) {
                upstream.revoke(&tokens).await;
            }
            self.store.delete_upstream_tokens(family_id).await?;
        }
        Ok(())
    }
}

fn upstream_failure(e: IdpError) -> CallbackError {
    tracing::warn!(error = %e, "upstream sign-in failed");
    match e {
        IdpError::Unreachable(_) => CallbackError::Unreachable,
        _ => CallbackError::Unverified,
    }
}
