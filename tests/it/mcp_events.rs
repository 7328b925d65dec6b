//! Server-initiated messages across replicas and `Last-Event-ID`: the store
//! contract on both backends, then two in-process replicas on one
//! PostgreSQL database (skipped without one) in front of the fixture
//! upstream.

use std::time::Duration;

use mcpgate::{
    config::{RawConfig, RawResourceAuth},
    store::Store,
};
use serde_json::{Value, json};

use crate::{
    common::{TestServer, fresh_postgres_database, sqlite_url},
    fake_idp::FakeIdp,
    gateway::{call, stdio},
};

const LIST_CHANGED: &str = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
const T0: i64 = 1_900_000_000;

/// A fresh SQLite store and, when one is configured, a fresh PostgreSQL one.
async fn backends() -> Vec<(Store, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let mut stores = vec![(
        Store::connect(&sqlite_url(dir.path()), 4).await.unwrap(),
        dir,
    )];
    if let Some(url) = fresh_postgres_database("mcp_events").await {
        stores.push((
            Store::connect(&url, 4).await.unwrap(),
            tempfile::tempdir().unwrap(),
        ));
    }
    stores
}

async fn session(store: &Store) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    assert!(
        store
            .bind_mcp_session(&id, "streamable", "it|owner", T0, T0 + 86_400)
            .await
            .unwrap()
    );
    id
}

fn updated(n: i64) -> String {
    json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":format!("test://{n}")}})
        .to_string()
}

#[tokio::test]
async fn a_stream_reads_its_own_session_after_its_cursor_while_it_is_the_newest() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let (s, t) = (session(&store).await, session(&store).await);
        let first = store
            .append_mcp_event(&s, &updated(1), "a", None, T0)
            .await
            .unwrap();
        let other = store
            .append_mcp_event(&t, &updated(9), "a", None, T0)
            .await
            .unwrap();
        let second = store
            .append_mcp_event(&s, &updated(2), "b", None, T0)
            .await
            .unwrap();
        assert!(first < other && other < second, "{backend}");
        // A new stream starts after the newest message.
        assert_eq!(
            store.claim_mcp_stream(&s, "one").await.unwrap(),
            (second, 0),
            "{backend}: nothing sent yet"
        );
        store.mark_mcp_stream_sent(&s, "one", first).await.unwrap();
        let view = store
            .mcp_stream_after(&s, "one", first, 100, T0)
            .await
            .unwrap();
        assert!(view.live && view.claimed, "{backend}");
        let seqs: Vec<i64> = view.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![second], "{backend}: only S's, after the cursor");
        assert_eq!(view.events[0].message, updated(2), "{backend}");
        // A newer stream takes over, told what was sent; the older one
        // reads nothing and records nothing.
        assert_eq!(
            store.claim_mcp_stream(&s, "two").await.unwrap(),
            (second, first),
            "{backend}"
        );
        store.mark_mcp_stream_sent(&s, "one", second).await.unwrap();
        store
            .mark_mcp_stream_sent(&s, "two", first - 1)
            .await
            .unwrap();
        assert_eq!(
            store.claim_mcp_stream(&s, "two").await.unwrap(),
            (second, first),
            "{backend}: neither a replaced stream nor a step back counts"
        );
        let old = store.mcp_stream_after(&s, "one", 0, 100, T0).await.unwrap();
        assert!(
            old.live && !old.claimed && old.events.is_empty(),
            "{backend}"
        );
        let new = store.mcp_stream_after(&s, "two", 0, 100, T0).await.unwrap();
        assert_eq!(new.events.len(), 2, "{backend}");
        // An ended or expired session's streams end; an unknown one has none.
        store.end_mcp_session(&s, T0).await.unwrap();
        let ended = store.mcp_stream_after(&s, "two", 0, 100, T0).await.unwrap();
        assert!(!ended.live && ended.events.is_empty(), "{backend}");
        store.claim_mcp_stream(&t, "three").await.unwrap();
        let expired = store
            .mcp_stream_after(&t, "three", 0, 100, T0 + 86_400)
            .await
            .unwrap();
        assert!(!expired.live, "{backend}");
        let unknown = store
            .mcp_stream_after("no-such-session", "x", 0, 100, T0)
            .await
            .unwrap();
        assert!(!unknown.live, "{backend}");
    }
}

