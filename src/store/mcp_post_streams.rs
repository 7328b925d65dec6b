//! What crosses replicas for a POST's own SSE response, written only when
//! something breaks: the events of a POST stream whose client connection
//! went away before the answer (a GET with `Last-Event-ID` on any replica
//! reads them), and a client's answer to a server request that reached
//! another replica than the one that asked.

use sqlx::{Pool, Postgres, postgres::PgListener};

use super::{
    Db, Store, StoreError,
    mcp_events::{EVENTS_CHANNEL, listener_pool},
    on_db,
};

/// Rows of broken POST streams older than this are swept (as
/// [`super::mcp_events::MCP_EVENT_TTL_SECS`]).
pub const MCP_POST_EVENT_TTL_SECS: i64 = 600;
/// A relayed answer nobody took in this long is swept.
const RESPONSE_RELAY_TTL_SECS: i64 = 300;
/// PostgreSQL NOTIFY channel naming the replica (origin) an answer was
/// relayed to.
const RESPONSES_CHANNEL: &str = "mcpgate_mcp_responses";

/// One stored event of a broken POST stream.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct McpPostEvent {
    pub idx: i64,
    /// The JSON-RPC message; `None` for a priming event or the end of a
    /// stream that ended without an answer.
    pub message: Option<String>,
    pub ends_stream: bool,
}

/// A client's answer relayed to the replica that asked.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RelayedResponse {
    pub session: String,
    /// Owner key of the principal that POSTed it.
    pub owner: String,
    pub message: String,
}

/// What woke the MCP listener of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpWake {
    /// A session with new messages (or that ended).
    Session(String),
    /// Answers were relayed to this replica id (or to another's).
    Responses(String),
}

/// Listens to both MCP channels on one connection.
pub struct McpListener(PgListener);

impl McpListener {
    /// The next notification. An error means the connection dropped
    /// (notifications may have been missed); the next call reconnects.
    pub async fn next(&mut self) -> Result<McpWake, StoreError> {
        let notification = self.0.recv().await?;
        let payload = notification.payload().to_owned();
        Ok(if notification.channel() == RESPONSES_CHANNEL {
            McpWake::Responses(payload)
        } else {
            McpWake::Session(payload)
        })
    }
}

impl Store {
    /// Store events of the broken POST stream `stream` of `session` (each
    /// `(idx, message, ends_stream)`; one already stored is kept) and wake
    /// the session's streams on every replica.
    pub async fn append_mcp_post_events(
        &self,
        session: &str,
        stream: &str,
        events: &[(i64, Option<String>, bool)],
        now: i64,
    ) -> Result<(), StoreError> {
        const INSERT: &str = "INSERT INTO mcp_post_events \
             (stream, idx, session, message, ends_stream, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (stream, idx) DO NOTHING";
        match self.db() {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for (idx, message, ends) in events {
                    sqlx::query(INSERT)
                        .bind(stream)
                        .bind(idx)
                        .bind(session)
                        .bind(message)
                        .bind(ends)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for (idx, message, ends) in events {
                    sqlx::query(INSERT)
                        .bind(stream)
                        .bind(idx)
                        .bind(session)
                        .bind(message)
                        .bind(ends)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                // Sent when the transaction commits.
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(EVENTS_CHANNEL)
                    .bind(session)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Up to `limit` stored events of POST stream `stream` after `after`,
    /// only if the stream is `session`'s: another session's stream name
    /// reads nothing.
    pub async fn mcp_post_events_after(
        &self,
        session: &str,
        stream: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<McpPostEvent>, StoreError> {
        const SQL: &str = "SELECT idx, message, ends_stream FROM mcp_post_events \
             WHERE stream = $1 AND session = $2 AND idx > $3 ORDER BY idx LIMIT $4";
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as::<_, McpPostEvent>(SQL)
                .bind(stream)
                .bind(session)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await
        })?)
    }

    /// Hand a client's answer to the replica `origin` that sent the request
    /// (PostgreSQL only: a SQLite file serves one process).
    pub async fn relay_mcp_response(
        &self,
        origin: &str,
        session: &str,
        owner: &str,
        message: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        const SQL: &str = concat!(
            "WITH r AS (INSERT INTO mcp_response_relay (origin, session, owner, message, created_at) ",
            "VALUES ($1, $2, $3, $4, $5) RETURNING origin) ",
            "SELECT pg_notify('mcpgate_mcp_responses', origin) FROM r"
        );
        let Db::Postgres(pool) = self.db() else {
            return Err(StoreError::Conflict(
                "relaying between replicas needs PostgreSQL".to_owned(),
            ));
        };
        sqlx::query(SQL)
            .bind(origin)
            .bind(session)
            .bind(owner)
            .bind(message)
            .bind(now)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Take (delete and return, oldest first) the answers relayed to
    /// replica `origin`.
    pub async fn take_mcp_responses(
        &self,
        origin: &str,
    ) -> Result<Vec<RelayedResponse>, StoreError> {
        const SQL: &str = "DELETE FROM mcp_response_relay WHERE origin = $1 \
             RETURNING id, session, owner, message";
        #[derive(sqlx::FromRow)]
        struct Row {
            id: i64,
            #[sqlx(flatten)]
            response: RelayedResponse,
        }
        let mut rows = on_db!(self.db(), |pool| sqlx::query_as::<_, Row>(SQL)
            .bind(origin)
            .fetch_all(pool)
            .await)?;
        rows.sort_by_key(|r| r.id);
        Ok(rows.into_iter().map(|r| r.response).collect())
    }

    /// Delete old broken-stream events and answers nobody took.
    pub async fn sweep_mcp_post_streams(&self, now: i64) -> Result<u64, StoreError> {
        const EVENTS: &str = "DELETE FROM mcp_post_events WHERE created_at <= $1";
        const RESPONSES: &str = "DELETE FROM mcp_response_relay WHERE created_at <= $1";
        let mut rows = 0;
        for (sql, before) in [
            (EVENTS, now - MCP_POST_EVENT_TTL_SECS),
            (RESPONSES, now - RESPONSE_RELAY_TTL_SECS),
        ] {
            rows += on_db!(self.db(), |pool| sqlx::query(sql)
                .bind(before)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?;
        }
        Ok(rows)
    }

    /// A listener for both MCP channels (session messages, relayed
    /// answers); `None` on SQLite, where the one process wakes itself.
    pub async fn mcp_listener(&self) -> Result<Option<McpListener>, StoreError> {
        let Db::Postgres(pool) = self.db() else {
            return Ok(None);
        };
        Ok(Some(listen(pool).await?))
    }
}

async fn listen(pool: &Pool<Postgres>) -> Result<McpListener, StoreError> {
    let mut listener = PgListener::connect_with(&listener_pool(pool)).await?;
    listener
        .listen_all([EVENTS_CHANNEL, RESPONSES_CHANNEL])
        .await?;
    Ok(McpListener(listener))
}
