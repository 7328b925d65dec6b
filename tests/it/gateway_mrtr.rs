//! 2026-07-28 callers and an upstream that asks them something: the
//! upstream's sampling or elicitation during a call becomes `input_required`
//! with a sealed `requestState`, and the retry completes the call (on the
//! replica holding it, or handed there over PostgreSQL). Also: the caller's
//! `_meta` on prompts/get and resources/read, and the upstream subscriptions
//! of a `subscriptions/listen` stream removed when it ends.

// Sampling is deprecated by SEP-2577 but still what an upstream may ask.
#![allow(deprecated)]

use std::time::Duration;

use mcpgate::clock::ManualClock;
use rmcp::{
    ClientHandler, ErrorData, RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, ClientCapabilities, ClientConfig, CreateMessageRequestParams,
        CreateMessageResult, ElicitRequestParams, ElicitResult, ElicitationAction, Implementation,
        ProtocolVersion, SamplingMessage,
    },
    service::{ClientLifecycleMode, ClientServiceExt, RequestContext, RunningService},
    transport::StreamableHttpClientTransport,
};
use serde_json::{Value, json};

use crate::{
    common::{TestServer, fresh_postgres_database},
    gateway::{ALICE, BOB, local_gateway, stdio},
    oauth_browser::user_token,
};

/// A 2026-07-28 request declaring sampling and elicitation.
async fn post_2026(server: &TestServer, id: i64, method: &str, mut params: Value) -> Value {
    params["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
        json!({"sampling": {}, "elicitation": {}});
    let named = params.get("name").or_else(|| params.get("uri"));
    let name = named.and_then(Value::as_str).map(str::to_owned);
    server
        .stateless_request(id, method, name.as_deref(), params)
        .await
        .1
}

/// A 2026-07-28 `tools/call` whose `_meta` already holds the client's
/// capabilities (as declared, possibly none).
async fn post_2026_as_declared(server: &TestServer, id: i64, params: Value) -> Value {
    let name = params["name"].as_str().unwrap().to_owned();
    server
        .stateless_request(id, "tools/call", Some(&name), params)
        .await
        .1
}

fn sampling_call(prompt: &str) -> Value {
    json!({"name": "test_sampling", "arguments": {"prompt": prompt}})
}

/// The `input_required` result of a first round: its one input request
/// (key, request) and the `requestState`.
fn asked(message: &Value) -> (String, Value, String) {
    let result = &message["result"];
    assert_eq!(result["resultType"], "input_required", "{message}");
    let requests = result["inputRequests"].as_object().unwrap();
    assert_eq!(requests.len(), 1, "{message}");
    let (key, request) = requests.iter().next().unwrap();
    let state = result["requestState"].as_str().unwrap().to_owned();
    (key.clone(), request.clone(), state)
}

fn sampled(text: &str) -> Value {
    json!({"role": "assistant", "content": {"type": "text", "text": text}, "model": "it-model"})
}

fn retry(call: Value, key: &str, answer: Value, state: &str) -> Value {
    let mut call = call;
    call["inputResponses"] = json!({ key: answer });
    call["requestState"] = json!(state);
    call
}

fn text_of(message: &Value) -> String {
    message["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text: {message}"))
        .to_owned()
}

fn refusal(message: &Value) -> String {
    assert_eq!(message["error"]["code"], -32602, "{message}");
    message["error"]["message"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------- a real client

/// A 2026-07-28 client that answers sampling and elicitation.
#[derive(Clone)]
pub struct Answering;

impl ClientHandler for Answering {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        capabilities.sampling = Some(Default::default());
        capabilities.elicitation = Some(Default::default());
        ClientConfig::new(capabilities, Implementation::new("it-mrtr", "1"))
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let asked = serde_json::to_value(&params.messages).unwrap();
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text(format!("answer to {asked}")),
            "it-model".to_owned(),
        ))
    }

    async fn create_elicitation(
        &self,
        _params: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        Ok(ElicitResult::new(ElicitationAction::Accept)
            .with_content(json!({"username": "alice", "email": "alice@example.com"})))
    }
}

