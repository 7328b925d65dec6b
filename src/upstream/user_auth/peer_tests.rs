//! `UserAuth` against authorization servers that behave as real ones do:
//! GitHub's form answers, Entra's string `expires_in`, outages, forgotten
//! registrations, `client_secret_post`-only servers, `offline_access`,
//! RFC 9207 `iss`, and a resource that names itself without a slash.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::{
    Form, Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use secrecy::ExposeSecret;

use super::{tests::store, *};
use crate::{
    clock::{Clock, ManualClock},
    upstream::settings::{Isolation, PrefixMode, UpstreamConfig},
};

/// One token request as the peer saw it.
#[derive(Clone, Debug)]
struct Seen {
    authorization: Option<String>,
    accept: Option<String>,
    form: HashMap<String, String>,
}

/// An authorization server (and the upstream's resource metadata) on one
/// origin, answering what the test sets.
#[derive(Clone, Default)]
struct Peer {
    origin: Arc<std::sync::Mutex<String>>,
    /// Merged into the server metadata.
    extra: Arc<std::sync::Mutex<serde_json::Value>>,
    /// Status, content type and body of the next token answers.
    reply: Arc<std::sync::Mutex<(u16, &'static str, String)>>,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    registrations: Arc<AtomicUsize>,
}

async fn server_metadata(State(peer): State<Peer>) -> Json<serde_json::Value> {
    let origin = lock(&peer.origin).clone();
    let mut m = serde_json::json!({
        "issuer": origin,
        "authorization_endpoint": format!("{origin}/authorize"),
        "token_endpoint": format!("{origin}/token"),
        "registration_endpoint": format!("{origin}/register"),
    });
    if let (Some(m), Some(extra)) = (m.as_object_mut(), lock(&peer.extra).as_object()) {
        m.extend(extra.clone());
    }
    Json(m)
}

/// The upstream names itself without a trailing slash, as
/// workers-oauth-provider does for a root resource.
async fn resource_metadata(State(peer): State<Peer>) -> Json<serde_json::Value> {
    let origin = lock(&peer.origin).clone();
    Json(serde_json::json!({
        "resource": origin,
        "authorization_servers": [origin],
        "scopes_supported": ["mcp"],
    }))
}

async fn register(State(peer): State<Peer>) -> (StatusCode, Json<serde_json::Value>) {
    let n = peer.registrations.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::CREATED,
        Json(serde_json::json!({"client_id": format!("registered-{n}")})),
    )
}

async fn token(
    State(peer): State<Peer>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    lock(&peer.seen).push(Seen {
        authorization: text(header::AUTHORIZATION),
        accept: text(header::ACCEPT),
        form,
    });
    let (status, content_type, body) = lock(&peer.reply).clone();
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, content_type)],
        body,
    )
        .into_response()
}

