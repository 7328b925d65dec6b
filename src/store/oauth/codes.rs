//! Pending authorization requests and authorization codes.

use super::{
    AuthRequestRecord, CodeRecord, Consumed, INSERT_REFRESH, NewRefresh, insert_refresh,
    uncancellable,
};
use crate::store::{Store, StoreError, on_db};

macro_rules! code_columns {
    () => {
        "code_hash, client_id, user_id, redirect_uri, code_challenge, scope, resource, family_id, created_at, expires_at, redeemed_at, response_sealed, redirect_uri_sent"
    };
}

impl Store {
    pub async fn insert_auth_request(&self, record: &AuthRequestRecord) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO auth_requests (id_hash, browser_hash, csrf_hash, request, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(&record.id_hash)
            .bind(&record.browser_hash)
            .bind(&record.csrf_hash)
            .bind(&record.request)
            .bind(record.created_at)
            .bind(record.expires_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn get_auth_request(
        &self,
        id_hash: &str,
        now: i64,
    ) -> Result<Option<AuthRequestRecord>, StoreError> {
        const SQL: &str = "SELECT id_hash, browser_hash, csrf_hash, request, created_at, expires_at FROM auth_requests WHERE id_hash = $1 AND expires_at > $2";
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<
            _,
            AuthRequestRecord,
        >(SQL)
        .bind(id_hash)
        .bind(now)
        .fetch_optional(pool)
        .await)?)
    }

    /// Consume a pending authorization: only one caller gets it.
    pub async fn take_auth_request(
        &self,
        id_hash: &str,
        now: i64,
    ) -> Result<Option<AuthRequestRecord>, StoreError> {
        const SQL: &str = "DELETE FROM auth_requests WHERE id_hash = $1 AND expires_at > $2 RETURNING id_hash, browser_hash, csrf_hash, request, created_at, expires_at";
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<
            _,
            AuthRequestRecord,
        >(SQL)
        .bind(id_hash)
        .bind(now)
        .fetch_optional(pool)
        .await)?)
    }

    // codes

    pub async fn insert_code(&self, code: &CodeRecord) -> Result<(), StoreError> {
        const SQL: &str = concat!(
            "INSERT INTO auth_codes (",
            code_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        );
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(&code.code_hash)
            .bind(&code.client_id)
            .bind(&code.user_id)
            .bind(&code.redirect_uri)
            .bind(&code.code_challenge)
            .bind(&code.scope)
            .bind(&code.resource)
            .bind(&code.family_id)
            .bind(code.created_at)
            .bind(code.expires_at)
            .bind(code.redeemed_at)
            .bind(&code.response_sealed)
            .bind(code.redirect_uri_sent)
            .execute(pool)
            .await
            .map(|_| ()))?;
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

    /// Mark the code redeemed and store the first refresh token of its family,
    /// atomically; `Lost` if it was already redeemed.
    async fn redeem_code_now(
        &self,
        code_hash: &str,
        now: i64,
        response_sealed: &str,
        refresh: Option<&NewRefresh>,
    ) -> Result<Consumed, StoreError> {
        const REDEEM: &str = "UPDATE auth_codes SET redeemed_at = $1, response_sealed = $2 WHERE code_hash = $3 AND redeemed_at IS NULL";
        let won = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let won = sqlx::query(REDEEM)
                .bind(now)
                .bind(response_sealed)
                .bind(code_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if won {
                if let Some(r) = refresh {
                    insert_refresh!(tx, r, now).await?;
                }
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            Ok::<bool, sqlx::Error>(won)
        })?;
        Ok(if won { Consumed::Won } else { Consumed::Lost })
    }

    /// Redeem a code once (and store the first refresh token with it).
    pub async fn redeem_code(
        &self,
        code_hash: &str,
        now: i64,
        response_sealed: &str,
        refresh: Option<&NewRefresh>,
    ) -> Result<Consumed, StoreError> {
        let (store, code_hash, sealed, refresh) = (
            self.clone(),
            code_hash.to_owned(),
            response_sealed.to_owned(),
            refresh.cloned(),
        );
        uncancellable(async move {
            store
                .redeem_code_now(&code_hash, now, &sealed, refresh.as_ref())
                .await
        })
        .await
    }
}
