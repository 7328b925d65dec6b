//! A POST's SSE response resumed with `Last-Event-ID` after its connection
//! broke, and a server request answered on another replica than the one
//! that asked: two in-process replicas on one PostgreSQL database (skipped
//! without one), and the single-process variants on SQLite.

use std::time::Duration;

use mcpgate::config::{RawConfig, RawResourceAuth};
use serde_json::{Value, json};

use crate::{
    common::{TestServer, fresh_postgres_database},
    fake_idp::FakeIdp,
    gateway::stdio,
};

/// An SSE response body read event by event.
struct Sse {
    response: reqwest::Response,
    buffer: String,
}

impl Sse {
    /// POST `method` on session `sid` and keep its SSE response open.
    async fn post(server: &TestServer, sid: &str, id: i64, method: &str, params: Value) -> Sse {
        let response = server
            .mcp_post()
            .header("mcp-session-id", sid)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        Sse {
            response,
            buffer: String::new(),
        }
    }

    /// GET on session `sid` with `Last-Event-ID`; status and stream.
    async fn get(server: &TestServer, sid: &str, last_event_id: Option<&str>) -> (u16, Sse) {
        let mut request = server
            .client
            .get(server.url("/mcp"))
            .header("accept", "text/event-stream")
            .header("mcp-session-id", sid)
            .header("mcp-protocol-version", "2025-11-25");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        if let Some(token) = server.token.lock().unwrap().clone() {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            Sse {
                response,
                buffer: String::new(),
            },
        )
    }

    /// The next event's id and data (data empty for a priming event);
    /// `None` when the stream ends.
    async fn event(&mut self) -> Option<(Option<String>, String)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    let values: Vec<&str> = block
                        .lines()
                        .filter_map(|l| l.strip_prefix(name))
                        .map(str::trim)
                        .collect();
                    (!values.is_empty()).then(|| values.join("\n"))
                };
                let (id, data) = (field("id:"), field("data:"));
                if id.is_none() && data.is_none() {
                    continue; // keep-alive or retry hint
                }
                return Some((id, data.unwrap_or_default()));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.response.chunk())
                .await
                .expect("an event or the end within 20 s")
                .unwrap()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next message and its event id.
    async fn message(&mut self) -> (String, Value) {
        loop {
            let (id, data) = self.event().await.expect("the stream is still open");
            if !data.is_empty() {
                return (
                    id.expect("messages carry event ids"),
                    serde_json::from_str(&data).unwrap(),
                );
            }
        }
    }

    /// Every message until the stream ends.
    async fn rest(mut self) -> Vec<(String, Value)> {
        let mut messages = Vec::new();
        while let Some((id, data)) = self.event().await {
            if !data.is_empty() {
                messages.push((
                    id.expect("messages carry event ids"),
                    serde_json::from_str(&data).unwrap(),
                ));
            }
        }
        messages
    }
}

async fn replica(url: &str, edit: impl FnOnce(&mut RawConfig)) -> TestServer {
    let url = url.to_owned();
    TestServer::start_with(move |raw| {
        raw.store.url = Some(url);
        raw.public_url = Some("http://127.0.0.1:1".to_owned());
        edit(raw);
    })
    .await
}

