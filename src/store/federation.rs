//! Proxy-mode state: users known from an upstream identity provider, the
//! upstream logins in flight, and the upstream tokens of each grant.

use super::{Store, StoreError, on_db};

/// Marks a user who signs in upstream: no password verifies against it.
/// Migration 0007's unique index on local user names excludes this value.
pub const NO_PASSWORD: &str = "!upstream";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdpLoginRecord {
    pub state_hash: String,
    pub request_hash: String,
    pub browser_hash: String,
    /// Sealed JSON with the upstream PKCE verifier and nonce.
    pub secrets_sealed: String,
    pub remember: i64,
    pub consented_user: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdpTokenRecord {
    pub family_id: String,
    pub user_id: String,
    pub sealed: String,
    pub expires_at: Option<i64>,
    pub updated_at: i64,
}

impl Store {
    /// Create or update the user an upstream identity maps to. The id is
    /// derived from the upstream subject, so replicas agree without a lookup.
    /// The display name is not unique among upstream users (two subjects
    /// may share an email); a unique violation is reported as a conflict.
    pub async fn upsert_upstream_user(
        &self,
        id: &str,
        username: &str,
        profile: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO users (id, username, password_hash, created_at, updated_at, profile) VALUES ($1, $2, $3, $4, $4, $5) ON CONFLICT (id) DO UPDATE SET profile = excluded.profile, updated_at = excluded.updated_at";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(id)
            .bind(username)
            .bind(NO_PASSWORD)
            .bind(now)
            .bind(profile)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(|e| {
            super::oauth::conflict_or(e, "the user could not be stored next to an existing one")
        })?;
        Ok(())
    }

    /// The identity claims stored for a user (`None` for local users).
    pub async fn user_profile(&self, id: &str) -> Result<Option<String>, StoreError> {
        const SQL: &str = "SELECT profile FROM users WHERE id = $1";
        Ok(
            on_db!(self.db(), |pool| sqlx::query_scalar::<_, Option<String>>(
                SQL
            )
            .bind(id)
            .fetch_optional(pool)
            .await)?
            .flatten(),
        )
    }

    pub async fn insert_upstream_login(&self, record: &IdpLoginRecord) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO upstream_logins (state_hash, request_hash, browser_hash, secrets_sealed, remember, consented_user, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(&record.state_hash)
            .bind(&record.request_hash)
            .bind(&record.browser_hash)
            .bind(&record.secrets_sealed)
            .bind(record.remember)
            .bind(&record.consented_user)
            .bind(record.created_at)
            .bind(record.expires_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Consume an upstream login by its state: one caller gets it, once.
    pub async fn take_upstream_login(
        &self,
        state_hash: &str,
        now: i64,
    ) -> Result<Option<IdpLoginRecord>, StoreError> {
        const SQL: &str = "DELETE FROM upstream_logins WHERE state_hash = $1 AND expires_at > $2 RETURNING state_hash, request_hash, browser_hash, secrets_sealed, remember, consented_user, created_at, expires_at";
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as::<_, IdpLoginRecord>(SQL)
                .bind(state_hash)
                .bind(now)
                .fetch_optional(pool)
                .await
        })?)
    }

    pub async fn save_upstream_tokens(&self, record: &IdpTokenRecord) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO upstream_tokens (family_id, user_id, sealed, expires_at, updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (family_id) DO UPDATE SET sealed = excluded.sealed, expires_at = excluded.expires_at, updated_at = excluded.updated_at";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(&record.family_id)
            .bind(&record.user_id)
            .bind(&record.sealed)
            .bind(record.expires_at)
            .bind(record.updated_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn upstream_tokens(
        &self,
        family_id: &str,
    ) -> Result<Option<IdpTokenRecord>, StoreError> {
        const SQL: &str = "SELECT family_id, user_id, sealed, expires_at, updated_at FROM upstream_tokens WHERE family_id = $1";
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as::<_, IdpTokenRecord>(SQL)
                .bind(family_id)
                .fetch_optional(pool)
                .await
        })?)
    }

    pub async fn delete_upstream_tokens(&self, family_id: &str) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM upstream_tokens WHERE family_id = $1";
        Ok(on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(family_id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?
            == 1)
    }
}
