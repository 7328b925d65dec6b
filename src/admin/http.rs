//! The admin console's HTTP edge (`/admin...`): who is asking (the login
//! session cookie of the sign-in pages, an admin's), the CSRF check of every
//! POST, and the pages. Anonymous: a GET goes to the sign-in form, a POST
//! gets 401; a signed-in non-admin gets 403. No GET changes anything.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::Response,
    routing::{get, post},
};

use super::{Actor, Admin, AdminError, pages};
use crate::branding::Site;
use crate::clock::SharedClock;
use crate::constant_time::ct_eq;
use crate::oauth::{
    crypto::{Sealer, random_token, sha256_b64},
    flow::{AuthorizationServer, LoginOutcome},
    front::{BrowserCookie, field, form_pairs, see_other},
};
use crate::server::ClientAddress;
use crate::store::UserRecord;
use crate::telemetry::metrics::Metrics;
use crate::upstream::Gateway;

/// The login session cookie the sign-in pages set (one session for both).
pub const SESSION_COOKIE: &str = "mcpgate_session";
// The browser binding of a sign-in at the identity provider (`/callback` reads it).
use crate::oauth::http::AUTH_COOKIE as BROWSER_COOKIE;
/// Binds the console's sign-in form to the browser that loaded it.
const LOGIN_COOKIE: &str = "mcpgate_admin_login";

/// What the console needs: the actions, and the authorization server for
/// sign-in and sessions.
#[derive(Clone)]
pub struct ConsoleState {
    pub admin: Admin,
    pub server: Arc<AuthorizationServer>,
    pub site: Arc<Site>,
    pub secure_cookies: bool,
    /// Seals new signing keys (key rotation).
    pub sealer: Arc<Sealer>,
    pub access_token_ttl_secs: i64,
    pub gateway: Option<Arc<Gateway>>,
    /// `user_auth` upstreams: users' connections (shown and revoked on the user page).
    pub user_auth: Option<Arc<crate::upstream::user_auth::UserAuth>>,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
}

pub fn routes(state: ConsoleState) -> Router {
    Router::new()
        .route("/admin", get(users_page))
        .route("/admin/user", get(user_page))
        .route("/admin/clients", get(clients_page))
        .route("/admin/sessions", get(sessions_page))
        .route("/admin/keys", get(keys_page))
        .route("/admin/upstreams", get(upstreams_page))
        .route("/admin/funnel", get(funnel_page))
        .route("/admin/login", get(sign_in_page).post(sign_in))
        .route("/admin/logout", post(sign_out))
        .route("/admin/act", post(act))
        .with_state(state)
}

/// A signed-in admin: who, and the CSRF token of their forms.
struct Viewer {
    user: UserRecord,
    csrf: String,
}

impl Viewer {
    fn actor(&self) -> Actor {
        Actor::console(&self.user.username)
    }
}

/// The CSRF token of an admin's forms: only a holder of the (HttpOnly)
/// session cookie can know it.
fn csrf_for(session: &str) -> String {
    sha256_b64(&format!("admin-csrf|{session}"))
}

impl ConsoleState {
    fn cookie(&self, base: &'static str) -> BrowserCookie {
        BrowserCookie {
            base,
            secure: self.secure_cookies,
        }
    }

    fn page(&self, status: StatusCode, html: String) -> Response {
        self.site.respond(status, html)
    }

    fn problem(
        &self,
        status: StatusCode,
        title: &str,
        message: &str,
        back: Option<&str>,
    ) -> Response {
        self.page(status, pages::problem(&self.site, title, message, back))
    }

