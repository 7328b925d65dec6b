//! One supervised connection to an upstream MCP server: started, watched,
//! restarted with backoff after it drops, stopped on request. What the
//! upstream sends back is relayed by [`super::relay`].

use std::{
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use process_wrap::tokio::{CommandWrap, KillOnDrop, ProcessGroup};
use rmcp::{
    RoleClient, ServiceError, ServiceExt,
    model::{CancelledNotification, CancelledNotificationParam, ClientRequest, ServerResult},
    service::{Peer, PeerRequestOptions},
    transport::{
        StreamableHttpClientTransport, TokioChildProcess, sink_stream::SinkStreamTransport,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader},
    sync::{Semaphore, watch},
};
use tokio_util::sync::CancellationToken;

use super::{
    GatewayError,
    http_call::{HttpCallError, HttpCaller},
    legacy_sse::LegacySseError,
    locks::lock,
    outbound::{GatewayHttpClient, HeaderSources, SessionRoute},
    relay::{CountingTransport, Origin, Relay, RelayClient},
    settings::{Transport, UpstreamConfig},
};

/// Why a link could not connect to its upstream.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("could not create a working directory for it: {0}")]
    Workdir(std::io::Error),
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("initialize failed: {0}")]
    Initialize(Box<rmcp::service::ClientInitializeError>),
    #[error("initialize failed over HTTP+SSE: {0}")]
    InitializeLegacy(Box<rmcp::service::ClientInitializeError>),
    #[error("initialize failed: {streamable}; as legacy HTTP+SSE: {legacy}")]
    NeitherTransport {
        streamable: Box<rmcp::service::ClientInitializeError>,
        legacy: LegacySseError,
    },
    #[error(transparent)]
    Legacy(#[from] LegacySseError),
}

/// A link coming up or going down, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkChange {
    /// Up for the first time.
    Connected,
    /// Up again after it went down or could not start.
    Reconnected,
    /// A link that was up went down (or was stopped).
    Disconnected,
}

/// Told of every [`LinkChange`] of the upstream it names.
pub type StateHook = Arc<dyn Fn(&str, LinkChange) + Send + Sync>;

/// The hook that keeps `mcpgate_upstream_up` and `_restarts_total` current.
pub fn state_hook(metrics: Arc<crate::telemetry::metrics::Metrics>) -> StateHook {
    Arc::new(move |name: &str, change: LinkChange| {
        let labels = crate::telemetry::metrics::UpstreamLabels {
            upstream: name.to_owned(),
        };
        let gauge = metrics.upstream_up.get_or_create(&labels);
        match change {
            LinkChange::Connected => {
                gauge.inc();
            }
            LinkChange::Reconnected => {
                gauge.inc();
                metrics.upstream_restarts.get_or_create(&labels).inc();
            }
            LinkChange::Disconnected => {
                gauge.dec();
            }
        }
    })
}

/// A link's state without its connection, for health reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    Starting,
    Up,
    Down,
    Stopped,
}

impl LinkStatus {
    pub fn label(self) -> &'static str {
        match self {
            LinkStatus::Starting => "starting",
            LinkStatus::Up => "up",
            LinkStatus::Down => "down",
            LinkStatus::Stopped => "stopped",
        }
    }
}

#[derive(Clone)]
pub enum LinkState {
    Starting,
    Up(Peer<RoleClient>),
    Down(String),
    Stopped,
}

impl LinkState {
    pub fn status(&self) -> LinkStatus {
        match self {
            LinkState::Starting => LinkStatus::Starting,
            LinkState::Up(_) => LinkStatus::Up,
            LinkState::Down(_) => LinkStatus::Down,
            LinkState::Stopped => LinkStatus::Stopped,
        }
    }
}

pub struct Link {
    pub upstream: String,
    config: Arc<UpstreamConfig>,
    state: watch::Sender<LinkState>,
    relay: Arc<Relay>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
    last_used: Mutex<Instant>,
    pub restarts: AtomicU64,
    /// The stdio child's process group while it runs.
    process_group: Mutex<Option<i32>>,
    /// Ends the current connection, for failures only a call notices.
    connection: Mutex<Option<rmcp::service::RunningServiceCancellationToken>>,
    /// Set once a URL upstream turned out to speak only HTTP+SSE.
    legacy_sse: std::sync::atomic::AtomicBool,
    /// The stdio child's own empty working directory when none is configured;
    /// removed when the link ends.
    workdir: Mutex<Option<std::path::PathBuf>>,
    /// Posts calls itself on a Streamable HTTP connection's session
    /// (`http_call.rs`); none on stdio and legacy HTTP+SSE.
    http_call: Mutex<Option<Arc<HttpCaller>>>,
}

