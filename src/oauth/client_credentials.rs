//! mcpgate as an OAuth client of someone else's authorization server: a
//! token for mcpgate itself from the client-credentials grant (RFC 6749
//! §4.4), reused until shortly before it expires. The bridge's Auth0
//! Management API token is one; an upstream's `client_credentials` token
//! (`upstream::outbound::TokenSource`) is the same idea.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::{
    auth::jwks::{JwksError, read_capped},
    clock::SharedClock,
};

/// The largest token answer read.
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Renew this long before expiry, so a call never leaves with a token
/// about to expire.
const RENEW_BEFORE_SECS: i64 = 30;
/// A token whose answer has no `expires_in` is reused this long.
const DEFAULT_LIFETIME_SECS: i64 = 300;
/// However short-lived the tokens, one is reused at least this long.
const MIN_REUSE_SECS: i64 = 5;

/// What mcpgate sends to the token endpoint.
pub struct ClientCredentialsRequest {
    pub token_endpoint: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Further form fields the authorization server wants (`scope`,
    /// `audience`, `resource`).
    pub parameters: Vec<(&'static str, String)>,
}

/// Why no token could be had; details for the log.
#[derive(Debug, thiserror::Error)]
pub enum ClientCredentialsError {
    #[error("token endpoint unreachable: {0}")]
    Unreachable(reqwest::Error),
    #[error("token endpoint answer unreadable: {0}")]
    Unreadable(JwksError),
    #[error("token endpoint answered HTTP {status} {error}")]
    Refused { status: u16, error: String },
    #[error("token endpoint answered something other than a token")]
    NotAToken,
}

/// A client-credentials token, fetched when first needed and reused until
/// [`RENEW_BEFORE_SECS`] before it expires; one fetch at a time.
pub struct ClientCredentialsToken {
    request: ClientCredentialsRequest,
    http: reqwest::Client,
    clock: SharedClock,
    cached: Mutex<Option<CachedToken>>,
}

struct CachedToken {
    token: SecretString,
    renew_at: i64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    #[serde(default)]
    error: String,
}

impl ClientCredentialsToken {
    pub fn new(
        request: ClientCredentialsRequest,
        http: reqwest::Client,
        clock: SharedClock,
    ) -> ClientCredentialsToken {
        ClientCredentialsToken {
            request,
            http,
            clock,
            cached: Mutex::new(None),
        }
    }

    /// The current token (the lock is held across a fetch, so concurrent
    /// callers wait for one fetch rather than each making their own).
    pub async fn token(&self) -> Result<SecretString, ClientCredentialsError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && self.clock.now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let r = &self.request;
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", r.client_id.as_str()),
            ("client_secret", r.client_secret.expose_secret()),
        ];
        form.extend(r.parameters.iter().map(|(k, v)| (*k, v.as_str())));
        let response = self
            .http
            .post(&r.token_endpoint)
            .header("accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| ClientCredentialsError::Unreachable(e.without_url()))?;
        let status = response.status();
        let body = read_capped(response, MAX_ANSWER_BYTES)
            .await
            .map_err(ClientCredentialsError::Unreadable)?;
        if !status.is_success() {
            return Err(ClientCredentialsError::Refused {
                status: status.as_u16(),
                error: serde_json::from_slice::<ErrorResponse>(&body)
                    .map(|e| e.error)
                    .unwrap_or_default(),
            });
        }
        let answer: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| ClientCredentialsError::NotAToken)?;
        let reuse = answer
            .expires_in
            .unwrap_or(DEFAULT_LIFETIME_SECS)
            .saturating_sub(RENEW_BEFORE_SECS)
            .max(MIN_REUSE_SECS);
        let token = SecretString::from(answer.access_token);
        *cached = Some(CachedToken {
            token: token.clone(),
            renew_at: self.clock.now() + reuse,
        });
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    use std::time::Duration;

    use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
    use serde_json::json;

    use super::*;
    use crate::clock::ManualClock;

    /// A token endpoint answering `status` with a numbered token living
    /// 60 s, counting its calls.
    async fn endpoint(status: StatusCode) -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route(
                "/token",
                post(
                    move |State(calls): State<Arc<AtomicUsize>>, body: String| async move {
                        assert!(body.contains("grant_type=client_credentials"), "{body}");
                        assert!(body.contains("audience=api"), "{body}");
                        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                        if status.is_success() {
                            (
                                status,
                                Json(json!({"access_token": format!("t{n}"), "expires_in": 60})),
                            )
                        } else {
                            (status, Json(json!({"error": "invalid_client"})))
                        }
                    },
                ),
            )
            .with_state(calls.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/token"), calls)
    }

    fn source(token_endpoint: String, clock: SharedClock) -> ClientCredentialsToken {
        ClientCredentialsToken::new(
            ClientCredentialsRequest {
                token_endpoint,
                client_id: "m2m".to_owned(),
                client_secret: SecretString::from("s"),
                parameters: vec![("audience", "api".to_owned())],
            },
            reqwest::Client::new(),
            clock,
        )
    }

    #[tokio::test]
    async fn a_token_is_reused_until_shortly_before_it_expires() {
        let (url, calls) = endpoint(StatusCode::OK).await;
        let clock = ManualClock::new();
        let tokens = source(url, clock.clone());
        assert_eq!(tokens.token().await.unwrap().expose_secret(), "t1");
        clock.advance(Duration::from_secs(29));
        assert_eq!(tokens.token().await.unwrap().expose_secret(), "t1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // 60 s tokens are renewed 30 s before they expire.
        clock.advance(Duration::from_secs(1));
        assert_eq!(tokens.token().await.unwrap().expose_secret(), "t2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refusal_names_the_status_and_the_error_and_is_not_cached() {
        let (url, calls) = endpoint(StatusCode::UNAUTHORIZED).await;
        let tokens = source(url, crate::clock::system());
        for _ in 0..2 {
            match tokens.token().await {
                Err(ClientCredentialsError::Refused { status, error }) => {
                    assert_eq!((status, error.as_str()), (401, "invalid_client"));
                }
                other => panic!("{:?}", other.map(|_| ())),
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
