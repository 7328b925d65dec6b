//! The accept loop's shutdown, below the router: what a balancer already
//! sent to a replica that stops accepting is answered, never reset.

use std::{sync::Arc, time::Duration};

use axum::{Router, routing::post};
use mcpgate::server::{Draining, InFlight, ServerConfig, serve::serve};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

const REQUEST: &[u8] = b"POST /work HTTP/1.1\r\nhost: replica\r\ncontent-length: 5\r\n\r\nhello";

struct Running {
    addr: std::net::SocketAddr,
    in_flight: Arc<InFlight>,
    stop: CancellationToken,
    listener_closed: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn start(listener: TcpListener, stop: CancellationToken) -> Running {
    let router = Router::new().route("/work", post(|body: String| async move { body }));
    let in_flight = Arc::new(InFlight::default());
    let listener_closed = CancellationToken::new();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(serve(
        listener,
        router,
        ServerConfig::default(),
        Draining::default(),
        in_flight.clone(),
        stop.clone(),
        listener_closed.clone(),
    ));
    Running {
        addr,
        in_flight,
        stop,
        listener_closed,
        task,
    }
}

/// The whole answer on `stream`, until the server closes it.
async fn answer(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("the server neither answered nor closed")
        .expect("the connection was reset instead of answered");
    String::from_utf8_lossy(&bytes).into_owned()
}

fn assert_answered_and_closing(text: &str) {
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("hello"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
}

/// A connection the balancer opened just before the replica stopped
/// accepting, whose request arrives after: served (with `Connection: close`),
/// and counted as work until then, so shutdown does not cancel it.
#[tokio::test]
async fn a_connection_accepted_before_the_stop_gets_its_request_served() {
    let running = start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        CancellationToken::new(),
    );
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    // Accepted (and counted) once the server counts it.
    for _ in 0..200 {
        if running.in_flight.current() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        running.in_flight.current(),
        1,
        "the accepted connection is not counted"
    );
    running.stop.cancel();
    running.listener_closed.cancelled().await;
    assert_eq!(
        running.in_flight.current(),
        1,
        "stopping dropped the wait for the connection's first request"
    );
    stream.write_all(REQUEST).await.unwrap();
    assert_answered_and_closing(&answer(&mut stream).await);
    let served = tokio::time::timeout(Duration::from_secs(10), running.task).await;
    assert!(matches!(served, Ok(Ok(Ok(())))), "serve did not return");
    assert_eq!(running.in_flight.current(), 0);
    assert!(
        TcpStream::connect(running.addr).await.is_err(),
        "still accepting after the stop"
    );
}

/// Connections the kernel completed but the server had not accepted when it
/// stopped (the listen queue) are accepted and served, not reset with the
/// listener.
#[tokio::test]
async fn connections_in_the_listen_queue_are_served_not_reset() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Queued in the kernel before anything accepts, each with its request sent.
    let mut queued = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(REQUEST).await.unwrap();
        queued.push(stream);
    }
    let stop = CancellationToken::new();
    stop.cancel();
    let running = start(listener, stop);
    running.listener_closed.cancelled().await;
    for stream in &mut queued {
        assert_answered_and_closing(&answer(stream).await);
    }
    let served = tokio::time::timeout(Duration::from_secs(10), running.task).await;
    assert!(matches!(served, Ok(Ok(Ok(())))), "serve did not return");
    assert_eq!(running.in_flight.current(), 0);
}

/// The store probe asks PostgreSQL, not the pool: with every pooled
/// connection in use (here the only one, held by a lease) it still answers
/// at once. A probe through the pool waited for a free connection, missed its
/// deadline, and a replica restarted under load answered 503 to every MCP
/// request although PostgreSQL was idle.
#[tokio::test]
async fn the_store_probe_does_not_wait_for_the_pool() {
    let Some(url) = crate::common::fresh_postgres_database("probe").await else {
        return;
    };
    let store = mcpgate::store::Store::connect(&url, 1).await.unwrap();
    let mut probe = mcpgate::store::StoreProbe::new(store.clone(), &url).await;
    let held = store
        .run_exclusively("probe-test", async {
            let pooled = tokio::time::timeout(Duration::from_millis(500), store.ping()).await;
            assert!(pooled.is_err(), "the pool had a free connection after all");
            tokio::time::timeout(Duration::from_secs(2), probe.probe()).await
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held, Ok(true));
}
