//! `GET /authorize`: validate the request, store it pending, and decide the
//! browser's next step ([`AuthorizeStep`]); the browser binding and CSRF
//! tokens that later forms are checked against.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{AuthorizationServer, consent::RememberConsent, login::Account};
use crate::funnel::{FunnelEvent, Reason};
use crate::oauth::{
    clients::resolve_redirect,
    configured_clients::GRANT_AUTHORIZATION_CODE,
    crypto::{ct_eq, random_token, sha256_b64},
    error::OAuthError,
};
use crate::store::AuthRequestRecord;

/// An authorization request that passed validation, waiting for login and consent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingRequest {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub scope: Vec<String>,
    pub resource: String,
    pub document_host: Option<String>,
    /// Every redirect URI of the client is loopback: warn on the consent page.
    pub loopback_only: bool,
    /// The request named `redirect_uri` (rather than using the only
    /// registered one): `/token` must then repeat it (RFC 6749 §4.1.3).
    #[serde(default)]
    pub redirect_uri_sent: bool,
}

/// Why `/authorize` refused. Every case is answered with a page, never a
/// redirect: the clients of this server register themselves (DCR) or are
/// described by a document anyone can publish (CIMD), so a redirect URI of
/// theirs is no more trusted than the attacker who chose it (RFC 9700
/// §4.11.2). The only redirect without a code is `access_denied`, after
/// the user saw the consent page.
#[derive(Debug)]
pub enum AuthorizeError {
    /// A page naming the reason (for its fix) and the specific cause.
    Page(Reason, String),
    /// Too many authorization requests from one address.
    RateLimited,
    Server(OAuthError),
}

/// What the browser is shown or sent to next, decided by the domain (as
/// kanidm's `AuthoriseResponse`); `oauth::http` only renders it.
#[derive(Debug)]
pub enum AuthorizeStep {
    /// Local mode, nobody signed in: the login form.
    ShowLogin(Pending),
    /// The consent page. Proxy mode shows it first, before anyone signs in
    /// (the confused-deputy rule); `idp_name` is where sign-in will happen.
    ShowConsent {
        pending: Pending,
        idp_name: Option<&'static str>,
        /// Local mode: the signed-in user's name ("not you? sign out").
        account: Option<String>,
    },
    /// Proxy mode after consent: sign in at the identity provider.
    GoToIdp { location: String },
    /// Back to the client: a code, or `access_denied`.
    ReturnToClient { location: String },
}

/// A validated `/authorize` request: the next step, and the browser binding
/// secret to set as the cookie (per browser, not per request).
#[derive(Debug)]
pub struct Authorization {
    pub step: AuthorizeStep,
    pub browser: String,
    /// A remembered consent taken on the way, to be recorded after the
    /// `authorize` step itself.
    pub remembered: Option<FunnelEvent>,
}

/// Why a pending request cannot be used by this browser.
#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error("this sign-in request has expired or was already used; start again from your app")]
    Gone,
    #[error("this sign-in request was started in another browser")]
    OtherBrowser,
    #[error("the form has expired; start again from your app")]
    StaleForm,
    #[error(transparent)]
    Flow(#[from] OAuthError),
}

/// Raw `/authorize` query parameters.
#[derive(Debug, Default, Clone)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub state: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
    /// Names that appeared more than once (RFC 6749 §3.1: an error).
    pub duplicated: Vec<String>,
}

/// The handles the browser keeps for a pending request.
#[derive(Debug, Clone)]
pub struct Pending {
    pub request_id: String,
    pub csrf: String,
    pub request: PendingRequest,
}

pub const REQUEST_TTL_SECS: i64 = 600;

/// `state` is stored with the pending request and echoed back; clients
/// use short random values, and anything longer is storage for free.
pub const MAX_STATE_BYTES: usize = 2048;

/// Scopes accepted in requests besides the resource's own; never in tokens' checks.
const IDENTITY_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

