//! The authorization server's HTTP edge: parse, call [`AuthorizationServer`],
//! map errors to RFC status codes and JSON bodies (pages for the browser steps).

use std::sync::Arc;

use axum::{
    Json, Router,
    body::{Body, Bytes, to_bytes},
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};

use super::{
    clients::BasicCredentials,
    configured_clients::GRANT_JWT_BEARER,
    error::{OAuthError, OAuthErrorCode},
    flow::{
        Authorization, AuthorizationServer, AuthorizeError, AuthorizeParams, AuthorizeStep,
        ClientCredentials, Consent, ConsentError, LoginError, LoginOutcome, PendingError,
        PendingRequest, REQUEST_TTL_SECS, RememberConsent,
    },
    front::{self, BrowserCookie, MAX_REGISTRATION_BYTES, field, no_store, see_other},
    keys::KeyRing,
    pages::{self, ConsentView, LoginForm, Trouble},
    proxy::{CallbackError, CallbackOutcome},
};
use crate::auth::verify::IssuerVerifier;
use crate::branding::Site;
use crate::funnel::{FunnelEvent, Reason, Step};
use crate::server::ClientAddress;

#[derive(Clone)]
pub struct OAuthState {
    pub server: Arc<AuthorizationServer>,
    pub keys: Arc<KeyRing>,
    pub verifier: Arc<IssuerVerifier>,
    /// `https` issuers get `__Host-` cookies with `Secure`; http loopback development does not.
    pub secure_cookies: bool,
    /// The pages' look and their security headers.
    pub site: Arc<Site>,
}

pub fn routes(state: OAuthState) -> Router {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/.well-known/oauth-authorization-server/mcp", get(metadata))
        .route("/jwks.json", get(jwks))
        .route("/register", post(register))
        .route("/authorize", get(authorize))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/consent", get(consent_page).post(consent_post))
        .route("/callback", get(callback))
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .route("/introspect", post(introspect))
        .with_state(state)
}

/// Binds a sign-in (a pending request, an upstream login) to the browser.
pub const AUTH_COOKIE: &str = "mcpgate_auth";
const SESSION_COOKIE: &str = "mcpgate_session";

impl OAuthState {
    fn cookie(&self, base: &'static str) -> BrowserCookie {
        BrowserCookie {
            base,
            secure: self.secure_cookies,
        }
    }

    /// The OAuth error body (`error_description` and `error_uri` from the
    /// reason catalogue).
    fn error(&self, err: OAuthError) -> Response {
        oauth_error(err, &self.server.issuer)
    }

    /// An error page naming the cause, the reason's fix and its `/errors`
    /// section; the reason goes to the log line too.
    fn refusal(
        &self,
        status: StatusCode,
        trouble: Trouble,
        reason: Reason,
        message: &str,
    ) -> Response {
        tracing::info!(
            status = status.as_u16(),
            reason = reason.code(),
            detail = message,
            "sign-in refused"
        );
        self.html(
            status,
            pages::refusal(
                &self.site,
                trouble,
                message,
                reason.fix(),
                &reason.error_uri(&self.server.issuer),
            ),
        )
    }

    fn record(&self, event: FunnelEvent) {
        self.server.funnel().record(event);
    }
}

impl OAuthState {
    /// A page, with the browser security headers.
    fn html(&self, status: StatusCode, body: String) -> Response {
        self.site.respond(status, body)
    }

    /// An error page.
    fn trouble(&self, status: StatusCode, trouble: Trouble, message: &str) -> Response {
        self.html(status, pages::error(&self.site, trouble, message))
    }
}

fn oauth_error(err: OAuthError, base: &str) -> Response {
    let status = match &err {
        OAuthError::InvalidClient | OAuthError::ClientAssertion(_) => StatusCode::UNAUTHORIZED,
        OAuthError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        OAuthError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        OAuthError::TooManyClients | OAuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        OAuthError::Refused { code, .. } => match code {
            OAuthErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            OAuthErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        },
        OAuthError::Server(detail) => {
            tracing::error!(detail = %detail, "authorization server error");
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = front::error_json(status, err.code(), err.reason(), &err.to_string(), base);
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"mcpgate\""),
        );
    }
    response
}

fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    front::form_pairs(body).map_err(|e| OAuthError::InvalidRequest(e.to_string()))
}

