use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::{TestServer, response_message, tool_json};

const TOOL_NAMES: &[&str] = &[
    "search",
    "fetch",
    "create_note",
    "read_note",
    "list_notes",
    "update_note",
    "delete_note",
    "add",
    "subtract",
    "multiply",
    "divide",
];

fn names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn sessionful_era_lists_and_calls_tools() {
    let server = TestServer::start().await;
    let sid = server.initialize().await;
    let list = server.session_call(&sid, 2, "tools/list", json!({})).await;
    let mut got = names(&list);
    got.sort();
    let mut want: Vec<String> = TOOL_NAMES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
    let add = server
        .session_call(
            &sid,
            3,
            "tools/call",
            json!({"name":"add","arguments":{"a":2,"b":3}}),
        )
        .await;
    assert_eq!(add["result"]["content"][0]["text"], "5");
    assert_eq!(add["result"]["structuredContent"]["result"], json!(5.0));
}

#[tokio::test]
async fn trailing_slash_is_the_same_endpoint() {
    let server = TestServer::start().await;
    let response = server
        .client
        .post(server.url("/mcp/"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"it","version":"1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("mcp-session-id"));
    let message = response_message(response).await;
    assert_eq!(message["result"]["protocolVersion"], "2025-06-18");
}

#[tokio::test]
async fn stateless_era_serves_without_a_session() {
    let server = TestServer::start().await;
    let (status, discover) = server
        .stateless_call(1, "server/discover", None, json!({}))
        .await;
    assert_eq!(status, 200, "{discover}");
    assert!(
        discover["result"]["supportedVersions"]
            .to_string()
            .contains("2026-07-28"),
        "{discover}"
    );
    let (status, list) = server
        .stateless_call(2, "tools/list", None, json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(names(&list).len(), TOOL_NAMES.len());
    let (status, call) = server
        .stateless_call(
            3,
            "tools/call",
            Some("multiply"),
            json!({"name":"multiply","arguments":{"a":6,"b":7}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(call["result"]["content"][0]["text"], "42");
    let (status, unknown) = server
        .stateless_call(4, "nope/nothing", None, json!({}))
        .await;
    assert_eq!(status, 404, "{unknown}");
    assert_eq!(unknown["error"]["code"], -32601);
}

async fn post_raw(
    server: &TestServer,
    accept: &str,
    content_type: &str,
    body: String,
) -> (u16, Value) {
    let response = server
        .client
        .post(server.url("/mcp"))
        .header("content-type", content_type)
        .header("accept", accept)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let ct = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        ct.starts_with("application/json"),
        "{status}: content-type {ct}"
    );
    (status, response.json().await.unwrap())
}

const BOTH: &str = "application/json, text/event-stream";

/// A refused JSON-RPC request names its catalogue reason, the fix and the
/// `/errors` section (issue 18 item 5).
#[track_caller]
fn assert_reason(body: &Value, reason: &str) {
    let data = &body["error"]["data"];
    assert_eq!(data["reason"], json!(reason), "{body}");
    let description = data["error_description"].as_str().unwrap_or_default();
    let fix = mcpgate::funnel::reasons::Reason::from_code(reason)
        .unwrap()
        .fix();
    assert!(description.ends_with(fix), "{body}");
    assert_eq!(
        data["error_uri"],
        json!(format!("/errors#{}", reason.replace('_', "-"))),
        "{body}"
    );
}

#[tokio::test]
async fn malformed_requests_get_json_rpc_errors() {
    let server = TestServer::start_with(|raw| raw.http.max_body_bytes = Some(2048)).await;
    let (status, body) = post_raw(&server, BOTH, "application/json", "{not json".into()).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!(-32700))
    );
    assert_reason(&body, "jsonrpc_invalid");
    let ping = json!({"jsonrpc":"2.0","id":1,"method":"ping"}).to_string();
    let (status, body) = post_raw(&server, "text/html", "application/json", ping.clone()).await;
    assert_eq!(status, 406, "{body}");
    assert_reason(&body, "accept_header_invalid");
    let (status, body) = post_raw(
        &server,
        "application/json",
        "application/json",
        ping.clone(),
    )
    .await;
    assert_eq!(status, 406, "{body}");
    let (status, body) = post_raw(&server, BOTH, "text/plain", ping.clone()).await;
    assert_eq!(status, 415, "{body}");
    assert_reason(&body, "content_type_invalid");
    let big = json!({"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"x".repeat(4096)}})
        .to_string();
    let (status, body) = post_raw(&server, BOTH, "application/json", big).await;
    assert_eq!(status, 413, "{body}");
    assert_reason(&body, "message_too_large");
    let (status, body) = post_raw(&server, BOTH, "application/json", format!("[{ping}]")).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!(-32600))
    );
    let (status, body) = post_raw(&server, BOTH, "application/json", "42".into()).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!(-32600))
    );
    // Nothing above broke the server.
    assert_eq!(
        server
            .client
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn session_errors() {
    let server = TestServer::start().await;
    let ping = json!({"jsonrpc":"2.0","id":7,"method":"ping"});
    // Missing session id on a non-initialize request of the sessionful era.
    let response = server
        .mcp_post()
        .header("mcp-protocol-version", "2025-11-25")
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Session ID"),
        "{body}"
    );
    assert_reason(&body, "mcp_request_invalid");
    // Unknown session id.
    let response = server
        .mcp_post()
        .header("mcp-session-id", "does-not-exist")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32001);
    assert_reason(&body, "session_not_found");
    // DELETE ends a session; afterwards the id is unknown.
    let sid = server.initialize().await;
    let deleted = server
        .client
        .delete(server.url("/mcp"))
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let response = server
        .mcp_post()
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn unsupported_protocol_version_lists_supported_ones() {
    let server = TestServer::start().await;
    let response = server
        .mcp_post()
        .header("mcp-protocol-version", "2030-01-01")
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_reason(&body, "protocol_version_unsupported");
    let supported = body["error"]["data"]["supported"].as_array().unwrap();
    for v in ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"] {
        assert!(supported.contains(&json!(v)), "{body}");
    }
}

#[tokio::test]
async fn tool_errors_and_bad_arguments() {
    let server = TestServer::start().await;
    let sid = server.initialize().await;
    let unknown = server
        .session_call(
            &sid,
            2,
            "tools/call",
            json!({"name":"no_such_tool","arguments":{}}),
        )
        .await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    let bad = server
        .session_call(
            &sid,
            3,
            "tools/call",
            json!({"name":"add","arguments":{"a":"two","b":3}}),
        )
        .await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    let missing = server
        .session_call(&sid, 4, "tools/call", json!({"name":"add"}))
        .await;
    assert_eq!(missing["error"]["code"], -32602, "{missing}");
    let zero = server
        .session_call(
            &sid,
            5,
            "tools/call",
            json!({"name":"divide","arguments":{"a":1,"b":0}}),
        )
        .await;
    assert_eq!(zero["result"]["isError"], true);
    assert!(
        zero["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("division by zero")
    );
    let fetch = server
        .session_call(
            &sid,
            6,
            "tools/call",
            json!({"name":"fetch","arguments":{"id":"../etc/passwd"}}),
        )
        .await;
    assert_eq!(fetch["result"]["isError"], true, "{fetch}");
}

#[tokio::test]
async fn notes_round_trip_and_docs_search() {
    let server = TestServer::start().await;
    let sid = server.initialize().await;
    let call = |id: i64, name: &'static str, args: Value| {
        let sid = sid.clone();
        let server = &server;
        async move {
            server
                .session_call(
                    &sid,
                    id,
                    "tools/call",
                    json!({"name": name, "arguments": args}),
                )
                .await
        }
    };
    let created =
        tool_json(&call(2, "create_note", json!({"title":"Groceries","body":"milk"})).await);
    let id = created["id"].as_str().unwrap().to_owned();
    let read = tool_json(&call(3, "read_note", json!({"id": id})).await);
    assert_eq!(read["body"], "milk");
    let updated = tool_json(&call(4, "update_note", json!({"id": id, "body":"milk, eggs"})).await);
    assert_eq!(updated["body"], "milk, eggs");
    assert_eq!(updated["title"], "Groceries");
    let listed = tool_json(&call(5, "list_notes", json!({})).await);
    assert_eq!(listed["notes"].as_array().unwrap().len(), 1);
    let deleted = tool_json(&call(6, "delete_note", json!({"id": id})).await);
    assert_eq!(deleted["deleted"], id.as_str());
    let gone = call(7, "read_note", json!({"id": id})).await;
    assert_eq!(gone["result"]["isError"], true);
    let empty_title = call(8, "create_note", json!({"title":"   "})).await;
    assert_eq!(empty_title["error"]["code"], -32602);

    let found = tool_json(&call(9, "search", json!({"query":"environment variables"})).await);
    let first = &found["results"][0];
    assert_eq!(first["id"], "configuration.md", "{found}");
    assert_eq!(
        first["url"],
        format!("{}/docs/configuration.md", server.base)
    );
    let doc = tool_json(&call(10, "fetch", json!({"id":"configuration.md"})).await);
    assert!(doc["text"].as_str().unwrap().contains("MCPGATE_"));
    // The result URL resolves.
    let page = server
        .client
        .get(server.url("/docs/configuration.md"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
}

#[tokio::test]
async fn dns_rebinding_and_origin_checks() {
    let server = TestServer::start().await;
    let ping = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"it","version":"1"}}});
    let evil_host = server
        .mcp_post()
        .header("host", "evil.example.com")
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(evil_host.status(), 403);
    assert_reason(&evil_host.json().await.unwrap(), "host_not_allowed");
    let evil_origin = server
        .mcp_post()
        .header("origin", "http://evil.example.com")
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(evil_origin.status(), 403);
    let body: Value = evil_origin.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32000);
    assert_reason(&body, "origin_not_allowed");
    let good_origin = server
        .mcp_post()
        .header("origin", format!("http://localhost:{}", server.addr.port()))
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(good_origin.status(), 200);
    let sse = server
        .client
        .get(server.url("/sse"))
        .header("host", "evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 403);
}

