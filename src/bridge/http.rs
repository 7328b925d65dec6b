//! HTTP edge of `bridge` mode: parse, call [`Bridge`], map errors to RFC
//! status codes and JSON bodies (pages for the browser steps, all through
//! [`Site::respond`] and so with its security headers).

use std::sync::Arc;

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{FromRef, Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};

use super::{Bridge, BridgeError, ConsentAnswer, REQUEST_TTL_SECS, Relayed};
use crate::branding::Site;
use crate::oauth::front::{
    self, BrowserCookie, MAX_REGISTRATION_BYTES, field, form_pairs, no_store, see_other,
};
use crate::oauth::pages::{self, Trouble};
use crate::server::ClientAddress;

/// The bridge and the pages' look; handlers that render no page take only the bridge.
#[derive(Clone)]
struct BridgeFront {
    bridge: Arc<Bridge>,
    site: Arc<Site>,
}

impl FromRef<BridgeFront> for Arc<Site> {
    fn from_ref(front: &BridgeFront) -> Arc<Site> {
        front.site.clone()
    }
}

impl FromRef<BridgeFront> for Arc<Bridge> {
    fn from_ref(front: &BridgeFront) -> Arc<Bridge> {
        front.bridge.clone()
    }
}

pub fn routes(bridge: Arc<Bridge>, site: Arc<Site>) -> Router {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/.well-known/oauth-authorization-server/mcp", get(metadata))
        .route("/authorize", get(authorize))
        .route("/consent", post(consent))
        .route("/token", post(token))
        .route("/register", post(register))
        .route("/callback", get(shared_callback))
        .route("/callback/{key}", get(callback))
        .with_state(BridgeFront { bridge, site })
}

/// Binds a pending authorization to the browser that started it; it lives
/// as long as the request it binds.
fn browser_cookie(bridge: &Bridge) -> BrowserCookie {
    BrowserCookie {
        base: "mcpgate_bridge",
        secure: bridge.secure_cookies(),
    }
}

fn error(bridge: &Bridge, err: BridgeError) -> Response {
    let status = match &err {
        BridgeError::RateLimited | BridgeError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        BridgeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        BridgeError::Forbidden(_) => StatusCode::FORBIDDEN,
        BridgeError::BudgetExhausted { .. } => StatusCode::SERVICE_UNAVAILABLE,
        BridgeError::Idp(detail) | BridgeError::Setup(detail) => {
            tracing::warn!(detail = %detail, "bridge: the identity provider failed");
            StatusCode::BAD_GATEWAY
        }
        BridgeError::Store(_) | BridgeError::Internal(_) => {
            tracing::error!(error = ?err, "bridge: server error");
            StatusCode::INTERNAL_SERVER_ERROR
        }
        BridgeError::InvalidRequest(_)
        | BridgeError::InvalidClientMetadata(_)
        | BridgeError::InvalidRedirectUri(_)
        | BridgeError::InvalidGrant(_)
        | BridgeError::InvalidTarget(_)
        | BridgeError::Refused { .. } => StatusCode::BAD_REQUEST,
    };
    let mut response = front::error_json(
        status,
        err.code(),
        err.reason(),
        &err.to_string(),
        bridge.origin(),
    );
    if let BridgeError::BudgetExhausted { retry_after_secs } = err
        && let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(1).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

fn relayed(answer: Relayed) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    no_store((status, Json(answer.body)).into_response())
}

async fn metadata(State(bridge): State<Arc<Bridge>>) -> Response {
    Json(bridge.metadata()).into_response()
}

/// A query or form body, each parameter once (RFC 6749 §3.1), as on the
/// local server.
fn parameters(encoded: &[u8]) -> Result<Vec<(String, String)>, BridgeError> {
    form_pairs(encoded).map_err(BridgeError::from)
}

/// A refused browser step: the cause and the reason's fix. The `/errors`
/// link is relative: a page is always on mcpgate's own origin.
fn refusal_page(site: &Site, status: StatusCode, trouble: Trouble, e: &BridgeError) -> Response {
    let reason = e.reason();
    tracing::info!(status = status.as_u16(), reason = reason.code(), detail = %e, "bridge: sign-in refused");
    site.respond(
        status,
        pages::refusal(
            site,
            trouble,
            &e.to_string(),
            reason.fix(),
            &reason.error_uri(""),
        ),
    )
}