/// Longest wait for a starting or restarting upstream before a call fails.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
const INITIALIZE_TIMEOUT: Duration = Duration::from_secs(30);
/// stderr lines logged per second per upstream; the rest are counted.
const STDERR_LINES_PER_SEC: u32 = 50;
const STDERR_LINE_MAX: usize = 4096;

impl Link {
    pub fn start(
        config: Arc<UpstreamConfig>,
        relay: Arc<Relay>,
        headers: HeaderSources,
        http: reqwest::Client,
        on_change: StateHook,
    ) -> Arc<Link> {
        let (state, _) = watch::channel(LinkState::Starting);
        let link = Arc::new(Link {
            upstream: config.name.clone(),
            permits: Arc::new(Semaphore::new(config.max_concurrent_calls)),
            config,
            state,
            relay,
            stop: CancellationToken::new(),
            last_used: Mutex::new(Instant::now()),
            restarts: AtomicU64::new(0),
            process_group: Mutex::new(None),
            connection: Mutex::new(None),
            legacy_sse: std::sync::atomic::AtomicBool::new(false),
            workdir: Mutex::new(None),
            http_call: Mutex::new(None),
        });
        let supervised = link.clone();
        let headers = Arc::new(headers);
        tokio::spawn(async move { supervised.supervise(headers, http, on_change).await });
        link
    }

    pub fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    pub fn stop(&self) {
        self.stop.cancel();
        self.kill_process_group();
    }

