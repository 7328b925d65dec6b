//! The gateway: mcpgate in front of the fixture upstream (tests/fixture_upstream),
//! over stdio and Streamable HTTP, with real tokens where policy or identity
//! is at stake.

use std::{
    collections::BTreeSet,
    io::BufRead,
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine;
use mcpgate::{
    config::{RawLocalAuth, RawPolicy},
    upstream::settings::RawUpstream,
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::{
    common::{TestServer, response_message, seed_users},
    oauth_browser::user_token,
};

// ------------------------------------------------------------ helpers

/// The fixture upstream, built next to this test binary as a cargo example:
/// target/<profile>/deps/it-<hash> → target/<profile>/examples/fixture-upstream.
pub fn fixture_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("fixture-upstream"));
    match path {
        Some(path) if path.is_file() => path,
        other => panic!(
            "the fixture upstream is not built (looked for {other:?}); \
             `cargo build --examples` builds it (cargo test and cargo nextest do too)"
        ),
    }
}

pub fn stdio(name: &str) -> RawUpstream {
    RawUpstream {
        name: Some(name.to_owned()),
        command: Some(vec![
            fixture_bin().display().to_string(),
            "--stdio".to_owned(),
        ]),
        ..RawUpstream::default()
    }
}

pub fn http(name: &str, url: &str) -> RawUpstream {
    RawUpstream {
        name: Some(name.to_owned()),
        url: Some(url.to_owned()),
        ..RawUpstream::default()
    }
}

/// mcpgate without authentication in front of `upstreams`.
async fn gateway(upstreams: Vec<RawUpstream>) -> TestServer {
    TestServer::start_with(|raw| raw.upstreams = upstreams).await
}

/// mcpgate in local mode with the users [`ALICE`] and [`BOB`] in its store;
/// `edit` and the caller get alice's subject.
pub async fn local_gateway(
    edit: impl FnOnce(&mut mcpgate::config::RawConfig, &str),
) -> (TestServer, String) {
    let dir = tempfile::tempdir().unwrap();
    let alice = seed_users(dir.path(), &[ALICE, BOB]).await.remove(0);
    let server = TestServer::start_in(dir, |raw| {
        raw.auth.mode = Some("local".to_owned());
        raw.auth.local = Some(RawLocalAuth::default());
        edit(raw, &alice);
    })
    .await;
    (server, alice)
}

pub const ALICE: (&str, &str) = ("alice", "alice-password-1");
pub const BOB: (&str, &str) = ("bob", "bob-password-22");

/// `tools/call` on a session; the JSON-RPC response.
pub async fn call(server: &TestServer, sid: &str, id: i64, name: &str, arguments: Value) -> Value {
    server
        .session_call(
            sid,
            id,
            "tools/call",
            json!({"name": name, "arguments": arguments}),
        )
        .await
}

/// The text of a successful tool result.
pub fn text(message: &Value) -> String {
    assert_eq!(message["result"]["isError"], json!(false), "{message}");
    message["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content: {message}"))
        .to_owned()
}

/// The structured content of a successful tool result.
pub fn structured(message: &Value) -> &Value {
    assert_eq!(message["result"]["isError"], json!(false), "{message}");
    &message["result"]["structuredContent"]
}

/// The JSON-RPC error code of a response that must be an error.
pub fn error_code(message: &Value) -> i64 {
    message["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not a JSON-RPC error: {message}"))
}

pub fn pid_of(message: &Value) -> u32 {
    let pid = structured(message)["pid"].as_u64().unwrap();
    u32::try_from(pid).unwrap()
}

/// Names (or URIs) in a list result.
fn listed(message: &Value, list: &str, key: &str) -> BTreeSet<String> {
    message["result"][list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list}: {message}"))
        .iter()
        .map(|item| item[key].as_str().unwrap().to_owned())
        .collect()
}

async fn tool_names(server: &TestServer, sid: &str, id: i64) -> BTreeSet<String> {
    let message = server.session_call(sid, id, "tools/list", json!({})).await;
    listed(&message, "tools", "name")
}

/// Whether a process has ended: no /proc entry, or a zombie that only waits
/// for its parent to reap it.
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

pub async fn ends_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ended(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ended(pid)
}

/// The process group of a live process (field 5 of /proc/PID/stat).
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

fn kill_9(pid: u32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid} failed");
}

