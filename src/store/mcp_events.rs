//! Server-initiated messages of Streamable HTTP sessions, shared by every
//! replica: whichever replica raises a message for a session appends it
//! here; the replica holding the session's GET stream reads what follows its
//! cursor and sends it on. The `seq` of a row is the SSE event id, so a
//! client reconnecting with `Last-Event-ID` on any replica gets the rest.

use sqlx::{Pool, Postgres, postgres::PgPoolOptions};

use super::{Db, Store, StoreError, leases::lock_key, on_db};

/// PostgreSQL NOTIFY channel naming a session that has new messages (or
/// ended): the id only, far below the 8000-byte payload limit.
pub(super) const EVENTS_CHANNEL: &str = "mcpgate_mcp_events";
/// Messages older than this are swept (a reconnect after longer misses them).
pub const MCP_EVENT_TTL_SECS: i64 = 600;
/// At most this many messages are kept per session.
pub const MCP_EVENTS_PER_SESSION: i64 = 1000;

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct McpEvent {
    pub seq: i64,
    /// The JSON-RPC message.
    pub message: String,
}

/// What a GET stream sees when it looks at its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpStreamView {
    /// The session exists, has not ended and has not expired.
    pub live: bool,
    /// This stream is the session's newest (the one that delivers).
    pub claimed: bool,
    /// Messages after the cursor, oldest first (empty unless live and
    /// claimed).
    pub events: Vec<McpEvent>,
}

#[derive(sqlx::FromRow)]
struct StreamRow {
    stream_claim: Option<String>,
    expires_at: i64,
    ended_at: Option<i64>,
}

impl Store {
    /// Append `message` for `session`, raised by replica `origin`; returns
    /// its seq. With `coalesce_since`, an identical message another replica
    /// stored at or after that time is returned instead of a new row: a list
    /// change every replica's upstream link saw reaches the client once.
    pub async fn append_mcp_event(
        &self,
        session: &str,
        message: &str,
        origin: &str,
        coalesce_since: Option<i64>,
        now: i64,
    ) -> Result<i64, StoreError> {
        const INSERT: &str = "INSERT INTO mcp_events (session, message, origin, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING seq";
        const SAME: &str = "SELECT seq FROM mcp_events WHERE session = $1 AND message = $2 \
             AND origin <> $3 AND created_at >= $4 ORDER BY seq DESC LIMIT 1";
        match self.db() {
            // One process: one origin, and rows commit in seq order.
            Db::Sqlite(pool) => Ok(sqlx::query_scalar::<_, i64>(INSERT)
                .bind(session)
                .bind(message)
                .bind(origin)
                .bind(now)
                .fetch_one(pool)
                .await?),
            Db::Postgres(pool) => {
                // One writer per session at a time: rows of a session commit
                // in seq order (a stream's cursor never skips a late commit)
                // and the coalescing check cannot race.
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(lock_key(&format!("mcp-events:{session}")))
                    .execute(&mut *tx)
                    .await?;
                if let Some(since) = coalesce_since
                    && let Some(seq) = sqlx::query_scalar::<_, i64>(SAME)
                        .bind(session)
                        .bind(message)
                        .bind(origin)
                        .bind(since)
                        .fetch_optional(&mut *tx)
                        .await?
                {
                    tx.commit().await?;
                    return Ok(seq);
                }
                let seq = sqlx::query_scalar::<_, i64>(INSERT)
                    .bind(session)
                    .bind(message)
                    .bind(origin)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                // Sent when the transaction commits.
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(EVENTS_CHANNEL)
                    .bind(session)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(seq)
            }
        }
    }

    /// Make `claim` the stream that delivers `session`'s messages; returns
    /// the seq of its latest message and the seq up to which a stream has
    /// sent them (0 when none).
    pub async fn claim_mcp_stream(
        &self,
        session: &str,
        claim: &str,
    ) -> Result<(i64, i64), StoreError> {
        const CLAIM: &str = "UPDATE mcp_sessions SET stream_claim = $2 WHERE id = $1";
        const HEAD: &str = "SELECT COALESCE(MAX(seq), 0), \
             COALESCE((SELECT stream_sent FROM mcp_sessions WHERE id = $1), 0) \
             FROM mcp_events WHERE session = $1";
        on_db!(self.db(), |pool| sqlx::query(CLAIM)
            .bind(session)
            .bind(claim)
            .execute(pool)
            .await
            .map(|_| ()))?;
        let head = on_db!(self.db(), |pool| sqlx::query_as::<_, (i64, i64)>(HEAD)
            .bind(session)
            .fetch_one(pool)
            .await)?;
        Ok(head)
    }