    /// SIGKILL to the child's whole group, now: dropping rmcp's transport
    /// kills from a spawned task, which a stopping runtime may never run,
    /// and a crashed child's own children (npx → node) would outlive it.
    pub fn kill_process_group(&self) {
        let group = lock(&self.process_group).take();
        if let Some(pgid) = group {
            use nix::{sys::signal, unistd::Pid};
            match signal::killpg(Pid::from_raw(pgid), signal::Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    tracing::warn!(upstream = %self.upstream, error = %e, "could not kill the upstream's process group")
                }
            }
        }
    }

    pub fn idle_for(&self) -> Duration {
        lock(&self.last_used).elapsed()
    }

    pub fn busy(&self) -> bool {
        self.relay.busy()
    }

    async fn supervise(
        self: Arc<Self>,
        headers: Arc<HeaderSources>,
        http: reqwest::Client,
        on_change: StateHook,
    ) {
        let mut backoff = Duration::from_millis(250);
        let mut first = true;
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            self.state.send_replace(LinkState::Starting);
            let connected = tokio::select! {
                _ = self.stop.cancelled() => break,
                c = tokio::time::timeout(INITIALIZE_TIMEOUT, self.connect(&headers, &http)) => c,
            };
            match connected {
                Ok(Ok(running)) => {
                    let up_since = Instant::now();
                    self.state
                        .send_replace(LinkState::Up(running.peer().clone()));
                    if !first {
                        self.restarts.fetch_add(1, Ordering::Relaxed);
                    }
                    let change = if first {
                        LinkChange::Connected
                    } else {
                        LinkChange::Reconnected
                    };
                    on_change(&self.upstream, change);
                    tracing::info!(upstream = %self.upstream, restarted = !first, "upstream connected");
                    let cancel = running.cancellation_token();
                    *lock(&self.connection) = Some(running.cancellation_token());
                    let quit = tokio::select! {
                        _ = self.stop.cancelled() => {
                            cancel.cancel();
                            self.kill_process_group();
                            on_change(&self.upstream, LinkChange::Disconnected);
                            break;
                        }
                        quit = running.waiting() => quit,
                    };
                    self.kill_process_group();
                    let reason = match quit {
                        Ok(q) => format!("connection ended ({q:?})"),
                        Err(e) => format!("connection task failed: {e}"),
                    };
                    tracing::warn!(upstream = %self.upstream, reason = %reason, "upstream disconnected; restarting");
                    self.state.send_replace(LinkState::Down(reason));
                    on_change(&self.upstream, LinkChange::Disconnected);
                    if up_since.elapsed() > Duration::from_secs(60) {
                        backoff = Duration::from_millis(250);
                    }
                }
                other => {
                    let reason = match other {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!(
                            "no answer to initialize within {} s",
                            INITIALIZE_TIMEOUT.as_secs()
                        ),
                    };
                    tracing::warn!(upstream = %self.upstream, reason = %reason, retry_in_ms = backoff.as_millis() as u64, "upstream could not be started");
                    self.state.send_replace(LinkState::Down(reason));
                }
            }
            first = false;
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        self.state.send_replace(LinkState::Stopped);
        self.remove_workdir();
    }

    /// A fresh, empty, private directory for the child to start in: never
    /// mcpgate's own working directory, where `./data` (the store and the
    /// encryption key) usually is. Kept across restarts of this link.
    fn workdir(&self) -> Result<std::path::PathBuf, ConnectError> {
        use std::os::unix::fs::DirBuilderExt;
        let mut current = lock(&self.workdir);
        if let Some(dir) = current.as_ref()
            && dir.is_dir()
        {
            return Ok(dir.clone());
        }
        let dir = std::env::temp_dir().join(format!(
            "mcpgate-{}-{}",
            self.upstream,
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(ConnectError::Workdir)?;
        *current = Some(dir.clone());
        Ok(dir)
    }

    fn remove_workdir(&self) {
        let dir = lock(&self.workdir).take();
        if let Some(dir) = dir
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::debug!(upstream = %self.upstream, error = %e, "could not remove the upstream's working directory");
        }
    }

    fn counted<T>(&self, inner: T) -> CountingTransport<T> {
        CountingTransport::new(inner, self.relay.clone())
    }

    async fn connect(
        &self,
        headers: &Arc<HeaderSources>,
        http: &reqwest::Client,
    ) -> Result<rmcp::service::RunningService<RoleClient, RelayClient>, ConnectError> {
        let client = RelayClient::new(self.relay.clone());
        *lock(&self.http_call) = None;
        match &self.config.transport {
            Transport::Stdio {
                program,
                args,
                env,
                cwd,
                ..
            } => {
                let mut command = tokio::process::Command::new(program);
                command.args(args).env_clear().envs(env.iter().cloned());
                let cwd = match cwd {
                    Some(cwd) => cwd.clone(),
                    None => self.workdir()?,
                };
                command.current_dir(cwd);
                let mut wrapped = CommandWrap::from(command);
                // Its own process group: killing it takes npx's and uvx's children along.
                wrapped.wrap(ProcessGroup::leader()).wrap(KillOnDrop);
                let (transport, stderr) = TokioChildProcess::builder(wrapped)
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|source| ConnectError::Spawn {
                        program: program.clone(),
                        source,
                    })?;
                if let Some(pid) = transport.id() {
                    // The leader of its own group: the group id is its pid.
                    *lock(&self.process_group) = i32::try_from(pid).ok();
                }
                if let Some(stderr) = stderr {
                    tokio::spawn(pump_stderr(self.upstream.clone(), stderr));
                }
                client
                    .serve(self.counted(transport))
                    .await
                    .map_err(|e| ConnectError::Initialize(Box::new(e)))
            }
            Transport::Http { url, .. } => {
                // An upstream found to speak only the legacy transport stays on it.
                if !self.legacy_sse.load(Ordering::Relaxed) {
                    let config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                        .max_concurrent_requests(self.config.max_concurrent_calls);
                    let route = Arc::new(SessionRoute::default());
                    let transport = StreamableHttpClientTransport::with_client(
                        GatewayHttpClient::new(http.clone(), headers.clone(), route.clone()),
                        config,
                    );
                    match client.clone().serve(self.counted(transport)).await {
                        Ok(running) => {
                            *lock(&self.http_call) = Some(Arc::new(HttpCaller::new(
                                url.clone(),
                                http.clone(),
                                headers.clone(),
                                route,
                            )));
                            return Ok(running);
                        }
                        Err(streamable) => {
                            let legacy = super::legacy_sse::connect(url, http, headers).await;
                            let transport = match legacy {
                                Ok((sink, stream)) => {
                                    self.counted(SinkStreamTransport::new(sink, stream))
                                }
                                Err(legacy) => {
                                    return Err(ConnectError::NeitherTransport {
                                        streamable: Box::new(streamable),
                                        legacy,
                                    });
                                }
                            };
                            let running = client
                                .serve(transport)
                                .await
                                .map_err(|e| ConnectError::InitializeLegacy(Box::new(e)))?;
                            tracing::info!(upstream = %self.upstream, "upstream speaks the legacy HTTP+SSE transport; using it");
                            self.legacy_sse.store(true, Ordering::Relaxed);
                            return Ok(running);
                        }
                    }
                }
                let (sink, stream) = super::legacy_sse::connect(url, http, headers).await?;
                let transport = self.counted(SinkStreamTransport::new(sink, stream));
                client
                    .serve(transport)
                    .await
                    .map_err(|e| ConnectError::InitializeLegacy(Box::new(e)))
            }
        }
    }

    /// The connection, waiting a little if it is (re)starting.
    async fn peer(&self) -> Result<Peer<RoleClient>, GatewayError> {
        // The usual case, without a subscription and a timer.
        if let LinkState::Up(peer) = &*self.state.borrow()
            && !peer.is_transport_closed()
        {
            return Ok(peer.clone());
        }
        let mut rx = self.state.subscribe();
        let wait = CONNECT_WAIT.min(self.config.call_timeout);
        let ready = tokio::time::timeout(
            wait,
            rx.wait_for(|s| matches!(s, LinkState::Up(_) | LinkState::Stopped)),
        )
        .await;
        match ready {
            Ok(Ok(state)) => match &*state {
                LinkState::Up(peer) if !peer.is_transport_closed() => Ok(peer.clone()),
                _ => Err(GatewayError::Unavailable {
                    upstream: self.upstream.clone(),
                    reason: "stopped".to_owned(),
                }),
            },
            _ => {
                let reason = match &*self.state.borrow() {
                    LinkState::Down(reason) => reason.clone(),
                    other => other.status().label().to_owned(),
                };
                Err(GatewayError::Unavailable {
                    upstream: self.upstream.clone(),
                    reason,
                })
            }
        }
    }

    /// Send one request upstream on behalf of `origin`, bounded by the call
    /// timeout and the concurrency limit, abandoned when `cancel` fires.
    pub async fn request(
        &self,
        request: ClientRequest,
        origin: Option<Origin>,
        cancel: &CancellationToken,
    ) -> Result<ServerResult, GatewayError> {
        *lock(&self.last_used) = Instant::now();
        let timeout = self.config.call_timeout;
        // A free permit is taken without arming a timer.
        let _permit = match self.permits.try_acquire() {
            Ok(p) => p,
            Err(_) => match tokio::time::timeout(timeout, self.permits.acquire()).await {
                Ok(Ok(p)) => p,
                _ => {
                    return Err(GatewayError::Busy {
                        upstream: self.upstream.clone(),
                    });
                }
            },
        };
        let peer = self.peer().await?;
        let mut request = request;
        let http_call = lock(&self.http_call).clone();
        if let Some(caller) = http_call
            && let Some(session) = caller.session()
        {
            let call = self.relay.begin(origin.clone());
            let posted = caller
                .request(
                    &self.relay,
                    session,
                    &mut request,
                    origin.as_ref(),
                    timeout,
                    cancel,
                )
                .await;
            match posted {
                Ok(result) => {
                    // Log messages rmcp read from the GET stream before this
                    // answer go out first, as on rmcp's own path.
                    self.relay.settle().await;
                    return Ok(result);
                }
                // Nothing ran: rmcp's client re-initializes and sends it again.
                Err(HttpCallError::SessionGone) => drop(call),
                Err(e) => return Err(self.http_failure(e)),
            }
        }
        let call = self.relay.begin(origin);
        let handle = peer
            .send_request_with_option(request, PeerRequestOptions::with_timeout(timeout))
            .await
            .map_err(|e| self.failure(e))?;
        call.answers_to(handle.progress_token.clone());
        let id = handle.id.clone();
        tokio::select! {
            result = handle.await_response() => {
                self.relay.settle().await;
                result.map_err(|e| self.failure(e))
            }
            _ = cancel.cancelled() => {
                let notice = CancelledNotification::new(CancelledNotificationParam::new(
                    Some(id),
                    Some("cancelled by the client".to_owned()),
                ));
                let _ = peer.send_notification(notice.into()).await;
                Err(GatewayError::Cancelled)
            }
        }
    }

    fn http_failure(&self, e: HttpCallError) -> GatewayError {
        let upstream = self.upstream.clone();
        match e {
            HttpCallError::Rpc(e) => GatewayError::Upstream(e),
            HttpCallError::Timeout => GatewayError::Timeout {
                upstream,
                secs: self.config.call_timeout.as_secs(),
            },
            HttpCallError::Cancelled => GatewayError::Cancelled,
            HttpCallError::Unreachable(_) => {
                // As for rmcp's own sends below: the link shows down and
                // reconnects with backoff.
                if let Some(connection) = lock(&self.connection).take() {
                    connection.cancel();
                }
                GatewayError::Unavailable {
                    upstream,
                    reason: "cannot connect".to_owned(),
                }
            }
            HttpCallError::Ended => GatewayError::Closed { upstream },
            HttpCallError::Status(status)
                if status == reqwest::StatusCode::UNAUTHORIZED
                    || status == reqwest::StatusCode::FORBIDDEN =>
            {
                GatewayError::CredentialsRefused {
                    upstream,
                    status: status.as_u16(),
                }
            }
            other => GatewayError::Unavailable {
                upstream,
                reason: other.to_string(),
            },
        }
    }

    fn failure(&self, e: ServiceError) -> GatewayError {
        let upstream = self.upstream.clone();
        match e {
            ServiceError::McpError(e) => GatewayError::Upstream(e),
            ServiceError::Timeout { .. } => GatewayError::Timeout {
                upstream,
                secs: self.config.call_timeout.as_secs(),
            },
            ServiceError::TransportSend(e) if unreachable(&e) => {
                // An HTTP upstream that went away is only noticed by a call
                // (rmcp keeps the session): end the connection so the link
                // shows down and reconnects with backoff, like a dead child.
                if let Some(connection) = lock(&self.connection).take() {
                    connection.cancel();
                }
                GatewayError::Unavailable {
                    upstream,
                    reason: "cannot connect".to_owned(),
                }
            }
            ServiceError::TransportSend(e) if let Some(status) = credentials_refused(&e) => {
                GatewayError::CredentialsRefused { upstream, status }
            }
            ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
                GatewayError::Closed { upstream }
            }
            other => GatewayError::Unavailable {
                upstream,
                reason: other.to_string(),
            },
        }
    }
}

