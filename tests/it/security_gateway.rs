//! Replays of the security review's findings on the gateway, on tokens at
//! `/mcp`, on `/docs` and on metadata-document fetching. Each test fails
//! without its fix.

use mcpgate::config::{RawDocs, RawEnabled, RawLocalAuth, RawToolsets};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::{
    common::{TestServer, seed_users, tool_json},
    gateway::{ALICE, call},
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
