//! Bridge mode under attack (review findings 1, 14 and the Auth0
//! application flood). The fake IdP behaves like a standard authorization
//! server: it knows each client's redirect URIs, remembers consent, and
//! checks `client_id`, `redirect_uri` and PKCE at `/token`.

use mcpgate::config::{RawBridge, RawResourceAuth};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    common::{TestServer, sqlite_url},
    fake_idp::FakeIdp,
    oauth_browser::{Browser, hidden, location, no_redirects, pkce, query_of, register},
};

const VICTIM_APP: &str = "https://victim-app.example/cb";
const ATTACKER_CB: &str = "http://127.0.0.1:9/attacker-cb";

pub async fn passthrough(idp: &FakeIdp) -> TestServer {
    start(idp, |b| {
        b.registrar = Some("passthrough".to_owned());
    })
    .await
}

async fn start(idp: &FakeIdp, edit: impl FnOnce(&mut RawBridge)) -> TestServer {
    let mut raw_bridge = RawBridge::default();
    edit(&mut raw_bridge);
    let server = TestServer::start_with(|raw| {
        raw.auth.mode = Some("bridge".to_owned());
        raw.auth.resource = Some(RawResourceAuth {
            issuer: Some(idp.issuer.clone()),
            ..RawResourceAuth::default()
        });
        raw.auth.bridge = Some(raw_bridge);
    })
    .await;
    idp.set_resource(&server.url("/mcp"));
    server
}

fn auth0(b: &mut RawBridge) {
    b.registrar = Some("auth0".to_owned());
    b.management_client_id = Some("m2m".to_owned());
    b.management_client_secret = Some("m2m-secret".to_owned());
}

fn mgmt_token(idp: &FakeIdp) {
    idp.answer_token(
        200,
        json!({"access_token": "mgmt-token", "token_type": "Bearer", "expires_in": 86400}),
    );
}

