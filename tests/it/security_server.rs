//! The server edge under attack: held connections, trickled requests, forged
//! forwarding headers, unauthenticated operations endpoints, file modes and
//! log injection. Each test replays an attack from the security review.

use std::time::{Duration, Instant};

use futures::StreamExt;
use mcpgate::config::RawLocalAuth;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{common::TestServer, mcp_transport::next_event};

/// A client that opens a new connection per request.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}

#[tokio::test]
async fn idle_sockets_beyond_the_connection_cap_do_not_take_healthz_down() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // Client and server share this process's descriptors; a small limit lets
    // the attack exhaust them in a moment (nextest runs each test in its own
    // process, so nothing else sees the lower limit).
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let limit = soft.min(1024);
    setrlimit(Resource::RLIMIT_NOFILE, limit, hard).unwrap();
    let server = TestServer::start_with(|raw| {
        raw.server.max_connections = Some(16);
    })
    .await;
    // Sockets that never send a byte, far more than the server may hold and
    // (with the server holding its end of each) more than the limit allows.
    let wanted = usize::try_from(limit).unwrap() - 200;
    let mut idle = Vec::with_capacity(wanted);
    for _ in 0..wanted {
        match TcpStream::connect(server.addr).await {
            Ok(socket) => idle.push(socket),
            Err(_) => break,
        }
    }
    let opened = idle.len();
    // While the reserve is busy a probe may get a 503 or be closed at once;
    // it frees within seconds and `/healthz` answers again, although every
    // idle socket is still open.
    let client = fresh_client();
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        match client.get(server.url("/healthz")).send().await {
            Ok(response) if response.status() == StatusCode::OK => break,
            Ok(response) => seen.push(response.status().to_string()),
            Err(e) => seen.push(e.to_string()),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "/healthz never 200 with {opened} idle sockets open: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(opened, wanted, "the attacker's sockets were all accepted");
    drop(idle);
}

/// Write `head` and then one header line every 200 ms; how long until the
/// server closes the connection (panics if it has not after 6 s).
async fn closed_after_trickling(server: &TestServer, head: &str, drip: &[u8]) -> Duration {
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "connection still open after 6 s of trickling; answer so far: {:?}",
            String::from_utf8_lossy(&answer)
        );
        if socket.write_all(drip).await.is_err() {
            return started.elapsed();
        }
        let mut buffer = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(200), socket.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => {}
        }
    }
}

