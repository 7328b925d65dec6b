//! `auth.mode = "proxy"`: mcpgate is the authorization server toward MCP
//! clients and signs users in at an upstream IdP (here the in-process fake,
//! which lets each test script the IdP's answers and forge bad ID tokens;
//! the end-to-end suite runs the same flow against oidc-provider).

use base64::Engine;
use mcpgate::config::RawUpstreamIdp;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    common::{TestServer, sqlite_url},
    fake_idp::FakeIdp,
    oauth_browser::{
        Browser, REDIRECT, authorize_url, exchange_code, hidden, location, pkce, public_client,
        query_of, refresh_grant,
    },
};

pub const UPSTREAM_CLIENT: &str = "mcpgate-up";

pub async fn proxy(idp: &FakeIdp, edit: impl FnOnce(&mut RawUpstreamIdp)) -> TestServer {
    let mut upstream = RawUpstreamIdp {
        issuer: Some(idp.issuer.clone()),
        client_id: Some(UPSTREAM_CLIENT.to_owned()),
        client_secret: Some("up secret:1".to_owned()),
        ..RawUpstreamIdp::default()
    };
    edit(&mut upstream);
    TestServer::start_with(|raw| {
        raw.auth.mode = Some("proxy".to_owned());
        raw.auth.upstream = Some(upstream);
    })
    .await
}

pub fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// Upstream authorization request parameters mcpgate redirected to.
pub struct Upstream {
    params: std::collections::HashMap<String, String>,
}

impl Upstream {
    pub fn state(&self) -> &str {
        &self.params["state"]
    }
    pub fn nonce(&self) -> &str {
        &self.params["nonce"]
    }
}

/// `/authorize` then approve on the consent page: returns where mcpgate sends the browser.
pub async fn consent_and_go_upstream(
    server: &TestServer,
    idp: &FakeIdp,
    browser: &mut Browser,
    client_id: &str,
    challenge: &str,
    remember: bool,
) -> Upstream {
    let page = browser
        .get(&authorize_url(server, client_id, challenge, REDIRECT))
        .await;
    // Consent comes first: no redirect anywhere before the user approved.
    assert_eq!(page.status(), StatusCode::OK);
    assert!(location(&page).is_empty());
    let html = page.text().await.unwrap();
    assert!(html.contains("you sign in with"), "{html}");
    let (request, csrf) = (hidden(&html, "request"), hidden(&html, "csrf"));
    let mut form = vec![
        ("request", request.as_str()),
        ("csrf", csrf.as_str()),
        ("decision", "approve"),
    ];
    if remember {
        form.push(("remember", "1"));
    }
    let go = browser.post(&server.url("/consent"), &form).await;
    assert_eq!(go.status(), StatusCode::SEE_OTHER);
    let to = location(&go);
    assert!(
        to.starts_with(&format!("{}/authorize?", idp.issuer)),
        "{to}"
    );
    Upstream {
        params: query_of(&to),
    }
}

pub fn callback_url(server: &TestServer, state: &str, code: &str) -> String {
    server.url(&format!(
        "/callback?code={code}&state={}",
        url::form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>()
    ))
}

fn upstream_tokens(idp: &FakeIdp, sub: &str, nonce: &str, expires_in: i64) -> Value {
    json!({
        "access_token": format!("up-at-{sub}"), "token_type": "Bearer", "expires_in": expires_in,
        "refresh_token": format!("up-rt-{sub}"),
        "id_token": idp.id_token(UPSTREAM_CLIENT, sub, nonce, json!({
            "email": format!("{sub}@example.com"), "name": "Alice Example", "groups": ["eng", "ops"],
        })),
    })
}