    /// The admin behind this request, or the answer to send instead:
    /// anonymous GETs go to sign in, anonymous POSTs get 401, non-admins 403.
    async fn viewer(&self, headers: &HeaderMap, is_get: bool) -> Result<Viewer, Response> {
        let session = self.cookie(SESSION_COOKIE).read(headers);
        let user_id = match &session {
            Some(cookie) => self.server.session_user(cookie).await.ok().flatten(),
            None => None,
        };
        let (Some(session), Some(user_id)) = (session, user_id) else {
            return Err(if is_get {
                see_other("/admin/login")
            } else {
                self.problem(
                    StatusCode::UNAUTHORIZED,
                    "Sign in first",
                    "You are not signed in (or your session ended).",
                    Some("/admin/login"),
                )
            });
        };
        let user = match self.admin.store.find_user(&user_id).await {
            Ok(Some(user)) => user,
            Ok(None) => return Err(see_other("/admin/login")),
            Err(e) => return Err(self.failed(&AdminError::from(e))),
        };
        if !user.is_admin || user.disabled_at.is_some() {
            tracing::warn!(target: "audit", who = %user.username, action = "console.open", object = "/admin", outcome = "forbidden", "non-admin refused");
            return Err(self.problem(
                StatusCode::FORBIDDEN,
                "Not an admin",
                "Your account may not use the admin console. Ask an admin to give you the role (mcpgate users set-admin).",
                None,
            ));
        }
        Ok(Viewer {
            csrf: csrf_for(&session),
            user,
        })
    }

    fn failed(&self, e: &AdminError) -> Response {
        let status = match e {
            AdminError::NoUser(_)
            | AdminError::NoClient(_)
            | AdminError::NoGrant { .. }
            | AdminError::NoFamily(_)
            | AdminError::NoSession(_)
            | AdminError::NoClientGrants(_)
            | AdminError::NoConnection { .. } => StatusCode::NOT_FOUND,
            AdminError::BadName | AdminError::BadPassword | AdminError::OwnAccount => {
                StatusCode::BAD_REQUEST
            }
            AdminError::Store(crate::store::StoreError::Conflict(_)) => StatusCode::CONFLICT,
            AdminError::Hash
            | AdminError::Keys(_)
            | AdminError::Store(_)
            | AdminError::UserAuth(_) => {
                tracing::error!(error = %e, "admin console failure");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match status {
            StatusCode::INTERNAL_SERVER_ERROR => {
                "Something went wrong on the server; the log says what.".to_owned()
            }
            _ => e.to_string(),
        };
        self.problem(status, "That did not work", &message, Some("/admin"))
    }
}

/// `?done=` names what the last action did; only these words are shown.
fn done_message(query: &[(String, String)]) -> Option<&'static str> {
    Some(match field(query, "done")? {
        "user.add" => "User added.",
        "user.remove" => {
            "User removed; their sessions and consents are gone and their refresh tokens revoked."
        }
        "user.reset_password" => {
            "Password set; their sessions, remembered consents and refresh tokens ended."
        }
        "user.disable" => {
            "User disabled; their sessions ended and their refresh tokens are revoked."
        }
        "user.enable" => "User enabled.",
        "user.grant_admin" => "The user may now use this console.",
        "user.revoke_admin" => "The user may no longer use this console.",
        "client.remove" => "Client removed; its consents are gone and its refresh tokens revoked.",
        "client.revoke_grants" => {
            "The client's remembered consents are gone and its refresh tokens revoked."
        }
        "session.end" => "MCP session ended on every replica; its client gets 404 from now on.",
        "consent.revoke" => "Consent revoked with the refresh tokens it produced.",
        "grant.revoke" => "Grant revoked.",
        "key.rotate" => "New signing key added; it signs in a minute.",
        _ => return None,
    })
}

fn query_pairs(query: Option<String>) -> Vec<(String, String)> {
    form_pairs(query.unwrap_or_default().as_bytes()).unwrap_or_default()
}

/// One console page: the viewer check, the page's query, then `load` (its
/// store reads, rendered on the frame), or the failure page.
async fn console_page(
    state: &ConsoleState,
    headers: &HeaderMap,
    query: Option<String>,
    current: &'static str,
    load: impl AsyncFnOnce(&pages::Frame<'_>, &[(String, String)]) -> Result<String, AdminError>,
) -> Response {
    let viewer = match state.viewer(headers, true).await {
        Ok(viewer) => viewer,
        Err(answer) => return answer,
    };
    let query = query_pairs(query);
    let frame = pages::Frame {
        site: &state.site,
        admin: &viewer.user.username,
        csrf: &viewer.csrf,
        current,
        done: done_message(&query),
    };
    match load(&frame, &query).await {
        Ok(html) => state.page(StatusCode::OK, html),
        Err(e) => state.failed(&e),
    }
}

async fn users_page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    console_page(&state, &headers, q, "/admin", async |frame, _| {
        Ok(pages::users(frame, &state.admin.store.list_users().await?))
    })
    .await
}

async fn user_page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    console_page(&state, &headers, q, "/admin", async |frame, query| {
        let store = &state.admin.store;
        let id = field(query, "id").unwrap_or_default();
        let user = store
            .find_user(id)
            .await?
            .ok_or_else(|| AdminError::NoUser(id.to_owned()))?;
        let consents = store.consents_of(&user.id).await?;
        let grants = store.grants_of(&user.id, state.clock.now()).await?;
        let connections = match &state.user_auth {
            Some(auth) => Some(
                auth.connections(&user.id)
                    .await
                    .map_err(|e| AdminError::UserAuth(e.to_string()))?,
            ),
            None => None,
        };
        Ok(pages::user(
            frame,
            &user,
            &consents,
            &grants,
            connections.as_deref(),
        ))
    })
    .await
}