/// The client's credentials, by exactly one method (RFC 6749 §2.3: a
/// Basic header, a `client_secret` field, or a `client_assertion`); two at
/// once is `invalid_request` (RFC 6749 §5.2 names that case).
fn client_credentials(
    headers: &HeaderMap,
    pairs: &[(String, String)],
) -> Result<ClientCredentials, OAuthError> {
    let basic = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(auth) => BasicCredentials::parse(auth).map_err(|_| OAuthError::InvalidClient)?,
        None => None,
    };
    let secret = field(pairs, "client_secret");
    let assertion = field(pairs, "client_assertion");
    let assertion_type = field(pairs, "client_assertion_type");
    let methods = [
        basic.is_some(),
        secret.is_some(),
        assertion.is_some() || assertion_type.is_some(),
    ];
    if methods.into_iter().filter(|used| *used).count() > 1 {
        return Err(OAuthError::InvalidRequest(
            "use one client authentication method per request: a Basic header, client_secret, or client_assertion".to_owned(),
        ));
    }
    if let Some(basic) = basic {
        return Ok(ClientCredentials {
            client_id: Some(basic.client_id),
            secret: Some(basic.secret),
            basic: true,
            ..ClientCredentials::default()
        });
    }
    Ok(ClientCredentials {
        client_id: field(pairs, "client_id").map(str::to_owned),
        secret: secret.map(str::to_owned),
        basic: false,
        assertion: assertion.map(str::to_owned),
        assertion_type: assertion_type.map(str::to_owned),
    })
}

/// A posted login or consent form: parsed, and checked against the pending
/// request's browser binding and CSRF token. `Err` is the page to answer with.
async fn bound_form(
    state: &OAuthState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Vec<(String, String)>, PendingRequest), Response> {
    let Ok(pairs) = form_pairs(body) else {
        return Err(state.refusal(
            StatusCode::BAD_REQUEST,
            Trouble::CannotContinue,
            Reason::InvalidRequest,
            "the form is malformed",
        ));
    };
    let (Some(request_id), Some(csrf)) = (field(&pairs, "request"), field(&pairs, "csrf")) else {
        return Err(state.refusal(
            StatusCode::FORBIDDEN,
            Trouble::CannotContinue,
            Reason::RequestExpired,
            "the form is missing its request or CSRF token",
        ));
    };
    let browser = state.cookie(AUTH_COOKIE).read(headers).unwrap_or_default();
    match state.server.pending(request_id, &browser, Some(csrf)).await {
        Ok(request) => Ok((pairs, request)),
        Err(refused) => Err(state.refusal(
            StatusCode::FORBIDDEN,
            Trouble::CannotContinue,
            pending_reason(&refused),
            &refused.to_string(),
        )),
    }
}

async fn metadata(State(state): State<OAuthState>) -> Response {
    // Anonymous: no client yet, so counted under `other` and not stored.
    state.record(FunnelEvent::new(Step::Metadata, "-").unknown_client());
    Json(state.server.metadata()).into_response()
}

