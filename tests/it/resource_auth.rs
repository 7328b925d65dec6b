//! `auth.mode = "resource"` against an in-process authorization server.

use std::{sync::atomic::Ordering, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use mcpgate::{
    clock::{ManualClock, SharedClock},
    config::{RawIntrospection, RawResourceAuth},
};
use serde_json::{Value, json};

use crate::{
    common::{TestServer, tool_json},
    fake_idp::{FakeIdp, now},
};

async fn start(idp: &FakeIdp) -> TestServer {
    start_on_clock(idp, mcpgate::clock::system()).await
}

/// [`start`] with the verifier reading time from `clock`.
async fn start_on_clock(idp: &FakeIdp, clock: SharedClock) -> TestServer {
    let issuer = idp.issuer.clone();
    let server = TestServer::start_with_clock(
        |raw| {
            raw.auth.mode = Some("resource".into());
            raw.auth.resource = Some(RawResourceAuth {
                issuer: Some(issuer),
                jwks_refetch_interval_secs: Some(2),
                introspection: Some(RawIntrospection {
                    client_id: Some("rs-client".into()),
                    client_secret: Some("rs-secret".into()),
                    ..RawIntrospection::default()
                }),
                ..RawResourceAuth::default()
            });
        },
        clock,
    )
    .await;
    idp.set_resource(&server.url("/mcp"));
    server
}

fn init_body() -> Value {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"it","version":"1"}}})
}

/// Status and WWW-Authenticate of an initialize sent with `token`.
async fn try_token(server: &TestServer, token: Option<&str>) -> (u16, String) {
    let mut request = server
        .client
        .post(server.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&init_body());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    if status != 200 {
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"].is_string(),
            "JSON error body expected: {body}"
        );
    }
    (status, challenge)
}

#[tokio::test]
async fn metadata_and_missing_token_challenge() {
    let idp = FakeIdp::start().await;
    let server = start(&idp).await;
    let prm: Value = server
        .get_json("/.well-known/oauth-protected-resource/mcp")
        .await;
    assert_eq!(prm["resource"], server.url("/mcp"));
    assert_eq!(prm["authorization_servers"], json!([idp.issuer]));
    assert_eq!(prm["bearer_methods_supported"], json!(["header"]));
    let scopes = prm["scopes_supported"].as_array().unwrap();
    assert!(
        scopes.contains(&json!("calc")) && !scopes.contains(&json!("offline_access")),
        "{prm}"
    );
    let root = server
        .client
        .get(server.url("/.well-known/oauth-protected-resource"))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), 404);
    assert!(root.json::<Value>().await.unwrap()["error"].is_string());

    let (status, challenge) = try_token(&server, None).await;
    assert_eq!(status, 401);
    let metadata = server.url("/.well-known/oauth-protected-resource/mcp");
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(&format!("resource_metadata=\"{metadata}\"")),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"calc docs:read notes:read notes:write\""),
        "{challenge}"
    );
    assert!(!challenge.contains("error="), "{challenge}");
    // A token in the query string is not a token.
    let token = idp.token("alice", "calc");
    let response = server
        .client
        .post(format!("{}?access_token={token}", server.url("/mcp")))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&init_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // The legacy transport is protected the same way.
    let sse = server
        .client
        .get(server.url("/sse"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 401);
}