#[tokio::test]
async fn cors_preflight_exposes_mcp_headers() {
    let server = TestServer::start().await;
    let origin = format!("http://localhost:{}", server.addr.port());
    let response = server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/mcp"))
        .header("origin", &origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "mcp-protocol-version, mcp-session-id, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        origin.as_str()
    );
    let ping = server.mcp_post().header("origin", &origin).json(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"it","version":"1"}}})).send().await.unwrap();
    let exposed = ping.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("mcp-session-id") && exposed.contains("www-authenticate"),
        "{exposed}"
    );
}

/// Read SSE events (name, data) from a streaming response until `want` events.
pub(crate) async fn next_event(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
) -> (String, String) {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let raw: String = buffer.drain(..end + 2).collect();
            let mut event = String::from("message");
            let mut data = String::new();
            for line in raw.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if data.is_empty() {
                continue; // keep-alive comment
            }
            return (event, data);
        }
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("SSE event in time")
            .expect("stream open")
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn legacy_sse_transport() {
    let server = TestServer::start().await;
    let response = server
        .client
        .get(server.url("/sse"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = Box::pin(response.bytes_stream());
    let mut buffer = String::new();
    let (event, endpoint) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(event, "endpoint");
    assert!(endpoint.starts_with("/messages?sessionId="), "{endpoint}");
    let post = |body: Value| {
        server
            .client
            .post(server.url(&endpoint))
            .header("content-type", "application/json")
            .json(&body)
            .send()
    };
    let accepted = post(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"it","version":"1"}}}))
    .await
    .unwrap();
    assert_eq!(accepted.status(), 202);
    let (event, data) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(event, "message");
    let init: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(init["result"]["protocolVersion"], "2024-11-05");
    assert_eq!(
        post(json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        post(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"subtract","arguments":{"a":10,"b":4}}}))
            .await
            .unwrap()
            .status(),
        202
    );
    let (_, data) = next_event(&mut stream, &mut buffer).await;
    let result: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(result["id"], 2);
    assert_eq!(result["result"]["content"][0]["text"], "6");

    // Bad input on the POST endpoint.
    let bad = server
        .client
        .post(server.url(&endpoint))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let unknown = server
        .client
        .post(server.url("/messages?sessionId=unknown"))
        .header("content-type", "application/json")
        .json(&json!({"jsonrpc":"2.0","id":3,"method":"ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32001);
    let missing = server
        .client
        .post(server.url("/messages"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
}
