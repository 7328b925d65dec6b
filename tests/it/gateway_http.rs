//! Calls mcpgate posts itself to a Streamable HTTP upstream
//! (`src/upstream/http_call.rs`), against the fixture over real HTTP: what
//! the upstream sends about a call while running it (progress, log
//! messages, its sampling request) reaches that call's caller, in both eras;
//! its errors pass through; a JSON answer works as an SSE one does; a
//! timeout or a client's cancellation reaches the upstream; an upstream that
//! forgot the session (restarted) is re-initialized without failing the call;
//! one that is gone fails the call with its name.

// Sampling and logging are deprecated by SEP-2577 but still what an upstream may send.
#![allow(deprecated)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rmcp::{
    ClientHandler, ErrorData, RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, ClientCapabilities, ClientConfig, CreateMessageRequestParams,
        CreateMessageResult, Implementation, LoggingLevel, LoggingMessageNotificationParam,
        ProgressNotificationParam, SamplingMessage, SetLevelRequestParams,
    },
    service::{NotificationContext, RequestContext, RunningService},
    transport::StreamableHttpClientTransport,
};
use serde_json::{Value, json};

use crate::{
    common::TestServer,
    gateway::{HttpFixture, call, error_code, http, readiness, text},
    gateway_mrtr::{call_params, modern_client, result_text},
};

/// mcpgate without authentication in front of one HTTP upstream "web".
async fn gateway_to(url: &str, timeout_secs: Option<u64>) -> TestServer {
    let url = url.to_owned();
    TestServer::start_with(move |raw| {
        raw.upstreams = vec![mcpgate::upstream::settings::RawUpstream {
            call_timeout_secs: timeout_secs,
            ..http("web", &url)
        }]
    })
    .await
}

/// A 2025-11-25 session client that answers sampling and keeps the
/// progress and log notifications it gets.
#[derive(Clone, Default)]
struct Recording {
    progress: Arc<Mutex<Vec<f64>>>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl ClientHandler for Recording {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        capabilities.sampling = Some(Default::default());
        ClientConfig::new(capabilities, Implementation::new("it-http-call", "1"))
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let asked = serde_json::to_value(&params.messages).unwrap();
        let prompt = asked[0]["content"]["text"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text(format!("sampled {prompt}")),
            "it-model".to_owned(),
        ))
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params.progress);
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.logs.lock().unwrap().push(params.data.to_string());
    }
}

/// Whether `check` holds within 5 s.
async fn eventually(check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// A [`Recording`] session on `server`'s `/mcp` that asked for every log
/// level: its handler (what it received) and the running client.
async fn recording_session(
    server: &TestServer,
) -> (Recording, RunningService<RoleClient, Recording>) {
    let handler = Recording::default();
    let client = handler
        .clone()
        .serve(StreamableHttpClientTransport::from_uri(server.url("/mcp")))
        .await
        .unwrap();
    client
        .set_level(SetLevelRequestParams::new(LoggingLevel::Debug))
        .await
        .unwrap();
    (handler, client)
}

fn named(name: &str) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_owned())
}

#[tokio::test]
async fn an_http_upstreams_progress_logs_and_sampling_reach_the_session_that_called() {
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = gateway_to(&fixture.url, None).await;
    let (handler, client) = recording_session(&server).await;

    // rmcp's client asks for progress on every call; the upstream's reach it
    // under the client's own token, before the result.
    let result = client
        .call_tool(named("test_tool_with_progress"))
        .await
        .unwrap();
    assert_eq!(
        result_text(&result),
        "Tool with progress executed successfully"
    );
    // rmcp's client handles each notification in a task of its own, so the
    // last ones may be handled just after the result.
    let all_progress = || handler.progress.lock().unwrap().len() == 3;
    assert!(eventually(all_progress).await);
    assert_eq!(*handler.progress.lock().unwrap(), vec![0.0, 50.0, 100.0]);

    let result = client
        .call_tool(named("test_tool_with_logging"))
        .await
        .unwrap();
    assert_eq!(
        result_text(&result),
        "Tool with logging executed successfully"
    );
    assert!(eventually(|| handler.logs.lock().unwrap().len() >= 3).await);
    let logs = handler.logs.lock().unwrap().join("\n");
    for step in [
        "Tool execution started",
        "Tool processing data",
        "Tool execution completed",
    ] {
        assert!(logs.contains(step), "{step} missing from {logs}");
    }

    // The upstream's sampling request, asked on the call's own answer stream,
    // goes to this client and its answer back upstream.
    let result = client
        .call_tool(call_params(
            "test_sampling",
            json!({"prompt": "two plus two"}),
        ))
        .await
        .unwrap();
    assert_eq!(result_text(&result), "LLM response: sampled two plus two");
    client.cancel().await.unwrap();
}

