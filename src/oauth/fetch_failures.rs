//! Failed outbound fetches of URLs a client chose (metadata documents, key
//! sets), remembered for a short while so that the URL is not fetched again
//! at every request. The memory is shared through the store: a failure one
//! replica saw stands on every replica until it expires, so N replicas do
//! not fetch an attacker's URL N times. A copy is kept in memory too; it has
//! the same expiry, so it only ever spares a store round trip.

use std::time::{Duration, Instant};

use crate::{clock::SharedClock, store::Store};

/// A fetch error that can be remembered across replicas.
pub trait SharedFailure: Clone + Send + Sync + 'static {
    /// The text stored for other replicas; `None` for a failure that says
    /// something about this replica only (its fetch cap was reached).
    fn to_reason(&self) -> Option<String>;
    /// The failure another replica stored.
    fn from_reason(reason: &str) -> Self;
}

pub struct FailureMemory<E: SharedFailure> {
    /// Prefixes the store key, so kinds of fetches never mix.
    kind: &'static str,
    ttl: Duration,
    local: moka::sync::Cache<String, (E, Instant)>,
    store: Option<Store>,
}

impl<E: SharedFailure> FailureMemory<E> {
    pub fn new(kind: &'static str, ttl: Duration) -> Self {
        FailureMemory {
            kind,
            ttl,
            local: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            store: None,
        }
    }

    /// Share failures with the other replicas through `store`.
    pub fn shared(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    fn store_key(&self, url: &str) -> String {
        // A digest: URLs can be long, and keys are indexed.
        format!("{}|{}", self.kind, super::crypto::sha256_b64(url))
    }

    /// The failure of `url` that still stands, here or on another replica.
    /// A store that cannot be read counts as knowing none: the fetch itself
    /// is still fenced and capped.
    pub async fn standing(&self, url: &str, clock: &SharedClock) -> Option<E> {
        if let Some((failed, until)) = self.local.get(url) {
            if until > clock.instant() {
                return Some(failed);
            }
            self.local.invalidate(url);
        }
        let store = self.store.as_ref()?;
        match store.fetch_failure(&self.store_key(url), clock.now()).await {
            Ok(Some((reason, until))) => {
                let failed = E::from_reason(&reason);
                let left = Duration::from_secs((until - clock.now()).max(0).unsigned_abs());
                self.local
                    .insert(url.to_owned(), (failed.clone(), clock.instant() + left));
                Some(failed)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, kind = self.kind, "cannot read remembered fetch failures");
                None
            }
        }
    }

    /// Remember that fetching `url` failed with `failed`, here and (unless it
    /// is about this replica only) for every replica.
    pub async fn remember(&self, url: &str, failed: &E, clock: &SharedClock) {
        self.local
            .insert(url.to_owned(), (failed.clone(), clock.instant() + self.ttl));
        let (Some(store), Some(reason)) = (self.store.as_ref(), failed.to_reason()) else {
            return;
        };
        let until = clock.now() + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX).max(1);
        if let Err(e) = store
            .remember_fetch_failure(&self.store_key(url), &reason, until)
            .await
        {
            tracing::warn!(error = %e, kind = self.kind, "cannot share a fetch failure");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[derive(Debug, Clone, PartialEq)]
    enum Failed {
        Shared(String),
        LocalOnly,
    }

    impl SharedFailure for Failed {
        fn to_reason(&self) -> Option<String> {
            match self {
                Failed::Shared(r) => Some(r.clone()),
                Failed::LocalOnly => None,
            }
        }
        fn from_reason(reason: &str) -> Self {
            Failed::Shared(reason.to_owned())
        }
    }

    #[tokio::test]
    async fn a_failure_stands_on_every_replica_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("f.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let clock: SharedClock = ManualClock::new();
        let manual = ManualClock::new();
        let clock_b: SharedClock = manual.clone();
        let a = FailureMemory::<Failed>::new("t", Duration::from_secs(60)).shared(store.clone());
        let b = FailureMemory::<Failed>::new("t", Duration::from_secs(60)).shared(store.clone());
        a.remember("https://x/doc", &Failed::Shared("404".into()), &clock)
            .await;
        a.remember("https://x/busy", &Failed::LocalOnly, &clock)
            .await;
        assert_eq!(
            b.standing("https://x/doc", &clock_b).await,
            Some(Failed::Shared("404".into()))
        );
        // Only this replica's own condition is not shared.
        assert_eq!(b.standing("https://x/busy", &clock_b).await, None);
        assert_eq!(
            a.standing("https://x/busy", &clock).await,
            Some(Failed::LocalOnly)
        );
        // B's copy expires when the stored failure does.
        manual.advance(Duration::from_secs(61));
        assert_eq!(b.standing("https://x/doc", &clock_b).await, None);
        // Another kind never sees it.
        let other = FailureMemory::<Failed>::new("u", Duration::from_secs(60)).shared(store);
        assert_eq!(other.standing("https://x/doc", &clock).await, None);
    }
}