#[tokio::test]
async fn bad_tokens_get_invalid_token() {
    let idp = FakeIdp::start().await;
    let server = start(&idp).await;
    let good = idp.claims("alice", "calc");
    let mut cases: Vec<(&str, String)> = vec![
        ("garbage", "not-a-token".into()),
        ("three dots garbage", "a.b.c".into()),
    ];
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("https://other.example/mcp");
    cases.push(("wrong aud", idp.sign(&wrong_aud)));
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    cases.push(("wrong iss", idp.sign(&wrong_iss)));
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 120);
    cases.push(("expired beyond leeway", idp.sign(&expired)));
    let mut not_yet = good.clone();
    not_yet["nbf"] = json!(now() + 600);
    cases.push(("nbf in the future", idp.sign(&not_yet)));
    let mut no_sub = good.clone();
    no_sub.as_object_mut().unwrap().remove("sub");
    cases.push(("no sub", idp.sign(&no_sub)));
    // alg none: header and claims, empty signature.
    let header = URL_SAFE_NO_PAD.encode(json!({"alg":"none","typ":"JWT","kid":"k1"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(good.to_string());
    cases.push(("alg none", format!("{header}.{claims}.")));
    // HS256 "signed" with the public key bytes (alg confusion).
    let public = idp.keys.lock().unwrap()[0].public_point.clone();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some("k1".into());
    cases.push((
        "HS256 with the public key",
        jsonwebtoken::encode(&hs, &good, &jsonwebtoken::EncodingKey::from_secret(&public)).unwrap(),
    ));
    // A valid signature under a typ that is not an access token.
    let mut id_token_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    id_token_header.kid = Some("k1".into());
    id_token_header.typ = Some("dpop+jwt".into());
    cases.push((
        "wrong typ",
        jsonwebtoken::encode(
            &id_token_header,
            &good,
            &idp.keys.lock().unwrap()[0].encoding,
        )
        .unwrap(),
    ));
    cases.push((
        "oversized",
        format!("{}.{}.x", "a".repeat(5000), "b".repeat(5000)),
    ));
    cases.push(("opaque, inactive", "opaque-bad-1".into()));
    for (name, token) in cases {
        let (status, challenge) = try_token(&server, Some(&token)).await;
        assert_eq!(status, 401, "{name}");
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        assert!(
            challenge.contains("resource_metadata=\""),
            "{name}: {challenge}"
        );
    }
    // And the good one passes.
    assert_eq!(try_token(&server, Some(&idp.sign(&good))).await.0, 200);
    // Within the leeway, an expired token still passes.
    let mut just_expired = good.clone();
    just_expired["exp"] = json!(now() - 10);
    assert_eq!(
        try_token(&server, Some(&idp.sign(&just_expired))).await.0,
        200
    );
}

#[tokio::test]
async fn scopes_filter_and_step_up() {
    let idp = FakeIdp::start().await;
    let server = start(&idp).await;
    server.set_token(&idp.token("alice", "calc notes:read"));
    let sid = server.initialize().await;
    let list = server.session_call(&sid, 2, "tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"add") && names.contains(&"list_notes"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"create_note") && !names.contains(&"search"),
        "{names:?}"
    );
    let add = server
        .session_call(
            &sid,
            3,
            "tools/call",
            json!({"name":"add","arguments":{"a":1,"b":2}}),
        )
        .await;
    assert_eq!(add["result"]["content"][0]["text"], "3");
    let denied = server
        .mcp_post()
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"create_note","arguments":{"title":"x"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let challenge = denied.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"calc notes:read notes:write\""),
        "{challenge}"
    );
    assert!(challenge.contains("resource_metadata=\""), "{challenge}");
    // Stepped up: the same session with a broader token.
    server.set_token(&idp.token("alice", "calc notes:read notes:write"));
    let created = server
        .session_call(
            &sid,
            5,
            "tools/call",
            json!({"name":"create_note","arguments":{"title":"x"}}),
        )
        .await;
    assert_eq!(created["result"]["isError"], false, "{created}");
}

#[tokio::test]
async fn sessions_and_notes_belong_to_their_principal() {
    let idp = FakeIdp::start().await;
    let server = start(&idp).await;
    let all = "calc notes:read notes:write docs:read";
    server.set_token(&idp.token("alice", all));
    let alice_sid = server.initialize().await;
    let note = tool_json(
        &server
            .session_call(
                &alice_sid,
                2,
                "tools/call",
                json!({"name":"create_note","arguments":{"title":"alice's"}}),
            )
            .await,
    );
    // Bob presents Alice's session id: 404, nothing of hers.
    server.set_token(&idp.token("bob", all));
    let response = server
        .mcp_post()
        .header("mcp-session-id", &alice_sid)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"list_notes","arguments":{}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body = response.text().await.unwrap();
    assert!(!body.contains("alice's"), "{body}");
    // In his own session Bob sees none of Alice's notes.
    let bob_sid = server.initialize().await;
    let listed = tool_json(
        &server
            .session_call(
                &bob_sid,
                4,
                "tools/call",
                json!({"name":"list_notes","arguments":{}}),
            )
            .await,
    );
    assert_eq!(listed["notes"], json!([]));
    let read = server
        .session_call(
            &bob_sid,
            5,
            "tools/call",
            json!({"name":"read_note","arguments":{"id": note["id"]}}),
        )
        .await;
    assert_eq!(read["result"]["isError"], true);
}

#[tokio::test]
async fn unknown_kid_burst_fetches_keys_once_and_rotation_is_picked_up() {
    let idp = FakeIdp::start().await;
    let clock = ManualClock::new();
    let server = start_on_clock(&idp, clock.clone()).await;
    assert_eq!(
        try_token(&server, Some(&idp.token("alice", "calc")))
            .await
            .0,
        200
    );
    // Past the refetch interval since the first fetch, so one refetch is allowed.
    clock.advance(Duration::from_millis(2100));
    let baseline = idp.jwks_fetches.load(Ordering::SeqCst);
    // 30 tokens with random kids in parallel.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(format!("random-{i}"));
        let token = jsonwebtoken::encode(
            &header,
            &idp.claims("alice", "calc"),
            &idp.keys.lock().unwrap()[0].encoding,
        )
        .unwrap();
        let request = server
            .client
            .post(server.url("/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .bearer_auth(token)
            .json(&init_body());
        tasks.push(tokio::spawn(request.send()));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().status(), 401);
    }
    assert_eq!(
        idp.jwks_fetches.load(Ordering::SeqCst) - baseline,
        1,
        "one refetch for the whole burst"
    );

    // Rotation: a token under a new kid works once the refetch interval allows a fetch.
    clock.advance(Duration::from_millis(2100));
    idp.rotate("k2");
    assert_eq!(
        try_token(&server, Some(&idp.token("alice", "calc")))
            .await
            .0,
        200,
        "new key picked up"
    );

    // The IdP's key endpoint goes down: cached keys keep working.
    idp.jwks_down.store(true, Ordering::SeqCst);
    assert_eq!(
        try_token(&server, Some(&idp.token("carol", "calc")))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn opaque_tokens_are_introspected() {
    let idp = FakeIdp::start().await;
    let server = start(&idp).await;
    server.set_token("opaque-good-dave");
    let sid = server.initialize().await;
    let add = server
        .session_call(
            &sid,
            2,
            "tools/call",
            json!({"name":"add","arguments":{"a":2,"b":2}}),
        )
        .await;
    assert_eq!(add["result"]["content"][0]["text"], "4");
    assert_eq!(try_token(&server, Some("opaque-bad-dave")).await.0, 401);
    // A token without `sub` is refused (security_gateway.rs replays it).
    assert_eq!(try_token(&server, Some("opaque-machine-1")).await.0, 401);
}

/// A rejection sent before the body is read must close the connection
/// explicitly, or a pooled client's next request hits a reset.
#[tokio::test]
async fn early_rejection_says_connection_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let idp = FakeIdp::start().await;
    let server = start(&idp).await;
    let body = init_body().to_string();
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer not-a-token\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut response = vec![0u8; 4096];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        socket.read(&mut response),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&response[..n]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 401"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
}

#[tokio::test]
async fn legacy_sse_session_follows_its_principal() {
    let idp = FakeIdp::start().await;
    let server = start(&idp).await;
    let first = idp.token("alice", "calc");
    let response = server
        .client
        .get(server.url("/sse"))
        .header("accept", "text/event-stream")
        .bearer_auth(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = Box::pin(response.bytes_stream());
    let mut buffer = String::new();
    let (_, endpoint) = crate::mcp_transport::next_event(&mut stream, &mut buffer).await;
    let post = |token: String, body: Value| {
        server
            .client
            .post(server.url(&endpoint))
            .header("content-type", "application/json")
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"it","version":"1"}}});
    assert_eq!(post(first.clone(), init).await.unwrap().status(), 202);
    let _ = crate::mcp_transport::next_event(&mut stream, &mut buffer).await;
    let initialized = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
    assert_eq!(
        post(first.clone(), initialized).await.unwrap().status(),
        202
    );
    // Without the scope, the call is refused on the stream.
    let create = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"create_note","arguments":{"title":"t"}}});
    assert_eq!(
        post(first.clone(), create.clone()).await.unwrap().status(),
        202
    );
    let (_, data) = crate::mcp_transport::next_event(&mut stream, &mut buffer).await;
    let refused: Value = serde_json::from_str(&data).unwrap();
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("insufficient_scope"),
        "{refused}"
    );
    // A stepped-up token of the same user keeps the session and is honoured.
    let stepped_up = idp.token("alice", "calc notes:write");
    let mut create_again = create.clone();
    create_again["id"] = json!(3);
    assert_eq!(post(stepped_up, create_again).await.unwrap().status(), 202);
    let (_, data) = crate::mcp_transport::next_event(&mut stream, &mut buffer).await;
    let created: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(created["result"]["isError"], false, "{created}");
    // Another user cannot post into alice's session.
    let ping = json!({"jsonrpc":"2.0","id":4,"method":"ping"});
    assert_eq!(
        post(idp.token("bob", "calc"), ping).await.unwrap().status(),
        404
    );
}
