//! MCP sessions shared by every replica: the owner of each session id, the
//! `initialize` parameters a replica replays to restore a Streamable HTTP
//! session it has never seen, and when the session ends. The owner and the
//! state are written by two parties (the HTTP edge and rmcp) in either
//! order, so both writes are upserts that touch only their own columns.

use sqlx::postgres::PgListener;

use super::{Db, Store, StoreError, mcp_events::listener_pool, on_db};

/// The transport a session row belongs to.
pub const STREAMABLE: &str = "streamable";
pub const LEGACY_SSE: &str = "legacy_sse";

/// PostgreSQL NOTIFY channel naming the legacy SSE session a message was
/// relayed to (the id only: payloads must stay under 8000 bytes).
const RELAY_CHANNEL: &str = "mcpgate_legacy_sse";
/// A relayed message nobody took in this long is swept.
const RELAY_TTL_SECS: i64 = 300;

/// A legacy SSE message waiting for the replica that holds its stream.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RelayedMessage {
    pub id: i64,
    /// The JSON-RPC message as POSTed.
    pub message: String,
    /// The POST's principal (JSON), so the message runs as it would have
    /// on the replica that received it.
    pub principal: String,
}

/// Wakes on every message relayed to some legacy SSE session.
pub struct RelayListener(PgListener);

impl RelayListener {
    /// The session id of the next relayed message (reconnects by itself
    /// when the connection drops).
    pub async fn next_session(&mut self) -> Result<String, StoreError> {
        Ok(self.0.recv().await?.payload().to_owned())
    }
}

/// What the edge checks on every request naming a session.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct McpSessionRecord {
    pub transport: String,
    /// `None` until the edge has recorded who created it.
    pub owner: Option<String>,
    pub expires_at: i64,
    /// Set by DELETE: the session is gone on every replica.
    pub ended_at: Option<i64>,
}

impl McpSessionRecord {
    /// Live, owned by `owner`, of `transport`, at `now`.
    pub fn admits(&self, transport: &str, owner: &str, now: i64) -> bool {
        self.transport == transport
            && self.owner.as_deref() == Some(owner)
            && self.ended_at.is_none()
            && self.expires_at > now
    }
}

impl Store {
    /// Record `owner` as the session's owner. `false` when the session has
    /// ended or already belongs to someone else.
    pub async fn bind_mcp_session(
        &self,
        id: &str,
        transport: &str,
        owner: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "INSERT INTO mcp_sessions (id, transport, owner, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET owner = $3 \
             WHERE mcp_sessions.ended_at IS NULL AND mcp_sessions.transport = $2 \
             AND (mcp_sessions.owner IS NULL OR mcp_sessions.owner = $3) \
             RETURNING id";
        let row = on_db!(self.db(), |pool| sqlx::query_scalar::<_, String>(SQL)
            .bind(id)
            .bind(transport)
            .bind(owner)
            .bind(now)
            .bind(expires_at)
            .fetch_optional(pool)
            .await)?;
        Ok(row.is_some())
    }