async fn jwks(State(state): State<OAuthState>) -> Response {
    let mut response = Json(state.keys.jwks()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

async fn register(State(state): State<OAuthState>, client: ClientAddress, body: Body) -> Response {
    let Ok(body) = to_bytes(body, MAX_REGISTRATION_BYTES).await else {
        return state.error(OAuthError::TooLarge(format!(
            "the registration is larger than {MAX_REGISTRATION_BYTES} bytes"
        )));
    };
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => {
            return state.error(OAuthError::InvalidClientMetadata(
                "the body must be a JSON object".to_owned(),
            ));
        }
    };
    match state.server.register(value, &client.limit_key()).await {
        Ok(registered) => {
            let client_id = registered["client_id"].as_str().unwrap_or("-");
            state.record(FunnelEvent::new(Step::Registered, client_id));
            no_store((StatusCode::CREATED, Json(registered)).into_response())
        }
        Err(e) => {
            // No client id yet: counted, not stored (registration is anonymous).
            state.record(
                FunnelEvent::new(Step::Registered, "-")
                    .unknown_client()
                    .stopped(e.reason()),
            );
            state.error(e)
        }
    }
}

async fn authorize(
    State(state): State<OAuthState>,
    client: ClientAddress,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let mut params = AuthorizeParams::default();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()).into_owned() {
        if !seen.insert(k.clone()) {
            params.duplicated.push(k.clone());
            continue;
        }
        let slot = match k.as_str() {
            "response_type" => &mut params.response_type,
            "client_id" => &mut params.client_id,
            "redirect_uri" => &mut params.redirect_uri,
            "code_challenge" => &mut params.code_challenge,
            "code_challenge_method" => &mut params.code_challenge_method,
            "state" => &mut params.state,
            "scope" => &mut params.scope,
            "resource" => &mut params.resource,
            _ => continue,
        };
        *slot = Some(v);
    }
    let held = state.cookie(AUTH_COOKIE).read(&headers);
    let session = state.cookie(SESSION_COOKIE).read(&headers);
    let mut event = FunnelEvent::new(Step::Authorize, params.client_id.as_deref().unwrap_or("-"));
    if let Some(challenge) = &params.code_challenge {
        event = event.challenge(challenge);
    }
    let named_client = params.client_id.is_some();
    // A metadata-document client id is resolved in `begin`; its outcome is a step of its own.
    let document_client = params
        .client_id
        .as_deref()
        .filter(|c| c.starts_with("https://"))
        .map(|c| match &params.code_challenge {
            Some(challenge) => FunnelEvent::new(Step::CimdResolved, c).challenge(challenge),
            None => FunnelEvent::new(Step::CimdResolved, c),
        });
    let Authorization {
        step,
        browser,
        remembered,
    } = match state
        .server
        .begin(
            params,
            held.as_deref(),
            session.as_deref(),
            &client.limit_key(),
        )
        .await
    {
        Ok(authorization) => authorization,
        Err(AuthorizeError::Page(reason, message)) => {
            if let Some(resolved) = document_client {
                state.record(match reason {
                    Reason::InvalidClientMetadata | Reason::UnknownClient => {
                        resolved.unknown_client().stopped(reason)
                    }
                    _ => resolved,
                });
            }
            // A client id nobody registered gets no label and no row.
            let event = match reason {
                Reason::UnknownClient | Reason::InvalidClientMetadata => event.unknown_client(),
                _ if !named_client => event.unknown_client(),
                _ => event,
            };
            state.record(event.stopped(reason));
            return state.refusal(
                StatusCode::BAD_REQUEST,
                Trouble::BadRequest,
                reason,
                &message,
            );
        }
        Err(AuthorizeError::RateLimited) => {
            state.record(event.unknown_client().stopped(Reason::RateLimited));
            return state.refusal(
                StatusCode::TOO_MANY_REQUESTS,
                Trouble::RateLimited,
                Reason::RateLimited,
                "too many sign-in requests from your address; wait a minute",
            );
        }
        Err(AuthorizeError::Server(e)) => {
            tracing::error!(error = %e, detail = ?e, "authorize failed");
            state.record(event.stopped(Reason::ServerError));
            return state.trouble(
                StatusCode::INTERNAL_SERVER_ERROR,
                Trouble::ServerError,
                "the server could not start the sign-in",
            );
        }
    };
    if let Some(resolved) = document_client {
        state.record(resolved);
    }
    state.record(event);
    if let Some(consent) = remembered {
        state.record(consent);
    }
    let mut response = render_step(&state, step);
    // The browser binding secret is the cookie; it is per browser, not per
    // request, and lives as long as the pending request it guards.
    response.headers_mut().append(
        header::SET_COOKIE,
        state.cookie(AUTH_COOKIE).set(&browser, REQUEST_TTL_SECS),
    );
    response
}

/// A step the domain decided: a page, or a 303 to the next address.
fn render_step(state: &OAuthState, step: AuthorizeStep) -> Response {
    match step {
        AuthorizeStep::ShowLogin(pending) => state.html(
            StatusCode::OK,
            pages::login(
                &state.site,
                &LoginForm {
                    request_id: &pending.request_id,
                    csrf: &pending.csrf,
                    client_name: &pending.request.client_name,
                    username: None,
                    error: None,
                },
            ),
        ),
        AuthorizeStep::ShowConsent {
            pending,
            idp_name,
            account,
        } => state.html(
            StatusCode::OK,
            pages::consent(
                &state.site,
                &ConsentView {
                    request_id: &pending.request_id,
                    csrf: &pending.csrf,
                    request: &pending.request,
                    sign_in_at: idp_name,
                    account: account.as_deref(),
                },
            ),
        ),
        AuthorizeStep::GoToIdp { location } | AuthorizeStep::ReturnToClient { location } => {
            see_other(&location)
        }
    }
}

