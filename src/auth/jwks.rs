//! An issuer's signing keys: fetched from its JWKS, cached in memory,
//! refreshed by `Cache-Control: max-age` within bounds, refetched at most once
//! per interval for an unknown `kid` (so random kids cannot flood the IdP),
//! and served stale while the IdP is unreachable.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;

use crate::clock::SharedClock;
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse},
};

const MIN_MAX_AGE: Duration = Duration::from_secs(300);
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum JwksError {
    #[error("key set fetch failed: {0}")]
    Fetch(String),
    #[error("key set is not valid JSON Web Key Set: {0}")]
    Parse(String),
}

/// One usable verification key.
#[derive(Clone)]
pub struct VerificationKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    /// The JWK's own `alg`, when it names one: the token must use exactly it.
    pub alg: Option<Algorithm>,
    pub family: KeyFamily,
}

/// Which algorithms a key can verify at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    Ec,
    Okp,
}

impl KeyFamily {
    pub fn verifies(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyFamily::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyFamily::Ec => matches!(alg, ES256 | ES384),
            KeyFamily::Okp => matches!(alg, EdDSA),
        }
    }
}

struct KeySet {
    keys: Vec<VerificationKey>,
    fetched_at: Option<Instant>,
    max_age: Duration,
}

pub struct JwksCache {
    uri: String,
    client: reqwest::Client,
    current: ArcSwap<KeySet>,
    /// Held while fetching: concurrent misses wait for one fetch, not N.
    fetch_lock: tokio::sync::Mutex<Option<Instant>>,
    min_refetch: Duration,
    fetches: std::sync::atomic::AtomicU64,
    /// Ages the key set and spaces refetches (tests: a manual clock).
    clock: SharedClock,
}

impl JwksCache {
    pub fn new(uri: String, client: reqwest::Client, min_refetch: Duration) -> Arc<Self> {
        Self::with_clock(uri, client, min_refetch, crate::clock::system())
    }

    /// [`JwksCache::new`] reading the time from `clock`.
    pub fn with_clock(
        uri: String,
        client: reqwest::Client,
        min_refetch: Duration,
        clock: SharedClock,
    ) -> Arc<Self> {
        Arc::new(JwksCache {
            uri,
            client,
            current: ArcSwap::from_pointee(KeySet {
                keys: Vec::new(),
                fetched_at: None,
                max_age: MIN_MAX_AGE,
            }),
            fetch_lock: tokio::sync::Mutex::new(None),
            min_refetch,
            fetches: std::sync::atomic::AtomicU64::new(0),
            clock,
        })
    }

    /// A cache that already holds `keys` and treats them as fresh for a day
    /// (keys mcpgate holds itself, and benchmarks).
    pub fn preloaded(keys: Vec<VerificationKey>) -> Arc<Self> {
        let cache = Self::new(String::new(), reqwest::Client::new(), MAX_MAX_AGE);
        cache.current.store(Arc::new(KeySet {
            keys,
            fetched_at: Some(cache.clock.instant()),
            max_age: MAX_MAX_AGE,
        }));
        cache
    }

    /// Swap in a new key set (keys mcpgate holds itself, after a reload).
    pub fn replace(&self, keys: Vec<VerificationKey>) {
        self.current.store(Arc::new(KeySet {
            keys,
            fetched_at: Some(self.clock.instant()),
            max_age: MAX_MAX_AGE,
        }));
    }

