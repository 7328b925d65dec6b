//! Consent: the page's next step, the user's answer ([`Consent`]), remembered
//! consents, and issuing the code (or `access_denied`) back to the client.

use std::collections::BTreeSet;

use super::{
    AuthorizationServer,
    authorize::{AuthorizeStep, Pending, PendingError, PendingRequest, csrf_token},
    login::Account,
};
use crate::funnel::{FunnelEvent, Step};
use crate::oauth::{
    crypto::{random_token, sha256_b64},
    error::OAuthError,
};
use crate::store::CodeRecord;

/// The user's answer on the consent page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    Approve { remember: RememberConsent },
    Deny,
}

/// Whether an approval is recorded for (user, client, scopes), so the
/// consent page is skipped next time (`remember_consent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RememberConsent {
    Remember,
    ThisTimeOnly,
}

/// Why a consent step cannot go on; each is a page.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The pending request is gone, or belongs to another browser or form.
    #[error(transparent)]
    Request(#[from] PendingError),
    #[error("you are not signed in; start again from your app")]
    NotSignedIn,
    #[error(transparent)]
    Flow(#[from] OAuthError),
}

impl AuthorizationServer {
    /// `GET /consent`: the consent page, or, when the signed-in user
    /// remembered this consent, the next redirect. Proxy mode: a code only
    /// ever follows a sign-in at the identity provider (which re-checks the
    /// account and the allow lists), and the callback must come back as
    /// this same user.
    pub async fn consent_step(
        &self,
        request_id: &str,
        browser: &str,
        session: Option<&str>,
    ) -> Result<AuthorizeStep, ConsentError> {
        let request = self.pending(request_id, browser, None).await?;
        let account = self
            .signed_in_account(session)
            .await
            .ok_or(ConsentError::NotSignedIn)?;
        let (step, remembered) = self
            .consent_for(request_id, browser, request, &account)
            .await?;
        if let Some(event) = remembered {
            self.funnel.record(event);
        }
        Ok(step)
    }

    /// The consent step for `user_id`, signed in, on a pending request
    /// already checked against its browser: the page, or the next redirect
    /// when this consent is remembered, with that remembered consent's
    /// funnel step for the caller to record (after its own step, so the
    /// attempt reads in order). `/authorize` takes it directly for a browser
    /// that is signed in (one redirect fewer), `/consent` after a sign-in.
    pub(super) async fn consent_for(
        &self,
        request_id: &str,
        browser: &str,
        request: PendingRequest,
        account: &Account,
    ) -> Result<(AuthorizeStep, Option<FunnelEvent>), OAuthError> {
        let user_id = account.user_id.clone();
        if matches!(self.remembered(&user_id, &request).await, Ok(true)) {
            // A remembered consent is the attempt's consent step (no page).
            let event = FunnelEvent::new(Step::Consent, &request.client_id)
                .challenge(&request.code_challenge)
                .user(&user_id);
            let step = if self.is_proxy() {
                let location = self
                    .begin_idp_login(
                        request_id,
                        browser,
                        RememberConsent::ThisTimeOnly,
                        Some(&user_id),
                    )
                    .await?;
                AuthorizeStep::GoToIdp { location }
            } else {
                let consent = Consent::Approve {
                    remember: RememberConsent::ThisTimeOnly,
                };
                let location = self.decide(request_id, &user_id, consent).await?;
                AuthorizeStep::ReturnToClient { location }
            };
            return Ok((step, Some(event)));
        }
        // Proxy mode shows no account: the sign-in that counts is the one
        // at the identity provider, after this page.
        let account = if self.is_proxy() {
            None
        } else {
            Some(account.username.clone())
        };
        Ok((
            AuthorizeStep::ShowConsent {
                pending: Pending {
                    request_id: request_id.to_owned(),
                    csrf: csrf_token(request_id, browser),
                    request,
                },
                idp_name: self.upstream_name(),
                account,
            },
            None,
        ))
    }

    /// `POST /consent` (the form already checked against its browser and
    /// CSRF token). Proxy mode records the consent in the upstream login and
    /// sends the browser to the identity provider; nobody is signed in yet.
    /// Local mode issues the code to the signed-in user, `signed_in`
    /// ([`AuthorizationServer::signed_in_user`] of the request's session,
    /// which the edge looks up while it checks the form).
    pub async fn answer_consent(
        &self,
        request_id: &str,
        browser: &str,
        signed_in: Option<String>,
        consent: Consent,
    ) -> Result<AuthorizeStep, ConsentError> {
        if self.is_proxy() {
            return Ok(match consent {
                Consent::Approve { remember } => AuthorizeStep::GoToIdp {
                    location: self
                        .begin_idp_login(request_id, browser, remember, None)
                        .await?,
                },
                Consent::Deny => AuthorizeStep::ReturnToClient {
                    location: self.deny_hashed(&sha256_b64(request_id)).await?,
                },
            });
        }
        let user_id = signed_in.ok_or(ConsentError::NotSignedIn)?;
        let location = self.decide(request_id, &user_id, consent).await?;
        Ok(AuthorizeStep::ReturnToClient { location })
    }

    /// Has the user already approved this client for these scopes?
    pub async fn remembered(
        &self,
        user_id: &str,
        request: &PendingRequest,
    ) -> Result<bool, OAuthError> {
        if !self.config.remember_consent {
            return Ok(false);
        }
        Ok(
            match self.store.consent(user_id, &request.client_id).await? {
                Some(scope) => {
                    let granted: BTreeSet<&str> = scope.split_whitespace().collect();
                    request.scope.iter().all(|s| granted.contains(s.as_str()))
                }
                None => false,
            },
        )
    }

    /// Consume the pending request (single use) and, if `user_id` approved,
    /// issue a code. Returns the URL to send the browser to.
    pub async fn decide(
        &self,
        request_id: &str,
        user_id: &str,
        consent: Consent,
    ) -> Result<String, OAuthError> {
        let request_hash = sha256_b64(request_id);
        match consent {
            Consent::Approve { remember } => {
                self.approve_hashed(&request_hash, user_id, remember, None)
                    .await
            }
            Consent::Deny => self.deny_hashed(&request_hash).await,
        }
    }

    /// Consume the pending request (single use) by the stored hash of its id.
    async fn take_request(&self, request_hash: &str) -> Result<PendingRequest, OAuthError> {
        let record = self
            .store
            .take_auth_request(request_hash, self.clock.now())
            .await?
            .ok_or_else(|| {
                OAuthError::InvalidRequest(
                    "the sign-in request expired or was already used".to_owned(),
                )
            })?;
        Ok(serde_json::from_str(&record.request)?)
    }

    /// Refused (by the user, or upstream): consume the request and send the
    /// browser back with `access_denied`.
    pub(in crate::oauth) async fn deny_hashed(
        &self,
        request_hash: &str,
    ) -> Result<String, OAuthError> {
        let request = self.take_request(request_hash).await?;
        Ok(self.redirect_with(
            &request.redirect_uri,
            &[("error", "access_denied")],
            request.state.as_deref(),
        ))
    }

    /// Approved by `user_id`: consume the request and issue a code.
    /// `family_id` names the grant in advance (proxy mode stores upstream
    /// tokens under it).
    pub(in crate::oauth) async fn approve_hashed(
        &self,
        request_hash: &str,
        user_id: &str,
        remember: RememberConsent,
        family_id: Option<String>,
    ) -> Result<String, OAuthError> {
        let request = self.take_request(request_hash).await?;
        let scope = request.scope.join(" ");
        let code = random_token(32)?;
        let now = self.clock.now();
        let record = CodeRecord {
            code_hash: sha256_b64(&code),
            client_id: request.client_id.clone(),
            user_id: user_id.to_owned(),
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
            scope: scope.clone(),
            resource: request.resource.clone(),
            family_id: family_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            created_at: now,
            expires_at: now + self.config.code_ttl_secs as i64,
            redeemed_at: None,
            response_sealed: None,
            redirect_uri_sent: request.redirect_uri_sent,
        };
        // Independent writes: on PostgreSQL the two round trips overlap.
        let remember = remember == RememberConsent::Remember && self.config.remember_consent;
        let (saved, inserted) = tokio::join!(
            async {
                if remember {
                    self.store
                        .save_consent(user_id, &request.client_id, &scope)
                        .await
                } else {
                    Ok(())
                }
            },
            self.store.insert_code(&record)
        );
        saved?;
        inserted?;
        Ok(self.redirect_with(
            &request.redirect_uri,
            &[("code", &code)],
            request.state.as_deref(),
        ))
    }

    /// `redirect_uri` plus parameters, `state` and `iss` (RFC 9207), each once.
    pub fn redirect_with(
        &self,
        redirect_uri: &str,
        params: &[(&str, &str)],
        state: Option<&str>,
    ) -> String {
        let mut url = match url::Url::parse(redirect_uri) {
            Ok(u) => u,
            Err(_) => return redirect_uri.to_owned(),
        };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(state) = state {
                q.append_pair("state", state);
            }
            q.append_pair("iss", &self.issuer);
        }
        url.to_string()
    }
}