/// Clients such as the conformance runner open a session per scenario and
/// call back to back: a call of another session that just ended must not
/// cost the next session its log messages (read from the upstream's GET
/// stream). Without authentication both sessions are the one anonymous
/// caller's, so the session still running gets them all, and the other none.
#[tokio::test]
async fn logs_reach_a_session_that_calls_right_after_another_sessions_call() {
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = gateway_to(&fixture.url, None).await;
    let (earlier, other) = recording_session(&server).await;
    let (handler, client) = recording_session(&server).await;

    other.call_tool(named("test_simple_text")).await.unwrap();
    let result = client
        .call_tool(named("test_tool_with_logging"))
        .await
        .unwrap();
    assert_eq!(
        result_text(&result),
        "Tool with logging executed successfully"
    );
    let all = |logs: &Vec<String>| {
        [
            "Tool execution started",
            "Tool processing data",
            "Tool execution completed",
        ]
        .iter()
        .all(|step| logs.iter().any(|l| l.contains(step)))
    };
    assert!(
        eventually(|| all(&handler.logs.lock().unwrap())).await,
        "logs: {:?}",
        handler.logs.lock().unwrap()
    );
    assert!(earlier.logs.lock().unwrap().is_empty());
    other.cancel().await.unwrap();
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn an_http_upstreams_sampling_reaches_a_2026_client_as_input_required() {
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = gateway_to(&fixture.url, None).await;
    let client = modern_client(&server).await;
    let result = client
        .call_tool(call_params("test_sampling", json!({"prompt": "hello"})))
        .await
        .unwrap();
    assert!(
        result_text(&result).starts_with("LLM response: answer to"),
        "{result:?}"
    );
    assert!(result_text(&result).contains("hello"), "{result:?}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn an_http_upstreams_errors_and_json_answers_pass_through() {
    for flag in ["--http", "--http-json"] {
        let fixture = HttpFixture::start_as(flag, "127.0.0.1:0");
        let server = gateway_to(&fixture.url, None).await;
        let sid = server.initialize().await;
        let reply = call(&server, &sid, 2, "echo", json!({"text": "plain"})).await;
        assert_eq!(text(&reply), "plain", "{flag}: {reply}");
        // The upstream's JSON-RPC error, unchanged.
        let reply = call(&server, &sid, 3, "no_such_tool", json!({})).await;
        assert_eq!(error_code(&reply), -32602, "{flag}: {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("unknown tool: no_such_tool"),
            "{flag}: {reply}"
        );
        // A tool error is a result, also unchanged.
        let reply = call(&server, &sid, 4, "test_error_handling", json!({})).await;
        assert_eq!(reply["result"]["isError"], json!(true), "{flag}: {reply}");
    }
}

/// Waits (bounded) for `needle` in the fixture's stderr.
async fn wait_stderr(fixture: &HttpFixture, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if fixture.stderr().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_timeout_or_a_cancellation_reaches_the_http_upstream_and_the_link_stays_usable() {
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = gateway_to(&fixture.url, Some(1)).await;
    let sid = server.initialize().await;
    let started = Instant::now();
    let reply = call(&server, &sid, 2, "sleep", json!({"seconds": 20})).await;
    assert_eq!(error_code(&reply), -32001, "{reply}");
    assert!(started.elapsed() < Duration::from_secs(10), "{reply}");
    assert!(
        wait_stderr(&fixture, "sleep cancelled").await,
        "the upstream was not told: {}",
        fixture.stderr()
    );
    let reply = call(&server, &sid, 3, "echo", json!({"text": "still here"})).await;
    assert_eq!(text(&reply), "still here");

    // A client's own cancellation, with rmcp's client.
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = gateway_to(&fixture.url, None).await;
    let client = Recording::default()
        .serve(StreamableHttpClientTransport::from_uri(server.url("/mcp")))
        .await
        .unwrap();
    let handle = client
        .send_cancellable_request(
            rmcp::model::ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(
                call_params("sleep", json!({"seconds": 20})),
            )),
            Default::default(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle
        .cancel(Some("the user gave up".to_owned()))
        .await
        .unwrap();
    assert!(
        wait_stderr(&fixture, "sleep cancelled").await,
        "the cancellation did not reach the upstream: {}",
        fixture.stderr()
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_2026_call_whose_client_goes_away_is_cancelled_upstream() {
    // The call is polled in the request's own task until the upstream asks
    // something (input_bridge.rs): dropped with the request, it must still
    // tell the upstream, as a call in a task of its own does.
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = gateway_to(&fixture.url, None).await;
    let gone = tokio::time::timeout(
        Duration::from_millis(500),
        server.stateless_request(
            2,
            "tools/call",
            Some("sleep"),
            json!({"name": "sleep", "arguments": {"seconds": 20},
                "_meta": {"io.modelcontextprotocol/clientCapabilities": {}}}),
        ),
    )
    .await;
    assert!(gone.is_err(), "the call ended early: {gone:?}");
    assert!(
        wait_stderr(&fixture, "sleep cancelled").await,
        "the upstream was not told: {}",
        fixture.stderr()
    );
    let (status, reply) = server
        .stateless_request(
            3,
            "tools/call",
            Some("echo"),
            json!({"name": "echo", "arguments": {"text": "still here"},
                "_meta": {"io.modelcontextprotocol/clientCapabilities": {}}}),
        )
        .await;
    assert_eq!(
        (status, text(&reply)),
        (200, "still here".to_owned()),
        "{reply}"
    );
}

#[tokio::test]
async fn an_http_upstream_that_restarted_gets_a_new_session_and_the_call_succeeds() {
    let mut fixture = HttpFixture::start("127.0.0.1:0");
    let addr = fixture.addr();
    let server = gateway_to(&fixture.url, None).await;
    let sid = server.initialize().await;
    let first = call(&server, &sid, 2, "pid", json!({})).await;
    let before = first["result"]["structuredContent"]["pid"].clone();
    fixture.kill();
    // The same address, a new process that knows no session.
    let fixture = HttpFixture::start(&addr);
    let reply = call(&server, &sid, 3, "pid", json!({})).await;
    let after = reply["result"]["structuredContent"]["pid"].clone();
    assert_eq!(after, json!(fixture.pid()), "{reply}");
    assert_ne!(before, after);
    let reply = call(&server, &sid, 4, "echo", json!({"text": "again"})).await;
    assert_eq!(text(&reply), "again");
}

#[tokio::test]
async fn a_gone_http_upstream_fails_the_call_with_its_name_and_shows_down() {
    let mut fixture = HttpFixture::start("127.0.0.1:0");
    let server = gateway_to(&fixture.url, None).await;
    let sid = server.initialize().await;
    let reply = call(&server, &sid, 2, "echo", json!({"text": "up"})).await;
    assert_eq!(text(&reply), "up");
    fixture.kill();
    let reply = call(&server, &sid, 3, "echo", json!({"text": "down"})).await;
    assert_eq!(error_code(&reply), -32603, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("web"), "{reply}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, entry) = readiness(&server, "web").await;
        if entry["state"] != json!("up") {
            break;
        }
        assert!(Instant::now() < deadline, "still up: {entry}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A raw 2026-07-28 `tools/call`: its status, content type and messages
/// (an SSE body's data lines in order). With `encoded`, `Mcp-Name` carries
/// the name in SEP-2243's base64 form, which the edge leaves to rmcp.
async fn raw_2026_call(
    server: &TestServer,
    id: Value,
    name: &str,
    arguments: Value,
    encoded: bool,
) -> (u16, String, Vec<Value>) {
    use base64::Engine as _;
    let header = if encoded {
        let b64 = base64::engine::general_purpose::STANDARD.encode(name);
        format!("=?base64?{b64}?=")
    } else {
        name.to_owned()
    };
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
    "name": name, "arguments": arguments,
    "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}
    }}});
    let response = server
        .mcp_post()
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", header)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    let messages = if content_type.starts_with("text/event-stream") {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    } else {
        vec![serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))]
    };
    (status, content_type, messages)
}

async fn direct_calls(server: &TestServer) -> u64 {
    let metrics = server.get_text("/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("mcpgate_mcp_direct_calls_total "))
        .unwrap_or_else(|| panic!("no direct call counter: {metrics}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_2026_call_the_edge_serves_itself_answers_as_rmcp_does() {
    // The edge serves a plain 2026-07-28 call of an upstream tool without
    // rmcp's server (direct_call.rs); the same call with its name base64
    // encoded goes through rmcp. Both must give the same answer.
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = gateway_to(&fixture.url, None).await;
    let cases = [
        (json!(1), "echo", json!({"text": "same"})),
        (json!("call-2"), "echo", json!({"text": 7})),
        (json!(3), "test_error_handling", json!({})),
        (json!(4), "test_simple_text", json!({})),
        (json!(5), "no_such_tool", json!({})),
    ];
    for (id, name, arguments) in cases {
        let before = direct_calls(&server).await;
        let direct = raw_2026_call(&server, id.clone(), name, arguments.clone(), false).await;
        assert_eq!(
            direct_calls(&server).await,
            before + 1,
            "{name} not served directly"
        );
        let by_rmcp = raw_2026_call(&server, id, name, arguments, true).await;
        assert_eq!(
            direct_calls(&server).await,
            before + 1,
            "{name} encoded served directly"
        );
        assert_eq!(direct, by_rmcp, "{name}");
    }
    // Log messages before the answer: an SSE answer on both paths, the
    // answer last. The upstream's last message and its answer race (the
    // message may be read just after the answer, then it is dropped on
    // either path), so the direct answer's messages are a prefix of rmcp's.
    let before = direct_calls(&server).await;
    let (status, kind, direct) = raw_2026_call(
        &server,
        json!(10),
        "test_tool_with_logging",
        json!({}),
        false,
    )
    .await;
    assert_eq!(direct_calls(&server).await, before + 1);
    let (_, _, by_rmcp) = raw_2026_call(
        &server,
        json!(10),
        "test_tool_with_logging",
        json!({}),
        true,
    )
    .await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/event-stream"), "{kind}: {direct:?}");
    let (answer, logs) = direct.split_last().unwrap();
    assert_eq!(Some(answer), by_rmcp.last());
    assert!(
        !logs.is_empty() && by_rmcp.starts_with(logs),
        "{direct:?} {by_rmcp:?}"
    );
    assert!(
        logs.iter()
            .all(|m| m["method"] == json!("notifications/message"))
    );
    // An upstream's request for the caller: input_required, its sealed
    // state differing only in its random bytes.
    let input_required = |(status, kind, mut messages): (u16, String, Vec<Value>)| {
        let result = &mut messages[0]["result"];
        assert_eq!(result["resultType"], json!("input_required"), "{result}");
        let state = result["requestState"].take();
        assert!(state.as_str().is_some_and(|s| !s.is_empty()), "{state}");
        (status, kind, messages)
    };
    let arguments = json!({"message": "Which one?"});
    let before = direct_calls(&server).await;
    let direct = raw_2026_call(
        &server,
        json!(9),
        "test_elicitation",
        arguments.clone(),
        false,
    );
    let direct = input_required(direct.await);
    assert_eq!(direct_calls(&server).await, before + 1);
    let by_rmcp = raw_2026_call(&server, json!(9), "test_elicitation", arguments, true).await;
    assert_eq!(direct, input_required(by_rmcp));
    // A call asking for progress is left to rmcp, which streams it.
    let (status, progress) = server
        .stateless_request(
            8,
            "tools/call",
            Some("test_tool_with_progress"),
            json!({"name": "test_tool_with_progress", "arguments": {},
                "_meta": {"progressToken": "p-1",
                    "io.modelcontextprotocol/clientCapabilities": {}}}),
        )
        .await;
    assert_eq!(status, 200, "{progress}");
    assert!(progress["result"].is_object(), "{progress}");
    assert_eq!(direct_calls(&server).await, before + 1);
}

#[tokio::test]
async fn a_2026_call_rmcp_would_judge_differently_is_left_to_rmcp() {
    // Each of these differs from a plain call in one way rmcp looks at; none
    // may be served by the edge itself (direct_call.rs).
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = gateway_to(&fixture.url, None).await;
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    let plain = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "x"}, "_meta": meta}})
    .to_string();
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
    ];
    let post = |body: String, extra: &[(&'static str, &'static str)], skip: &'static str| {
        let mut request = server.mcp_post();
        for (name, value) in headers.iter().filter(|(name, _)| *name != skip) {
            request = request.header(*name, *value);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.body(body).send()
    };
    // The plain call is served directly.
    let before = direct_calls(&server).await;
    assert_eq!(post(plain.clone(), &[], "").await.unwrap().status(), 200);
    assert_eq!(direct_calls(&server).await, before + 1);
    let plain_value: Value = serde_json::from_str(&plain).unwrap();
    let mut without_capabilities = plain_value.clone();
    without_capabilities["params"]["_meta"]
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientCapabilities");
    let without_capabilities = without_capabilities.to_string();
    let mut other_version = plain_value.clone();
    other_version["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] =
        json!("2025-11-25");
    let other_version = other_version.to_string();
    // What differs, the body, headers added, a header left out.
    type Case = (
        &'static str,
        String,
        Vec<(&'static str, &'static str)>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "another name in Mcp-Name",
            plain.clone(),
            vec![("mcp-name", "not_echo")],
            "mcp-name",
        ),
        (
            "a repeated Mcp-Name",
            plain.clone(),
            vec![("mcp-name", "echo")],
            "",
        ),
        ("no Mcp-Method", plain.clone(), vec![], "mcp-method"),
        (
            "a session id",
            plain.clone(),
            vec![("mcp-session-id", "not-a-session")],
            "",
        ),
        (
            "an Accept with quality values",
            plain.clone(),
            vec![("accept", "application/json;q=0.9")],
            "",
        ),
        ("no client capabilities", without_capabilities, vec![], ""),
        ("another version in _meta", other_version, vec![], ""),
        (
            "a key beside the request's",
            plain.replacen('{', r#"{"extra":1,"#, 1),
            vec![],
            "",
        ),
        (
            "a repeated id",
            plain.replacen('{', r#"{"id":2,"#, 1),
            vec![],
            "",
        ),
        (
            "a repeated name",
            plain.replacen(r#""params":{"#, r#""params":{"name":"echo","#, 1),
            vec![],
            "",
        ),
    ];
    for (what, body, extra, skip) in cases {
        let response = post(body, &extra, skip).await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(
            direct_calls(&server).await,
            before + 1,
            "{what} served directly: {status} {text}"
        );
    }
}
