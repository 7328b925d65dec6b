//! Connections kept outside sqlx's pool for the token grants.
//!
//! sqlx's pool tests every connection when it comes back (a ping: one more
//! hand-off to the connection's worker thread on SQLite, one more network
//! round trip and backend wake-up on PostgreSQL, and on PostgreSQL another
//! ping before each checkout), so a one-statement read costs two or three
//! round trips there. The grants' statements run on these connections
//! instead: one round trip each.
//!
//! What the pool's tests were for is kept: a connection whose statement
//! failed at the connection level, or whose caller went away mid-statement
//! (its state is then unknown), is closed and replaced on the next use; one
//! idle for longer than [`IDLE_PING_AFTER`] is pinged before use, so a
//! restarted PostgreSQL costs a reconnect, not a failed grant.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Mutex, MutexGuard};

use super::StoreError;

/// A connection idle this long is pinged before it is used.
pub(crate) const IDLE_PING_AFTER: Duration = Duration::from_secs(30);

/// A fixed set of connections, opened on first use.
pub(crate) struct Dedicated<C: Connection> {
    options: <C as Connection>::Options,
    slots: Box<[Mutex<Slot<C>>]>,
    /// Which busy slot the next caller queues on when none is free.
    next: AtomicUsize,
}

struct Slot<C> {
    conn: Option<C>,
    last_used: Instant,
}

impl<C: Connection> std::fmt::Debug for Dedicated<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedicated")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<C: Connection> Dedicated<C> {
    pub(crate) fn new(options: <C as Connection>::Options, slots: usize) -> Self {
        Dedicated {
            options,
            slots: (0..slots.max(1))
                .map(|_| {
                    Mutex::new(Slot {
                        conn: None,
                        last_used: Instant::now(),
                    })
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A connection for one statement: the first free one, else a wait
    /// for one (round robin over the busy ones).
    pub(crate) async fn get(&self) -> Result<Held<'_, C>, StoreError> {
        let free = self.slots.iter().find_map(|slot| slot.try_lock().ok());
        let mut slot = match free {
            Some(slot) => slot,
            None => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
                self.slots[i].lock().await
            }
        };
        if slot.last_used.elapsed() >= IDLE_PING_AFTER
            && let Some(conn) = slot.conn.as_mut()
            && conn.ping().await.is_err()
        {
            slot.conn = None;
        }
        if slot.conn.is_none() {
            slot.conn = Some(self.options.connect().await?);
        }
        Ok(Held {
            slot,
            settled: true,
        })
    }

    /// Close every connection (at shutdown).
    pub(crate) async fn close(&self) {
        for slot in self.slots.iter() {
            if let Some(conn) = slot.lock().await.conn.take()
                && conn.close().await.is_err()
            {
                tracing::debug!("a dedicated store connection did not close cleanly");
            }
        }
    }
}

/// A checked-out connection. Dropped without [`Held::settle`] after
/// [`Held::conn`] (its caller cancelled mid-statement), the connection is
/// closed rather than reused in an unknown state.
pub(crate) struct Held<'a, C> {
    slot: MutexGuard<'a, Slot<C>>,
    settled: bool,
}

impl<C> Held<'_, C> {
    pub(crate) fn conn(&mut self) -> Result<&mut C, StoreError> {
        self.settled = false;
        self.slot
            .conn
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("store connection lost".to_owned()))
    }

    /// The statement's result; a connection-level failure closes the
    /// connection (the next use opens a new one).
    pub(crate) fn settle<T>(mut self, result: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        self.settled = true;
        self.slot.last_used = Instant::now();
        if let Err(e) = &result
            && connection_level(e)
        {
            self.slot.conn = None;
        }
        result.map_err(StoreError::from)
    }
}

impl<C> Drop for Held<'_, C> {
    fn drop(&mut self) {
        if !self.settled {
            self.slot.conn = None;
        }
    }
}

/// Errors after which the connection is not trusted again. A statement's
/// own failure (a constraint, a missing row, a value that does not decode)
/// leaves the connection as good as before.
fn connection_level(e: &sqlx::Error) -> bool {
    !matches!(
        e,
        sqlx::Error::Database(_)
            | sqlx::Error::RowNotFound
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
    use std::str::FromStr;

    fn memory() -> Dedicated<SqliteConnection> {
        Dedicated::new(
            SqliteConnectOptions::from_str("sqlite::memory:").unwrap(),
            2,
        )
    }

    async fn temp_table_exists(held: &mut Held<'_, SqliteConnection>) -> bool {
        sqlx::query("SELECT 1 FROM t")
            .fetch_optional(held.conn().unwrap())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_settled_connection_is_reused_and_a_statement_error_keeps_it() {
        let set = memory();
        let mut held = set.get().await.unwrap();
        let r = sqlx::query("CREATE TEMP TABLE t (x INTEGER)")
            .execute(held.conn().unwrap())
            .await;
        held.settle(r).unwrap();
        // A TEMP table is seen by its own connection only: finding it
        // again means the same connection came back.
        let mut held = set.get().await.unwrap();
        let r = sqlx::query("SELECT nope FROM t")
            .execute(held.conn().unwrap())
            .await;
        assert!(held.settle(r).is_err());
        let mut held = set.get().await.unwrap();
        assert!(temp_table_exists(&mut held).await);
    }

    #[tokio::test]
    async fn a_connection_abandoned_mid_statement_is_replaced() {
        let set = memory();
        let mut held = set.get().await.unwrap();
        let r = sqlx::query("CREATE TEMP TABLE t (x INTEGER)")
            .execute(held.conn().unwrap())
            .await;
        held.settle(r).unwrap();
        let mut held = set.get().await.unwrap();
        let _ = held.conn().unwrap();
        drop(held); // as a cancelled caller would
        let mut held = set.get().await.unwrap();
        assert!(!temp_table_exists(&mut held).await);
    }

    #[tokio::test]
    async fn callers_beyond_the_slots_wait_for_one() {
        let set = std::sync::Arc::new(memory());
        let a = set.get().await.unwrap();
        let b = set.get().await.unwrap();
        let waiter = {
            let set = set.clone();
            tokio::spawn(async move { set.get().await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop((a, b));
        waiter.await.unwrap().unwrap();
    }
}
