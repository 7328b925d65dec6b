//! Authorization-server state: users, signing keys, clients, pending
//! authorizations, login sessions, consents, codes and refresh tokens.
//!
//! Single-use things are consumed with one conditional statement
//! (`DELETE ... RETURNING`, `UPDATE ... WHERE x IS NULL`), so two replicas
//! racing on the same code or refresh token get exactly one winner.
//!
//! One file per concern: [`users`] (and login sessions), [`signing_keys`],
//! [`clients`] (and consents), [`assertions`] (used assertion ids), [`codes`] (and pending authorization
//! requests), [`refresh`] tokens, the [`sealed`] columns a key change re-seals; the records, the shared transaction helpers
//! and the sweep are here.

mod assertions;
mod clients;
mod codes;
mod refresh;
mod sealed;
mod signing_keys;
mod users;

pub use sealed::SealedColumn;

use super::{Store, StoreError, on_db};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// May use the admin console (`/admin`).
    pub is_admin: bool,
    /// When an admin disabled the user: no sign-in while set.
    pub disabled_at: Option<i64>,
}

/// A live grant: a refresh-token family (one sign-in of a user to a
/// client), as the admin console and `mcpgate consents grants` list it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GrantRecord {
    pub family_id: String,
    pub client_id: String,
    pub scope: String,
    /// When its newest refresh token was issued.
    pub last_refreshed_at: i64,
    pub expires_at: i64,
}

/// What the store knows of a client from its grants and consents.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientActivity {
    pub client_id: String,
    /// When it last obtained a refresh token (a sign-in or a refresh).
    pub last_token_at: Option<i64>,
    /// Refresh tokens that are current (not rotated, revoked or expired).
    pub live_grants: i64,
    /// Users who remember consenting to it.
    pub consents: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: String,
    pub private_sealed: String,
    pub public_jwk: String,
    pub created_at: i64,
    pub activate_at: i64,
    pub retire_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientRecord {
    pub client_id: String,
    pub secret_hash: Option<String>,
    /// The registered metadata as JSON.
    pub metadata: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuthRequestRecord {
    pub id_hash: String,
    pub browser_hash: String,
    pub csrf_hash: String,
    /// The validated authorization request as JSON.
    pub request: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CodeRecord {
    pub code_hash: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub scope: String,
    pub resource: String,
    pub family_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub redeemed_at: Option<i64>,
    pub response_sealed: Option<String>,
    /// The authorization request named `redirect_uri`: `/token` must repeat it.
    pub redirect_uri_sent: bool,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshRecord {
    pub token_hash: String,
    pub family_id: String,
    pub client_id: String,
    pub user_id: String,
    pub scope: String,
    pub resource: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub rotated_at: Option<i64>,
    pub response_sealed: Option<String>,
    pub revoked_at: Option<i64>,
}

/// The grants' records read by statements run on the calling thread
/// (see `store::inline`), by column name as sqlx's `FromRow` does.
impl ClientRecord {
    pub(in crate::store) fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(ClientRecord {
            client_id: row.get("client_id")?,
            secret_hash: row.get("secret_hash")?,
            metadata: row.get("metadata")?,
            created_at: row.get("created_at")?,
            last_used_at: row.get("last_used_at")?,
        })
    }
}

impl AuthRequestRecord {
    pub(in crate::store) fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(AuthRequestRecord {
            id_hash: row.get("id_hash")?,
            browser_hash: row.get("browser_hash")?,
            csrf_hash: row.get("csrf_hash")?,
            request: row.get("request")?,
            created_at: row.get("created_at")?,
            expires_at: row.get("expires_at")?,
        })
    }
}

impl CodeRecord {
    pub(in crate::store) fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(CodeRecord {
            code_hash: row.get("code_hash")?,
            client_id: row.get("client_id")?,
            user_id: row.get("user_id")?,
            redirect_uri: row.get("redirect_uri")?,
            code_challenge: row.get("code_challenge")?,
            scope: row.get("scope")?,
            resource: row.get("resource")?,
            family_id: row.get("family_id")?,
            created_at: row.get("created_at")?,
            expires_at: row.get("expires_at")?,
            redeemed_at: row.get("redeemed_at")?,
            response_sealed: row.get("response_sealed")?,
            redirect_uri_sent: row.get("redirect_uri_sent")?,
        })
    }
}

