//! The JWT ids of accepted assertions (RFC 7523 client assertions and
//! identity-assertion grants). An assertion is single use: the first
//! replica to record its id wins, every later presentation loses.

use super::Consumed;
use crate::store::{Store, StoreError, on_db};

impl Store {
    /// Record `key` (the assertion's issuer and `jti`) until `expires_at`.
    /// `Won` for the first use; `Lost` when it is recorded and not yet
    /// expired. An expired row is taken over, so a sweep that has not run
    /// yet never refuses a fresh assertion. One statement: two replicas
    /// racing on one id get one winner.
    pub async fn use_assertion_jti(
        &self,
        key: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<Consumed, StoreError> {
        const SQL: &str = "INSERT INTO assertion_jtis (key, expires_at) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE assertion_jtis.expires_at <= $3";
        let written = on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(key)
            .bind(expires_at)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(if written == 1 {
            Consumed::Won
        } else {
            Consumed::Lost
        })
    }
}