/// rmcp's client read a 401 or a 403 `insufficient_scope` from the upstream.
fn credentials_refused(e: &rmcp::transport::DynamicTransportError) -> Option<u16> {
    use rmcp::transport::streamable_http_client::StreamableHttpError;
    match e
        .error
        .downcast_ref::<StreamableHttpError<reqwest::Error>>()
    {
        Some(StreamableHttpError::AuthRequired(_)) => Some(401),
        Some(StreamableHttpError::InsufficientScope(_)) => Some(403),
        _ => None,
    }
}

/// Whether a send failed because the HTTP upstream cannot be reached at all
/// (not for an answer it gave).
fn unreachable(e: &rmcp::transport::DynamicTransportError) -> bool {
    use rmcp::transport::streamable_http_client::StreamableHttpError;
    matches!(
        e.error.downcast_ref::<StreamableHttpError<reqwest::Error>>(),
        Some(StreamableHttpError::Client(e)) if e.is_connect()
    )
}
/// Drain the child's stderr into the log, line by line, bounded in line
/// length and rate: a flooding upstream must neither block on a full pipe
/// nor flood mcpgate's log.
async fn pump_stderr(upstream: String, stderr: impl AsyncRead + Unpin) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::with_capacity(256);
    let mut window = Instant::now();
    let mut logged = 0u32;
    let mut dropped = 0u64;
    loop {
        line.clear();
        let mut limited = (&mut reader).take(STDERR_LINE_MAX as u64);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if window.elapsed() >= Duration::from_secs(1) {
            if dropped > 0 {
                tracing::warn!(upstream = %upstream, dropped, "upstream stderr lines not logged (rate limit)");
            }
            window = Instant::now();
            logged = 0;
            dropped = 0;
        }
        if logged < STDERR_LINES_PER_SEC {
            logged += 1;
            let text = String::from_utf8_lossy(&line);
            tracing::info!(target: "upstream", upstream = %upstream, "{}", text.trim_end());
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        tracing::warn!(upstream = %upstream, dropped, "upstream stderr lines not logged (rate limit)");
    }
}
