//! What an HTTP upstream sees from mcpgate: its own static headers, an
//! access token mcpgate obtained for it (client credentials), and optionally
//! who the caller is, signed by mcpgate. Never the client's token: the HTTP
//! client below builds every request's headers from these sources only.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use aws_lc_rs::hmac;
use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::transport::streamable_http_client::SseError;
use rmcp::{
    model::ClientJsonRpcMessage,
    transport::streamable_http_client::{
        StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
        StreamableHttpResponseLimits,
    },
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sse_stream::Sse;
use tokio::sync::Mutex;

use super::{
    locks::lock,
    settings::{CallerIdentityMode, ClientCredentialsGrant},
};
use crate::{
    auth::Principal,
    clock::{Clock, SystemClock},
    oauth::keys::KeyRing,
};

/// Why no access token could be had for an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTokenError {
    #[error("token endpoint unreachable: {0}")]
    Unreachable(reqwest::Error),
    #[error("token endpoint answered {0}")]
    Refused(http::StatusCode),
    #[error("token endpoint answered something other than a token")]
    NotAToken,
}

/// An access token from the upstream's authorization server, fetched with
/// the client-credentials grant and reused until shortly before it expires.
pub struct TokenSource {
    credentials: ClientCredentialsGrant,
    client: reqwest::Client,
    cached: Mutex<Option<(SecretString, Instant)>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenSource {
    pub fn new(credentials: ClientCredentialsGrant, client: reqwest::Client) -> Self {
        TokenSource {
            credentials,
            client,
            cached: Mutex::new(None),
        }
    }

    /// The current token; one fetch at a time (the lock is held across it).
    pub async fn token(&self) -> Result<SecretString, UpstreamTokenError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let c = &self.credentials;
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", c.client_id.clone()),
            ("client_secret", c.client_secret.expose_secret().to_owned()),
        ];
        if !c.scopes.is_empty() {
            form.push(("scope", c.scopes.join(" ")));
        }
        if let Some(a) = &c.audience {
            form.push(("audience", a.clone()));
        }
        if let Some(r) = &c.resource {
            form.push(("resource", r.clone()));
        }
        let response = self
            .client
            .post(c.token_url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| UpstreamTokenError::Unreachable(e.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(UpstreamTokenError::Refused(status));
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|_| UpstreamTokenError::NotAToken)?;
        // Renew a little early so a call never leaves with a token about to expire.
        let lifetime = answer.expires_in.unwrap_or(300).saturating_sub(30).max(5);
        let token = SecretString::from(answer.access_token);
        *cached = Some((
            token.clone(),
            Instant::now() + Duration::from_secs(lifetime),
        ));
        Ok(token)
    }
}

/// Who is calling, for an upstream connection that serves one principal.
pub struct CallerIdentity {
    identity: CallerIdentityMode,
    principal: Principal,
    issuer: String,
    keys: Option<Arc<KeyRing>>,
    minted: std::sync::Mutex<Option<(String, i64)>>,
}

const JWT_LIFETIME_SECS: i64 = 120;

pub use crate::auth::IDENTITY_JWT_TYP;

impl CallerIdentity {
    pub fn new(
        identity: CallerIdentityMode,
        principal: Principal,
        issuer: String,
        keys: Option<Arc<KeyRing>>,
    ) -> Self {
        CallerIdentity {
            identity,
            principal,
            issuer,
            keys,
            minted: std::sync::Mutex::new(None),
        }
    }

