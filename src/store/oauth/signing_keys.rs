//! The authorization server's signing keys (private halves sealed).
//!
//! Creating the first key and rotating are serialised across replicas: on
//! PostgreSQL each runs in a transaction holding one advisory lock
//! (`pg_advisory_xact_lock`, waited for), so replicas starting at once on an
//! empty database create exactly one first key, and the others find it.
//! SQLite (one replica) needs no lock: each is one transaction there too.

use super::{SigningKeyRecord, uncancellable};
use crate::store::{Db, Store, StoreError, leases::lock_key, on_db};

/// The advisory lock every change to the set of signing keys takes.
const KEYS_LOCK: &str = "signing-keys";

macro_rules! key_columns {
    () => {
        "kid, alg, private_sealed, public_jwk, created_at, activate_at, retire_at"
    };
}

impl Store {
    /// Store `key` as the first key, unless a live key exists at `now`
    /// (another replica created one first): `true` when `key` was stored.
    pub async fn insert_first_signing_key(
        &self,
        key: &SigningKeyRecord,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (store, key) = (self.clone(), key.clone());
        uncancellable(async move { store.change_keys_locked(&key, now, None).await }).await
    }

    /// Store `key` (to activate later) and schedule every other key without a
    /// retirement time to retire at `retire_at`, in one locked transaction:
    /// two rotations at once cannot retire each other's new key.
    pub async fn rotate_signing_key(
        &self,
        key: &SigningKeyRecord,
        retire_at: i64,
    ) -> Result<(), StoreError> {
        let (store, key) = (self.clone(), key.clone());
        uncancellable(async move {
            store
                .change_keys_locked(&key, key.created_at, Some(retire_at))
                .await
                .map(|_| ())
        })
        .await
    }

    /// `retire_others: None` inserts `key` only when no key is live at
    /// `now`; `Some(at)` always inserts it and retires the others at `at`.
    async fn change_keys_locked(
        &self,
        key: &SigningKeyRecord,
        now: i64,
        retire_others: Option<i64>,
    ) -> Result<bool, StoreError> {
        const INSERT_IF_NONE_LIVE: &str = concat!(
            "INSERT INTO signing_keys (",
            key_columns!(),
            ") SELECT $1, $2, $3, $4, $5, $6, $7 WHERE NOT EXISTS \
             (SELECT 1 FROM signing_keys WHERE retire_at IS NULL OR retire_at > $8)"
        );
        const INSERT: &str = concat!(
            "INSERT INTO signing_keys (",
            key_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        const RETIRE: &str =
            "UPDATE signing_keys SET retire_at = $1 WHERE kid <> $2 AND retire_at IS NULL";
        let lock = lock_key(KEYS_LOCK);
        let is_postgres = matches!(self.db(), Db::Postgres(_));
        let inserted = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            if is_postgres {
                // Held until commit; a second replica waits here, then sees the key.
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(lock)
                    .execute(&mut *tx)
                    .await?;
            }
            let sql = if retire_others.is_some() {
                INSERT
            } else {
                INSERT_IF_NONE_LIVE
            };
            let mut insert = sqlx::query(sql)
                .bind(&key.kid)
                .bind(&key.alg)
                .bind(&key.private_sealed)
                .bind(&key.public_jwk)
                .bind(key.created_at)
                .bind(key.activate_at)
                .bind(key.retire_at);
            if retire_others.is_none() {
                insert = insert.bind(now);
            }
            let inserted = insert.execute(&mut *tx).await?.rows_affected() == 1;
            if let Some(retire_at) = retire_others {
                sqlx::query(RETIRE)
                    .bind(retire_at)
                    .bind(&key.kid)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await.map(|()| inserted)
        })?;
        Ok(inserted)
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
}
