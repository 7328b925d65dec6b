//! State every replica must see the same way, or N replicas would give an
//! attacker N times the budget: fixed-window rate-limit counters, the
//! addresses an account signed in from, and outbound fetches that failed.
//!
//! Each counter hit is one statement (an upsert that restarts a window that
//! has passed and returns the new count), so concurrent hits on any number
//! of replicas are all counted. Times are epoch seconds.

use rusqlite::OptionalExtension;

use super::inline::Access;
use super::{Grants, Store, StoreError, on_db, on_pg};

/// A counter after a hit: its count in the current window and when that
/// window started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    pub count: i64,
    pub window_start: i64,
}

/// Why [`Store::take_from_window`] refused: the window is full and started
/// at `window_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowFull {
    pub window_start: i64,
}

/// `$1` key, `$2` now, `$3` window length, `$increment` how many events (a
/// literal or a parameter). A row whose window has passed
/// (`window_start <= now - window`) restarts at the increment.
macro_rules! upsert_hit {
    ($increment:literal, $condition:expr) => {
        concat!(
            "INSERT INTO rate_limits (key, hits, window_start, expires_at) VALUES ($1, ",
            $increment,
            ", $2, $2 + $3) \
             ON CONFLICT (key) DO UPDATE SET \
             hits = CASE WHEN rate_limits.window_start <= $2 - $3 THEN excluded.hits ELSE rate_limits.hits + excluded.hits END, \
             window_start = CASE WHEN rate_limits.window_start <= $2 - $3 THEN $2 ELSE rate_limits.window_start END, \
             expires_at = CASE WHEN rate_limits.window_start <= $2 - $3 THEN $2 + $3 ELSE rate_limits.expires_at END",
            $condition,
            " RETURNING hits, window_start"
        )
    };
}

impl Store {
    /// Count `events` (at least 1) for `key` in a window of `window_secs`
    /// and return the count so far, these included (over the limit too: the
    /// caller compares).
    pub async fn hit_window(
        &self,
        key: &str,
        events: i64,
        window_secs: i64,
        now: i64,
    ) -> Result<WindowCount, StoreError> {
        const SQL: &str = upsert_hit!("$4", "");
        let events = events.max(1);
        let (count, window_start): (i64, i64) = match self.grants() {
            Grants::Sqlite(db) => {
                let key = key.to_owned();
                db.run(Access::Ephemeral, move |conn| {
                    conn.prepare_cached(SQL)?
                        // By name: SQLite numbers `$n` parameters in the order
                        // they first appear, and `$4` comes before `$2` here.
                        .query_row(
                            rusqlite::named_params! {
                                "$1": key, "$2": now, "$3": window_secs, "$4": events
                            },
                            |row| Ok((row.get(0)?, row.get(1)?)),
                        )
                })
                .await?
            }
            Grants::Postgres(sets) => {
                on_pg!(sets.set(Access::Ephemeral), |conn| sqlx::query_as(SQL)
                    .bind(key)
                    .bind(now)
                    .bind(window_secs)
                    .bind(events)
                    .fetch_one(conn)
                    .await)?
            }
        };
        Ok(WindowCount {
            count,
            window_start,
        })
    }