async fn peer() -> Peer {
    let peer = Peer::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    *lock(&peer.origin) = format!("http://{}", listener.local_addr().unwrap());
    *lock(&peer.extra) = serde_json::json!({});
    answer(
        &peer,
        200,
        "application/json",
        serde_json::json!({
            "access_token": "access-new", "refresh_token": "refresh-new", "expires_in": 3600,
        })
        .to_string(),
    );
    let app = Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(server_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .route("/register", post(register))
        .route("/token", post(token))
        .with_state(peer.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    peer
}

fn answer(peer: &Peer, status: u16, content_type: &'static str, body: String) {
    *lock(&peer.reply) = (status, content_type, body);
}

/// The upstream at the peer's origin (its resource metadata there), with
/// `settings`.
fn auth_at(
    store: &Store,
    clock: &Arc<ManualClock>,
    peer: &Peer,
    settings: UserAuthSettings,
) -> Arc<UserAuth> {
    let config = GatewayConfig {
        prefix: PrefixMode::Auto,
        separator: "__".into(),
        upstreams: vec![UpstreamConfig {
            name: "up".into(),
            transport: Transport::Http {
                url: Url::parse(&lock(&peer.origin)).unwrap(),
                headers: Vec::new(),
                header_names: Vec::new(),
                oauth: None,
            },
            isolation: Isolation::PerUser,
            idle_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_secs(60),
            max_concurrent_calls: 1,
            max_per_user_links: 1,
            identity: crate::upstream::settings::CallerIdentityMode::None,
            identity_kind: "none",
            user_auth: Some(settings),
        }],
    };
    UserAuth::new(
        &config,
        store.clone(),
        Arc::new(Sealer::new(&[7u8; 32]).unwrap()),
        clock.clone(),
        "https://gate.example".into(),
    )
    .unwrap()
    .unwrap()
}

fn registered() -> UserAuthSettings {
    UserAuthSettings {
        client_id: None,
        client_secret: None,
        scopes: Vec::new(),
        authorization_server: None,
        resource_indicator: true,
        authorize_params: Default::default(),
    }
}

/// User `u`'s connect link to `up`, opened in a new browser: the redirect
/// to the authorization server.
async fn begin_connect(auth: &UserAuth) -> super::Redirect {
    let link = auth.connect_link("up", "u").unwrap();
    auth.begin("up", link.url.split_once("?e=").unwrap().1, "u", None)
        .await
        .unwrap()
}

/// A connection for `user` whose access token is past its expiry.
async fn expired_connection(
    auth: &UserAuth,
    store: &Store,
    clock: &ManualClock,
    peer: &Peer,
    user: &str,
) {
    let set = TokenSet {
        access_token: "access-old".into(),
        refresh_token: Some("refresh-old".into()),
        scope: Some("mcp".into()),
        issuer: lock(&peer.origin).clone(),
    };
    let sealed = auth.sealer.seal_json(TOKENS_CONTEXT, &set).unwrap();
    let now = clock.now();
    store
        .put_user_upstream_tokens("up", user, &sealed, Some(now - 1), now - 3600)
        .await
        .unwrap();
}

fn query(location: &str) -> HashMap<String, String> {
    Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

#[test]
fn token_answers_are_read_as_the_servers_mean_them() {
    let ok = |body: &str| super::server::token_answer(reqwest::StatusCode::OK, body.as_bytes());
    // GitHub without `Accept: application/json`: a form.
    let form = ok("access_token=gho_a&scope=repo&token_type=bearer").unwrap();
    assert_eq!(
        (form.access_token.as_str(), form.scope.as_deref()),
        ("gho_a", Some("repo"))
    );
    // Entra's v1 endpoint: `expires_in` as a string.
    let entra = ok(r#"{"access_token":"a","expires_in":"3599"}"#).unwrap();
    assert_eq!(entra.expires_in, Some(3599));
    // GitHub's errors come with 200.
    assert!(matches!(
        ok(r#"{"error":"bad_verification_code","error_description":"The code is incorrect"}"#),
        Err(UserAuthError::Refused(r)) if r.starts_with("bad_verification_code")
    ));
    let status = |code: u16, body: &str| {
        super::server::token_answer(
            reqwest::StatusCode::from_u16(code).unwrap(),
            body.as_bytes(),
        )
    };
    // What the server stands by: the grant or the client is refused.
    assert!(matches!(
        status(400, r#"{"error":"invalid_grant"}"#),
        Err(UserAuthError::Refused(_))
    ));
    assert!(matches!(
        status(401, r#"{"error":"invalid_client"}"#),
        Err(UserAuthError::ClientRejected(_))
    ));
    // Passing failures: a proxy's page, an outage, a rate limit, no token.
    for (code, body) in [
        (503, "<html><body>Service Unavailable</body></html>"),
        (502, ""),
        (429, r#"{"error":"slow_down"}"#),
        (500, r#"{"error":"server_error"}"#),
        (200, "<html>maintenance</html>"),
    ] {
        assert!(
            matches!(status(code, body), Err(UserAuthError::Unreachable(_))),
            "{code} {body}"
        );
    }
}

#[test]
fn a_root_resource_is_sent_without_the_slash_the_url_parser_adds() {
    let uri = |s: &str| super::server::resource_uri(&Url::parse(s).unwrap());
    assert_eq!(uri("https://mcp.example.com"), "https://mcp.example.com");
    assert_eq!(uri("https://mcp.example.com/"), "https://mcp.example.com");
    assert_eq!(
        uri("https://mcp.example.com/mcp"),
        "https://mcp.example.com/mcp"
    );
    assert_eq!(
        uri("https://mcp.example.com/mcp/"),
        "https://mcp.example.com/mcp/"
    );
    assert_eq!(
        uri("https://mcp.example.com/?t=1"),
        "https://mcp.example.com/?t=1"
    );
}

#[tokio::test]
async fn an_outage_at_refresh_keeps_the_connection_and_the_next_call_tries_again_at_once() {
    let (_dir, store) = store().await;
    let clock = ManualClock::new();
    let peer = peer().await;
    let auth = auth_at(&store, &clock, &peer, registered());
    expired_connection(&auth, &store, &clock, &peer, "u").await;
    answer(
        &peer,
        503,
        "text/html",
        "<html>Service Unavailable</html>".into(),
    );
    assert!(matches!(
        auth.token("up", "u").await,
        Err(UserAuthError::Unreachable(_))
    ));
    let row = store
        .user_upstream_tokens("up", "u")
        .await
        .unwrap()
        .expect("kept");
    assert_eq!(row.refresh_lease_until, None, "the lease is given back");
    // The server is back: the very next call refreshes.
    answer(
        &peer,
        200,
        "application/json",
        r#"{"access_token":"access-new","expires_in":3600}"#.into(),
    );
    let token = auth.token("up", "u").await.unwrap().unwrap();
    assert_eq!(token.expose_secret(), "access-new");
    // A refresh answer without refresh token or scope keeps both.
    let row = store
        .user_upstream_tokens("up", "u")
        .await
        .unwrap()
        .unwrap();
    let kept: TokenSet = auth.sealer.open_json(TOKENS_CONTEXT, &row.sealed).unwrap();
    assert_eq!(
        (kept.refresh_token.as_deref(), kept.scope.as_deref()),
        (Some("refresh-old"), Some("mcp"))
    );
    // Every request asked for JSON, and sent the resource as named.
    let seen = lock(&peer.seen).clone();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.accept.as_deref() == Some("application/json"))
    );
    assert_eq!(seen[0].form["resource"], lock(&peer.origin).clone());
    // A refused grant does end the connection.
    clock.advance(Duration::from_secs(3600));
    answer(
        &peer,
        400,
        "application/json",
        r#"{"error":"invalid_grant"}"#.into(),
    );
    assert!(auth.token("up", "u").await.unwrap().is_none());
    assert!(
        store
            .user_upstream_tokens("up", "u")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_registration_the_server_forgot_is_made_anew() {
    let (_dir, store) = store().await;
    let clock = ManualClock::new();
    let peer = peer().await;
    let auth = auth_at(&store, &clock, &peer, registered());
    let server = auth.discover("up").await.unwrap().server.clone();
    assert_eq!(
        auth.client("up", &server).await.unwrap().client_id,
        "registered-1"
    );
    // Kept: the next lookup does not register again.
    assert_eq!(
        auth.client("up", &server).await.unwrap().client_id,
        "registered-1"
    );
    expired_connection(&auth, &store, &clock, &peer, "u").await;
    answer(
        &peer,
        401,
        "application/json",
        r#"{"error":"invalid_client","error_description":"Client not found"}"#.into(),
    );
    assert!(auth.token("up", "u").await.unwrap().is_none());
    assert!(
        store
            .upstream_client("up", &server.issuer)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        auth.client("up", &server).await.unwrap().client_id,
        "registered-2"
    );
    assert_eq!(peer.registrations.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_configured_secret_goes_in_the_body_when_the_server_takes_it_only_there() {
    let (_dir, store) = store().await;
    let clock = ManualClock::new();
    let peer = peer().await;
    *lock(&peer.extra) =
        serde_json::json!({"token_endpoint_auth_methods_supported": ["client_secret_post"]});
    let configured = || UserAuthSettings {
        client_id: Some("gate".into()),
        client_secret: Some(SecretString::from("s3cret")),
        ..registered()
    };
    let auth = auth_at(&store, &clock, &peer, configured());
    expired_connection(&auth, &store, &clock, &peer, "u").await;
    auth.token("up", "u").await.unwrap().unwrap();
    let seen = lock(&peer.seen)[0].clone();
    assert_eq!(seen.authorization, None);
    assert_eq!(
        (
            seen.form["client_id"].as_str(),
            seen.form["client_secret"].as_str()
        ),
        ("gate", "s3cret")
    );
    // A server that lists Basic (or nothing) gets Basic.
    *lock(&peer.extra) = serde_json::json!({});
    let auth = auth_at(&store, &clock, &peer, configured());
    expired_connection(&auth, &store, &clock, &peer, "v").await;
    auth.token("up", "v").await.unwrap().unwrap();
    let seen = lock(&peer.seen)[1].clone();
    assert!(seen.authorization.is_some_and(|a| a.starts_with("Basic ")));
    assert!(!seen.form.contains_key("client_secret"));
}

#[tokio::test]
async fn connecting_asks_for_offline_access_names_the_resource_as_it_does_and_keeps_the_browser() {
    let (_dir, store) = store().await;
    let clock = ManualClock::new();
    let peer = peer().await;
    *lock(&peer.extra) =
        serde_json::json!({"scopes_supported": ["openid", "mcp", "offline_access"]});
    let auth = auth_at(&store, &clock, &peer, registered());
    let link = auth.connect_link("up", "u").unwrap();
    let sealed = link.url.split_once("?e=").unwrap().1;
    let first = auth.begin("up", sealed, "u", None).await.unwrap();
    let q = query(&first.location);
    assert_eq!(q["scope"], "mcp offline_access");
    assert_eq!(q["resource"], lock(&peer.origin).clone(), "no slash added");
    // A second connect in the same browser keeps its cookie value, so the
    // first attempt's callback still matches it.
    let second = auth
        .begin("up", sealed, "u", Some(&first.browser))
        .await
        .unwrap();
    assert_eq!(second.browser, first.browser);
    assert_ne!(query(&second.location)["state"], q["state"]);
    // Not a value of ours: a new one.
    let third = auth.begin("up", sealed, "u", Some("short")).await.unwrap();
    assert_ne!(third.browser, "short");
}

#[tokio::test]
async fn configured_authorize_params_go_on_the_authorization_request_and_google_gets_offline_access()
 {
    let (_dir, store) = store().await;
    let clock = ManualClock::new();
    let peer = peer().await;
    let auth = auth_at(
        &store,
        &clock,
        &peer,
        UserAuthSettings {
            authorize_params: [
                ("audience".to_owned(), "https://api.example/".to_owned()),
                ("prompt".to_owned(), "login".to_owned()),
            ]
            .into(),
            ..registered()
        },
    );
    let go = begin_connect(&auth).await;
    let q = query(&go.location);
    assert_eq!(q["audience"], "https://api.example/");
    assert_eq!(q["prompt"], "login");
    assert_eq!(
        q["code_challenge_method"], "S256",
        "the flow's own are kept"
    );
    assert!(
        !q.contains_key("access_type"),
        "only Google's server gets it"
    );
    // Google's issuer: a refresh token needs access_type=offline (and
    // prompt=consent for a user who consented before), unless configured.
    let none = std::collections::BTreeMap::new();
    let google = super::server::authorize_params("https://accounts.google.com", &none);
    assert_eq!(
        google,
        vec![
            ("access_type".to_owned(), "offline".to_owned()),
            ("prompt".to_owned(), "consent".to_owned())
        ]
    );
    let chosen = [("prompt".to_owned(), "select_account".to_owned())].into();
    let google = super::server::authorize_params("https://accounts.google.com/", &chosen);
    assert_eq!(
        google,
        vec![
            ("prompt".to_owned(), "select_account".to_owned()),
            ("access_type".to_owned(), "offline".to_owned())
        ]
    );
    assert!(super::server::authorize_params("https://login.example", &none).is_empty());
}

#[tokio::test]
async fn an_authorization_response_from_another_server_connects_nothing() {
    let (_dir, store) = store().await;
    let clock = ManualClock::new();
    let peer = peer().await;
    *lock(&peer.extra) =
        serde_json::json!({"authorization_response_iss_parameter_supported": true});
    let auth = auth_at(&store, &clock, &peer, registered());
    let link = auth.connect_link("up", "u").unwrap();
    let sealed = link.url.split_once("?e=").unwrap().1;
    let issuer = lock(&peer.origin).clone();
    for iss in [Some("https://honest.example"), None] {
        let go = auth.begin("up", sealed, "u", None).await.unwrap();
        let state = query(&go.location)["state"].clone();
        assert!(matches!(
            auth.finish(&state, "code", iss, &go.browser, Some("u"))
                .await,
            Err(UserAuthError::WrongIssuer)
        ));
    }
    assert!(lock(&peer.seen).is_empty(), "the code went nowhere");
    // Its own `iss`: connected.
    let go = auth.begin("up", sealed, "u", None).await.unwrap();
    let state = query(&go.location)["state"].clone();
    auth.finish(&state, "code", Some(&issuer), &go.browser, Some("u"))
        .await
        .unwrap();
    assert!(auth.is_connected("up", "u").await.unwrap());
}

#[tokio::test]
async fn a_token_the_upstream_refuses_before_its_expiry_is_refreshed_once_then_the_connection_ends()
{
    let (_dir, store) = store().await;
    let clock = ManualClock::new();
    let peer = peer().await;
    let auth = auth_at(&store, &clock, &peer, registered());
    expired_connection(&auth, &store, &clock, &peer, "u").await;
    // Its expiry says it is good for an hour more (or the server gave none).
    let row = store
        .user_upstream_tokens("up", "u")
        .await
        .unwrap()
        .unwrap();
    store
        .put_user_upstream_tokens("up", "u", &row.sealed, None, clock.now())
        .await
        .unwrap();
    assert!(
        auth.refused_by_upstream("up", "u", false).await.unwrap(),
        "retry"
    );
    assert_eq!(
        auth.token("up", "u")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "access-new"
    );
    assert_eq!(lock(&peer.seen).len(), 1);
    // Refused again with the new token: the user connects again.
    assert!(!auth.refused_by_upstream("up", "u", true).await.unwrap());
    assert!(!auth.is_connected("up", "u").await.unwrap());
}

/// An upstream whose metadata is reachable only through its 401: at a
/// path of its own, naming a scope, with a first authorization server that
/// is down and a second that works.
#[tokio::test]
async fn discovery_follows_the_upstreams_challenge_and_tries_each_listed_server() {
    let (_dir, store) = store().await;
    let clock = ManualClock::new();
    let peer = peer().await;
    let origin = lock(&peer.origin).clone();
    let upstream = {
        let origin = origin.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = format!("http://{}", listener.local_addr().unwrap());
        let challenge = format!(
            r#"Bearer error="invalid_request", resource_metadata="{at}/custom/prm", scope="issues:read""#
        );
        let prm = serde_json::json!({
            "resource": format!("{at}/mcp"),
            "authorization_servers": ["http://127.0.0.1:9/down", origin],
            "scopes_supported": ["issues:read", "issues:write"],
        });
        let app = Router::new()
            .route(
                "/mcp",
                post(move || {
                    let challenge = challenge.clone();
                    async move {
                        (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, challenge)],
                        )
                    }
                }),
            )
            .route("/custom/prm", get(move || async move { Json(prm.clone()) }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        at
    };
    *lock(&peer.origin) = format!("{upstream}/mcp");
    let auth = auth_at(&store, &clock, &peer, registered());
    *lock(&peer.origin) = origin.clone();
    let found = auth.discover("up").await.unwrap();
    assert_eq!(found.server.issuer, origin);
    assert_eq!(found.scopes, ["issues:read"], "the challenge's scope first");
    assert_eq!(found.resource, Some(format!("{upstream}/mcp")));
}

/// 2025-03-26: no protected-resource metadata and no server metadata; the
/// default endpoints at the upstream's origin.
#[tokio::test]
async fn an_upstream_without_any_metadata_gets_the_default_endpoints_at_its_origin() {
    let (_dir, store) = store().await;
    let clock = ManualClock::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, Router::new()).await });
    let peer = Peer::default();
    *lock(&peer.origin) = format!("{at}/mcp");
    let auth = auth_at(&store, &clock, &peer, registered());
    let found = auth.discover("up").await.unwrap();
    assert_eq!(found.server.issuer, at);
    assert_eq!(found.server.token_endpoint, format!("{at}/token"));
    assert_eq!(
        found.server.registration_endpoint,
        Some(format!("{at}/register"))
    );
}

#[tokio::test]
async fn a_registration_made_for_another_public_url_or_with_an_expired_secret_is_made_anew() {
    let (_dir, store) = store().await;
    let clock = ManualClock::new();
    let peer = peer().await;
    let auth = auth_at(&store, &clock, &peer, registered());
    let server = auth.discover("up").await.unwrap().server.clone();
    for (stale, n) in [
        (
            serde_json::json!({"client_id": "old", "redirect_uri": "https://old.example/connect/callback"}),
            1,
        ),
        (
            serde_json::json!({"client_id": "old", "client_secret": "s", "client_secret_expires_at": clock.now() - 1}),
            2,
        ),
    ] {
        let sealed = auth.sealer.seal_json(CLIENT_CONTEXT, &stale).unwrap();
        store
            .forget_upstream_client("up", &server.issuer)
            .await
            .unwrap();
        store
            .save_upstream_client("up", &server.issuer, &sealed, clock.now())
            .await
            .unwrap();
        let client = auth.client("up", &server).await.unwrap();
        assert_eq!(client.client_id, format!("registered-{n}"));
        assert_eq!(
            client.redirect_uri.as_deref(),
            Some("https://gate.example/connect/callback")
        );
    }
    // A registration that still fits is kept (one without the fields, made
    // before they were kept, too).
    let sealed = auth
        .sealer
        .seal_json(CLIENT_CONTEXT, &serde_json::json!({"client_id": "older"}))
        .unwrap();
    store
        .forget_upstream_client("up", &server.issuer)
        .await
        .unwrap();
    store
        .save_upstream_client("up", &server.issuer, &sealed, clock.now())
        .await
        .unwrap();
    assert_eq!(auth.client("up", &server).await.unwrap().client_id, "older");
}

#[tokio::test]
async fn without_the_resource_indicator_no_request_names_a_resource() {
    let (_dir, store) = store().await;
    let clock = ManualClock::new();
    let peer = peer().await;
    let auth = auth_at(
        &store,
        &clock,
        &peer,
        UserAuthSettings {
            resource_indicator: false,
            ..registered()
        },
    );
    let go = begin_connect(&auth).await;
    assert!(!query(&go.location).contains_key("resource"));
    let state = query(&go.location)["state"].clone();
    auth.finish(&state, "code", None, &go.browser, Some("u"))
        .await
        .unwrap();
    expired_connection(&auth, &store, &clock, &peer, "u").await;
    auth.token("up", "u").await.unwrap().unwrap();
    let seen = lock(&peer.seen).clone();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| !s.form.contains_key("resource")));
}
