//! The store: every piece of persistent state, on SQLite (embedded default)
//! or PostgreSQL (shared by replicas), from one SQL text.
//!
//! Both drivers bind `$N` placeholders, so each query is written once and run
//! through [`on_db!`] against whichever typed pool is configured. Timestamps
//! are epoch seconds (`BIGINT`), ids are text.
//!
//! What replicas must agree on lives here, not in a process: rate-limit
//! counters and failed fetches (`limits`), single-use values (`oauth`), and
//! which replica runs a background job (`leases`, PostgreSQL advisory locks).

mod bridge;
mod dedicated;
mod federation;
mod funnel;
mod health;
pub(crate) mod inline;
mod leases;
mod limits;
mod mcp_events;
mod mcp_post_streams;
mod mcp_sessions;
mod notes;
mod oauth;
mod upstream_user_tokens;

pub use bridge::{BridgeClientRecord, BridgeCodeRecord, BridgeRequestRecord, BridgeStage};
pub use federation::{IdpLoginRecord, IdpTokenRecord, NO_PASSWORD};
pub use funnel::{
    FUNNEL_INSERT_MAX_ROWS, FUNNEL_MAX_ROWS, FUNNEL_TTL_SECS, FunnelAttempt, FunnelRow, FunnelStep,
    GRANT_ATTEMPT_PREFIX, NewFunnelRow, USER_ATTEMPT_PREFIX, join_attempts,
};
pub use health::{StoreHealth, StoreProbe};
pub use limits::{WindowCount, WindowFull};
pub use mcp_events::{McpEvent, McpStreamView};
pub use mcp_post_streams::{McpListener, McpPostEvent, McpWake, RelayedResponse};
pub use mcp_sessions::{LEGACY_SSE, McpSessionRecord, RelayListener, RelayedMessage, STREAMABLE};
pub use notes::{Note, NoteDraft, NotePatch};
pub use oauth::{
    AuthRequestRecord, ClientActivity, ClientRecord, CodeRecord, Consumed, GrantRecord, NewRefresh,
    RefreshRecord, SealedColumn, SigningKeyRecord, Swept, UserRecord,
};
pub use upstream_user_tokens::{
    ATTEMPT_CONTEXT, CLIENT_CONTEXT, ConnectAttemptRecord, TOKENS_CONTEXT, UserTokenRecord,
};

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use std::sync::Arc;

use sqlx::{
    PgConnection, PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store URL is invalid: {0}")]
    InvalidUrl(String),
    #[error("store migration failed: {0}")]
    Migration(String),
    #[error("conflict: {0}")]
    Conflict(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        // Driver errors can echo connection strings; keep only the kind.
        let text = match &err {
            sqlx::Error::Database(db) => {
                format!("database error {}", db.code().unwrap_or_default())
            }
            sqlx::Error::PoolTimedOut => "timed out waiting for a connection".to_owned(),
            sqlx::Error::PoolClosed => "connection pool closed".to_owned(),
            sqlx::Error::Io(io) => format!("i/o error: {}", io.kind()),
            sqlx::Error::Tls(_) => "tls error".to_owned(),
            sqlx::Error::Protocol(_) => "protocol error".to_owned(),
            sqlx::Error::RowNotFound => "row not found".to_owned(),
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => "decode error".to_owned(),
            _ => "driver error".to_owned(),
        };
        StoreError::Unavailable(text)
    }
}

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run the same body against whichever pool backs `$db`.
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// Run one statement (`$body`, a `Result<_, sqlx::Error>` using `$conn`) on
/// one of the grants' dedicated PostgreSQL connections (see [`dedicated`]).
macro_rules! on_pg {
    ($set:expr, |$conn:ident| $body:expr) => {{
        let mut held = $set.get().await?;
        let result = {
            let $conn = held.conn()?;
            $body
        };
        held.settle(result)
    }};
}
pub(crate) use on_pg;

/// One statement of the sign-in and grant paths where the grants run:
/// `$sqlite` (a `rusqlite::Result`, given a `&mut rusqlite::Connection`, run
/// in place; it owns what it uses) or `$postgres` (a `Result<_, sqlx::Error>`
/// on a dedicated connection).
macro_rules! on_grants {
    ($store:expr, $access:expr,
     sqlite: |$lite:ident| $sqlite:expr,
     postgres: |$pg:ident| $postgres:expr $(,)?) => {{
        let access: $crate::store::inline::Access = $access;
        match $store.grants() {
            $crate::store::Grants::Sqlite(db) => db.run(access, move |$lite| $sqlite).await,
            $crate::store::Grants::Postgres(sets) => {
                $crate::store::on_pg!(sets.set(access), |$pg| $postgres)
            }
        }
    }};
}
pub(crate) use on_grants;

