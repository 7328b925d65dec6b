//! Replays of the security review's findings on the gateway, on tokens at
//! `/mcp`, on `/docs` and on metadata-document fetching. Each test fails
//! without its fix.

use base64::Engine;
use mcpgate::{
    config::{RawDocs, RawEnabled, RawIntrospection, RawLocalAuth, RawResourceAuth, RawToolsets},
    upstream::settings::{Identity, RawUpstream},
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::{
    common::{TestServer, seed_users, tool_json},
    fake_idp::FakeIdp,
    gateway::{ALICE, HttpFixture, call, http, structured},
    oauth_browser::user_token,
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
            config.gateway.upstreams[0].identity = Identity::Jwt { audience: own };
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
