//! The accept loop and each connection's limits.
//!
//! `axum::serve` sets no hyper timer, so hyper's header-read timeout never
//! fires and a socket that sends nothing is held forever. Here every
//! connection has a header-read timeout, an idle timeout, a deadline for its
//! request bodies, and counts against `max_connections`. A few connections
//! over that cap are still answered (200 on `/healthz`, 503 elsewhere) so
//! monitoring sees a live process; beyond those, a connection gets a canned
//! 503 and is closed at once, so accepting never runs out of descriptors.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes, HttpBody},
    extract::ConnectInfo,
    http::{HeaderValue, Request, Response, StatusCode, header},
    response::IntoResponse,
};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use serde_json::json;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Notify,
    sync::{Semaphore, watch},
    time::{Instant, Sleep},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{
    ClientAddress, Draining, InFlight, client_address, drain::Work, settings::ServerConfig,
};

/// Connections over `max_connections` that are still read and answered.
const OVERFLOW_CONNECTIONS: usize = 32;
/// How long such a connection has to send its request.
const OVERFLOW_TIMEOUT: Duration = Duration::from_secs(2);
/// Descriptors kept free for the store, upstream processes and outbound calls.
const FD_HEADROOM: u64 = 256;
/// Longest pause after an accept error (descriptors exhausted, ...).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Shared by every connection.
struct Shared {
    router: Router,
    config: ServerConfig,
    draining: Draining,
    in_flight: Arc<InFlight>,
    stop_accepting: CancellationToken,
}

/// Serve `router` on `listener` until `stop_accepting` is cancelled; then
/// accept what the kernel has already queued, close the listener, cancel
/// `listener_closed`, let each connection finish its current request (or
/// receive and finish its first one; streams run until the router's own
/// shutdown ends them) and return once all are closed. While `draining` is
/// set, and after `stop_accepting`, HTTP/1 responses say `Connection: close`.
/// `in_flight` counts the work shutdown waits for ([`InFlight`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServerConfig,
    draining: Draining,
    in_flight: Arc<InFlight>,
    stop_accepting: CancellationToken,
    listener_closed: CancellationToken,
) -> io::Result<()> {
    let cap = connection_cap(config.max_connections);
    let main = Arc::new(Semaphore::new(cap));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS));
    let shared = Arc::new(Shared {
        router,
        config,
        draining,
        in_flight,
        stop_accepting: stop_accepting.clone(),
    });
    // Every connection task holds a receiver; `closed()` resolves when all are gone.
    let (all_closed_tx, all_closed_rx) = watch::channel(());
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::ZERO;
                pair
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE and friends stay ready: retrying at once would spin.
                if backoff.is_zero() {
                    tracing::warn!(error = %e, "accept failed; pausing before the next accept");
                }
                backoff = (backoff * 2)
                    .max(Duration::from_millis(10))
                    .min(MAX_ACCEPT_BACKOFF);
                tokio::select! {
                    _ = stop_accepting.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        serve_accepted((stream, peer), &shared, &main, &overflow, &all_closed_rx);
    }
    // Connections the kernel completed but nobody accepted are reset when
    // the listener closes, possibly after the balancer sent a request on
    // them (which it does not retry if it is a POST): accept and serve them.
    // What arrives after the last accept is refused, and passed on.
    for stream in queued_connections(listener) {
        serve_accepted(stream, &shared, &main, &overflow, &all_closed_rx);
    }
    listener_closed.cancel();
    drop(all_closed_rx);
    all_closed_tx.closed().await;
    Ok(())
}

/// Start serving one accepted connection, within the connection limits.
fn serve_accepted(
    (stream, peer): (TcpStream, SocketAddr),
    shared: &Arc<Shared>,
    main: &Arc<Semaphore>,
    overflow: &Arc<Semaphore>,
    all_closed: &watch::Receiver<()>,
) {
    // SSE answers go out in several writes; with Nagle on, the last one
    // waits for the client's delayed ACK (~40 ms per request).
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    if let Ok(permit) = main.clone().try_acquire_owned() {
        let shared = shared.clone();
        let closed = all_closed.clone();
        // Counted from here: shutdown must not cancel MCP tasks while a
        // request the balancer already sent on this connection is unread.
        let first_request = shared.in_flight.begin();
        tokio::spawn(async move {
            serve_connection(stream, peer, shared, first_request).await;
            drop(permit);
            drop(closed);
        });
    } else if let Ok(permit) = overflow.clone().try_acquire_owned() {
        let closed = all_closed.clone();
        tokio::spawn(async move {
            serve_over_capacity(stream).await;
            drop(permit);
            drop(closed);
        });
    } else {
        refuse(stream);
    }
}