    /// Save a Streamable HTTP session's restore state (JSON) and protocol
    /// version; an ended session stays ended.
    pub async fn save_mcp_session_state(
        &self,
        id: &str,
        state: &str,
        protocol_version: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO mcp_sessions \
             (id, transport, state, protocol_version, created_at, expires_at) \
             VALUES ($1, 'streamable', $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET state = $2, protocol_version = $3 \
             WHERE mcp_sessions.ended_at IS NULL AND mcp_sessions.transport = 'streamable'";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(id)
            .bind(state)
            .bind(protocol_version)
            .bind(now)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Live MCP sessions (not ended, not expired), newest first, at most
    /// `limit`: `(id, transport, owner, created_at, expires_at)`.
    pub async fn live_mcp_sessions(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<(String, String, Option<String>, i64, i64)>, StoreError> {
        const SQL: &str = "SELECT id, transport, owner, created_at, expires_at FROM mcp_sessions \
             WHERE ended_at IS NULL AND expires_at > $1 ORDER BY created_at DESC LIMIT $2";
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<
            _,
            (String, String, Option<String>, i64, i64),
        >(SQL)
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await)?)
    }

    pub async fn mcp_session(&self, id: &str) -> Result<Option<McpSessionRecord>, StoreError> {
        const SQL: &str =
            "SELECT transport, owner, expires_at, ended_at FROM mcp_sessions WHERE id = $1";
        let row = on_db!(self.db(), |pool| sqlx::query_as::<_, McpSessionRecord>(SQL)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row)
    }

    /// The restore state of a live, owned Streamable HTTP session.
    pub async fn mcp_session_state(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        const SQL: &str = "SELECT state FROM mcp_sessions WHERE id = $1 \
             AND transport = 'streamable' AND state IS NOT NULL AND owner IS NOT NULL \
             AND ended_at IS NULL AND expires_at > $2";
        let state = on_db!(self.db(), |pool| sqlx::query_scalar::<_, String>(SQL)
            .bind(id)
            .bind(now)
            .fetch_optional(pool)
            .await)?;
        Ok(state)
    }

    /// Move a live session's expiry later (never earlier).
    pub async fn extend_mcp_session(&self, id: &str, expires_at: i64) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE mcp_sessions SET expires_at = $2 \
             WHERE id = $1 AND ended_at IS NULL AND expires_at < $2";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(id)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// End a session for every replica; its state is dropped at once, the
    /// row stays as a tombstone until it expires.
    pub async fn end_mcp_session(&self, id: &str, now: i64) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE mcp_sessions SET ended_at = $2, state = NULL \
             WHERE id = $1 AND ended_at IS NULL";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Delete expired sessions, tombstones, relayed messages nobody took,
    /// old server-initiated messages and old broken POST streams; returns
    /// how many rows.
    pub async fn sweep_mcp_sessions(&self, now: i64) -> Result<u64, StoreError> {
        const SESSIONS: &str = "DELETE FROM mcp_sessions WHERE expires_at <= $1";
        const RELAYED: &str = "DELETE FROM mcp_relay WHERE created_at <= $1";
        let mut rows = 0;
        for (sql, before) in [(SESSIONS, now), (RELAYED, now - RELAY_TTL_SECS)] {
            rows += on_db!(self.db(), |pool| sqlx::query(sql)
                .bind(before)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?;
        }
        rows += self.sweep_mcp_events(now).await?;
        rows += self.sweep_mcp_post_streams(now).await?;
        Ok(rows)
    }

    /// Whether other replicas can share this store (PostgreSQL); a SQLite
    /// file serves one process.
    pub fn is_shared(&self) -> bool {
        matches!(self.db(), Db::Postgres(_))
    }

    /// Hand a legacy SSE message to whichever replica holds `session`'s
    /// stream: stored, then announced, in one statement (the notification
    /// is sent when the row is committed).
    pub async fn relay_legacy_message(
        &self,
        session: &str,
        message: &str,
        principal: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        const SQL: &str = concat!(
            "WITH r AS (INSERT INTO mcp_relay (session, message, principal, created_at) ",
            "VALUES ($1, $2, $3, $4) RETURNING session) ",
            "SELECT pg_notify('mcpgate_legacy_sse', session) FROM r"
        );
        let Db::Postgres(pool) = self.db() else {
            return Err(StoreError::Conflict(
                "relaying between replicas needs PostgreSQL".to_owned(),
            ));
        };
        sqlx::query(SQL)
            .bind(session)
            .bind(message)
            .bind(principal)
            .bind(now)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Take (delete and return, oldest first) what was relayed to `session`.
    pub async fn take_relayed(&self, session: &str) -> Result<Vec<RelayedMessage>, StoreError> {
        const SQL: &str =
            "DELETE FROM mcp_relay WHERE session = $1 RETURNING id, message, principal";
        let mut rows = on_db!(self.db(), |pool| sqlx::query_as::<_, RelayedMessage>(SQL)
            .bind(session)
            .fetch_all(pool)
            .await)?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// A listener for relayed messages; `None` on SQLite, where nothing is
    /// relayed.
    pub async fn relay_listener(&self) -> Result<Option<RelayListener>, StoreError> {
        let Db::Postgres(pool) = self.db() else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(&listener_pool(pool)).await?;
        listener.listen(RELAY_CHANNEL).await?;
        Ok(Some(RelayListener(listener)))
    }
}