#[tokio::test]
async fn old_messages_and_all_but_the_newest_thousand_are_swept() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let (s, t) = (session(&store).await, session(&store).await);
        let old = store
            .append_mcp_event(&t, &updated(0), "a", None, T0)
            .await
            .unwrap();
        let mut seqs = Vec::new();
        for n in 0..1003 {
            seqs.push(
                store
                    .append_mcp_event(&s, &updated(n), "a", None, T0 + 300)
                    .await
                    .unwrap(),
            );
        }
        let swept = store.sweep_mcp_events(T0 + 601).await.unwrap();
        assert_eq!(swept, 4, "{backend}: one too old, three beyond the cap");
        store.claim_mcp_stream(&s, "c").await.unwrap();
        let view = store.mcp_stream_after(&s, "c", 0, 2000, T0).await.unwrap();
        assert_eq!(view.events.len(), 1000, "{backend}");
        assert_eq!(view.events[0].seq, seqs[3], "{backend}: the oldest went");
        store.claim_mcp_stream(&t, "c").await.unwrap();
        let view = store
            .mcp_stream_after(&t, "c", old - 1, 10, T0)
            .await
            .unwrap();
        assert!(view.events.is_empty(), "{backend}");
    }
}

#[tokio::test]
async fn a_list_change_two_replicas_raise_together_is_stored_once() {
    let Some(url) = fresh_postgres_database("mcp_events").await else {
        return;
    };
    let store = Store::connect(&url, 4).await.unwrap();
    let s = session(&store).await;
    let first = store
        .append_mcp_event(&s, LIST_CHANGED, "a", Some(T0 - 2), T0)
        .await
        .unwrap();
    // Replica b's link saw the same upstream change.
    let again = store
        .append_mcp_event(&s, LIST_CHANGED, "b", Some(T0 - 1), T0 + 1)
        .await
        .unwrap();
    assert_eq!(again, first);
    // Replica a's own link saw a second change: it counts.
    let second = store
        .append_mcp_event(&s, LIST_CHANGED, "a", Some(T0 - 1), T0 + 1)
        .await
        .unwrap();
    assert!(second > first);
    // Outside the window, or a different message, is a new one.
    let later = store
        .append_mcp_event(&s, LIST_CHANGED, "b", Some(T0 + 5), T0 + 7)
        .await
        .unwrap();
    assert!(later > second);
    let other = store
        .append_mcp_event(&s, &updated(1), "b", Some(T0 + 5), T0 + 7)
        .await
        .unwrap();
    assert!(other > later);
}

/// An open Streamable HTTP GET stream.
struct GetStream {
    response: reqwest::Response,
    buffer: String,
}

impl GetStream {
    async fn open(
        server: &TestServer,
        sid: &str,
        last_event_id: Option<&str>,
    ) -> reqwest::Response {
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
        request.send().await.unwrap()
    }

