//! Refresh tokens: rotation and family revocation.

use rusqlite::OptionalExtension;

use super::{Consumed, NewRefresh, RefreshRecord, uncancellable};
use crate::store::inline::Access;
use crate::store::{Grants, Store, StoreError, on_db, on_pg};

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
        match self.grants() {
            Grants::Sqlite(db) => {
                let token_hash = token_hash.to_owned();
                db.run(Access::Read, move |conn| {
                    conn.prepare_cached(SQL)?
                        .query_row([&token_hash], RefreshRecord::from_sqlite)
                        .optional()
                })
                .await
            }
            Grants::Postgres(sets) => on_pg!(sets.set(Access::Read), |conn| {
                sqlx::query_as::<_, RefreshRecord>(SQL)
                    .bind(token_hash)
                    .fetch_optional(conn)
                    .await
            }),
        }
    }

    /// Rotate: mark `old_hash` used (keeping the sealed response for a lost-
    /// response retry), store its successor and, when `touch`, the client's
    /// `last_used_at`, atomically: one statement on PostgreSQL, one
    /// transaction run in place on SQLite.
    async fn rotate_refresh_on_postgres(
        &self,
        set: &crate::store::dedicated::Dedicated<sqlx::PgConnection>,
        old_hash: &str,
        now: i64,
        response_sealed: &str,
        next: &NewRefresh,
        touch: bool,
    ) -> Result<Consumed, StoreError> {
        const POSTGRES: &str = concat!(
            "WITH old AS (UPDATE refresh_tokens SET rotated_at = $1, response_sealed = $2 WHERE token_hash = $3 AND client_id = $6 AND expires_at > $1 AND rotated_at IS NULL AND revoked_at IS NULL RETURNING token_hash), ",
            "next AS (INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, scope, resource, created_at, expires_at) SELECT $4, $5, $6, $7, $8, $9, $1, $10 FROM old), ",
            "touched AS (UPDATE oauth_clients SET last_used_at = $1 WHERE $11 AND client_id = $6 AND EXISTS (SELECT 1 FROM old)) ",
            "SELECT token_hash FROM old"
        );
        let won = on_pg!(set, |conn| sqlx::query(POSTGRES)
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
            .fetch_optional(conn)
            .await)?
        .is_some();
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
    /// write; unused clients are swept). Only a live token rotates: not
    /// rotated, not revoked, unexpired at `now`, and issued to the
    /// successor's client (the refresh grant's short way checks nothing
    /// else against the store before this write).
    pub async fn rotate_refresh(
        &self,
        old_hash: &str,
        now: i64,
        response_sealed: &str,
        next: &NewRefresh,
        touch: bool,
    ) -> Result<Consumed, StoreError> {
        let set = match self.grants() {
            Grants::Sqlite(db) => {
                let (old_hash, sealed, next) = (
                    old_hash.to_owned(),
                    response_sealed.to_owned(),
                    next.clone(),
                );
                let won = db
                    .run(Access::Write, move |conn| {
                        rotate_on_sqlite(conn, &old_hash, now, &sealed, &next, touch)
                    })
                    .await?;
                return Ok(if won { Consumed::Won } else { Consumed::Lost });
            }
            Grants::Postgres(sets) => sets.clone(),
        };
        let (store, old_hash, sealed, next) = (
            self.clone(),
            old_hash.to_owned(),
            response_sealed.to_owned(),
            next.clone(),
        );
        // A dropped caller must not leave the statement half sent.
        uncancellable(async move {
            store
                .rotate_refresh_on_postgres(
                    set.set(Access::Write),
                    &old_hash,
                    now,
                    &sealed,
                    &next,
                    touch,
                )
                .await
        })
        .await
    }
}

/// The rotation as one SQLite transaction, run where it is called (nothing
/// can interrupt it, so it needs no task of its own): `true` if this caller
/// won.
fn rotate_on_sqlite(
    conn: &mut rusqlite::Connection,
    old_hash: &str,
    now: i64,
    response_sealed: &str,
    next: &NewRefresh,
    touch: bool,
) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let won = tx
        .prepare_cached("UPDATE refresh_tokens SET rotated_at = ?1, response_sealed = ?2 WHERE token_hash = ?3 AND client_id = ?4 AND expires_at > ?1 AND rotated_at IS NULL AND revoked_at IS NULL")?
        .execute(rusqlite::params![now, response_sealed, old_hash, next.client_id])?
        == 1;
    if won {
        tx.prepare_cached("INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, scope, resource, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?
            .execute(rusqlite::params![
                next.token_hash,
                next.family_id,
                next.client_id,
                next.user_id,
                next.scope,
                next.resource,
                now,
                next.expires_at,
            ])?;
        if touch {
            tx.prepare_cached("UPDATE oauth_clients SET last_used_at = ?1 WHERE client_id = ?2")?
                .execute(rusqlite::params![now, next.client_id])?;
        }
    }
    tx.commit()?;
    Ok(won)
}
