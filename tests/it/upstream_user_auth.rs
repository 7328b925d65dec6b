//! `[upstreams.user_auth]`: each user connects their own account at an
//! OAuth-protected upstream. The upstream is the fixture (its `http_headers`
//! tool shows what it received); its authorization server is the fake IdP's
//! standard part (DCR, `/authorize` with a signed-in user and remembered
//! consent, `/token` checking PKCE, `/revoke`).

use mcpgate::upstream::settings::{RawUserAuth, RawUserAuthSetting};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    common::TestServer,
    fake_idp::FakeIdp,
    gateway::{ALICE, BOB, HttpFixture, call, http, local_gateway, structured},
    oauth_browser::{
        Browser, REDIRECT, authorize_url, exchange_code, location, pkce, public_client, query_of,
        sign_in_and_approve,
    },
};

/// A token for `login` and the browser that signed in to get it (it keeps
/// mcpgate's login session).
async fn token_and_browser(server: &TestServer, login: (&str, &str)) -> (String, Browser) {
    let client_id = public_client(server).await;
    let (verifier, challenge) = pkce();
    let authorize = authorize_url(server, &client_id, &challenge, REDIRECT);
    let mut browser = Browser::default();
    let back = sign_in_and_approve(server, &mut browser, &authorize, login, &[]).await;
    let code = query_of(&back)["code"].clone();
    let (status, tokens) = exchange_code(server, &client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    (tokens["access_token"].as_str().unwrap().to_owned(), browser)
}

async fn protected_gateway(idp: &FakeIdp, fixture: &HttpFixture) -> TestServer {
    let issuer = idp.issuer.clone();
    let url = fixture.url.clone();
    let (server, _) = local_gateway(move |raw, _| {
        raw.gateway = Some(mcpgate::upstream::settings::RawGateway {
            prefix: Some("always".into()),
            ..Default::default()
        });
        raw.upstreams = vec![mcpgate::upstream::settings::RawUpstream {
            user_auth: Some(RawUserAuthSetting::Table(RawUserAuth {
                authorization_server: Some(issuer),
                ..RawUserAuth::default()
            })),
            ..http("gh", &url)
        }];
    })
    .await;
    server
}

/// The URL elicitation of a -32042 answer.
fn elicitation(reply: &Value) -> &Value {
    assert_eq!(reply["error"]["code"], json!(-32042), "{reply}");
    let e = &reply["error"]["data"]["elicitations"][0];
    assert_eq!(e["mode"], "url", "{reply}");
    assert!(e["elicitationId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(e["message"].as_str().is_some_and(|s| s.contains("gh")));
    e
}

fn idp_cookie(browser: &mut Browser, user: &str) {
    browser
        .cookies
        .push(("idp_user".to_owned(), user.to_owned()));
}

#[tokio::test]
async fn a_user_connects_their_own_account_and_the_upstream_gets_their_token_never_the_clients() {
    let idp = FakeIdp::start().await;
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = protected_gateway(&idp, &fixture).await;
    let (token, mut alice) = token_and_browser(&server, ALICE).await;
    server.set_token(&token);
    let sid = server.initialize().await;

    // Not connected: the list offers a way in, a call answers with the link.
    let list = server.session_call(&sid, 2, "tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"gh__connect"), "{list}");
    let reply = call(&server, &sid, 3, "gh__http_headers", json!({})).await;
    let link = elicitation(&reply)["url"].as_str().unwrap().to_owned();
    assert!(link.starts_with(&server.url("/connect/gh?e=")), "{link}");

    // Alice's browser, signed in to mcpgate as alice, follows it.
    let start = alice.get(&link).await;
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let to_as = location(&start);
    assert!(
        to_as.starts_with(&format!("{}/authorize?", idp.issuer)),
        "{to_as}"
    );
    let q = query_of(&to_as);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(
        q["resource"], fixture.url,
        "RFC 8707: the upstream's own resource"
    );
    assert_eq!(q["redirect_uri"], server.url("/connect/callback"));
    // mcpgate registered itself (DCR) with that redirect URI.
    let client_id = q["client_id"].clone();
    assert_eq!(client_id, "dcr-client-1");
    idp.remember_consent("alice-at-gh", &client_id);
    idp_cookie(&mut alice, "alice-at-gh");
    let back = alice.get(&to_as).await;
    assert_eq!(back.status(), StatusCode::FOUND);
    let done = alice.get(&location(&back)).await;
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.text().await.unwrap().contains("connected"));

    // The retried call reaches the upstream with alice's token there.
    let reply = call(&server, &sid, 4, "gh__http_headers", json!({})).await;
    let authorization = structured(&reply)["headers"]["authorization"]
        .as_str()
        .unwrap_or_else(|| panic!("no authorization upstream: {reply}"))
        .to_owned();
    assert_eq!(
        authorization,
        "Bearer IDP-ACCESS-TOKEN(user=alice-at-gh,client=dcr-client-1)"
    );
    assert!(!authorization.contains(&token));
    // The token request carried the PKCE verifier and the resource.
    let requests = idp.token_requests.lock().unwrap().clone();
    let (_, form) = requests.last().unwrap();
    assert_eq!(form["resource"], fixture.url);
    assert!(form.contains_key("code_verifier"));
}

#[tokio::test]
async fn another_signed_in_user_is_refused_at_the_connect_page_and_a_link_is_single_user() {
    let idp = FakeIdp::start().await;
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = protected_gateway(&idp, &fixture).await;
    let (token, _) = token_and_browser(&server, ALICE).await;
    let (_, mut bob) = token_and_browser(&server, BOB).await;
    server.set_token(&token);
    let sid = server.initialize().await;
    let reply = call(&server, &sid, 2, "gh__http_headers", json!({})).await;
    let link = elicitation(&reply)["url"].as_str().unwrap().to_owned();

    // Bob (phished with alice's link) is refused before any redirect.
    let page = bob.get(&link).await;
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    let html = page.text().await.unwrap();
    assert!(html.contains("another mcpgate user"), "{html}");
    assert!(idp.standard.lock().unwrap().authorize_requests.is_empty());
    // No browser session at all: asked to sign in, not sent on.
    let anonymous = Browser::default().get(&link).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // A tampered link is refused.
    let tampered = link[..link.len() - 5].to_owned();
    let page = bob.get(&tampered).await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    // A callback with a state no browser started is refused.
    let page = bob
        .get(&server.url("/connect/callback?state=forged&code=x"))
        .await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_denied_sign_in_is_shown_and_a_revoked_connection_asks_again() {
    let idp = FakeIdp::start().await;
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = protected_gateway(&idp, &fixture).await;
    let (token, mut alice) = token_and_browser(&server, ALICE).await;
    server.set_token(&token);
    let sid = server.initialize().await;
    let reply = call(&server, &sid, 2, "gh__http_headers", json!({})).await;
    let link = elicitation(&reply)["url"].as_str().unwrap().to_owned();

    // The authorization server says no: the page says so; the attempt is spent.
    let start = alice.get(&link).await;
    let state = query_of(&location(&start))["state"].clone();
    let denied = alice
        .get(&server.url(&format!(
            "/connect/callback?state={state}&error=access_denied&error_description=user+said+no"
        )))
        .await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    assert!(
        denied
            .text()
            .await
            .unwrap()
            .contains("access_denied: user said no")
    );
    let again = alice
        .get(&server.url(&format!("/connect/callback?state={state}&code=x")))
        .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);

    // Connect for real, then the operator revokes it.
    let start = alice.get(&link).await;
    let to_as = location(&start);
    let client_id = query_of(&to_as)["client_id"].clone();
    idp.remember_consent("alice-at-gh", &client_id);
    idp_cookie(&mut alice, "alice-at-gh");
    let back = alice.get(&to_as).await;
    assert_eq!(alice.get(&location(&back)).await.status(), StatusCode::OK);
    let reply = call(&server, &sid, 3, "gh__http_headers", json!({})).await;
    structured(&reply);

    let (ok, out, err) = connections_cli(
        &server,
        (&idp, &fixture),
        &["connections", "list", "--user", "alice"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.starts_with("gh\tconnected"), "{out}");
    let (ok, out, err) = connections_cli(
        &server,
        (&idp, &fixture),
        &[
            "connections",
            "revoke",
            "--user",
            "alice",
            "--upstream",
            "gh",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("revoked alice's connection to gh"), "{out}");
    assert_eq!(
        idp.revoked.lock().unwrap().as_slice(),
        ["IDP-ACCESS-TOKEN(user=alice-at-gh,client=dcr-client-1)"],
        "revoked at the upstream's authorization server too"
    );
    let reply = call(&server, &sid, 4, "gh__http_headers", json!({})).await;
    elicitation(&reply);
}

/// The CLI against the test server's store, with the same upstream; run
/// without blocking this runtime, which serves the fake IdP.
async fn connections_cli(
    server: &TestServer,
    (idp, fixture): (&FakeIdp, &HttpFixture),
    args: &[&str],
) -> (bool, String, String) {
    let config = server.data_dir().join("connections.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[store]\nurl = {:?}\n[auth]\nmode = \"local\"\n[auth.local]\n\n[[upstreams]]\nname = \"gh\"\nurl = {:?}\n[upstreams.user_auth]\nauthorization_server = {:?}\n",
            server.data_dir().display().to_string(),
            crate::common::sqlite_url(server.data_dir()),
            fixture.url,
            idp.issuer,
        ),
    )
    .unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcpgate"));
    command.args(args).arg("--config").arg(&config);
    for (key, _) in std::env::vars() {
        if key.starts_with("MCPGATE_") {
            command.env_remove(key);
        }
    }
    let out = command.output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