impl AuthorizationServer {
    /// Validate `/authorize` and decide the next step; every refusal is a
    /// page (see [`AuthorizeError`]). `browser` is the binding secret the
    /// browser already holds, reused so sign-ins started in several tabs all
    /// stay valid; the answer names the one to set. `session` is the
    /// browser's login session cookie, if any. `client_address` is the limit
    /// key of the caller: each request stores a pending row, so requests are
    /// counted per address before anything else (a metadata-document client
    /// id also costs a fetch).
    pub async fn begin(
        &self,
        params: AuthorizeParams,
        browser: Option<&str>,
        session: Option<&str>,
        client_address: &str,
    ) -> Result<Authorization, AuthorizeError> {
        // A registration is read while the request is counted (two store
        // round trips in the time of one): a read has no effect, so the
        // count still decides first. A document's client id is resolved only
        // after the count (resolving may fetch it: not for a refused request).
        let is_document = |c: &str| self.config.cimd.enabled && self.cimd.is_document_id(c);
        let registered = params
            .client_id
            .as_deref()
            .filter(|c| !c.is_empty() && !is_document(c));
        let (counted, early) = tokio::join!(self.authorizations.hit(client_address), async {
            match registered {
                Some(client_id) => Some(self.client(client_id).await),
                None => None,
            }
        });
        // Counted in the store across replicas; if it cannot count, refuse.
        match counted {
            Ok(true) => {}
            Ok(false) => return Err(AuthorizeError::RateLimited),
            Err(e) => return Err(AuthorizeError::Server(super::limits_unavailable(e))),
        }
        let page = |r: Reason, m: &str| Err(AuthorizeError::Page(r, m.to_owned()));
        if let Some(name) = params.duplicated.first() {
            return Err(AuthorizeError::Page(
                Reason::InvalidRequest,
                format!("invalid_request: the parameter {name} appears more than once"),
            ));
        }
        let client_id = params
            .client_id
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                AuthorizeError::Page(Reason::InvalidRequest, "client_id is missing".to_owned())
            })?;
        // Checked before the client is looked up: an oversized request is
        // refused the same way for every client, and nothing is stored.
        if params
            .state
            .as_ref()
            .is_some_and(|s| s.len() > MAX_STATE_BYTES)
        {
            return page(
                Reason::InvalidRequest,
                &format!("invalid_request: state is longer than {MAX_STATE_BYTES} bytes"),
            );
        }
        let looked_up = match early {
            Some(looked_up) => looked_up,
            None => self.client(&client_id).await,
        };
        let client = match looked_up {
            Ok(Some(c)) => c,
            Ok(None) => return page(Reason::UnknownClient, "this client is not registered here"),
            Err(OAuthError::InvalidClientMetadata(m)) => {
                return Err(AuthorizeError::Page(Reason::InvalidClientMetadata, m));
            }
            Err(e) => return Err(AuthorizeError::Server(e)),
        };
        // A configured machine client is not an interactive one.
        if client
            .configured
            .as_ref()
            .is_some_and(|c| !c.allows_grant(GRANT_AUTHORIZATION_CODE))
        {
            return page(
                Reason::UnauthorizedClient,
                "unauthorized_client: this client may not use the authorization code flow",
            );
        }
        let redirect_uri = match resolve_redirect(
            &client.metadata.redirect_uris,
            params.redirect_uri.as_deref(),
        ) {
            Ok(uri) => uri,
            Err(e) => return page(Reason::RedirectUriMismatch, &e.to_string()),
        };
        let state = params.state.clone();
        if params.response_type.as_deref() != Some("code") {
            return page(
                Reason::UnsupportedResponseType,
                "unsupported_response_type: response_type must be code",
            );
        }
        let Some(challenge) = params.code_challenge.clone() else {
            return page(
                Reason::PkceMissing,
                "invalid_request: PKCE is required: send code_challenge with code_challenge_method=S256",
            );
        };
        if params.code_challenge_method.as_deref() != Some("S256") {
            return page(
                Reason::PkceMissing,
                "invalid_request: code_challenge_method must be S256",
            );
        }
        if challenge.len() != 43
            || !challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return page(
                Reason::PkceMissing,
                "invalid_request: code_challenge is not a S256 challenge",
            );
        }
        let resource = match &params.resource {
            None => self.resource.clone(),
            Some(r) if self.is_our_resource(r) => self.resource.clone(),
            Some(_) => {
                return page(
                    Reason::InvalidTarget,
                    "invalid_target: resource is not served here",
                );
            }
        };
        let mut scope = self.grantable_scopes(params.scope.as_deref());
        // A configured client gets no scope beyond those it is allowed.
        if let Some(allowed) = client.configured.as_ref().and_then(|c| c.scopes.as_ref()) {
            scope.retain(|s| allowed.contains(s) || IDENTITY_SCOPES.contains(&s.as_str()));
        }
        let request = PendingRequest {
            client_name: client
                .metadata
                .client_name
                .clone()
                .unwrap_or_else(|| client_id.clone()),
            client_id,
            redirect_uri,
            state,
            code_challenge: challenge,
            scope,
            resource,
            document_host: client.document_host.clone(),
            loopback_only: client
                .metadata
                .redirect_uris
                .iter()
                .all(|u| u.starts_with("http://")),
            redirect_uri_sent: params.redirect_uri.is_some(),
        };
        let request_id = random_token(32).map_err(server_error)?;
        let browser = match browser.filter(|b| is_browser_secret(b)) {
            Some(existing) => existing.to_owned(),
            None => random_token(32).map_err(server_error)?,
        };
        let csrf = csrf_token(&request_id, &browser);
        let now = self.clock.now();
        let text = serde_json::to_string(&request).map_err(server_error)?;
        let record = AuthRequestRecord {
            id_hash: sha256_b64(&request_id),
            browser_hash: sha256_b64(&browser),
            csrf_hash: sha256_b64(&csrf),
            request: text,
            created_at: now,
            expires_at: now + REQUEST_TTL_SECS,
        };
        // Independent: on PostgreSQL the two round trips overlap.
        let (inserted, account) = tokio::join!(
            self.store.insert_auth_request(&record),
            self.signed_in_account(session)
        );
        inserted.map_err(|e| AuthorizeError::Server(e.into()))?;
        let pending = Pending {
            request_id,
            csrf,
            request,
        };
        let (step, remembered) = self
            .first_step(pending, &browser, account.as_ref())
            .await
            .map_err(AuthorizeError::Server)?;
        Ok(Authorization {
            step,
            browser,
            remembered,
        })
    }

    /// After a valid `/authorize`: proxy mode asks for consent first, then
    /// sends the browser to the identity provider; a signed-in user who
    /// remembered this consent goes straight there, and the callback must
    /// come back as that same user. Local mode signs the user in first.
    async fn first_step(
        &self,
        pending: Pending,
        browser: &str,
        account: Option<&Account>,
    ) -> Result<(AuthorizeStep, Option<FunnelEvent>), OAuthError> {
        let user = account.map(|a| a.user_id.as_str());
        if self.is_proxy() {
            let remembered = match user {
                Some(user_id) => {
                    matches!(self.remembered(user_id, &pending.request).await, Ok(true))
                }
                None => false,
            };
            if remembered {
                let location = self
                    .begin_idp_login(
                        &pending.request_id,
                        browser,
                        RememberConsent::ThisTimeOnly,
                        user,
                    )
                    .await?;
                return Ok((AuthorizeStep::GoToIdp { location }, None));
            }
            return Ok((
                AuthorizeStep::ShowConsent {
                    pending,
                    idp_name: self.upstream_name(),
                    account: None,
                },
                None,
            ));
        }
        match account {
            Some(account) => {
                self.consent_for(&pending.request_id, browser, pending.request, account)
                    .await
            }
            None => Ok((AuthorizeStep::ShowLogin(pending), None)),
        }
    }

    /// RFC 8707: our resource (see [`same_resource`]).
    pub fn is_our_resource(&self, candidate: &str) -> bool {
        same_resource(&self.resource, candidate)
    }

    /// Requested scopes we know, or the baseline when none are known.
    pub fn grantable_scopes(&self, requested: Option<&str>) -> Vec<String> {
        let known: BTreeSet<String> = requested
            .unwrap_or_default()
            .split_whitespace()
            .filter(|s| self.scopes_supported.iter().any(|k| k == s) || IDENTITY_SCOPES.contains(s))
            .map(str::to_owned)
            .collect();
        if known.iter().all(|s| IDENTITY_SCOPES.contains(&s.as_str())) {
            let mut all: BTreeSet<String> = self.scopes_supported.iter().cloned().collect();
            all.extend(known);
            return all.into_iter().collect();
        }
        known.into_iter().collect()
    }

    /// The CSRF token of a form: only a holder of the browser cookie can compute it.
    pub fn csrf_token(&self, request_id: &str, browser: &str) -> String {
        csrf_token(request_id, browser)
    }

    /// Load a pending request the browser holds, checking its binding and CSRF token.
    pub async fn pending(
        &self,
        request_id: &str,
        browser: &str,
        csrf: Option<&str>,
    ) -> Result<PendingRequest, PendingError> {
        let record = self
            .store
            .get_auth_request(&sha256_b64(request_id), self.clock.now())
            .await
            .map_err(OAuthError::from)?
            .ok_or(PendingError::Gone)?;
        if !ct_eq(&record.browser_hash, &sha256_b64(browser)) {
            return Err(PendingError::OtherBrowser);
        }
        if let Some(csrf) = csrf
            && !ct_eq(&record.csrf_hash, &sha256_b64(csrf))
        {
            return Err(PendingError::StaleForm);
        }
        Ok(serde_json::from_str(&record.request).map_err(OAuthError::from)?)
    }
}

/// A value we could have minted (32 random bytes, base64url): anything else
/// in the cookie is replaced rather than trusted as a binding secret.
fn is_browser_secret(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn server_error<E: Into<OAuthError>>(e: E) -> AuthorizeError {
    AuthorizeError::Server(e.into())
}

pub(super) fn csrf_token(request_id: &str, browser: &str) -> String {
    sha256_b64(&format!("csrf|{request_id}|{browser}"))
}

/// RFC 8707: `candidate` names the resource `ours`, tolerating case in
/// scheme and host, a trailing slash, and query parameters some clients
/// append; never a fragment.
pub fn same_resource(ours: &str, candidate: &str) -> bool {
    let (Ok(ours), Ok(theirs)) = (url::Url::parse(ours), url::Url::parse(candidate)) else {
        return false;
    };
    theirs.fragment().is_none()
        && ours.scheme() == theirs.scheme()
        && ours.host_str() == theirs.host_str()
        && ours.port_or_known_default() == theirs.port_or_known_default()
        && ours.path().trim_end_matches('/') == theirs.path().trim_end_matches('/')
}