fn text_of(message: &Value) -> String {
    assert_eq!(message["result"]["isError"], json!(false), "{message}");
    message["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn sleep_for(seconds: f64) -> Value {
    json!({"name": "sleep", "arguments": {"seconds": seconds}})
}

/// Start a slow call, read its priming event, then break the connection;
/// returns the priming event's id.
async fn broken_call(server: &TestServer, sid: &str, id: i64) -> String {
    let mut post = Sse::post(server, sid, id, "tools/call", sleep_for(1.5)).await;
    let (primed, data) = post.event().await.expect("a priming event");
    assert!(data.is_empty(), "the priming event comes first: {data}");
    let primed = primed.expect("a POST stream's events carry ids");
    assert_ne!(primed, "0", "a resumable id");
    drop(post);
    primed
}

/// The answers to request `id` among `messages`.
fn answers(messages: &[(String, Value)], id: i64) -> Vec<(String, Value)> {
    messages
        .iter()
        .filter(|(_, m)| m["id"] == json!(id) && m.get("method").is_none())
        .cloned()
        .collect()
}

/// The stream name of a POST event id.
fn stream_of(event_id: &str) -> &str {
    event_id.split_once('.').expect("a POST stream event id").0
}

#[tokio::test]
async fn a_post_whose_connection_broke_is_resumed_on_another_replica_with_its_answer_once() {
    let Some(url) = fresh_postgres_database("mcp_post_streams").await else {
        return;
    };
    let a = replica(&url, |raw| raw.upstreams = vec![stdio("fx")]).await;
    let b = replica(&url, |raw| raw.upstreams = vec![stdio("fx")]).await;
    let sid = a.initialize().await;
    let primed = broken_call(&a, &sid, 2).await;
    // The client resumes on B while A still runs the call.
    let (status, resumed) = Sse::get(&b, &sid, Some(&primed)).await;
    assert_eq!(status, 200);
    let messages = resumed.rest().await;
    let answers = answers(&messages, 2);
    assert_eq!(answers.len(), 1, "the answer exactly once: {messages:?}");
    assert_eq!(text_of(&answers[0].1), "slept");
    assert_eq!(stream_of(&answers[0].0), stream_of(&primed), "same stream");
    // A resume from the same point on A gets the same rest, once again.
    let (_, again) = Sse::get(&a, &sid, Some(&primed)).await;
    let again = again.rest().await;
    assert_eq!(self::answers(&again, 2).len(), 1, "{again:?}");
    // An ordinary call that is read to its end stores nothing to resume:
    // its id resumes nothing (the resume ends with no message).
    let mut post = Sse::post(&a, &sid, 3, "tools/call", sleep_for(0.0)).await;
    let (primed, _) = post.event().await.unwrap();
    let (_, answer) = post.message().await;
    assert_eq!(text_of(&answer), "slept");
    let (_, nothing) = Sse::get(&b, &sid, primed.as_deref()).await;
    assert!(nothing.rest().await.is_empty());
}

#[tokio::test]
async fn a_broken_post_cannot_be_resumed_by_another_principal_or_from_another_session() {
    let Some(url) = fresh_postgres_database("mcp_post_streams").await else {
        return;
    };
    let idp = FakeIdp::start().await;
    let issuer = idp.issuer.clone();
    let edit = |raw: &mut RawConfig| {
        raw.auth.mode = Some("resource".into());
        raw.auth.resource = Some(RawResourceAuth {
            issuer: Some(issuer.clone()),
            ..RawResourceAuth::default()
        });
        raw.upstreams = vec![stdio("fx")];
    };
    let a = replica(&url, edit).await;
    let b = replica(&url, edit).await;
    idp.set_resource("http://127.0.0.1:1/mcp");
    let scopes = "calc notes:read notes:write docs:read";
    let (alice, bob) = (idp.token("alice", scopes), idp.token("bob", scopes));
    a.set_token(&alice);
    let alices = a.initialize().await;
    let primed = broken_call(&a, &alices, 2).await;
    // Bob with Alice's session id: 404 on either replica.
    b.set_token(&bob);
    let bobs = b.initialize().await;
    for server in [&a, &b] {
        server.set_token(&bob);
        let (status, refused) = Sse::get(server, &alices, Some(&primed)).await;
        assert_eq!(status, 404);
        let body: Value = refused.response.json().await.unwrap();
        assert_eq!(body["error"]["code"], -32001, "{body}");
    }
    // Bob's own session with Alice's event id, or a forged one: nothing.
    let forged = format!("{}.0", "f".repeat(32));
    for id in [primed.as_str(), forged.as_str()] {
        let (status, stream) = Sse::get(&b, &bobs, Some(id)).await;
        assert_eq!(status, 200);
        let messages = stream.rest().await;
        assert!(messages.is_empty(), "{id}: {messages:?}");
    }
    // Alice herself gets her answer on B.
    b.set_token(&alice);
    let (status, hers) = Sse::get(&b, &alices, Some(&primed)).await;
    assert_eq!(status, 200);
    let messages = hers.rest().await;
    assert_eq!(answers(&messages, 2).len(), 1, "{messages:?}");
}

/// Initialize a session whose client can answer sampling requests.
async fn initialize_sampling(server: &TestServer) -> String {
    let response = server
        .mcp_post()
        .json(
            &json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion":"2025-11-25","capabilities":{"sampling":{}},
            "clientInfo":{"name":"it","version":"1"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sid = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let _ = response.text().await.unwrap();
    let ack = server
        .mcp_post()
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), 202);
    sid
}

/// POST the client's answer to a sampling request; returns the status.
async fn answer_sampling(server: &TestServer, sid: &str, id: &Value, text: &str) -> u16 {
    server
        .mcp_post()
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({"jsonrpc":"2.0","id":id,"result":{
            "role":"assistant","content":{"type":"text","text":text},"model":"it-model"}}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A sampling request raised by `asker`'s upstream link during a call,
/// read on a GET stream on `reader` and answered on `answerer`: the call
/// completes with the answer.
async fn sampling_answered_on(asker: &TestServer, reader: &TestServer, answerer: &TestServer) {
    let sid = initialize_sampling(asker).await;
    let (status, mut stream) = Sse::get(reader, &sid, None).await;
    assert_eq!(status, 200);
    let mut call = Sse::post(
        asker,
        &sid,
        2,
        "tools/call",
        json!({"name":"test_sampling","arguments":{"prompt":"what is 2+2?"}}),
    )
    .await;
    let (_, request) = stream.message().await;
    assert_eq!(request["method"], "sampling/createMessage", "{request}");
    assert!(
        request["id"].is_string(),
        "the id names the asking replica: {request}"
    );
    assert_eq!(
        answer_sampling(answerer, &sid, &request["id"], "four").await,
        202
    );
    let (_, answer) = call.message().await;
    assert_eq!(text_of(&answer), "LLM response: four", "{answer}");
}

#[tokio::test]
async fn a_server_request_answered_on_another_replica_completes_on_the_one_that_asked() {
    let Some(url) = fresh_postgres_database("mcp_post_streams").await else {
        return;
    };
    let a = replica(&url, |raw| raw.upstreams = vec![stdio("fx")]).await;
    let b = replica(&url, |raw| raw.upstreams = vec![stdio("fx")]).await;
    sampling_answered_on(&a, &b, &b).await;
    sampling_answered_on(&b, &a, &b).await;
}

#[tokio::test]
async fn an_answer_relayed_for_another_principals_session_is_refused() {
    let Some(url) = fresh_postgres_database("mcp_post_streams").await else {
        return;
    };
    let idp = FakeIdp::start().await;
    let issuer = idp.issuer.clone();
    let edit = |raw: &mut RawConfig| {
        raw.auth.mode = Some("resource".into());
        raw.auth.resource = Some(RawResourceAuth {
            issuer: Some(issuer.clone()),
            ..RawResourceAuth::default()
        });
        raw.upstreams = vec![stdio("fx")];
    };
    let a = replica(&url, edit).await;
    let b = replica(&url, edit).await;
    idp.set_resource("http://127.0.0.1:1/mcp");
    let scopes = "calc notes:read notes:write docs:read";
    let (alice, bob) = (idp.token("alice", scopes), idp.token("bob", scopes));
    a.set_token(&alice);
    let sid = initialize_sampling(&a).await;
    let (_, mut stream) = Sse::get(&a, &sid, None).await;
    let mut call = Sse::post(
        &a,
        &sid,
        2,
        "tools/call",
        json!({"name":"test_sampling","arguments":{"prompt":"alice's question"}}),
    )
    .await;
    let (_, request) = stream.message().await;
    assert_eq!(request["method"], "sampling/createMessage", "{request}");
    // Bob answers on B with Alice's session: 404, nothing relayed.
    b.set_token(&bob);
    assert_eq!(
        answer_sampling(&b, &sid, &request["id"], "bob's answer").await,
        404
    );
    // A relayed row naming Bob as the poster is not taken into Alice's
    // session either (the asking replica checks the owner again).
    let store = mcpgate::store::Store::connect(&url, 2).await.unwrap();
    let origin = request["id"].as_str().unwrap().split_once('-').unwrap().0;
    let forged = json!({"jsonrpc":"2.0","id":request["id"],"result":{
        "role":"assistant","content":{"type":"text","text":"forged"},"model":"x"}});
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let bobs_owner = format!("{}|bob", idp.issuer);
    store
        .relay_mcp_response(origin, &sid, &bobs_owner, &forged.to_string(), now)
        .await
        .unwrap();
    // Alice's own answer on B completes the call with hers.
    b.set_token(&alice);
    assert_eq!(
        answer_sampling(&b, &sid, &request["id"], "alice's answer").await,
        202
    );
    let (_, answer) = call.message().await;
    assert_eq!(text_of(&answer), "LLM response: alice's answer", "{answer}");
}

#[tokio::test]
async fn on_sqlite_a_broken_post_resumes_and_a_server_request_is_answered() {
    let server = TestServer::start_with(|raw| raw.upstreams = vec![stdio("fx")]).await;
    let sid = server.initialize().await;
    let primed = broken_call(&server, &sid, 2).await;
    let (status, resumed) = Sse::get(&server, &sid, Some(&primed)).await;
    assert_eq!(status, 200);
    let messages = resumed.rest().await;
    let answers = answers(&messages, 2);
    assert_eq!(answers.len(), 1, "the answer exactly once: {messages:?}");
    assert_eq!(text_of(&answers[0].1), "slept");
    sampling_answered_on(&server, &server, &server).await;
}
