//! The token grants' SQLite statements, run on the calling thread.
//!
//! sqlx runs every SQLite connection on a worker thread of its own, so each
//! statement is a hand-off there and a wake-up back: on a small (virtual)
//! machine two thread wake-ups cost more than the statement, a page-cache
//! read or a WAL append of some microseconds. The grants run a handful of
//! such statements per request, so they run them here, directly.
//!
//! What must not happen on an async worker is a wait: these connections have
//! no busy timeout, and a statement that finds SQLite's lock taken (another
//! connection writing) is run again on a blocking thread with the usual
//! timeout. Writes of this process take turns on a mutex first, so they do
//! not find the lock taken by each other. Nor do they checkpoint the WAL as
//! they commit (that can fsync): every [`CHECKPOINT_EVERY`] commits a
//! checkpoint runs on a blocking thread instead, its last pass holding the
//! write turn so that every frame is copied and the WAL starts over.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::StoreError;

/// Commits between two WAL checkpoints (SQLite's own default is 1000 pages;
/// a grant writes a few).
pub(crate) const CHECKPOINT_EVERY: u64 = 256;

/// The WAL's size left on disk once it starts over, in bytes.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Checkpoint passes run beside the writes before the one that holds the
/// write turn: each copies what was written during the one before.
const PASSES_BESIDE_WRITES: usize = 3;

/// How long a statement run off the async worker waits for SQLite's lock,
/// as the pool's connections do.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections to one SQLite database, opened on demand and kept while idle.
/// As many exist as statements run at once, which is at most the number of
/// runtime threads plus the blocking retries.
pub(crate) struct InlineSqlite {
    target: Target,
    idle: Mutex<Vec<Connection>>,
    /// Held by a write while it runs, in place or, when it waits for
    /// SQLite's lock, on a blocking thread: this process's writes queue
    /// here (woken in order) rather than in SQLite's busy handler, which
    /// polls with sleeps of 1, 2, 5, 10 ms... An async mutex, so a write
    /// that waits its turn does not block a runtime thread.
    write_turn: Arc<tokio::sync::Mutex<()>>,
    commits: AtomicU64,
    /// Statements that found SQLite's lock taken and waited off the runtime.
    waited: AtomicU64,
    checkpointing: Arc<AtomicBool>,
}

/// What a connection opens: the database file, or sqlx's shared in-memory
/// database (so the pool and these connections see the same data).
#[derive(Debug, Clone)]
enum Target {
    File(PathBuf),
    SharedMemory(String),
}

impl std::fmt::Debug for InlineSqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineSqlite")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Does the statement write, and must its commit survive a crash of the
/// database host? Writes count towards the next checkpoint. SQLite treats
/// both kinds of write alike (`synchronous = NORMAL`: no commit waits for
/// a flush); PostgreSQL runs [`Access::Ephemeral`] writes on connections
/// whose commits do not wait for the WAL flush (see `store::PgGrants`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    /// A write whose commit is on disk before the caller goes on.
    Write,
    /// A write whose loss in a crash of the database host makes someone
    /// repeat a step, never reopens one: rate-limit counts, pending
    /// authorization requests, issued but unredeemed codes, remembered
    /// consents. WAL is written in order, so the next durable commit (a
    /// code's redemption, say) flushes every ephemeral one before it.
    Ephemeral,
}

impl Access {
    pub(crate) fn writes(self) -> bool {
        self != Access::Read
    }
}

impl InlineSqlite {
    /// Connections to the database sqlx's `options` name.
    pub(crate) fn new(options: &sqlx::sqlite::SqliteConnectOptions) -> Self {
        let file = options.get_filename();
        let name = file.to_string_lossy();
        let target = if name.starts_with("file:sqlx-in-memory-") {
            Target::SharedMemory(format!("{name}?mode=memory&cache=shared"))
        } else {
            Target::File(file.to_path_buf())
        };
        InlineSqlite {
            target,
            idle: Mutex::new(Vec::new()),
            write_turn: Arc::new(tokio::sync::Mutex::new(())),
            commits: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            checkpointing: Arc::new(AtomicBool::new(false)),
        }
    }

