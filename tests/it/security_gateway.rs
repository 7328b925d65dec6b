//! Replays of the security review's findings on the gateway, on tokens at
//! `/mcp`, on `/docs` and on metadata-document fetching. Each test fails
//! without its fix.

use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use base64::Engine;
use mcpgate::{
    config::{RawDocs, RawEnabled, RawIntrospection, RawLocalAuth, RawResourceAuth, RawToolsets},
    upstream::settings::{CallerIdentityMode, RawUpstream},
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::{
    common::{TestServer, seed_users, tool_json},
    fake_idp::FakeIdp,
    gateway::{
        ALICE, BOB, HttpFixture, call, ends_within, http, local_gateway, pid_of, stdio, structured,
    },
    oauth_browser::{authorize_url, no_redirects, pkce, user_token},
};

async fn get_doc(server: &TestServer, id: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = server.client.get(server.url(&format!("/docs/{id}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

// ------------------------------------------------------------ /docs (review #4)

#[tokio::test]
async fn private_docs_need_the_same_token_scope_and_policy_as_the_fetch_tool() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::create_dir(folder.path().join("hr")).unwrap();
    std::fs::write(
        folder.path().join("hr/salaries.md"),
        "# Salaries 2027\n\nCEO: 1,000,000. Confidential.\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    seed_users(dir.path(), &[ALICE]).await;
    let server = TestServer::start_in(dir, |raw| {
        raw.auth.mode = Some("local".to_owned());
        raw.auth.local = Some(RawLocalAuth::default());
        raw.toolsets = Some(RawToolsets {
            docs: Some(RawDocs {
                path: Some(folder.path().to_owned()),
                ..RawDocs::default()
            }),
            calc: Some(RawEnabled::default()),
            notes: None,
        });
    })
    .await;

    // The review's request: no token.
    let response = get_doc(&server, "hr/salaries.md", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer ")
            && challenge.contains("/.well-known/oauth-protected-resource/mcp"),
        "{challenge}"
    );
    let body = response.text().await.unwrap();
    assert!(!body.contains("Confidential"), "{body}");
    // Ids cannot be probed: an unknown one gets the same 401.
    assert_eq!(
        get_doc(&server, "hr/nothing.md", None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A token that is not one.
    assert_eq!(
        get_doc(&server, "hr/salaries.md", Some("not-a-token"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // A valid token without docs:read.
    let (calc_only, _) = user_token(&server, ALICE, Some("calc")).await;
    let response = get_doc(&server, "hr/salaries.md", Some(&calc_only)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = response.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("error=\"insufficient_scope\"") && challenge.contains("docs:read"),
        "{challenge}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope", "{body}");

    // The right token: the URL the fetch tool hands out serves the document.
    let (reader, _) = user_token(&server, ALICE, Some("docs:read")).await;
    server.set_token(&reader);
    let sid = server.initialize().await;
    let fetched =
        tool_json(&call(&server, &sid, 2, "fetch", json!({"id": "hr/salaries.md"})).await);
    let url = fetched["url"].as_str().unwrap();
    assert_eq!(url, server.url("/docs/hr/salaries.md"));
    let response = server
        .client
        .get(url)
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.text().await.unwrap(),
        fetched["text"].as_str().unwrap()
    );
}

#[tokio::test]
async fn a_deny_policy_on_fetch_also_closes_docs() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("a.md"), "# A\n\nsecret a\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    seed_users(dir.path(), &[ALICE]).await;
    let server = TestServer::start_in(dir, |raw| {
        raw.auth.mode = Some("local".to_owned());
        raw.auth.local = Some(RawLocalAuth::default());
        raw.toolsets = Some(RawToolsets {
            docs: Some(RawDocs {
                path: Some(folder.path().to_owned()),
                ..RawDocs::default()
            }),
            calc: None,
            notes: None,
        });
        raw.policy = vec![mcpgate::config::RawPolicy {
            tools: vec!["fetch".into()],
            effect: Some("deny".into()),
            ..Default::default()
        }];
    })
    .await;
    let (token, _) = user_token(&server, ALICE, Some("docs:read")).await;
    let response = get_doc(&server, "a.md", Some(&token)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "access_denied", "{body}");
}

#[tokio::test]
async fn the_built_in_guide_stays_public_at_docs() {
    let server = TestServer::start_with(|raw| {
        raw.auth.mode = Some("local".to_owned());
        raw.auth.local = Some(RawLocalAuth::default());
    })
    .await;
    let response = get_doc(&server, "overview.md", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("mcpgate"));
}

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn initialize_body() -> Value {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"it","version":"1"}}})
}

/// Status and JSON body of an `initialize` on `/mcp` with `token`.
async fn initialize_with(server: &TestServer, token: &str) -> (StatusCode, Value) {
    let response = server
        .client
        .post(server.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .bearer_auth(token)
        .json(&initialize_body())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

// ------------------------------------------------------------ identity JWTs

#[tokio::test]
async fn an_identity_jwt_minted_for_an_upstream_is_refused_on_mcp_even_with_mcpgates_audience() {
    let fixture = HttpFixture::start("127.0.0.1:0");
    let url = fixture.url.clone();
    let dir = tempfile::tempdir().unwrap();
    seed_users(dir.path(), &[ALICE]).await;
    // Validation refuses this audience (see the check-config test); force it
    // to show the token's type alone keeps the JWT off /mcp.
    let server = TestServer::start_in_validated(
        dir,
        |raw| {
            raw.auth.mode = Some("local".to_owned());
            raw.auth.local = Some(RawLocalAuth::default());
            raw.upstreams = vec![RawUpstream {
                isolation: Some("per-user".into()),
                identity: Some("jwt".into()),
                identity_audience: Some("https://upstream.internal".into()),
                ..http("h", &url)
            }];
        },
        |config| {
            let own = config.mcp_resource();
            config.gateway.upstreams[0].identity = CallerIdentityMode::Jwt { audience: own };
        },
    )
    .await;
    let (token, _) = user_token(&server, ALICE, None).await;
    server.set_token(&token);
    let sid = server.initialize().await;
    let reply = call(&server, &sid, 2, "http_headers", json!({})).await;
    // No client-credentials token: the identity JWT is the upstream's bearer.
    let authorization = structured(&reply)["headers"]["authorization"]
        .as_str()
        .unwrap_or_else(|| panic!("no identity JWT: {reply}"))
        .to_owned();
    let identity = authorization.strip_prefix("Bearer ").unwrap().to_owned();
    assert_ne!(identity, token);
    assert_eq!(jwt_part(&identity, 0)["typ"], "mcpgate-identity+jwt");
    let claims = jwt_part(&identity, 1);
    assert_eq!(claims["aud"], server.url("/mcp"));
    assert_eq!(claims["iss"], server.base);

    // The upstream replays it to mcpgate.
    let (status, body) = initialize_with(&server, &identity).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_token", "{body}");
    // The user's own token still works.
    assert_eq!(initialize_with(&server, &token).await.0, StatusCode::OK);
}

// ------------------------------------------------------------ introspection

async fn introspecting_server(idp: &FakeIdp, subject_claim: Option<&str>) -> TestServer {
    let issuer = idp.issuer.clone();
    let subject_claim = subject_claim.map(str::to_owned);
    let server = TestServer::start_with(|raw| {
        raw.auth.mode = Some("resource".into());
        raw.auth.resource = Some(RawResourceAuth {
            issuer: Some(issuer),
            introspection: Some(RawIntrospection {
                client_id: Some("rs-client".into()),
                client_secret: Some("rs-secret".into()),
                subject_claim,
                ..RawIntrospection::default()
            }),
            ..RawResourceAuth::default()
        });
    })
    .await;
    idp.set_resource(&server.url("/mcp"));
    server
}

#[tokio::test]
async fn introspected_tokens_without_sub_are_refused_unless_a_subject_claim_is_configured() {
    let idp = FakeIdp::start().await;
    let server = introspecting_server(&idp, None).await;
    // Two different machine tokens of one client would share one owner key.
    let (status, body) = initialize_with(&server, "opaque-machine-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_token");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("no subject"),
        "{body}"
    );
    // Tokens with a subject are unaffected.
    assert_eq!(
        initialize_with(&server, "opaque-good-dave").await.0,
        StatusCode::OK
    );

    // The operator says which claim names the caller: then it is used.
    let mapped = introspecting_server(&idp, Some("client_id")).await;
    mapped.set_token("opaque-machine-1");
    let sid = mapped.initialize().await;
    let reply = call(&mapped, &sid, 2, "add", json!({"a": 1, "b": 1})).await;
    assert_eq!(reply["result"]["content"][0]["text"], "2", "{reply}");
}

#[test]
fn check_config_refuses_an_identity_audience_of_mcpgates_own_resource_and_a_cwd_in_data_dir() {
    let data = tempfile::tempdir().unwrap();
    let inside = data.path().join("children");
    std::fs::create_dir(&inside).unwrap();
    let (code, _, err) = crate::config_cli::run(
        &["check-config"],
        &format!(
            r#"
public_url = "https://gate.example"
listen = "127.0.0.1:8123"
data_dir = "{data}"
[[upstreams]]
name = "who"
url = "https://search.internal/mcp"
isolation = "per-user"
identity = "jwt"
identity_audience = "https://gate.example/mcp"
[[upstreams]]
name = "sh"
command = ["true"]
cwd = "{inside}"
"#,
            data = data.path().display(),
            inside = inside.display(),
        ),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("upstreams[0].identity_audience") && err.contains("own resource"),
        "{err}"
    );
    assert!(
        err.contains("upstreams[1].cwd") && err.contains("inside data_dir"),
        "{err}"
    );
}

// ------------------------------------------------------------ signed headers

/// The `X-MCP-*` headers one upstream received.
async fn identity_headers(server: &TestServer, sid: &str, id: i64, tool: &str) -> Value {
    let reply = call(server, sid, id, tool, json!({})).await;
    structured(&reply)["headers"].clone()
}

fn verifies(secret: &str, audience: &str, headers: &Value) -> bool {
    let get = |name: &str| headers[name].as_str().unwrap_or_default().to_owned();
    let payload = format!(
        "v2\n{}\n{audience}\n{}\n{}\n{}\n{}",
        get("x-mcp-timestamp"),
        get("x-mcp-issuer"),
        get("x-mcp-subject"),
        get("x-mcp-client-id"),
        get("x-mcp-email"),
    );
    let hex = get("x-mcp-signature");
    let Some(signature) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, payload.as_bytes(), &signature).is_ok()
}

#[tokio::test]
async fn signed_headers_for_one_upstream_do_not_verify_at_another_sharing_its_secret() {
    const SHARED: &str = "one-secret-for-both";
    let a = HttpFixture::start("127.0.0.1:0");
    let b = HttpFixture::start("127.0.0.1:0");
    let (a_url, b_url) = (a.url.clone(), b.url.clone());
    let (server, _) = local_gateway(|raw, _| {
        raw.upstreams = [("a", &a_url), ("b", &b_url)]
            .into_iter()
            .map(|(name, url)| RawUpstream {
                isolation: Some("per-user".into()),
                identity: Some("signed-headers".into()),
                identity_secret: Some(SHARED.into()),
                ..http(name, url)
            })
            .collect();
    })
    .await;
    let (token, _) = user_token(&server, ALICE, None).await;
    server.set_token(&token);
    let sid = server.initialize().await;
    let to_a = identity_headers(&server, &sid, 2, "a__http_headers").await;
    let to_b = identity_headers(&server, &sid, 3, "b__http_headers").await;
    assert_eq!(to_a["x-mcp-audience"], a_url.as_str(), "{to_a}");
    assert_eq!(to_b["x-mcp-audience"], b_url.as_str(), "{to_b}");
    // Each upstream accepts what was signed for it...
    assert!(verifies(SHARED, &a_url, &to_a), "{to_a}");
    assert!(verifies(SHARED, &b_url, &to_b), "{to_b}");
    // ...and B, checking against its own audience, refuses A's headers
    // replayed to it (even with the audience header rewritten).
    assert!(!verifies(SHARED, &b_url, &to_a), "{to_a}");
    let mut replayed = to_a.clone();
    replayed["x-mcp-audience"] = json!(b_url);
    assert!(!verifies(SHARED, &b_url, &replayed));
}

// ------------------------------------------------------------ per-user links

#[tokio::test]
async fn per_user_links_are_capped_closing_the_least_recently_used_idle_one() {
    let (server, _) = local_gateway(|raw, _| {
        raw.upstreams = vec![RawUpstream {
            isolation: Some("per-user".into()),
            max_per_user_links: Some(1),
            ..stdio("fx")
        }];
    })
    .await;
    let (alice_token, _) = user_token(&server, ALICE, None).await;
    let (bob_token, _) = user_token(&server, BOB, None).await;
    server.set_token(&alice_token);
    let alice_sid = server.initialize().await;
    server.set_token(&bob_token);
    let bob_sid = server.initialize().await;

    server.set_token(&alice_token);
    let alice_pid = pid_of(&call(&server, &alice_sid, 2, "pid", json!({})).await);
    // While alice's only link is busy, a new principal cannot take it over.
    let sleeping = call(&server, &alice_sid, 3, "sleep", json!({"seconds": 1.5}));
    let refused = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let response = server
            .client
            .post(server.url("/mcp"))
            .bearer_auth(&bob_token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &bob_sid)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"pid","arguments":{}}}))
            .send()
            .await
            .unwrap();
        crate::common::response_message(response).await
    };
    let (slept, refused) = tokio::join!(sleeping, refused);
    assert_eq!(slept["result"]["content"][0]["text"], "slept", "{slept}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("maximum of 1"), "{refused}");

    // Once alice's link is idle, bob's call closes it and gets his own.
    server.set_token(&bob_token);
    let bob_pid = pid_of(&call(&server, &bob_sid, 3, "pid", json!({})).await);
    assert_ne!(bob_pid, alice_pid);
    assert!(
        ends_within(alice_pid, Duration::from_secs(5)).await,
        "the least recently used link was not closed"
    );
    let ready = server.get_json("/readyz").await;
    assert_eq!(ready["upstreams"][0]["connections"], 1, "{ready}");
}