/// Close `listener`, first taking every connection already in its queue.
/// The std listener accepts with a real `accept(2)` each time; tokio's
/// `accept` would wait for the reactor to report the queue readable.
fn queued_connections(listener: TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!(error = %e, "could not take the queued connections before closing the listener");
            return Vec::new();
        }
    };
    let mut queued = Vec::new();
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream));
                match stream {
                    Ok(stream) => queued.push((stream, peer)),
                    Err(e) => {
                        tracing::debug!(error = %e, "a queued connection could not be served")
                    }
                }
            }
            Err(e) if is_connection_error(&e) => continue,
            // WouldBlock: the queue is empty. Anything else: nothing more to take.
            Err(_) => break,
        }
    }
    if !queued.is_empty() {
        tracing::debug!(
            connections = queued.len(),
            "served the listener's queue before closing it"
        );
    }
    queued
}

/// `max_connections`, lowered when the process may not open that many files.
fn connection_cap(configured: usize) -> usize {
    let soft = match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => soft,
        Err(_) => return configured,
    };
    let usable = soft.saturating_sub(FD_HEADROOM + OVERFLOW_CONNECTIONS as u64);
    let usable = usize::try_from(usable).unwrap_or(usize::MAX).max(1);
    if usable < configured {
        tracing::warn!(
            max_connections = configured,
            open_files_limit = soft,
            effective = usable,
            "the open-files limit (ulimit -n) is too low for server.max_connections; serving fewer"
        );
        usable
    } else {
        configured
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

const TOO_BUSY: &str = r#"{"error":"temporarily_unavailable","error_description":"too many connections; retry in a moment"}"#;

/// The whole answer to a connection over every limit, written without reading.
fn refusal() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{TOO_BUSY}",
        TOO_BUSY.len()
    )
}

/// Over every limit: say so without waiting for anything, and close.
fn refuse(stream: TcpStream) {
    // Unread input would turn the close into a reset that loses the answer.
    let mut scratch = [0u8; 4096];
    let _ = stream.try_read(&mut scratch);
    let _ = stream.try_write(refusal().as_bytes());
}

/// A connection over `max_connections`: one quick request, then closed.
async fn serve_over_capacity(stream: TcpStream) {
    let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
        let response = if request.uri().path() == "/healthz" {
            Json(json!({ "status": "ok" })).into_response()
        } else {
            too_busy()
        };
        Ok::<_, Infallible>(response)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(OVERFLOW_TIMEOUT)
        .keep_alive(false);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(OVERFLOW_TIMEOUT * 2, connection).await;
}