/// Calls `echo` until it answers (the upstream restarting), for up to `limit`.
async fn echo_until_up(server: &TestServer, sid: &str, name: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    let mut id = 1000;
    loop {
        id += 1;
        let reply = call(server, sid, id, name, json!({"text": "back"})).await;
        if reply["result"]["isError"] == json!(false) || Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sample of a metric with exactly these labels in /metrics.
async fn metric(server: &TestServer, series: &str) -> Option<f64> {
    let text = server.get_text("/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// The `/readyz` entry of one upstream.
pub async fn readiness(server: &TestServer, upstream: &str) -> (Value, Value) {
    let body = server.get_json("/readyz").await;
    let entry = body["upstreams"]
        .as_array()
        .unwrap_or_else(|| panic!("no upstreams in /readyz: {body}"))
        .iter()
        .find(|u| u["name"] == upstream)
        .unwrap_or_else(|| panic!("{upstream} not in /readyz: {body}"))
        .clone();
    (body, entry)
}

/// The claims of a JWT (unverified: the tests only read what mcpgate issued).
fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The fixture serving Streamable HTTP; killed on drop. Its stderr goes to
/// a file, readable with [`HttpFixture::stderr`].
pub struct HttpFixture {
    child: std::process::Child,
    pub url: String,
    stderr: tempfile::NamedTempFile,
}

impl HttpFixture {
    /// On `addr`; port 0 lets it pick a free port (the URL says which).
    pub fn start(addr: &str) -> HttpFixture {
        HttpFixture::start_as("--http", addr)
    }

    /// With the fixture's mode flag: `--http` (SSE answers) or `--http-json`.
    pub fn start_as(flag: &str, addr: &str) -> HttpFixture {
        HttpFixture::start_with(flag, addr, &[])
    }

    /// With environment variables (e.g. `FIXTURE_REFUSE_TOKENS_FILE`).
    pub fn start_with(flag: &str, addr: &str, env: &[(&str, &std::path::Path)]) -> HttpFixture {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(fixture_bin())
            .args([flag, addr])
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr.reopen().unwrap()))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Read on a thread so a fixture that never prints cannot hang the test.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            panic!("the HTTP fixture did not say where it listens: {line:?}");
        };
        HttpFixture {
            url: url.to_owned(),
            child,
            stderr,
        }
    }

    pub fn addr(&self) -> String {
        let url = url::Url::parse(&self.url).unwrap();
        format!("{}:{}", url.host_str().unwrap(), url.port().unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the fixture wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }
}

impl Drop for HttpFixture {
    fn drop(&mut self) {
        self.kill();
    }
}

// ------------------------------------------------------------ tests

#[tokio::test]
async fn stdio_upstream_passes_tools_resources_and_prompts_through_unprefixed() {
    let server = gateway(vec![stdio("fx")]).await;
    let sid = server.initialize().await;

    let tools = tool_names(&server, &sid, 2).await;
    for name in ["echo", "sleep", "pid", "env", "test_simple_text"] {
        assert!(tools.contains(name), "{name} missing: {tools:?}");
    }
    // One upstream and no built-in toolset: names pass through, and the
    // built-ins (calculator, notes, docs) are off.
    assert!(tools.iter().all(|t| !t.contains("__")), "{tools:?}");
    for builtin in ["add", "search", "fetch", "list_notes"] {
        assert!(!tools.contains(builtin), "{builtin} listed: {tools:?}");
    }

    let reply = call(
        &server,
        &sid,
        3,
        "echo",
        json!({"text": "through the gate"}),
    )
    .await;
    assert_eq!(text(&reply), "through the gate");
    // A tool error (isError) is a result, passed through as such.
    let reply = call(&server, &sid, 4, "test_error_handling", json!({})).await;
    assert_eq!(reply["result"]["isError"], json!(true), "{reply}");

    let reply = server
        .session_call(&sid, 5, "resources/list", json!({}))
        .await;
    assert!(listed(&reply, "resources", "uri").contains("test://static-text"));
    let reply = server
        .session_call(
            &sid,
            6,
            "resources/read",
            json!({"uri": "test://static-text"}),
        )
        .await;
    assert_eq!(
        reply["result"]["contents"][0]["text"], "This is the content of the static text resource.",
        "{reply}"
    );

    let reply = server
        .session_call(&sid, 7, "prompts/list", json!({}))
        .await;
    assert!(listed(&reply, "prompts", "name").contains("test_prompt_with_arguments"));
    let reply = server
        .session_call(
            &sid,
            8,
            "prompts/get",
            json!({"name": "test_prompt_with_arguments", "arguments": {"arg1": "one", "arg2": "two"}}),
        )
        .await;
    assert_eq!(
        reply["result"]["messages"][0]["content"]["text"],
        "Prompt with arguments: arg1='one', arg2='two'",
        "{reply}"
    );
    // The upstream's own JSON-RPC error comes back unchanged.
    let reply = server
        .session_call(
            &sid,
            9,
            "prompts/get",
            json!({"name": "test_prompt_with_arguments", "arguments": {"arg1": "one"}}),
        )
        .await;
    assert_eq!(error_code(&reply), -32602, "{reply}");
    assert_eq!(
        reply["error"]["message"], "missing string argument `arg2`",
        "{reply}"
    );
}

#[tokio::test]
async fn stdio_child_sees_only_path_home_and_the_allowlisted_environment() {
    // A variable cargo and nextest set for every test process.
    const ALLOWED: &str = "CARGO_MANIFEST_DIR";
    let allowed_value = std::env::var(ALLOWED).expect("the test runner sets CARGO_MANIFEST_DIR");
    let server = gateway(vec![RawUpstream {
        env: vec![ALLOWED.to_owned()],
        set_env: [("MCPGATE_FIXED".to_owned(), "fixed-value".to_owned())].into(),
        ..stdio("fx")
    }])
    .await;
    let sid = server.initialize().await;
    let reply = call(&server, &sid, 2, "env", json!({})).await;
    let vars = structured(&reply)["vars"].as_object().unwrap().clone();
    let names: BTreeSet<&str> = vars.keys().map(String::as_str).collect();

    let mut expected = BTreeSet::from([ALLOWED, "MCPGATE_FIXED"]);
    for always in ["PATH", "HOME"] {
        if std::env::var_os(always).is_some() {
            expected.insert(always);
        }
    }
    // Names only in messages: the test runner's environment may hold secrets.
    assert_eq!(names, expected, "the child's environment");
    assert_eq!(vars[ALLOWED], allowed_value.as_str());
    assert_eq!(vars["MCPGATE_FIXED"], "fixed-value");
    if let Ok(path) = std::env::var("PATH") {
        assert_eq!(vars["PATH"], path.as_str());
    }
    // The test process has more than that, none of which reached the child.
    let withheld: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| !expected.contains(k.as_str()))
        .collect();
    assert!(!withheld.is_empty());
    assert!(withheld.iter().all(|k| !vars.contains_key(k)), "{names:?}");
}

#[tokio::test]
async fn killed_upstream_fails_the_pending_call_and_comes_back() {
    let server = Arc::new(gateway(vec![stdio("fx")]).await);
    let sid = server.initialize().await;
    let first_pid = pid_of(&call(&server, &sid, 2, "pid", json!({})).await);

    let pending = {
        let (server, sid) = (server.clone(), sid.clone());
        tokio::spawn(async move { call(&server, &sid, 3, "sleep", json!({"seconds": 30})).await })
    };
    // Let the sleep reach the upstream, then kill it under the call.
    tokio::time::sleep(Duration::from_secs(1)).await;
    kill_9(first_pid);
    let reply = tokio::time::timeout(Duration::from_secs(15), pending)
        .await
        .expect("the call in flight hung after its upstream died")
        .unwrap();
    assert_eq!(error_code(&reply), -32603, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("fx"), "{message}");

    let reply = echo_until_up(&server, &sid, "echo", Duration::from_secs(10)).await;
    assert_eq!(text(&reply), "back");
    let second_pid = pid_of(&call(&server, &sid, 4, "pid", json!({})).await);
    assert_ne!(first_pid, second_pid);

    let (body, entry) = readiness(&server, "fx").await;
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(entry["state"], "up", "{body}");
    assert_eq!(entry["transport"], "stdio", "{body}");
    assert!(entry["restarts"].as_u64().unwrap() >= 1, "{body}");
    let restarts = metric(&server, "mcpgate_upstream_restarts_total{upstream=\"fx\"}").await;
    assert!(restarts.is_some_and(|n| n >= 1.0), "{restarts:?}");
    let up = metric(&server, "mcpgate_upstream_up{upstream=\"fx\"}").await;
    assert_eq!(up, Some(1.0));
}

#[tokio::test]
async fn grandchildren_die_with_their_upstream_on_crash_and_on_shutdown() {
    let mut server = gateway(vec![stdio("fx")]).await;
    let sid = server.initialize().await;
    let fixture = pid_of(&call(&server, &sid, 2, "pid", json!({})).await);
    let grandchild = pid_of(&call(&server, &sid, 3, "spawn_child", json!({})).await);
    assert!(!ended(grandchild));
    assert_eq!(process_group(grandchild), Some(fixture));

    // The upstream crashes: its whole process group goes with it.
    let reply = call(&server, &sid, 4, "crash", json!({})).await;
    assert_eq!(error_code(&reply), -32603, "{reply}");
    assert!(
        ends_within(grandchild, Duration::from_secs(5)).await,
        "grandchild {grandchild} outlived its crashed parent"
    );

    // The restarted upstream's grandchild goes when mcpgate stops.
    echo_until_up(&server, &sid, "echo", Duration::from_secs(10)).await;
    let fixture = pid_of(&call(&server, &sid, 5, "pid", json!({})).await);
    let grandchild = pid_of(&call(&server, &sid, 6, "spawn_child", json!({})).await);
    assert_eq!(process_group(grandchild), Some(fixture));
    server.signal_shutdown();
    let stopped = tokio::time::timeout(Duration::from_secs(10), server.task.take().unwrap()).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    assert!(
        ends_within(grandchild, Duration::from_secs(5)).await,
        "grandchild {grandchild} outlived mcpgate"
    );
    assert!(ends_within(fixture, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_call_past_its_timeout_fails_with_32001_and_the_link_stays_usable() {
    let server = gateway(vec![RawUpstream {
        call_timeout_secs: Some(2),
        ..stdio("fx")
    }])
    .await;
    let sid = server.initialize().await;
    // The upstream is up before the clock starts.
    assert_eq!(
        text(&call(&server, &sid, 2, "echo", json!({"text": "x"})).await),
        "x"
    );
    let started = Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        call(&server, &sid, 3, "sleep", json!({"seconds": 20})),
    )
    .await
    .expect("the timed-out call hung");
    let elapsed = started.elapsed();
    assert_eq!(error_code(&reply), -32001, "{reply}");
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    let reply = call(&server, &sid, 4, "echo", json!({"text": "still here"})).await;
    assert_eq!(text(&reply), "still here");
}

#[tokio::test]
async fn a_stderr_flood_is_drained_and_the_upstream_keeps_answering() {
    let server = gateway(vec![stdio("fx")]).await;
    let sid = server.initialize().await;
    // 40 MB of stderr: far past a pipe's buffer, so an undrained pipe blocks the child.
    let reply = tokio::time::timeout(
        Duration::from_secs(15),
        call(
            &server,
            &sid,
            2,
            "flood",
            json!({"lines": 200_000, "bytes_per_line": 200}),
        ),
    )
    .await
    .expect("the flood did not finish: is stderr drained?");
    assert_eq!(text(&reply), "flooded 200000");
    let reply = call(&server, &sid, 3, "echo", json!({"text": "after"})).await;
    assert_eq!(text(&reply), "after");
}

#[tokio::test]
async fn two_upstreams_are_prefixed_routed_and_fail_independently() {
    let mut b = HttpFixture::start("127.0.0.1:0");
    let server = gateway(vec![
        stdio("a"),
        RawUpstream {
            // Short, so calls to b once it is gone fail fast.
            call_timeout_secs: Some(3),
            ..http("b", &b.url)
        },
    ])
    .await;
    let sid = server.initialize().await;
    let tools = tool_names(&server, &sid, 2).await;
    for name in ["a__echo", "b__echo", "a__pid", "b__pid"] {
        assert!(tools.contains(name), "{name} missing: {tools:?}");
    }
    assert!(!tools.contains("echo"), "{tools:?}");

    let pid_a = pid_of(&call(&server, &sid, 3, "a__pid", json!({})).await);
    let pid_b = pid_of(&call(&server, &sid, 4, "b__pid", json!({})).await);
    assert_eq!(pid_b, b.pid(), "b__pid did not reach the HTTP fixture");
    assert_ne!(pid_a, pid_b);
    assert_eq!(
        text(&call(&server, &sid, 5, "a__echo", json!({"text": "to a"})).await),
        "to a"
    );
    assert_eq!(
        text(&call(&server, &sid, 6, "b__echo", json!({"text": "to b"})).await),
        "to b"
    );
    // A name with no upstream behind it is an error, not a guess.
    let reply = call(&server, &sid, 7, "c__echo", json!({"text": "x"})).await;
    assert_eq!(error_code(&reply), -32602, "{reply}");

    b.kill();
    let reply = tokio::time::timeout(
        Duration::from_secs(15),
        call(&server, &sid, 8, "b__echo", json!({"text": "to b"})),
    )
    .await
    .expect("a call to the dead upstream hung");
    assert_eq!(error_code(&reply), -32603, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("upstream b "), "{reply}");
    // a is unaffected, and still listed.
    assert_eq!(
        text(&call(&server, &sid, 9, "a__echo", json!({"text": "a lives"})).await),
        "a lives"
    );
    let tools = tool_names(&server, &sid, 10).await;
    assert!(tools.contains("a__echo"), "{tools:?}");
    assert!(!tools.contains("b__echo"), "{tools:?}");
    let (body, entry) = readiness(&server, "b").await;
    assert_eq!(body["status"], "degraded", "{body}");
    assert_ne!(entry["state"], "up", "{body}");
    assert_eq!(readiness(&server, "a").await.1["state"], "up");
    let up = metric(&server, "mcpgate_upstream_up{upstream=\"b\"}").await;
    assert_eq!(up, Some(0.0));

    // b comes back at the same address: mcpgate reconnects on its own.
    let b = HttpFixture::start(&b.addr());
    let reply = echo_until_up(&server, &sid, "b__echo", Duration::from_secs(10)).await;
    assert_eq!(text(&reply), "back");
    assert_eq!(
        pid_of(&call(&server, &sid, 11, "b__pid", json!({})).await),
        b.pid()
    );
    let (body, entry) = readiness(&server, "b").await;
    assert_eq!(body["status"], "ready", "{body}");
    assert!(entry["restarts"].as_u64().unwrap() >= 1, "{body}");
}

/// A tools/call whose HTTP answer the test inspects (the edge may refuse it).
async fn raw_call(server: &TestServer, sid: &str, name: &str) -> reqwest::Response {
    server
        .mcp_post()
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({"jsonrpc":"2.0","id":99,"method":"tools/call","params":{"name":name,"arguments":{"text":"x"}}}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn policy_rules_filter_lists_and_refuse_calls_for_real_tokens() {
    let (server, _) = local_gateway(|raw, alice| {
        raw.upstreams = vec![stdio("fx")];
        raw.policy = vec![
            RawPolicy {
                tools: vec!["echo".into()],
                scopes: vec!["echo:call".into()],
                ..RawPolicy::default()
            },
            // Alice may use env; everyone else is refused it.
            RawPolicy {
                tools: vec!["env".into()],
                subjects: vec![alice.to_owned()],
                ..RawPolicy::default()
            },
            RawPolicy {
                tools: vec!["env".into()],
                effect: Some("deny".into()),
                ..RawPolicy::default()
            },
            RawPolicy {
                resources: vec!["test://static-binary".into()],
                effect: Some("deny".into()),
                ..RawPolicy::default()
            },
        ];
    })
    .await;

    // Alice without echo:call: echo is not listed, and the edge refuses it with 403.
    let (token, _) = user_token(&server, ALICE, Some("notes:read")).await;
    assert_eq!(jwt_claims(&token)["scope"], "notes:read");
    server.set_token(&token);
    let sid = server.initialize().await;
    let tools = tool_names(&server, &sid, 2).await;
    assert!(!tools.contains("echo"), "{tools:?}");
    assert!(tools.contains("pid") && tools.contains("env"), "{tools:?}");
    let refused = raw_call(&server, &sid, "echo").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let challenge = refused.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("echo:call"), "{challenge}");

    // Alice with every scope: echo works, and so does env (the subject rule).
    let (token, _) = user_token(&server, ALICE, None).await;
    server.set_token(&token);
    let sid = server.initialize().await;
    let tools = tool_names(&server, &sid, 2).await;
    assert!(tools.contains("echo") && tools.contains("env"), "{tools:?}");
    assert_eq!(
        text(&call(&server, &sid, 3, "echo", json!({"text": "hi"})).await),
        "hi"
    );
    assert!(structured(&call(&server, &sid, 4, "env", json!({})).await)["vars"].is_object());

    // Bob with every scope: env is hidden and refused (-32003), whatever his scopes.
    let (token, _) = user_token(&server, BOB, None).await;
    server.set_token(&token);
    let sid = server.initialize().await;
    let tools = tool_names(&server, &sid, 2).await;
    assert!(
        tools.contains("echo") && !tools.contains("env"),
        "{tools:?}"
    );
    let reply = response_message(raw_call(&server, &sid, "env").await).await;
    assert_eq!(error_code(&reply), -32003, "{reply}");
    assert_eq!(
        text(&call(&server, &sid, 3, "echo", json!({"text": "bob"})).await),
        "bob"
    );

    // The resource deny rule: hidden from the list, refused on read.
    let reply = server
        .session_call(&sid, 4, "resources/list", json!({}))
        .await;
    let uris = listed(&reply, "resources", "uri");
    assert!(uris.contains("test://static-text"), "{uris:?}");
    assert!(!uris.contains("test://static-binary"), "{uris:?}");
    let reply = server
        .session_call(
            &sid,
            5,
            "resources/read",
            json!({"uri": "test://static-binary"}),
        )
        .await;
    assert_eq!(error_code(&reply), -32003, "{reply}");
    let reply = server
        .session_call(
            &sid,
            6,
            "resources/read",
            json!({"uri": "test://static-text"}),
        )
        .await;
    assert!(reply["result"]["contents"].is_array(), "{reply}");
}

#[tokio::test]
async fn http_upstream_gets_signed_identity_and_static_headers_never_the_token() {
    use aws_lc_rs::hmac;
    const SECRET: &str = "gateway-identity-key";
    let fixture = HttpFixture::start("127.0.0.1:0");
    let url = fixture.url.clone();
    let (server, alice) = local_gateway(|raw, _| {
        raw.upstreams = vec![RawUpstream {
            isolation: Some("per-user".into()),
            identity: Some("signed-headers".into()),
            identity_secret: Some(SECRET.into()),
            headers: [("X-Api-Key".to_owned(), "k".to_owned())].into(),
            ..http("h", &url)
        }];
    })
    .await;
    let (token, client_id) = user_token(&server, ALICE, None).await;
    let claims = jwt_claims(&token);
    assert_eq!(claims["sub"], alice.as_str());
    server.set_token(&token);
    let sid = server.initialize().await;
    let reply = call(&server, &sid, 2, "http_headers", json!({})).await;
    let headers = structured(&reply)["headers"].as_object().unwrap().clone();
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{name} not received: {headers:?}"))
            .to_owned()
    };

    // Not the client's token, in any header or any form.
    let signature_part = token.rsplit('.').next().unwrap();
    for (name, value) in &headers {
        let value = value.as_str().unwrap();
        assert!(
            !value.contains(&token),
            "the client's token reached the upstream in {name}"
        );
        assert!(
            !value.contains(signature_part),
            "part of the client's token in {name}"
        );
    }
    assert!(!headers.contains_key("authorization"), "{headers:?}");

    assert_eq!(get("x-api-key"), "k");
    // The version the link negotiated, so the upstream does not fall back
    // to assuming 2025-03-26 for every call.
    assert_eq!(get("mcp-protocol-version"), "2025-11-25");
    assert_eq!(get("x-mcp-subject"), alice);
    assert_eq!(get("x-mcp-issuer"), claims["iss"].as_str().unwrap());
    assert_eq!(get("x-mcp-issuer"), server.base);
    assert_eq!(get("x-mcp-client-id"), client_id);
    let email = get("x-mcp-email");
    let timestamp = get("x-mcp-timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - timestamp.parse::<i64>().unwrap()).abs() < 60,
        "{timestamp}"
    );
    let hex = get("x-mcp-signature");
    assert_eq!(hex.len(), 64, "{hex}");
    let signature: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    // The upstream's URL is the default audience the signature covers.
    assert_eq!(get("x-mcp-audience"), url);
    let signed = |sub: &str| {
        format!(
            "v2\n{timestamp}\n{url}\n{}\n{sub}\n{client_id}\n{email}",
            server.base
        )
    };
    assert!(hmac::verify(&key, signed(&alice).as_bytes(), &signature).is_ok());
    // The signature binds the subject, and only mcpgate's key makes it.
    assert!(hmac::verify(&key, signed("someone-else").as_bytes(), &signature).is_err());
    let other = hmac::Key::new(hmac::HMAC_SHA256, b"another key");
    assert!(hmac::verify(&other, signed(&alice).as_bytes(), &signature).is_err());
}

#[tokio::test]
async fn per_user_isolation_gives_each_principal_its_own_process_and_reaps_idle_ones() {
    let (server, _) = local_gateway(|raw, _| {
        raw.upstreams = vec![RawUpstream {
            isolation: Some("per-user".into()),
            idle_timeout_secs: Some(1),
            ..stdio("fx")
        }];
    })
    .await;
    let (alice_token, _) = user_token(&server, ALICE, None).await;
    let (bob_token, _) = user_token(&server, BOB, None).await;

    server.set_token(&alice_token);
    let alice_sid = server.initialize().await;
    let alice_pid = pid_of(&call(&server, &alice_sid, 2, "pid", json!({})).await);
    assert_eq!(
        pid_of(&call(&server, &alice_sid, 3, "pid", json!({})).await),
        alice_pid
    );

    server.set_token(&bob_token);
    let bob_sid = server.initialize().await;
    let bob_pid = pid_of(&call(&server, &bob_sid, 2, "pid", json!({})).await);
    assert_ne!(alice_pid, bob_pid);
    let (_, entry) = readiness(&server, "fx").await;
    assert_eq!(entry["isolation"], "per-user");
    assert_eq!(entry["connections"], 2, "{entry}");
    assert_eq!(entry["state"], "2 of 2 up", "{entry}");

    // Idle past idle_timeout_secs: both processes are closed by the reaper.
    for pid in [alice_pid, bob_pid] {
        assert!(
            ends_within(pid, Duration::from_secs(12)).await,
            "idle per-user upstream {pid} was not reaped"
        );
    }
    // And a new call starts a fresh one.
    server.set_token(&alice_token);
    let again = pid_of(&call(&server, &alice_sid, 4, "pid", json!({})).await);
    assert_ne!(again, alice_pid);
}

#[test]
fn check_config_lists_every_upstream_problem_at_once() {
    let (code, _, err) = crate::config_cli::run(
        &["check-config"],
        r#"
listen = "127.0.0.1:8123"
[auth]
mode = "none"
[[upstreams]]
name = "both"
command = ["true"]
url = "http://127.0.0.1:1/mcp"
[[upstreams]]
name = "iso"
command = ["true"]
isolation = "sometimes"
[[upstreams]]
name = "who"
url = "http://127.0.0.1:1/mcp"
identity = "signed-headers"
identity_secret = "hmac-secret-value"
"#,
    );
    assert_eq!(code, 2, "{err}");
    for expected in [
        "upstreams[0]: set exactly one of command, url",
        "upstreams[1].isolation",
        "upstreams[2].identity: needs isolation = \"per-user\"",
    ] {
        assert!(err.contains(expected), "{expected} missing: {err}");
    }
    assert!(
        !err.contains("hmac-secret-value"),
        "secret in an error: {err}"
    );

    // A valid gateway config is printed without its secrets.
    let (code, out, err) = crate::config_cli::run(
        &["check-config"],
        r#"
listen = "127.0.0.1:8123"
[[upstreams]]
name = "api"
url = "http://127.0.0.1:1/mcp"
isolation = "per-user"
identity = "signed-headers"
identity_secret = "hmac-secret-value"
headers = { "X-Api-Key" = "api-key-value" }
"#,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("api") && out.contains("X-Api-Key"), "{out}");
    for secret in ["hmac-secret-value", "api-key-value"] {
        assert!(!out.contains(secret), "{secret} printed: {out}");
    }
}

#[tokio::test]
async fn http_upstream_gets_a_client_credentials_token_and_a_minted_identity_jwt() {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
    let idp = crate::fake_idp::FakeIdp::start().await;
    idp.answer_token(
        200,
        json!({"access_token": "cc-token-1", "token_type": "Bearer", "expires_in": 3600}),
    );
    let fixture = HttpFixture::start("127.0.0.1:0");
    let url = fixture.url.clone();
    let token_url = format!("{}/token", idp.issuer);
    let (server, alice) = local_gateway(|raw, _| {
        raw.upstreams = vec![RawUpstream {
            isolation: Some("per-user".into()),
            identity: Some("jwt".into()),
            identity_audience: Some("https://search.internal".into()),
            oauth: Some(mcpgate::upstream::settings::RawUpstreamOAuth {
                token_url: Some(token_url),
                client_id: Some("gateway-client".into()),
                client_secret: Some("gateway-secret".into()),
                scopes: vec!["search".into()],
                audience: Some("https://search.internal".into()),
                ..Default::default()
            }),
            ..http("h", &url)
        }];
    })
    .await;
    let (token, client_id) = user_token(&server, ALICE, None).await;
    server.set_token(&token);
    let sid = server.initialize().await;
    let first = call(&server, &sid, 2, "http_headers", json!({})).await;
    let second = call(&server, &sid, 3, "http_headers", json!({})).await;
    for reply in [&first, &second] {
        let headers = &structured(reply)["headers"];
        // mcpgate's own token for the upstream, never the client's.
        assert_eq!(headers["authorization"], "Bearer cc-token-1", "{headers}");
        assert!(!headers.to_string().contains(&token));
    }
    // One client-credentials grant serves every request until it nears expiry.
    let requests = idp.token_requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let form = &requests[0].1;
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], "gateway-client");
    assert_eq!(form["client_secret"], "gateway-secret");
    assert_eq!(form["scope"], "search");
    assert_eq!(form["audience"], "https://search.internal");

    // The identity JWT verifies against mcpgate's published keys.
    let identity = structured(&first)["headers"]["x-mcp-identity"]
        .as_str()
        .unwrap_or_else(|| panic!("no identity JWT: {first}"))
        .to_owned();
    let jwks: JwkSet = serde_json::from_value(server.get_json("/jwks.json").await).unwrap();
    let kid = jsonwebtoken::decode_header(&identity).unwrap().kid.unwrap();
    let key = DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["https://search.internal"]);
    validation.set_issuer(&[server.base.as_str()]);
    let claims = jsonwebtoken::decode::<Value>(&identity, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], alice.as_str());
    assert_eq!(claims["client_id"], client_id.as_str());
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 120);
    // Another audience does not accept it.
    validation.set_audience(&["https://other.internal"]);
    assert!(jsonwebtoken::decode::<Value>(&identity, &key, &validation).is_err());
}

