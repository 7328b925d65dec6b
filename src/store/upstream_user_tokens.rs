//! Per-user upstream authorization: each user's sealed token set per
//! upstream, the connect attempts in flight, and mcpgate's client at each
//! upstream's authorization server (migration 0013).

use super::{Store, StoreError, on_db};

/// The AEAD contexts of this file's sealed columns (sealing binds a value to
/// its column; `oauth::reseal` and `upstream::user_auth` both need them).
pub const TOKENS_CONTEXT: &str = "upstream_user_tokens.sealed";
pub const ATTEMPT_CONTEXT: &str = "upstream_connect_attempts.secrets";
pub const CLIENT_CONTEXT: &str = "upstream_clients.sealed";

/// One (user, upstream) connection.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserTokenRecord {
    pub connection_id: String,
    pub user_id: String,
    pub upstream: String,
    /// Sealed JSON: access token, refresh token, scope.
    pub sealed: String,
    pub expires_at: Option<i64>,
    pub version: i64,
    pub refresh_lease_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConnectAttemptRecord {
    pub state_hash: String,
    pub user_id: String,
    pub upstream: String,
    pub browser_hash: String,
    /// Sealed JSON: the PKCE verifier and the endpoints it was made for.
    pub secrets_sealed: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The key of a (user, upstream) row; upstream names have no spaces.
pub fn connection_id(upstream: &str, user_id: &str) -> String {
    format!("{upstream} {user_id}")
}

const TOKEN_COLUMNS: &str = "connection_id, user_id, upstream, sealed, expires_at, version, refresh_lease_until, created_at, updated_at";

impl Store {
    /// Store a fresh token set from a completed connect (replaces any other).
    pub async fn put_user_upstream_tokens(
        &self,
        upstream: &str,
        user_id: &str,
        sealed: &str,
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO upstream_user_tokens (connection_id, user_id, upstream, sealed, expires_at, version, refresh_lease_until, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, NULL, $6, $6) ON CONFLICT (connection_id) DO UPDATE SET sealed = excluded.sealed, expires_at = excluded.expires_at, version = upstream_user_tokens.version + 1, refresh_lease_until = NULL, updated_at = excluded.updated_at";
        let id = connection_id(upstream, user_id);
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(&id)
            .bind(user_id)
            .bind(upstream)
            .bind(sealed)
            .bind(expires_at)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn user_upstream_tokens(
        &self,
        upstream: &str,
        user_id: &str,
    ) -> Result<Option<UserTokenRecord>, StoreError> {
        let sql =
            format!("SELECT {TOKEN_COLUMNS} FROM upstream_user_tokens WHERE connection_id = $1");
        let id = connection_id(upstream, user_id);
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as::<_, UserTokenRecord>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(&id)
                .fetch_optional(pool)
                .await
        })?)
    }

    /// Take the refresh lease of a row still at `version`: `true` for the
    /// one caller (across replicas) that then refreshes.
    pub async fn lease_user_upstream_refresh(
        &self,
        connection_id: &str,
        version: i64,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE upstream_user_tokens SET refresh_lease_until = $3 WHERE connection_id = $1 AND version = $2 AND (refresh_lease_until IS NULL OR refresh_lease_until <= $4)";
        Ok(on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(connection_id)
            .bind(version)
            .bind(until)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?
            == 1)
    }

    /// Give the lease back after a refresh that failed for a passing reason
    /// (the authorization server was down), so the next call tries again at
    /// once instead of waiting out the lease.
    pub async fn release_user_upstream_refresh(
        &self,
        connection_id: &str,
        version: i64,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE upstream_user_tokens SET refresh_lease_until = NULL WHERE connection_id = $1 AND version = $2";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(connection_id)
            .bind(version)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Write a refreshed token set over `version` (the lease holder's); the
    /// lease ends. `false`: the row changed meanwhile (revoked or reconnected).
    pub async fn finish_user_upstream_refresh(
        &self,
        connection_id: &str,
        version: i64,
        sealed: &str,
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE upstream_user_tokens SET sealed = $3, expires_at = $4, version = version + 1, refresh_lease_until = NULL, updated_at = $5 WHERE connection_id = $1 AND version = $2";
        Ok(on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(connection_id)
            .bind(version)
            .bind(sealed)
            .bind(expires_at)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?
            == 1)
    }

    /// A user's connections, every upstream.
    pub async fn user_upstream_connections(
        &self,
        user_id: &str,
    ) -> Result<Vec<UserTokenRecord>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM upstream_user_tokens WHERE user_id = $1 ORDER BY upstream"
        );
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as::<_, UserTokenRecord>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(user_id)
                .fetch_all(pool)
                .await
        })?)
    }

    /// Remove one connection, returning what it held (to revoke upstream).
    pub async fn delete_user_upstream_tokens(
        &self,
        upstream: &str,
        user_id: &str,
    ) -> Result<Option<UserTokenRecord>, StoreError> {
        let sql = format!(
            "DELETE FROM upstream_user_tokens WHERE connection_id = $1 RETURNING {TOKEN_COLUMNS}"
        );
        let id = connection_id(upstream, user_id);
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as::<_, UserTokenRecord>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(&id)
                .fetch_optional(pool)
                .await
        })?)
    }

    pub async fn insert_connect_attempt(
        &self,
        record: &ConnectAttemptRecord,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO upstream_connect_attempts (state_hash, user_id, upstream, browser_hash, secrets_sealed, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(&record.state_hash)
            .bind(&record.user_id)
            .bind(&record.upstream)
            .bind(&record.browser_hash)
            .bind(&record.secrets_sealed)
            .bind(record.created_at)
            .bind(record.expires_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Consume a connect attempt by its state: one caller gets it, once,
    /// before it expires. Expired ones are dropped on the way.
    pub async fn take_connect_attempt(
        &self,
        state_hash: &str,
        now: i64,
    ) -> Result<Option<ConnectAttemptRecord>, StoreError> {
        const SQL: &str = "DELETE FROM upstream_connect_attempts WHERE state_hash = $1 RETURNING state_hash, user_id, upstream, browser_hash, secrets_sealed, created_at, expires_at";
        const EXPIRED: &str = "DELETE FROM upstream_connect_attempts WHERE expires_at <= $1";
        let taken = on_db!(self.db(), |pool| {
            sqlx::query_as::<_, ConnectAttemptRecord>(SQL)
                .bind(state_hash)
                .fetch_optional(pool)
                .await
        })?;
        on_db!(self.db(), |pool| sqlx::query(EXPIRED)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(taken.filter(|a| a.expires_at > now))
    }

    /// mcpgate's client at `upstream`'s authorization server `issuer`, sealed.
    pub async fn upstream_client(
        &self,
        upstream: &str,
        issuer: &str,
    ) -> Result<Option<String>, StoreError> {
        const SQL: &str = "SELECT sealed FROM upstream_clients WHERE upstream = $1 AND issuer = $2";
        Ok(on_db!(self.db(), |pool| sqlx::query_scalar::<_, String>(
            SQL
        )
        .bind(upstream)
        .bind(issuer)
        .fetch_optional(pool)
        .await)?)
    }

    /// Forget the registration at `issuer` (the authorization server no
    /// longer knows it: `invalid_client`); the next attempt registers anew.
    pub async fn forget_upstream_client(
        &self,
        upstream: &str,
        issuer: &str,
    ) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM upstream_clients WHERE upstream = $1 AND issuer = $2";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(upstream)
            .bind(issuer)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Keep a registration unless another replica stored one first; the
    /// stored one is returned either way, so every replica uses the same client.
    pub async fn save_upstream_client(
        &self,
        upstream: &str,
        issuer: &str,
        sealed: &str,
        now: i64,
    ) -> Result<String, StoreError> {
        // A different issuer (the upstream moved) replaces the old client.
        const SQL: &str = "INSERT INTO upstream_clients (upstream, issuer, sealed, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (upstream) DO UPDATE SET issuer = excluded.issuer, sealed = excluded.sealed, created_at = excluded.created_at WHERE upstream_clients.issuer <> excluded.issuer";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(upstream)
            .bind(issuer)
            .bind(sealed)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(self
            .upstream_client(upstream, issuer)
            .await?
            .unwrap_or_else(|| sealed.to_owned()))
    }
}
