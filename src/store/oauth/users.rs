//! Users (local and from an upstream identity provider) and their browser
//! login sessions.

use super::{REVOKE_BY_USER, UserRecord, conflict_or, revoke_all, uncancellable};
use rusqlite::OptionalExtension;

use crate::store::inline::Access;
use crate::store::{Store, StoreError, now_epoch, on_db, on_grants};

macro_rules! user_columns {
    () => {
        "id, username, password_hash, created_at, updated_at, is_admin, disabled_at"
    };
}

impl Store {
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<UserRecord, StoreError> {
        self.create_user_with_role(username, password_hash, false)
            .await
    }

    /// A new local user; `is_admin`: may use the admin console.
    pub async fn create_user_with_role(
        &self,
        username: &str,
        password_hash: &str,
        is_admin: bool,
    ) -> Result<UserRecord, StoreError> {
        let now = now_epoch();
        let user = UserRecord {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            created_at: now,
            updated_at: now,
            is_admin,
            disabled_at: None,
        };
        const SQL: &str = "INSERT INTO users (id, username, password_hash, created_at, updated_at, is_admin) VALUES ($1, $2, $3, $4, $5, $6)";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(&user.id)
            .bind(&user.username)
            .bind(&user.password_hash)
            .bind(now)
            .bind(now)
            .bind(is_admin)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(|e| conflict_or(e, "a user with this name exists"))?;
        Ok(user)
    }

    /// The local (password) user with this name: what the login form
    /// checks. A disabled user is not found, so signs in as nobody would.
    pub async fn find_local_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE username = $1 AND password_hash <> '!upstream' AND disabled_at IS NULL"
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
        // Their connections to upstreams (`[upstreams.user_auth]`) and attempts at one.
        const CONNECTIONS: &str = "DELETE FROM upstream_user_tokens WHERE user_id = $1";
        const ATTEMPTS: &str = "DELETE FROM upstream_connect_attempts WHERE user_id = $1";
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
            sqlx::query(CONNECTIONS)
                .bind(&user.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(ATTEMPTS)
                .bind(&user.id)
                .execute(&mut *tx)
                .await?;
            revoke_all!(tx, REVOKE_BY_USER, &user.id, now);
            sqlx::query(USER).bind(&user.id).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(true)
    }

    // login sessions

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

    /// End a login session ("not you? sign out"); `false`: there was none.
    pub async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM user_sessions WHERE id_hash = $1";
        let deleted = on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(id_hash)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(deleted > 0)
    }

    /// The user of a live session (who must still exist and not be disabled).
    pub async fn session_user(
        &self,
        id_hash: &str,
        now: i64,
    ) -> Result<Option<UserRecord>, StoreError> {
        const SQL: &str = "SELECT u.id, u.username, u.password_hash, u.created_at, u.updated_at, u.is_admin, u.disabled_at FROM user_sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL";
        let id_hash = id_hash.to_owned();
        on_grants!(self, Access::Read,
            sqlite: |conn| conn
                .prepare_cached(SQL)?
                .query_row(rusqlite::params![id_hash, now], |row| {
                    Ok(UserRecord {
                        id: row.get("id")?,
                        username: row.get("username")?,
                        password_hash: row.get("password_hash")?,
                        created_at: row.get("created_at")?,
                        updated_at: row.get("updated_at")?,
                        is_admin: row.get("is_admin")?,
                        disabled_at: row.get("disabled_at")?,
                    })
                })
                .optional(),
            postgres: |conn| sqlx::query_as::<_, UserRecord>(SQL)
                .bind(&id_hash)
                .bind(now)
                .fetch_optional(conn)
                .await,
        )
    }

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

    /// Give or take the admin role (by user name or id). `false`: no such user.
    pub async fn set_admin(&self, name: &str, is_admin: bool) -> Result<bool, StoreError> {
        let Some(user) = self.find_user_by_name(name).await? else {
            return Ok(false);
        };
        const SQL: &str = "UPDATE users SET is_admin = $1, updated_at = $2 WHERE id = $3";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(is_admin)
            .bind(now_epoch())
            .bind(&user.id)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(true)
    }

    /// Disable a user (by user name or id): no more sign-ins, and in the
    /// same transaction their browser sessions end and their refresh tokens
    /// are revoked. `enable` clears the flag (nothing ended comes back).
    /// `false`: no such user.
    pub async fn set_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        let Some(user) = self.find_user_by_name(name).await? else {
            return Ok(false);
        };
        let store = self.clone();
        uncancellable(async move { store.set_disabled_now(&user.id, disabled).await }).await?;
        Ok(true)
    }

    async fn set_disabled_now(&self, user_id: &str, disabled: bool) -> Result<(), StoreError> {
        const DISABLE: &str = "UPDATE users SET disabled_at = COALESCE(disabled_at, $1), updated_at = $1 WHERE id = $2";
        const ENABLE: &str = "UPDATE users SET disabled_at = NULL, updated_at = $1 WHERE id = $2";
        const SESSIONS: &str = "DELETE FROM user_sessions WHERE user_id = $1";
        let now = now_epoch();
        on_db!(self.db(), |pool| async {
            let mut tx = pool.begin().await?;
            sqlx::query(if disabled { DISABLE } else { ENABLE })
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            if disabled {
                sqlx::query(SESSIONS)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                revoke_all!(tx, REVOKE_BY_USER, user_id, now);
            }
            tx.commit().await
        }
        .await)?;
        Ok(())
    }

    /// A user's live grants (refresh-token families with a live token), newest first.
    pub async fn grants_of(
        &self,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<super::GrantRecord>, StoreError> {
        const SQL: &str = "SELECT family_id, client_id, scope, created_at AS last_refreshed_at, expires_at FROM refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL AND rotated_at IS NULL AND expires_at > $2 ORDER BY created_at DESC";
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<
            _,
            super::GrantRecord,
        >(SQL)
        .bind(user_id)
        .bind(now)
        .fetch_all(pool)
        .await)?)
    }
}
