//! Pending authorization requests and authorization codes.

use rusqlite::OptionalExtension;

use super::{AuthRequestRecord, CodeRecord, Consumed, NewRefresh, uncancellable};
use crate::store::dedicated::Dedicated;
use crate::store::inline::Access;
use crate::store::{Grants, Store, StoreError, on_db, on_grants, on_pg};

macro_rules! code_columns {
    () => {
        "code_hash, client_id, user_id, redirect_uri, code_challenge, scope, resource, family_id, created_at, expires_at, redeemed_at, response_sealed, redirect_uri_sent"
    };
}

impl Store {
    pub async fn insert_auth_request(&self, record: &AuthRequestRecord) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO auth_requests (id_hash, browser_hash, csrf_hash, request, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)";
        let r = record.clone();
        on_grants!(self, Access::Ephemeral,
            sqlite: |conn| conn.prepare_cached(SQL)?.execute(rusqlite::params![
                r.id_hash, r.browser_hash, r.csrf_hash, r.request, r.created_at, r.expires_at,
            ]),
            postgres: |conn| sqlx::query(SQL)
                .bind(&r.id_hash)
                .bind(&r.browser_hash)
                .bind(&r.csrf_hash)
                .bind(&r.request)
                .bind(r.created_at)
                .bind(r.expires_at)
                .execute(conn)
                .await
                .map(|done| done.rows_affected() as usize),
        )?;
        Ok(())
    }

    pub async fn get_auth_request(
        &self,
        id_hash: &str,
        now: i64,
    ) -> Result<Option<AuthRequestRecord>, StoreError> {
        const SQL: &str = "SELECT id_hash, browser_hash, csrf_hash, request, created_at, expires_at FROM auth_requests WHERE id_hash = $1 AND expires_at > $2";
        self.auth_request_by(SQL, Access::Read, id_hash, now).await
    }

    /// Consume a pending authorization: only one caller gets it.
    pub async fn take_auth_request(
        &self,
        id_hash: &str,
        now: i64,
    ) -> Result<Option<AuthRequestRecord>, StoreError> {
        const SQL: &str = "DELETE FROM auth_requests WHERE id_hash = $1 AND expires_at > $2 RETURNING id_hash, browser_hash, csrf_hash, request, created_at, expires_at";
        self.auth_request_by(SQL, Access::Ephemeral, id_hash, now)
            .await
    }

    /// A live pending request by `sql` (`$1` id hash, `$2` now).
    async fn auth_request_by(
        &self,
        sql: &'static str,
        access: Access,
        id_hash: &str,
        now: i64,
    ) -> Result<Option<AuthRequestRecord>, StoreError> {
        let id_hash = id_hash.to_owned();
        on_grants!(self, access,
            sqlite: |conn| conn
                .prepare_cached(sql)?
                .query_row(rusqlite::params![id_hash, now], AuthRequestRecord::from_sqlite)
                .optional(),
            postgres: |conn| sqlx::query_as::<_, AuthRequestRecord>(sql)
                .bind(&id_hash)
                .bind(now)
                .fetch_optional(conn)
                .await,
        )
    }

    // codes

    pub async fn insert_code(&self, code: &CodeRecord) -> Result<(), StoreError> {
        const SQL: &str = concat!(
            "INSERT INTO auth_codes (",
            code_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        );
        let c = code.clone();
        on_grants!(self, Access::Ephemeral,
            sqlite: |conn| conn.prepare_cached(SQL)?.execute(rusqlite::params![
                c.code_hash,
                c.client_id,
                c.user_id,
                c.redirect_uri,
                c.code_challenge,
                c.scope,
                c.resource,
                c.family_id,
                c.created_at,
                c.expires_at,
                c.redeemed_at,
                c.response_sealed,
                c.redirect_uri_sent,
            ]),
            postgres: |conn| sqlx::query(SQL)
                .bind(&c.code_hash)
                .bind(&c.client_id)
                .bind(&c.user_id)
                .bind(&c.redirect_uri)
                .bind(&c.code_challenge)
                .bind(&c.scope)
                .bind(&c.resource)
                .bind(&c.family_id)
                .bind(c.created_at)
                .bind(c.expires_at)
                .bind(c.redeemed_at)
                .bind(&c.response_sealed)
                .bind(c.redirect_uri_sent)
                .execute(conn)
                .await
                .map(|done| done.rows_affected() as usize),
        )?;
        Ok(())
    }

    pub async fn get_code(&self, code_hash: &str) -> Result<Option<CodeRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            code_columns!(),
            " FROM auth_codes WHERE code_hash = $1"
        );
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<_, CodeRecord>(
            SQL
        )
        .bind(code_hash)
        .fetch_optional(pool)
        .await)?)
    }

    /// The code, and whether its user still exists, in one read (the grant
    /// needs both before it mints).
    pub async fn get_code_and_user(
        &self,
        code_hash: &str,
    ) -> Result<Option<(CodeRecord, bool)>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            code_columns!(),
            ", EXISTS (SELECT 1 FROM users WHERE users.id = auth_codes.user_id) AS user_exists FROM auth_codes WHERE code_hash = $1"
        );
        let set = match self.grants() {
            Grants::Sqlite(db) => {
                let code_hash = code_hash.to_owned();
                return db
                    .run(Access::Read, move |conn| {
                        conn.prepare_cached(SQL)?
                            .query_row([&code_hash], |row| {
                                Ok((CodeRecord::from_sqlite(row)?, row.get("user_exists")?))
                            })
                            .optional()
                    })
                    .await;
            }
            Grants::Postgres(sets) => sets.set(Access::Read),
        };
        on_pg!(set, |conn| {
            match sqlx::query(SQL).bind(code_hash).fetch_optional(conn).await {
                Ok(Some(row)) => {
                    use sqlx::{FromRow, Row};
                    CodeRecord::from_row(&row)
                        .and_then(|code| Ok((code, row.try_get::<bool, _>("user_exists")?)))
                        .map(Some)
                }
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Mark the code redeemed, store the first refresh token of its family
    /// and the `last_used_at` of the client `touch` names, atomically: one
    /// statement on PostgreSQL (`Lost` if it was already redeemed).
    async fn redeem_code_on_postgres(
        &self,
        set: &Dedicated<sqlx::PgConnection>,
        code_hash: &str,
        now: i64,
        response_sealed: &str,
        refresh: Option<&NewRefresh>,
        touch: Option<&str>,
    ) -> Result<Consumed, StoreError> {
        macro_rules! mark {
            () => {
                "UPDATE auth_codes SET redeemed_at = $1, response_sealed = $2 WHERE code_hash = $3 AND redeemed_at IS NULL RETURNING code_hash"
            };
        }
        const WITH_REFRESH: &str = concat!(
            "WITH won AS (",
            mark!(),
            "), next AS (",
            "INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, scope, resource, created_at, expires_at) SELECT $5, $6, $7, $8, $9, $10, $1, $11",
            " FROM won), touched AS (UPDATE oauth_clients SET last_used_at = $1 WHERE client_id = $4 AND EXISTS (SELECT 1 FROM won)) SELECT code_hash FROM won"
        );
        const WITHOUT: &str = concat!(
            "WITH won AS (",
            mark!(),
            "), touched AS (UPDATE oauth_clients SET last_used_at = $1 WHERE client_id = $4 AND EXISTS (SELECT 1 FROM won)) SELECT code_hash FROM won"
        );
        let query = sqlx::query(if refresh.is_some() {
            WITH_REFRESH
        } else {
            WITHOUT
        })
        .bind(now)
        .bind(response_sealed)
        .bind(code_hash)
        .bind(touch);
        let query = match refresh {
            Some(r) => query
                .bind(&r.token_hash)
                .bind(&r.family_id)
                .bind(&r.client_id)
                .bind(&r.user_id)
                .bind(&r.scope)
                .bind(&r.resource)
                .bind(r.expires_at),
            None => query,
        };
        let won = on_pg!(set, |conn| query.fetch_optional(conn).await)?.is_some();
        Ok(if won { Consumed::Won } else { Consumed::Lost })
    }

    /// Redeem a code once (and store the first refresh token with it);
    /// `touch` names a client to record as having obtained tokens.
    pub async fn redeem_code(
        &self,
        code_hash: &str,
        now: i64,
        response_sealed: &str,
        refresh: Option<&NewRefresh>,
        touch: Option<&str>,
    ) -> Result<Consumed, StoreError> {
        let set = match self.grants() {
            Grants::Sqlite(db) => {
                let (code_hash, sealed, refresh, touch) = (
                    code_hash.to_owned(),
                    response_sealed.to_owned(),
                    refresh.cloned(),
                    touch.map(str::to_owned),
                );
                let won = db
                    .run(Access::Write, move |conn| {
                        redeem_on_sqlite(
                            conn,
                            &code_hash,
                            now,
                            &sealed,
                            refresh.as_ref(),
                            touch.as_deref(),
                        )
                    })
                    .await?;
                return Ok(if won { Consumed::Won } else { Consumed::Lost });
            }
            Grants::Postgres(sets) => sets.clone(),
        };
        let (store, code_hash, sealed, refresh, touch) = (
            self.clone(),
            code_hash.to_owned(),
            response_sealed.to_owned(),
            refresh.cloned(),
            touch.map(str::to_owned),
        );
        // A dropped caller must not leave the statement half sent.
        uncancellable(async move {
            store
                .redeem_code_on_postgres(
                    set.set(Access::Write),
                    &code_hash,
                    now,
                    &sealed,
                    refresh.as_ref(),
                    touch.as_deref(),
                )
                .await
        })
        .await
    }
}

/// The redemption as one SQLite transaction, run where it is called:
/// `true` if this caller won.
fn redeem_on_sqlite(
    conn: &mut rusqlite::Connection,
    code_hash: &str,
    now: i64,
    response_sealed: &str,
    refresh: Option<&NewRefresh>,
    touch: Option<&str>,
) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let won = tx
        .prepare_cached("UPDATE auth_codes SET redeemed_at = ?1, response_sealed = ?2 WHERE code_hash = ?3 AND redeemed_at IS NULL")?
        .execute(rusqlite::params![now, response_sealed, code_hash])?
        == 1;
    if won {
        if let Some(r) = refresh {
            tx.prepare_cached("INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, scope, resource, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?
                .execute(rusqlite::params![
                    r.token_hash,
                    r.family_id,
                    r.client_id,
                    r.user_id,
                    r.scope,
                    r.resource,
                    now,
                    r.expires_at,
                ])?;
        }
        if let Some(client_id) = touch {
            tx.prepare_cached("UPDATE oauth_clients SET last_used_at = ?1 WHERE client_id = ?2")?
                .execute(rusqlite::params![now, client_id])?;
        }
    }
    tx.commit()?;
    Ok(won)
}