async fn clients_page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    console_page(&state, &headers, q, "/admin/clients", async |frame, _| {
        let clients = state
            .admin
            .clients(state.server.configured_clients(), state.clock.now())
            .await?;
        Ok(pages::clients(frame, &clients))
    })
    .await
}

async fn sessions_page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    console_page(&state, &headers, q, "/admin/sessions", async |frame, _| {
        let now = state.clock.now();
        let sessions = state.admin.store.live_mcp_sessions(now, 500).await?;
        Ok(pages::sessions(frame, &sessions))
    })
    .await
}

async fn keys_page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    console_page(&state, &headers, q, "/admin/keys", async |frame, _| {
        let keys = state.admin.store.all_signing_keys().await?;
        Ok(pages::keys(frame, &keys, state.clock.now()))
    })
    .await
}

async fn funnel_page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    console_page(
        &state,
        &headers,
        q,
        "/admin/funnel",
        async |frame, query| {
            let (window, secs, bucket) = super::funnel::window(field(query, "since"));
            let now = state.clock.now();
            let attempts = state
                .admin
                .store
                .funnel_attempts(None, now - secs, super::funnel::MAX_ATTEMPTS)
                .await?;
            let summary = super::funnel::summarize(&attempts, now, secs, bucket);
            Ok(pages::funnel(frame, &summary, window, bucket))
        },
    )
    .await
}

async fn upstreams_page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    console_page(&state, &headers, q, "/admin/upstreams", async |frame, _| {
        let rows: Option<Vec<pages::UpstreamRow>> = state.gateway.as_ref().map(|gateway| {
            gateway
                .health()
                .into_iter()
                .map(|health| {
                    let (calls, errors) = state.metrics.upstream_call_counts(&health.name);
                    pages::UpstreamRow {
                        health,
                        calls,
                        errors,
                    }
                })
                .collect()
        });
        Ok(pages::upstreams(frame, rows.as_deref()))
    })
    .await
}

/// `GET /admin/login`: the form, bound to this browser by a cookie.
async fn sign_in_page(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    let cookie = state.cookie(LOGIN_COOKIE);
    let (binding, fresh) = match cookie.read(&headers).filter(|v| v.len() == 43) {
        Some(v) => (v, false),
        None => match random_token(32) {
            Ok(v) => (v, true),
            Err(_) => {
                return state.problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Try again",
                    "No randomness for the form.",
                    None,
                );
            }
        },
    };
    let csrf = sha256_b64(&format!("admin-login|{binding}"));
    let html = match state.server.upstream_name() {
        Some(provider) => pages::sign_in_upstream(
            &state.site,
            &csrf,
            &format!("your identity provider ({provider})"),
        ),
        None => pages::sign_in(&state.site, &csrf, None),
    };
    let mut response = state.page(StatusCode::OK, html);
    if fresh {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie.set(&binding, 3600));
    }
    response
}

