//! The outside review's attacks on the local authorization server's
//! registration, authorize, token and introspection endpoints, replayed over
//! real HTTP. Each test fails without its defence.

use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::{
    common::{TestServer, sqlite_url},
    oauth_browser::{
        Browser, REDIRECT, authorize_url, exchange_code, hidden, location, no_redirects, pkce,
        public_client, query_of, refresh_grant, register, sign_in_and_approve, token,
    },
};
use mcpgate::config::{RawIntrospectionClient, RawLocalAuth};

async fn local(edit: impl FnOnce(&mut RawLocalAuth)) -> TestServer {
    let mut local = RawLocalAuth::default();
    edit(&mut local);
    TestServer::start_with(|raw| {
        raw.auth.mode = Some("local".to_owned());
        raw.auth.local = Some(local);
    })
    .await
}

/// Rows in one of the server's tables, read straight from its SQLite file.
async fn rows(server: &TestServer, table: &str) -> i64 {
    let pool = sqlx::SqlitePool::connect(&sqlite_url(server.data_dir()))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// Sign in as admin and approve `authorize`; returns the code.
async fn code_at(server: &TestServer, authorize: &str) -> String {
    let password = server.admin_password.clone().unwrap();
    let back = sign_in_and_approve(
        server,
        &mut Browser::default(),
        authorize,
        ("admin", &password),
        &[],
    )
    .await;
    query_of(&back)["code"].clone()
}

/// A full flow for `client_id` with a fresh PKCE pair: `(code, verifier)`.
async fn code_for(server: &TestServer, client_id: &str) -> (String, String) {
    let (verifier, challenge) = pkce();
    let code = code_at(
        server,
        &authorize_url(server, client_id, &challenge, REDIRECT),
    )
    .await;
    (code, verifier)
}

/// `GET /authorize` without following redirects.
async fn get(url: &str) -> reqwest::Response {
    no_redirects().get(url).send().await.unwrap()
}

fn assert_page_not_redirect(r: &reqwest::Response, what: &str) {
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{what}");
    assert!(r.headers().get(header::LOCATION).is_none(), "{what}");
    assert!(
        r.headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.to_str().unwrap().starts_with("text/html")),
        "{what}"
    );
}

// ------------------------------------------------------------ #5 storage exhaustion

#[tokio::test]
async fn a_60_kb_state_is_refused_and_nothing_is_stored() {
    let server = local(|_| {}).await;
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();
    let url = authorize_url(&server, &client_id, &challenge, REDIRECT);
    let flood = url.replace("state=s-1", &format!("state={}", "A".repeat(60 * 1024)));
    for _ in 0..3 {
        let r = get(&flood).await;
        assert_page_not_redirect(&r, "60 KB state");
        assert!(r.text().await.unwrap().contains("invalid_request"));
    }
    assert_eq!(rows(&server, "auth_requests").await, 0);
    // Just over the cap is refused too; an ordinary state is stored.
    let over = url.replace("state=s-1", &format!("state={}", "A".repeat(2049)));
    assert_page_not_redirect(&get(&over).await, "2049-byte state");
    let at_cap = url.replace("state=s-1", &format!("state={}", "A".repeat(2048)));
    assert_eq!(get(&at_cap).await.status(), StatusCode::OK);
    assert_eq!(get(&url).await.status(), StatusCode::OK);
    assert_eq!(rows(&server, "auth_requests").await, 2);
}