    /// How many HTTP fetches were made (metrics and tests).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keys that may verify a token with this `kid` (all keys when the token has none).
    pub async fn keys_for(&self, kid: Option<&str>) -> Result<Vec<VerificationKey>, JwksError> {
        let snapshot = self.current.load_full();
        let now = self.clock.instant();
        let stale = snapshot
            .fetched_at
            .is_none_or(|t| now.saturating_duration_since(t) >= snapshot.max_age);
        let found = select(&snapshot.keys, kid);
        if !found.is_empty() && !stale {
            return Ok(found);
        }
        // Unknown kid, first use, or expired cache: one fetch, rate limited.
        match self.refresh().await {
            Ok(()) => Ok(select(&self.current.load().keys, kid)),
            // Stale keys keep serving while the IdP is down.
            Err(err) if !found.is_empty() => {
                tracing::warn!(uri = %self.uri, error = %err, "key set refresh failed; serving cached keys");
                Ok(found)
            }
            Err(err) if snapshot.fetched_at.is_some() => {
                tracing::warn!(uri = %self.uri, error = %err, "key set refresh failed");
                Ok(Vec::new())
            }
            Err(err) => Err(err),
        }
    }

    async fn refresh(&self) -> Result<(), JwksError> {
        let before = self.current.load().fetched_at;
        let mut last = self.fetch_lock.lock().await;
        // Someone else fetched while we waited: use theirs.
        if self.current.load().fetched_at != before {
            return Ok(());
        }
        let now = self.clock.instant();
        if let Some(at) = *last
            && now.saturating_duration_since(at) < self.min_refetch
        {
            return Ok(());
        }
        *last = Some(now);
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (keys, max_age) = self.fetch().await?;
        self.current.store(Arc::new(KeySet {
            keys,
            fetched_at: Some(self.clock.instant()),
            max_age,
        }));
        Ok(())
    }

    async fn fetch(&self) -> Result<(Vec<VerificationKey>, Duration), JwksError> {
        let response = self
            .client
            .get(&self.uri)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| JwksError::Fetch(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(JwksError::Fetch(format!(
                "HTTP {}",
                response.status().as_u16()
            )));
        }
        let max_age = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_max_age)
            .unwrap_or(MIN_MAX_AGE)
            .clamp(MIN_MAX_AGE, MAX_MAX_AGE);
        let body = read_capped(response, MAX_JWKS_BYTES).await?;
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| JwksError::Parse(e.to_string()))?;
        Ok((
            set.keys.iter().filter_map(verification_key).collect(),
            max_age,
        ))
    }
}

pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, JwksError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| JwksError::Fetch(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > cap {
            return Err(JwksError::Fetch(format!(
                "response larger than {cap} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn select(keys: &[VerificationKey], kid: Option<&str>) -> Vec<VerificationKey> {
    keys.iter()
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        .cloned()
        .collect()
}

/// Signing keys only; encryption keys and symmetric keys are never used.
fn verification_key(jwk: &Jwk) -> Option<VerificationKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let family = match &jwk.algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
        jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => KeyFamily::Ec,
        jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => KeyFamily::Okp,
        // `oct` (shared secret) keys would allow HS256 forgeries: never.
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::RS384) => Some(Algorithm::RS384),
        Some(KeyAlgorithm::RS512) => Some(Algorithm::RS512),
        Some(KeyAlgorithm::PS256) => Some(Algorithm::PS256),
        Some(KeyAlgorithm::PS384) => Some(Algorithm::PS384),
        Some(KeyAlgorithm::PS512) => Some(Algorithm::PS512),
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(KeyAlgorithm::ES384) => Some(Algorithm::ES384),
        Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
        Some(_) => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerificationKey {
        kid: jwk.common.key_id.clone(),
        key,
        alg,
        family,
    })
}

fn parse_max_age(cache_control: &str) -> Option<Duration> {
    cache_control
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Build a key set directly (tests and locally minted tokens).
pub fn keys_from_set(set: &JwkSet) -> Vec<VerificationKey> {
    set.keys.iter().filter_map(verification_key).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_parsing() {
        assert_eq!(
            parse_max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(parse_max_age("no-store"), None);
    }

    #[test]
    fn symmetric_keys_are_ignored() {
        let set: JwkSet =
            serde_json::from_str(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#).unwrap();
        assert!(keys_from_set(&set).is_empty());
    }
}
