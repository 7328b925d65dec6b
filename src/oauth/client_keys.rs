//! The public keys of `private_key_jwt` clients: a JWK set given inline
//! (a registration's or document's `jwks`, a configured client's `jwks`) or
//! fetched from its `jwks_uri` through the SSRF fence (`fenced_fetch`).
//!
//! Fetched sets are cached for their `Cache-Control` max-age, kept between
//! [`MIN_TTL`] and [`MAX_TTL`] (a floor, so a `no-store` set is not fetched
//! for every assertion). A key id the cached set lacks causes one refetch,
//! at most once per [`REFETCH_INTERVAL`] per URL: a client that rotated its
//! key is served at once, a flood of random key ids costs one fetch. A
//! failed fetch is remembered for [`FAILURE_TTL`], by every replica once
//! the cache has the store (`fetch_failures`). Time comes from the server's
//! clock.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse};

use super::fenced_fetch::{FencedFetcher, FetchError, Freshness};
use super::fetch_failures::{FailureMemory, SharedFailure};
use crate::{clock::SharedClock, store::Store};

/// A key set larger than this is refused (a handful of RSA-4096 keys fit).
pub const MAX_KEY_SET_BYTES: usize = 32 * 1024;
/// Keys in one set.
pub const MAX_KEYS: usize = 20;
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
pub const MIN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
pub const FAILURE_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientKeysError {
    #[error("the client's key set could not be fetched: {0}")]
    Fetch(#[from] FetchError),
    #[error("the client's key set is invalid: {0}")]
    Invalid(&'static str),
}

/// What another replica learns of a failed key-set fetch. `Busy` (this
/// replica's fetch cap) is not shared; the rest keep their class, and a
/// fetch error its text.
impl SharedFailure for ClientKeysError {
    fn to_reason(&self) -> Option<String> {
        Some(match self {
            ClientKeysError::Fetch(FetchError::Busy) => return None,
            ClientKeysError::Fetch(FetchError::Status(code)) => format!("status:{code}"),
            ClientKeysError::Fetch(FetchError::TooLarge(n)) => format!("too_large:{n}"),
            ClientKeysError::Fetch(FetchError::ForbiddenAddress) => "forbidden_address".to_owned(),
            ClientKeysError::Fetch(FetchError::Redirect) => "redirect".to_owned(),
            ClientKeysError::Fetch(_) => "unreachable".to_owned(),
            ClientKeysError::Invalid(why) => format!("invalid:{why}"),
        })
    }

    fn from_reason(reason: &str) -> Self {
        let fetch = ClientKeysError::Fetch;
        match reason.split_once(':') {
            Some(("invalid", why)) => ClientKeysError::Invalid(invalid_reason(why)),
            Some(("status", code)) => code.parse().map_or(fetch(FetchError::Unreachable), |c| {
                fetch(FetchError::Status(c))
            }),
            Some(("too_large", n)) => n.parse().map_or(fetch(FetchError::Unreachable), |n| {
                fetch(FetchError::TooLarge(n))
            }),
            _ if reason == "forbidden_address" => fetch(FetchError::ForbiddenAddress),
            _ if reason == "redirect" => fetch(FetchError::Redirect),
            _ => fetch(FetchError::Unreachable),
        }
    }
}

/// The `'static` text of an invalid set, as another replica named it.
fn invalid_reason(why: &str) -> &'static str {
    [
        "not a JWK set (no keys array)",
        "more than 20 keys",
        "it carries private or symmetric key material",
        "no public signature key",
        "not JSON",
    ]
    .into_iter()
    .find(|known| *known == why)
    .unwrap_or("refused by another replica")
}

/// Parse a JWK set a client published: public signature keys of an
/// asymmetric type only. A set carrying private or symmetric key material
/// is refused whole: such a client has leaked its key, or means something
/// else than `private_key_jwt`.
pub fn parse_key_set(value: &serde_json::Value) -> Result<JwkSet, ClientKeysError> {
    let invalid = ClientKeysError::Invalid;
    let keys = value
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or(invalid("not a JWK set (no keys array)"))?;
    if keys.len() > MAX_KEYS {
        return Err(invalid("more than 20 keys"));
    }
    let mut usable = Vec::new();
    for key in keys {
        if key.get("d").is_some() || key.get("k").is_some() {
            return Err(invalid("it carries private or symmetric key material"));
        }
        // Key types this verifier does not know are skipped, not fatal.
        let Ok(jwk) = serde_json::from_value::<Jwk>(key.clone()) else {
            continue;
        };
        let asymmetric = matches!(
            jwk.algorithm,
            AlgorithmParameters::RSA(_)
                | AlgorithmParameters::EllipticCurve(_)
                | AlgorithmParameters::OctetKeyPair(_)
        );
        let for_encryption = matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption));
        if asymmetric && !for_encryption {
            usable.push(jwk);
        }
    }
    if usable.is_empty() {
        return Err(invalid("no public signature key"));
    }
    Ok(JwkSet { keys: usable })
}

#[derive(Clone)]
struct CachedSet {
    keys: Arc<JwkSet>,
    expires: Instant,
    /// When an unknown key id last caused a refetch: the next one may
    /// only a minute later.
    refetched_for_kid: Option<Instant>,
}

/// Fetched key sets by URL.
pub struct ClientKeyCache {
    fetcher: FencedFetcher,
    clock: SharedClock,
    sets: moka::sync::Cache<String, CachedSet>,
    /// Failed fetches and until when they stand (shared through the store
    /// once [`ClientKeyCache::with_store`] is called).
    failures: FailureMemory<ClientKeysError>,
}