#[tokio::test]
async fn a_2_mb_registration_is_refused_with_413_and_an_oauth_error() {
    let server = local(|_| {}).await;
    for size in [2 * 1024 * 1024, 17 * 1024] {
        let body = json!({
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "client_name": "big",
            "padding": "x".repeat(size),
        });
        let r = server
            .client
            .post(server.url("/register"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{size}");
        let error: Value = r.json().await.unwrap();
        assert_eq!(error["error"], "invalid_request", "{error}");
        assert!(
            error["error_description"]
                .as_str()
                .unwrap()
                .contains("16384")
        );
    }
    assert_eq!(rows(&server, "oauth_clients").await, 0);
}

#[tokio::test]
async fn oversized_registration_fields_and_lists_are_refused_and_nothing_is_stored() {
    let server = local(|_| {}).await;
    let long = "x".repeat(8000);
    let uri = format!("https://app.example/{long}");
    let cases = [
        ("contacts", json!(vec!["a@b.example"; 500])),
        ("contacts", json!([format!("{long}@example.com")])),
        ("software_id", json!(long)),
        ("software_version", json!(long)),
        ("client_uri", json!(uri)),
        ("logo_uri", json!(uri)),
        ("tos_uri", json!(uri)),
        ("policy_uri", json!(uri)),
        ("client_name", json!("n".repeat(500))),
        ("scope", json!("calc ".repeat(1000))),
        ("grant_types", json!(vec!["authorization_code"; 500])),
        ("response_types", json!(vec!["code"; 500])),
        ("redirect_uris", json!(vec![REDIRECT; 100])),
        (
            "redirect_uris",
            json!([format!("https://app.example/{long}")]),
        ),
    ];
    for (field, value) in cases {
        let mut body = json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"});
        body[field] = value;
        let (status, error) = register(&server, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}");
        assert!(
            matches!(
                error["error"].as_str(),
                Some("invalid_client_metadata" | "invalid_redirect_uri")
            ),
            "{field}: {error}"
        );
    }
    assert_eq!(rows(&server, "oauth_clients").await, 0);
}

#[tokio::test]
async fn an_authorize_flood_from_one_address_gets_429() {
    let server = local(|l| l.authorize_requests_per_minute = Some(5)).await;
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();
    let url = authorize_url(&server, &client_id, &challenge, REDIRECT);
    for _ in 0..5 {
        assert_eq!(get(&url).await.status(), StatusCode::OK);
    }
    for _ in 0..20 {
        let r = get(&url).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers().get(header::LOCATION).is_none());
    }
    // Bad requests count too: they may cost a metadata-document fetch.
    let r = get(&server.url("/authorize?client_id=https%3A%2F%2Fapp.example%2Fc.json")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rows(&server, "auth_requests").await, 5);
}

#[tokio::test]
async fn registration_stops_at_the_cap_on_never_used_clients_and_used_ones_do_not_count() {
    let server = local(|l| l.max_unused_clients = Some(2)).await;
    let first = public_client(&server).await;
    let _second = public_client(&server).await;
    let body = json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"});
    let (status, error) = register(&server, body.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
    assert_eq!(error["error"], "temporarily_unavailable");
    assert_eq!(rows(&server, "oauth_clients").await, 2);
    // The first client obtains tokens: it no longer counts, so one more fits.
    let (code, verifier) = code_for(&server, &first).await;
    let (status, tokens) = exchange_code(&server, &first, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let (status, _) = register(&server, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = register(&server, body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rows(&server, "oauth_clients").await, 3);
}

// ------------------------------------------------------------ #8 open redirector

#[tokio::test]
async fn invalid_authorization_requests_of_a_self_registered_client_get_a_page_never_a_redirect() {
    let server = local(|_| {}).await;
    let (status, evil) = register(
        &server,
        json!({"redirect_uris": ["https://evil.example/landing"], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = evil["client_id"].as_str().unwrap();
    // The review's request: nothing but the client id.
    let r = get(&server.url(&format!("/authorize?client_id={id}"))).await;
    assert_page_not_redirect(&r, "bare client_id");
    // And every other way to make the request invalid once the client and
    // its redirect URI are known.
    let (_, challenge) = pkce();
    let good = authorize_url(&server, id, &challenge, "https://evil.example/landing");
    for (what, url) in [
        (
            "response_type=token",
            good.replace("response_type=code", "response_type=token"),
        ),
        (
            "no PKCE",
            good.replace("code_challenge=", "code_challenge_x="),
        ),
        (
            "plain PKCE",
            good.replace("code_challenge_method=S256", "code_challenge_method=plain"),
        ),
        ("short challenge", good.replace(&challenge, "abc")),
        (
            "foreign resource",
            good.replace(
                "&resource=",
                "&resource=https%3A%2F%2Fother.example%2Fmcp&x=",
            ),
        ),
        ("duplicated state", format!("{good}&state=again")),
        ("duplicated scope", format!("{good}&scope=calc&scope=calc")),
        (
            "oversized state",
            good.replace("state=s-1", &format!("state={}", "s".repeat(5000))),
        ),
    ] {
        assert_page_not_redirect(&get(&url).await, what);
    }
    assert_eq!(get(&good).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_denied_consent_still_goes_back_to_the_client() {
    // The one error that is redirected: the user saw the consent page.
    let server = local(|_| {}).await;
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();
    let password = server.admin_password.clone().unwrap();
    let mut browser = Browser::default();
    let page = browser
        .get(&authorize_url(&server, &client_id, &challenge, REDIRECT))
        .await;
    let html = page.text().await.unwrap();
    let login = browser
        .post(
            &server.url("/login"),
            &[
                ("request", &hidden(&html, "request")),
                ("csrf", &hidden(&html, "csrf")),
                ("username", "admin"),
                ("password", &password),
            ],
        )
        .await;
    let consent = browser.get(&server.url(&location(&login))).await;
    let html = consent.text().await.unwrap();
    let done = browser
        .post(
            &server.url("/consent"),
            &[
                ("request", &hidden(&html, "request")),
                ("csrf", &hidden(&html, "csrf")),
                ("decision", "deny"),
            ],
        )
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let back = location(&done);
    let q = query_of(&back);
    assert_eq!(q["error"], "access_denied", "{back}");
    assert_eq!(q["state"], "s-1");
    assert!(back.starts_with(REDIRECT));
}

/// Serves `document(own url)` at `http://127.0.0.1:<port>/c.json`; returns the URL.
async fn serve_document(document: impl FnOnce(&str) -> Value) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/c.json", listener.local_addr().unwrap());
    let body = document(&url).to_string();
    let app = axum::Router::new().route(
        "/c.json",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn invalid_authorization_requests_of_a_metadata_document_client_get_a_page() {
    let server = local(|l| l.cimd.allow_loopback_http = Some(true)).await;
    let id = serve_document(|url| {
        json!({"client_id": url, "client_name": "Doc app", "redirect_uris": ["https://evil.example/landing"]})
    })
    .await;
    let (_, challenge) = pkce();
    let good = authorize_url(&server, &id, &challenge, "https://evil.example/landing");
    assert_eq!(
        get(&good).await.status(),
        StatusCode::OK,
        "the document resolves"
    );
    let bad = good.replace("response_type=code", "response_type=token");
    assert_page_not_redirect(&get(&bad).await, "document client, response_type=token");
}

// ------------------------------------------------------------ #15 bidi in client_name

#[tokio::test]
async fn bidi_overrides_in_client_name_are_refused_at_registration_and_in_documents() {
    let server = local(|l| l.cimd.allow_loopback_http = Some(true)).await;
    for name in [
        "Claude\u{202e}gnp.exe",
        "Claude\u{2067}x\u{2069}",
        "Cla\u{200b}ude",
        "Claude\u{feff}",
        "Claude\u{0007}",
    ] {
        let (status, error) = register(
            &server,
            json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "client_name": name}),
        )
        .await;
        assert_eq!(
            (status, error["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_client_metadata")),
            "{name:?}"
        );
    }
    assert_eq!(rows(&server, "oauth_clients").await, 0);
    let id = serve_document(|url| {
        json!({"client_id": url, "client_name": "Claude\u{202e}gnp.exe", "redirect_uris": [REDIRECT]})
    })
    .await;
    let (_, challenge) = pkce();
    let r = get(&authorize_url(&server, &id, &challenge, REDIRECT)).await;
    assert_page_not_redirect(&r, "bidi name in a document");
    assert!(!r.text().await.unwrap().contains('\u{202e}'));
}

// ------------------------------------------------------------ #9 introspection

const RS_SECRET: &str = "a-resource-server-secret-of-some-length";

async fn introspect(server: &TestServer, token: &str, id: &str, secret: &str) -> Value {
    let r = server
        .client
        .post(server.url("/introspect"))
        .form(&[
            ("token", token),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn another_client_introspecting_a_refresh_token_learns_nothing() {
    let server = local(|l| {
        l.introspection_clients = vec![RawIntrospectionClient {
            client_id: "rs".to_owned(),
            client_secret: Some(RS_SECRET.to_owned()),
            client_secret_file: None,
        }]
    })
    .await;
    let confidential = json!({
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "client_secret_post",
        "grant_types": ["authorization_code", "refresh_token"],
    });
    let (_, a) = register(&server, confidential.clone()).await;
    let (_, b) = register(&server, confidential).await;
    let (a_id, a_secret) = (
        a["client_id"].as_str().unwrap(),
        a["client_secret"].as_str().unwrap(),
    );
    let (b_id, b_secret) = (
        b["client_id"].as_str().unwrap(),
        b["client_secret"].as_str().unwrap(),
    );
    let (code, verifier) = code_for(&server, a_id).await;
    let (status, tokens) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", REDIRECT),
            ("client_id", a_id),
            ("client_secret", a_secret),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    for t in [refresh, access] {
        // Client B: no status, no subject, no scope.
        assert_eq!(
            introspect(&server, t, b_id, b_secret).await,
            json!({"active": false})
        );
        // Client A, to which it was issued.
        let own = introspect(&server, t, a_id, a_secret).await;
        assert_eq!(own["active"], true, "{own}");
        assert_eq!(own["client_id"], a_id);
        // The configured resource server.
        let rs = introspect(&server, t, "rs", RS_SECRET).await;
        assert_eq!(rs["active"], true, "{rs}");
    }
    // A wrong resource-server secret is a failed authentication.
    let r = server
        .client
        .post(server.url("/introspect"))
        .form(&[
            ("token", refresh),
            ("client_id", "rs"),
            ("client_secret", "wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

// ------------------------------------------------------------ #10 PKCE verifier and redirect_uri

#[tokio::test]
async fn a_weak_or_malformed_pkce_verifier_is_refused_even_when_it_matches() {
    let server = local(|_| {}).await;
    let client_id = public_client(&server).await;
    for verifier in [
        "a".to_owned(),
        "x".repeat(42),
        "x".repeat(129),
        format!("{}+/=", "x".repeat(40)),
        format!("{} ", "x".repeat(43)),
    ] {
        let challenge = mcpgate::oauth::crypto::pkce_s256(&verifier);
        let code = code_at(
            &server,
            &authorize_url(&server, &client_id, &challenge, REDIRECT),
        )
        .await;
        let (status, body) = exchange_code(&server, &client_id, &code, &verifier).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "{verifier:?}"
        );
    }
    // The bounds themselves are fine, with every allowed character.
    for verifier in ["aZ09-._~".repeat(6)[..43].to_owned(), "aZ09-._~".repeat(16)] {
        let challenge = mcpgate::oauth::crypto::pkce_s256(&verifier);
        let code = code_at(
            &server,
            &authorize_url(&server, &client_id, &challenge, REDIRECT),
        )
        .await;
        let (status, body) = exchange_code(&server, &client_id, &code, &verifier).await;
        assert_eq!(status, StatusCode::OK, "{verifier:?}: {body}");
    }
}

#[tokio::test]
async fn redirect_uri_is_required_at_token_when_the_authorization_request_sent_it() {
    let server = local(|_| {}).await;
    let client_id = public_client(&server).await;
    let (code, verifier) = code_for(&server, &client_id).await;
    let base = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", verifier.as_str()),
        ("client_id", client_id.as_str()),
    ];
    let (status, body) = token(&server, &base).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{body}"
    );
    for other in [
        "http://127.0.0.1:9/cb/",
        "http://127.0.0.1:10/cb",
        "http://127.0.0.1:9/other",
    ] {
        let mut form = base.to_vec();
        form.push(("redirect_uri", other));
        let (status, body) = token(&server, &form).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "{other}"
        );
    }
    let mut form = base.to_vec();
    form.push(("redirect_uri", REDIRECT));
    let (status, body) = token(&server, &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // An authorization request without redirect_uri (the client has only
    // one): the token request may leave it out too (RFC 6749 §4.1.3).
    let (verifier, challenge) = pkce();
    let url = authorize_url(&server, &client_id, &challenge, REDIRECT).replace(
        &format!(
            "redirect_uri={}&",
            url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
        ),
        "",
    );
    assert!(!url.contains("redirect_uri"));
    let code = code_at(&server, &url).await;
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

// ------------------------------------------------------------ code presented by another client

#[tokio::test]
async fn a_code_presented_by_another_client_does_not_revoke_the_victims_grant() {
    let clock = mcpgate::clock::ManualClock::new();
    let server =
        crate::local_auth::local_on_clock(|l| l.code_replay_window_secs = Some(0), clock.clone())
            .await;
    let victim = public_client(&server).await;
    let attacker = public_client(&server).await;
    let (code, verifier) = code_for(&server, &victim).await;
    // Before the victim redeems: the attacker's attempts neither succeed nor spend the code.
    let (wrong, _) = pkce();
    for v in [wrong.as_str(), verifier.as_str()] {
        let (status, body) = exchange_code(&server, &attacker, &code, v).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant"))
        );
    }
    let (status, tokens) = exchange_code(&server, &victim, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    // After: the attacker again, and the victim's grant lives on.
    let (status, _) = exchange_code(&server, &attacker, &code, &verifier).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, next) = refresh_grant(&server, &victim, refresh).await;
    assert_eq!(status, StatusCode::OK, "{next}");

    // The client the code was issued to presenting it again after the
    // replay window: that is reuse, and the family is revoked.
    let (code, verifier) = code_for(&server, &victim).await;
    let (status, tokens) = exchange_code(&server, &victim, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK);
    clock.advance(std::time::Duration::from_secs(1));
    let (status, body) = exchange_code(&server, &victim, &code, &verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, _) =
        refresh_grant(&server, &victim, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

// ------------------------------------------------------------ the store's half, on both backends

#[tokio::test]
async fn rate_limit_windows_count_several_events_at_once_on_both_backends() {
    use mcpgate::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![sqlite_url(dir.path())];
    if let Some(url) = crate::common::fresh_postgres_database("sec_limits").await {
        urls.push(url);
    }
    for url in urls {
        let store = Store::connect(&url, 4).await.unwrap();
        // A lease of 5, then single events, then a new window that starts
        // at the lease's size; keys apart.
        assert_eq!(
            store.hit_window("k", 5, 60, 1000).await.unwrap().count,
            5,
            "{url}"
        );
        assert_eq!(
            store.hit_window("k", 1, 60, 1030).await.unwrap().count,
            6,
            "{url}"
        );
        let fresh = store.hit_window("k", 5, 60, 1060).await.unwrap();
        assert_eq!((fresh.count, fresh.window_start), (5, 1060), "{url}");
        assert_eq!(
            store.hit_window("j", 1, 60, 1060).await.unwrap().count,
            1,
            "{url}"
        );
        // The all-or-nothing take still counts one.
        let taken = store
            .take_from_window("k", 10, 60, 1061)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(taken.count, 6, "{url}");
    }
}

#[tokio::test]
async fn the_unused_client_cap_and_the_redirect_uri_flag_hold_on_both_backends() {
    use mcpgate::store::{ClientRecord, CodeRecord, Store, now_epoch};
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![sqlite_url(dir.path())];
    if let Some(url) = crate::common::fresh_postgres_database("sec_oauth").await {
        urls.push(url);
    }
    for url in urls {
        let store = Store::connect(&url, 4).await.unwrap();
        let now = now_epoch();
        let client = |id: &str, used: Option<i64>| ClientRecord {
            client_id: id.to_owned(),
            secret_hash: None,
            metadata: "{}".to_owned(),
            created_at: now,
            last_used_at: used,
        };
        assert!(
            store
                .insert_client_capped(&client("a", None), Some(2))
                .await
                .unwrap()
        );
        assert!(
            store
                .insert_client_capped(&client("b", Some(now)), Some(2))
                .await
                .unwrap()
        );
        assert!(
            store
                .insert_client_capped(&client("c", None), Some(2))
                .await
                .unwrap()
        );
        assert!(
            !store
                .insert_client_capped(&client("d", None), Some(2))
                .await
                .unwrap()
        );
        assert!(store.get_client("d").await.unwrap().is_none(), "{url}");
        store.touch_client("a", now).await.unwrap();
        assert!(
            store
                .insert_client_capped(&client("d", None), Some(2))
                .await
                .unwrap()
        );
        // The count the registration path takes once a second: up to the cap.
        assert_eq!(store.count_unused_clients(10).await.unwrap(), 2, "{url}");
        assert_eq!(store.count_unused_clients(1).await.unwrap(), 1, "{url}");
        // Without a cap the insert does not count (the caller knows it is far),
        // and a taken id is still a conflict, not a second row.
        assert!(
            store
                .insert_client_capped(&client("e", None), None)
                .await
                .unwrap()
        );
        assert!(matches!(
            store.insert_client_capped(&client("e", None), None).await,
            Err(mcpgate::store::StoreError::Conflict(_))
        ));
        assert_eq!(store.count_unused_clients(10).await.unwrap(), 3, "{url}");
        for (hash, sent) in [("h1", true), ("h2", false)] {
            store
                .insert_code(&CodeRecord {
                    code_hash: hash.to_owned(),
                    client_id: "a".into(),
                    user_id: "u".into(),
                    redirect_uri: REDIRECT.into(),
                    code_challenge: "x".into(),
                    scope: "calc".into(),
                    resource: "r".into(),
                    family_id: format!("f-{hash}"),
                    created_at: now,
                    expires_at: now + 60,
                    redeemed_at: None,
                    response_sealed: None,
                    redirect_uri_sent: sent,
                })
                .await
                .unwrap();
            assert_eq!(
                store
                    .get_code(hash)
                    .await
                    .unwrap()
                    .unwrap()
                    .redirect_uri_sent,
                sent,
                "{url}"
            );
        }
        store.close().await;
    }
}

#[tokio::test]
async fn another_client_cannot_tell_a_live_token_or_code_from_garbage_at_the_token_endpoint() {
    let server = local(|_| {}).await;
    let victim = public_client(&server).await;
    let attacker = public_client(&server).await;
    let (code, verifier) = code_for(&server, &victim).await;
    let (_, garbage) = pkce();
    let (status, stolen) = exchange_code(&server, &attacker, &code, &verifier).await;
    let (_, unknown) = exchange_code(&server, &attacker, &garbage, &verifier).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(stolen, unknown);
    let (status, tokens) = exchange_code(&server, &victim, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK);
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, stolen) = refresh_grant(&server, &attacker, refresh).await;
    let (_, unknown) = refresh_grant(&server, &attacker, &garbage).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(stolen, unknown);
    // Nothing rotated or revoked: the victim refreshes as usual.
    let (status, body) = refresh_grant(&server, &victim, refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
