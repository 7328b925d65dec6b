//! `UserAuth` against SQLite, a manual clock and a fake token endpoint.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::{Form, Json, Router, extract::State, routing::get, routing::post};
use secrecy::ExposeSecret;

use super::*;
use crate::{
    clock::{Clock, ManualClock},
    upstream::settings::{Isolation, PrefixMode, UpstreamConfig},
};

/// A token endpoint that counts refreshes and answers slowly, so
/// concurrent callers overlap.
#[derive(Clone, Default)]
struct FakeAs {
    issuer: Arc<std::sync::Mutex<String>>,
    refreshes: Arc<AtomicUsize>,
}

async fn metadata(State(fake): State<FakeAs>) -> Json<serde_json::Value> {
    let issuer = lock(&fake.issuer).clone();
    Json(serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn token(
    State(fake): State<FakeAs>,
    Form(form): Form<HashMap<String, String>>,
) -> Json<serde_json::Value> {
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["resource"], "http://127.0.0.1:1/mcp");
    let n = fake.refreshes.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Json(serde_json::json!({
        "access_token": format!("access-{n}"),
        "refresh_token": format!("refresh-{n}"),
        "expires_in": 3600,
    }))
}

async fn fake_as() -> (FakeAs, String) {
    let fake = FakeAs::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    *lock(&fake.issuer) = issuer.clone();
    let app = Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/token", post(token))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, issuer)
}

fn config(issuer: Option<&str>) -> GatewayConfig {
    GatewayConfig {
        prefix: PrefixMode::Auto,
        separator: "__".into(),
        upstreams: vec![UpstreamConfig {
            name: "gh".into(),
            transport: Transport::Http {
                url: Url::parse("http://127.0.0.1:1/mcp").unwrap(),
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
            user_auth: Some(UserAuthSettings {
                client_id: Some("mcpgate".into()),
                client_secret: None,
                scopes: Vec::new(),
                authorization_server: issuer.map(|i| Url::parse(i).unwrap()),
                resource_indicator: true,
                authorize_params: Default::default(),
            }),
        }],
    }
}

pub(super) async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (dir, Store::connect(&url, 4).await.unwrap())
}

fn auth(store: &Store, clock: &Arc<ManualClock>, issuer: Option<&str>) -> Arc<UserAuth> {
    UserAuth::new(
        &config(issuer),
        store.clone(),
        Arc::new(Sealer::new(&[7u8; 32]).unwrap()),
        clock.clone(),
        "https://gate.example".into(),
    )
    .unwrap()
    .unwrap()
}

#[tokio::test]
async fn a_connect_link_opens_only_for_its_upstream_until_it_expires_and_names_its_user() {
    let (_dir, store) = store().await;
    let clock = ManualClock::new();
    let auth = auth(&store, &clock, None);
    let link = auth.connect_link("gh", "user-1").unwrap();
    let sealed = link.url.split_once("?e=").unwrap().1;
    assert!(link.url.starts_with("https://gate.example/connect/gh?e="));
    let e = auth.open_link("gh", sealed).unwrap();
    assert_eq!(
        (e.user_id.as_str(), e.id.as_str()),
        ("user-1", link.elicitation_id.as_str())
    );
    // Sealed: no reading the user, no editing it.
    assert!(!sealed.contains("user-1"));
    let mut edited = sealed.to_owned();
    edited.replace_range(sealed.len() - 4.., "AAAA");
    assert!(matches!(
        auth.open_link("gh", &edited),
        Err(UserAuthError::BadLink)
    ));
    // Another upstream's page refuses it.
    assert!(matches!(
        auth.open_link("other", sealed),
        Err(UserAuthError::BadLink)
    ));
    // Another user at the page is refused before anything leaves mcpgate.
    assert!(matches!(
        auth.begin("gh", sealed, "user-2", None).await,
        Err(UserAuthError::WrongUser)
    ));
    clock.advance(Duration::from_secs(ELICITATION_TTL_SECS as u64 + 1));
    assert!(matches!(
        auth.open_link("gh", sealed),
        Err(UserAuthError::BadLink)
    ));
    // The parameters of the 2025-11-25 `URLElicitationRequiredError`.
    let p = link.url_params();
    assert_eq!(p["mode"], "url");
    assert_eq!(p["url"], link.url.as_str());
    assert_eq!(p["elicitationId"], link.elicitation_id.as_str());
}

#[tokio::test]
async fn an_expiring_token_is_refreshed_once_for_every_concurrent_caller_across_replicas() {
    let (_dir, store) = store().await;
    refreshed_once(store).await;
}

/// The same on PostgreSQL, the store replicas share, when one is configured.
#[tokio::test]
async fn refresh_is_single_flight_on_postgresql_too() {
    let Ok(url) = std::env::var("MCPGATE_TEST_POSTGRES_URL") else {
        eprintln!("MCPGATE_TEST_POSTGRES_URL not set: skipping");
        return;
    };
    refreshed_once(Store::connect(&url, 8).await.unwrap()).await;
}

async fn refreshed_once(store: Store) {
    let (fake, issuer) = fake_as().await;
    // Unique per run: a shared database keeps earlier runs' rows.
    let user = format!("u-{}", uuid::Uuid::new_v4());
    let user = user.as_str();
    let clock = ManualClock::new();
    // Two replicas: separate processes' state, one store.
    let a = auth(&store, &clock, Some(&issuer));
    let b = auth(&store, &clock, Some(&issuer));
    let now = clock.now();
    let set = TokenSet {
        access_token: "access-0".into(),
        refresh_token: Some("refresh-0".into()),
        scope: None,
        issuer: issuer.clone(),
    };
    let sealed = a.sealer.seal_json(TOKENS_CONTEXT, &set).unwrap();
    store
        .put_user_upstream_tokens("gh", user, &sealed, Some(now + 600), now)
        .await
        .unwrap();
    // Fresh: no refresh.
    let t = a.token("gh", user).await.unwrap().unwrap();
    assert_eq!(t.expose_secret(), "access-0");
    assert_eq!(fake.refreshes.load(Ordering::SeqCst), 0);
    // Within the margin of its expiry: every caller gets the one new token.
    clock.advance(Duration::from_secs(600 - EXPIRY_MARGIN_SECS as u64 + 1));
    let calls = (0..8).map(|i| {
        let auth = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { auth.token("gh", user).await.unwrap().unwrap() }
    });
    let tokens = futures::future::join_all(calls).await;
    assert_eq!(fake.refreshes.load(Ordering::SeqCst), 1);
    assert!(tokens.iter().all(|t| t.expose_secret() == "access-1"));
    // The rotated refresh token is the one kept.
    let row = store
        .user_upstream_tokens("gh", user)
        .await
        .unwrap()
        .unwrap();
    let kept: TokenSet = a.sealer.open_json(TOKENS_CONTEXT, &row.sealed).unwrap();
    assert_eq!(kept.refresh_token.as_deref(), Some("refresh-1"));
    assert_eq!(row.refresh_lease_until, None);
}

#[tokio::test]
async fn removing_a_user_removes_their_connections() {
    let (_dir, store) = store().await;
    let user = store.create_user("carol", "!x").await.unwrap();
    store
        .put_user_upstream_tokens("gh", &user.id, "sealed", None, 1)
        .await
        .unwrap();
    store
        .put_user_upstream_tokens("gh", "someone-else", "sealed", None, 1)
        .await
        .unwrap();
    assert!(store.delete_user("carol").await.unwrap());
    assert!(
        store
            .user_upstream_tokens("gh", &user.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .user_upstream_tokens("gh", "someone-else")
            .await
            .unwrap()
            .is_some()
    );
}

fn caller(subject: &str, issuer: &str) -> crate::auth::Principal {
    crate::auth::Principal {
        subject: subject.into(),
        issuer: issuer.into(),
        ..crate::auth::Principal::anonymous()
    }
}

#[tokio::test]
async fn a_request_state_opens_only_for_its_user_and_tool_until_it_expires_and_is_sealed() {
    use super::request_state::{RequestStateError, is_own_request_state};
    let (_dir, store) = store().await;
    let clock = ManualClock::new();
    let auth = auth(&store, &clock, None);
    let alice = caller("user-1", "https://gate.example");
    let link = auth.connect_link("gh", "user-1").unwrap();
    let state = auth
        .seal_request_state(&alice, "gh__issues", &link)
        .unwrap();
    assert!(is_own_request_state(&state));
    assert!(!is_own_request_state("an-upstreams-own-state"));
    let retry = auth
        .open_request_state(&state, &alice, "gh__issues")
        .unwrap();
    assert_eq!(retry.upstream, "gh");
    assert_eq!(retry.elicitation_id, link.elicitation_id);
    // Sealed: nothing readable in it, and no edit opens.
    assert!(!state.contains("user-1") && !state.contains("gh__issues"));
    let mut edited = state.clone();
    edited.replace_range(state.len() - 4.., "AAAA");
    assert_eq!(
        auth.open_request_state(&edited, &alice, "gh__issues"),
        Err(RequestStateError::Tampered)
    );
    // Sealed under another context (a connect link's), or by another key: refused.
    let link_seal = link.url.split_once("?e=").unwrap().1;
    assert_eq!(
        auth.open_request_state(
            &format!("{}{link_seal}", super::request_state::REQUEST_STATE_PREFIX),
            &alice,
            "gh__issues"
        ),
        Err(RequestStateError::Tampered)
    );
    let other_key = UserAuth::new(
        &config(None),
        store.clone(),
        Arc::new(Sealer::new(&[8u8; 32]).unwrap()),
        clock.clone(),
        "https://gate.example".into(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        other_key.open_request_state(&state, &alice, "gh__issues"),
        Err(RequestStateError::Tampered)
    );
    // Another user: another subject, or the same subject at another issuer.
    for other in [
        caller("user-2", "https://gate.example"),
        caller("user-1", "https://other.example"),
    ] {
        assert_eq!(
            auth.open_request_state(&state, &other, "gh__issues"),
            Err(RequestStateError::WrongUser)
        );
    }
    // Another tool.
    assert_eq!(
        auth.open_request_state(&state, &alice, "gh__delete_repo"),
        Err(RequestStateError::WrongTool)
    );
    // Expired.
    clock.advance(Duration::from_secs(ELICITATION_TTL_SECS as u64 - 1));
    assert!(
        auth.open_request_state(&state, &alice, "gh__issues")
            .is_ok()
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        auth.open_request_state(&state, &alice, "gh__issues"),
        Err(RequestStateError::Expired)
    );
}
