//! Authorization-server state: users, signing keys, clients, pending
//! authorizations, login sessions, consents, codes and refresh tokens.
//!
//! Single-use things are consumed with one conditional statement
//! (`DELETE ... RETURNING`, `UPDATE ... WHERE x IS NULL`), so two replicas
//! racing on the same code or refresh token get exactly one winner.

use super::{Store, StoreError, now_epoch, on_db};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
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

macro_rules! user_columns {
    () => {
        "id, username, password_hash, created_at, updated_at"
    };
}
macro_rules! key_columns {
    () => {
        "kid, alg, private_sealed, public_jwk, created_at, activate_at, retire_at"
    };
}
macro_rules! client_columns {
    () => {
        "client_id, secret_hash, metadata, created_at, last_used_at"
    };
}
macro_rules! code_columns {
    () => {
        "code_hash, client_id, user_id, redirect_uri, code_challenge, scope, resource, family_id, created_at, expires_at, redeemed_at, response_sealed, redirect_uri_sent"
    };
}
macro_rules! refresh_columns {
    () => {
        "token_hash, family_id, client_id, user_id, scope, resource, created_at, expires_at, rotated_at, response_sealed, revoked_at"
    };
}

pub(super) fn conflict_or(err: sqlx::Error, what: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_owned())
        }
        _ => err.into(),
    }
}

impl Store {
    // ------------------------------------------------------------ users

    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<UserRecord, StoreError> {
        let now = now_epoch();
        let user = UserRecord {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            created_at: now,
            updated_at: now,
        };
        const SQL: &str = "INSERT INTO users (id, username, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(&user.id)
            .bind(&user.username)
            .bind(&user.password_hash)
            .bind(now)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(|e| conflict_or(e, "a user with this name exists"))?;
        Ok(user)
    }