/// `POST /admin/login`: the password check of the sign-in pages (same
/// limits), then a login session; non-admins get one too, and the 403 page.
async fn sign_in(
    State(state): State<ConsoleState>,
    client: ClientAddress,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs = form_pairs(&body).unwrap_or_default();
    let binding = state
        .cookie(LOGIN_COOKIE)
        .read(&headers)
        .unwrap_or_default();
    let expected = sha256_b64(&format!("admin-login|{binding}"));
    let csrf = field(&pairs, "csrf").unwrap_or_default();
    if binding.is_empty() || !ct_eq(csrf, &expected) {
        return state.problem(
            StatusCode::FORBIDDEN,
            "Form expired",
            "This form was not loaded in this browser, or it expired. Load the sign-in page again.",
            Some("/admin/login"),
        );
    }
    if state.server.is_proxy() {
        return sign_in_upstream(&state, &headers).await;
    }
    let username = field(&pairs, "username").unwrap_or_default();
    let password = field(&pairs, "password").unwrap_or_default();
    match state
        .server
        .login(username, password, &client.limit_key())
        .await
    {
        Ok(LoginOutcome::SignedIn { user_id }) => {
            match state.server.start_session(&user_id).await {
                Ok(session) => {
                    tracing::info!(target: "audit", who = %user_id, action = "console.sign_in", object = "/admin", outcome = "ok", "admin console sign-in");
                    let mut response = see_other("/admin");
                    let h = response.headers_mut();
                    h.append(
                        header::SET_COOKIE,
                        state
                            .cookie(SESSION_COOKIE)
                            .set(&session.cookie, session.lifetime_secs),
                    );
                    h.append(header::SET_COOKIE, state.cookie(LOGIN_COOKIE).set("", 0));
                    response
                }
                Err(e) => state.failed(&AdminError::Store(crate::store::StoreError::Unavailable(
                    e.to_string(),
                ))),
            }
        }
        Ok(LoginOutcome::Failed { user_id }) => {
            tracing::warn!(target: "audit", who = user_id.as_deref().unwrap_or("-"), action = "console.sign_in", object = "/admin", outcome = "bad_credentials", "admin console sign-in failed");
            state.page(
                StatusCode::UNAUTHORIZED,
                pages::sign_in(
                    &state.site,
                    &expected,
                    Some("That user name and password do not match."),
                ),
            )
        }
        Err(e) => {
            let mut response = state.problem(
                StatusCode::TOO_MANY_REQUESTS,
                "Wait a moment",
                &e.to_string(),
                Some("/admin/login"),
            );
            if let Some(secs) = e.retry_after_secs()
                && let Ok(v) = secs.to_string().parse()
            {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
    }
}

/// Proxy mode: the sign-in form was this browser's; send it to the identity
/// provider with a single-use state bound to it (the cookie `/callback`
/// checks, kept when the browser has one for a client's sign-in).
async fn sign_in_upstream(state: &ConsoleState, headers: &HeaderMap) -> Response {
    let cookie = state.cookie(BROWSER_COOKIE);
    let browser = match cookie.read(headers).filter(|v| v.len() == 43) {
        Some(v) => Ok(v),
        None => random_token(32),
    };
    let started = match browser {
        Ok(browser) => state
            .server
            .begin_console_login(&browser)
            .await
            .map(|to| (to, browser)),
        Err(e) => Err(e.into()),
    };
    match started {
        Ok((to, browser)) => {
            let mut response = see_other(&to);
            let h = response.headers_mut();
            h.append(
                header::SET_COOKIE,
                cookie.set(&browser, crate::oauth::flow::REQUEST_TTL_SECS),
            );
            h.append(header::SET_COOKIE, state.cookie(LOGIN_COOKIE).set("", 0));
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "console sign-in not started");
            state.problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Try again",
                "The sign-in at the identity provider could not be started; the log says why.",
                Some("/admin/login"),
            )
        }
    }
}

/// Check an admin's POST: signed in, admin, and the CSRF token of their session.
async fn checked_form(
    state: &ConsoleState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Viewer, Vec<(String, String)>), Response> {
    let viewer = state.viewer(headers, false).await?;
    let Ok(pairs) = form_pairs(body) else {
        return Err(state.problem(
            StatusCode::BAD_REQUEST,
            "Malformed form",
            "A field appears twice.",
            Some("/admin"),
        ));
    };
    if !ct_eq(field(&pairs, "csrf").unwrap_or_default(), &viewer.csrf) {
        tracing::warn!(target: "audit", who = %viewer.user.username, action = field(&pairs, "action").unwrap_or("-"), object = "-", outcome = "csrf_refused", "admin form without its CSRF token");
        return Err(state.problem(
            StatusCode::FORBIDDEN,
            "Form expired",
            "This form did not come from your console session. Load the page again.",
            Some("/admin"),
        ));
    }
    Ok((viewer, pairs))
}

