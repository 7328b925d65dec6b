//! The auth funnel: every authorization attempt traced through its steps
//! (request, sign-in, consent, upstream callback, code redeemed, first MCP
//! call, refreshes), each with the [`reasons::Reason`] it stopped for.
//!
//! [`Funnel::record`] never blocks and never fails a request: it counts the
//! step in `mcpgate_auth_funnel_total{client,step,reason}` and hands the row
//! to a writer task, which gathers rows for a quarter second and stores them
//! in one INSERT. A full queue drops the row
//! (`mcpgate_auth_funnel_dropped_total`). `reasons` is the one
//! catalogue of reason codes; `errors_page` serves it at `/errors`.

pub mod reasons;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use prometheus_client::metrics::{counter::Counter, family::Family};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{
    clock::SharedClock,
    store::{FunnelRow, GRANT_ATTEMPT_PREFIX, NewFunnelRow, Store, USER_ATTEMPT_PREFIX},
    telemetry::metrics::{FunnelLabels, Metrics},
};
pub use reasons::{Reason, StopReason};

/// A step of an authorization attempt. [`Step::as_str`] is the stored and
/// labelled name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The authorization server metadata was read (anonymous: counted only).
    Metadata,
    /// `POST /register`.
    Registered,
    /// A client id that is an https URL: its metadata document was fetched
    /// and accepted (or not), at `/authorize`.
    CimdResolved,
    /// `GET /authorize`: the request was accepted (or refused).
    Authorize,
    /// The password sign-in (local mode).
    SignIn,
    /// The consent page's answer (or a remembered consent).
    Consent,
    /// Proxy mode: the identity provider sent the browser back.
    UpstreamCallback,
    /// `POST /token` with the code.
    CodeRedeemed,
    /// The first `/mcp` request with a token (once per token across
    /// replicas), or a refused one.
    McpCall,
    /// `POST /token` with a refresh token.
    Refresh,
    /// `grant_type=client_credentials`: a machine client's whole attempt.
    ClientCredentials,
    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an
    /// ID-JAG (enterprise-managed authorization): the exchange of an
    /// identity assertion for an access token, a whole attempt.
    IdentityAssertion,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Metadata => "metadata",
            Step::Registered => "registered",
            Step::CimdResolved => "cimd_resolved",
            Step::Authorize => "authorize",
            Step::SignIn => "sign_in",
            Step::Consent => "consent",
            Step::UpstreamCallback => "upstream_callback",
            Step::CodeRedeemed => "code_redeemed",
            Step::McpCall => "mcp_call",
            Step::Refresh => "refresh",
            Step::ClientCredentials => "client_credentials",
            Step::IdentityAssertion => "identity_assertion",
        }
    }
}

/// What joins an event to its attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptKey {
    /// Steps up to the code's redemption: the client and its PKCE challenge
    /// (in the authorization request, the code and the token request alike).
    Challenge(String),
    /// A refresh: the grant (refresh family), joined to the redemption that made it.
    Grant,
    /// An MCP call: joined to the user's latest redeemed attempt for the client.
    User,
    /// Nothing to join it to (a refused request without a challenge).
    Alone,
}

/// One step as the domain reports it.
#[derive(Debug, Clone)]
pub struct FunnelEvent {
    pub step: Step,
    pub client_id: String,
    pub user_id: Option<String>,
    pub key: AttemptKey,
    /// The grant (refresh family id) the step created or used.
    pub grant: Option<String>,
    /// `None`: the step passed.
    pub reason: Option<StopReason>,
    /// The client is one this server knows (registered, configured or a
    /// resolved document): only those get their own metric label and a row.
    pub known_client: bool,
}

impl FunnelEvent {
    pub fn new(step: Step, client_id: &str) -> FunnelEvent {
        FunnelEvent {
            step,
            client_id: client_id.to_owned(),
            user_id: None,
            key: AttemptKey::Alone,
            grant: None,
            reason: None,
            known_client: true,
        }
    }

    pub fn challenge(mut self, code_challenge: &str) -> FunnelEvent {
        self.key = AttemptKey::Challenge(code_challenge.to_owned());
        self
    }

    pub fn user(mut self, user_id: &str) -> FunnelEvent {
        self.user_id = Some(user_id.to_owned());
        self
    }

    pub fn grant(mut self, family_id: &str) -> FunnelEvent {
        self.grant = Some(family_id.to_owned());
        self
    }

