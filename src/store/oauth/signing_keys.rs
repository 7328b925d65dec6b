//! The authorization server's signing keys (private halves sealed).

use super::SigningKeyRecord;
use crate::store::{Store, StoreError, on_db};

macro_rules! key_columns {
    () => {
        "kid, alg, private_sealed, public_jwk, created_at, activate_at, retire_at"
    };
}

impl Store {
    pub async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError> {
        const SQL: &str = concat!(
            "INSERT INTO signing_keys (",
            key_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.private_sealed)
            .bind(&key.public_jwk)
            .bind(key.created_at)
            .bind(key.activate_at)
            .bind(key.retire_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Keys not yet retired at `now`, oldest first.
    pub async fn live_signing_keys(&self, now: i64) -> Result<Vec<SigningKeyRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            key_columns!(),
            " FROM signing_keys WHERE retire_at IS NULL OR retire_at > $1 ORDER BY activate_at, kid"
        );
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<
            _,
            SigningKeyRecord,
        >(SQL)
        .bind(now)
        .fetch_all(pool)
        .await)?)
    }

    pub async fn all_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            key_columns!(),
            " FROM signing_keys ORDER BY activate_at, kid"
        );
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<
            _,
            SigningKeyRecord,
        >(SQL)
        .fetch_all(pool)
        .await)?)
    }

    /// Schedule every key other than `keep` without a retirement time to retire at `retire_at`.
    pub async fn retire_signing_keys_except(
        &self,
        keep: &str,
        retire_at: i64,
    ) -> Result<u64, StoreError> {
        const SQL: &str =
            "UPDATE signing_keys SET retire_at = $1 WHERE kid <> $2 AND retire_at IS NULL";
        Ok(on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(retire_at)
            .bind(keep)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?)
    }
}
