//! The auth funnel's rows (`auth_funnel`): written in batches by
//! `crate::funnel::Funnel`'s writer, read by `mcpgate funnel` (and the admin
//! console) through [`Store::funnel_attempts`], which joins each attempt's
//! steps, its refreshes (by grant) and its MCP calls (by client and user).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::inline::Access;
use super::{Grants, Store, StoreError, on_db};

/// Rows older than this are swept.
pub const FUNNEL_TTL_SECS: i64 = 7 * 86_400;
/// At most this many rows are kept (the newest), whatever their age.
pub const FUNNEL_MAX_ROWS: i64 = 200_000;
/// The most rows one INSERT carries (8 values each: under SQLite's
/// historical bound of 999 values per statement).
pub const FUNNEL_INSERT_MAX_ROWS: usize = 120;
const INSERT_HEAD: &str =
    "INSERT INTO auth_funnel (at, attempt, client_id, user_id, step, reason, grant_key, once_key) ";
const INSERT_TAIL: &str = " ON CONFLICT DO NOTHING RETURNING once_key";

/// [`Store::insert_funnel_batch`]'s statement for one chunk, on SQLite: the
/// same multi-row INSERT. Prepared anew each time: batches are seldom, and
/// one cached statement per chunk size would push the grants' hot
/// statements out of the connection's cache.
fn insert_on_sqlite(
    conn: &mut rusqlite::Connection,
    chunk: &[NewFunnelRow],
) -> rusqlite::Result<Vec<Option<String>>> {
    let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
    let sql = format!("{INSERT_HEAD}VALUES {values}{INSERT_TAIL}");
    let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 8);
    for new in chunk {
        let r = &new.row;
        params.extend([
            &r.at as &dyn rusqlite::ToSql,
            &r.attempt,
            &r.client_id,
            &r.user_id,
            &r.step,
            &r.reason,
            &r.grant_key,
            &new.once_key,
        ]);
    }
    let mut statement = conn.prepare(&sql)?;
    statement
        .query_map(params.as_slice(), |row| row.get::<_, Option<String>>(0))?
        .collect()
}

/// The most rows one query reads (the newest within its window).
const QUERY_MAX_ROWS: i64 = 20_000;

/// One step as stored. `reason` is `None` when the step passed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FunnelRow {
    pub at: i64,
    pub attempt: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub step: String,
    pub reason: Option<String>,
    pub grant_key: Option<String>,
}

/// A row on its way in. With `once_key` (a token's first MCP call: a hash
/// of the token), at most one row with that key is ever stored, whichever
/// replica writes first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFunnelRow {
    pub row: FunnelRow,
    pub once_key: Option<String>,
}

/// One step of an attempt as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunnelStep {
    pub at: i64,
    pub step: String,
    /// Why it stopped there; absent when the step passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An authorization attempt: its steps in order and where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunnelAttempt {
    pub attempt: String,
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub started_at: i64,
    pub steps: Vec<FunnelStep>,
    /// The reason of the last step that stopped, if the attempt's last step did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// Rows of a user's MCP calls carry this attempt prefix until the query
/// joins them to that user's latest redeemed attempt for the client.
pub const USER_ATTEMPT_PREFIX: &str = "u:";
/// Steps that issue a token from scratch: a later MCP call of the same
/// client and user joins the latest of them.
const ISSUING_STEPS: &[&str] = &["code_redeemed", "client_credentials", "identity_assertion"];
/// Rows of refreshes carry this prefix and the grant key.
pub const GRANT_ATTEMPT_PREFIX: &str = "g:";

impl Store {
    /// Append `rows` (none of them once-only): [`Store::insert_funnel_batch`].
    pub async fn insert_funnel_rows(&self, rows: &[FunnelRow]) -> Result<(), StoreError> {
        let rows: Vec<NewFunnelRow> = rows
            .iter()
            .map(|row| NewFunnelRow {
                row: row.clone(),
                once_key: None,
            })
            .collect();
        self.insert_funnel_batch(&rows).await.map(|_| ())
    }