impl ClientKeyCache {
    pub fn new(fetcher: FencedFetcher, clock: SharedClock) -> ClientKeyCache {
        ClientKeyCache {
            fetcher,
            clock,
            sets: moka::sync::Cache::builder().max_capacity(10_000).build(),
            failures: FailureMemory::new("client-keys", FAILURE_TTL),
        }
    }

    /// Remember failed fetches in `store`, for every replica.
    pub fn with_store(mut self, store: Store) -> ClientKeyCache {
        self.failures = self.failures.shared(store);
        self
    }

    /// Read the time from `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> ClientKeyCache {
        self.clock = clock;
        self
    }

    /// The key set at `uri`, holding `kid` if it can: a cached set lacking
    /// `kid` is refetched at once, unless an unknown `kid` caused a refetch
    /// within [`REFETCH_INTERVAL`]. The caller decides what a missing key means.
    pub async fn key_set(
        &self,
        uri: &str,
        kid: Option<&str>,
    ) -> Result<Arc<JwkSet>, ClientKeysError> {
        let now = self.clock.instant();
        let mut for_unknown_kid = false;
        if let Some(hit) = self.sets.get(uri)
            && hit.expires > now
        {
            let has_kid = kid.is_none_or(|kid| hit.keys.find(kid).is_some());
            let refetched_lately = hit
                .refetched_for_kid
                .is_some_and(|at| now < at + REFETCH_INTERVAL);
            if has_kid || refetched_lately {
                return Ok(hit.keys);
            }
            tracing::debug!(uri, "unknown key id; refetching the client's key set");
            for_unknown_kid = true;
        }
        if let Some(failed) = self.failures.standing(uri, &self.clock).await {
            return Err(failed);
        }
        match self.fetch(uri).await {
            Ok((keys, ttl)) => {
                let keys = Arc::new(keys);
                self.sets.insert(
                    uri.to_owned(),
                    CachedSet {
                        keys: keys.clone(),
                        expires: now + ttl,
                        refetched_for_kid: for_unknown_kid.then_some(now),
                    },
                );
                Ok(keys)
            }
            Err(e) => {
                tracing::info!(uri, error = %e, "client key set not fetched");
                self.failures.remember(uri, &e, &self.clock).await;
                Err(e)
            }
        }
    }

    async fn fetch(&self, uri: &str) -> Result<(JwkSet, Duration), ClientKeysError> {
        let url = self.fetcher.check_url(uri)?;
        let fetched = self
            .fetcher
            .get(&url, MAX_KEY_SET_BYTES, "client key set")
            .await?;
        let value: serde_json::Value = serde_json::from_slice(&fetched.body)
            .map_err(|_| ClientKeysError::Invalid("not JSON"))?;
        let keys = parse_key_set(&value)?;
        let ttl = match Freshness::of(fetched.cache_control.as_deref()) {
            Freshness::Unspecified => DEFAULT_TTL,
            Freshness::DoNotKeep => MIN_TTL,
            Freshness::MaxAge(age) => age.clamp(MIN_TTL, MAX_TTL),
        };
        Ok((keys, ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rsa_public() -> serde_json::Value {
        json!({"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"})
    }

    #[test]
    fn only_public_asymmetric_signature_keys_are_kept() {
        let set = parse_key_set(&json!({"keys": [rsa_public()]})).unwrap();
        assert_eq!(set.keys.len(), 1);
        for bad in [
            json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
            json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "c"}]}),
            json!({"keys": []}),
            json!({"keys": [{"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}]}),
            json!({"nokeys": true}),
        ] {
            assert!(parse_key_set(&bad).is_err(), "{bad}");
        }
    }

    /// Serve `bodies` in turn (the last one repeats), counting requests.
    async fn key_server(bodies: Vec<String>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let body = &bodies[n.min(bodies.len() - 1)];
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        (format!("http://{addr}/jwks.json"), count)
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_at_once_then_at_most_once_per_interval() {
        use std::sync::atomic::Ordering;
        let clock = crate::clock::ManualClock::new();
        let mut rotated = rsa_public();
        rotated["kid"] = json!("k2");
        let (uri, fetches) = key_server(vec![
            json!({"keys": [rsa_public()]}).to_string(),
            json!({"keys": [rotated]}).to_string(),
        ])
        .await;
        let cache = ClientKeyCache::new(
            FencedFetcher::new(true, Duration::from_secs(2)),
            clock.clone(),
        );
        assert!(
            cache
                .key_set(&uri, Some("k1"))
                .await
                .unwrap()
                .find("k1")
                .is_some()
        );
        // A rotated key right after a fetch is fetched at once...
        assert!(
            cache
                .key_set(&uri, Some("k2"))
                .await
                .unwrap()
                .find("k2")
                .is_some()
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // ...and more unknown kids within the interval cost nothing.
        for kid in ["x1", "x2", "x3"] {
            let _ = cache.key_set(&uri, Some(kid)).await;
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // Even no-store is kept for the floor, then fetched again.
        clock.advance(MIN_TTL);
        cache.key_set(&uri, Some("k2")).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn key_set_urls_pass_the_fence() {
        let strict = ClientKeyCache::new(
            FencedFetcher::new(false, Duration::from_secs(1)),
            crate::clock::system(),
        );
        assert_eq!(
            strict.key_set("http://127.0.0.1:9/jwks.json", None).await,
            Err(ClientKeysError::Fetch(FetchError::BadUrl("must be https")))
        );
        assert_eq!(
            strict
                .key_set("https://169.254.169.254/jwks.json", None)
                .await,
            Err(ClientKeysError::Fetch(FetchError::ForbiddenAddress))
        );
    }
}