    /// `X-MCP-*` headers and their signature: HMAC-SHA256 over
    /// `v2\n<timestamp>\n<audience>\n<issuer>\n<subject>\n<client>\n<email>`,
    /// hex. The audience names the upstream, so one that shares its secret
    /// with another cannot replay the other's headers to it.
    fn signed_headers(
        &self,
        secret: &SecretString,
        audience: &str,
        out: &mut HashMap<HeaderName, HeaderValue>,
    ) {
        let p = &self.principal;
        let ts = SystemClock.now().to_string();
        let client = p.client_id.clone().unwrap_or_default();
        let email = p.email.clone().unwrap_or_default();
        let payload = format!(
            "v2\n{ts}\n{audience}\n{}\n{}\n{client}\n{email}",
            p.issuer, p.subject
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
        let tag = hmac::sign(&key, payload.as_bytes());
        let signature: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        for (name, value) in [
            ("x-mcp-subject", p.subject.as_str()),
            ("x-mcp-issuer", p.issuer.as_str()),
            ("x-mcp-client-id", client.as_str()),
            ("x-mcp-email", email.as_str()),
            ("x-mcp-audience", audience),
            ("x-mcp-timestamp", ts.as_str()),
            ("x-mcp-signature", signature.as_str()),
        ] {
            // A value that cannot be a header (control characters) is left out
            // and the signature then fails at the upstream, as it should.
            if let Ok(v) = HeaderValue::from_str(value) {
                out.insert(HeaderName::from_static(name), v);
            }
        }
    }

    /// A short-lived ES256 JWT naming the caller, `aud` = the upstream.
    fn jwt(&self, audience: &str) -> Option<String> {
        let now = SystemClock.now();
        if let Some((token, exp)) = lock(&self.minted).as_ref()
            && *exp - now > 30
        {
            return Some(token.clone());
        }
        let keys = self.keys.as_ref()?;
        let p = &self.principal;
        let exp = now + JWT_LIFETIME_SECS;
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": p.subject,
            "aud": audience,
            "iat": now,
            "exp": exp,
            "jti": uuid::Uuid::new_v4().to_string(),
            "client_id": p.client_id,
            "email": p.email,
            "name": p.name,
            "groups": p.groups,
            "act": {"sub": "mcpgate"},
        });
        match keys.sign_typed(&claims, IDENTITY_JWT_TYP) {
            Ok(token) => {
                *lock(&self.minted) = Some((token.clone(), exp));
                Some(token)
            }
            Err(e) => {
                tracing::error!(error = %e, "could not sign an identity token for an upstream");
                None
            }
        }
    }
}

/// Every header source of one upstream connection.
#[derive(Clone, Default)]
pub struct HeaderSources {
    pub static_headers: Vec<(HeaderName, HeaderValue)>,
    pub token: Option<Arc<TokenSource>>,
    pub caller: Option<Arc<CallerIdentity>>,
    /// `user_auth`: this connection's user's own token (`user_auth.rs`).
    pub user_token: Option<UserTokenSource>,
    pub upstream: String,
}

/// Where a per-user connection gets its user's token for the upstream.
#[derive(Clone)]
pub struct UserTokenSource {
    pub auth: Arc<super::user_auth::UserAuth>,
    pub user_id: String,
}

impl HeaderSources {
    pub async fn current(&self) -> (Option<String>, HashMap<HeaderName, HeaderValue>) {
        let mut headers: HashMap<HeaderName, HeaderValue> =
            self.static_headers.iter().cloned().collect();
        let mut bearer = None;
        if let Some(source) = &self.token {
            match source.token().await {
                Ok(token) => bearer = Some(token.expose_secret().to_owned()),
                // The upstream then answers 401 and the call fails with that.
                Err(e) => {
                    tracing::warn!(upstream = %self.upstream, error = %e, "no access token for the upstream")
                }
            }
        }
        if let Some(source) = &self.user_token {
            match source.auth.token(&self.upstream, &source.user_id).await {
                Ok(Some(token)) => bearer = Some(token.expose_secret().to_owned()),
                // Revoked or refused meanwhile: the upstream answers 401 and
                // the next call, seeing no connection, asks the user again.
                Ok(None) => {
                    tracing::info!(upstream = %self.upstream, "the user's connection to the upstream is gone")
                }
                Err(e) => {
                    tracing::warn!(upstream = %self.upstream, error = %e, "no user token for the upstream")
                }
            }
        }
        if let Some(caller) = &self.caller {
            match &caller.identity {
                CallerIdentityMode::None => {}
                CallerIdentityMode::SignedHeaders { secret, audience } => {
                    caller.signed_headers(secret, audience, &mut headers)
                }
                CallerIdentityMode::Jwt { audience } => {
                    if let Some(jwt) = caller.jwt(audience) {
                        if bearer.is_none() {
                            bearer = Some(jwt);
                        } else if let Ok(v) = HeaderValue::from_str(&jwt) {
                            headers.insert(HeaderName::from_static("x-mcp-identity"), v);
                        }
                    }
                }
            }
        }
        (bearer, headers)
    }
}

/// The session a Streamable HTTP upstream connection is on, as rmcp last
/// sent it: the session id (none for a stateless upstream) and the
/// negotiated `MCP-Protocol-Version`. Calls posted by mcpgate itself
/// (`http_call.rs`) go out with the same two headers.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionHeaders {
    pub session: Option<Arc<str>>,
    pub version: HeaderValue,
}

/// Where [`GatewayHttpClient`] notes the [`SessionHeaders`] of its
/// connection. Empty until `initialize` is done, and on a 2026-07-28
/// connection, whose requests need headers derived per call by rmcp
/// (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`).
#[derive(Default)]
pub struct SessionRoute(std::sync::Mutex<Option<SessionHeaders>>);