// ------------------------------------------------------------ stdio cwd

#[tokio::test]
async fn stdio_children_do_not_start_in_mcpgates_working_directory() {
    let server = TestServer::start_with(|raw| raw.upstreams = vec![stdio("fx")]).await;
    let sid = server.initialize().await;
    let pid = pid_of(&call(&server, &sid, 2, "pid", json!({})).await);
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    let own = std::env::current_dir().unwrap().canonicalize().unwrap();
    let data = server.data_dir().canonicalize().unwrap();
    assert_ne!(cwd, own, "the child runs where mcpgate does (./data)");
    assert!(!cwd.starts_with(&data), "{}", cwd.display());
    assert!(!own.starts_with(&cwd), "{}", cwd.display());
    // Its own empty directory, private to mcpgate's user.
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cwd).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

// ------------------------------------------------------------ CIMD (review #13)

#[tokio::test]
async fn ipv6_forms_of_private_addresses_are_refused_before_any_connection() {
    let server = TestServer::start_with(|raw| {
        raw.auth.mode = Some("local".to_owned());
        raw.auth.local = Some(RawLocalAuth::default());
    })
    .await;
    let (_, challenge) = pkce();
    for id in [
        "https://[::7f00:1]/c.json",
        "https://[::a00:1]/c.json",
        "https://[::ffff:0:7f00:1]/c.json",
        "https://[2002:7f00:1::1]/c.json",
        "https://[2001::1]/c.json",
        "https://[fec0::1]/c.json",
        "https://[100::1]/c.json",
        "https://[64:ff9b:1::7f00:1]/c.json",
    ] {
        let started = Instant::now();
        let response = no_redirects()
            .get(authorize_url(
                &server,
                id,
                &challenge,
                "https://app.example/cb",
            ))
            .send()
            .await
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{id}");
        assert!(response.headers().get(header::LOCATION).is_none(), "{id}");
        let body = response.text().await.unwrap();
        assert!(body.contains("non-public address"), "{id}: {body}");
        assert!(elapsed < Duration::from_millis(1000), "{id}: {elapsed:?}");
    }
}
