//! `auth.mode = "local"`: mcpgate as the authorization server, and the
//! attacks on it (each test fails if its defence is removed).

use base64::Engine;
use mcpgate::config::RawLocalAuth;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::{
    common::TestServer,
    oauth_browser::{
        Browser, REDIRECT, authorize_url, exchange_code, hidden, location, no_redirects, pkce,
        public_client, query_of, refresh_grant, register, sign_in_and_approve, token,
    },
};

pub async fn local(edit: impl FnOnce(&mut RawLocalAuth)) -> TestServer {
    local_on_clock(edit, mcpgate::clock::system()).await
}

/// [`local`] reading the time from `clock`.
pub async fn local_on_clock(
    edit: impl FnOnce(&mut RawLocalAuth),
    clock: mcpgate::clock::SharedClock,
) -> TestServer {
    let mut local = RawLocalAuth::default();
    edit(&mut local);
    TestServer::start_with_clock(
        |raw| {
            raw.auth.mode = Some("local".to_owned());
            raw.auth.local = Some(local);
        },
        clock,
    )
    .await
}

/// Log in as admin and approve; returns the redirect back to the client.
async fn approve(
    server: &TestServer,
    browser: &mut Browser,
    client_id: &str,
    challenge: &str,
) -> String {
    approve_with(server, browser, client_id, challenge, &[]).await
}

/// `approve` with extra consent-form fields (e.g. `remember`).
async fn approve_with(
    server: &TestServer,
    browser: &mut Browser,
    client_id: &str,
    challenge: &str,
    extra: &[(&str, &str)],
) -> String {
    let password = server.admin_password.clone().unwrap();
    sign_in_and_approve(
        server,
        browser,
        &authorize_url(server, client_id, challenge, REDIRECT),
        ("admin", &password),
        extra,
    )
    .await
}

async fn code_for(server: &TestServer, client_id: &str) -> (String, String) {
    let (verifier, challenge) = pkce();
    let back = approve(server, &mut Browser::default(), client_id, &challenge).await;
    let q = query_of(&back);
    assert_eq!(q["state"], "s-1");
    assert_eq!(q["iss"], server.base);
    (q["code"].clone(), verifier)
}