    /// The local (password) user with this name: what the login form checks.
    pub async fn find_local_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE username = $1 AND password_hash <> '!upstream'"
        );
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<_, UserRecord>(
            SQL
        )
        .bind(username)
        .fetch_optional(pool)
        .await)?)
    }

    /// The user an operator names by user name or id. Upstream users'
    /// names need not be unique; a name several of them share is refused
    /// with a pointer to the ids.
    pub async fn find_user_by_name(
        &self,
        username: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE username = $1 OR id = $1 LIMIT 2"
        );
        let mut found = on_db!(self.db(), |pool| sqlx::query_as::<_, UserRecord>(SQL)
            .bind(username)
            .fetch_all(pool)
            .await)?;
        if found.len() > 1 {
            return Err(StoreError::Conflict(format!(
                "several users are named {username}; give one's id (mcpgate users list)"
            )));
        }
        Ok(found.pop())
    }

    pub async fn find_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        const SQL: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<_, UserRecord>(
            SQL
        )
        .bind(id)
        .fetch_optional(pool)
        .await)?)
    }

    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        const SQL: &str = concat!("SELECT ", user_columns!(), " FROM users ORDER BY username");
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<_, UserRecord>(
            SQL
        )
        .fetch_all(pool)
        .await)?)
    }

    pub async fn count_users(&self) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM users";
        Ok(on_db!(self.db(), |pool| sqlx::query_scalar::<_, i64>(SQL)
            .fetch_one(pool)
            .await)?)
    }

    /// Set a local user's password and end everything the old one opened:
    /// browser sessions, remembered consents (a consent remembered by
    /// whoever knew the old password would skip the page for them), and
    /// refresh tokens. `false` if there is no such local user.
    async fn set_password_now(&self, username: &str, hash: &str) -> Result<bool, StoreError> {
        const USER: &str = "UPDATE users SET password_hash = $1, updated_at = $2 WHERE username = $3 AND password_hash <> '!upstream' RETURNING id";
        const SESSIONS: &str = "DELETE FROM user_sessions WHERE user_id = $1";
        const CONSENTS: &str = "DELETE FROM consents WHERE user_id = $1";
        let now = now_epoch();
        let changed = on_db!(self.db(), |pool| async {
            let mut tx = pool.begin().await?;
            let id: Option<String> = sqlx::query_scalar(USER)
                .bind(hash)
                .bind(now)
                .bind(username)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(id) = id else {
                tx.rollback().await?;
                return Ok::<bool, sqlx::Error>(false);
            };
            sqlx::query(SESSIONS).bind(&id).execute(&mut *tx).await?;
            sqlx::query(CONSENTS).bind(&id).execute(&mut *tx).await?;
            revoke_all!(tx, REVOKE_BY_USER, &id, now);
            tx.commit().await?;
            Ok(true)
        }
        .await)?;
        Ok(changed)
    }

    /// Delete a user with their sessions and consents, and revoke their refresh tokens.
    async fn delete_user_now(&self, username: &str) -> Result<bool, StoreError> {
        let Some(user) = self.find_user_by_name(username).await? else {
            return Ok(false);
        };
        const SESSIONS: &str = "DELETE FROM user_sessions WHERE user_id = $1";
        const CONSENTS: &str = "DELETE FROM consents WHERE user_id = $1";
        const UPSTREAM: &str = "DELETE FROM upstream_tokens WHERE user_id = $1";
        const USER: &str = "DELETE FROM users WHERE id = $1";
        let now = now_epoch();
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(SESSIONS)
                .bind(&user.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(CONSENTS)
                .bind(&user.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(UPSTREAM)
                .bind(&user.id)
                .execute(&mut *tx)
                .await?;
            revoke_all!(tx, REVOKE_BY_USER, &user.id, now);
            sqlx::query(USER).bind(&user.id).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(true)
    }

    // ------------------------------------------------------------ signing keys

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

    // ------------------------------------------------------------ clients

    /// Insert a dynamic registration unless `max_unused` clients that never
    /// obtained a token exist already: `false` then, and nothing is written.
    /// One statement, so concurrent registrations cannot overshoot much
    /// (SQLite: not at all).
    pub async fn insert_client_capped(
        &self,
        client: &ClientRecord,
        max_unused: i64,
    ) -> Result<bool, StoreError> {
        const SQL: &str = concat!(
            "INSERT INTO oauth_clients (",
            client_columns!(),
            ") SELECT $1, $2, $3, $4, $5 WHERE (SELECT COUNT(*) FROM oauth_clients WHERE last_used_at IS NULL) < $6"
        );
        let inserted = on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(&client.client_id)
            .bind(&client.secret_hash)
            .bind(&client.metadata)
            .bind(client.created_at)
            .bind(client.last_used_at)
            .bind(max_unused)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(|e| conflict_or(e, "client id taken"))?;
        Ok(inserted == 1)
    }

    pub async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            client_columns!(),
            " FROM oauth_clients WHERE client_id = $1"
        );
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as::<_, ClientRecord>(SQL)
                .bind(client_id)
                .fetch_optional(pool)
                .await
        })?)
    }

    pub async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            client_columns!(),
            " FROM oauth_clients ORDER BY created_at, client_id"
        );
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as::<_, ClientRecord>(SQL).fetch_all(pool).await
        })?)
    }

    /// Remove a client with its consents, and revoke its refresh tokens.
    async fn delete_client_now(&self, client_id: &str) -> Result<bool, StoreError> {
        const CONSENTS: &str = "DELETE FROM consents WHERE client_id = $1";
        const REFRESH: &str =
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE client_id = $1 AND revoked_at IS NULL";
        const CLIENT: &str = "DELETE FROM oauth_clients WHERE client_id = $1";
        let now = now_epoch();
        let removed = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(CONSENTS)
                .bind(client_id)
                .execute(&mut *tx)
                .await?;
            revoke_all!(tx, REFRESH, client_id, now);
            let removed = sqlx::query(CLIENT)
                .bind(client_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await.map(|_| removed)
        })?;
        Ok(removed == 1)
    }

    /// Record that a client obtained tokens (unused clients are swept).
    pub async fn touch_client(&self, client_id: &str, now: i64) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE oauth_clients SET last_used_at = $1 WHERE client_id = $2";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(now)
            .bind(client_id)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    // ------------------------------------------------------------ authorization requests

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

    // ------------------------------------------------------------ login sessions

    pub async fn insert_session(
        &self,
        id_hash: &str,
        user_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO user_sessions (id_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(id_hash)
            .bind(user_id)
            .bind(now_epoch())
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// The user of a live session (who must still exist).
    pub async fn session_user(
        &self,
        id_hash: &str,
        now: i64,
    ) -> Result<Option<UserRecord>, StoreError> {
        const SQL: &str = "SELECT u.id, u.username, u.password_hash, u.created_at, u.updated_at FROM user_sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1 AND s.expires_at > $2";
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<_, UserRecord>(
            SQL
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(pool)
        .await)?)
    }

    // ------------------------------------------------------------ consents

    pub async fn save_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scope: &str,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO consents (user_id, client_id, scope, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, created_at = excluded.created_at";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(user_id)
            .bind(client_id)
            .bind(scope)
            .bind(now_epoch())
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// The remembered scope string of (user, client), if any.
    pub async fn consent(
        &self,
        user_id: &str,
        client_id: &str,
    ) -> Result<Option<String>, StoreError> {
        const SQL: &str = "SELECT scope FROM consents WHERE user_id = $1 AND client_id = $2";
        Ok(on_db!(self.db(), |pool| sqlx::query_scalar::<_, String>(
            SQL
        )
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(pool)
        .await)?)
    }

    /// `(client_id, scope, created_at)` of a user's remembered consents.
    pub async fn consents_of(
        &self,
        user_id: &str,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        const SQL: &str = "SELECT client_id, scope, created_at FROM consents WHERE user_id = $1 ORDER BY client_id";
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<
            _,
            (String, String, i64),
        >(SQL)
        .bind(user_id)
        .fetch_all(pool)
        .await)?)
    }

    /// Forget a consent and revoke the user's refresh tokens for the client:
    /// `(a remembered consent existed, refresh tokens revoked)`.
    async fn revoke_consent_now(
        &self,
        user_id: &str,
        client_id: &str,
    ) -> Result<(bool, u64), StoreError> {
        const CONSENT: &str = "DELETE FROM consents WHERE user_id = $1 AND client_id = $2";
        const REFRESH: &str = "UPDATE refresh_tokens SET revoked_at = $3 WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL";
        let now = now_epoch();
        let removed = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let removed = sqlx::query(CONSENT)
                .bind(user_id)
                .bind(client_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            // Repeated like revoke_family's, for the same race.
            let mut revoked = 0;
            loop {
                let n = sqlx::query(REFRESH)
                    .bind(user_id)
                    .bind(client_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                revoked += n;
                if n == 0 {
                    break;
                }
            }
            tx.commit().await.map(|_| (removed == 1, revoked))
        })?;
        Ok(removed)
    }

    // ------------------------------------------------------------ codes

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

    // ------------------------------------------------------------ refresh tokens

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

    // ------------------------------------------------------------ housekeeping

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