#[tokio::test]
async fn a_header_trickling_connection_is_closed_after_the_header_timeout() {
    let server = TestServer::start_with(|raw| {
        raw.server.header_read_timeout_secs = Some(1);
    })
    .await;
    let head = format!("GET /healthz HTTP/1.1\r\nhost: {}\r\n", server.addr);
    let trickle = closed_after_trickling(&server, &head, b"x-slow: a\r\n");
    // Meanwhile the server answers everyone else.
    let probe = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        fresh_client()
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
    };
    let (took, probed) = tokio::join!(trickle, probe);
    assert_eq!(probed, StatusCode::OK);
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let server = TestServer::start_with(|raw| {
        raw.server.header_read_timeout_secs = Some(1);
    })
    .await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buffer)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "a socket that sent nothing was kept open for 5 s"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_trickled_token_body_gets_408_after_the_body_timeout() {
    let server = TestServer::start_with(|raw| {
        raw.auth.mode = Some("local".to_owned());
        raw.auth.local = Some(RawLocalAuth::default());
        raw.server.body_read_timeout_secs = Some(1);
    })
    .await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(
            format!(
                "POST /token HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 1000\r\n\r\n",
                server.addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    // One byte every 200 ms, as in the review (there every 10 s).
    while started.elapsed() < Duration::from_secs(6) {
        if socket.write_all(b"a").await.is_err() {
            break;
        }
        let mut buffer = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(200), socket.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408 "),
        "after {:?}: {answer:?}",
        started.elapsed()
    );
    assert!(answer.contains("did not arrive in time"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn an_sse_stream_outlives_the_idle_header_body_and_request_timeouts() {
    let server = TestServer::start_with(|raw| {
        raw.server.header_read_timeout_secs = Some(1);
        raw.server.body_read_timeout_secs = Some(1);
        raw.server.keep_alive_idle_secs = Some(1);
        raw.server.request_timeout_secs = Some(1);
    })
    .await;
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
    let (_, endpoint) = next_event(&mut stream, &mut buffer).await;
    // Longer than every timeout, with nothing sent either way.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let accepted = fresh_client()
        .post(server.url(&endpoint))
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"it","version":"1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let (event, data) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(event, "message");
    let init: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(init["result"]["protocolVersion"], "2024-11-05");

    // The Streamable HTTP GET stream too.
    let sid = server.initialize().await;
    let response = server
        .client
        .get(server.url("/mcp"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = Box::pin(response.bytes_stream());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    loop {
        match tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
            Err(_) => break,             // still open, nothing to read
            Ok(Some(Ok(_))) => continue, // priming event or keep-alive
            Ok(other) => panic!("the GET stream ended: {other:?}"),
        }
    }
}

async fn register_from(server: &TestServer, forwarded_for: &str) -> StatusCode {
    server
        .client
        .post(server.url("/register"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({
            "redirect_uris": ["http://127.0.0.1:9/cb"],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .unwrap()
        .status()
}

async fn local_with_proxies(trusted: &[&str]) -> TestServer {
    let trusted: Vec<String> = trusted.iter().map(|s| (*s).to_owned()).collect();
    TestServer::start_with(move |raw| {
        raw.auth.mode = Some("local".to_owned());
        raw.auth.local = Some(RawLocalAuth {
            registrations_per_minute: Some(3),
            ..RawLocalAuth::default()
        });
        raw.server.trusted_proxies = trusted;
    })
    .await
}

#[tokio::test]
async fn x_forwarded_for_from_a_trusted_proxy_picks_the_rate_limit_key() {
    let server = local_with_proxies(&["127.0.0.1/32"]).await;
    for _ in 0..3 {
        assert_eq!(
            register_from(&server, "198.51.100.1").await,
            StatusCode::CREATED
        );
    }
    assert_eq!(
        register_from(&server, "198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy is not punished for the first.
    assert_eq!(
        register_from(&server, "198.51.100.2").await,
        StatusCode::CREATED
    );
    // A hop the client wrote itself, left of the proxy's, changes nothing.
    assert_eq!(
        register_from(&server, "203.0.113.50, 198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let server = local_with_proxies(&["10.0.0.0/8"]).await;
    for i in 0..3 {
        assert_eq!(
            register_from(&server, &format!("198.51.100.{i}")).await,
            StatusCode::CREATED
        );
    }
    // A fresh forged address per request would bypass the limit.
    assert_eq!(
        register_from(&server, "198.51.100.99").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

const METRICS_TOKEN: &str = "ops-token-0123456789abcdef";

#[tokio::test]
async fn metrics_need_the_token_and_readyz_hides_its_detail_without_it() {
    let server = TestServer::start_with(|raw| {
        raw.server.metrics_token = Some(METRICS_TOKEN.to_owned());
    })
    .await;
    let client = &server.client;
    let anonymous = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
    let wrong = client
        .get(server.url("/metrics"))
        .bearer_auth("ops-token-0123456789abcdeX")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let allowed = client
        .get(server.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    assert!(allowed.text().await.unwrap().contains("mcpgate_store_up"));

    let ready: Value = server.get_json("/readyz").await;
    assert_eq!(ready, json!({ "status": "ready" }));
    let detailed: Value = client
        .get(server.url("/readyz"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detailed["store"], "sqlite", "{detailed}");
    assert_eq!(server.get_json("/healthz").await["status"], "ok");
}

#[tokio::test]
async fn ops_allow_opens_metrics_to_listed_addresses_only() {
    let listed = TestServer::start_with(|raw| {
        raw.server.ops_allow = vec!["127.0.0.1/32".to_owned()];
    })
    .await;
    let response = listed
        .client
        .get(listed.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(listed.get_json("/readyz").await["store"], "sqlite");

    let unlisted = TestServer::start_with(|raw| {
        raw.server.ops_allow = vec!["10.0.0.0/8".to_owned()];
    })
    .await;
    let response = unlisted
        .client
        .get(unlisted.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        unlisted.get_json("/readyz").await,
        json!({ "status": "ready" })
    );
}

#[tokio::test]
async fn the_database_is_private_to_its_user_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    // The usual umask, which left the database world-readable.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_in(dir, {
        let data = data.clone();
        move |raw| {
            raw.auth.mode = Some("local".to_owned());
            raw.data_dir = Some(data.clone());
            raw.store.url = Some(crate::common::sqlite_url(&data));
        }
    })
    .await;
    // A write, so the WAL files exist.
    let registered = server
        .client
        .post(server.url("/register"))
        .json(&json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
    let mode = |name: &str| {
        std::fs::metadata(data.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700, "data_dir");
    for name in [
        "mcpgate.db",
        "mcpgate.db-wal",
        "mcpgate.db-shm",
        "mcpgate.key",
    ] {
        assert_eq!(mode(name), 0o600, "{name}");
    }
}