    pub fn keyed(mut self, key: AttemptKey) -> FunnelEvent {
        self.key = key;
        self
    }

    pub fn stopped(mut self, reason: impl Into<StopReason>) -> FunnelEvent {
        self.reason = Some(reason.into());
        self
    }

    pub fn unknown_client(mut self) -> FunnelEvent {
        self.known_client = false;
        self
    }
}

/// Distinct client labels before the rest are `other`.
const MAX_CLIENT_LABELS: usize = 100;
/// Rows queued for the writer before new ones are dropped.
const QUEUE: usize = 4096;
/// The most rows written in one transaction.
const BATCH: usize = crate::store::FUNNEL_INSERT_MAX_ROWS;

enum Command {
    Row(Queued),
    Flush(oneshot::Sender<()>),
}

/// A row for the writer. A once-only row (a token's first call) is counted
/// and audited by the writer, and only if the store took it: the replicas
/// that find it stored already count nothing.
struct Queued {
    row: FunnelRow,
    /// Boxed: most rows have none, and the queue holds thousands.
    once: Option<Box<Once>>,
}

struct Once {
    key: String,
    labels: FunnelLabels,
}

/// The recorder; cheap to clone.
#[derive(Clone)]
pub struct Funnel {
    inner: Arc<Inner>,
}

struct Inner {
    sender: Option<mpsc::Sender<Command>>,
    /// Wakes a lingering writer: for a [`Funnel::flush`], or once a batch's
    /// worth of rows is queued (a single row does not).
    wake_writer: Arc<Notify>,
    counter: Family<FunnelLabels, Counter>,
    dropped: Counter,
    labels: Mutex<HashSet<String>>,
    /// Tokens this replica has seen at `/mcp`: only a token's first call is
    /// a step, and only the first replica's row of it is stored and counted.
    seen_tokens: moka::sync::Cache<String, ()>,
    clock: SharedClock,
}

impl Funnel {
    /// A recorder storing into `store` (a writer task is spawned).
    pub fn start(store: Store, metrics: &Metrics, clock: SharedClock) -> Funnel {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let wake_writer = Arc::new(Notify::new());
        tokio::spawn(write_rows(
            store,
            receiver,
            wake_writer.clone(),
            metrics.auth_funnel.clone(),
        ));
        Funnel::with_sender(Some(sender), wake_writer, metrics, clock)
    }

    /// A recorder that only counts (no store): unit tests.
    pub fn counting_only(metrics: &Metrics, clock: SharedClock) -> Funnel {
        Funnel::with_sender(None, Arc::default(), metrics, clock)
    }

    /// A recorder that records nothing anyone reads: the default of parts
    /// built without one (tests of the domain alone).
    pub fn off() -> Funnel {
        Funnel::build(
            None,
            Arc::default(),
            Family::default(),
            Counter::default(),
            crate::clock::system(),
        )
    }

    fn with_sender(
        sender: Option<mpsc::Sender<Command>>,
        wake_writer: Arc<Notify>,
        metrics: &Metrics,
        clock: SharedClock,
    ) -> Funnel {
        Funnel::build(
            sender,
            wake_writer,
            metrics.auth_funnel.clone(),
            metrics.auth_funnel_dropped.clone(),
            clock,
        )
    }

    fn build(
        sender: Option<mpsc::Sender<Command>>,
        wake_writer: Arc<Notify>,
        counter: Family<FunnelLabels, Counter>,
        dropped: Counter,
        clock: SharedClock,
    ) -> Funnel {
        Funnel {
            inner: Arc::new(Inner {
                sender,
                wake_writer,
                counter,
                dropped,
                labels: Mutex::new(HashSet::new()),
                seen_tokens: moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(std::time::Duration::from_secs(86_400))
                    .build(),
                clock,
            }),
        }
    }

    /// A token's first `/mcp` call (`event`, a passed [`Step::McpCall`]):
    /// one row and one count per token across replicas, with no store round
    /// trip on the request. This replica drops the token's later calls (an
    /// in-memory set of token hashes); the writer stores the row under the
    /// token's hash ON CONFLICT DO NOTHING and counts and audits it only if
    /// it was stored, so another replica's first call of the same token
    /// adds nothing.
    pub fn record_first_call(&self, token: &str, event: FunnelEvent) {
        let key = sha256_b64(token);
        if self.inner.seen_tokens.contains_key(&key) {
            return;
        }
        self.inner.seen_tokens.insert(key.clone(), ());
        let Some(sender) = self.inner.sender.as_ref().filter(|_| event.known_client) else {
            // Nothing stored: nothing to agree on with other replicas.
            self.record(event);
            return;
        };
        let labels = self.labels(&event);
        let row = self.row(event, None);
        let queued = Queued {
            row,
            once: Some(Box::new(Once { key, labels })),
        };
        self.queue(sender, queued);
    }