/// Insert a [`NewRefresh`] inside the transaction `$tx` (either backend).
macro_rules! insert_refresh {
    ($tx:ident, $r:expr, $now:expr) => {
        sqlx::query(INSERT_REFRESH)
            .bind(&$r.token_hash)
            .bind(&$r.family_id)
            .bind(&$r.client_id)
            .bind(&$r.user_id)
            .bind(&$r.scope)
            .bind(&$r.resource)
            .bind($now)
            .bind($r.expires_at)
            .execute(&mut *$tx)
    };
}
use insert_refresh;

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

const INSERT_REFRESH: &str = "INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, scope, resource, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

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

impl Store {
    /// Remove a user, their sessions, consents and upstream tokens, and revoke their refresh tokens.
    pub async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let (store, username) = (self.clone(), username.to_owned());
        uncancellable(async move { store.delete_user_now(&username).await }).await
    }

    /// Set a local user's password; their sessions, remembered consents and
    /// refresh tokens end with the old one. `false`: no such local user.
    pub async fn set_password(&self, username: &str, hash: &str) -> Result<bool, StoreError> {
        let (store, username, hash) = (self.clone(), username.to_owned(), hash.to_owned());
        uncancellable(async move { store.set_password_now(&username, &hash).await }).await
    }

    /// Remove a client with its consents, and revoke its refresh tokens.
    pub async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let (store, client_id) = (self.clone(), client_id.to_owned());
        uncancellable(async move { store.delete_client_now(&client_id).await }).await
    }

    /// Forget a consent and revoke the user's refresh tokens for the client:
    /// `(a remembered consent existed, refresh tokens revoked)`.
    pub async fn revoke_consent(
        &self,
        user_id: &str,
        client_id: &str,
    ) -> Result<(bool, u64), StoreError> {
        let (store, user_id, client_id) = (self.clone(), user_id.to_owned(), client_id.to_owned());
        uncancellable(async move { store.revoke_consent_now(&user_id, &client_id).await }).await
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

/// Sealed columns the key ring may have to re-seal: `(table, key column, sealed column)`.
pub const SEALED_COLUMNS: &[(&str, &str, &str)] = &[
    ("signing_keys", "kid", "private_sealed"),
    ("auth_codes", "code_hash", "response_sealed"),
    ("refresh_tokens", "token_hash", "response_sealed"),
    ("upstream_tokens", "family_id", "sealed"),
    ("upstream_logins", "state_hash", "secrets_sealed"),
];

impl Store {
    /// Values of a sealed column not sealed with `current_prefix` (`v1.<key id>.`).
    /// `column` must be one of [`SEALED_COLUMNS`].
    pub async fn stale_sealed(
        &self,
        column: (&str, &str, &str),
        current_prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let (table, key, value) = checked_column(column)?;
        // Identifiers from the fixed list above; values are bound.
        let sql = format!(
            "SELECT {key}, {value} FROM {table} WHERE {value} IS NOT NULL AND substr({value}, 1, $1) <> $2"
        );
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<
            _,
            (String, String),
        >(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(current_prefix.len() as i64)
        .bind(current_prefix)
        .fetch_all(pool)
        .await)?)
    }

    /// Replace one sealed value if it is still `old` (a concurrent writer wins).
    pub async fn replace_sealed(
        &self,
        column: (&str, &str, &str),
        row: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let (table, key, value) = checked_column(column)?;
        let sql = format!("UPDATE {table} SET {value} = $1 WHERE {key} = $2 AND {value} = $3");
        Ok(
            on_db!(self.db(), |pool| sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(new)
                .bind(row)
                .bind(old)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?
                == 1,
        )
    }
}

/// Only the listed identifiers ever reach the SQL text.
fn checked_column(
    column: (&str, &str, &str),
) -> Result<(&'static str, &'static str, &'static str), StoreError> {
    SEALED_COLUMNS
        .iter()
        .find(|c| **c == column)
        .copied()
        .ok_or_else(|| StoreError::Conflict(format!("{column:?} is not a sealed column")))
}