    /// Record that stream `claim` has sent `session`'s messages up to `seq`
    /// (only while it is the session's stream, and never backwards).
    pub async fn mark_mcp_stream_sent(
        &self,
        session: &str,
        claim: &str,
        seq: i64,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE mcp_sessions SET stream_sent = $3 \
             WHERE id = $1 AND stream_claim = $2 AND COALESCE(stream_sent, 0) < $3";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(session)
            .bind(claim)
            .bind(seq)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// The state of `session` for stream `claim`, and up to `limit`
    /// messages after seq `after`.
    pub async fn mcp_stream_after(
        &self,
        session: &str,
        claim: &str,
        after: i64,
        limit: i64,
        now: i64,
    ) -> Result<McpStreamView, StoreError> {
        // One statement: the claim is checked in the same snapshot as the
        // rows are read, so a stream that a newer one has replaced never
        // sends a message raised after the replacement.
        const EVENTS: &str = "SELECT e.seq, e.message FROM mcp_events e \
             JOIN mcp_sessions s ON s.id = e.session \
             WHERE e.session = $1 AND e.seq > $2 AND s.stream_claim = $3 \
             AND s.ended_at IS NULL AND s.expires_at > $4 \
             ORDER BY e.seq LIMIT $5";
        const STATE: &str =
            "SELECT stream_claim, expires_at, ended_at FROM mcp_sessions WHERE id = $1";
        let events = on_db!(self.db(), |pool| sqlx::query_as::<_, McpEvent>(EVENTS)
            .bind(session)
            .bind(after)
            .bind(claim)
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        if !events.is_empty() {
            return Ok(McpStreamView {
                live: true,
                claimed: true,
                events,
            });
        }
        let row = on_db!(self.db(), |pool| sqlx::query_as::<_, StreamRow>(STATE)
            .bind(session)
            .fetch_optional(pool)
            .await)?;
        Ok(match row {
            Some(row) => McpStreamView {
                live: row.ended_at.is_none() && row.expires_at > now,
                claimed: row.stream_claim.as_deref() == Some(claim),
                events: Vec::new(),
            },
            None => McpStreamView {
                live: false,
                claimed: false,
                events: Vec::new(),
            },
        })
    }

    /// Tell every replica's streams of `session` to look again (after it
    /// ended, say). Nothing to tell on SQLite.
    pub async fn announce_mcp_stream(&self, session: &str) -> Result<(), StoreError> {
        if let Db::Postgres(pool) = self.db() {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(EVENTS_CHANNEL)
                .bind(session)
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// Delete messages older than [`MCP_EVENT_TTL_SECS`] and all but the
    /// newest [`MCP_EVENTS_PER_SESSION`] of each session.
    pub async fn sweep_mcp_events(&self, now: i64) -> Result<u64, StoreError> {
        const OLD: &str = "DELETE FROM mcp_events WHERE created_at <= $1";
        const SURPLUS: &str = "DELETE FROM mcp_events WHERE seq IN (SELECT seq FROM \
             (SELECT seq, ROW_NUMBER() OVER (PARTITION BY session ORDER BY seq DESC) AS n \
             FROM mcp_events) ranked WHERE n > $1)";
        let old = on_db!(self.db(), |pool| sqlx::query(OLD)
            .bind(now - MCP_EVENT_TTL_SECS)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        let surplus = on_db!(self.db(), |pool| sqlx::query(SURPLUS)
            .bind(MCP_EVENTS_PER_SESSION)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(old + surplus)
    }
}

/// A pool of one connection, beside `pool`, for a `LISTEN`: a listener
/// holds its connection for good, which must not shrink the pool that
/// serves requests.
pub(crate) fn listener_pool(pool: &Pool<Postgres>) -> Pool<Postgres> {
    PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with((*pool.connect_options()).clone())
}