    /// Count the step and queue its row; never waits, never fails.
    pub fn record(&self, event: FunnelEvent) {
        let reason = event.reason.as_ref().map(StopReason::code);
        audit(
            event.step.as_str(),
            event.known_client.then_some(event.client_id.as_str()),
            event.user_id.as_deref(),
            reason.as_deref(),
        );
        self.inner.counter.get_or_create(&self.labels(&event)).inc();
        let Some(sender) = &self.inner.sender else {
            return;
        };
        if !event.known_client {
            return;
        }
        let row = self.row(event, reason);
        self.queue(sender, Queued { row, once: None });
    }

    /// Queue a row for the writer, which lingers asleep: once a batch's
    /// worth is waiting it is woken to write it, or a fast stream of rows
    /// would fill the queue during the linger and lose some.
    fn queue(&self, sender: &mpsc::Sender<Command>, queued: Queued) {
        if sender.try_send(Command::Row(queued)).is_err() {
            self.inner.dropped.inc();
        } else if sender.max_capacity() - sender.capacity() >= BATCH {
            self.inner.wake_writer.notify_one();
        }
    }

    fn labels(&self, event: &FunnelEvent) -> FunnelLabels {
        FunnelLabels {
            client: self.client_label(event),
            step: event.step.as_str().to_owned(),
            // The metric keeps the catalogue code only: an IdP's own
            // code would make the label set unbounded.
            reason: event
                .reason
                .as_ref()
                .map_or("ok", |r| r.reason.code())
                .to_owned(),
        }
    }

    /// Wait until every row queued before this call is stored (tests, and
    /// shutdown).
    pub async fn flush(&self) {
        let Some(sender) = &self.inner.sender else {
            return;
        };
        let (done, written) = oneshot::channel();
        if sender.send(Command::Flush(done)).await.is_ok() {
            self.inner.wake_writer.notify_one();
            let _ = written.await;
        }
    }

    fn client_label(&self, event: &FunnelEvent) -> String {
        const OTHER: &str = "other";
        if !event.known_client || event.client_id.len() > 200 {
            return OTHER.to_owned();
        }
        let Ok(mut labels) = self.inner.labels.lock() else {
            return OTHER.to_owned();
        };
        if labels.contains(&event.client_id) {
            return event.client_id.clone();
        }
        if labels.len() < MAX_CLIENT_LABELS {
            labels.insert(event.client_id.clone());
            return event.client_id.clone();
        }
        OTHER.to_owned()
    }

    fn row(&self, event: FunnelEvent, reason: Option<String>) -> FunnelRow {
        let grant_key = event.grant.as_deref().map(short_hash);
        let attempt = match &event.key {
            AttemptKey::Challenge(challenge) => {
                short_hash(&format!("{}|{challenge}", event.client_id))
            }
            AttemptKey::Grant => format!(
                "{GRANT_ATTEMPT_PREFIX}{}",
                grant_key.clone().unwrap_or_default()
            ),
            AttemptKey::User => format!(
                "{USER_ATTEMPT_PREFIX}{}",
                short_hash(&format!(
                    "{}|{}",
                    event.client_id,
                    event.user_id.as_deref().unwrap_or_default()
                ))
            ),
            AttemptKey::Alone => format!("x:{}", uuid::Uuid::new_v4().simple()),
        };
        FunnelRow {
            at: self.inner.clock.now(),
            attempt,
            client_id: event.client_id,
            user_id: event.user_id,
            step: event.step.as_str().to_owned(),
            reason,
            grant_key,
        }
    }
}

/// The audit line of a step: the same reason as the funnel row and the
/// error body. A client id nobody registered (`None`) is not echoed.
fn audit(step: &str, client: Option<&str>, user: Option<&str>, reason: Option<&str>) {
    tracing::info!(
        target: "audit",
        step,
        client = client.unwrap_or("-"),
        user = user.unwrap_or("-"),
        outcome = if reason.is_some() { "stopped" } else { "ok" },
        reason = reason.unwrap_or("-"),
        "auth step"
    );
}