#[tokio::test]
async fn a_url_upstream_on_the_legacy_sse_transport_is_used_as_such() {
    // Another mcpgate (no auth, built-in tools) serves the 2024-11-05
    // transport at /sse; its Streamable HTTP endpoint is not at that URL.
    let old = TestServer::start_with(|raw| {
        raw.auth.mode = Some("none".to_owned());
    })
    .await;
    let sse_url = old.url("/sse");
    let server = gateway(vec![http("old", &sse_url)]).await;
    let sid = server.initialize().await;
    let reply = call(&server, &sid, 2, "add", json!({"a": 2, "b": 3})).await;
    assert_eq!(text(&reply), "5", "{reply}");
    let (_, entry) = readiness(&server, "old").await;
    assert_eq!(entry["state"], "up", "{entry}");
}

#[tokio::test]
async fn sampling_is_not_relayed_when_two_sessions_share_the_upstream_call_window() {
    // A shared stdio upstream's sampling request names no call. While two
    // sessions have calls in flight it could belong to either: mcpgate must
    // refuse it rather than show one user's prompt to the other.
    let server = gateway(vec![stdio("fx")]).await;
    let sid_a = server.initialize().await;
    let sid_b = server.initialize().await;
    let a = call(&server, &sid_a, 2, "sleep", json!({"seconds": 3}));
    let b = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        call(
            &server,
            &sid_b,
            2,
            "test_sampling",
            json!({"prompt": "bob's private question"}),
        )
        .await
    };
    let (slept, sampled) =
        tokio::time::timeout(Duration::from_secs(15), async { tokio::join!(a, b) })
            .await
            .expect("neither call may hang");
    assert_eq!(text(&slept), "slept", "{slept}");
    assert_eq!(sampled["result"]["isError"], json!(true), "{sampled}");
    let message = sampled["result"]["content"][0]["text"].as_str().unwrap();
    assert!(message.contains("cannot tell which caller"), "{sampled}");
}