pub async fn modern_client(server: &TestServer) -> RunningService<RoleClient, Answering> {
    let transport = StreamableHttpClientTransport::from_uri(server.url("/mcp"));
    Answering
        .serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .unwrap()
}

pub fn call_params(name: &str, arguments: Value) -> CallToolRequestParams {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object")
    };
    CallToolRequestParams::new(name.to_owned()).with_arguments(arguments)
}

pub fn result_text(result: &rmcp::model::CallToolResult) -> String {
    serde_json::to_value(&result.content[0]).unwrap()["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_upstreams_sampling_and_elicitation_reach_a_2026_client_as_input_required() {
    let server = TestServer::start_with(|raw| raw.upstreams = vec![stdio("fx")]).await;
    let client = modern_client(&server).await;
    // rmcp's client drives the rounds: input_required, its handler, the retry.
    let result = client
        .call_tool(call_params(
            "test_sampling",
            json!({"prompt": "what is six times seven?"}),
        ))
        .await
        .unwrap();
    let text = result_text(&result);
    assert!(text.starts_with("LLM response: answer to"), "{text}");
    assert!(text.contains("six times seven"), "{text}");
    let result = client
        .call_tool(call_params(
            "test_elicitation",
            json!({"message": "who are you?"}),
        ))
        .await
        .unwrap();
    let text = result_text(&result);
    assert!(text.contains("action=accept"), "{text}");
    assert!(text.contains("alice@example.com"), "{text}");
    // The same call on a 2025 session is relayed as before (and refused by
    // a session that cannot answer: the gateway test covers that).
    let _ = client.cancel().await;
}

#[tokio::test]
async fn prompts_get_and_resources_read_are_bridged_too() {
    let server = TestServer::start_with(|raw| raw.upstreams = vec![stdio("fx")]).await;
    // A real client drives the rounds of both.
    let client = modern_client(&server).await;
    let prompt = client
        .get_prompt(rmcp::model::GetPromptRequestParams::new("asks_sampling"))
        .await
        .unwrap();
    let text = serde_json::to_value(&prompt.messages[0]).unwrap()["content"]["text"].clone();
    assert!(
        text.as_str().unwrap().starts_with("sampled: answer to")
            && text.to_string().contains("which prompt?"),
        "{text}"
    );
    let read = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "test://asks-sampling",
        ))
        .await
        .unwrap();
    let text = serde_json::to_value(&read.contents[0]).unwrap()["text"].clone();
    assert!(text.to_string().contains("which resource?"), "{text}");
    let _ = client.cancel().await;
    // A state minted for the prompt is not one for the resource.
    let first = post_2026(&server, 1, "prompts/get", json!({"name": "asks_sampling"})).await;
    let (key, _, state) = asked(&first);
    let mut read = json!({"uri": "test://asks-sampling"});
    read["inputResponses"] = json!({ key.clone(): sampled("x") });
    read["requestState"] = json!(state);
    let reply = post_2026(&server, 2, "resources/read", read).await;
    assert!(refusal(&reply).contains("another"), "{reply}");
    let mut retry = json!({"name": "asks_sampling"});
    retry["inputResponses"] = json!({ key: sampled("the prompt's") });
    retry["requestState"] = json!(state);
    let done = post_2026(&server, 3, "prompts/get", retry).await;
    assert_eq!(
        done["result"]["messages"][0]["content"]["text"], "sampled: the prompt's",
        "{done}"
    );
}