/// A consent step that cannot go on: a page, or the OAuth error body.
fn consent_refused(state: &OAuthState, e: ConsentError) -> Response {
    match e {
        ConsentError::Flow(e) => state.error(e),
        ConsentError::Request(refused) => state.refusal(
            StatusCode::FORBIDDEN,
            Trouble::CannotContinue,
            pending_reason(&refused),
            &refused.to_string(),
        ),
        refused => state.refusal(
            StatusCode::FORBIDDEN,
            Trouble::CannotContinue,
            Reason::RequestExpired,
            &refused.to_string(),
        ),
    }
}

/// Why a pending request could not be continued.
fn pending_reason(e: &PendingError) -> Reason {
    match e {
        PendingError::Flow(e) => e.reason(),
        PendingError::Gone | PendingError::OtherBrowser | PendingError::StaleForm => {
            Reason::RequestExpired
        }
    }
}

async fn login(
    State(state): State<OAuthState>,
    client: ClientAddress,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if state.server.is_proxy() {
        return not_here(&state);
    }
    let (pairs, request) = match bound_form(&state, &headers, &body).await {
        Ok(form) => form,
        Err(page) => return page,
    };
    let (request_id, csrf) = (
        field(&pairs, "request").unwrap_or_default(),
        field(&pairs, "csrf").unwrap_or_default(),
    );
    let username = field(&pairs, "username").unwrap_or_default();
    let password = field(&pairs, "password").unwrap_or_default();
    let event =
        FunnelEvent::new(Step::SignIn, &request.client_id).challenge(&request.code_challenge);
    match state
        .server
        .login(username, password, &client.limit_key())
        .await
    {
        Ok(LoginOutcome::SignedIn { user_id }) => {
            state.record(event.user(&user_id));
            match state.server.start_session(&user_id).await {
                Ok(session) => {
                    tracing::info!(user_id = %user_id, "login succeeded");
                    let mut response = see_other(&format!("/consent?request={request_id}"));
                    response.headers_mut().append(
                        header::SET_COOKIE,
                        state
                            .cookie(SESSION_COOKIE)
                            .set(&session.cookie, session.lifetime_secs),
                    );
                    response
                }
                Err(e) => state.error(e),
            }
        }
        Ok(LoginOutcome::Failed { user_id }) => {
            // Never what was typed: it may be a password, or forged log lines.
            match &user_id {
                Some(user_id) => {
                    tracing::info!(user_id = %user_id, reason = Reason::SignInFailed.code(), "login failed: wrong password")
                }
                None => tracing::info!(
                    reason = Reason::SignInFailed.code(),
                    "login failed: unknown user name"
                ),
            }
            state.record(event.stopped(Reason::SignInFailed));
            state.html(
                StatusCode::UNAUTHORIZED,
                pages::login(
                    &state.site,
                    &LoginForm {
                        request_id,
                        csrf,
                        client_name: &request.client_name,
                        username: Some(username),
                        error: Some("Wrong user name or password."),
                    },
                ),
            )
        }
        Err(LoginError::Flow(e)) => {
            state.record(event.stopped(e.reason()));
            state.error(e)
        }
        Err(refused) => {
            state.record(event.stopped(Reason::RateLimited));
            let mut response = state.trouble(
                StatusCode::TOO_MANY_REQUESTS,
                Trouble::RateLimited,
                &refused.to_string(),
            );
            if let Some(secs) = refused.retry_after_secs()
                && let Ok(v) = HeaderValue::from_str(&secs.to_string())
            {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
    }
}

/// Proxy mode has no password form.
fn not_here(state: &OAuthState) -> Response {
    state.trouble(
        StatusCode::NOT_FOUND,
        Trouble::CannotContinue,
        "sign-in happens at the identity provider, not here",
    )
}

fn request_param(query: Option<String>) -> String {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "request")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// `GET /login?request=ID`: the sign-in form of a pending request of this
/// browser (where "not you? sign out" lands).
async fn login_page(
    State(state): State<OAuthState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if state.server.is_proxy() {
        return not_here(&state);
    }
    let request_id = request_param(query);
    let browser = state.cookie(AUTH_COOKIE).read(&headers).unwrap_or_default();
    match state.server.login_step(&request_id, &browser).await {
        Ok(pending) => render_step(&state, AuthorizeStep::ShowLogin(pending)),
        Err(refused) => state.trouble(
            StatusCode::FORBIDDEN,
            Trouble::CannotContinue,
            &refused.to_string(),
        ),
    }
}

/// `POST /logout` ("not you? sign out" on the consent page): a form of a
/// pending request, checked like the others (browser binding and CSRF), so
/// no other site can sign a user out. Ends the login session, clears its
/// cookie and shows the sign-in form of the same request.
async fn logout(State(state): State<OAuthState>, headers: HeaderMap, body: Bytes) -> Response {
    // Proxy mode's consent page names no account and has no sign-in page to return to.
    if state.server.is_proxy() {
        return not_here(&state);
    }
    let pairs = match bound_form(&state, &headers, &body).await {
        Ok((pairs, _)) => pairs,
        Err(page) => return page,
    };
    let request_id = field(&pairs, "request").unwrap_or_default();
    let session = state.cookie(SESSION_COOKIE).read(&headers);
    if let Err(e) = state.server.end_session(session.as_deref()).await {
        return state.error(e);
    }
    tracing::info!("login session ended by the user");
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("request", request_id)
        .finish();
    let mut response = see_other(&format!("/login?{query}"));
    response
        .headers_mut()
        .append(header::SET_COOKIE, state.cookie(SESSION_COOKIE).set("", 0));
    response
}

async fn consent_page(
    State(state): State<OAuthState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let request_id = request_param(query);
    let browser = state.cookie(AUTH_COOKIE).read(&headers).unwrap_or_default();
    let session = state.cookie(SESSION_COOKIE).read(&headers);
    match state
        .server
        .consent_step(&request_id, &browser, session.as_deref())
        .await
    {
        Ok(step) => render_step(&state, step),
        Err(e) => consent_refused(&state, e),
    }
}

async fn consent_post(
    State(state): State<OAuthState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let session = state.cookie(SESSION_COOKIE).read(&headers);
    // Local mode: the session is looked up while the form is checked (two
    // reads, one round trip's wait); proxy mode signs in after this page.
    let (form, signed_in) = tokio::join!(bound_form(&state, &headers, &body), async {
        if state.server.is_proxy() {
            None
        } else {
            state.server.signed_in_user(session.as_deref()).await
        }
    });
    let (pairs, request) = match form {
        Ok(form) => form,
        Err(page) => return page,
    };
    let request_id = field(&pairs, "request").unwrap_or_default();
    let consent = if field(&pairs, "decision") == Some("approve") {
        Consent::Approve {
            remember: if field(&pairs, "remember") == Some("1") {
                RememberConsent::Remember
            } else {
                RememberConsent::ThisTimeOnly
            },
        }
    } else {
        Consent::Deny
    };
    let browser = state.cookie(AUTH_COOKIE).read(&headers).unwrap_or_default();
    let event =
        FunnelEvent::new(Step::Consent, &request.client_id).challenge(&request.code_challenge);
    let event = match &consent {
        Consent::Deny => event.stopped(Reason::ConsentDenied),
        Consent::Approve { .. } => event,
    };
    match state
        .server
        .answer_consent(request_id, &browser, signed_in, consent)
        .await
    {
        Ok(step) => {
            state.record(event);
            render_step(&state, step)
        }
        Err(e) => {
            let reason = match &e {
                ConsentError::Flow(e) => e.reason(),
                ConsentError::Request(e) => pending_reason(e),
                ConsentError::NotSignedIn => Reason::RequestExpired,
            };
            state.record(event.stopped(reason));
            consent_refused(&state, e)
        }
    }
}

/// Proxy mode: the identity provider sends the browser back here.
async fn callback(
    State(state): State<OAuthState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let Ok(pairs) = form_pairs(query.as_bytes()) else {
        return state.trouble(
            StatusCode::BAD_REQUEST,
            Trouble::IdentityProviderDown,
            "the identity provider's answer is malformed",
        );
    };
    let Some(upstream_state) = field(&pairs, "state") else {
        return state.trouble(
            StatusCode::BAD_REQUEST,
            Trouble::CannotContinue,
            "the identity provider's answer has no state",
        );
    };
    let browser = state.cookie(AUTH_COOKIE).read(&headers).unwrap_or_default();
    // The domain records the step (it knows the attempt).
    let result = state
        .server
        .finish_idp_login(
            upstream_state,
            &browser,
            field(&pairs, "code"),
            field(&pairs, "error"),
        )
        .await;
    match result {
        Ok(CallbackOutcome { location, user_id }) => {
            let mut response = see_other(&location);
            if let Some(user_id) = user_id {
                match state.server.start_session(&user_id).await {
                    Ok(session) => {
                        response.headers_mut().append(
                            header::SET_COOKIE,
                            state
                                .cookie(SESSION_COOKIE)
                                .set(&session.cookie, session.lifetime_secs),
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "no session after upstream sign-in"),
                }
            }
            response
        }
        Err(CallbackError::Flow(OAuthError::Server(detail))) => {
            tracing::error!(detail = %detail, "upstream callback failed");
            state.trouble(
                StatusCode::INTERNAL_SERVER_ERROR,
                Trouble::ServerError,
                "the server could not finish the sign-in",
            )
        }
        Err(CallbackError::Unreachable) => state.trouble(
            StatusCode::BAD_GATEWAY,
            Trouble::IdentityProviderDown,
            &CallbackError::Unreachable.to_string(),
        ),
        Err(e) => {
            let status = match e {
                CallbackError::WrongBrowser
                | CallbackError::DifferentUser
                | CallbackError::NotAllowed => StatusCode::FORBIDDEN,
                CallbackError::Conflict => StatusCode::CONFLICT,
                _ => StatusCode::BAD_REQUEST,
            };
            state.refusal(status, Trouble::CannotContinue, e.reason(), &e.to_string())
        }
    }
}

async fn token(State(state): State<OAuthState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let pairs = form_pairs(&body)?;
        let creds = client_credentials(&headers, &pairs)?;
        match field(&pairs, "grant_type") {
            Some("authorization_code") => {
                state
                    .server
                    .redeem_code(
                        &creds,
                        field(&pairs, "code"),
                        field(&pairs, "code_verifier"),
                        field(&pairs, "redirect_uri"),
                        field(&pairs, "resource"),
                    )
                    .await
            }
            Some("refresh_token") => {
                state
                    .server
                    .refresh(
                        &creds,
                        field(&pairs, "refresh_token"),
                        field(&pairs, "scope"),
                        field(&pairs, "resource"),
                    )
                    .await
            }
            Some(GRANT_JWT_BEARER) => {
                state
                    .server
                    .identity_assertion_grant(
                        &creds,
                        field(&pairs, "assertion"),
                        field(&pairs, "scope"),
                        field(&pairs, "resource"),
                    )
                    .await
            }
            Some("client_credentials") => {
                state
                    .server
                    .client_credentials_grant(
                        &creds,
                        field(&pairs, "scope"),
                        field(&pairs, "resource"),
                    )
                    .await
            }
            Some(other) => Err(OAuthError::UnsupportedGrantType(format!(
                "grant_type {other} is not supported"
            ))),
            None => Err(OAuthError::InvalidRequest(
                "grant_type is missing".to_owned(),
            )),
        }
    }
    .await;
    match result {
        Ok(response) => no_store(Json(response).into_response()),
        Err(e) => state.error(e),
    }
}

async fn revoke(State(state): State<OAuthState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let pairs = form_pairs(&body)?;
        let creds = client_credentials(&headers, &pairs)?;
        let token = field(&pairs, "token")
            .ok_or_else(|| OAuthError::InvalidRequest("token is missing".to_owned()))?;
        state.server.revoke(&creds, token).await
    }
    .await;
    match result {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => state.error(e),
    }
}

async fn introspect(State(state): State<OAuthState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let pairs = form_pairs(&body)?;
        let creds = client_credentials(&headers, &pairs)?;
        state
            .server
            .introspect(&creds, field(&pairs, "token"), &state.verifier)
            .await
    }
    .await;
    match result {
        Ok(answer) => no_store(Json(answer).into_response()),
        Err(e) => state.error(e),
    }
}