/// Handle to the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    /// Where the token grants read and write (see [`Grants`]).
    grants: Grants,
}

/// The token grants' connections, outside sqlx's pool. SQLite: statements
/// run on the calling thread (see [`inline`]); PostgreSQL: dedicated
/// connections, one round trip per statement (see [`dedicated`]).
#[derive(Clone, Debug)]
pub(crate) enum Grants {
    Sqlite(Arc<inline::InlineSqlite>),
    Postgres(Arc<PgGrants>),
}

/// The grants' PostgreSQL connections, in two sets by what a commit waits
/// for. A commit that waits for the WAL flush costs an fsync, which on a
/// busy or network-attached disk is milliseconds: the tokens, redemptions
/// and registrations pay it; the sign-in path's bookkeeping
/// ([`inline::Access::Ephemeral`]) does not, and the durable commit that
/// issues the tokens at the end of a flow flushes it anyway.
#[derive(Debug)]
pub(crate) struct PgGrants {
    durable: dedicated::Dedicated<PgConnection>,
    /// `synchronous_commit = off` for the connection's whole session.
    ephemeral: dedicated::Dedicated<PgConnection>,
}

impl PgGrants {
    /// `max_connections` of the store's budget: half for durable writes
    /// and reads, an eighth (at least one) for ephemeral writes.
    fn new(options: &PgConnectOptions, max_connections: u32) -> Self {
        let (durable, ephemeral) = Self::shares(max_connections);
        PgGrants {
            durable: dedicated::Dedicated::new(options.clone(), durable as usize),
            ephemeral: dedicated::Dedicated::new(
                options.clone().options([("synchronous_commit", "off")]),
                ephemeral as usize,
            ),
        }
    }

    /// `(durable, ephemeral)` connections out of `max_connections`.
    fn shares(max_connections: u32) -> (u32, u32) {
        ((max_connections / 2).max(1), (max_connections / 8).max(1))
    }

    /// The connections for a statement of this kind.
    pub(crate) fn set(&self, access: inline::Access) -> &dedicated::Dedicated<PgConnection> {
        match access {
            inline::Access::Ephemeral => &self.ephemeral,
            inline::Access::Read | inline::Access::Write => &self.durable,
        }
    }

    async fn close(&self) {
        self.durable.close().await;
        self.ephemeral.close().await;
    }
}

impl Store {
    /// Connect, creating the SQLite file if needed, and apply migrations.
    ///
    /// `max_connections` is shared out: SQLite gets that many pooled
    /// connections, plus the grants' own (as many as run at once);
    /// PostgreSQL splits it between the pool and the grants' two sets of
    /// connections (at least one each, see [`PgGrants`]), so the server
    /// never sees more than `max(max_connections, 3)` from one replica.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let db = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|_| StoreError::InvalidUrl("not a valid sqlite:// URL".to_owned()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let file = options.get_filename().to_path_buf();
            let on_disk = file.as_os_str() != ":memory:" && !file.as_os_str().is_empty();
            if on_disk {
                create_private_file(&file)?;
            }
            // No ping before each checkout: an embedded database cannot have
            // hung up, and the ping is one more hand-off to the connection's
            // worker thread per statement.
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(5))
                .test_before_acquire(false)
                .connect_with(options.clone())
                .await?;
            if on_disk {
                // SQLite creates -wal and -shm on first use; older installs may
                // have a world-readable database from before this check.
                restrict_sqlite_files(&file);
            }
            Self::migrate(&Db::Sqlite(pool.clone())).await?;
            Store {
                db: Db::Sqlite(pool),
                grants: Grants::Sqlite(Arc::new(inline::InlineSqlite::new(&options))),
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|_| StoreError::InvalidUrl("not a valid postgres:// URL".to_owned()))?;
            let (durable, ephemeral) = PgGrants::shares(max_connections);
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.saturating_sub(durable + ephemeral).max(1))
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options.clone())
                .await?;
            Self::migrate(&Db::Postgres(pool.clone())).await?;
            Store {
                db: Db::Postgres(pool),
                grants: Grants::Postgres(Arc::new(PgGrants::new(&options, max_connections))),
            }
        } else {
            return Err(StoreError::InvalidUrl(
                "expected sqlite:// or postgres://".to_owned(),
            ));
        };
        Ok(db)
    }

    async fn migrate(db: &Db) -> Result<(), StoreError> {
        let result = match db {
            Db::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await,
            Db::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
        };
        result.map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// `sqlite` or `postgres`, for metrics and logs.
    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// A round trip to the database; what `/readyz` asks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn close(&self) {
        if let Grants::Postgres(sets) = &self.grants {
            sets.close().await;
        }
        on_db!(&self.db, |pool| pool.close().await);
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// Where the token grants read and write.
    pub(crate) fn grants(&self) -> &Grants {
        &self.grants
    }
}