impl SessionRoute {
    pub fn current(&self) -> Option<SessionHeaders> {
        lock(&self.0).clone()
    }

    fn note(&self, session: &Option<Arc<str>>, headers: &HashMap<HeaderName, HeaderValue>) {
        // Looked up by `HeaderName`: a `&str` key hashes differently.
        let noted = if headers.contains_key(&HeaderName::from_static("mcp-method")) {
            None
        } else {
            match headers.get(&HeaderName::from_static("mcp-protocol-version")) {
                Some(version) => Some(SessionHeaders {
                    session: session.clone(),
                    version: version.clone(),
                }),
                // `initialize` itself: nothing negotiated yet.
                None => return,
            }
        };
        let mut current = lock(&self.0);
        if *current != noted {
            *current = noted;
        }
    }

    fn forget(&self) {
        *lock(&self.0) = None;
    }
}

/// reqwest with [`HeaderSources`] applied to every request. Of what rmcp
/// passes, only the protocol's own headers go out (see
/// [`with_protocol_headers`]); its auth header is replaced by ours.
#[derive(Clone)]
pub struct GatewayHttpClient {
    inner: reqwest::Client,
    sources: Arc<HeaderSources>,
    route: Arc<SessionRoute>,
}

impl GatewayHttpClient {
    pub fn new(
        inner: reqwest::Client,
        sources: Arc<HeaderSources>,
        route: Arc<SessionRoute>,
    ) -> Self {
        GatewayHttpClient {
            inner,
            sources,
            route,
        }
    }
}

impl StreamableHttpClient for GatewayHttpClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.route.note(&session_id, &custom_headers);
        let (auth, ours) = self.sources.current().await;
        let headers = with_protocol_headers(custom_headers, ours);
        let response = self
            .inner
            .post_message(uri, message, session_id, auth, headers)
            .await;
        answered_at_once(response)
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.route.note(&session_id, &custom_headers);
        let (auth, ours) = self.sources.current().await;
        let headers = with_protocol_headers(custom_headers, ours);
        let response = self
            .inner
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth,
                headers,
                max_sse_event_size,
            )
            .await;
        answered_at_once(response)
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.route.note(&session_id, &custom_headers);
        let (auth, ours) = self.sources.current().await;
        let headers = with_protocol_headers(custom_headers, ours);
        let response = self
            .inner
            .post_message_with_response_limits(uri, message, session_id, auth, headers, limits)
            .await;
        answered_at_once(response)
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.route.forget();
        let (auth, ours) = self.sources.current().await;
        let headers = with_protocol_headers(custom_headers, ours);
        self.inner
            .delete_session(uri, session_id, auth, headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        let (auth, ours) = self.sources.current().await;
        let headers = with_protocol_headers(custom_headers, ours);
        self.inner
            .get_stream(uri, session_id, last_event_id, auth, headers)
            .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        let (auth, ours) = self.sources.current().await;
        let headers = with_protocol_headers(custom_headers, ours);
        self.inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth,
                headers,
                max_sse_event_size,
            )
            .await
    }
}

/// An SSE answer that is already complete when its headers are read (the
/// usual answer of a quick tool: a priming event, then the result, then the
/// end) is handed to rmcp as the JSON answer it amounts to. rmcp would
/// otherwise spawn a task per answer to read the stream, resume it if it
/// broke, pass the result through one more channel and arm a 50 ms timer
/// to drain it. Only a stream that ended, whose one message is the
/// response, is taken this way; anything else (progress, a request from the
/// upstream, an unfinished or broken stream, an event of another type) goes
/// to rmcp as the stream it was, with the events already read in front.
fn answered_at_once<E>(
    response: Result<StreamableHttpPostResponse, StreamableHttpError<E>>,
) -> Result<StreamableHttpPostResponse, StreamableHttpError<E>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    use futures::{FutureExt, StreamExt};
    use rmcp::model::ServerJsonRpcMessage;
    let Ok(StreamableHttpPostResponse::Sse(mut stream, session)) = response else {
        return response;
    };
    let mut read = Vec::new();
    let mut answer = None;
    let complete = loop {
        let Some(next) = stream.next().now_or_never() else {
            break false;
        };
        let Some(event) = next else {
            break true;
        };
        let usable = match &event {
            Ok(sse) if matches!(sse.event.as_deref(), None | Some("") | Some("message")) => {
                match sse.data.as_deref().map(str::trim) {
                    None | Some("") => true,
                    Some(data) if answer.is_none() => {
                        match serde_json::from_str::<ServerJsonRpcMessage>(data) {
                            Ok(
                                message @ (ServerJsonRpcMessage::Response(_)
                                | ServerJsonRpcMessage::Error(_)),
                            ) => {
                                answer = Some(message);
                                true
                            }
                            _ => false,
                        }
                    }
                    Some(_) => false,
                }
            }
            _ => false,
        };
        read.push(event);
        if !usable {
            break false;
        }
    };
    match answer {
        Some(message) if complete => Ok(StreamableHttpPostResponse::Json(message, session)),
        _ => Ok(StreamableHttpPostResponse::Sse(
            futures::stream::iter(read).chain(stream).boxed(),
            session,
        )),
    }
}