    async fn start(server: &TestServer, sid: &str, last_event_id: Option<&str>) -> GetStream {
        let response = GetStream::open(server, sid, last_event_id).await;
        assert_eq!(response.status(), 200);
        GetStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's id and data (data empty for a priming event).
    async fn event(&mut self) -> (Option<String>, String) {
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
                return (id, data.unwrap_or_default());
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream is still open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next message and its event id.
    async fn message(&mut self) -> (String, Value) {
        loop {
            let (id, data) = self.event().await;
            if !data.is_empty() {
                return (
                    id.expect("messages carry event ids"),
                    serde_json::from_str(&data).unwrap(),
                );
            }
        }
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

#[tokio::test]
async fn messages_raised_on_one_replica_reach_the_get_stream_on_another_and_resume_anywhere() {
    let Some(url) = fresh_postgres_database("mcp_events").await else {
        return;
    };
    let a = replica(&url, |raw| raw.upstreams = vec![stdio("fx")]).await;
    let b = replica(&url, |raw| raw.upstreams = vec![stdio("fx")]).await;
    let sid = a.initialize().await;
    // The subscription is taken by A (A's link subscribes upstream).
    let subscribed = a
        .session_call(
            &sid,
            2,
            "resources/subscribe",
            json!({"uri": "test://watched-resource"}),
        )
        .await;
    assert!(subscribed.get("result").is_some(), "{subscribed}");
    // The GET stream is on B.
    let mut stream = GetStream::start(&b, &sid, None).await;
    let (priming, data) = stream.event().await;
    assert!(
        priming.is_some() && data.is_empty(),
        "a priming event first"
    );
    let touched = call(&a, &sid, 3, "touch_resource", json!({})).await;
    assert!(text_of(&touched).contains("is now at version"), "{touched}");
    let (first, message) = stream.message().await;
    assert_eq!(message["method"], "notifications/resources/updated");
    assert_eq!(message["params"]["uri"], "test://watched-resource");
    // A list change from A's upstream link.
    let announced = call(&a, &sid, 4, "announce_tools", json!({})).await;
    assert_eq!(text_of(&announced), "announced");
    let (second, message) = stream.message().await;
    assert_eq!(message["method"], "notifications/tools/list_changed");
    assert!(second.parse::<i64>().unwrap() > first.parse::<i64>().unwrap());
    // The client loses its stream; a message is raised meanwhile.
    drop(stream);
    let touched = call(&a, &sid, 5, "touch_resource", json!({})).await;
    assert!(text_of(&touched).contains("is now at version"), "{touched}");
    // It reconnects on A with the last id it saw: the missed message comes.
    let mut resumed = GetStream::start(&a, &sid, Some(&second)).await;
    let (third, message) = resumed.message().await;
    assert_eq!(message["method"], "notifications/resources/updated");
    assert!(third.parse::<i64>().unwrap() > second.parse::<i64>().unwrap());
    // And it follows the session from there: B raises the next one.
    let subscribed = b
        .session_call(
            &sid,
            6,
            "resources/subscribe",
            json!({"uri": "test://watched-resource"}),
        )
        .await;
    assert!(subscribed.get("result").is_some(), "{subscribed}");
    let touched = call(&b, &sid, 7, "touch_resource", json!({})).await;
    assert!(text_of(&touched).contains("is now at version"), "{touched}");
    let (fourth, message) = resumed.message().await;
    assert_eq!(message["method"], "notifications/resources/updated");
    assert!(fourth.parse::<i64>().unwrap() > third.parse::<i64>().unwrap());
    // A DELETE on B ends the stream on A.
    let deleted = b
        .client
        .delete(b.url("/mcp"))
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match resumed.response.chunk().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the GET stream closes when the session ends");
}

#[tokio::test]
async fn a_foreign_session_id_cannot_read_or_resume_anothers_messages() {
    let Some(url) = fresh_postgres_database("mcp_events").await else {
        return;
    };
    let idp = FakeIdp::start().await;
    let issuer = idp.issuer.clone();
    let resource = |raw: &mut RawConfig| {
        raw.auth.mode = Some("resource".into());
        raw.auth.resource = Some(RawResourceAuth {
            issuer: Some(issuer.clone()),
            ..RawResourceAuth::default()
        });
    };
    let a = replica(&url, resource).await;
    let b = replica(&url, resource).await;
    idp.set_resource("http://127.0.0.1:1/mcp");
    let scopes = "calc notes:read notes:write docs:read";
    let (alice, bob) = (idp.token("alice", scopes), idp.token("bob", scopes));
    a.set_token(&alice);
    let alices = a.initialize().await;
    b.set_token(&bob);
    let bobs = b.initialize().await;
    let store = Store::connect(&url, 2).await.unwrap();
    let now = chrono_now();
    let seen = store
        .append_mcp_event(&alices, &updated(6), "it", None, now)
        .await
        .unwrap();
    let secret = store
        .append_mcp_event(&alices, &updated(7), "it", None, now)
        .await
        .unwrap();
    // Bob with Alice's session id: 404 on either replica, nothing replayed.
    for server in [&a, &b] {
        server.set_token(&bob);
        let refused = GetStream::open(server, &alices, Some(&seen.to_string())).await;
        assert_eq!(refused.status(), 404);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], -32001, "{body}");
    }
    // Bob's own session resumed from before Alice's message reads only his.
    b.set_token(&bob);
    let mut own = GetStream::start(&b, &bobs, Some(&seen.to_string())).await;
    let his = store
        .append_mcp_event(&bobs, &updated(8), "it", None, now)
        .await
        .unwrap();
    let (id, message) = own.message().await;
    assert_eq!(id, his.to_string());
    assert_eq!(message["params"]["uri"], "test://8");
    // Alice herself gets hers on the other replica.
    a.set_token(&alice);
    let mut hers = GetStream::start(&a, &alices, Some(&seen.to_string())).await;
    let (id, message) = hers.message().await;
    assert_eq!(id, secret.to_string());
    assert_eq!(message["params"]["uri"], "test://7");
}

/// The wall clock in seconds (the replicas run on it).
fn chrono_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

#[tokio::test]
async fn on_sqlite_the_get_stream_gets_resource_updates_and_resumes_after_a_reconnect() {
    let server = TestServer::start_with(|raw| raw.upstreams = vec![stdio("fx")]).await;
    let sid = server.initialize().await;
    let subscribed = server
        .session_call(
            &sid,
            2,
            "resources/subscribe",
            json!({"uri": "test://watched-resource"}),
        )
        .await;
    assert!(subscribed.get("result").is_some(), "{subscribed}");
    let mut stream = GetStream::start(&server, &sid, None).await;
    call(&server, &sid, 3, "touch_resource", json!({})).await;
    let (first, message) = stream.message().await;
    assert_eq!(message["method"], "notifications/resources/updated");
    drop(stream);
    call(&server, &sid, 4, "announce_tools", json!({})).await;
    let mut resumed = GetStream::start(&server, &sid, Some(&first)).await;
    let (second, message) = resumed.message().await;
    assert_eq!(message["method"], "notifications/tools/list_changed");
    assert!(second.parse::<i64>().unwrap() > first.parse::<i64>().unwrap());
}

#[tokio::test]
async fn only_the_newest_get_stream_of_a_session_delivers_across_replicas() {
    let Some(url) = fresh_postgres_database("mcp_events").await else {
        return;
    };
    let a = replica(&url, |raw| raw.upstreams = vec![stdio("fx")]).await;
    let b = replica(&url, |raw| raw.upstreams = vec![stdio("fx")]).await;
    let sid = a.initialize().await;
    let subscribed = a
        .session_call(
            &sid,
            2,
            "resources/subscribe",
            json!({"uri": "test://watched-resource"}),
        )
        .await;
    assert!(subscribed.get("result").is_some(), "{subscribed}");
    let mut older = GetStream::start(&b, &sid, None).await;
    older.event().await; // priming: B has claimed the session
    let mut newer = GetStream::start(&a, &sid, None).await;
    newer.event().await;
    call(&a, &sid, 3, "touch_resource", json!({})).await;
    let (_, message) = newer.message().await;
    assert_eq!(message["method"], "notifications/resources/updated");
    // Ending the session ends both; the older one delivered nothing.
    let deleted = a
        .client
        .delete(a.url("/mcp"))
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = older.buffer.clone();
        while let Ok(Some(chunk)) = older.response.chunk().await {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
        rest
    })
    .await
    .expect("the older stream ends with the session");
    assert!(
        !rest.lines().any(|l| l.starts_with("data:") && l.len() > 6),
        "the older stream delivered: {rest}"
    );
}

#[tokio::test]
async fn a_message_raised_before_the_get_stream_opens_is_sent_when_it_opens() {
    let server = TestServer::start_with(|raw| raw.upstreams = vec![stdio("fx")]).await;
    let sid = server.initialize().await;
    let subscribed = server
        .session_call(
            &sid,
            2,
            "resources/subscribe",
            json!({"uri": "test://watched-resource"}),
        )
        .await;
    assert!(subscribed.get("result").is_some(), "{subscribed}");
    // Raised while the client has no GET stream yet (rmcp's own channel kept
    // such messages for the first stream; so do we).
    call(&server, &sid, 3, "touch_resource", json!({})).await;
    let mut stream = GetStream::start(&server, &sid, None).await;
    let (first, message) = stream.message().await;
    assert_eq!(message["method"], "notifications/resources/updated");
    // Sent once: a second fresh stream does not get it again.
    drop(stream);
    let mut again = GetStream::start(&server, &sid, None).await;
    call(&server, &sid, 4, "announce_tools", json!({})).await;
    let (second, message) = again.message().await;
    assert_eq!(message["method"], "notifications/tools/list_changed");
    assert!(second.parse::<i64>().unwrap() > first.parse::<i64>().unwrap());
}