    /// Append `rows` in one multi-row INSERT per [`FUNNEL_INSERT_MAX_ROWS`]:
    /// one round trip, and no transaction held open between statements (a
    /// writer task that is not polled for a while then holds no lock). A
    /// row whose `once_key` is stored already (by this or another replica)
    /// is skipped (`ON CONFLICT DO NOTHING` on the unique `once_key`).
    /// Returns the once-keys this call stored: what the caller counts.
    pub async fn insert_funnel_batch(
        &self,
        rows: &[NewFunnelRow],
    ) -> Result<Vec<String>, StoreError> {
        let mut stored = Vec::new();
        for chunk in rows.chunks(FUNNEL_INSERT_MAX_ROWS) {
            // SQLite: on the grants' connections, so the batch takes its turn
            // with the sign-in path's writes instead of holding SQLite's lock
            // while they poll for it.
            if let Grants::Sqlite(db) = self.grants() {
                let chunk = chunk.to_vec();
                let keys = db
                    .run(Access::Ephemeral, move |conn| {
                        insert_on_sqlite(conn, &chunk)
                    })
                    .await?;
                stored.extend(keys.into_iter().flatten());
                continue;
            }
            let keys: Vec<Option<String>> = on_db!(self.db(), |pool| {
                let mut insert = sqlx::QueryBuilder::new(INSERT_HEAD);
                insert.push_values(chunk, |mut b, new| {
                    let r = &new.row;
                    b.push_bind(r.at)
                        .push_bind(&r.attempt)
                        .push_bind(&r.client_id)
                        .push_bind(&r.user_id)
                        .push_bind(&r.step)
                        .push_bind(&r.reason)
                        .push_bind(&r.grant_key)
                        .push_bind(&new.once_key);
                });
                insert.push(INSERT_TAIL);
                insert
                    .build_query_scalar::<Option<String>>()
                    .fetch_all(pool)
                    .await
            })?;
            stored.extend(keys.into_iter().flatten());
        }
        Ok(stored)
    }

