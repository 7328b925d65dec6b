//! Replicas share one budget and run background work once: two store
//! handles on one PostgreSQL database stand for two replicas (each with its
//! own pool, limiters and caches, as two processes have). Skipped without
//! `MCPGATE_TEST_POSTGRES_URL` outside CI. Also the graceful drain.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use mcpgate::{
    clock::ManualClock,
    oauth::{
        cimd::CimdResolver,
        crypto::Sealer,
        keys::KeyRing,
        ratelimit::{LoginLimits, LoginRefusal, WindowLimiter},
    },
    store::Store,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::TestServer;

/// Two replicas' store handles on one fresh database.
async fn two_replicas(prefix: &str) -> Option<(Store, Store)> {
    let url = crate::common::fresh_postgres_database(prefix).await?;
    let a = Store::connect(&url, 4).await.unwrap();
    let b = Store::connect(&url, 4).await.unwrap();
    Some((a, b))
}

#[tokio::test]
async fn failed_sign_ins_split_across_replicas_lock_the_account_on_both() {
    let Some((a, b)) = two_replicas("limits_login").await else {
        return;
    };
    let window = Duration::from_secs(300);
    // 100 per address (not the point here), 6 per account.
    let on_a = LoginLimits::new(100, 6, window, a);
    let on_b = LoginLimits::new(100, 6, window, b);
    for i in 0..3 {
        on_a.begin("acct", &format!("a{i}")).await.unwrap().failed();
        on_b.begin("acct", &format!("b{i}")).await.unwrap().failed();
    }
    for limits in [&on_a, &on_b] {
        assert!(matches!(
            limits.begin("acct", "elsewhere").await,
            Err(LoginRefusal::Exhausted(_))
        ));
    }
}

#[tokio::test]
async fn the_registration_limit_is_shared_and_concurrent_hits_all_count() {
    let Some((a, b)) = two_replicas("limits_register").await else {
        return;
    };
    let minute = Duration::from_secs(60);
    let on_a = Arc::new(WindowLimiter::new("register", 10, minute, a));
    let on_b = Arc::new(WindowLimiter::new("register", 10, minute, b));
    // 20 registrations at once from one address, half on each replica.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let limiter = if i % 2 == 0 {
            on_a.clone()
        } else {
            on_b.clone()
        };
        tasks.push(tokio::spawn(
            async move { limiter.hit("203.0.113.7").await },
        ));
    }
    let mut allowed = 0;
    for task in tasks {
        allowed += usize::from(task.await.unwrap().unwrap());
    }
    assert_eq!(allowed, 10);
    assert!(!on_a.hit("203.0.113.7").await.unwrap());
    assert!(on_b.hit("198.51.100.1").await.unwrap());
}