async fn client(server: &TestServer, redirect: &str, name: &str) -> String {
    let (status, body) = register(
        server,
        json!({"redirect_uris": [redirect], "token_endpoint_auth_method": "none", "client_name": name}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["client_id"].as_str().unwrap().to_owned()
}

pub fn authorize_query(client_id: &str, redirect: &str, challenge: &str, state: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", state)
        .append_pair("scope", "calc")
        .finish()
}

/// mcpgate's consent page for `query` in `browser`: its request id and CSRF token.
pub async fn consent_page(
    server: &TestServer,
    browser: &mut Browser,
    query: &str,
) -> (String, String) {
    let r = browser
        .get(&server.url(&format!("/authorize?{query}")))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(location(&r).is_empty());
    let html = r.text().await.unwrap();
    (hidden(&html, "request"), hidden(&html, "csrf"))
}

/// The consent page approved in `browser`: the IdP authorization URL.
pub async fn approve(server: &TestServer, browser: &mut Browser, query: &str) -> String {
    let (request, csrf) = consent_page(server, browser, query).await;
    let r = browser
        .post(
            &server.url("/consent"),
            &[
                ("request", &request),
                ("csrf", &csrf),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    location(&r)
}

/// `url` with query parameter `name` set to `value` (what an attacker edits).
fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

/// The victim's browser: signed in at the IdP, no mcpgate cookie.
fn victim_browser() -> Browser {
    Browser {
        cookies: vec![("idp_user".to_owned(), "alice".to_owned())],
    }
}

async fn redeem(
    server: &TestServer,
    client_id: &str,
    code: &str,
    verifier: &str,
) -> (StatusCode, Value) {
    let r = server
        .client
        .post(server.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

fn assert_page_headers(r: &reqwest::Response, what: &str) {
    let h = r.headers();
    let csp = h
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"))
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
    assert_eq!(h["cache-control"], "no-store", "{what}");
    assert!(
        h["content-type"].to_str().unwrap().starts_with("text/html"),
        "{what}"
    );
}

/// The review's attack, end to end: the attacker approves its own client A
/// at mcpgate, swaps `client_id=A` for the victim's V in the IdP URL (and in
/// a second try the callback too) and sends the link to the victim, who
/// consented to V at the IdP before. The attacker ends with no code and no
/// token, and the IdP issues none to anyone but the victim's own flow.
#[tokio::test]
async fn swapping_client_id_in_the_idp_url_gets_the_attacker_no_code_and_no_token() {
    let idp = FakeIdp::start().await;
    let server = passthrough(&idp).await;
    let victim_client = client(&server, VICTIM_APP, "Victim App").await;
    let attacker_client = client(&server, ATTACKER_CB, "Attacker").await;
    idp.remember_consent("alice", &victim_client);

    // The attacker's own flow for A, approved in its own browser.
    let (verifier, challenge) = pkce();
    let mut attacker = Browser::default();
    let idp_url = approve(
        &server,
        &mut attacker,
        &authorize_query(&attacker_client, ATTACKER_CB, &challenge, "x"),
    )
    .await;
    assert!(
        idp_url.starts_with(&format!("{}/authorize?", idp.issuer)),
        "{idp_url}"
    );
    let a_callback = query_of(&idp_url)["redirect_uri"].clone();
    assert!(
        a_callback.starts_with(&server.url("/callback/")),
        "per-client callback: {a_callback}"
    );

    // 1. Only client_id swapped: A's callback is not V's, so the IdP stops.
    let swapped = with_param(&idp_url, "client_id", &victim_client);
    let r = victim_browser().get(&swapped).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "the IdP must refuse");
    assert!(location(&r).is_empty());

    // 2. The callback swapped too, to V's (which the attacker learns from a
    // flow for V in its own browser): the IdP issues V's code silently, but
    // mcpgate refuses A's state at V's callback, with a page.
    let v_url = approve(
        &server,
        &mut Browser::default(),
        &authorize_query(&victim_client, VICTIM_APP, &challenge, "v"),
    )
    .await;
    let v_callback = query_of(&v_url)["redirect_uri"].clone();
    assert_ne!(v_callback, a_callback);
    let swapped = with_param(&swapped, "redirect_uri", &v_callback);
    let mut victim = victim_browser();
    let r = victim.get(&swapped).await;
    assert_eq!(r.status(), StatusCode::FOUND, "the IdP answers silently");
    let at_callback = location(&r);
    assert!(at_callback.starts_with(&v_callback), "{at_callback}");
    let stolen = query_of(&at_callback)["code"].clone();
    let r = victim.get(&at_callback).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(location(&r).is_empty(), "no code goes on to the attacker");
    assert!(!r.text().await.unwrap().contains(&stolen));

    // Even holding that code, the attacker cannot redeem it at mcpgate, as
    // V or as A: it never came through for anyone.
    for as_client in [&victim_client, &attacker_client] {
        let (status, body) = redeem(&server, as_client, &stolen, &verifier).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_grant");
    }
    assert!(
        idp.token_requests
            .lock()
            .unwrap()
            .iter()
            .all(|(_, form)| form.get("code") != Some(&stolen)),
        "mcpgate relayed the stolen code"
    );
}

/// An answer for client V's flow delivered at client A's callback path (or
/// the other way round) is refused: the state names its client.
#[tokio::test]
async fn a_state_answered_at_another_clients_callback_is_refused() {
    let idp = FakeIdp::start().await;
    let server = passthrough(&idp).await;
    let a = client(&server, ATTACKER_CB, "A").await;
    let v = client(&server, VICTIM_APP, "V").await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let a_url = approve(
        &server,
        &mut browser,
        &authorize_query(&a, ATTACKER_CB, &challenge, "a"),
    )
    .await;
    let v_url = approve(
        &server,
        &mut browser,
        &authorize_query(&v, VICTIM_APP, &challenge, "v"),
    )
    .await;
    let a_state = query_of(&a_url)["state"].clone();
    let v_callback = query_of(&v_url)["redirect_uri"].clone();
    let r = browser
        .get(&format!("{v_callback}?code=c1&state={a_state}"))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(location(&r).is_empty());
    assert_page_headers(&r, "wrong client callback");
    // The state is spent: the right path cannot use it afterwards either.
    let a_callback = query_of(&a_url)["redirect_uri"].clone();
    let r = browser
        .get(&format!("{a_callback}?code=c1&state={a_state}"))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(location(&r).is_empty());
    // The old shared callback answers a page, never a redirect.
    let r = browser.get(&server.url("/callback?code=c&state=s")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(location(&r).is_empty());
}

/// The attacker approves its own client and sends the victim the IdP URL
/// unchanged (the Auth0 first-party variant: the IdP asks nothing). The
/// answer arrives in a browser without the cookie of the consent: refused.
#[tokio::test]
async fn a_callback_in_another_browser_is_refused_with_a_page() {
    let idp = FakeIdp::start().await;
    let server = passthrough(&idp).await;
    let a = client(&server, ATTACKER_CB, "A").await;
    idp.remember_consent("alice", &a);
    let (_, challenge) = pkce();
    let idp_url = approve(
        &server,
        &mut Browser::default(),
        &authorize_query(&a, ATTACKER_CB, &challenge, "a"),
    )
    .await;
    for cookie in [
        None,
        Some("mcpgate_bridge=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        // Each try needs a fresh state; the first one spends it.
        let idp_url = if cookie.is_none() {
            idp_url.clone()
        } else {
            approve(
                &server,
                &mut Browser::default(),
                &authorize_query(&a, ATTACKER_CB, &challenge, "a"),
            )
            .await
        };
        let mut victim = victim_browser();
        if let Some(c) = cookie {
            let (k, v) = c.split_once('=').unwrap();
            victim.cookies.push((k.to_owned(), v.to_owned()));
        }
        let r = victim.get(&idp_url).await;
        assert_eq!(r.status(), StatusCode::FOUND);
        let r = victim.get(&location(&r)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{cookie:?}");
        assert!(location(&r).is_empty());
        assert_page_headers(&r, "other browser");
        assert!(r.text().await.unwrap().contains("another browser"));
    }
}

/// `/authorize` answers mcpgate's own consent page (client name, where the
/// browser goes back, the scopes) and sends nothing to the IdP; the whole
/// legitimate flow then works, and the IdP saw the client's own callback.
#[tokio::test]
async fn the_consent_page_comes_before_any_idp_redirect() {
    let idp = FakeIdp::start().await;
    let server = passthrough(&idp).await;
    let v = client(&server, VICTIM_APP, "Victim <App>").await;
    idp.remember_consent("alice", &v);
    let (verifier, challenge) = pkce();
    let mut browser = victim_browser();
    let query = authorize_query(&v, VICTIM_APP, &challenge, "s-1");
    let r = browser
        .get(&server.url(&format!("/authorize?{query}")))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(location(&r).is_empty());
    assert_page_headers(&r, "consent");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("mcpgate_bridge="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("Victim &lt;App&gt;"), "{html}");
    assert!(html.contains("victim-app.example"), "{html}");
    assert!(html.contains("<code>calc</code>"), "{html}");
    assert!(idp.standard.lock().unwrap().authorize_requests.is_empty());

    let idp_url = approve(&server, &mut browser, &query).await;
    let r = browser.get(&idp_url).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let r = browser.get(&location(&r)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert!(to.starts_with(VICTIM_APP), "{to}");
    let q = query_of(&to);
    assert_eq!(q["state"], "s-1");
    assert_eq!(q["iss"], server.base);
    let (status, body) = redeem(&server, &v, &q["code"], &verifier).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["access_token"],
        format!("IDP-ACCESS-TOKEN(user=alice,client={v})")
    );
}

#[tokio::test]
async fn denying_consent_sends_access_denied_to_the_clients_redirect_uri() {
    let idp = FakeIdp::start().await;
    let server = passthrough(&idp).await;
    let v = client(&server, VICTIM_APP, "V").await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let (request, csrf) = consent_page(
        &server,
        &mut browser,
        &authorize_query(&v, VICTIM_APP, &challenge, "s-9"),
    )
    .await;
    let r = browser
        .post(
            &server.url("/consent"),
            &[("request", &request), ("csrf", &csrf), ("decision", "deny")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert!(to.starts_with(VICTIM_APP), "{to}");
    let q = query_of(&to);
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "s-9");
    assert_eq!(q["iss"], server.base);
    assert!(idp.standard.lock().unwrap().authorize_requests.is_empty());
    // Decided once.
    let r = browser
        .post(
            &server.url("/consent"),
            &[
                ("request", &request),
                ("csrf", &csrf),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(location(&r).is_empty());
}

/// A cross-site POST to `/consent` (no cookie, or another browser's cookie,
/// or a forged CSRF token) decides nothing.
#[tokio::test]
async fn a_consent_form_from_another_browser_or_with_a_forged_csrf_is_refused() {
    let idp = FakeIdp::start().await;
    let server = passthrough(&idp).await;
    let v = client(&server, VICTIM_APP, "V").await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let (request, csrf) = consent_page(
        &server,
        &mut browser,
        &authorize_query(&v, VICTIM_APP, &challenge, "s"),
    )
    .await;
    let mut other = Browser::default();
    let _ = consent_page(
        &server,
        &mut other,
        &authorize_query(&v, VICTIM_APP, &challenge, "t"),
    )
    .await;
    for (who, b, csrf) in [
        ("no cookie", &mut Browser::default(), csrf.as_str()),
        ("other browser", &mut other, csrf.as_str()),
        ("forged csrf", &mut browser, "forged"),
    ] {
        let r = b
            .post(
                &server.url("/consent"),
                &[
                    ("request", &request),
                    ("csrf", csrf),
                    ("decision", "approve"),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{who}");
        assert!(location(&r).is_empty(), "{who}");
        assert_page_headers(&r, who);
    }
    // The real browser still can.
    let r = browser
        .post(
            &server.url("/consent"),
            &[
                ("request", &request),
                ("csrf", &csrf),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(idp.standard.lock().unwrap().authorize_requests.is_empty());
}

/// A code delivered to client A's redirect URI is relayed only for A (the
/// review's last step, redeeming as V, is refused before the IdP), and
/// always with A's own callback as `redirect_uri`.
#[tokio::test]
async fn a_code_is_redeemed_only_by_the_client_it_came_back_for() {
    let idp = FakeIdp::start().await;
    let server = passthrough(&idp).await;
    let a = client(&server, ATTACKER_CB, "A").await;
    let v = client(&server, VICTIM_APP, "V").await;
    idp.remember_consent("alice", &a);
    let (verifier, challenge) = pkce();
    let mut browser = victim_browser();
    let idp_url = approve(
        &server,
        &mut browser,
        &authorize_query(&a, ATTACKER_CB, &challenge, "s"),
    )
    .await;
    let a_callback = query_of(&idp_url)["redirect_uri"].clone();
    let r = browser.get(&idp_url).await;
    let r = browser.get(&location(&r)).await;
    let code = query_of(&location(&r))["code"].clone();
    let before = idp.token_requests.lock().unwrap().len();
    let (status, body) = redeem(&server, &v, &code, &verifier).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(
        idp.token_requests.lock().unwrap().len(),
        before,
        "nothing relayed"
    );
    // Another redirect_uri than the authorization request's is refused too.
    let r = server
        .client
        .post(server.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", a.as_str()),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
            ("redirect_uri", "http://127.0.0.1:9/other"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (status, body) = redeem(&server, &a, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let requests = idp.token_requests.lock().unwrap();
    assert_eq!(requests.last().unwrap().1["redirect_uri"], a_callback);
}

/// Every HTML page bridge mode answers carries the security headers of
/// mcpgate's other pages (review finding 14).
#[tokio::test]
async fn every_bridge_page_carries_the_security_headers() {
    let idp = FakeIdp::start().await;
    let server = passthrough(&idp).await;
    let v = client(&server, VICTIM_APP, "V").await;
    let (_, challenge) = pkce();
    let pages = [
        format!(
            "/authorize?{}",
            authorize_query(&v, VICTIM_APP, &challenge, "s")
        ),
        format!("/authorize?client_id={v}"),
        "/authorize?client_id=unknown".to_owned(),
        format!(
            "/authorize?{}",
            authorize_query(&v, "https://evil.example/cb", &challenge, "s")
        ),
        "/callback?code=c&state=s".to_owned(),
        "/callback/nokey?code=c&state=s".to_owned(),
        "/callback/nokey?code=c".to_owned(),
    ];
    for path in pages {
        let r = no_redirects().get(server.url(&path)).send().await.unwrap();
        assert!(location(&r).is_empty(), "{path}");
        assert_page_headers(&r, &path);
    }
    let r = no_redirects()
        .post(server.url("/consent"))
        .form(&[("request", "x"), ("csrf", "y")])
        .send()
        .await
        .unwrap();
    assert_page_headers(&r, "POST /consent");
}

/// Auth0 applications are third party (Auth0 always shows its consent for
/// them) and each has its own callback.
#[tokio::test]
async fn auth0_applications_are_third_party_with_their_own_callback() {
    let idp = FakeIdp::start().await;
    let server = start(&idp, auth0).await;
    mgmt_token(&idp);
    let one = client(&server, VICTIM_APP, "One").await;
    let two = client(&server, VICTIM_APP, "Two").await;
    let created = idp.management_clients.lock().unwrap().clone();
    assert_eq!(created.len(), 2);
    let mut callbacks = Vec::new();
    for app in &created {
        assert_eq!(app["is_first_party"], false, "{app}");
        let cb = app["callbacks"][0].as_str().unwrap().to_owned();
        assert!(cb.starts_with(&server.url("/callback/")), "{cb}");
        assert_eq!(app["callbacks"].as_array().unwrap().len(), 1);
        callbacks.push(cb);
    }
    assert_ne!(callbacks[0], callbacks[1]);
    // Each client's flow goes to the IdP with its own callback.
    let (_, challenge) = pkce();
    for (id, cb) in [(&one, &callbacks[0]), (&two, &callbacks[1])] {
        let url = approve(
            &server,
            &mut Browser::default(),
            &authorize_query(id, VICTIM_APP, &challenge, "s"),
        )
        .await;
        assert_eq!(&query_of(&url)["redirect_uri"], cb);
    }
}

/// The daily budget of Auth0 applications is counted in the store: it holds
/// for a second replica on the same store, which answers 503 with
/// Retry-After and never reaches the Management API.
#[tokio::test]
async fn the_daily_budget_of_auth0_applications_holds_across_replicas() {
    let idp = FakeIdp::start().await;
    let server = start(&idp, |b| {
        auth0(b);
        b.applications_per_day = Some(2);
    })
    .await;
    mgmt_token(&idp);
    client(&server, VICTIM_APP, "1").await;
    client(&server, VICTIM_APP, "2").await;
    let body = json!({"redirect_uris": [VICTIM_APP], "token_endpoint_auth_method": "none"});
    let r = server
        .client
        .post(server.url("/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry: i64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["error"], "temporarily_unavailable");
    // Another replica on the same store.
    let shared = sqlite_url(server.data_dir());
    let replica = TestServer::start_with(|raw| {
        raw.auth.mode = Some("bridge".to_owned());
        raw.auth.resource = Some(RawResourceAuth {
            issuer: Some(idp.issuer.clone()),
            ..RawResourceAuth::default()
        });
        let mut b = RawBridge::default();
        auth0(&mut b);
        b.applications_per_day = Some(2);
        raw.auth.bridge = Some(b);
        raw.store.url = Some(shared);
    })
    .await;
    let (status, _) = register(&replica, body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(idp.management_clients.lock().unwrap().len(), 2);
}

/// Registration is capped before anything reaches the IdP: the body size,
/// each field and list, and control or bidi characters in `client_name`.
#[tokio::test]
async fn oversized_or_spoofing_registrations_never_reach_the_idp() {
    let idp = FakeIdp::start().await;
    let server = start(&idp, auth0).await;
    mgmt_token(&idp);
    let r = server
        .client
        .post(server.url("/register"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"redirect_uris\":[\"{VICTIM_APP}\"],\"software_id\":\"{}\"}}",
            "x".repeat(2 * 1024 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = r.json().await.unwrap();
    // The local server's code for the same refusal (one front, issue 15).
    assert_eq!(body["error"], "invalid_request");
    for bad in [
        json!({"redirect_uris": [VICTIM_APP], "client_name": "Claude\u{202e}gnp.exe"}),
        json!({"redirect_uris": [VICTIM_APP], "client_name": "Claude\u{2066}"}),
        json!({"redirect_uris": [VICTIM_APP], "client_name": "a\nb"}),
        json!({"redirect_uris": [VICTIM_APP], "client_name": "x".repeat(201)}),
        json!({"redirect_uris": vec![VICTIM_APP; 11]}),
        json!({"redirect_uris": [VICTIM_APP], "contacts": vec!["a@b.example"; 6]}),
        json!({"redirect_uris": [VICTIM_APP], "contacts": ["x".repeat(400)]}),
        json!({"redirect_uris": [VICTIM_APP], "software_id": "x".repeat(5000)}),
        json!({"redirect_uris": [VICTIM_APP], "logo_uri": format!("https://a.example/{}", "x".repeat(3000))}),
    ] {
        let (status, body) = register(&server, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"], "invalid_client_metadata", "{bad}");
    }
    assert!(idp.management_clients.lock().unwrap().is_empty());
    assert!(idp.token_requests.lock().unwrap().is_empty());
}

/// Passthrough relays only the known registration fields, never whatever
/// else the body carries.
#[tokio::test]
async fn passthrough_relays_only_known_registration_fields() {
    let idp = FakeIdp::start().await;
    let server = passthrough(&idp).await;
    let (status, _) = register(
        &server,
        json!({"redirect_uris": [VICTIM_APP], "client_name": "N", "junk": "y".repeat(10_000)}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let relayed = idp.registrations.lock().unwrap()[0].clone();
    assert_eq!(relayed["client_name"], "N");
    assert!(relayed.get("junk").is_none(), "{relayed}");
}

/// Applications mcpgate created and that obtained no token for
/// `unused_application_days` are deleted at Auth0 by the sweep; used ones
/// and recent ones stay.
#[tokio::test]
async fn unused_auth0_applications_are_deleted_by_the_sweep() {
    use mcpgate::store::{BridgeClientRecord, Store, now_epoch};
    let idp = FakeIdp::start().await;
    mgmt_token(&idp);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&sqlite_url(dir.path()), 2).await.unwrap();
    let now = now_epoch();
    let day = 86_400;
    for (id, created, used, managed) in [
        ("old-unused", now - 40 * day, None, 1),
        ("old-used-lately", now - 40 * day, Some(now - day), 1),
        ("old-used-long-ago", now - 90 * day, Some(now - 31 * day), 1),
        ("recent", now - day, None, 1),
        ("relayed-dcr", now - 40 * day, None, 0),
    ] {
        store
            .save_bridge_client(&BridgeClientRecord {
                client_id: id.to_owned(),
                redirect_uris: json!([VICTIM_APP]).to_string(),
                created_at: created,
                callback_key: Some(format!("key-{id}")),
                client_name: None,
                managed,
                last_used_at: used,
            })
            .await
            .unwrap();
    }
    let mut raw = mcpgate::config::RawConfig {
        public_url: Some("http://127.0.0.1:1".to_owned()),
        ..Default::default()
    };
    raw.auth.mode = Some("bridge".to_owned());
    raw.auth.resource = Some(RawResourceAuth {
        issuer: Some(idp.issuer.clone()),
        ..RawResourceAuth::default()
    });
    let mut b = RawBridge::default();
    auth0(&mut b);
    raw.auth.bridge = Some(b);
    raw.data_dir = Some(dir.path().to_path_buf());
    raw.store.url = Some(sqlite_url(dir.path()));
    let config = raw.validate().unwrap();
    let bridge = mcpgate::bridge::Bridge::connect(
        config.auth.bridge().unwrap(),
        config.auth.resource().unwrap(),
        "http://127.0.0.1:1".to_owned(),
        vec![],
        store.clone(),
    )
    .await
    .unwrap();
    bridge.sweep().await;
    let mut deleted = idp.management_deleted.lock().unwrap().clone();
    deleted.sort();
    assert_eq!(deleted, ["old-unused", "old-used-long-ago"]);
    for (id, kept) in [
        ("old-unused", false),
        ("old-used-long-ago", false),
        ("old-used-lately", true),
        ("recent", true),
        ("relayed-dcr", true),
    ] {
        assert_eq!(
            store.bridge_client(id).await.unwrap().is_some(),
            kept,
            "{id}"
        );
    }
}

/// The bridge's store statements on both backends (the budget is counted
/// in one statement, so replicas on PostgreSQL share it too).
#[tokio::test]
async fn the_bridge_store_holds_on_sqlite_and_postgres() {
    use mcpgate::store::{
        BridgeClientRecord, BridgeCodeRecord, BridgeRequestRecord, BridgeStage, Store, now_epoch,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![sqlite_url(dir.path())];
    if let Some(url) = crate::common::fresh_postgres_database("bridge").await {
        urls.push(url);
    }
    for url in urls {
        let store = Store::connect(&url, 2).await.unwrap();
        let backend = store.backend();
        let now = now_epoch();
        let day = now / 86_400;
        for expected in [true, true, false, false] {
            assert_eq!(
                store.reserve_bridge_application(day, 2).await.unwrap(),
                expected,
                "{backend}"
            );
        }
        assert!(store.reserve_bridge_application(day + 1, 2).await.unwrap());
        store
            .save_bridge_client(&BridgeClientRecord {
                client_id: "c1".to_owned(),
                redirect_uris: "[]".to_owned(),
                created_at: now - 100,
                callback_key: Some("k1".to_owned()),
                client_name: Some("C".to_owned()),
                managed: 1,
                last_used_at: None,
            })
            .await
            .unwrap();
        assert_eq!(
            store.unused_bridge_clients(now, 10).await.unwrap(),
            ["c1"],
            "{backend}"
        );
        store.touch_bridge_client("c1", now).await.unwrap();
        assert!(
            store
                .unused_bridge_clients(now - 1, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let record = BridgeRequestRecord {
            state_hash: "h".to_owned(),
            client_id: "c1".to_owned(),
            browser_hash: "b".to_owned(),
            redirect_uri: VICTIM_APP.to_owned(),
            client_state: None,
            idp_query: "[]".to_owned(),
            created_at: now,
            expires_at: now + 600,
        };
        store
            .insert_bridge_request(BridgeStage::Consent, &record)
            .await
            .unwrap();
        // A consent-stage key is no state at the IdP.
        assert!(
            store
                .take_bridge_request(BridgeStage::Idp, "h", now)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .take_bridge_request(BridgeStage::Consent, "h", now)
                .await
                .unwrap()
                .is_some()
        );
        let code = BridgeCodeRecord {
            code_hash: "ch".to_owned(),
            client_id: "c1".to_owned(),
            redirect_uri: VICTIM_APP.to_owned(),
            callback: "cb".to_owned(),
            expires_at: now + 600,
            code_challenge: Some("challenge".to_owned()),
        };
        store.save_bridge_code(&code).await.unwrap();
        store.save_bridge_code(&code).await.unwrap();
        assert_eq!(
            store
                .bridge_code("ch", now)
                .await
                .unwrap()
                .and_then(|c| c.code_challenge)
                .as_deref(),
            Some("challenge"),
            "{backend}: the funnel's join key is kept"
        );
        assert_eq!(store.sweep_bridge(now + 601).await.unwrap(), 1, "{backend}");
        assert!(store.bridge_code("ch", now).await.unwrap().is_none());
        store.delete_bridge_client("c1").await.unwrap();
        assert!(store.bridge_client("c1").await.unwrap().is_none());
        store.close().await;
    }
}

/// Every `/authorize` stores a pending request before anyone signs in: one
/// address cannot flood the store with them, nor with oversized ones.
#[tokio::test]
async fn an_authorize_flood_from_one_address_is_cut_off() {
    let idp = FakeIdp::start().await;
    let server = passthrough(&idp).await;
    let v = client(&server, VICTIM_APP, "V").await;
    let (_, challenge) = pkce();
    let big_state = "s".repeat(60 * 1024);
    let r = no_redirects()
        .get(server.url(&format!(
            "/authorize?{}",
            authorize_query(&v, VICTIM_APP, &challenge, &big_state)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(location(&r).is_empty());
    let query = authorize_query(&v, VICTIM_APP, &challenge, "s");
    let mut statuses = Vec::new();
    for _ in 0..61 {
        let r = no_redirects()
            .get(server.url(&format!("/authorize?{query}")))
            .send()
            .await
            .unwrap();
        statuses.push(r.status());
    }
    assert!(
        statuses[..59].iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(statuses[60], StatusCode::TOO_MANY_REQUESTS);
}

/// A client cannot smuggle parameters that would move the IdP's answer away
/// from its callback's query (a request object with its own redirect_uri
/// and state, another response mode).
#[tokio::test]
async fn parameters_that_would_move_the_answer_are_not_forwarded() {
    let idp = FakeIdp::start().await;
    let server = passthrough(&idp).await;
    let v = client(&server, VICTIM_APP, "V").await;
    let (_, challenge) = pkce();
    let query = format!(
        "{}&response_mode=form_post&request_uri=urn%3Ax&request=e30.e30.&prompt=none",
        authorize_query(&v, VICTIM_APP, &challenge, "s")
    );
    let to = approve(&server, &mut Browser::default(), &query).await;
    let p = query_of(&to);
    for dropped in ["response_mode", "request_uri", "request"] {
        assert!(!p.contains_key(dropped), "{dropped}: {to}");
    }
    assert_eq!(p["prompt"], "none");
    assert_eq!(p["client_id"], v);
}