fn too_busy() -> Response<Body> {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json")],
        TOO_BUSY,
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    first_request: Work,
) {
    let activity = Arc::new(Activity::new(first_request));
    let stop = shared.stop_accepting.clone();
    let service = {
        let activity = activity.clone();
        let shared = shared.clone();
        hyper::service::service_fn(move |request| {
            handle(shared.clone(), activity.clone(), peer, request)
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // On HTTP/1.1 the header timer also runs while a kept-alive connection
    // waits for its next request.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let mut closing = false;
    let mut stopping = false;
    loop {
        // Stopping: a connection closes after its current request. One that
        // has not had a request yet was opened to send one, which may be on
        // its way: closing it now would reset it under that request, so it is
        // served first (with `Connection: close`, see `handle`).
        if stopping && !closing && activity.served_any() {
            connection.as_mut().graceful_shutdown();
            closing = true;
        }
        // Until its first request a connection gets the header timeout: the
        // protocol sniffing before hyper's own header timer starts has none.
        let idle_limit = if activity.served_any() {
            shared.config.keep_alive_idle
        } else {
            shared.config.header_read_timeout
        };
        let idle_check = activity.idle_deadline(idle_limit);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stop.cancelled(), if !stopping => stopping = true,
            _ = activity.first_request.notified(), if stopping && !closing => {}
            _ = tokio::time::sleep_until(idle_check), if !closing => {
                if activity.idle_for_at_least(idle_limit, Instant::now()) {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// One request: record where it came from, bound the time its body may take,
/// and keep the connection marked busy until its response body is done.
async fn handle(
    shared: Arc<Shared>,
    activity: Arc<Activity>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // GETs are event streams or quick reads; the rest is work to finish.
    // Counted before `begin` ends the connection's own count, so the total
    // never touches zero in between.
    let work = (request.method() != http::Method::GET).then(|| shared.in_flight.begin());
    let busy = activity.begin();
    let (mut parts, body) = request.into_parts();
    let http1 = parts.version < http::Version::HTTP_2;
    let client = client_address::resolve(
        peer.ip(),
        &parts.headers,
        &shared.config.trusted_proxies,
        shared.config.client_address_header,
    );
    parts.extensions.insert(ConnectInfo(peer));
    parts.extensions.insert(ClientAddress(client));
    let late = Arc::new(AtomicBool::new(false));
    let body = DeadlineBody {
        inner: Body::new(body),
        deadline: Box::pin(tokio::time::sleep(shared.config.body_read_timeout)),
        late: late.clone(),
    };
    let request = Request::from_parts(parts, Body::new(body));
    let response = match shared.router.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    // Whatever the handler made of the failed read, the cause is the client's pace.
    let mut response = if late.load(Ordering::Relaxed) {
        body_too_slow()
    } else {
        response
    };
    // Draining: this connection will be closed soon; hyper closes it after
    // this response, and the client reconnects (to another replica).
    // HTTP/2 has no such header; its connections get a GOAWAY at the end.
    if http1 && (shared.draining.is_draining() || shared.stop_accepting.is_cancelled()) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response.map(move |body| {
        Body::new(body.map_frame(move |frame| {
            let _still_busy = (&busy, &work);
            frame
        }))
    }))
}

fn body_too_slow() -> Response<Body> {
    let mut response = (
        StatusCode::REQUEST_TIMEOUT,
        Json(json!({
            "error": "invalid_request",
            "error_description": "the request body did not arrive in time",
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails once its deadline passes, however it trickles.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    late: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTooSlow;

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.late.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Requests in progress on one connection and when the last one ended.
struct Activity {
    started: Instant,
    open: AtomicUsize,
    served: AtomicBool,
    idle_since_ms: AtomicU64,
    /// Counts this connection as in flight until its first request.
    awaiting_first: std::sync::Mutex<Option<Work>>,
    /// Signalled when the first request arrives.
    first_request: Notify,
}

/// Marks its connection busy while alive.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .idle_since_ms
            .store(activity.ms_at(Instant::now()), Ordering::Relaxed);
        activity.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Activity {
    fn new(first_request: Work) -> Self {
        Activity {
            started: Instant::now(),
            open: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            awaiting_first: std::sync::Mutex::new(Some(first_request)),
            first_request: Notify::new(),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.open.fetch_add(1, Ordering::SeqCst);
        if !self.served.swap(true, Ordering::SeqCst) {
            // The request counts itself (if it is work); the wait is over.
            if let Ok(mut waiting) = self.awaiting_first.lock() {
                waiting.take();
            }
            self.first_request.notify_one();
        }
        Busy(self.clone())
    }

    fn served_any(&self) -> bool {
        self.served.load(Ordering::SeqCst)
    }

    fn ms_at(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    /// When the connection will have been idle for `limit`, if nothing happens.
    fn idle_deadline(&self, limit: Duration) -> Instant {
        if self.open.load(Ordering::SeqCst) > 0 {
            return Instant::now() + limit;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        self.started + since + limit
    }

    fn idle_for_at_least(&self, limit: Duration, now: Instant) -> bool {
        self.open.load(Ordering::SeqCst) == 0
            && Duration::from_millis(
                self.ms_at(now)
                    .saturating_sub(self.idle_since_ms.load(Ordering::Relaxed)),
            ) >= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_trickled_body_fails_at_its_deadline() {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let late = Arc::new(AtomicBool::new(false));
        let body = DeadlineBody {
            inner: Body::new(http_body_util::StreamBody::new(
                tokio_stream::wrappers::ReceiverStream::new(receiver),
            )),
            deadline: Box::pin(tokio::time::sleep(Duration::from_millis(300))),
            late: late.clone(),
        };
        // One byte every 50 ms: never idle, never finished.
        let trickle = tokio::spawn(async move {
            while sender
                .send(Ok(Frame::data(Bytes::from_static(b"x"))))
                .await
                .is_ok()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let started = Instant::now();
        let result = body.collect().await;
        trickle.abort();
        assert!(result.is_err());
        assert!(late.load(Ordering::Relaxed));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_body_within_its_deadline_is_untouched() {
        let late = Arc::new(AtomicBool::new(false));
        let body = DeadlineBody {
            inner: Body::from("complete"),
            deadline: Box::pin(tokio::time::sleep(Duration::from_secs(30))),
            late: late.clone(),
        };
        let bytes = body.collect().await.map(|c| c.to_bytes()).ok();
        assert_eq!(bytes.as_deref(), Some(&b"complete"[..]));
        assert!(!late.load(Ordering::Relaxed));
    }

    #[test]
    fn the_refusal_is_a_complete_json_answer() {
        let text = refusal();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(parsed["error"], "temporarily_unavailable");
    }

    #[test]
    fn a_connection_is_idle_only_without_open_requests() {
        let in_flight = Arc::new(InFlight::default());
        let activity = Arc::new(Activity::new(in_flight.begin()));
        let start = activity.started;
        let limit = Duration::from_secs(10);
        assert!(activity.idle_for_at_least(limit, start + Duration::from_secs(10)));
        let busy = activity.begin();
        assert_eq!(
            in_flight.current(),
            0,
            "the first request ends the wait for it"
        );
        assert!(!activity.idle_for_at_least(limit, start + Duration::from_secs(30)));
        drop(busy);
        let ended = Instant::now();
        assert!(!activity.idle_for_at_least(limit, ended + Duration::from_secs(9)));
        assert!(activity.idle_for_at_least(limit, ended + Duration::from_secs(11)));
    }
}
