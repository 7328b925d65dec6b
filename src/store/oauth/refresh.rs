//! Refresh tokens: rotation and family revocation.

use super::{Consumed, NewRefresh, RefreshRecord, sqlite_script, uncancellable};
use crate::store::{Store, StoreError, Writer, on_db, on_direct};

macro_rules! refresh_columns {
    () => {
        "token_hash, family_id, client_id, user_id, scope, resource, created_at, expires_at, rotated_at, response_sealed, revoked_at"
    };
}

impl Store {
    pub async fn get_refresh(&self, token_hash: &str) -> Result<Option<RefreshRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            refresh_columns!(),
            " FROM refresh_tokens WHERE token_hash = $1"
        );
        on_direct!(self.direct(), |conn| {
            sqlx::query_as::<_, RefreshRecord>(SQL)
                .bind(token_hash)
                .fetch_optional(conn)
                .await
        })
    }

    /// Rotate: mark `old_hash` used (keeping the sealed response for a lost-
    /// response retry), store its successor and, when `touch`, the client's
    /// `last_used_at`, atomically: one statement on PostgreSQL, one script on
    /// the SQLite writer.
    async fn rotate_refresh_now(
        &self,
        old_hash: &str,
        now: i64,
        response_sealed: &str,
        next: &NewRefresh,
        touch: bool,
    ) -> Result<Consumed, StoreError> {
        const SQLITE: &str = concat!(
            "BEGIN IMMEDIATE; ",
            "UPDATE refresh_tokens SET rotated_at = $1, response_sealed = $2 WHERE token_hash = $3 AND rotated_at IS NULL AND revoked_at IS NULL RETURNING token_hash; ",
            "INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, scope, resource, created_at, expires_at) SELECT $4, $5, $6, $7, $8, $9, $1, $10 WHERE changes() = 1; ",
            "UPDATE oauth_clients SET last_used_at = $1 WHERE $11 AND client_id = $6 AND changes() = 1; ",
            "COMMIT"
        );
        const POSTGRES: &str = concat!(
            "WITH old AS (UPDATE refresh_tokens SET rotated_at = $1, response_sealed = $2 WHERE token_hash = $3 AND rotated_at IS NULL AND revoked_at IS NULL RETURNING token_hash), ",
            "next AS (INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, scope, resource, created_at, expires_at) SELECT $4, $5, $6, $7, $8, $9, $1, $10 FROM old), ",
            "touched AS (UPDATE oauth_clients SET last_used_at = $1 WHERE $11 AND client_id = $6 AND EXISTS (SELECT 1 FROM old)) ",
            "SELECT token_hash FROM old"
        );
        macro_rules! bound {
            ($sql:expr) => {
                sqlx::query($sql)
                    .bind(now)
                    .bind(response_sealed)
                    .bind(old_hash)
                    .bind(&next.token_hash)
                    .bind(&next.family_id)
                    .bind(&next.client_id)
                    .bind(&next.user_id)
                    .bind(&next.scope)
                    .bind(&next.resource)
                    .bind(next.expires_at)
                    .bind(touch)
            };
        }
        let won = match self.writer() {
            Writer::Sqlite(writer) => sqlite_script(writer, bound!(SQLITE)).await?,
            Writer::Postgres(set) => {
                let mut held = set.get().await?;
                let result = bound!(POSTGRES).fetch_optional(held.conn()?).await;
                held.settle(result)?.is_some()
            }
        };
        Ok(if won { Consumed::Won } else { Consumed::Lost })
    }

    /// Revoke every refresh token of a family; returns how many were live.
    ///
    /// The UPDATE is repeated until it finds nothing live. On PostgreSQL
    /// (READ COMMITTED) a rotation committing while the UPDATE waits on the
    /// old token's row lock inserts a successor the UPDATE's snapshot does
    /// not contain; the next UPDATE's snapshot does, and a rotation of an
    /// already revoked token loses (`revoked_at IS NULL` in its WHERE), so
    /// the loop ends with no live token. SQLite runs one writer at a time
    /// and stops after the second, empty round.
    pub async fn revoke_family(&self, family_id: &str, now: i64) -> Result<u64, StoreError> {
        const SQL: &str =
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL";
        let mut revoked = 0;
        loop {
            let n = on_db!(self.db(), |pool| sqlx::query(SQL)
                .bind(now)
                .bind(family_id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?;
            revoked += n;
            if n == 0 {
                return Ok(revoked);
            }
        }
    }

    /// Rotate a refresh token once: exactly one concurrent caller wins.
    /// `touch` also records that the client obtained tokens (in the same
    /// write; unused clients are swept).
    pub async fn rotate_refresh(
        &self,
        old_hash: &str,
        now: i64,
        response_sealed: &str,
        next: &NewRefresh,
        touch: bool,
    ) -> Result<Consumed, StoreError> {
        let (store, old_hash, sealed, next) = (
            self.clone(),
            old_hash.to_owned(),
            response_sealed.to_owned(),
            next.clone(),
        );
        uncancellable(async move {
            store
                .rotate_refresh_now(&old_hash, now, &sealed, &next, touch)
                .await
        })
        .await
    }
}