    fn open(target: &Target) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = match target {
            Target::File(path) => Connection::open_with_flags(path, flags)?,
            Target::SharedMemory(uri) => Connection::open_with_flags(
                uri,
                flags | OpenFlags::SQLITE_OPEN_SHARED_CACHE | OpenFlags::SQLITE_OPEN_MEMORY,
            )?,
        };
        // The pool's settings (the journal mode is the file's own, WAL).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // A WAL a burst made long (a reader kept it from starting over) is
        // cut back to this when it does.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        conn.busy_timeout(Duration::ZERO)?;
        Ok(conn)
    }

    fn take(&self) -> rusqlite::Result<Connection> {
        let idle = self.idle.lock().map(|mut idle| idle.pop());
        match idle {
            Ok(Some(conn)) => Ok(conn),
            _ => Self::open(&self.target),
        }
    }

    fn put_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }

    /// Run `work` on a connection: here, or, when SQLite's lock is taken,
    /// on a blocking thread that waits for it. `work` runs its statements
    /// in a transaction of its own when it has more than one (it may run
    /// twice, so a failed first run must have changed nothing).
    pub(crate) async fn run<T, F>(&self, access: Access, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let mut conn = self.take().map_err(StoreError::from)?;
        // This process's writers take turns here (each holds the turn for
        // the few microseconds its statements run) instead of colliding in
        // SQLite's lock. Only a writer outside these connections (sqlx's
        // pool) can still hold that lock.
        let turn = match access.writes() {
            true => Some(self.write_turn.clone().lock_owned().await),
            false => None,
        };
        let first = work(&mut conn);
        let result = match first {
            Err(e) if busy(&e) => {
                self.waited.fetch_add(1, Ordering::Relaxed);
                let waited = tokio::task::spawn_blocking(move || {
                    // The turn stays taken while this write waits, so the
                    // others queue behind it instead of colliding too.
                    let _turn = turn;
                    conn.busy_timeout(BUSY_TIMEOUT)?;
                    let result = work(&mut conn);
                    conn.busy_timeout(Duration::ZERO)?;
                    Ok::<_, rusqlite::Error>((conn, result))
                })
                .await
                .map_err(task_failed)?;
                match waited {
                    Ok((back, result)) => {
                        conn = back;
                        result
                    }
                    // The connection could not be reset: it is dropped.
                    Err(e) => return Err(e.into()),
                }
            }
            other => {
                drop(turn);
                other
            }
        };
        match &result {
            // A statement's own failure leaves the connection as it was;
            // anything else (I/O, a broken file) closes it.
            Ok(_) => {
                if access.writes() {
                    self.count_commit();
                }
                self.put_back(conn);
            }
            Err(e) if statement_level(e) && conn.is_autocommit() => self.put_back(conn),
            Err(_) => drop(conn),
        }
        result.map_err(StoreError::from)
    }

    fn count_commit(&self) {
        let n = self.commits.fetch_add(1, Ordering::Relaxed) + 1;
        if !n.is_multiple_of(CHECKPOINT_EVERY) || self.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (target, running, turn) = (
            self.target.clone(),
            self.checkpointing.clone(),
            self.write_turn.clone(),
        );
        let conn = self.take();
        tokio::spawn(async move {
            // Under a steady load a checkpoint that writes run beside never
            // copies the frames appended meanwhile, so the WAL never starts
            // over and grows without end (90 MB/s was seen at 3000
            // refreshes/s). So it runs beside the writes first, copying the
            // bulk (and waiting for the flushes), again for what was
            // written meanwhile, each pass shorter, and last holding the
            // write turn, which stops our writes only for the few frames
            // left. The next commit then writes the WAL from its start again.
            let ran = async {
                let conn = tokio::task::spawn_blocking(move || {
                    let conn = conn.or_else(|_| Self::open(&target))?;
                    for _ in 0..PASSES_BESIDE_WRITES {
                        checkpoint(&conn)?;
                    }
                    Ok::<_, rusqlite::Error>(conn)
                })
                .await
                .map_err(task_failed)??;
                let turn = turn.lock_owned().await;
                tokio::task::spawn_blocking(move || {
                    let _turn = turn;
                    checkpoint(&conn)
                })
                .await
                .map_err(task_failed)??;
                Ok::<_, StoreError>(())
            };
            if let Err(e) = ran.await {
                tracing::debug!(error = %e, "WAL checkpoint did not run");
            }
            running.store(false, Ordering::Release);
        });
    }

    /// How many commits these connections made (tests).
    #[cfg(test)]
    fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// How many statements waited for the lock on a blocking thread (tests).
    #[cfg(test)]
    fn waited(&self) -> u64 {
        self.waited.load(Ordering::Relaxed)
    }
}

