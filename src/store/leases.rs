//! Background work that must run once across replicas (the sweep, the
//! re-sealing after a key change): [`Store::run_exclusively`] runs a job
//! only if no other replica is running it.
//!
//! On PostgreSQL the job holds a session advisory lock
//! (`pg_try_advisory_lock`) on a connection of its own for as long as it
//! runs; a replica that dies mid-job loses its connection and with it the
//! lock. SQLite is one replica's embedded database, so jobs there just run
//! (its writers are serialised anyway).

use sqlx::{Postgres, pool::PoolConnection};

use super::{Db, Store, StoreError};

/// The advisory-lock key of a job: a stable 64-bit FNV-1a hash of its name
/// (the same on every replica and every build), in a range of its own so it
/// cannot meet a number another application picked by hand.
pub(crate) fn lock_key(job: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "mcpgate:".bytes().chain(job.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// A held advisory lock. Unlocked by [`Lease::release`]; if the job is
/// dropped half-way (cancelled, panicked), the connection is taken out of
/// the pool and closed, which releases the lock on the server: a pooled
/// connection must never carry a lock into someone else's hands.
struct Lease {
    connection: Option<PoolConnection<Postgres>>,
    key: i64,
}

impl Lease {
    async fn release(mut self) {
        if let Some(mut connection) = self.connection.take() {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(self.key)
                .execute(&mut *connection)
                .await;
            if unlocked.is_err() {
                // Closing the session releases its locks.
                drop(connection.detach());
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            drop(connection.detach());
        }
    }
}

impl Store {
    /// Run `job` unless another replica is running the job named `name`
    /// right now: `Ok(Some(output))` when it ran here, `Ok(None)` when it
    /// was skipped (the other replica does the work).
    pub async fn run_exclusively<T>(
        &self,
        name: &str,
        job: impl Future<Output = T>,
    ) -> Result<Option<T>, StoreError> {
        let Db::Postgres(pool) = self.db() else {
            return Ok(Some(job.await));
        };
        let key = lock_key(name);
        let mut connection = pool.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *connection)
            .await?;
        if !locked {
            tracing::debug!(job = name, "running on another replica; skipped here");
            return Ok(None);
        }
        let lease = Lease {
            connection: Some(connection),
            key,
        };
        let output = job.await;
        lease.release().await;
        Ok(Some(output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        const PINNED: i64 = -5_321_566_183_579_068_522;
        // The key is part of the protocol between replicas of different
        // builds: it must never change for a name.
        assert_eq!(lock_key("sweep"), lock_key("sweep"));
        assert_ne!(lock_key("sweep"), lock_key("reseal"));
        assert_eq!(lock_key("sweep"), PINNED);
    }

    #[tokio::test]
    async fn on_sqlite_a_job_just_runs() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("lease.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        assert_eq!(
            store.run_exclusively("job", async { 7 }).await.unwrap(),
            Some(7)
        );
    }
}
