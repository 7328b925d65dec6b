//! Client ID Metadata Documents: a client id that is an https URL names a
//! JSON document describing the client. The document is fetched through
//! the SSRF fence (`fenced_fetch`: https only, public addresses only, the
//! connection pinned, no redirects, a short timeout, a cap on fetches in
//! flight), at most 5 KB. Good documents are cached per their
//! `Cache-Control`; failures are remembered briefly, by every replica
//! (`fetch_failures`: one replica's failed fetch is not retried by the
//! others before it expires). Why a fetch failed is
//! logged, never told the client (it would say whether a host is
//! reachable).

use crate::clock::SharedClock;
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use url::Url;

use super::clients::{AuthMethod, ClientMetadata, check_client_name, classify_redirect_uri};
pub use super::fenced_fetch::is_public_address;
use super::fenced_fetch::{FencedFetcher, FetchError, Freshness};
use super::fetch_failures::{FailureMemory, SharedFailure};
use crate::store::Store;

pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
const DEFAULT_TTL: Duration = Duration::from_secs(300);
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a failed URL is answered without a new fetch, on every replica.
const FAILURE_TTL: Duration = Duration::from_secs(60);
/// Failed document fetches in the store's shared failure memory.
const FAILURE_KIND: &str = "cimd";
#[cfg(test)]
use super::fenced_fetch::MAX_CONCURRENT_FETCHES;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CimdError {
    #[error("the client id is not a valid metadata document URL: {0}")]
    BadUrl(&'static str),
    #[error("the client's metadata document host resolves to a non-public address")]
    ForbiddenAddress,
    #[error("the client's metadata document could not be fetched: {0}")]
    Fetch(String),
    /// No answer (DNS, connection, timeout, broken body): one text for all,
    /// so the error does not tell an unreachable host from a slow one.
    #[error("the client's metadata document could not be fetched")]
    Unreachable,
    #[error("too many client metadata documents are being fetched right now; retry shortly")]
    Busy,
    #[error("the client's metadata document is invalid: {0}")]
    Invalid(String),
}

#[derive(Clone)]
struct Cached {
    metadata: Arc<ClientMetadata>,
    expires: Instant,
}

pub struct CimdResolver {
    fetcher: FencedFetcher,
    pinned: HashMap<String, Arc<ClientMetadata>>,
    cache: moka::sync::Cache<String, Cached>,
    /// Failed fetches and until when they stand, shared through the store
    /// once [`CimdResolver::with_store`] is called.
    failures: FailureMemory<CimdError>,
    clock: SharedClock,
}

impl CimdResolver {
    pub fn new(allow_loopback_http: bool, timeout: Duration) -> CimdResolver {
        CimdResolver {
            fetcher: FencedFetcher::new(allow_loopback_http, timeout),
            pinned: HashMap::new(),
            cache: moka::sync::Cache::builder().max_capacity(10_000).build(),
            failures: FailureMemory::new(FAILURE_KIND, FAILURE_TTL),
            clock: crate::clock::system(),
        }
    }

    /// Remember failed fetches in `store`, for every replica.
    pub fn with_store(mut self, store: Store) -> CimdResolver {
        self.failures = self.failures.shared(store);
        self
    }

    /// Read the time from `clock` (cache and failure expiry).
    pub fn with_clock(mut self, clock: SharedClock) -> CimdResolver {
        self.clock = clock;
        self
    }

    /// Replace the fetch bounds (tests).
    #[cfg(test)]
    fn with_bounds(mut self, concurrent: usize, failure_ttl: Duration) -> CimdResolver {
        self.fetcher = self.fetcher.with_max_concurrent(concurrent);
        self.failures = FailureMemory::new(FAILURE_KIND, failure_ttl);
        self
    }

    /// The fence this resolver fetches through; clones share its cap on
    /// fetches in flight (client key sets are fetched through it too).
    pub fn fetcher(&self) -> FencedFetcher {
        self.fetcher.clone()
    }

    /// Use `document` for `client_id` instead of fetching it.
    pub fn pin(&mut self, client_id: &str, document: &str) -> Result<(), CimdError> {
        let metadata = parse_document(client_id, document.as_bytes())?;
        self.pinned.insert(client_id.to_owned(), Arc::new(metadata));
        Ok(())
    }

    /// Does this client id name a metadata document (rather than a registration)?
    pub fn is_document_id(&self, client_id: &str) -> bool {
        client_id.starts_with("https://")
            || (self.fetcher.allows_loopback_http() && client_id.starts_with("http://"))
    }

    pub async fn resolve(&self, client_id: &str) -> Result<Arc<ClientMetadata>, CimdError> {
        if let Some(doc) = self.pinned.get(client_id) {
            return Ok(doc.clone());
        }
        if let Some(hit) = self.cache.get(client_id) {
            if hit.expires > self.clock.instant() {
                return Ok(hit.metadata);
            }
            self.cache.invalidate(client_id);
        }
        let url = self.check_url(client_id)?;
        if let Some(failed) = self.failures.standing(client_id, &self.clock).await {
            return Err(failed);
        }
        let fetched = self
            .fetcher
            .get(&url, MAX_DOCUMENT_BYTES, "client metadata document")
            .await
            .map_err(CimdError::from)
            .and_then(|fetched| {
                let metadata = parse_document(client_id, &fetched.body)?;
                self.check_jwks_uri(&metadata)?;
                Ok((metadata, cache_ttl(fetched.cache_control.as_deref())))
            });
        let (metadata, ttl) = match fetched {
            Ok(done) => done,
            Err(e) => {
                self.failures.remember(client_id, &e, &self.clock).await;
                return Err(e);
            }
        };
        let metadata = Arc::new(metadata);
        if let Some(ttl) = ttl {
            self.cache.insert(
                client_id.to_owned(),
                Cached {
                    metadata: metadata.clone(),
                    expires: self.clock.instant() + ttl,
                },
            );
        }
        Ok(metadata)
    }

    fn check_url(&self, client_id: &str) -> Result<Url, CimdError> {
        let url = self.fetcher.check_url(client_id)?;
        if url.path() == "/" || url.path().is_empty() {
            return Err(CimdError::BadUrl("must have a path"));
        }
        // `Url` resolves dot segments; a client id that had any is not canonical.
        if url.as_str() != client_id {
            return Err(CimdError::BadUrl(
                "must be in canonical form (no dot segments)",
            ));
        }
        Ok(url)
    }

    /// A `jwks_uri` must pass the same fence as the document's own URL.
    fn check_jwks_uri(&self, metadata: &ClientMetadata) -> Result<(), CimdError> {
        if let Some(uri) = &metadata.jwks_uri {
            self.fetcher
                .check_url(uri)
                .map_err(|_| CimdError::Invalid("jwks_uri must be an https URL".to_owned()))?;
        }
        Ok(())
    }
}

impl From<FetchError> for CimdError {
    fn from(e: FetchError) -> CimdError {
        match e {
            FetchError::BadUrl(why) => CimdError::BadUrl(why),
            FetchError::ForbiddenAddress => CimdError::ForbiddenAddress,
            FetchError::Unreachable => CimdError::Unreachable,
            FetchError::Busy => CimdError::Busy,
            FetchError::Redirect => CimdError::Fetch("redirects are not followed".to_owned()),
            FetchError::Status(code) => CimdError::Fetch(format!("HTTP status {code}")),
            FetchError::TooLarge(_) => CimdError::Fetch("document larger than 5 KB".to_owned()),
            FetchError::Setup => CimdError::Fetch("client setup failed".to_owned()),
        }
    }
}

/// What another replica learns of a failed fetch: the error's class and
/// text. `Busy` is this replica's fetch cap, nobody else's business.
impl SharedFailure for CimdError {
    fn to_reason(&self) -> Option<String> {
        Some(match self {
            CimdError::Busy => return None,
            CimdError::ForbiddenAddress => "forbidden_address".to_owned(),
            CimdError::Unreachable => "unreachable".to_owned(),
            CimdError::Invalid(why) => format!("invalid:{why}"),
            CimdError::Fetch(why) => format!("fetch:{why}"),
            CimdError::BadUrl(why) => format!("fetch:{why}"),
        })
    }

    fn from_reason(reason: &str) -> Self {
        match reason.split_once(':') {
            _ if reason == "forbidden_address" => CimdError::ForbiddenAddress,
            Some(("invalid", why)) => CimdError::Invalid(why.to_owned()),
            Some(("fetch", why)) => CimdError::Fetch(why.to_owned()),
            _ => CimdError::Unreachable,
        }
    }
}

/// `None`: do not cache. Otherwise max-age within bounds, or a default.
fn cache_ttl(cache_control: Option<&str>) -> Option<Duration> {
    match Freshness::of(cache_control) {
        Freshness::Unspecified => Some(DEFAULT_TTL),
        Freshness::DoNotKeep => None,
        Freshness::MaxAge(age) => Some(age.min(MAX_TTL)),
    }
}

/// Validate a document per the CIMD draft and MCP's rules.
pub fn parse_document(client_id: &str, body: &[u8]) -> Result<ClientMetadata, CimdError> {
    let invalid = |m: &str| CimdError::Invalid(m.to_owned());
    let metadata: ClientMetadata = serde_json::from_slice(body)
        .map_err(|_| invalid("not a JSON object of client metadata"))?;
    if metadata.client_id.as_deref() != Some(client_id) {
        return Err(invalid("client_id in the document differs from its URL"));
    }
    match metadata.client_name.as_deref() {
        None | Some("") => return Err(invalid("client_name is required")),
        // The consent page shows it: the same rules as a registration's.
        Some(name) => check_client_name(name).map_err(|e| CimdError::Invalid(e.to_string()))?,
    }
    if metadata.redirect_uris.is_empty() {
        return Err(invalid("redirect_uris is required"));
    }
    for uri in &metadata.redirect_uris {
        classify_redirect_uri(uri).map_err(|e| CimdError::Invalid(e.to_string()))?;
    }
    // A document is public; a shared secret in it would be no secret. A
    // client proves itself with `private_key_jwt` against the keys the
    // document names, or not at all (`none`).
    let method = match metadata
        .token_endpoint_auth_method
        .as_deref()
        .map(AuthMethod::parse)
    {
        None | Some(Some(AuthMethod::None)) => AuthMethod::None,
        Some(Some(AuthMethod::PrivateKeyJwt)) => AuthMethod::PrivateKeyJwt,
        _ => {
            return Err(invalid(
                "token_endpoint_auth_method must be none or private_key_jwt",
            ));
        }
    };
    metadata
        .check_keys()
        .map_err(|e| CimdError::Invalid(e.to_string()))?;
    let raw: serde_json::Value = serde_json::from_slice(body).map_err(|_| invalid("not JSON"))?;
    if raw.get("client_secret").is_some() || raw.get("client_secret_expires_at").is_some() {
        return Err(invalid(
            "a metadata document must not carry a client secret",
        ));
    }
    let mut metadata = metadata;
    metadata.token_endpoint_auth_method = Some(method.as_str().to_owned());
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!is_public_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public_address(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_that_embed_or_reach_non_public_space_are_refused() {
        for ip in [
            "::7f00:1",                             // IPv4-compatible 127.0.0.1
            "::a00:1",                              // IPv4-compatible 10.0.0.1
            "::a9fe:a9fe",                          // IPv4-compatible 169.254.169.254
            "::",                                   // unspecified
            "::ffff:0:7f00:1",                      // ::ffff:0:0:0/96 (SIIT)
            "::ffff:0:808:808",                     // ... even with a public IPv4 inside
            "2002:7f00:1::1",                       // 6to4 of 127.0.0.1
            "2002:a00:1::1",                        // 6to4 of 10.0.0.1
            "2002:a9fe:a9fe::1",                    // 6to4 of 169.254.169.254
            "2001::1",                              // Teredo 2001::/32
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
            "2001:2::1",                            // benchmarking, in 2001::/23
            "2001:1ff:ffff::1",                     // end of 2001::/23
            "2001:db8::1",                          // documentation
            "3fff::1",                              // documentation 3fff::/20
            "fec0::1",                              // site local
            "100::1",                               // discard 100::/64
            "64:ff9b::7f00:1",                      // NAT64 well-known prefix
            "64:ff9b:1::a00:1",                     // NAT64 local-use prefix
            "fc00::1",                              // unique local
            "fe80::1",                              // link local
            "ff02::1",                              // multicast
            "4000::1",                              // outside 2000::/3
        ] {
            assert!(!is_public_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2002:808:808::1", // 6to4 of 8.8.8.8
            "::808:808",       // IPv4-compatible 8.8.8.8
            "2001:200::1",     // just past 2001::/23
        ] {
            assert!(is_public_address(ip.parse().unwrap()), "{ip}");
        }
    }

    /// A listener that counts connections and answers each with `response`,
    /// or never answers when it is `None`.
    async fn counting(
        response: Option<String>,
    ) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                seen.fetch_add(1, Ordering::SeqCst);
                match &response {
                    Some(response) => {
                        let mut buf = [0u8; 4096];
                        let _ = sock.read(&mut buf).await;
                        let _ = sock.write_all(response.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    }
                    None => held.push(sock),
                }
            }
        });
        (addr, count)
    }

    #[tokio::test]
    async fn a_failed_document_url_is_not_fetched_again_for_a_while() {
        use std::sync::atomic::Ordering;
        let not_found = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let (addr, connections) = counting(Some(not_found.to_owned())).await;
        let r = CimdResolver::new(true, Duration::from_secs(2));
        let id = format!("http://{addr}/c.json");
        for _ in 0..5 {
            assert_eq!(
                r.resolve(&id).await.unwrap_err(),
                CimdError::Fetch("HTTP status 404".to_owned())
            );
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
        // Once the failure expires, the URL is fetched again.
        let short = CimdResolver::new(true, Duration::from_secs(2))
            .with_bounds(MAX_CONCURRENT_FETCHES, Duration::from_millis(50));
        assert!(short.resolve(&id).await.is_err());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(short.resolve(&id).await.is_err());
        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn fetches_over_the_concurrency_cap_fail_at_once() {
        use std::sync::atomic::Ordering;
        let (silent, accepted) = counting(None).await;
        let r =
            Arc::new(CimdResolver::new(true, Duration::from_secs(3)).with_bounds(2, FAILURE_TTL));
        let mut pending = Vec::new();
        for i in 0..2 {
            let r = r.clone();
            let id = format!("http://{silent}/slow-{i}.json");
            pending.push(tokio::spawn(async move { r.resolve(&id).await }));
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while accepted.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        let started = Instant::now();
        let third = r.resolve(&format!("http://{silent}/third.json")).await;
        assert_eq!(third.unwrap_err(), CimdError::Busy);
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the third one connected"
        );
        for p in pending {
            p.abort();
        }
    }

    #[tokio::test]
    async fn refused_and_timed_out_fetches_read_the_same() {
        // A port nothing listens on, and a host that accepts and never answers.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (silent, _) = counting(None).await;
        let r = CimdResolver::new(true, Duration::from_millis(300));
        let refused = r
            .resolve(&format!("http://{closed}/c.json"))
            .await
            .unwrap_err();
        let timed_out = r
            .resolve(&format!("http://{silent}/c.json"))
            .await
            .unwrap_err();
        assert_eq!(refused, CimdError::Unreachable);
        assert_eq!(refused.to_string(), timed_out.to_string());
        assert!(!refused.to_string().contains("timeout"));
        assert!(!refused.to_string().contains("connection"));
    }

    #[test]
    fn document_rules() {
        let id = "https://app.example/client.json";
        let good = serde_json::json!({"client_id": id, "client_name": "App", "redirect_uris": ["https://app.example/cb"]});
        assert!(parse_document(id, good.to_string().as_bytes()).is_ok());
        let wrong_id = serde_json::json!({"client_id": "https://other.example/c", "client_name": "App", "redirect_uris": ["https://app.example/cb"]});
        assert!(parse_document(id, wrong_id.to_string().as_bytes()).is_err());
        let secret = serde_json::json!({"client_id": id, "client_name": "App", "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "client_secret_basic"});
        assert!(parse_document(id, secret.to_string().as_bytes()).is_err());
        let js = serde_json::json!({"client_id": id, "client_name": "App", "redirect_uris": ["javascript:alert(1)"]});
        assert!(parse_document(id, js.to_string().as_bytes()).is_err());
        let bidi = serde_json::json!({"client_id": id, "client_name": "Claude\u{202e}gnp.exe", "redirect_uris": ["https://app.example/cb"]});
        assert!(parse_document(id, bidi.to_string().as_bytes()).is_err());
    }

    #[test]
    fn cache_headers() {
        assert_eq!(cache_ttl(Some("no-store")), None);
        assert_eq!(cache_ttl(Some("max-age=60")), Some(Duration::from_secs(60)));
        assert_eq!(cache_ttl(Some("max-age=99999999")), Some(MAX_TTL));
        assert_eq!(cache_ttl(None), Some(DEFAULT_TTL));
    }

    #[tokio::test]
    async fn urls_are_checked_before_any_fetch() {
        let r = CimdResolver::new(false, Duration::from_secs(2));
        for id in [
            "http://app.example/c.json",
            "https://app.example/",
            "https://app.example/a/../c.json",
            "https://u:p@app.example/c.json",
        ] {
            assert!(
                matches!(r.resolve(id).await, Err(CimdError::BadUrl(_))),
                "{id}"
            );
        }
        for id in [
            "https://127.0.0.1/c.json",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/c.json",
            "https://localhost/c.json",
        ] {
            assert_eq!(
                r.resolve(id).await.unwrap_err(),
                CimdError::ForbiddenAddress,
                "{id}"
            );
        }
    }

    /// Serve one canned HTTP response (built from the bound address) per connection.
    async fn canned(response: impl FnOnce(std::net::SocketAddr) -> String) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let response = response(addr);
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        addr
    }

    fn http_ok(body: &str, cache_control: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: {cache_control}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn live_fetch_is_fenced() {
        let dev = CimdResolver::new(true, Duration::from_secs(2));
        // A redirect is not followed.
        let redirect = canned(|_| "HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()).await;
        let id = format!("http://{redirect}/c.json");
        assert_eq!(
            dev.resolve(&id).await.unwrap_err(),
            CimdError::Fetch("redirects are not followed".to_owned())
        );
        // More than 5 KB is refused.
        let big = canned(|_| http_ok(&"x".repeat(6000), "max-age=60")).await;
        assert_eq!(
            dev.resolve(&format!("http://{big}/c.json"))
                .await
                .unwrap_err(),
            CimdError::Fetch("document larger than 5 KB".to_owned())
        );
        // A good document naming its own URL resolves.
        let good = canned(|addr| {
            let doc = serde_json::json!({
                "client_id": format!("http://{addr}/c.json"),
                "client_name": "Dev app",
                "redirect_uris": ["http://127.0.0.1:9/cb"]
            });
            http_ok(&doc.to_string(), "max-age=60")
        })
        .await;
        let id = format!("http://{good}/c.json");
        let metadata = dev.resolve(&id).await.unwrap();
        assert_eq!(metadata.client_name.as_deref(), Some("Dev app"));
        // Without the development switch the same URL is refused before any connection.
        let strict = CimdResolver::new(false, Duration::from_secs(2));
        assert!(matches!(
            strict.resolve(&id).await,
            Err(CimdError::BadUrl(_))
        ));
        let https_loopback = format!("https://{good}/c.json");
        assert_eq!(
            strict.resolve(&https_loopback).await.unwrap_err(),
            CimdError::ForbiddenAddress
        );
    }
}
