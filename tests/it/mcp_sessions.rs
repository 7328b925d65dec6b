//! MCP sessions across replicas: several in-process instances on one
//! PostgreSQL database (skipped without one, like the other PostgreSQL
//! tests), and one SQLite instance restarted.

use std::time::Duration;

use mcpgate::{
    clock::ManualClock,
    config::{RawConfig, RawResourceAuth},
};
use serde_json::{Value, json};

use crate::{
    common::{TestServer, fresh_postgres_database, sqlite_url},
    fake_idp::FakeIdp,
};

/// What every replica calls itself, as behind one balancer.
const PUBLIC_URL: &str = "http://127.0.0.1:1";

async fn replica(url: &str, edit: impl FnOnce(&mut RawConfig)) -> TestServer {
    let url = url.to_owned();
    TestServer::start_with(move |raw| {
        raw.store.url = Some(url);
        raw.public_url = Some(PUBLIC_URL.to_owned());
        edit(raw);
    })
    .await
}

/// Three replicas on one fresh PostgreSQL database, or `None` without one.
async fn replicas(edit: impl Fn(&mut RawConfig)) -> Option<(String, Vec<TestServer>)> {
    let url = fresh_postgres_database("mcp_sessions").await?;
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(replica(&url, &edit).await);
    }
    Some((url, servers))
}

async fn stop(mut server: TestServer) {
    server.signal_shutdown();
    if let Some(task) = server.task.take() {
        task.await.unwrap().unwrap();
    }
}

/// Status and body of a request on session `sid`.
async fn on_session(
    server: &TestServer,
    sid: &str,
    id: i64,
    method: &str,
    params: Value,
) -> (u16, Value) {
    server.session_request(sid, id, method, params).await
}

fn add(a: i64, b: i64) -> Value {
    json!({"name":"add","arguments":{"a": a, "b": b}})
}

/// The sum in a successful `add` response.
fn sum(message: &Value) -> Value {
    assert_eq!(message["result"]["isError"], json!(false), "{message}");
    message["result"]["structuredContent"]["result"].clone()
}

fn assert_not_found(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 404, "{what}: {body}");
    assert_eq!(body["error"]["code"], -32001, "{what}: {body}");
}

#[tokio::test]
async fn a_session_continues_on_every_replica_and_after_every_restart() {
    let Some((url, servers)) = replicas(|_| {}).await else {
        return;
    };
    let sid = servers[0].initialize().await;
    let listed = servers[1]
        .session_call(&sid, 2, "tools/list", json!({}))
        .await;
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"add"), "{listed}");
    let called = servers[2]
        .session_call(&sid, 3, "tools/call", add(2, 3))
        .await;
    assert_eq!(sum(&called), json!(5.0), "{called}");
    // Every replica stops; new ones on the same database carry on.
    for server in servers {
        stop(server).await;
    }
    let fresh = replica(&url, |_| {}).await;
    let called = fresh.session_call(&sid, 4, "tools/call", add(4, 5)).await;
    assert_eq!(sum(&called), json!(9.0), "{called}");
}

#[tokio::test]
async fn a_deleted_session_is_gone_on_every_replica() {
    let Some((_url, servers)) = replicas(|_| {}).await else {
        return;
    };
    let sid = servers[0].initialize().await;
    // The second replica restores it into memory before the DELETE.
    let (status, _) = on_session(&servers[1], &sid, 2, "tools/list", json!({})).await;
    assert_eq!(status, 200);
    let deleted = servers[0]
        .client
        .delete(servers[0].url("/mcp"))
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    for (i, server) in servers.iter().enumerate() {
        let (status, body) = on_session(server, &sid, 3, "tools/list", json!({})).await;
        assert_not_found(status, &body, &format!("replica {i}"));
    }
}