/// A blocking task that panicked or was cancelled.
fn task_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::Unavailable(format!("store task failed: {e}"))
}

/// PASSIVE: copies what no reader still needs, waits for nobody.
fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// SQLite's lock is held by another connection.
fn busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Errors of the statement, not of the connection.
fn statement_level(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::QueryReturnedNoRows
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::InvalidColumnIndex(_)
            | rusqlite::Error::InvalidColumnName(_)
    ) || e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        // As for sqlx's errors: the kind only, never a path or a value.
        let text = match &err {
            rusqlite::Error::SqliteFailure(e, _) => format!("database error {}", e.extended_code),
            rusqlite::Error::QueryReturnedNoRows => "row not found".to_owned(),
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..) => "decode error".to_owned(),
            _ => "driver error".to_owned(),
        };
        StoreError::Unavailable(text)
    }
}

/// A unique-key violation (a taken id).
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

    fn on_file(dir: &tempfile::TempDir) -> InlineSqlite {
        let path = dir.path().join("t.db");
        let setup = Connection::open(&path).unwrap();
        setup
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)",
            )
            .unwrap();
        InlineSqlite::new(
            &SqliteConnectOptions::new()
                .filename(&path)
                .journal_mode(SqliteJournalMode::Wal),
        )
    }

    fn insert(k: &'static str) -> impl Fn(&mut Connection) -> rusqlite::Result<usize> + Send {
        move |conn| conn.execute("INSERT INTO t (k, v) VALUES (?1, 1)", [k])
    }

    fn count(conn: &mut Connection) -> rusqlite::Result<i64> {
        conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
    }

    /// Another connection (as sqlx's pool would be) takes the write lock
    /// and holds it until told: the sender that releases it, and its thread.
    fn hold_the_lock(
        dir: &tempfile::TempDir,
    ) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let mut other = Connection::open(dir.path().join("t.db")).unwrap();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let tx = other
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            tx.execute("INSERT INTO t (k, v) VALUES ('held', 1)", [])
                .unwrap();
            locked_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            tx.commit().unwrap();
        });
        locked_rx.recv().unwrap();
        (release_tx, holder)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_finds_the_lock_taken_waits_for_it_off_the_async_thread() {
        let dir = tempfile::tempdir().unwrap();
        let db = on_file(&dir);
        // Another connection (as sqlx's pool would be) holds the write lock.
        let (release_tx, holder) = hold_the_lock(&dir);
        assert_eq!(db.waited(), 0);
        let write = tokio::spawn(async move {
            let n = db.run(Access::Write, insert("waited")).await;
            (db, n)
        });
        // The write is parked on a blocking thread, not failed.
        tokio::task::yield_now().await;
        assert!(!write.is_finished());
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        let (db, n) = write.await.unwrap();
        assert_eq!(n.unwrap(), 1);
        assert_eq!(db.waited(), 1);
        assert_eq!(db.run(Access::Read, count).await.unwrap(), 2);
        // The connection came back with no busy timeout: the next busy
        // statement must not wait on the async thread.
        let mut idle = db.idle.lock().unwrap();
        let conn = idle.pop().unwrap();
        let timeout: i64 = conn
            .query_row("PRAGMA busy_timeout", [], |row| row.get(0))
            .unwrap();
        assert_eq!(timeout, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_waiting_for_the_lock_keeps_the_turn_so_the_next_queues_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(on_file(&dir));
        let (release_tx, holder) = hold_the_lock(&dir);
        let first = tokio::spawn({
            let db = db.clone();
            async move { db.run(Access::Write, insert("first")).await }
        });
        // The first write is parked on a blocking thread, holding the turn.
        while db.waited() == 0 {
            tokio::task::yield_now().await;
        }
        let second = tokio::spawn({
            let db = db.clone();
            async move { db.run(Access::Ephemeral, insert("second")).await }
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished());
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(second.await.unwrap().unwrap(), 1);
        // The second waited for its turn, not in SQLite's busy handler.
        assert_eq!(db.waited(), 1);
        assert_eq!(db.run(Access::Read, count).await.unwrap(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_of_this_process_take_turns_instead_of_waiting_for_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(on_file(&dir));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let db = db.clone();
                tokio::spawn(async move {
                    for i in 0..200 {
                        db.run(Access::Write, move |conn| {
                            let tx = conn.transaction_with_behavior(
                                rusqlite::TransactionBehavior::Immediate,
                            )?;
                            tx.execute(
                                "INSERT INTO t (k, v) VALUES (?1, 1)",
                                [format!("{w}-{i}")],
                            )?;
                            tx.commit()
                        })
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        assert_eq!(db.run(Access::Read, count).await.unwrap(), 800);
        assert_eq!(db.waited(), 0, "a write collided with another of ours");
    }

    #[tokio::test]
    async fn a_statement_error_keeps_the_connection_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = on_file(&dir);
        db.run(Access::Write, insert("a")).await.unwrap();
        let again = db.run(Access::Write, insert("a")).await;
        assert!(
            matches!(again, Err(StoreError::Unavailable(ref text)) if text.starts_with("database error"))
        );
        assert_eq!(db.idle.lock().unwrap().len(), 1);
        assert_eq!(db.run(Access::Read, count).await.unwrap(), 1);
        assert_eq!(db.commits(), 1);
    }

    #[tokio::test]
    async fn a_transaction_that_fails_half_way_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = on_file(&dir);
        db.run(Access::Write, insert("taken")).await.unwrap();
        let failed = db
            .run(Access::Write, |conn| {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                tx.execute("INSERT INTO t (k, v) VALUES ('new', 1)", [])?;
                tx.execute("INSERT INTO t (k, v) VALUES ('taken', 1)", [])?;
                tx.commit()
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(db.run(Access::Read, count).await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_checkpoint_the_wal_now_and_then() {
        let dir = tempfile::tempdir().unwrap();
        let db = on_file(&dir);
        let file = dir.path().join("t.db");
        let size = || std::fs::metadata(&file).unwrap().len();
        let before = size();
        // Rows of 2 KiB: the database file must grow by about 256 pages
        // once they are checkpointed, and not before (these connections do
        // not checkpoint as they commit).
        for i in 0..CHECKPOINT_EVERY - 1 {
            db.run(Access::Write, move |conn| {
                conn.execute(
                    "INSERT INTO t (k, v) VALUES (?1, zeroblob(2048))",
                    [format!("k{i}")],
                )
            })
            .await
            .unwrap();
        }
        assert_eq!(size(), before, "no checkpoint before the count");
        db.run(Access::Write, insert("last")).await.unwrap();
        // The checkpoint runs on a blocking thread; wait for it to end.
        for _ in 0..500 {
            if !db.checkpointing.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!db.checkpointing.load(Ordering::Acquire));
        assert!(size() > before + 100 * 4096, "{} -> {}", before, size());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_a_steady_load() {
        let dir = tempfile::tempdir().unwrap();
        let db = on_file(&dir);
        let wal = dir.path().join("t.db-wal");
        let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        let write = |i: u64| {
            db.run(Access::Write, move |conn| {
                conn.execute(
                    "INSERT INTO t (k, v) VALUES (?1, zeroblob(2048))",
                    [format!("k{i}")],
                )
            })
        };
        // One interval's worth of frames, before any checkpoint.
        for i in 0..CHECKPOINT_EVERY - 1 {
            write(i).await.unwrap();
        }
        let one_interval = wal_size();
        assert!(one_interval > 0);
        // Writes go on without a pause while each checkpoint runs: the WAL
        // must be written from its start again, not grow by an interval
        // each time.
        for i in CHECKPOINT_EVERY - 1..10 * CHECKPOINT_EVERY {
            write(i).await.unwrap();
        }
        assert!(
            wal_size() <= 3 * one_interval,
            "WAL of {} bytes after 10 intervals of {one_interval}",
            wal_size()
        );
        assert_eq!(
            db.run(Access::Read, count).await.unwrap(),
            10 * CHECKPOINT_EVERY as i64
        );
    }

    #[tokio::test]
    async fn sqlx_shared_memory_database_is_the_same_database() {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").unwrap();
        let mut keep = sqlx::ConnectOptions::connect(&options).await.unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
            .execute(&mut keep)
            .await
            .unwrap();
        let db = InlineSqlite::new(&options);
        db.run(Access::Write, insert("x")).await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut keep)
            .await
            .unwrap();
        assert_eq!(seen, 1);
    }

    #[test]
    fn errors_name_the_kind_only() {
        let e = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some("unable to open /secret/path/db".to_owned()),
        );
        let text = StoreError::from(e).to_string();
        assert!(!text.contains("/secret"), "{text}");
        assert!(text.contains("database error 14"), "{text}");
    }
}