/// The SQLite file (and its directory, when it has to be made) readable by
/// mcpgate's user only, whatever the umask: it holds password hashes and
/// sealed secrets. Creating the file before SQLite opens it leaves no moment
/// in which it exists with wider permissions.
fn create_private_file(file: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let failed = |what: &Path, e: std::io::Error| {
        StoreError::Unavailable(format!("cannot create {}: {}", what.display(), e.kind()))
    };
    if let Some(parent) = file.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| failed(parent, e))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(failed(file, e)),
    }
}

/// Take group and other permissions off the database and its side files.
fn restrict_sqlite_files(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0
            && let Err(e) =
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o700))
        {
            tracing::warn!(
                file = %path.display(),
                error = %e.kind(),
                "cannot make the database private to this user"
            );
        }
    }
}

/// Seconds since the Unix epoch, from the system clock (the store's own
/// bookkeeping: creation and update times, password changes).
pub fn now_epoch() -> i64 {
    use crate::clock::Clock;
    crate::clock::SystemClock.now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn ephemeral_writes_get_their_own_connections_within_the_budget() {
        assert_eq!(PgGrants::shares(8), (4, 1));
        assert_eq!(PgGrants::shares(1), (1, 1));
        assert_eq!(PgGrants::shares(32), (16, 4));
        for max in 1..=64 {
            let (durable, ephemeral) = PgGrants::shares(max);
            let pool = max.saturating_sub(durable + ephemeral).max(1);
            assert!(pool + durable + ephemeral <= max.max(3), "{max}");
        }
    }

    /// The ephemeral connections' commits do not wait for the WAL flush;
    /// the durable ones keep what the URL (or the server) says.
    #[tokio::test]
    async fn only_ephemeral_connections_commit_without_waiting_for_the_flush() {
        let Ok(url) = std::env::var("MCPGATE_TEST_POSTGRES_URL") else {
            eprintln!("MCPGATE_TEST_POSTGRES_URL not set: skipping");
            return;
        };
        // The URL asks for flushed commits, as a production server has them
        // (the test cluster turns them off server-wide).
        let join = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{join}options=-c%20synchronous_commit%3Don");
        let store = Store::connect(&url, 8).await.unwrap();
        let Grants::Postgres(sets) = store.grants() else {
            panic!("a postgres:// URL gives PostgreSQL grants");
        };
        async fn setting(set: &dedicated::Dedicated<PgConnection>) -> Result<String, StoreError> {
            on_pg!(set, |conn| sqlx::query_scalar::<_, String>(
                "SELECT setting FROM pg_settings WHERE name = 'synchronous_commit'"
            )
            .fetch_one(conn)
            .await)
        }
        assert_eq!(
            setting(sets.set(inline::Access::Ephemeral)).await.unwrap(),
            "off"
        );
        assert_eq!(
            setting(sets.set(inline::Access::Write)).await.unwrap(),
            "on"
        );
        assert_eq!(setting(sets.set(inline::Access::Read)).await.unwrap(), "on");
        store.close().await;
    }

    #[test]
    fn an_existing_world_readable_database_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("mcpgate.db");
        for name in ["mcpgate.db", "mcpgate.db-wal"] {
            let path = dir.path().join(name);
            std::fs::write(&path, b"").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        restrict_sqlite_files(&db);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&dir.path().join("mcpgate.db-wal")), 0o600);
    }

    #[test]
    fn a_new_database_and_its_directory_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a/b/mcpgate.db");
        create_private_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
    }
}