/// A complete sign-in: returns (tokens from mcpgate's /token, the client id).
pub async fn sign_in(
    server: &TestServer,
    idp: &FakeIdp,
    browser: &mut Browser,
    sub: &str,
    expires_in: i64,
) -> (Value, String) {
    let client_id = public_client(server).await;
    let (verifier, challenge) = pkce();
    let upstream =
        consent_and_go_upstream(server, idp, browser, &client_id, &challenge, false).await;
    idp.answer_token(200, upstream_tokens(idp, sub, upstream.nonce(), expires_in));
    let back = browser
        .get(&callback_url(server, upstream.state(), "up-code"))
        .await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    let q = query_of(&location(&back));
    assert_eq!(q["state"], "s-1");
    assert_eq!(q["iss"], server.base);
    let (status, tokens) = exchange_code(server, &client_id, &q["code"], &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    (tokens, client_id)
}

async fn users_in_store(server: &TestServer) -> usize {
    let store = mcpgate::store::Store::connect(&sqlite_url(server.data_dir()), 1)
        .await
        .unwrap();
    let n = store.list_users().await.unwrap().len();
    store.close().await;
    n
}

#[tokio::test]
async fn consent_then_upstream_sign_in_then_our_tokens_carry_the_identity() {
    let idp = FakeIdp::start().await;
    let server = proxy(&idp, |_| {}).await;
    // Proxy mode has no local admin, and no password login.
    assert!(server.admin_password.is_none());
    assert_eq!(users_in_store(&server).await, 0);

    let client_id = public_client(&server).await;
    let (verifier, challenge) = pkce();
    let mut browser = Browser::default();
    let upstream =
        consent_and_go_upstream(&server, &idp, &mut browser, &client_id, &challenge, false).await;
    let p = &upstream.params;
    assert_eq!(p["client_id"], UPSTREAM_CLIENT);
    assert_eq!(p["redirect_uri"], server.url("/callback"));
    assert_eq!(p["response_type"], "code");
    assert_eq!(p["code_challenge_method"], "S256");
    assert_eq!(p["scope"], "openid profile email offline_access");
    assert!(
        !p.contains_key("resource"),
        "resource is ours, not the IdP's"
    );
    assert!(p["nonce"].len() >= 32 && p["state"].len() >= 43);
    // mcpgate's own PKCE upstream, not the client's challenge.
    assert_ne!(p["code_challenge"], challenge);

    idp.answer_token(200, upstream_tokens(&idp, "alice", upstream.nonce(), 3600));
    let callback = callback_url(&server, upstream.state(), "up-code");
    let back = browser.get(&callback).await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    let q = query_of(&location(&back));
    let (status, tokens) = exchange_code(&server, &client_id, &q["code"], &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");

    // The code exchange upstream: client_secret_basic (form-encoded), our verifier, our callback.
    let requests = idp.token_requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let (auth, form) = &requests[0];
    let expected = base64::engine::general_purpose::STANDARD.encode("mcpgate-up:up+secret%3A1");
    assert_eq!(auth.as_deref(), Some(format!("Basic {expected}").as_str()));
    assert_eq!(form["code"], "up-code");
    assert_eq!(form["redirect_uri"], server.url("/callback"));
    assert_eq!(
        mcpgate::oauth::crypto::pkce_s256(&form["code_verifier"]),
        p["code_challenge"]
    );

    // Our token: our issuer and audience, a stable subject, the identity claims.
    let access = tokens["access_token"].as_str().unwrap();
    let claims = claims_of(access);
    assert_eq!(claims["iss"], server.base);
    assert_eq!(claims["aud"], server.url("/mcp"));
    assert!(claims["sub"].as_str().unwrap().starts_with("idp_"));
    assert_ne!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["groups"], json!(["eng", "ops"]));
    assert!(
        !access.contains("up-at-"),
        "upstream tokens never reach the client"
    );
    server.set_token(access);
    server.initialize().await;

    // The callback is single use.
    let again = browser.get(&callback).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert!(location(&again).is_empty());

    // The same upstream user signing in again is the same subject.
    let (second, _) = sign_in(&server, &idp, &mut Browser::default(), "alice", 3600).await;
    assert_eq!(
        claims_of(second["access_token"].as_str().unwrap())["sub"],
        claims["sub"]
    );
    assert_eq!(users_in_store(&server).await, 1);

    // No password login in proxy mode.
    let login = browser
        .post(&server.url("/login"), &[("username", "admin")])
        .await;
    assert_eq!(login.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_callbacks_get_an_error_page_and_store_nothing() {
    let idp = FakeIdp::start().await;
    let server = proxy(&idp, |_| {}).await;
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();

    // An unknown state.
    let mut browser = Browser::default();
    let r = browser
        .get(&callback_url(&server, "forged-state", "up-code"))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // A callback in another browser (no binding cookie): refused, and the state is spent.
    let upstream =
        consent_and_go_upstream(&server, &idp, &mut browser, &client_id, &challenge, false).await;
    idp.answer_token(
        200,
        upstream_tokens(&idp, "mallory", upstream.nonce(), 3600),
    );
    let stolen = callback_url(&server, upstream.state(), "up-code");
    let r = Browser::default().get(&stolen).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(location(&r).is_empty());
    let r = browser.get(&stolen).await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "the state is single use"
    );
    idp.token_answers.lock().unwrap().clear();

    // ID tokens that must not be accepted.
    type Forge<'a> = Box<dyn Fn(&Upstream) -> String + 'a>;
    let bad: Vec<(&str, Forge)> = vec![
        (
            "wrong aud",
            Box::new(|u: &Upstream| idp.id_token("someone-else", "eve", u.nonce(), json!({}))),
        ),
        (
            "wrong nonce",
            Box::new(|_: &Upstream| idp.id_token(UPSTREAM_CLIENT, "eve", "other-nonce", json!({}))),
        ),
        (
            "wrong iss",
            Box::new(|u: &Upstream| {
                idp.id_token(
                    UPSTREAM_CLIENT,
                    "eve",
                    u.nonce(),
                    json!({"iss": "https://evil.example"}),
                )
            }),
        ),
        (
            "expired",
            Box::new(|u: &Upstream| {
                idp.id_token(
                    UPSTREAM_CLIENT,
                    "eve",
                    u.nonce(),
                    json!({"exp": crate::fake_idp::now() - 600}),
                )
            }),
        ),
    ];
    for (what, forge) in &bad {
        let upstream =
            consent_and_go_upstream(&server, &idp, &mut browser, &client_id, &challenge, false)
                .await;
        idp.answer_token(
            200,
            json!({"access_token": "up-at", "token_type": "Bearer", "id_token": forge(&upstream)}),
        );
        let r = browser
            .get(&callback_url(&server, upstream.state(), "up-code"))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{what}");
        assert!(location(&r).is_empty(), "{what}");
        assert!(
            r.text().await.unwrap().contains("could not be verified"),
            "{what}"
        );
    }

    // The IdP down during the callback: a clear page.
    idp.token_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let upstream =
        consent_and_go_upstream(&server, &idp, &mut browser, &client_id, &challenge, false).await;
    let r = browser
        .get(&callback_url(&server, upstream.state(), "up-code"))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(r.text().await.unwrap().contains("could not be reached"));
    idp.token_down
        .store(false, std::sync::atomic::Ordering::SeqCst);

    // The user declining upstream: the client hears access_denied.
    let upstream =
        consent_and_go_upstream(&server, &idp, &mut browser, &client_id, &challenge, false).await;
    let r = browser
        .get(&server.url(&format!(
            "/callback?error=access_denied&state={}",
            upstream.state()
        )))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let q = query_of(&location(&r));
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["iss"], server.base);

    // None of it created a user or a grant.
    assert_eq!(users_in_store(&server).await, 0);
    let r = browser.get(&server.url("/callback")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn upstream_refresh_follows_ours_and_an_upstream_invalid_grant_ends_our_grant() {
    let idp = FakeIdp::start().await;
    let server = proxy(&idp, |_| {}).await;
    // Upstream tokens that expire at once: every downstream refresh refreshes upstream.
    let (tokens, client_id) = sign_in(&server, &idp, &mut Browser::default(), "bob", 1).await;
    let refresh = |rt: String| {
        let server = &server;
        let client_id = client_id.clone();
        async move { refresh_grant(server, &client_id, &rt).await }
    };
    idp.answer_token(
        200,
        json!({"access_token": "up-at-2", "token_type": "Bearer", "expires_in": 1, "refresh_token": "up-rt-2"}),
    );
    let (status, second) = refresh(tokens["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    {
        let requests = idp.token_requests.lock().unwrap();
        let (_, form) = requests.last().unwrap();
        assert_eq!(form["grant_type"], "refresh_token");
        assert_eq!(form["refresh_token"], "up-rt-bob");
    }
    // Identity claims survive the refresh.
    assert_eq!(
        claims_of(second["access_token"].as_str().unwrap())["email"],
        "bob@example.com"
    );

    // The IdP ended the grant (user disabled, token revoked): ours ends too.
    idp.answer_token(400, json!({"error": "invalid_grant"}));
    let next = second["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = refresh(next.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(
        idp.token_requests.lock().unwrap().last().unwrap().1["refresh_token"],
        "up-rt-2"
    );
    // No loop: the next attempt fails here without asking the IdP again.
    let asked = idp.token_requests.lock().unwrap().len();
    let (status, _) = refresh(next).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(idp.token_requests.lock().unwrap().len(), asked);
}

#[tokio::test]
async fn revoking_our_grant_revokes_upstream() {
    let idp = FakeIdp::start().await;
    let server = proxy(&idp, |_| {}).await;
    let (tokens, client_id) = sign_in(&server, &idp, &mut Browser::default(), "carol", 3600).await;
    let r = server
        .client
        .post(server.url("/revoke"))
        .form(&[
            ("client_id", client_id.as_str()),
            ("token", tokens["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(*idp.revoked.lock().unwrap(), vec!["up-rt-carol".to_owned()]);
}

#[tokio::test]
async fn remembered_consent_goes_straight_upstream_but_only_for_the_same_user() {
    let idp = FakeIdp::start().await;
    let server = proxy(&idp, |_| {}).await;
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let upstream =
        consent_and_go_upstream(&server, &idp, &mut browser, &client_id, &challenge, true).await;
    idp.answer_token(200, upstream_tokens(&idp, "dave", upstream.nonce(), 3600));
    let r = browser
        .get(&callback_url(&server, upstream.state(), "up-code"))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // Same browser (signed in as dave), same client: no consent page this time.
    let r = browser
        .get(&authorize_url(&server, &client_id, &challenge, REDIRECT))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert!(
        to.starts_with(&format!("{}/authorize?", idp.issuer)),
        "{to}"
    );
    // The IdP signs in someone else: they never consented, so no code.
    let q = query_of(&to);
    idp.answer_token(200, upstream_tokens(&idp, "erin", &q["nonce"], 3600));
    let r = browser
        .get(&callback_url(&server, &q["state"], "up-code"))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(location(&r).is_empty());
}

#[tokio::test]
async fn presets_send_their_parameters_and_github_is_identified_through_its_api() {
    let idp = FakeIdp::start().await;
    let mut browser = Browser::default();
    let (_, challenge) = pkce();

    // Google: offline access by parameters, never the offline_access scope.
    let google = proxy(&idp, |u| u.preset = Some("google".to_owned())).await;
    let client = public_client(&google).await;
    let p = consent_and_go_upstream(&google, &idp, &mut browser, &client, &challenge, false)
        .await
        .params;
    assert_eq!(p["access_type"], "offline");
    assert_eq!(p["prompt"], "consent");
    assert_eq!(p["scope"], "openid profile email");

    // Auth0: the API audience.
    let auth0 = proxy(&idp, |u| {
        u.preset = Some("auth0".to_owned());
        u.audience = Some("https://api.example.com".to_owned());
    })
    .await;
    let client = public_client(&auth0).await;
    let p = consent_and_go_upstream(&auth0, &idp, &mut browser, &client, &challenge, false)
        .await
        .params;
    assert_eq!(p["audience"], "https://api.example.com");

    // Entra multi-tenant: the issuer is a template filled from the token's tid.
    let entra = proxy(&idp, |u| {
        u.preset = Some("entra".to_owned());
        u.tenant = Some("common".to_owned());
        u.issuer = Some(format!("{}/common/v2.0", idp.issuer));
    })
    .await;
    let client = public_client(&entra).await;
    for (tid, iss_tid, ok) in [("t-1", "t-1", true), ("t-1", "t-2", false)] {
        let (verifier, challenge) = pkce();
        let up =
            consent_and_go_upstream(&entra, &idp, &mut browser, &client, &challenge, false).await;
        let id_token = idp.id_token(
            UPSTREAM_CLIENT,
            "frank",
            up.nonce(),
            json!({"tid": tid, "iss": format!("{}/{iss_tid}/v2.0", idp.issuer)}),
        );
        idp.answer_token(
            200,
            json!({"access_token": "a", "token_type": "Bearer", "id_token": id_token}),
        );
        let r = browser
            .get(&callback_url(&entra, up.state(), "up-code"))
            .await;
        if ok {
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            let code = query_of(&location(&r))["code"].clone();
            let (status, body) = exchange_code(&entra, &client, &code, &verifier).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        } else {
            assert_eq!(
                r.status(),
                StatusCode::BAD_REQUEST,
                "issuer of another tenant"
            );
        }
    }

    // GitHub: no OIDC; client_secret_post, the user from /user, the email from /user/emails.
    let github = proxy(&idp, |u| {
        u.preset = Some("github".to_owned());
        u.issuer = None;
        u.authorization_endpoint = Some(format!("{}/authorize", idp.issuer));
        u.token_endpoint = Some(format!("{}/token", idp.issuer));
        u.api_base = Some(idp.issuer.clone());
    })
    .await;
    *idp.github_user.lock().unwrap() =
        json!({"id": 4242, "login": "octo", "name": "Octo Cat", "email": null});
    *idp.github_emails.lock().unwrap() = json!([
        {"email": "old@example.com", "primary": false, "verified": true},
        {"email": "octo@example.com", "primary": true, "verified": true},
    ]);
    let client = public_client(&github).await;
    let (verifier, challenge) = pkce();
    let up = consent_and_go_upstream(&github, &idp, &mut browser, &client, &challenge, false).await;
    assert_eq!(up.params["scope"], "read:user user:email");
    assert!(!up.params.contains_key("nonce"));
    // GitHub answers errors with 200; a token without expiry is fine.
    idp.answer_token(200, json!({"access_token": "gh-token", "token_type": "bearer", "scope": "read:user,user:email"}));
    let r = browser
        .get(&callback_url(&github, up.state(), "up-code"))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (auth, form) = idp.token_requests.lock().unwrap().last().unwrap().clone();
    assert!(auth.is_none());
    assert_eq!(form["client_id"], UPSTREAM_CLIENT);
    assert_eq!(form["client_secret"], "up secret:1");
    let code = query_of(&location(&r))["code"].clone();
    let (status, body) = exchange_code(&github, &client, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(claims["email"], "octo@example.com");
    assert_eq!(claims["name"], "Octo Cat");

    // A GitHub error reported with status 200 is still an error.
    let up = consent_and_go_upstream(&github, &idp, &mut browser, &client, &challenge, false).await;
    idp.answer_token(200, json!({"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."}));
    let r = browser
        .get(&callback_url(&github, up.state(), "up-code"))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn auto_mode_picks_resource_for_an_open_idp_and_proxy_otherwise() {
    let idp = FakeIdp::start().await;
    let start = |preset: &'static str| {
        let issuer = idp.issuer.clone();
        TestServer::start_with(move |raw| {
            raw.auth.mode = Some("auto".to_owned());
            raw.auth.upstream = Some(RawUpstreamIdp {
                preset: Some(preset.to_owned()),
                issuer: Some(issuer),
                client_id: Some(UPSTREAM_CLIENT.to_owned()),
                client_secret: Some("s".to_owned()),
                ..RawUpstreamIdp::default()
            });
        })
    };
    let prm = |server: &TestServer| {
        let url = server.url("/.well-known/oauth-protected-resource/mcp");
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    // The fake IdP offers DCR and S256: clients can use it directly.
    let open = start("oidc").await;
    assert_eq!(
        prm(&open).await["authorization_servers"],
        json!([idp.issuer])
    );
    idp.set_resource(&open.url("/mcp"));
    open.set_token(&idp.token("alice", "calc"));
    open.initialize().await;
    // Auth0's tokens cannot name the MCP resource: mcpgate proxies.
    let auth0 = start("auth0").await;
    assert_eq!(
        prm(&auth0).await["authorization_servers"],
        json!([auth0.base])
    );
    let r = reqwest::get(auth0.url("/.well-known/oauth-authorization-server"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn allow_lists_admit_only_matching_verified_accounts() {
    let idp = FakeIdp::start().await;
    let server = proxy(&idp, |u| {
        u.allowed_email_domains = vec!["@Example.com".to_owned()];
        u.allowed_groups = vec!["admins".to_owned()];
        u.allowed_usernames = vec!["ops-bot".to_owned()];
    })
    .await;
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let cases = [
        ("alice", json!({"email": "Alice@EXAMPLE.com"}), true),
        ("mallory", json!({"email": "mallory@other.org"}), false),
        (
            "eve",
            json!({"email": "eve@example.com", "email_verified": false}),
            false,
        ),
        (
            "root",
            json!({"email": "root@other.org", "groups": ["admins"]}),
            true,
        ),
        ("bot", json!({"preferred_username": "ops-bot"}), true),
        // A user name list never matches an email address.
        ("imposter", json!({"email": "ops-bot"}), false),
    ];
    for (sub, extra, admitted) in cases {
        let up =
            consent_and_go_upstream(&server, &idp, &mut browser, &client_id, &challenge, false)
                .await;
        idp.answer_token(
            200,
            json!({"access_token": "a", "token_type": "Bearer", "id_token": idp.id_token(UPSTREAM_CLIENT, sub, up.nonce(), extra)}),
        );
        let r = browser
            .get(&callback_url(&server, up.state(), "up-code"))
            .await;
        if admitted {
            assert_eq!(r.status(), StatusCode::SEE_OTHER, "{sub}");
        } else {
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{sub}");
            assert!(r.text().await.unwrap().contains("not allowed"), "{sub}");
        }
    }
    assert_eq!(
        users_in_store(&server).await,
        3,
        "only the admitted users exist"
    );
}

#[tokio::test]
async fn entra_tenant_by_domain_accepts_the_guid_issuer_discovery_names() {
    let idp = FakeIdp::start().await;
    let server = proxy(&idp, |u| {
        u.preset = Some("entra".to_owned());
        u.tenant = Some("contoso.example".to_owned());
        u.issuer = Some(format!("{}/contoso.example/v2.0", idp.issuer));
    })
    .await;
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    for (iss_tenant, ok) in [("9188040d-guid", true), ("contoso.example", false)] {
        let up =
            consent_and_go_upstream(&server, &idp, &mut browser, &client_id, &challenge, false)
                .await;
        let id_token = idp.id_token(
            UPSTREAM_CLIENT,
            "gina",
            up.nonce(),
            json!({"iss": format!("{}/{iss_tenant}/v2.0", idp.issuer)}),
        );
        idp.answer_token(
            200,
            json!({"access_token": "a", "token_type": "Bearer", "id_token": id_token}),
        );
        let r = browser
            .get(&callback_url(&server, up.state(), "up-code"))
            .await;
        let expected = if ok {
            StatusCode::SEE_OTHER
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(r.status(), expected, "{iss_tenant}");
    }
}

#[tokio::test]
async fn concurrent_refreshes_refresh_upstream_once_and_keep_the_grant() {
    let idp = FakeIdp::start().await;
    let server = proxy(&idp, |_| {}).await;
    let (tokens, client_id) = sign_in(&server, &idp, &mut Browser::default(), "hana", 1).await;
    let before = idp.token_requests.lock().unwrap().len();
    // One good upstream answer; a second upstream refresh would get invalid_grant.
    idp.answer_token(
        200,
        json!({"access_token": "up-at-2", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "up-rt-2"}),
    );
    let rt = tokens["refresh_token"].as_str().unwrap();
    let results =
        futures::future::join_all((0..3).map(|_| refresh_grant(&server, &client_id, rt))).await;
    for (status, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    assert_eq!(idp.token_requests.lock().unwrap().len(), before + 1);
    // The grant lives on.
    let next = results[0].1["refresh_token"].as_str().unwrap();
    let (status, body) = refresh_grant(&server, &client_id, next).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn identity_claims_missing_from_the_id_token_come_from_userinfo() {
    let idp = FakeIdp::start().await;
    let server = proxy(&idp, |_| {}).await;
    let client_id = public_client(&server).await;
    let mut browser = Browser::default();
    for (userinfo_sub, email) in [("ivy", Some("ivy@example.com")), ("someone-else", None)] {
        *idp.userinfo.lock().unwrap() =
            json!({"sub": userinfo_sub, "email": "ivy@example.com", "name": "Ivy"});
        let (verifier, challenge) = pkce();
        let up =
            consent_and_go_upstream(&server, &idp, &mut browser, &client_id, &challenge, false)
                .await;
        // An ID token with nothing but the subject (oidc-provider's default).
        idp.answer_token(
            200,
            json!({"access_token": "a", "token_type": "Bearer", "id_token": idp.id_token(UPSTREAM_CLIENT, "ivy", up.nonce(), json!({}))}),
        );
        let r = browser
            .get(&callback_url(&server, up.state(), "up-code"))
            .await;
        let code = query_of(&location(&r))["code"].clone();
        let (status, body) = exchange_code(&server, &client_id, &code, &verifier).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let claims = claims_of(body["access_token"].as_str().unwrap());
        assert_eq!(
            claims["email"].as_str(),
            email,
            "userinfo sub {userinfo_sub}"
        );
    }
}

/// The proxy flow's state (upstream logins, users with profiles, sealed
/// upstream tokens) on PostgreSQL: sign-in, refresh through the IdP, revoke.
#[tokio::test]
async fn proxy_flow_on_postgres() {
    let Some(url) = crate::common::fresh_postgres_database("proxy").await else {
        return;
    };
    let idp = FakeIdp::start().await;
    let server = TestServer::start_with(|raw| {
        raw.store.url = Some(url);
        raw.auth.mode = Some("proxy".to_owned());
        raw.auth.upstream = Some(RawUpstreamIdp {
            issuer: Some(idp.issuer.clone()),
            client_id: Some(UPSTREAM_CLIENT.to_owned()),
            client_secret: Some("s".to_owned()),
            ..RawUpstreamIdp::default()
        });
    })
    .await;
    let (tokens, client_id) = sign_in(&server, &idp, &mut Browser::default(), "pg-user", 1).await;
    assert_eq!(
        claims_of(tokens["access_token"].as_str().unwrap())["email"],
        "pg-user@example.com"
    );
    idp.answer_token(
        200,
        json!({"access_token": "up-at-2", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "up-rt-2"}),
    );
    let (status, next) = refresh_grant(
        &server,
        &client_id,
        tokens["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let r = server
        .client
        .post(server.url("/revoke"))
        .form(&[
            ("client_id", client_id.as_str()),
            ("token", next["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(*idp.revoked.lock().unwrap(), vec!["up-rt-2".to_owned()]);
}

#[tokio::test]
async fn a_disabled_upstream_user_is_refused_at_the_callback() {
    let idp = FakeIdp::start().await;
    let server = proxy(&idp, |_| {}).await;
    let mut browser = Browser::default();
    let (tokens, client_id) = sign_in(&server, &idp, &mut browser, "alice", 3600).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    // An admin disables alice (by id: identity-provider users are named by it).
    let store = mcpgate::store::Store::connect(&sqlite_url(server.data_dir()), 1)
        .await
        .unwrap();
    let alice = store.list_users().await.unwrap().pop().unwrap();
    let admin = mcpgate::admin::Admin::new(store.clone());
    admin
        .set_disabled(&mcpgate::admin::Actor::cli(), &alice.id, true)
        .await
        .unwrap();
    store.close().await;
    // Her refresh token is dead at once ...
    let (status, body) = crate::oauth_browser::refresh_grant(&server, &client_id, &refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // ... and the identity provider signing her in again does not let her back.
    let (_, challenge) = pkce();
    let mut fresh = Browser::default();
    let up =
        consent_and_go_upstream(&server, &idp, &mut fresh, &client_id, &challenge, false).await;
    idp.answer_token(200, upstream_tokens(&idp, "alice", up.nonce(), 3600));
    let r = fresh
        .get(&callback_url(&server, up.state(), "up-code"))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("not allowed"));
}