    /// Delete rows older than [`FUNNEL_TTL_SECS`] and beyond the newest
    /// [`FUNNEL_MAX_ROWS`].
    pub async fn sweep_auth_funnel(&self, now: i64) -> Result<u64, StoreError> {
        const OLD: &str = "DELETE FROM auth_funnel WHERE at <= $1";
        const SURPLUS: &str = "DELETE FROM auth_funnel WHERE id <= \
            (SELECT id FROM auth_funnel ORDER BY id DESC LIMIT 1 OFFSET $1)";
        let old = on_db!(self.db(), |pool| sqlx::query(OLD)
            .bind(now - FUNNEL_TTL_SECS)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        let surplus = on_db!(self.db(), |pool| sqlx::query(SURPLUS)
            .bind(FUNNEL_MAX_ROWS)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(old + surplus)
    }

    /// The attempts with a step at or after `since`, newest first, at most
    /// `limit`, of `client` or of every client. Works across replicas: every
    /// replica writes here.
    pub async fn funnel_attempts(
        &self,
        client: Option<&str>,
        since: i64,
        limit: usize,
    ) -> Result<Vec<FunnelAttempt>, StoreError> {
        const ALL: &str = "SELECT at, attempt, client_id, user_id, step, reason, grant_key \
            FROM (SELECT * FROM auth_funnel WHERE at >= $1 ORDER BY id DESC LIMIT $2) newest \
            ORDER BY id";
        const ONE: &str = "SELECT at, attempt, client_id, user_id, step, reason, grant_key \
            FROM (SELECT * FROM auth_funnel WHERE at >= $1 AND client_id = $3 \
            ORDER BY id DESC LIMIT $2) newest ORDER BY id";
        let rows: Vec<FunnelRow> = match client {
            None => on_db!(self.db(), |pool| sqlx::query_as(ALL)
                .bind(since)
                .bind(QUERY_MAX_ROWS)
                .fetch_all(pool)
                .await)?,
            Some(c) => on_db!(self.db(), |pool| sqlx::query_as(ONE)
                .bind(since)
                .bind(QUERY_MAX_ROWS)
                .bind(c)
                .fetch_all(pool)
                .await)?,
        };
        Ok(join_attempts(rows, limit))
    }
}

/// Group rows (oldest first) into attempts: a refresh row (`g:<grant>`) joins
/// the attempt whose code redemption created that grant; an MCP call row
/// (`u:<key>`) joins the latest attempt of the same client and user that
/// redeemed a code before it. Rows with nothing to join form their own.
pub fn join_attempts(rows: Vec<FunnelRow>, limit: usize) -> Vec<FunnelAttempt> {
    let mut by_key: BTreeMap<String, FunnelAttempt> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut grants: HashMap<String, String> = HashMap::new();
    // (client, user) → the attempt that last redeemed a code for them.
    let mut redeemed: HashMap<(String, String), String> = HashMap::new();
    for row in rows {
        let key = if row.attempt.starts_with(GRANT_ATTEMPT_PREFIX) {
            row.grant_key
                .as_ref()
                .and_then(|g| grants.get(g))
                .cloned()
                .unwrap_or_else(|| row.attempt.clone())
        } else if row.attempt.starts_with(USER_ATTEMPT_PREFIX) {
            row.user_id
                .as_ref()
                .and_then(|u| redeemed.get(&(row.client_id.clone(), u.clone())))
                .cloned()
                .unwrap_or_else(|| row.attempt.clone())
        } else {
            row.attempt.clone()
        };
        // A code redemption, or a machine grant (its own whole attempt),
        // issued the token the user's later MCP calls carry.
        if ISSUING_STEPS.contains(&row.step.as_str()) && row.reason.is_none() {
            if let Some(g) = &row.grant_key {
                grants.insert(g.clone(), key.clone());
            }
            if let Some(u) = &row.user_id {
                redeemed.insert((row.client_id.clone(), u.clone()), key.clone());
            }
        }
        let attempt = by_key.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            FunnelAttempt {
                attempt: key.clone(),
                client_id: row.client_id.clone(),
                user_id: None,
                started_at: row.at,
                steps: Vec::new(),
                stopped: None,
            }
        });
        if attempt.user_id.is_none() {
            attempt.user_id = row.user_id.clone();
        }
        attempt.stopped = row.reason.clone();
        attempt.steps.push(FunnelStep {
            at: row.at,
            step: row.step,
            reason: row.reason,
        });
    }
    // Newest activity first.
    let mut attempts: Vec<FunnelAttempt> = order
        .into_iter()
        .filter_map(|k| by_key.remove(&k))
        .collect();
    attempts
        .sort_by_key(|a| std::cmp::Reverse(a.steps.last().map(|s| s.at).unwrap_or(a.started_at)));
    attempts.truncate(limit);
    attempts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(at: i64, attempt: &str, step: &str, reason: Option<&str>) -> FunnelRow {
        FunnelRow {
            at,
            attempt: attempt.to_owned(),
            client_id: "c1".to_owned(),
            user_id: Some("u1".to_owned()),
            step: step.to_owned(),
            reason: reason.map(str::to_owned),
            grant_key: None,
        }
    }

    #[test]
    fn refreshes_and_calls_join_the_attempt_that_redeemed_the_code() {
        let mut redeemed = row(3, "a1", "code_redeemed", None);
        redeemed.grant_key = Some("g1".to_owned());
        let mut refresh = row(5, "g:g1", "refresh", None);
        refresh.grant_key = Some("g1".to_owned());
        let rows = vec![
            row(1, "a0", "authorize", Some("pkce_missing")),
            row(1, "a1", "authorize", None),
            row(2, "a1", "consent", None),
            redeemed,
            row(4, "u:x", "mcp_call", None),
            refresh,
            row(6, "g:other", "refresh", Some("refresh_reused")),
        ];
        let attempts = join_attempts(rows, 10);
        assert_eq!(attempts.len(), 3);
        let a1 = attempts.iter().find(|a| a.attempt == "a1").unwrap();
        let steps: Vec<&str> = a1.steps.iter().map(|s| s.step.as_str()).collect();
        assert_eq!(
            steps,
            [
                "authorize",
                "consent",
                "code_redeemed",
                "mcp_call",
                "refresh"
            ]
        );
        assert_eq!(a1.stopped, None);
        let a0 = attempts.iter().find(|a| a.attempt == "a0").unwrap();
        assert_eq!(a0.stopped.as_deref(), Some("pkce_missing"));
        // Newest first, and the limit holds.
        assert_eq!(attempts[0].attempt, "g:other");
        assert_eq!(
            join_attempts(vec![row(1, "a", "authorize", None)], 0).len(),
            0
        );
    }
}