impl RefreshRecord {
    pub(in crate::store) fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(RefreshRecord {
            token_hash: row.get("token_hash")?,
            family_id: row.get("family_id")?,
            client_id: row.get("client_id")?,
            user_id: row.get("user_id")?,
            scope: row.get("scope")?,
            resource: row.get("resource")?,
            created_at: row.get("created_at")?,
            expires_at: row.get("expires_at")?,
            rotated_at: row.get("rotated_at")?,
            response_sealed: row.get("response_sealed")?,
            revoked_at: row.get("revoked_at")?,
        })
    }
}

/// A new refresh token row.
#[derive(Debug, Clone)]
pub struct NewRefresh {
    pub token_hash: String,
    pub family_id: String,
    pub client_id: String,
    pub user_id: String,
    pub scope: String,
    pub resource: String,
    pub expires_at: i64,
}

/// The outcome of trying to consume something single-use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumed {
    /// This caller won; the new state is written.
    Won,
    /// Someone consumed it first (or it is gone).
    Lost,
}

/// What a sweep removed, for logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub clients: u64,
    pub expired_rows: u64,
}

pub(in crate::store) fn conflict_or(err: sqlx::Error, what: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_owned())
        }
        _ => err.into(),
    }
}

impl Store {
    /// Delete expired pending state and clients unused for `client_ttl_secs`.
    pub async fn sweep_oauth(&self, now: i64, client_ttl_secs: i64) -> Result<Swept, StoreError> {
        // Codes are kept a day past expiry so a late replay is still recognised.
        const REQUESTS: &str = "DELETE FROM auth_requests WHERE expires_at <= $1";
        const UPSTREAM_LOGINS: &str = "DELETE FROM upstream_logins WHERE expires_at <= $1";
        const BRIDGE_REQUESTS: &str = "DELETE FROM bridge_requests WHERE expires_at <= $1";
        // Upstream tokens live as long as their grant has a live refresh token.
        const UPSTREAM_TOKENS: &str = "DELETE FROM upstream_tokens WHERE family_id NOT IN (SELECT family_id FROM refresh_tokens WHERE revoked_at IS NULL AND expires_at > $1) AND updated_at <= $1 - 86400";
        const SESSIONS: &str = "DELETE FROM user_sessions WHERE expires_at <= $1";
        const CODES: &str = "DELETE FROM auth_codes WHERE expires_at <= $1 - 86400";
        const REFRESH: &str = "DELETE FROM refresh_tokens WHERE expires_at <= $1 - 86400";
        const ASSERTION_JTIS: &str = "DELETE FROM assertion_jtis WHERE expires_at <= $1";
        const CLIENTS: &str = "DELETE FROM oauth_clients WHERE COALESCE(last_used_at, created_at) <= $1 AND client_id NOT IN (SELECT DISTINCT client_id FROM refresh_tokens WHERE revoked_at IS NULL AND expires_at > $2)";
        let mut swept = Swept::default();
        for sql in [
            REQUESTS,
            UPSTREAM_LOGINS,
            BRIDGE_REQUESTS,
            UPSTREAM_TOKENS,
            SESSIONS,
            CODES,
            REFRESH,
            ASSERTION_JTIS,
        ] {
            swept.expired_rows += on_db!(self.db(), |pool| sqlx::query(sql)
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?;
        }
        swept.clients = on_db!(self.db(), |pool| sqlx::query(CLIENTS)
            .bind(now - client_ttl_secs)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(swept)
    }
}

/// Revoke a user's refresh tokens (`$1` user id, `$2` time).
const REVOKE_BY_USER: &str =
    "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL";

/// Run a revoking UPDATE (`$1` key, `$2` time) inside the transaction `$tx`
/// until it finds nothing live: see [`Store::revoke_family`] for the race
/// with a concurrent rotation that one statement would miss.
macro_rules! revoke_all {
    ($tx:ident, $sql:expr, $key:expr, $now:expr) => {
        loop {
            let n = sqlx::query($sql)
                .bind($key)
                .bind($now)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
            if n == 0 {
                break;
            }
        }
    };
}
use revoke_all;

/// sqlx's `begin`/`commit` are not cancel-safe on PostgreSQL (a request
/// dropped mid-transaction, e.g. a client disconnecting, can leave the pooled
/// connection inside a transaction that swallows later statements). Every
/// transaction therefore runs to completion in its own task.
async fn uncancellable<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(work)
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
}