    /// Take one of `limit` events from `key`'s window, only if one is left:
    /// the check and the count are one statement, so concurrent callers on
    /// any replica cannot all pass a check that only later counts them.
    pub async fn take_from_window(
        &self,
        key: &str,
        limit: i64,
        window_secs: i64,
        now: i64,
    ) -> Result<Result<WindowCount, WindowFull>, StoreError> {
        // `$4` limit: a full window that has not passed is left untouched and
        // returns no row.
        const SQL: &str = upsert_hit!(
            "1",
            " WHERE rate_limits.window_start <= $2 - $3 OR rate_limits.hits < $4"
        );
        const FULL: &str = "SELECT window_start FROM rate_limits WHERE key = $1";
        let taken: Option<(i64, i64)> = match self.grants() {
            Grants::Sqlite(db) => {
                let key = key.to_owned();
                db.run(Access::Ephemeral, move |conn| {
                    conn.prepare_cached(SQL)?
                        .query_row(rusqlite::params![key, now, window_secs, limit], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                        .optional()
                })
                .await?
            }
            Grants::Postgres(sets) => {
                on_pg!(sets.set(Access::Ephemeral), |conn| sqlx::query_as(SQL)
                    .bind(key)
                    .bind(now)
                    .bind(window_secs)
                    .bind(limit)
                    .fetch_optional(conn)
                    .await)?
            }
        };
        if let Some((count, window_start)) = taken {
            return Ok(Ok(WindowCount {
                count,
                window_start,
            }));
        }
        let window_start: Option<i64> = on_db!(self.db(), |pool| sqlx::query_scalar(FULL)
            .bind(key)
            .fetch_optional(pool)
            .await)?;
        Ok(Err(WindowFull {
            window_start: window_start.unwrap_or(now),
        }))
    }

    /// Give back one event taken in the window that started at
    /// `window_start`; nothing once a new window has begun.
    pub async fn give_back_to_window(
        &self,
        key: &str,
        window_start: i64,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE rate_limits SET hits = hits - 1 \
             WHERE key = $1 AND window_start = $2 AND hits > 0";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(key)
            .bind(window_start)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Forget `key`'s counter.
    pub async fn clear_window(&self, key: &str) -> Result<(), StoreError> {
        on_db!(self.db(), |pool| sqlx::query(
            "DELETE FROM rate_limits WHERE key = $1"
        )
        .bind(key)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Remember that `account` signed in from `address` until `expires_at`.
    pub async fn remember_login_address(
        &self,
        account: &str,
        address: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO login_known_addresses (account, address, expires_at) \
             VALUES ($1, $2, $3) ON CONFLICT (account, address) \
             DO UPDATE SET expires_at = excluded.expires_at";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(account)
            .bind(address)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Did `account` sign in from `address` recently enough (row not expired)?
    pub async fn is_known_login_address(
        &self,
        account: &str,
        address: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "SELECT 1 FROM login_known_addresses \
             WHERE account = $1 AND address = $2 AND expires_at > $3";
        let found: Option<i32> = on_db!(self.db(), |pool| sqlx::query_scalar(SQL)
            .bind(account)
            .bind(address)
            .bind(now)
            .fetch_optional(pool)
            .await)?;
        Ok(found.is_some())
    }

    /// Remember that the fetch behind `key` failed for `reason`, until `expires_at`.
    pub async fn remember_fetch_failure(
        &self,
        key: &str,
        reason: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO fetch_failures (key, reason, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET reason = excluded.reason, expires_at = excluded.expires_at";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(key)
            .bind(reason)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// A failure of the fetch behind `key` still standing at `now`: its
    /// reason and until when it stands.
    pub async fn fetch_failure(
        &self,
        key: &str,
        now: i64,
    ) -> Result<Option<(String, i64)>, StoreError> {
        const SQL: &str =
            "SELECT reason, expires_at FROM fetch_failures WHERE key = $1 AND expires_at > $2";
        Ok(on_db!(self.db(), |pool| sqlx::query_as(SQL)
            .bind(key)
            .bind(now)
            .fetch_optional(pool)
            .await)?)
    }

    /// Delete counters whose window ended, expired known addresses and
    /// failures; the number of rows removed.
    pub async fn sweep_limits(&self, now: i64) -> Result<u64, StoreError> {
        let mut removed = 0;
        for sql in [
            "DELETE FROM rate_limits WHERE expires_at <= $1",
            "DELETE FROM login_known_addresses WHERE expires_at <= $1",
            "DELETE FROM fetch_failures WHERE expires_at <= $1",
        ] {
            removed += on_db!(self.db(), |pool| sqlx::query(sql)
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("limits.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_window_counts_hits_and_restarts_once_it_has_passed() {
        let (_dir, store) = store().await;
        for expected in 1..=3 {
            assert_eq!(
                store.hit_window("k", 1, 60, 1000).await.unwrap().count,
                expected
            );
        }
        // Still inside the window at 1059, a new one at 1060.
        assert_eq!(store.hit_window("k", 1, 60, 1059).await.unwrap().count, 4);
        let fresh = store.hit_window("k", 1, 60, 1060).await.unwrap();
        assert_eq!(
            fresh,
            WindowCount {
                count: 1,
                window_start: 1060
            }
        );
        assert_eq!(
            store.hit_window("other", 1, 60, 1060).await.unwrap().count,
            1
        );
        // Several events at once (a lease): counted together, and a new
        // window starts at their number.
        assert_eq!(store.hit_window("k", 5, 60, 1061).await.unwrap().count, 6);
        assert_eq!(store.hit_window("k", 5, 60, 1120).await.unwrap().count, 5);
    }

    #[tokio::test]
    async fn take_refuses_a_full_window_without_counting_and_give_back_frees_a_slot() {
        let (_dir, store) = store().await;
        let first = store
            .take_from_window("k", 2, 300, 1000)
            .await
            .unwrap()
            .unwrap();
        store
            .take_from_window("k", 2, 300, 1010)
            .await
            .unwrap()
            .unwrap();
        let full = store.take_from_window("k", 2, 300, 1020).await.unwrap();
        assert_eq!(full, Err(WindowFull { window_start: 1000 }));
        // The refusal was not counted: one give-back opens exactly one slot.
        store
            .give_back_to_window("k", first.window_start)
            .await
            .unwrap();
        assert!(
            store
                .take_from_window("k", 2, 300, 1030)
                .await
                .unwrap()
                .is_ok()
        );
        assert!(
            store
                .take_from_window("k", 2, 300, 1030)
                .await
                .unwrap()
                .is_err()
        );
        // An old window's ticket cannot free a slot in a new one.
        let late = store
            .take_from_window("k", 2, 300, 1300)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(late.window_start, 1300);
        store
            .take_from_window("k", 2, 300, 1300)
            .await
            .unwrap()
            .unwrap();
        store.give_back_to_window("k", 1000).await.unwrap();
        assert!(
            store
                .take_from_window("k", 2, 300, 1301)
                .await
                .unwrap()
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_sweep_removes_only_what_has_expired() {
        let (_dir, store) = store().await;
        store.hit_window("old", 1, 60, 1000).await.unwrap();
        store.hit_window("new", 1, 60, 1050).await.unwrap();
        store
            .remember_login_address("acct", "addr", 1100)
            .await
            .unwrap();
        store
            .remember_fetch_failure("cimd:x", "unreachable", 1060)
            .await
            .unwrap();
        assert!(
            store
                .is_known_login_address("acct", "addr", 1099)
                .await
                .unwrap()
        );
        assert!(
            !store
                .is_known_login_address("acct", "addr", 1100)
                .await
                .unwrap()
        );
        assert_eq!(
            store.fetch_failure("cimd:x", 1059).await.unwrap(),
            Some(("unreachable".to_owned(), 1060))
        );
        assert_eq!(store.fetch_failure("cimd:x", 1060).await.unwrap(), None);
        // At 1060: "old" (ended 1060) and the failure go; "new" and the address stay.
        assert_eq!(store.sweep_limits(1060).await.unwrap(), 2);
        assert_eq!(store.hit_window("new", 1, 60, 1061).await.unwrap().count, 2);
        assert!(
            store
                .is_known_login_address("acct", "addr", 1061)
                .await
                .unwrap()
        );
    }
}