#[tokio::test]
async fn the_input_request_and_the_retry_have_the_specs_shape() {
    let server = TestServer::start_with(|raw| raw.upstreams = vec![stdio("fx")]).await;
    let call = sampling_call("capital of France?");
    let first = post_2026(&server, 1, "tools/call", call.clone()).await;
    let (key, request, state) = asked(&first);
    assert_eq!(request["method"], "sampling/createMessage", "{first}");
    assert_eq!(
        request["params"]["messages"][0]["content"]["text"], "capital of France?",
        "{first}"
    );
    assert!(state.starts_with("mcpgate~"), "{state}");
    let done = post_2026(
        &server,
        2,
        "tools/call",
        retry(call, &key, sampled("Paris"), &state),
    )
    .await;
    assert_eq!(text_of(&done), "LLM response: Paris", "{done}");
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    // Once no call waits, a client that declared no sampling is never
    // asked for it: the upstream gets the refusal.
    let mut undeclared = sampling_call("capital of France?");
    undeclared["_meta"] = json!({"io.modelcontextprotocol/clientCapabilities": {}});
    let refused = post_2026_as_declared(&server, 9, undeclared).await;
    assert!(
        text_of(&refused).contains("does not support sampling"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_forged_replayed_misdirected_or_incomplete_retry_is_refused_with_its_cause() {
    let server = TestServer::start_with(|raw| raw.upstreams = vec![stdio("fx")]).await;
    let call = sampling_call("q");
    let first = post_2026(&server, 1, "tools/call", call.clone()).await;
    let (key, _, state) = asked(&first);

    // One character of the sealed part changed.
    let mut forged = state.clone().into_bytes();
    let last = forged.len() - 3;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let reply = post_2026(
        &server,
        2,
        "tools/call",
        retry(call.clone(), &key, sampled("x"), &forged),
    )
    .await;
    assert!(refusal(&reply).contains("altered"), "{reply}");

    // Presented for another tool.
    let other = json!({"name": "test_elicitation", "arguments": {"message": "m"}});
    let reply = post_2026(
        &server,
        3,
        "tools/call",
        retry(other, &key, sampled("x"), &state),
    )
    .await;
    assert!(refusal(&reply).contains("another tool"), "{reply}");

    // Without the answer the input request asked for: asked again (the
    // spec's SHOULD), the call still waiting.
    let reply = post_2026(
        &server,
        4,
        "tools/call",
        retry(call.clone(), "other-key", sampled("x"), &state),
    )
    .await;
    let (again, request, _) = asked(&reply);
    assert_eq!(again, key, "{reply}");
    assert_eq!(request["method"], "sampling/createMessage", "{reply}");

    // The right retry completes; the same state again finds nothing waiting.
    let reply = post_2026(
        &server,
        5,
        "tools/call",
        retry(call.clone(), &key, sampled("ok"), &state),
    )
    .await;
    assert_eq!(text_of(&reply), "LLM response: ok", "{reply}");
    let reply = post_2026(
        &server,
        6,
        "tools/call",
        retry(call, &key, sampled("again"), &state),
    )
    .await;
    assert!(refusal(&reply).contains("no longer waiting"), "{reply}");
}

#[tokio::test]
async fn a_state_issued_to_alice_is_refused_for_bob() {
    let (server, _) = local_gateway(|raw, _| raw.upstreams = vec![stdio("fx")]).await;
    let (alice, _) = user_token(&server, ALICE, None).await;
    let (bob, _) = user_token(&server, BOB, None).await;
    let call = sampling_call("alice's private question");
    server.set_token(&alice);
    let first = post_2026(&server, 1, "tools/call", call.clone()).await;
    let (key, _, state) = asked(&first);
    server.set_token(&bob);
    let reply = post_2026(
        &server,
        2,
        "tools/call",
        retry(call.clone(), &key, sampled("bob's"), &state),
    )
    .await;
    assert!(refusal(&reply).contains("another user"), "{reply}");
    // Alice's call is still hers to finish.
    server.set_token(&alice);
    let reply = post_2026(
        &server,
        3,
        "tools/call",
        retry(call, &key, sampled("hers"), &state),
    )
    .await;
    assert_eq!(text_of(&reply), "LLM response: hers", "{reply}");
}

#[tokio::test]
async fn an_expired_state_is_refused() {
    let clock = ManualClock::new();
    let server =
        TestServer::start_with_clock(|raw| raw.upstreams = vec![stdio("fx")], clock.clone()).await;
    let call = sampling_call("q");
    let first = post_2026(&server, 1, "tools/call", call.clone()).await;
    let (key, _, state) = asked(&first);
    clock.advance(Duration::from_secs(
        mcpgate::mcp::input_bridge::PARK_SECS as u64 + 1,
    ));
    let reply = post_2026(
        &server,
        2,
        "tools/call",
        retry(call, &key, sampled("late"), &state),
    )
    .await;
    assert!(refusal(&reply).contains("expired"), "{reply}");
}

#[tokio::test]
async fn a_retry_on_another_replica_completes_the_call_held_by_the_first() {
    let Some(url) = fresh_postgres_database("gateway_mrtr").await else {
        return;
    };
    let replica = |url: String| {
        TestServer::start_with(move |raw| {
            raw.store.url = Some(url);
            raw.public_url = Some("http://127.0.0.1:1".to_owned());
            raw.upstreams = vec![stdio("fx")];
        })
    };
    let a = replica(url.clone()).await;
    let b = replica(url).await;
    let call = json!({"name": "test_elicitation", "arguments": {"message": "name?"}});
    let first = post_2026(&a, 1, "tools/call", call.clone()).await;
    let (key, request, state) = asked(&first);
    assert_eq!(request["method"], "elicitation/create", "{first}");
    let answer =
        json!({"action": "accept", "content": {"username": "u", "email": "u@example.com"}});
    let done = tokio::time::timeout(
        Duration::from_secs(20),
        post_2026(
            &b,
            2,
            "tools/call",
            retry(call.clone(), &key, answer.clone(), &state),
        ),
    )
    .await
    .expect("the hand-off must not hang");
    let text = text_of(&done);
    assert!(
        text.contains("action=accept") && text.contains("u@example.com"),
        "{done}"
    );
    // Refusals come back from the holder with their cause.
    let reply = post_2026(&b, 3, "tools/call", retry(call, &key, answer, &state)).await;
    assert!(refusal(&reply).contains("no longer waiting"), "{reply}");
}

// ------------------------------------- an upstream's own input_required

#[tokio::test]
async fn an_upstreams_own_input_required_passes_to_a_2026_client_and_is_asked_of_a_2025_session() {
    let server = TestServer::start_with(|raw| raw.upstreams = vec![stdio("fx")]).await;
    // 2026-07-28: as the upstream gave it, its requestState untouched; the
    // retry's state and answers reach it unchanged.
    let call = json!({"name": "ask_in_result", "arguments": {}});
    let first = post_2026(&server, 1, "tools/call", call.clone()).await;
    let (key, request, state) = asked(&first);
    assert_eq!(
        (key.as_str(), state.as_str()),
        ("who", "fixture-state"),
        "{first}"
    );
    assert_eq!(request["method"], "elicitation/create", "{first}");
    let answer = json!({"action": "accept", "content": {"name": "raw"}});
    let done = post_2026(&server, 2, "tools/call", retry(call, &key, answer, &state)).await;
    assert_eq!(text_of(&done), r#"answered: {"name":"raw"}"#, "{done}");
    let client = modern_client(&server).await;
    let result = client
        .call_tool(call_params("ask_in_result", json!({})))
        .await
        .unwrap();
    assert!(
        result_text(&result).contains("alice@example.com"),
        "{result:?}"
    );
    let _ = client.cancel().await;

    // A 2025 session cannot take input_required: mcpgate asks the
    // elicitation on the session itself and retries the upstream.
    let session = Answering
        .serve(StreamableHttpClientTransport::from_uri(server.url("/mcp")))
        .await
        .unwrap();
    let result = session
        .call_tool(call_params("ask_in_result", json!({})))
        .await
        .unwrap();
    let text = result_text(&result);
    assert!(
        text.starts_with("answered: ") && text.contains("alice@example.com"),
        "{text}"
    );
    let _ = session.cancel().await;
}

// ------------------------------------------------- _meta on prompts, reads

#[tokio::test]
async fn the_callers_meta_reaches_the_upstream_on_prompts_get_and_resources_read() {
    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let server = TestServer::start_with(|raw| raw.upstreams = vec![stdio("fx")]).await;
    let meta = json!({"traceparent": TRACE, "baggage": "k=v", "acme/tag": "t", "progressToken": 9});
    let check = |forwarded: Value, context: &Value| {
        assert_eq!(forwarded["traceparent"], TRACE, "{context}");
        assert_eq!(forwarded["baggage"], "k=v", "{context}");
        assert_eq!(forwarded["acme/tag"], "t", "{context}");
        assert_ne!(forwarded["progressToken"], 9, "{context}");
        assert!(
            forwarded
                .as_object()
                .is_none_or(|m| !m.contains_key("io.modelcontextprotocol/clientInfo")),
            "{context}"
        );
    };
    let prompt = post_2026(
        &server,
        1,
        "prompts/get",
        json!({"name": "echo_meta", "_meta": meta.clone()}),
    )
    .await;
    let text = prompt["result"]["messages"][0]["content"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{prompt}"));
    check(serde_json::from_str(text).unwrap(), &prompt);
    let read = post_2026(
        &server,
        2,
        "resources/read",
        json!({"uri": "test://echo-meta", "_meta": meta.clone()}),
    )
    .await;
    let text = read["result"]["contents"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{read}"));
    check(serde_json::from_str(text).unwrap(), &read);
    // A 2025 session's too.
    let sid = server.initialize().await;
    let read = server
        .session_call(
            &sid,
            2,
            "resources/read",
            json!({"uri": "test://echo-meta", "_meta": {"traceparent": TRACE}}),
        )
        .await;
    let text = read["result"]["contents"][0]["text"].as_str().unwrap();
    let forwarded: Value = serde_json::from_str(text).unwrap();
    assert_eq!(forwarded["traceparent"], TRACE, "{read}");
}

// ------------------------------------------ subscriptions/listen clean-up

/// How many sessions hold a subscription on the fixture (one per link).
async fn upstream_subscriptions(server: &TestServer, sid: &str, id: i64) -> String {
    let reply = server
        .session_call(
            sid,
            id,
            "tools/call",
            json!({"name": "subscribed_sessions", "arguments": {}}),
        )
        .await;
    text_of(&reply)
}

/// Poll until the fixture reports `want` subscriptions (bounded).
async fn wait_for_subscriptions(server: &TestServer, sid: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut id = 100;
    loop {
        id += 1;
        let now = upstream_subscriptions(server, sid, id).await;
        if now == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream still has {now} subscriptions, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A 2026-07-28 `subscriptions/listen` stream for `uri`, open while the
/// response lives.
async fn listen(server: &TestServer, uri: &str) -> reqwest::Response {
    let response = server
        .mcp_post()
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .json(
            &json!({"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "1"},
                    "io.modelcontextprotocol/clientCapabilities": {}
                },
                "notifications": {"resourceSubscriptions": [uri]}
            }}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

#[tokio::test]
async fn a_listen_streams_upstream_subscription_is_removed_when_it_ends_unless_still_followed() {
    const WATCHED: &str = "test://watched-resource";
    let server = TestServer::start_with(|raw| raw.upstreams = vec![stdio("fx")]).await;
    let sid = server.initialize().await;
    assert_eq!(upstream_subscriptions(&server, &sid, 2).await, "0");

    let stream = listen(&server, WATCHED).await;
    wait_for_subscriptions(&server, &sid, "1").await;
    drop(stream);
    wait_for_subscriptions(&server, &sid, "0").await;

    // A session's unsubscribe keeps the upstream subscription a listen
    // stream still follows; the stream's end then removes it.
    let stream = listen(&server, WATCHED).await;
    wait_for_subscriptions(&server, &sid, "1").await;
    let reply = server
        .session_call(&sid, 3, "resources/subscribe", json!({"uri": WATCHED}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    let reply = server
        .session_call(&sid, 4, "resources/unsubscribe", json!({"uri": WATCHED}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    assert_eq!(upstream_subscriptions(&server, &sid, 5).await, "1");
    drop(stream);
    wait_for_subscriptions(&server, &sid, "0").await;
}
