use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{TestServer, postgres_url};

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = TestServer::start().await;
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = server.get_json("/readyz").await;
    assert_eq!(ready["status"], "ready");
    let (status, _) = server
        .stateless_call(
            1,
            "tools/call",
            Some("add"),
            json!({"name":"add","arguments":{"a":1,"b":1}}),
        )
        .await;
    assert_eq!(status, 200);
    let _ = server
        .client
        .get(server.url("/nowhere"))
        .send()
        .await
        .unwrap();
    let metrics = server.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"mcpgate_mcp_requests_total{method="tools/call",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"mcpgate_tool_calls_total{tool="add",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"mcpgate_http_requests_total{route="/mcp",status_class="2xx"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"status_class="4xx""#), "{metrics}");
    assert!(
        metrics.contains("mcpgate_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    let unknown = server
        .client
        .get(server.url("/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let server = TestServer::start().await;
    let response = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert!(!response.headers()["x-request-id"].is_empty());
}

/// A request whose body is still arriving when the shutdown signal comes
/// must be answered; new connections are refused afterwards.
#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let mut server = TestServer::start().await;
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<bytes::Bytes, std::io::Error>>();
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":20,"b":22},
        "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
                 "io.modelcontextprotocol/clientInfo":{"name":"it","version":"1"},
                 "io.modelcontextprotocol/clientCapabilities":{}}}})
    .to_string();
    let (first, rest) = body.split_at(20);
    tx.unbounded_send(Ok(bytes::Bytes::from(first.to_owned())))
        .unwrap();
    let request = server
        .mcp_post()
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "add")
        .body(reqwest::Body::wrap_stream(rx))
        .send();
    let pending = tokio::spawn(request);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal_shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.unbounded_send(Ok(bytes::Bytes::from(rest.to_owned())))
        .unwrap();
    drop(tx);
    let response = pending.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.unwrap();
    assert_eq!(message["result"]["content"][0]["text"], "42");
    let finished = tokio::time::timeout(Duration::from_secs(10), server.task.take().unwrap()).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "server did not stop cleanly"
    );
    assert!(
        reqwest::get(server.url("/healthz")).await.is_err(),
        "still accepting after shutdown"
    );
}

/// PostgreSQL goes away while serving: readiness fails, MCP requests get
/// 503, and both recover when it comes back.
#[tokio::test]
async fn store_outage_is_reported_and_recovered() {
    let Some(store_url) = crate::common::fresh_postgres_database("outage").await else {
        return;
    };
    let admin = sqlx::PgPool::connect(&postgres_url().unwrap())
        .await
        .unwrap();
    let db = url::Url::parse(&store_url).unwrap().path()[1..].to_owned();
    let server = TestServer::start_with(|raw| raw.store.url = Some(store_url)).await;
    let sid = server.initialize().await;
    let created = server
        .session_call(
            &sid,
            2,
            "tools/call",
            json!({"name":"create_note","arguments":{"title":"kept"}}),
        )
        .await;
    assert_eq!(created["result"]["isError"], false);

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {db} ALLOW_CONNECTIONS false"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&db)
        .execute(&admin)
        .await
        .unwrap();
    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    let (status, refused) = server
        .stateless_call(3, "tools/list", None, json!({}))
        .await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], -32000);

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {db} ALLOW_CONNECTIONS true"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let mut recovered = false;
    for _ in 0..30 {
        if server
            .client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "readiness did not recover");
    let (status, listed) = server
        .stateless_call(
            4,
            "tools/call",
            Some("list_notes"),
            json!({"name":"list_notes","arguments":{}}),
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    let notes: Value =
        serde_json::from_str(listed["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        notes["notes"].as_array().unwrap().len(),
        1,
        "the note written before the outage is intact"
    );
    drop(server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
}