/// 16 characters of SHA-256: a join key that reveals nothing it was made of
/// (a PKCE challenge, a family id).
fn short_hash(text: &str) -> String {
    sha256_b64(text).chars().take(16).collect()
}

fn sha256_b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        text.as_bytes(),
    ))
}

/// How long the writer lets rows gather after the first one before it
/// writes them: at low load one INSERT per this interval instead of one per
/// step, so a stream of refreshes does not add a write per refresh (on
/// SQLite, where writes take turns, that would slow the refreshes down).
const LINGER: std::time::Duration = std::time::Duration::from_millis(250);

/// The writer: gathers rows for [`LINGER`] (or until [`BATCH`] rows or a
/// flush), stores them in one INSERT, and waits for the next. A failed
/// write is logged and its rows dropped; requests never wait on it.
///
/// While it lingers it sleeps and then takes what was queued, rather than
/// waiting on the queue: a row queued then wakes nobody (under a stream of
/// grants that would be a task wake-up, often another thread's, per grant).
/// A flush wakes it ([`Funnel::flush`]), and so does a batch's worth of
/// queued rows ([`Funnel::queue`]), so a fast stream is written batch after
/// batch.
async fn write_rows(
    store: Store,
    mut receiver: mpsc::Receiver<Command>,
    wake_writer: Arc<Notify>,
    counter: Family<FunnelLabels, Counter>,
) {
    let mut rows = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    let mut open = true;
    while open {
        let Some(first) = receiver.recv().await else {
            break;
        };
        let take = |command: Command,
                    rows: &mut Vec<Queued>,
                    flushes: &mut Vec<oneshot::Sender<()>>| match command {
            Command::Row(row) => rows.push(row),
            Command::Flush(done) => flushes.push(done),
        };
        take(first, &mut rows, &mut flushes);
        let deadline = tokio::time::Instant::now() + LINGER;
        loop {
            while rows.len() < BATCH && flushes.is_empty() {
                match receiver.try_recv() {
                    Ok(command) => take(command, &mut rows, &mut flushes),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if rows.len() >= BATCH
                || !flushes.is_empty()
                || !open
                || tokio::time::Instant::now() >= deadline
            {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = wake_writer.notified() => {}
            }
        }
        let batch: Vec<NewFunnelRow> = rows
            .iter()
            .map(|q| NewFunnelRow {
                row: q.row.clone(),
                once_key: q.once.as_ref().map(|o| o.key.clone()),
            })
            .collect();
        match store.insert_funnel_batch(&batch).await {
            Ok(stored) => {
                for queued in rows.drain(..) {
                    let (Some(once), row) = (queued.once, queued.row) else {
                        continue;
                    };
                    if stored.contains(&once.key) {
                        counter.get_or_create(&once.labels).inc();
                        audit(
                            &row.step,
                            Some(&row.client_id),
                            row.user_id.as_deref(),
                            None,
                        );
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, rows = rows.len(), "auth funnel rows not stored");
            }
        }
        rows.clear();
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// `--since`: `90s`, `15m`, `1h`, `2d` (a bare number is seconds).
pub fn parse_window(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 15m, 1h or 2d"))?;
    let unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?}: use s, m, h or d")),
    };
    Ok(n.saturating_mul(unit))
}

/// `mcpgate funnel` as text: per client, one line per attempt with its step
/// series (a stopped step shows its reason) and its outcome.
pub fn render_text(attempts: &[crate::store::FunnelAttempt]) -> String {
    use std::fmt::Write as _;
    let mut clients: Vec<&str> = attempts.iter().map(|a| a.client_id.as_str()).collect();
    clients.sort_unstable();
    clients.dedup();
    let mut out = String::new();
    if attempts.is_empty() {
        out.push_str("no authorization attempts in this window\n");
    }
    for client in clients {
        let _ = writeln!(out, "client {client}");
        for a in attempts.iter().filter(|a| a.client_id == client) {
            let series: Vec<String> = a
                .steps
                .iter()
                .map(|s| match &s.reason {
                    Some(r) => format!("{}({r})", s.step),
                    None => s.step.clone(),
                })
                .collect();
            let outcome = match &a.stopped {
                Some(r) => format!("stopped: {r}"),
                None => "ok".to_owned(),
            };
            let _ = writeln!(
                out,
                "  {}  {}  {}  {}",
                timestamp(a.started_at),
                a.user_id.as_deref().unwrap_or("-"),
                series.join(" > "),
                outcome
            );
        }
    }
    out
}

fn timestamp(epoch: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(epoch)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| epoch.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_labels_are_capped_and_unknown_clients_are_other() {
        let metrics = Metrics::new();
        let funnel = Funnel::counting_only(&metrics, crate::clock::system());
        for i in 0..(MAX_CLIENT_LABELS + 5) {
            funnel.record(FunnelEvent::new(Step::Authorize, &format!("c{i}")));
        }
        funnel.record(
            FunnelEvent::new(Step::Authorize, "random-garbage")
                .unknown_client()
                .stopped(Reason::UnknownClient),
        );
        funnel.record(
            FunnelEvent::new(Step::UpstreamCallback, "c0")
                .stopped(StopReason::idp("access_denied")),
        );
        let text = metrics.render();
        assert!(
            text.contains(
                r#"mcpgate_auth_funnel_total{client="c0",step="authorize",reason="ok"} 1"#
            )
        );
        assert!(text.contains(
            r#"mcpgate_auth_funnel_total{client="other",step="authorize",reason="ok"} 5"#
        ));
        assert!(text.contains(
            r#"mcpgate_auth_funnel_total{client="other",step="authorize",reason="unknown_client"} 1"#
        ));
        assert!(text.contains(
            r#"mcpgate_auth_funnel_total{client="c0",step="upstream_callback",reason="idp_error"} 1"#
        ));
    }

    #[test]
    fn windows_parse_with_units() {
        assert_eq!(parse_window("90"), Ok(90));
        assert_eq!(parse_window("15m"), Ok(900));
        assert_eq!(parse_window("1h"), Ok(3600));
        assert_eq!(parse_window("2d"), Ok(172_800));
        assert!(parse_window("1w").is_err());
        assert!(parse_window("h").is_err());
    }

    #[test]
    fn text_shows_each_attempts_series_and_where_it_stopped() {
        let rows = vec![
            crate::store::FunnelRow {
                at: 0,
                attempt: "a".into(),
                client_id: "c".into(),
                user_id: None,
                step: "authorize".into(),
                reason: None,
                grant_key: None,
            },
            crate::store::FunnelRow {
                at: 1,
                attempt: "a".into(),
                client_id: "c".into(),
                user_id: None,
                step: "consent".into(),
                reason: Some("consent_denied".into()),
                grant_key: None,
            },
        ];
        let text = render_text(&crate::store::join_attempts(rows, 10));
        assert!(text.contains("client c\n"), "{text}");
        assert!(
            text.contains("authorize > consent(consent_denied)  stopped: consent_denied"),
            "{text}"
        );
        assert!(text.contains("1970-01-01T00:00:00Z"), "{text}");
    }

    fn first_call(client: &str) -> FunnelEvent {
        FunnelEvent::new(Step::McpCall, client)
            .keyed(AttemptKey::User)
            .user("u")
    }

    fn count(metrics: &Metrics, client: &str) -> u64 {
        metrics
            .auth_funnel
            .get_or_create(&FunnelLabels {
                client: client.to_owned(),
                step: "mcp_call".to_owned(),
                reason: "ok".to_owned(),
            })
            .get()
    }

    #[test]
    fn without_a_store_a_tokens_first_call_on_this_replica_is_counted() {
        let metrics = Metrics::new();
        let funnel = Funnel::counting_only(&metrics, crate::clock::system());
        funnel.record_first_call("t1", first_call("c"));
        funnel.record_first_call("t1", first_call("c"));
        funnel.record_first_call("t2", first_call("c"));
        assert_eq!(count(&metrics, "c"), 2);
    }

    /// Two replicas (own recorder, own metrics, own store handle) on one
    /// store: a token's first call on both is one row and one count.
    #[tokio::test]
    async fn a_tokens_first_call_is_stored_and_counted_once_across_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("f.db").display());
        let (store_a, store_b) = (
            Store::connect(&url, 2).await.unwrap(),
            Store::connect(&url, 2).await.unwrap(),
        );
        let (metrics_a, metrics_b) = (Metrics::new(), Metrics::new());
        let clock = crate::clock::ManualClock::new();
        let a = Funnel::start(store_a.clone(), &metrics_a, clock.clone());
        let b = Funnel::start(store_b, &metrics_b, clock.clone());
        a.record_first_call("t1", first_call("c"));
        a.record_first_call("t1", first_call("c"));
        a.flush().await;
        b.record_first_call("t1", first_call("c"));
        b.record_first_call("t2", first_call("c"));
        b.flush().await;
        assert_eq!(count(&metrics_a, "c"), 1);
        assert_eq!(count(&metrics_b, "c"), 1, "only t2 is new on b");
        let attempts = store_a.funnel_attempts(Some("c"), 0, 10).await.unwrap();
        let calls: usize = attempts.iter().map(|a| a.steps.len()).sum();
        assert_eq!(calls, 2, "{attempts:?}");
    }

    /// Rows are written without a flush once the writer's linger is over,
    /// a flush cuts the linger short, and a stream that queues more than
    /// the queue holds within one linger loses nothing: a batch's worth
    /// wakes the writer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_lingers_without_losing_rows_and_a_flush_cuts_it_short() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("f.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let metrics = Metrics::new();
        let funnel = Funnel::start(store.clone(), &metrics, crate::clock::system());
        let stored = |client: &'static str| {
            let store = store.clone();
            async move {
                store
                    .funnel_attempts(Some(client), 0, 20_000)
                    .await
                    .unwrap()
                    .iter()
                    .map(|a| a.steps.len())
                    .sum::<usize>()
            }
        };
        funnel.record(FunnelEvent::new(Step::Registered, "alone"));
        let waited = std::time::Instant::now();
        while stored("alone").await == 0 {
            assert!(waited.elapsed() < LINGER * 20, "the row was never written");
            tokio::time::sleep(LINGER / 5).await;
        }
        // One row starts a linger; the flush must not wait for its end.
        funnel.record(FunnelEvent::new(Step::Registered, "flushed"));
        tokio::time::sleep(LINGER / 10).await;
        let flushed = std::time::Instant::now();
        funnel.flush().await;
        assert!(flushed.elapsed() < LINGER / 2, "{:?}", flushed.elapsed());
        assert_eq!(stored("flushed").await, 1);
        // More rows than the queue holds, all within one linger.
        let rows = QUEUE + BATCH * 4;
        for i in 0..rows {
            funnel.record(FunnelEvent::new(Step::Registered, "stream"));
            if i % BATCH == BATCH - 1 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        funnel.flush().await;
        assert_eq!(metrics.auth_funnel_dropped.get(), 0);
        assert_eq!(stored("stream").await, rows);
    }

    #[tokio::test]
    async fn rows_reach_the_store_and_join_into_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("f.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let metrics = Metrics::new();
        use crate::clock::Clock;
        let clock = crate::clock::ManualClock::new();
        let t0 = clock.now();
        let funnel = Funnel::start(store.clone(), &metrics, clock.clone());
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        funnel.record(FunnelEvent::new(Step::Authorize, "c").challenge(challenge));
        funnel.record(
            FunnelEvent::new(Step::SignIn, "c")
                .challenge(challenge)
                .user("u"),
        );
        funnel.record(
            FunnelEvent::new(Step::CodeRedeemed, "c")
                .challenge(challenge)
                .user("u")
                .grant("fam"),
        );
        clock.advance(std::time::Duration::from_secs(10));
        funnel.record(
            FunnelEvent::new(Step::McpCall, "c")
                .keyed(AttemptKey::User)
                .user("u"),
        );
        funnel.record(
            FunnelEvent::new(Step::Refresh, "c")
                .keyed(AttemptKey::Grant)
                .grant("fam")
                .stopped(Reason::RefreshReused),
        );
        funnel.flush().await;
        let attempts = store.funnel_attempts(Some("c"), 0, 10).await.unwrap();
        assert_eq!(attempts.len(), 1, "{attempts:?}");
        let steps: Vec<_> = attempts[0]
            .steps
            .iter()
            .map(|s| (s.step.as_str(), s.reason.as_deref()))
            .collect();
        assert_eq!(
            steps,
            [
                ("authorize", None),
                ("sign_in", None),
                ("code_redeemed", None),
                ("mcp_call", None),
                ("refresh", Some("refresh_reused")),
            ]
        );
        assert_eq!(attempts[0].stopped.as_deref(), Some("refresh_reused"));
        assert_eq!(attempts[0].steps[3].at, t0 + 10);
        // The stored key reveals neither the challenge nor the family id.
        assert!(!attempts[0].attempt.contains("E9Mel"));
        assert!(
            store
                .funnel_attempts(Some("c"), t0 + 11, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .sweep_auth_funnel(t0 + 10 + crate::store::FUNNEL_TTL_SECS)
                .await
                .unwrap(),
            5
        );
    }
}