#[tokio::test]
async fn full_flow_tokens_work_on_mcp_and_code_replays_are_handled() {
    let server = local(|_| {}).await;
    // Metadata and the protected-resource document point at mcpgate itself.
    let meta: Value = server
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(meta["issuer"], server.base);
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    let prm: Value = server
        .get_json("/.well-known/oauth-protected-resource/mcp")
        .await;
    assert_eq!(prm["authorization_servers"], json!([server.base]));

    let client_id = public_client(&server).await;
    let (code, verifier) = code_for(&server, &client_id).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", verifier.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", client_id.as_str()),
    ];
    let (status, first) = token(&server, &form).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["token_type"], "Bearer");
    // ChatGPT posts twice: the same client at once gets the same answer.
    let (status, again) = token(&server, &form).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first);

    server.set_token(first["access_token"].as_str().unwrap());
    let (status, reply) = server
        .stateless_call(
            1,
            "tools/call",
            Some("add"),
            json!({"name": "add", "arguments": {"a": 2, "b": 3}}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply["result"].to_string().contains('5'), "{reply}");

    // Another client presenting the code: refused, and the grant is left
    // alone (seeing a code proves nothing about its holder).
    let other = public_client(&server).await;
    let stolen = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", verifier.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", other.as_str()),
    ];
    let (status, body) = token(&server, &stolen).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let refresh = first["refresh_token"].as_str().unwrap();
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", client_id.as_str()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_after_grace_revokes_the_family() {
    let clock = mcpgate::clock::ManualClock::new();
    let server = local_on_clock(|l| l.refresh_reuse_grace_secs = Some(0), clock.clone()).await;
    let client_id = public_client(&server).await;
    let (code, verifier) = code_for(&server, &client_id).await;
    let (_, first) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
        ],
    )
    .await;
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();
    let (status, second) = refresh_grant(&server, &client_id, &r1).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    clock.advance(std::time::Duration::from_secs(1));
    let (status, body) = refresh_grant(&server, &client_id, &r1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // The legitimate holder of r2 is cut off too: the family is revoked.
    let (status, body) = refresh_grant(&server, &client_id, &r2).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn pkce_is_mandatory_and_checked() {
    let server = local(|_| {}).await;
    let client_id = public_client(&server).await;
    let mut browser = Browser::default();
    // Missing challenge, and `plain`: an error page (a self-registered
    // client's redirect URI is not trusted with error redirects).
    let q = format!(
        "response_type=code&client_id={client_id}&redirect_uri={}&state=s-1",
        urlencode(REDIRECT)
    );
    for extra in ["", "&code_challenge=abc&code_challenge_method=plain"] {
        let r = browser
            .get(&server.url(&format!("/authorize?{q}{extra}")))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.headers().get(header::LOCATION).is_none());
        assert!(r.text().await.unwrap().contains("invalid_request"));
    }
    // A wrong verifier at the token endpoint.
    let (code, _) = code_for(&server, &client_id).await;
    let (wrong, _) = pkce();
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &wrong),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn redirect_manipulation_gets_a_page_never_a_redirect() {
    let server = local(|_| {}).await;
    let https_client = register(
        &server,
        json!({"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none"}),
    )
    .await
    .1["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, challenge) = pkce();
    for evil in [
        "https://app.example/other",
        "https://evil.example/cb",
        "https://app.example:8443/cb",
        "https://app.example/cb?x=1",
    ] {
        let r = no_redirects()
            .get(authorize_url(&server, &https_client, &challenge, evil))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{evil}");
        assert!(r.headers().get(header::LOCATION).is_none());
        assert_eq!(r.headers().get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
    }
    // Unknown client: a page too (an open redirector otherwise).
    let r = no_redirects()
        .get(authorize_url(
            &server,
            "nope",
            &challenge,
            "https://evil.example/cb",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Loopback clients may come back on any port (RFC 8252).
    let loopback = public_client(&server).await;
    let r = no_redirects()
        .get(authorize_url(
            &server,
            &loopback,
            &challenge,
            "http://127.0.0.1:5555/cb",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = no_redirects()
        .get(authorize_url(
            &server,
            &loopback,
            &challenge,
            "http://127.0.0.1:5555/elsewhere",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn consent_needs_its_csrf_token_and_browser() {
    let server = local(|_| {}).await;
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let html = browser
        .get(&authorize_url(&server, &client_id, &challenge, REDIRECT))
        .await
        .text()
        .await
        .unwrap();
    let (request, csrf) = (hidden(&html, "request"), hidden(&html, "csrf"));
    let password = server.admin_password.clone().unwrap();
    let login = browser
        .post(
            &server.url("/login"),
            &[
                ("request", &request),
                ("csrf", &csrf),
                ("username", "admin"),
                ("password", &password),
            ],
        )
        .await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    // No CSRF token; a wrong one; the right one from another browser (no binding cookie).
    let r = browser
        .post(
            &server.url("/consent"),
            &[("request", &request), ("decision", "approve")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = browser
        .post(
            &server.url("/consent"),
            &[
                ("request", &request),
                ("csrf", "forged"),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let mut attacker = Browser::default();
    let r = attacker
        .post(
            &server.url("/consent"),
            &[
                ("request", &request),
                ("csrf", &csrf),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The real form still works afterwards.
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
    assert!(query_of(&location(&r)).contains_key("code"));
}

#[tokio::test]
async fn login_brute_force_is_rate_limited() {
    let server = local(|l| l.login_max_failures = Some(3)).await;
    let client_id = public_client(&server).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let html = browser
        .get(&authorize_url(&server, &client_id, &challenge, REDIRECT))
        .await
        .text()
        .await
        .unwrap();
    let (request, csrf) = (hidden(&html, "request"), hidden(&html, "csrf"));
    for _ in 0..3 {
        let r = browser
            .post(
                &server.url("/login"),
                &[
                    ("request", &request),
                    ("csrf", &csrf),
                    ("username", "admin"),
                    ("password", "wrong-password"),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Even the right password is refused while the window lasts.
    let password = server.admin_password.clone().unwrap();
    let r = browser
        .post(
            &server.url("/login"),
            &[
                ("request", &request),
                ("csrf", &csrf),
                ("username", "admin"),
                ("password", &password),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn registration_and_client_authentication() {
    let server = local(|_| {}).await;
    for bad in [
        "javascript:alert(1)",
        "http://evil.example/cb",
        "https://a.example/cb#x",
        "data:text/html,x",
    ] {
        let (status, body) = register(&server, json!({"redirect_uris": [bad]})).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_redirect_uri")),
            "{bad}"
        );
        assert!(!body.to_string().contains(bad), "the URI is not echoed");
    }
    let r = server
        .client
        .post(server.url("/register"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_client_metadata"
    );
    // Confidential client: a secret, checked at the token endpoint.
    let (status, conf) = register(
        &server,
        json!({"redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(conf["token_endpoint_auth_method"], "client_secret_basic");
    let id = conf["client_id"].as_str().unwrap();
    let basic = |secret: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    };
    let r = server
        .client
        .post(server.url("/token"))
        .header(header::AUTHORIZATION, basic("wrong"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("code_verifier", "y"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    let r = server
        .client
        .post(server.url("/token"))
        .header(
            header::AUTHORIZATION,
            basic(conf["client_secret"].as_str().unwrap()),
        )
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("code_verifier", "y"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    // Unknown client: 401 invalid_client, which is what makes Claude re-register.
    let (status, body) = refresh_grant(&server, "gone", "x").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
}

#[tokio::test]
async fn metadata_document_client_ids_are_fenced_against_ssrf() {
    let server = local(|_| {}).await;
    let (_, challenge) = pkce();
    for id in [
        "https://127.0.0.1/client.json",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/c.json",
        "http://app.example/c.json",
    ] {
        let r = no_redirects()
            .get(authorize_url(
                &server,
                id,
                &challenge,
                "https://app.example/cb",
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{id}");
        assert!(r.headers().get(header::LOCATION).is_none(), "{id}");
    }
}

#[tokio::test]
async fn mcp_rejects_missing_and_foreign_tokens_in_local_mode() {
    let server = local(|_| {}).await;
    let r = server
        .mcp_post()
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("resource_metadata="), "{challenge}");
    server.set_token("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.");
    let r = server
        .mcp_post()
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn own_tokens_expire_on_time_so_clients_refresh() {
    let server = local(|l| l.access_token_ttl_secs = Some(1)).await;
    let client_id = public_client(&server).await;
    let (code, verifier) = code_for(&server, &client_id).await;
    let (_, tokens) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
        ],
    )
    .await;
    server.set_token(tokens["access_token"].as_str().unwrap());
    let (status, _) = server
        .stateless_call(1, "tools/list", None, json!({}))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = server
        .mcp_post()
        .json(&json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()
            .get(header::WWW_AUTHENTICATE)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
}

#[tokio::test]
async fn introspection_needs_a_confidential_client() {
    const RS_SECRET: &str = "resource-server-secret-0123456789abcdef";
    let server = local(|l| {
        l.introspection_clients = vec![mcpgate::config::RawIntrospectionClient {
            client_id: "rs".to_owned(),
            client_secret: Some(RS_SECRET.to_owned()),
            client_secret_file: None,
        }]
    })
    .await;
    let client_id = public_client(&server).await;
    let (code, verifier) = code_for(&server, &client_id).await;
    let (_, tokens) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
        ],
    )
    .await;
    let access = tokens["access_token"].as_str().unwrap();
    // A public client cannot introspect.
    let r = server
        .client
        .post(server.url("/introspect"))
        .form(&[("token", access), ("client_id", client_id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A configured resource server sees every token.
    let (id, secret) = ("rs", RS_SECRET);
    let introspect = |token: String| {
        let form = vec![
            ("token".to_owned(), token),
            ("client_id".to_owned(), id.to_owned()),
            ("client_secret".to_owned(), secret.to_owned()),
        ];
        server
            .client
            .post(server.url("/introspect"))
            .form(&form)
            .send()
    };
    let body: Value = introspect(access.to_owned())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["active"], true);
    assert_eq!(body["client_id"], client_id.as_str());
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let body: Value = introspect(refresh.to_owned())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["active"], true);
    // Revoked: inactive.
    let r = server
        .client
        .post(server.url("/revoke"))
        .form(&[("token", refresh), ("client_id", client_id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = introspect(refresh.to_owned())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["active"], false);
    let body: Value = introspect("garbage".to_owned())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["active"], false);
}

/// Runs the mcpgate binary's admin commands against the test server's store.
pub fn admin_cli(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    admin_cli_with(server, "", args)
}

/// [`admin_cli`] with extra `[auth.local]` lines.
fn admin_cli_with(server: &TestServer, local: &str, args: &[&str]) -> (bool, String, String) {
    let config = server.data_dir().join("admin.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[store]\nurl = {:?}\n[auth]\nmode = \"local\"\n[auth.local]\n{local}\n",
            server.data_dir().display().to_string(),
            crate::common::sqlite_url(server.data_dir()),
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mcpgate"));
    command.args(args).arg("--config").arg(&config);
    for (key, _) in std::env::vars() {
        if key.starts_with("MCPGATE_") {
            command.env_remove(key);
        }
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn operators_revoke_consents_and_remove_clients_from_the_cli() {
    let server = local(|_| {}).await;
    let client_id = public_client(&server).await;
    let (verifier, challenge) = pkce();
    let back = approve_with(
        &server,
        &mut Browser::default(),
        &client_id,
        &challenge,
        &[("remember", "1")],
    )
    .await;
    let code = query_of(&back)["code"].clone();
    let (status, tokens) = exchange_code(&server, &client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    let (ok, out, err) = admin_cli(&server, &["clients", "list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&client_id) && out.contains("\tit\tpublic\t"),
        "{out}"
    );
    assert!(out.contains(REDIRECT), "{out}");

    let (ok, out, err) = admin_cli(&server, &["consents", "list", "admin"]);
    assert!(ok, "{err}");
    assert!(out.starts_with(&client_id), "{out}");

    // Revoking the grant ends the refresh chain and forgets the consent.
    let (ok, out, err) = admin_cli(&server, &["consents", "revoke", "admin", &client_id]);
    assert!(ok, "{err}");
    assert!(out.contains("1 refresh token(s) revoked"), "{out}");
    let (status, body) = refresh_grant(&server, &client_id, &refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    let (_, out, _) = admin_cli(&server, &["consents", "list", "admin"]);
    assert!(out.is_empty(), "{out}");
    // Nothing left to revoke, and unknown users, are errors with the reason.
    let (ok, _, err) = admin_cli(&server, &["consents", "revoke", "admin", &client_id]);
    assert!(!ok && err.contains("neither"), "{err}");
    let (ok, _, err) = admin_cli(&server, &["consents", "list", "nobody"]);
    assert!(!ok && err.contains("no user named nobody"), "{err}");

    // A removed client is unknown at /token: 401 invalid_client (clients re-register on that).
    let (ok, _, err) = admin_cli(&server, &["clients", "remove", &client_id]);
    assert!(ok, "{err}");
    let (status, body) = refresh_grant(&server, &client_id, &refresh).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    let (ok, out, _) = admin_cli(&server, &["clients", "list"]);
    assert!(ok && !out.contains(&client_id), "{out}");
    let (ok, _, err) = admin_cli(&server, &["clients", "remove", &client_id]);
    assert!(!ok && err.contains("no registered client"), "{err}");
}

#[tokio::test]
async fn sign_ins_started_in_two_tabs_of_one_browser_both_complete() {
    let server = local(|_| {}).await;
    let client_id = public_client(&server).await;
    let mut browser = Browser::default();
    let (_, first_challenge) = pkce();
    let (_, second_challenge) = pkce();
    let first = browser
        .get(&authorize_url(
            &server,
            &client_id,
            &first_challenge,
            REDIRECT,
        ))
        .await
        .text()
        .await
        .unwrap();
    let second = browser
        .get(&authorize_url(
            &server,
            &client_id,
            &second_challenge,
            REDIRECT,
        ))
        .await
        .text()
        .await
        .unwrap();
    let password = server.admin_password.clone().unwrap();
    // The first tab signs in after the second tab was opened.
    for html in [&first, &second] {
        let login = browser
            .post(
                &server.url("/login"),
                &[
                    ("request", &hidden(html, "request")),
                    ("csrf", &hidden(html, "csrf")),
                    ("username", "admin"),
                    ("password", &password),
                ],
            )
            .await;
        assert_eq!(login.status(), StatusCode::SEE_OTHER);
        let consent = browser.get(&server.url(&location(&login))).await;
        assert_eq!(consent.status(), StatusCode::OK);
        let page = consent.text().await.unwrap();
        let done = browser
            .post(
                &server.url("/consent"),
                &[
                    ("request", &hidden(&page, "request")),
                    ("csrf", &hidden(&page, "csrf")),
                    ("decision", "approve"),
                ],
            )
            .await;
        assert_eq!(done.status(), StatusCode::SEE_OTHER);
        assert!(query_of(&location(&done)).contains_key("code"));
    }
    // A cookie value mcpgate could not have minted is replaced, not adopted.
    let mut planted = Browser {
        cookies: vec![("mcpgate_auth".to_owned(), "attacker-chosen".to_owned())],
    };
    planted
        .get(&authorize_url(
            &server,
            &client_id,
            &first_challenge,
            REDIRECT,
        ))
        .await;
    let held = &planted
        .cookies
        .iter()
        .find(|(k, _)| k == "mcpgate_auth")
        .unwrap()
        .1;
    assert_ne!(held, "attacker-chosen");
    assert_eq!(held.len(), 43);
}

#[tokio::test]
async fn a_new_encryption_key_reseals_everything_and_old_keys_can_then_go() {
    let server = local(|_| {}).await;
    let client_id = public_client(&server).await;
    let (code, verifier) = code_for(&server, &client_id).await;
    let (status, _) = exchange_code(&server, &client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK);
    let old = std::fs::read_to_string(server.data_dir().join("mcpgate.key")).unwrap();
    let new = mcpgate::oauth::crypto::random_token(32).unwrap();
    // The new key alone cannot open what the old one sealed.
    let (ok, out, _) = admin_cli_with(
        &server,
        &format!("encryption_key = {new:?}"),
        &["keys", "reseal"],
    );
    assert!(!ok && out.contains("re-sealed 0 value(s)"), "{out}");
    // With the old key listed, everything moves to the new one...
    let (ok, out, err) = admin_cli_with(
        &server,
        &format!(
            "encryption_key = {new:?}\nprevious_encryption_keys = [{:?}]",
            old.trim()
        ),
        &["keys", "reseal"],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("0 could not be opened"), "{out}");
    assert!(
        !out.contains("re-sealed 0 value(s)"),
        "the signing key and the code response: {out}"
    );
    // ...so the old key is no longer needed, and the old key alone opens nothing.
    let (ok, out, _) = admin_cli_with(
        &server,
        &format!("encryption_key = {new:?}"),
        &["keys", "reseal"],
    );
    assert!(
        ok && out.contains("re-sealed 0 value(s)") && out.contains("0 could not"),
        "{out}"
    );
    let (ok, _, _) = admin_cli_with(
        &server,
        &format!("encryption_key = {:?}", old.trim()),
        &["keys", "reseal"],
    );
    assert!(!ok);
}
