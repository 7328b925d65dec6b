//! Proxy mode's admin console: `/admin/login` signs in at the identity
//! provider (here the in-process fake, scripted per test), and the admin
//! role follows `[admin]` from the provider's claims at every sign-in.

use mcpgate::config::RawUpstreamIdp;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    common::TestServer,
    fake_idp::FakeIdp,
    local_auth::admin_cli,
    oauth_browser::{Browser, hidden, location, query_of},
    proxy_auth::{UPSTREAM_CLIENT, callback_url},
};

const ADMINS: &str = "mcpgate-admins";

async fn proxy_with_admin_group(idp: &FakeIdp) -> TestServer {
    proxy_with_admins(idp, |admin| {
        admin.groups = vec![ADMINS.to_owned(), "ops".to_owned()];
    })
    .await
}

async fn proxy_with_admins(
    idp: &FakeIdp,
    edit: impl FnOnce(&mut mcpgate::admin::settings::RawAdmin),
) -> TestServer {
    let upstream = RawUpstreamIdp {
        issuer: Some(idp.issuer.clone()),
        client_id: Some(UPSTREAM_CLIENT.to_owned()),
        client_secret: Some("up secret:1".to_owned()),
        ..RawUpstreamIdp::default()
    };
    TestServer::start_with(|raw| {
        raw.auth.mode = Some("proxy".to_owned());
        raw.auth.upstream = Some(upstream);
        edit(&mut raw.admin);
    })
    .await
}

/// `/admin/login`'s button: the parameters of the IdP authorization request
/// mcpgate sent `browser` to.
async fn go_upstream(
    server: &TestServer,
    idp: &FakeIdp,
    browser: &mut Browser,
) -> std::collections::HashMap<String, String> {
    let page = browser.get(&server.url("/admin/login")).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Sign in with your identity provider"),
        "{html}"
    );
    assert!(
        !html.contains("type=\"password\""),
        "no password form in proxy mode"
    );
    let go = browser
        .post(
            &server.url("/admin/login"),
            &[("csrf", hidden(&html, "csrf").as_str())],
        )
        .await;
    assert_eq!(go.status(), StatusCode::SEE_OTHER);
    let to = location(&go);
    assert!(
        to.starts_with(&format!("{}/authorize?", idp.issuer)),
        "{to}"
    );
    query_of(&to)
}

/// The IdP's token answer for `sub`: an ID token with an email and `claims`.
fn tokens_for(idp: &FakeIdp, sub: &str, nonce: &str, claims: Value) -> Value {
    let mut extra = json!({"email": format!("{sub}@example.com")});
    for (k, v) in claims.as_object().cloned().unwrap_or_default() {
        extra[k] = v;
    }
    json!({
        "access_token": format!("up-at-{sub}"), "token_type": "Bearer", "expires_in": 3600,
        "id_token": idp.id_token(UPSTREAM_CLIENT, sub, nonce, extra),
    })
}

fn in_groups(groups: &[&str]) -> Value {
    json!({ "groups": groups })
}

/// A whole console sign-in as `sub` whose ID token carries `claims`: the
/// status of `/admin` after it.
async fn console_sign_in(
    server: &TestServer,
    idp: &FakeIdp,
    browser: &mut Browser,
    sub: &str,
    claims: Value,
) -> StatusCode {
    let params = go_upstream(server, idp, browser).await;
    assert_eq!(params["redirect_uri"], server.url("/callback"));
    assert_eq!(params["code_challenge_method"], "S256");
    idp.answer_token(200, tokens_for(idp, sub, &params["nonce"], claims));
    let back = browser
        .get(&callback_url(server, &params["state"], "up-code"))
        .await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&back), "/admin");
    // PKCE: the code went back with the verifier of this login's challenge.
    let (_, form) = idp.token_requests.lock().unwrap().last().unwrap().clone();
    assert_eq!(
        mcpgate::oauth::crypto::pkce_s256(&form["code_verifier"]),
        params["code_challenge"]
    );
    browser.get(&server.url("/admin")).await.status()
}

fn is_admin(server: &TestServer, email: &str) -> bool {
    let (ok, out, err) = admin_cli(server, &["users", "list"]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.contains(email))
        .unwrap_or_else(|| panic!("no {email} in {out}"));
    line.split('\t').any(|f| f == "admin")
}