/// 2026-07-28 lists say how long they stay fresh and who may cache them:
/// the shortest `ttlMs` of the merged parts, private for signed-in callers.
#[tokio::test]
async fn merged_lists_carry_the_shortest_ttl_and_a_private_scope_for_signed_in_callers() {
    let mut short = stdio("fast");
    short
        .set_env
        .insert("FIXTURE_LIST_TTL_MS".to_owned(), "1500".to_owned());
    let server = gateway(vec![stdio("plain"), short]).await;
    let (status, message) = server
        .stateless_call(1, "tools/list", None, json!({}))
        .await;
    assert_eq!(status, 200, "{message}");
    let result = &message["result"];
    assert_eq!(result["ttlMs"], 1500, "{result}");
    // `auth.mode = "none"`: every caller is the same anonymous one.
    assert_eq!(result["cacheScope"], "public", "{result}");
    let (_, message) = server
        .stateless_call(2, "prompts/list", None, json!({}))
        .await;
    assert_eq!(message["result"]["ttlMs"], 60_000, "{message}");

    let (server, _) = local_gateway(|raw, _| raw.upstreams = vec![stdio("fx")]).await;
    let (token, _) = user_token(&server, ALICE, None).await;
    server.set_token(&token);
    for (id, method) in [
        (1, "tools/list"),
        (2, "resources/list"),
        (3, "prompts/list"),
    ] {
        let (status, message) = server.stateless_call(id, method, None, json!({})).await;
        assert_eq!(status, 200, "{message}");
        assert_eq!(
            message["result"]["cacheScope"], "private",
            "{method}: {message}"
        );
        assert_eq!(message["result"]["ttlMs"], 60_000, "{method}: {message}");
    }
}

/// W3C trace context in `_meta` (SEP-414) reaches an HTTP upstream with the
/// call, so a trace spans client, gateway and upstream.
#[tokio::test]
async fn a_calls_traceparent_in_meta_reaches_the_upstream() {
    let fixture = HttpFixture::start("127.0.0.1:0");
    let server = gateway(vec![http("h", &fixture.url)]).await;
    let sid = server.initialize().await;
    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = server
        .session_call(
            &sid,
            2,
            "tools/call",
            json!({"name": "http_headers", "arguments": {}, "_meta": {"traceparent": TRACE, "tracestate": "vendor=1"}}),
        )
        .await;
    let meta = &structured(&reply)["meta"];
    assert_eq!(meta["traceparent"], TRACE, "{reply}");
    assert_eq!(meta["tracestate"], "vendor=1", "{reply}");
}