/// A local server answering every request with 404, counting connections.
async fn counting_not_found() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            seen.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            let _ = sock.shutdown().await;
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn a_failed_metadata_document_is_fetched_once_across_replicas() {
    let Some((a, b)) = two_replicas("limits_cimd").await else {
        return;
    };
    let (addr, hits) = counting_not_found().await;
    let clock = ManualClock::new();
    let on_a = CimdResolver::new(true, Duration::from_secs(2))
        .with_store(a)
        .with_clock(clock.clone());
    let on_b = CimdResolver::new(true, Duration::from_secs(2))
        .with_store(b)
        .with_clock(clock.clone());
    let id = format!("http://{addr}/client.json");
    for resolver in [&on_a, &on_b, &on_b, &on_a] {
        assert!(resolver.resolve(&id).await.is_err());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // After the failure's time (60 s), the next replica asks again.
    clock.advance(Duration::from_secs(61));
    assert!(on_b.resolve(&id).await.is_err());
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_background_job_never_runs_on_two_replicas_at_once() {
    let Some((a, b)) = two_replicas("limits_lease").await else {
        return;
    };
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn(async move {
        a.run_exclusively("sweep", async move {
            started_tx.send(()).unwrap();
            finish_rx.await.unwrap();
            "ran on a"
        })
        .await
        .unwrap()
    });
    started_rx.await.unwrap();
    // While A sweeps, B skips the round, again and again.
    for _ in 0..3 {
        assert_eq!(
            b.run_exclusively("sweep", async { "ran on b" })
                .await
                .unwrap(),
            None
        );
    }
    // Another job is not blocked by it.
    assert_eq!(
        b.run_exclusively("reseal", async { 1 }).await.unwrap(),
        Some(1)
    );
    finish_tx.send(()).unwrap();
    assert_eq!(holder.await.unwrap(), Some("ran on a"));
    // Released: the next round runs on B.
    assert_eq!(
        b.run_exclusively("sweep", async { "ran on b" })
            .await
            .unwrap(),
        Some("ran on b")
    );
    // A job dropped half-way (cancelled) releases its lock too: its
    // connection is closed, and the server drops the lock with it.
    let (a2, b2) = two_replicas("limits_lease2").await.unwrap();
    let cancelled = tokio::time::timeout(
        Duration::from_millis(200),
        a2.run_exclusively("sweep", std::future::pending::<()>()),
    )
    .await;
    assert!(cancelled.is_err());
    let mut ran = None;
    for _ in 0..100 {
        ran = b2.run_exclusively("sweep", async { 2 }).await.unwrap();
        if ran.is_some() {
            break;
        }
        // The server notices the closed connection on its own schedule.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ran, Some(2));
}

#[tokio::test]
async fn replicas_starting_together_on_an_empty_database_create_one_signing_key() {
    let Some((a, b)) = two_replicas("limits_keys").await else {
        return;
    };
    let sealer = Arc::new(Sealer::new(&[9u8; 32]).unwrap());
    let mut starts = Vec::new();
    for store in [a.clone(), b.clone(), a.clone(), b.clone()] {
        let sealer = sealer.clone();
        starts.push(tokio::spawn(async move {
            KeyRing::open(store, sealer).await.map(|ring| ring.jwks())
        }));
    }
    let mut published = Vec::new();
    for start in starts {
        published.push(start.await.unwrap().unwrap());
    }
    assert_eq!(a.all_signing_keys().await.unwrap().len(), 1);
    // Every replica publishes (and signs with) that one key.
    assert!(published.iter().all(|jwks| *jwks == published[0]));
}

/// Read one HTTP/1.1 response head from `stream`.
async fn response_head(stream: &mut tokio::net::TcpStream) -> String {
    let mut buf = vec![0u8; 8192];
    let mut got = 0;
    loop {
        let n = stream.read(&mut buf[got..]).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        got += n;
        if let Some(end) = buf[..got].windows(4).position(|w| w == b"\r\n\r\n") {
            return String::from_utf8_lossy(&buf[..end]).to_lowercase();
        }
    }
}

#[tokio::test]
async fn on_shutdown_readiness_flips_first_and_the_listener_serves_until_the_drain_delay_ends() {
    let mut server = TestServer::start_with(|raw| {
        raw.http.drain_delay_secs = Some(1);
    })
    .await;
    // A kept-alive connection opened before the signal.
    let mut kept = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nhost: {}\r\n\r\n", server.addr);
    kept.write_all(request.as_bytes()).await.unwrap();
    let head = response_head(&mut kept).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let started = std::time::Instant::now();
    server.signal_shutdown();
    // At once: not ready, saying why, while the listener still accepts.
    let mut draining = None;
    for _ in 0..50 {
        let response = server
            .client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap();
        if response.status() == 503 {
            draining = Some(response.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(draining.unwrap()["status"], "draining");
    // Requests during the delay are served, and told to close the connection.
    kept.write_all(request.as_bytes()).await.unwrap();
    let head = response_head(&mut kept).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let fresh = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(fresh.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    // After the delay, the listener is closed and the server stops.
    let task = server.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}