#[tokio::test]
async fn the_admin_group_opens_the_console_and_leaving_it_closes_it_at_the_next_sign_in() {
    let idp = FakeIdp::start().await;
    let server = proxy_with_admin_group(&idp).await;

    let mut alice = Browser::default();
    let status = console_sign_in(
        &server,
        &idp,
        &mut alice,
        "alice",
        in_groups(&["eng", ADMINS]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(is_admin(&server, "alice@example.com"));
    let page = alice
        .get(&server.url("/admin/clients"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("alice@example.com"), "{page}");

    let mut bob = Browser::default();
    let status = console_sign_in(&server, &idp, &mut bob, "bob", in_groups(&["eng"])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!is_admin(&server, "bob@example.com"));

    // Alice leaves the group: her next sign-in takes the role away, and
    // her earlier console session is refused from then on too.
    let mut alice_again = Browser::default();
    let status = console_sign_in(
        &server,
        &idp,
        &mut alice_again,
        "alice",
        in_groups(&["eng"]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!is_admin(&server, "alice@example.com"));
    let r = alice.get(&server.url("/admin")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // And back in: granted again.
    let status = console_sign_in(
        &server,
        &idp,
        &mut alice_again,
        "alice",
        in_groups(&[ADMINS]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // An MCP client's sign-in applies the mapping too (the fake's groups there: eng, ops).
    let mut carol = Browser::default();
    crate::proxy_auth::sign_in(&server, &idp, &mut carol, "carol", 3600).await;
    assert!(is_admin(&server, "carol@example.com"));
}

#[tokio::test]
async fn the_console_sign_in_checks_its_form_state_browser_and_nonce() {
    let idp = FakeIdp::start().await;
    let server = proxy_with_admin_group(&idp).await;

    // The button's form is bound to the browser that loaded it.
    let mut stranger = Browser::default();
    let r = stranger
        .post(&server.url("/admin/login"), &[("csrf", "forged")])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(location(&r).is_empty(), "a forged form went upstream");

    // A state started in one browser cannot finish in another, and is spent.
    let mut browser = Browser::default();
    let params = go_upstream(&server, &idp, &mut browser).await;
    idp.answer_token(
        200,
        tokens_for(&idp, "alice", &params["nonce"], in_groups(&[ADMINS])),
    );
    let r = stranger
        .get(&callback_url(&server, &params["state"], "up-code"))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = browser
        .get(&callback_url(&server, &params["state"], "up-code"))
        .await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "a spent state was used"
    );
    let r = browser.get(&server.url("/admin")).await;
    assert_eq!(location(&r), "/admin/login", "signed in without a state");

    // An ID token for another login's nonce is refused; nobody is signed in.
    let params = go_upstream(&server, &idp, &mut browser).await;
    idp.answer_token(
        200,
        tokens_for(&idp, "alice", "another-nonce", in_groups(&[ADMINS])),
    );
    let r = browser
        .get(&callback_url(&server, &params["state"], "up-code"))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = browser.get(&server.url("/admin")).await;
    assert_eq!(location(&r), "/admin/login");

    // An unknown state.
    let r = browser
        .get(&callback_url(&server, "made-up-state", "up-code"))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Declined upstream: back to the sign-in page, no session.
    let params = go_upstream(&server, &idp, &mut browser).await;
    let declined = server.url(&format!(
        "/callback?error=access_denied&state={}",
        url::form_urlencoded::byte_serialize(params["state"].as_bytes()).collect::<String>()
    ));
    let r = browser.get(&declined).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/admin/login");
    let r = browser.get(&server.url("/admin")).await;
    assert_eq!(location(&r), "/admin/login");
}

#[tokio::test]
async fn a_claim_of_its_own_names_the_admins() {
    const ROLES: &str = "https://example.com/roles";
    let idp = FakeIdp::start().await;
    let server = proxy_with_admins(&idp, |admin| {
        admin.claim = Some(ROLES.to_owned());
        admin.groups = vec!["mcp-admin".to_owned()];
    })
    .await;
    // The provider's groups claim does not count once another claim is named.
    let status = console_sign_in(
        &server,
        &idp,
        &mut Browser::default(),
        "erin",
        json!({"groups": ["mcp-admin"], ROLES: ["viewer"]}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let status = console_sign_in(
        &server,
        &idp,
        &mut Browser::default(),
        "erin",
        json!({ ROLES: ["viewer", "mcp-admin"] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(is_admin(&server, "erin@example.com"));
}
