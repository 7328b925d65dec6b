//! When the store counts as down: a judgement over several probes, not one.
//!
//! A probe that waits for a pooled connection can miss its deadline while
//! the store is fine (a replica that has just started opens its PostgreSQL
//! connections under load). Declaring the store down on one slow probe made
//! every MCP request on that replica 503 for a moment after each restart, so
//! it takes [`FAILURES_TO_DOWN`] failed probes in a row; one success is
//! enough to be up again. Even three in a row happened in a rolling restart
//! under load (a fresh pool handed out no connection for seconds while
//! PostgreSQL itself sat idle), so on PostgreSQL the probe has its own
//! connection ([`StoreProbe`]): it asks whether the database answers, not
//! whether the pool has a connection free.

use sqlx::{Connection, PgConnection};

use super::{Db, Store};

/// Failed probes in a row before the store counts as unreachable.
pub const FAILURES_TO_DOWN: u32 = 3;

#[derive(Debug)]
pub struct StoreHealth {
    up: bool,
    failures_in_a_row: u32,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            up: true,
            failures_in_a_row: 0,
        }
    }
}

impl StoreHealth {
    /// Record one probe; the verdict after it.
    pub fn record(&mut self, probe_ok: bool) -> bool {
        if probe_ok {
            self.failures_in_a_row = 0;
            self.up = true;
        } else {
            self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
            if self.failures_in_a_row >= FAILURES_TO_DOWN {
                self.up = false;
            }
        }
        self.up
    }
}

/// Asks the store for a round trip, for [`StoreHealth`].
pub struct StoreProbe {
    store: Store,
    /// PostgreSQL: the URL and the probe's own connection, once open.
    postgres: Option<(String, Option<PgConnection>)>,
}

impl StoreProbe {
    /// A probe of `store` (whose URL is `url`); on PostgreSQL its connection
    /// is opened now, so it exists before the first request arrives.
    pub async fn new(store: Store, url: &str) -> StoreProbe {
        let postgres = match store.db() {
            Db::Postgres(_) => Some((url.to_owned(), PgConnection::connect(url).await.ok())),
            Db::Sqlite(_) => None,
        };
        StoreProbe { store, postgres }
    }

    /// One round trip. The caller bounds its time; a probe cut short drops
    /// its connection (its state is unknown) and the next one opens another.
    pub async fn probe(&mut self) -> bool {
        let Some((url, connection)) = &mut self.postgres else {
            // SQLite is embedded: the pool is the store.
            return self.store.ping().await.is_ok();
        };
        let mut open = match connection.take() {
            Some(open) => open,
            None => match PgConnection::connect(url).await {
                Ok(open) => open,
                Err(_) => return false,
            },
        };
        let answered = sqlx::query("SELECT 1").execute(&mut open).await.is_ok();
        if answered {
            *connection = Some(open);
        }
        answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slow_probe_does_not_take_the_store_down_but_several_in_a_row_do() {
        let mut health = StoreHealth::default();
        assert!(health.record(false));
        assert!(health.record(true));
        for _ in 1..FAILURES_TO_DOWN {
            assert!(health.record(false));
        }
        assert!(!health.record(false));
        assert!(!health.record(false));
        assert!(health.record(true), "one success is enough to be up again");
    }
}
