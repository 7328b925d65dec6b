//! Refresh tokens: rotation and family revocation.

use super::{Consumed, INSERT_REFRESH, NewRefresh, RefreshRecord, insert_refresh, uncancellable};
use crate::store::{Store, StoreError, on_db};

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
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as::<_, RefreshRecord>(SQL)
                .bind(token_hash)
                .fetch_optional(pool)
                .await
        })?)
    }

    /// Rotate: mark `old_hash` used (keeping the sealed response for a lost-
    /// response retry) and store its successor, atomically.
    async fn rotate_refresh_now(
        &self,
        old_hash: &str,
        now: i64,
        response_sealed: &str,
        next: &NewRefresh,
    ) -> Result<Consumed, StoreError> {
        const ROTATE: &str = "UPDATE refresh_tokens SET rotated_at = $1, response_sealed = $2 WHERE token_hash = $3 AND rotated_at IS NULL AND revoked_at IS NULL";
        let won = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let won = sqlx::query(ROTATE)
                .bind(now)
                .bind(response_sealed)
                .bind(old_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if won {
                insert_refresh!(tx, next, now).await?;
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            Ok::<bool, sqlx::Error>(won)
        })?;
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
    pub async fn rotate_refresh(
        &self,
        old_hash: &str,
        now: i64,
        response_sealed: &str,
        next: &NewRefresh,
    ) -> Result<Consumed, StoreError> {
        let (store, old_hash, sealed, next) = (
            self.clone(),
            old_hash.to_owned(),
            response_sealed.to_owned(),
            next.clone(),
        );
        uncancellable(async move {
            store
                .rotate_refresh_now(&old_hash, now, &sealed, &next)
                .await
        })
        .await
    }
}
