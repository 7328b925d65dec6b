//! Password sign-in (rate-limited, on the check pool) and browser sessions.

use super::{
    AuthorizationServer,
    authorize::{Pending, PendingError, csrf_token},
};
use crate::oauth::{
    crypto::{random_token, sha256_b64},
    error::OAuthError,
    passwords,
    ratelimit::LoginRefusal,
};

/// How a password sign-in ended. `Failed` names the user only when the
/// name exists, so what was typed never needs to be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    SignedIn { user_id: String },
    Failed { user_id: Option<String> },
}

/// A started login session: what the browser keeps, and for how long. The
/// cookie lives exactly as long as the session it names.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    pub cookie: String,
    pub lifetime_secs: i64,
}

/// The signed-in user of a browser session: who the consent page says is
/// signed in, and whom a code is issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user_id: String,
    pub username: String,
}

/// Why a password sign-in was not even tried.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("too many sign-in attempts; try again in {} minute(s)", retry_after_secs.div_ceil(60))]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("too many sign-in attempts; try again in a minute")]
    Busy,
    #[error(transparent)]
    Flow(#[from] OAuthError),
}

impl LoginError {
    /// Seconds for `Retry-After`, when waiting helps.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            LoginError::TooManyAttempts { retry_after_secs } => Some(*retry_after_secs),
            LoginError::Busy => Some(60),
            LoginError::Flow(_) => None,
        }
    }
}

impl AuthorizationServer {
    /// Check a password. The attempt is counted against the address's and
    /// the account's allowances *before* the check (see [`LoginLimits`]),
    /// so a concurrent burst gets no more checks than the limit, on any
    /// number of replicas. If the store cannot count, no password is checked.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client_address: &str,
    ) -> Result<LoginOutcome, LoginError> {
        // A digest: what was typed (maybe a password) is neither kept nor
        // bounded in size in the limiter's memory.
        let account = sha256_b64(username);
        let attempt = self
            .login_limits
            .begin(&account, client_address)
            .await
            .map_err(|refusal| match refusal {
                LoginRefusal::Exhausted(wait) => LoginError::TooManyAttempts {
                    retry_after_secs: wait.as_secs().max(1),
                },
                LoginRefusal::Busy => LoginError::Busy,
                // Fail closed: no password is checked without a count.
                LoginRefusal::Store(e) => LoginError::Flow(super::limits_unavailable(e)),
            })?;
        let user = self
            .store
            .find_local_user(username)
            .await
            .map_err(OAuthError::from)?;
        let hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| passwords::decoy_hash().to_owned());
        let ok = match self.password_checks.verify(password.to_owned(), hash).await {
            Ok(ok) => ok,
            // Nothing was checked: the attempt is given back.
            Err(passwords::PoolBusy) => {
                attempt.abandoned().await;
                return Err(LoginError::Busy);
            }
        };
        match user {
            Some(user) if ok => {
                attempt.succeeded().await;
                Ok(LoginOutcome::SignedIn { user_id: user.id })
            }
            user => {
                attempt.failed();
                Ok(LoginOutcome::Failed {
                    user_id: user.map(|u| u.id),
                })
            }
        }
    }

    /// Start a browser session for `user_id`: the cookie's value, and its
    /// lifetime, which is the session's own (`session_ttl_secs`).
    pub async fn start_session(&self, user_id: &str) -> Result<BrowserSession, OAuthError> {
        let id = random_token(32)?;
        let lifetime_secs = self.config.session_ttl_secs as i64;
        self.store
            .insert_session(&sha256_b64(&id), user_id, self.clock.now() + lifetime_secs)
            .await?;
        Ok(BrowserSession {
            cookie: id,
            lifetime_secs,
        })
    }

    /// The user id of a live session cookie.
    pub async fn session_user(&self, cookie: &str) -> Result<Option<String>, OAuthError> {
        Ok(self
            .store
            .session_user(&sha256_b64(cookie), self.clock.now())
            .await?
            .map(|u| u.id))
    }

    /// The user of a live login session cookie, if any (a store failure
    /// counts as no session: the user is asked to sign in again).
    pub async fn signed_in_user(&self, session: Option<&str>) -> Option<String> {
        self.signed_in_account(session).await.map(|a| a.user_id)
    }

    /// [`AuthorizationServer::signed_in_user`] with the user name, which
    /// the session's row already joins (the consent page shows it: no
    /// second read).
    pub async fn signed_in_account(&self, session: Option<&str>) -> Option<Account> {
        let user = self
            .store
            .session_user(&sha256_b64(session?), self.clock.now())
            .await
            .ok()
            .flatten()?;
        Some(Account {
            user_id: user.id,
            username: user.username,
        })
    }

    /// `GET /login?request=`: the sign-in form again for a pending request
    /// of this browser (after "not you? sign out").
    pub async fn login_step(
        &self,
        request_id: &str,
        browser: &str,
    ) -> Result<Pending, PendingError> {
        let request = self.pending(request_id, browser, None).await?;
        Ok(Pending {
            request_id: request_id.to_owned(),
            csrf: csrf_token(request_id, browser),
            request,
        })
    }

    /// End the login session `cookie` names, if any ("not you? sign out").
    pub async fn end_session(&self, cookie: Option<&str>) -> Result<(), OAuthError> {
        if let Some(cookie) = cookie {
            self.store.delete_session(&sha256_b64(cookie)).await?;
        }
        Ok(())
    }
}
