//! The browser side of `user_auth`: `GET /connect/{upstream}?e=` (the URL
//! elicitation's link), `GET /connect/callback` (the upstream
//! authorization server's answer) and mcpgate's client metadata document.
//! Parses and renders only; [`UserAuth`] decides.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;

use super::user_auth::{UserAuth, UserAuthError};
use crate::{
    branding::{Page, Site, escape},
    clock::SharedClock,
    oauth::{crypto::sha256_b64, front::BrowserCookie, pages, pages::Trouble},
    store::Store,
};

/// mcpgate's login session (the same cookie `oauth::http` sets).
const SESSION_COOKIE: &str = "mcpgate_session";
/// Binds a connect attempt to the browser that started it.
const CONNECT_COOKIE: &str = "mcpgate_connect";

#[derive(Clone)]
pub struct ConnectPages {
    pub auth: Arc<UserAuth>,
    pub store: Store,
    pub clock: SharedClock,
    pub site: Arc<Site>,
    pub secure_cookies: bool,
}

pub fn routes(state: ConnectPages) -> Router {
    Router::new()
        .route("/connect/client-metadata.json", get(client_metadata))
        .route("/connect/callback", get(callback))
        .route("/connect/{upstream}", get(start))
        .with_state(state)
}

impl ConnectPages {
    fn cookie(&self, base: &'static str) -> BrowserCookie {
        BrowserCookie {
            base,
            secure: self.secure_cookies,
        }
    }

    /// The user of this browser's live mcpgate login session.
    async fn session_user(&self, headers: &HeaderMap) -> Option<String> {
        let cookie = self.cookie(SESSION_COOKIE).read(headers)?;
        self.store
            .session_user(&sha256_b64(&cookie), self.clock.now())
            .await
            .ok()
            .flatten()
            .map(|u| u.id)
    }

    fn page(&self, status: StatusCode, title: &str, body: String) -> Response {
        self.site.respond(
            status,
            self.site.document(&Page {
                title,
                body,
                wide: false,
            }),
        )
    }

    fn trouble(&self, err: &UserAuthError) -> Response {
        let (status, trouble) = match err {
            UserAuthError::WrongUser => (StatusCode::FORBIDDEN, Trouble::CannotContinue),
            UserAuthError::BadLink | UserAuthError::BadAttempt | UserAuthError::WrongIssuer => {
                (StatusCode::BAD_REQUEST, Trouble::CannotContinue)
            }
            UserAuthError::UnknownUpstream(_) => (StatusCode::NOT_FOUND, Trouble::BadRequest),
            UserAuthError::Discovery(_)
            | UserAuthError::Registration(_)
            | UserAuthError::Refused(_)
            | UserAuthError::ClientRejected(_)
            | UserAuthError::Unreachable(_) => {
                (StatusCode::BAD_GATEWAY, Trouble::IdentityProviderDown)
            }
            UserAuthError::Store(_)
            | UserAuthError::Crypto(_)
            | UserAuthError::RefreshStuck
            | UserAuthError::Seal(_) => (StatusCode::INTERNAL_SERVER_ERROR, Trouble::ServerError),
        };
        if status.is_server_error() {
            tracing::warn!(error = %err, "connecting an upstream account failed");
        } else {
            tracing::info!(error = %err, "connect page refused");
        }
        self.site
            .respond(status, pages::error(&self.site, trouble, &err.to_string()))
    }
}

async fn client_metadata(State(state): State<ConnectPages>) -> Response {
    Json(state.auth.client_metadata()).into_response()
}

#[derive(Deserialize)]
struct StartQuery {
    e: Option<String>,
}

async fn start(
    State(state): State<ConnectPages>,
    Path(upstream): Path<String>,
    Query(query): Query<StartQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(e) = query.e else {
        return state.trouble(&UserAuthError::BadLink);
    };
    let Some(user) = state.session_user(&headers).await else {
        return state.page(
            StatusCode::UNAUTHORIZED,
            "Sign in to mcpgate first",
            format!(
                "<div class=\"notice error\" role=\"alert\"><p>This browser is not signed in to {}.</p></div><p>Sign in to it in this browser (connect your MCP client again, or open its admin console), then open the link again.</p>",
                escape(state.site.server_name())
            ),
        );
    };
    let browser = state.cookie(CONNECT_COOKIE).read(&headers);
    match state
        .auth
        .begin(&upstream, &e, &user, browser.as_deref())
        .await
    {
        Ok(redirect) => {
            let mut response = (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, redirect.location)],
            )
                .into_response();
            response.headers_mut().append(
                header::SET_COOKIE,
                state.cookie(CONNECT_COOKIE).set(&redirect.browser, 600),
            );
            response
        }
        Err(err) => state.trouble(&err),
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// RFC 9207.
    iss: Option<String>,
}

async fn callback(
    State(state): State<ConnectPages>,
    Query(query): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let browser = state
        .cookie(CONNECT_COOKIE)
        .read(&headers)
        .unwrap_or_default();
    let user = state.session_user(&headers).await;
    let Some(attempt_state) = query.state else {
        return state.trouble(&UserAuthError::BadAttempt);
    };
    if let Some(error) = query.error {
        // The attempt is used up; say what the server said.
        let upstream = match state
            .auth
            .abandon(&attempt_state, &browser, user.as_deref())
            .await
        {
            Ok(u) => u,
            Err(err) => return state.trouble(&err),
        };
        let said: String = match query.error_description {
            Some(d) => format!("{error}: {d}"),
            None => error,
        }
        .chars()
        .filter(|c| !crate::visible_text::is_hidden_or_control(*c))
        .take(300)
        .collect();
        return state.page(
            StatusCode::FORBIDDEN,
            "Not connected",
            format!(
                "<div class=\"notice error\" role=\"alert\"><p>{} did not connect your account: {}</p></div><p>Call the tool again for a new link if you want to try again.</p>",
                escape(&upstream),
                escape(&said)
            ),
        );
    }
    let Some(code) = query.code else {
        return state.trouble(&UserAuthError::BadAttempt);
    };
    match state
        .auth
        .finish(
            &attempt_state,
            &code,
            query.iss.as_deref(),
            &browser,
            user.as_deref(),
        )
        .await
    {
        Ok(upstream) => state.page(
            StatusCode::OK,
            "Connected",
            format!(
                "<div class=\"notice\" role=\"status\"><p>Your account at <strong>{}</strong> is connected.</p></div><p>You can close this page and go back to your app; retry what you asked for.</p>",
                escape(&upstream)
            ),
        ),
        Err(err) => state.trouble(&err),
    }
}