/// An error in a browser step: a page, never a redirect to an address that
/// was not checked.
fn error_page(site: &Site, err: BridgeError) -> Response {
    let (status, trouble, message) = match err {
        e @ (BridgeError::Idp(_) | BridgeError::Setup(_)) => {
            tracing::warn!(error = ?e, "bridge: browser step failed");
            (
                StatusCode::BAD_GATEWAY,
                Trouble::IdentityProviderDown,
                "the server could not continue the sign-in: the identity provider did not answer as expected".to_owned(),
            )
        }
        e @ (BridgeError::Store(_) | BridgeError::Internal(_)) => {
            tracing::error!(error = ?e, "bridge: browser step failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Trouble::ServerError,
                "the server could not continue the sign-in".to_owned(),
            )
        }
        e @ BridgeError::Forbidden(_) => {
            return refusal_page(site, StatusCode::FORBIDDEN, Trouble::CannotContinue, &e);
        }
        e @ BridgeError::TooManyRequests => {
            return refusal_page(
                site,
                StatusCode::TOO_MANY_REQUESTS,
                Trouble::RateLimited,
                &e,
            );
        }
        e => return refusal_page(site, StatusCode::BAD_REQUEST, Trouble::BadRequest, &e),
    };
    site.respond(status, pages::error(site, trouble, &message))
}

/// A browser step's redirect (to the IdP or to the client's checked URI).
fn browser_step(site: &Site, result: Result<String, BridgeError>) -> Response {
    match result {
        // A serialised `url::Url`: always a valid header value.
        Ok(location) => see_other(&location),
        Err(e) => error_page(site, e),
    }
}

/// mcpgate's consent page first; the IdP only after the user approves.
async fn authorize(
    State(BridgeFront { bridge, site }): State<BridgeFront>,
    client: ClientAddress,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let cookie = browser_cookie(&bridge);
    let held = cookie.read(&headers);
    let pairs = match parameters(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return error_page(&site, e),
    };
    let prompt = match bridge
        .authorize(&pairs, held.as_deref(), &client.limit_key())
        .await
    {
        Ok(p) => p,
        Err(e) => return error_page(&site, e),
    };
    let mut response = site.respond(
        StatusCode::OK,
        pages::bridge_consent(
            &site,
            &pages::BridgeConsent {
                request_id: &prompt.request_id,
                csrf: &prompt.csrf,
                client_name: &prompt.client_name,
                redirect_uri: &prompt.redirect_uri,
                scopes: &prompt.scopes,
                idp_host: &prompt.idp_host,
            },
        ),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie.set(&prompt.browser, REQUEST_TTL_SECS),
    );
    response
}

async fn consent(
    State(BridgeFront { bridge, site }): State<BridgeFront>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs = match parameters(&body) {
        Ok(p) => p,
        Err(e) => return error_page(&site, e),
    };
    let get = |name: &str| field(&pairs, name).unwrap_or_default();
    let browser = browser_cookie(&bridge).read(&headers).unwrap_or_default();
    browser_step(
        &site,
        bridge
            .decide(
                get("request"),
                get("csrf"),
                &browser,
                if get("decision") == "approve" {
                    ConsentAnswer::Approve
                } else {
                    ConsentAnswer::Deny
                },
            )
            .await,
    )
}

async fn callback(
    State(BridgeFront { bridge, site }): State<BridgeFront>,
    Path(key): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let pairs = match parameters(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return error_page(&site, e),
    };
    let browser = browser_cookie(&bridge).read(&headers).unwrap_or_default();
    browser_step(&site, bridge.callback(&key, &pairs, &browser).await)
}

/// The shared callback of earlier versions: no answer arriving there can be
/// tied to a client any more.
async fn shared_callback(State(site): State<Arc<Site>>) -> Response {
    error_page(
        &site,
        BridgeError::InvalidRequest(
        "this sign-in was started with an older version of this server; start again from your app"
            .to_owned(),
        ),
    )
}

async fn token(State(bridge): State<Arc<Bridge>>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let pairs = match parameters(&body) {
        Ok(p) => p,
        Err(e) => return error(&bridge, e),
    };
    match bridge.token(&pairs, authorization).await {
        Ok(answer) => relayed(answer),
        Err(e) => error(&bridge, e),
    }
}

async fn register(
    State(bridge): State<Arc<Bridge>>,
    client: ClientAddress,
    body: Body,
) -> Response {
    // Read no more than the cap, whatever the declared length.
    let Ok(body) = axum::body::to_bytes(body, MAX_REGISTRATION_BYTES).await else {
        return error(&bridge, BridgeError::TooLarge(MAX_REGISTRATION_BYTES));
    };
    let value = match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => {
            return error(
                &bridge,
                BridgeError::InvalidClientMetadata("the body must be a JSON object".to_owned()),
            );
        }
    };
    match bridge.register(value, &client.limit_key()).await {
        Ok(answer) => relayed(answer),
        Err(e) => error(&bridge, e),
    }
}