#[tokio::test]
async fn a_get_stream_opens_on_another_replica_than_the_posts() {
    let Some((_url, servers)) = replicas(|_| {}).await else {
        return;
    };
    let sid = servers[0].initialize().await;
    let stream = servers[1]
        .client
        .get(servers[1].url("/mcp"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let called = servers[0]
        .session_call(&sid, 2, "tools/call", add(1, 1))
        .await;
    assert_eq!(sum(&called), json!(2.0), "{called}");
    drop(stream);
}

#[tokio::test]
async fn foreign_and_forged_session_ids_get_404_on_every_replica() {
    let idp = FakeIdp::start().await;
    let issuer = idp.issuer.clone();
    let Some((_url, servers)) = replicas(|raw| {
        raw.auth.mode = Some("resource".into());
        raw.auth.resource = Some(RawResourceAuth {
            issuer: Some(issuer.clone()),
            ..RawResourceAuth::default()
        });
    })
    .await
    else {
        return;
    };
    idp.set_resource(&format!("{PUBLIC_URL}/mcp"));
    let scopes = "calc notes:read notes:write docs:read";
    let alice = idp.token("alice", scopes);
    let bob = idp.token("bob", scopes);
    servers[0].set_token(&alice);
    let sid = servers[0].initialize().await;
    for (i, server) in servers.iter().enumerate() {
        server.set_token(&bob);
        let (status, body) = on_session(server, &sid, 2, "tools/list", json!({})).await;
        assert_not_found(status, &body, &format!("bob on replica {i}"));
        let forged = uuid::Uuid::new_v4().to_string();
        let (status, body) = on_session(server, &forged, 3, "tools/list", json!({})).await;
        assert_not_found(status, &body, &format!("forged id on replica {i}"));
        // Bob cannot end Alice's session either.
        let deleted = server
            .client
            .delete(server.url("/mcp"))
            .bearer_auth(&bob)
            .header("mcp-session-id", &sid)
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 404, "bob's DELETE on replica {i}");
    }
    // Alice's session is untouched by all that, wherever she goes.
    for (i, server) in servers.iter().enumerate() {
        server.set_token(&alice);
        let (status, body) = on_session(server, &sid, 4, "tools/call", add(i as i64, 1)).await;
        assert_eq!(status, 200, "alice on replica {i}: {body}");
    }
}

#[tokio::test]
async fn a_session_survives_a_restart_on_sqlite() {
    let data = tempfile::tempdir().unwrap();
    let url = sqlite_url(data.path());
    let first = replica(&url, |_| {}).await;
    let sid = first.initialize().await;
    stop(first).await;
    let second = replica(&url, |_| {}).await;
    let called = second
        .session_call(&sid, 2, "tools/call", add(20, 22))
        .await;
    assert_eq!(sum(&called), json!(42.0), "{called}");
}

#[tokio::test]
async fn an_idle_session_expires_and_a_used_one_slides() {
    let clock = ManualClock::new();
    let server = TestServer::start_with_clock(|_| {}, clock.clone()).await;
    let used = server.initialize().await;
    let idle = server.initialize().await;
    let hours = |h: u64| Duration::from_secs(h * 3600);
    clock.advance(hours(20));
    let (status, _) = on_session(&server, &used, 2, "tools/list", json!({})).await;
    assert_eq!(status, 200);
    clock.advance(hours(20));
    // 40 h after initialize: the used one lives on, the idle one is gone.
    let (status, body) = on_session(&server, &used, 3, "tools/list", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = on_session(&server, &idle, 4, "tools/list", json!({})).await;
    assert_not_found(status, &body, "idle session");
    clock.advance(hours(25));
    let (status, body) = on_session(&server, &used, 5, "tools/list", json!({})).await;
    assert_not_found(status, &body, "used session idle for 25 h");
}

/// An open legacy `/sse` stream and what has been read from it.
struct SseStream {
    response: reqwest::Response,
    buffer: String,
}

impl SseStream {
    async fn open(server: &TestServer) -> SseStream {
        let mut request = server
            .client
            .get(server.url("/sse"))
            .header("accept", "text/event-stream");
        if let Some(token) = server.token.lock().unwrap().clone() {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        SseStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's name and data.
    async fn next(&mut self) -> (String, String) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .filter_map(|l| l.strip_prefix(name))
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                let (event, data) = (field("event:"), field("data:"));
                if !data.is_empty() {
                    return (event, data);
                }
                continue; // keep-alive comment
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream is still open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next `message` event, parsed.
    async fn message(&mut self) -> Value {
        loop {
            let (event, data) = self.next().await;
            if event == "message" {
                return serde_json::from_str(&data).unwrap();
            }
        }
    }
}

async fn post_message(
    server: &TestServer,
    endpoint: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, String) {
    let mut request = server
        .client
        .post(server.url(endpoint))
        .header("content-type", "application/json")
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn a_legacy_sse_post_to_another_replica_is_answered_on_the_stream() {
    let idp = FakeIdp::start().await;
    let issuer = idp.issuer.clone();
    let Some((_url, servers)) = replicas(|raw| {
        raw.auth.mode = Some("resource".into());
        raw.auth.resource = Some(RawResourceAuth {
            issuer: Some(issuer.clone()),
            ..RawResourceAuth::default()
        });
    })
    .await
    else {
        return;
    };
    idp.set_resource(&format!("{PUBLIC_URL}/mcp"));
    let scopes = "calc notes:read notes:write docs:read";
    let alice = idp.token("alice", scopes);
    let bob = idp.token("bob", scopes);
    servers[0].set_token(&alice);
    let mut stream = SseStream::open(&servers[0]).await;
    let (event, endpoint) = stream.next().await;
    assert_eq!(event, "endpoint");
    let initialize = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"it","version":"1"}}});
    let (status, body) = post_message(&servers[1], &endpoint, Some(&alice), initialize).await;
    assert_eq!(status, 202, "{body}");
    let answer = stream.message().await;
    assert_eq!(answer["id"], 1, "{answer}");
    assert!(answer["result"]["serverInfo"].is_object(), "{answer}");
    let (status, _) = post_message(
        &servers[2],
        &endpoint,
        Some(&alice),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    )
    .await;
    assert_eq!(status, 202);
    let (status, _) = post_message(
        &servers[1],
        &endpoint,
        Some(&alice),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":add(2, 2)}),
    )
    .await;
    assert_eq!(status, 202);
    let answer = stream.message().await;
    assert_eq!(answer["id"], 2, "{answer}");
    assert_eq!(sum(&answer), json!(4.0), "{answer}");
    // Bob may not post into Alice's session on any replica.
    for (i, server) in servers.iter().enumerate() {
        let (status, body) = post_message(
            server,
            &endpoint,
            Some(&bob),
            json!({"jsonrpc":"2.0","id":3,"method":"tools/list","params":{}}),
        )
        .await;
        assert_eq!(status, 404, "bob on replica {i}: {body}");
        assert!(body.contains("-32001"), "{body}");
    }
    // Once the stream is closed, the session is gone everywhere.
    drop(stream);
    let sid = endpoint.split("sessionId=").nth(1).unwrap().to_owned();
    let mut gone = false;
    for _ in 0..100 {
        let (status, _) = post_message(
            &servers[1],
            &format!("/messages?sessionId={sid}"),
            Some(&alice),
            json!({"jsonrpc":"2.0","id":4,"method":"tools/list","params":{}}),
        )
        .await;
        if status == 404 {
            gone = true;
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gone,
        "the closed session still takes POSTs on another replica"
    );
}