async fn sign_out(State(state): State<ConsoleState>, headers: HeaderMap, body: Bytes) -> Response {
    let (viewer, _) = match checked_form(&state, &headers, &body).await {
        Ok(form) => form,
        Err(answer) => return answer,
    };
    let session = state.cookie(SESSION_COOKIE).read(&headers);
    if let Err(e) = state.server.end_session(session.as_deref()).await {
        return state.failed(&AdminError::Store(crate::store::StoreError::Unavailable(
            e.to_string(),
        )));
    }
    tracing::info!(target: "audit", who = %viewer.user.username, action = "console.sign_out", object = "/admin", outcome = "ok", "admin console sign-out");
    let mut response = see_other("/admin/login");
    response
        .headers_mut()
        .append(header::SET_COOKIE, state.cookie(SESSION_COOKIE).set("", 0));
    response
}

/// `POST /admin/act`: one action, named by `action`, then back to its page.
async fn act(State(state): State<ConsoleState>, headers: HeaderMap, body: Bytes) -> Response {
    let (viewer, pairs) = match checked_form(&state, &headers, &body).await {
        Ok(form) => form,
        Err(answer) => return answer,
    };
    let actor = viewer.actor();
    let admin = &state.admin;
    let get = |name: &str| field(&pairs, name).unwrap_or_default().to_owned();
    let user = get("user");
    let user_page = format!(
        "/admin/user?id={}",
        url::form_urlencoded::byte_serialize(user.as_bytes()).collect::<String>()
    );
    let action = get("action");
    let (result, back): (Result<(), AdminError>, String) = match action.as_str() {
        "user.add" => (
            admin
                .add_user(
                    &actor,
                    &get("username"),
                    get("password"),
                    field(&pairs, "is_admin") == Some("1"),
                )
                .await
                .map(|_| ()),
            "/admin".to_owned(),
        ),
        "user.remove" => (admin.remove_user(&actor, &user).await, "/admin".to_owned()),
        "user.reset_password" => (
            admin.reset_password(&actor, &user, get("password")).await,
            user_page,
        ),
        "user.disable" => (admin.set_disabled(&actor, &user, true).await, user_page),
        "user.enable" => (admin.set_disabled(&actor, &user, false).await, user_page),
        "user.grant_admin" => (admin.set_admin(&actor, &user, true).await, user_page),
        "user.revoke_admin" => (admin.set_admin(&actor, &user, false).await, user_page),
        "client.remove" => (
            admin.remove_client(&actor, &get("client_id")).await,
            "/admin/clients".to_owned(),
        ),
        "client.revoke_grants" => (
            admin
                .revoke_client_grants(&actor, &get("client_id"))
                .await
                .map(|_| ()),
            "/admin/clients".to_owned(),
        ),
        "session.end" => (
            admin
                .end_mcp_session(&actor, &get("session"), state.clock.now())
                .await,
            "/admin/sessions".to_owned(),
        ),
        "consent.revoke" => (
            admin
                .revoke_consent(&actor, &user, &get("client_id"))
                .await
                .map(|_| ()),
            user_page,
        ),
        "grant.revoke" => (
            admin
                .revoke_grant(&actor, &get("family"), state.clock.now())
                .await
                .map(|_| ()),
            user_page,
        ),
        "connection.revoke" => match &state.user_auth {
            Some(auth) => (
                admin
                    .revoke_connection(&actor, auth, &user, &get("upstream"))
                    .await,
                user_page,
            ),
            None => (
                Err(AdminError::NoConnection {
                    user: user.clone(),
                    upstream: get("upstream"),
                }),
                user_page,
            ),
        },
        "key.rotate" => (
            admin
                .rotate_key(
                    &actor,
                    &state.sealer,
                    state.access_token_ttl_secs,
                    state.clock.now(),
                )
                .await
                .map(|_| ()),
            "/admin/keys".to_owned(),
        ),
        _ => {
            return state.problem(
                StatusCode::BAD_REQUEST,
                "Unknown action",
                "The console has no such action.",
                Some("/admin"),
            );
        }
    };
    match result {
        Ok(()) => {
            let sep = if back.contains('?') { '&' } else { '?' };
            see_other(&format!("{back}{sep}done={action}"))
        }
        Err(e) => state.failed(&e),
    }
}