/// rmcp's protocol headers — `MCP-Protocol-Version` (the version the link
/// negotiated; without it an upstream must assume 2025-03-26) and, on a
/// 2026-07-28 link, `Mcp-Method`, `Mcp-Name` and the `Mcp-Param-*` it
/// derives from the upstream's own tool schema and the call's arguments,
/// the same ones the client derived for mcpgate — with ours on top: a static
/// header or identity header of the same name wins.
fn with_protocol_headers(
    from_rmcp: HashMap<HeaderName, HeaderValue>,
    ours: HashMap<HeaderName, HeaderValue>,
) -> HashMap<HeaderName, HeaderValue> {
    let protocol = |name: &HeaderName| {
        let name = name.as_str();
        name == "mcp-protocol-version"
            || name == "mcp-method"
            || name == "mcp-name"
            || name.starts_with("mcp-param-")
    };
    let mut headers: HashMap<HeaderName, HeaderValue> = from_rmcp
        .into_iter()
        .filter(|(name, _)| protocol(name))
        .collect();
    headers.extend(ours);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: Option<&str>) -> Result<Sse, SseError> {
        Ok(Sse {
            data: data.map(str::to_owned),
            id: Some("0".to_owned()),
            ..Sse::default()
        })
    }

    const RESULT: &str = r#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#;
    const PROGRESS: &str = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#;

    fn sse(
        events: Vec<Result<Sse, SseError>>,
        ended: bool,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<std::io::Error>> {
        use futures::StreamExt;
        let stream = futures::stream::iter(events);
        let stream = if ended {
            stream.boxed()
        } else {
            stream.chain(futures::stream::pending()).boxed()
        };
        Ok(StreamableHttpPostResponse::Sse(
            stream,
            Some("s1".to_owned()),
        ))
    }

    /// The events a stream handed on still yields, without waiting.
    fn drained(response: StreamableHttpPostResponse) -> Vec<Option<String>> {
        use futures::{FutureExt, StreamExt};
        let StreamableHttpPostResponse::Sse(mut stream, _) = response else {
            panic!("not a stream: {response:?}");
        };
        let mut out = Vec::new();
        while let Some(Some(e)) = stream.next().now_or_never() {
            out.push(e.unwrap().data);
        }
        out
    }

    #[test]
    fn the_session_is_noted_from_rmcps_posts_after_initialize_only_on_a_2025_link() {
        let route = SessionRoute::default();
        let version = |v: &'static str| {
            HashMap::from([(
                HeaderName::from_static("mcp-protocol-version"),
                HeaderValue::from_static(v),
            )])
        };
        // `initialize` carries no version yet: nothing to post on.
        route.note(&None, &HashMap::new());
        assert_eq!(route.current(), None);
        let session: Option<Arc<str>> = Some("s-1".into());
        route.note(&session, &version("2025-11-25"));
        assert_eq!(
            route.current(),
            Some(SessionHeaders {
                session: session.clone(),
                version: HeaderValue::from_static("2025-11-25"),
            })
        );
        // A stateless upstream: the version, no session id.
        route.note(&None, &version("2025-06-18"));
        assert_eq!(route.current().unwrap().session, None);
        // A 2026-07-28 link derives headers per call: not posted directly.
        let mut modern = version("2026-07-28");
        modern.insert(
            HeaderName::from_static("mcp-method"),
            HeaderValue::from_static("tools/call"),
        );
        route.note(&session, &modern);
        assert_eq!(route.current(), None);
        route.note(&session, &version("2025-11-25"));
        route.forget();
        assert_eq!(route.current(), None);
    }

    #[test]
    fn a_finished_sse_answer_becomes_its_json_message() {
        let answer = answered_at_once(sse(vec![event(None), event(Some(RESULT))], true)).unwrap();
        let StreamableHttpPostResponse::Json(message, session) = answer else {
            panic!("not JSON: {answer:?}");
        };
        assert_eq!(session.as_deref(), Some("s1"));
        assert_eq!(
            serde_json::to_value(&message).unwrap(),
            serde_json::from_str::<serde_json::Value>(RESULT).unwrap()
        );
    }

    #[test]
    fn anything_but_a_finished_lone_answer_stays_a_stream_with_every_event() {
        // Progress before the result: rmcp must relay it.
        let answer =
            answered_at_once(sse(vec![event(Some(PROGRESS)), event(Some(RESULT))], true)).unwrap();
        assert_eq!(
            drained(answer),
            vec![Some(PROGRESS.to_owned()), Some(RESULT.to_owned())]
        );
        // The result read, but the stream not ended yet.
        let answer = answered_at_once(sse(vec![event(None), event(Some(RESULT))], false)).unwrap();
        assert_eq!(drained(answer), vec![None, Some(RESULT.to_owned())]);
        // Another event type goes to rmcp's own handling.
        let mut endpoint = event(Some("/x")).unwrap();
        endpoint.event = Some("endpoint".to_owned());
        let answer = answered_at_once(sse(vec![Ok(endpoint), event(Some(RESULT))], true)).unwrap();
        assert_eq!(
            drained(answer),
            vec![Some("/x".to_owned()), Some(RESULT.to_owned())]
        );
        // Nothing but priming: rmcp resumes the stream or fails the call.
        let answer = answered_at_once(sse(vec![event(None)], true)).unwrap();
        assert_eq!(drained(answer), vec![None]);
        // A JSON answer passes as it is.
        let json = answered_at_once::<std::io::Error>(Ok(StreamableHttpPostResponse::Accepted));
        assert!(matches!(json, Ok(StreamableHttpPostResponse::Accepted)));
    }

    #[test]
    fn only_the_protocols_headers_pass_from_rmcp_and_ours_win() {
        let h = |pairs: &[(&'static str, &'static str)]| -> HashMap<HeaderName, HeaderValue> {
            pairs
                .iter()
                .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
                .collect()
        };
        let merged = with_protocol_headers(
            h(&[
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo"),
                ("mcp-param-region", "eu"),
                ("x-api-key", "from-rmcp"),
                ("cookie", "c=1"),
            ]),
            h(&[("x-api-key", "ours"), ("mcp-name", "ours-wins")]),
        );
        let got = |name: &'static str| merged.get(&HeaderName::from_static(name)).cloned();
        assert_eq!(got("mcp-protocol-version").unwrap(), "2025-11-25");
        assert_eq!(got("mcp-method").unwrap(), "tools/call");
        assert_eq!(got("mcp-param-region").unwrap(), "eu");
        assert_eq!(got("x-api-key").unwrap(), "ours");
        assert_eq!(got("mcp-name").unwrap(), "ours-wins");
        assert!(got("cookie").is_none());
    }

    #[test]
    fn signed_headers_name_the_caller_and_verify() {
        let principal = Principal {
            subject: "alice".into(),
            issuer: "https://gate".into(),
            client_id: Some("c1".into()),
            ..Principal::anonymous()
        };
        let secret = SecretString::from("k3y".to_owned());
        let caller = CallerIdentity::new(
            CallerIdentityMode::SignedHeaders {
                secret: secret.clone(),
                audience: "https://a.internal/mcp".into(),
            },
            principal,
            "https://gate".into(),
            None,
        );
        let mut headers = HashMap::new();
        caller.signed_headers(&secret, "https://a.internal/mcp", &mut headers);
        let get = |n: &str| {
            headers
                .get(&HeaderName::from_bytes(n.as_bytes()).unwrap())
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(get("x-mcp-subject"), "alice");
        assert_eq!(get("x-mcp-audience"), "https://a.internal/mcp");
        let signed = |audience: &str| {
            format!(
                "v2\n{}\n{audience}\nhttps://gate\nalice\nc1\n",
                get("x-mcp-timestamp")
            )
        };
        let payload = signed("https://a.internal/mcp");
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k3y");
        let sig: Vec<u8> = (0..get("x-mcp-signature").len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&get("x-mcp-signature")[i..i + 2], 16).unwrap())
            .collect();
        assert!(hmac::verify(&key, payload.as_bytes(), &sig).is_ok());
        // Upstream B sharing the secret does not accept headers meant for A.
        assert!(hmac::verify(&key, signed("https://b.internal/mcp").as_bytes(), &sig).is_err());
        // Another key does not verify it.
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"other");
        assert!(hmac::verify(&other, payload.as_bytes(), &sig).is_err());
    }
}
