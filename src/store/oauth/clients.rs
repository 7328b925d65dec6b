//! Registered OAuth clients and the consents users gave them.

use super::{ClientActivity, ClientRecord, revoke_all, uncancellable};
use rusqlite::OptionalExtension;

use crate::store::inline::{Access, is_unique_violation};
use crate::store::{Grants, Store, StoreError, now_epoch, on_db, on_grants, on_pg};

macro_rules! client_columns {
    () => {
        "client_id, secret_hash, metadata, created_at, last_used_at"
    };
}

impl Store {
    /// Insert a dynamic registration. With `max_unused`, only unless that
    /// many clients that never obtained a token exist already: `false` then,
    /// and nothing is written. One statement, so concurrent registrations
    /// cannot overshoot much (SQLite: not at all). The count stops at the cap
    /// and reads the partial index of unused clients, not every client; still,
    /// it reads up to `max_unused` entries, which is why the caller passes
    /// `None` while it knows the cap is far (`oauth::flow::register`).
    pub async fn insert_client_capped(
        &self,
        client: &ClientRecord,
        max_unused: Option<i64>,
    ) -> Result<bool, StoreError> {
        const CAPPED: &str = concat!(
            "INSERT INTO oauth_clients (",
            client_columns!(),
            ") SELECT $1, $2, $3, $4, $5 WHERE (SELECT COUNT(*) FROM (SELECT 1 FROM oauth_clients WHERE last_used_at IS NULL LIMIT $6) AS unused) < $6"
        );
        const PLAIN: &str = concat!(
            "INSERT INTO oauth_clients (",
            client_columns!(),
            ") VALUES ($1, $2, $3, $4, $5)"
        );
        let sql = if max_unused.is_some() { CAPPED } else { PLAIN };
        // A taken id comes out as `None` (a statement error: the
        // connection stays), anything else as the store's error.
        let inserted = match self.grants() {
            Grants::Sqlite(db) => {
                let client = client.clone();
                db.run(Access::Write, move |conn| {
                    let mut values: Vec<&dyn rusqlite::ToSql> = vec![
                        &client.client_id,
                        &client.secret_hash,
                        &client.metadata,
                        &client.created_at,
                        &client.last_used_at,
                    ];
                    values.extend(max_unused.as_ref().map(|cap| cap as &dyn rusqlite::ToSql));
                    let done = conn.prepare_cached(sql)?.execute(values.as_slice());
                    match done {
                        Ok(n) => Ok(Some(n as u64)),
                        Err(e) if is_unique_violation(&e) => Ok(None),
                        Err(e) => Err(e),
                    }
                })
                .await?
            }
            Grants::Postgres(sets) => on_pg!(sets.set(Access::Write), |conn| {
                let query = sqlx::query(sql)
                    .bind(&client.client_id)
                    .bind(&client.secret_hash)
                    .bind(&client.metadata)
                    .bind(client.created_at)
                    .bind(client.last_used_at);
                let query = match max_unused {
                    Some(cap) => query.bind(cap),
                    None => query,
                };
                match query.execute(conn).await {
                    Ok(done) => Ok(Some(done.rows_affected())),
                    Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(None),
                    Err(e) => Err(e),
                }
            })?,
        }
        .ok_or_else(|| StoreError::Conflict("client id taken".to_owned()))?;
        Ok(inserted == 1)
    }

    /// How many registered clients never obtained a token, counted up to
    /// `cap` (the partial index of unused clients; at most `cap` entries read).
    pub async fn count_unused_clients(&self, cap: i64) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM oauth_clients WHERE last_used_at IS NULL LIMIT $1) AS unused";
        match self.grants() {
            Grants::Sqlite(db) => {
                db.run(Access::Read, move |conn| {
                    conn.prepare_cached(SQL)?
                        .query_row([cap], |row| row.get::<_, i64>(0))
                })
                .await
            }
            Grants::Postgres(sets) => on_pg!(sets.set(Access::Read), |conn| {
                sqlx::query_scalar::<_, i64>(SQL)
                    .bind(cap)
                    .fetch_one(conn)
                    .await
            }),
        }
    }

    pub async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            client_columns!(),
            " FROM oauth_clients WHERE client_id = $1"
        );
        match self.grants() {
            Grants::Sqlite(db) => {
                let client_id = client_id.to_owned();
                db.run(Access::Read, move |conn| {
                    conn.prepare_cached(SQL)?
                        .query_row([&client_id], ClientRecord::from_sqlite)
                        .optional()
                })
                .await
            }
            Grants::Postgres(sets) => on_pg!(sets.set(Access::Read), |conn| {
                sqlx::query_as::<_, ClientRecord>(SQL)
                    .bind(client_id)
                    .fetch_optional(conn)
                    .await
            }),
        }
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

    // consents

    pub async fn save_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scope: &str,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO consents (user_id, client_id, scope, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, created_at = excluded.created_at";
        let (user_id, client_id, scope, now) = (
            user_id.to_owned(),
            client_id.to_owned(),
            scope.to_owned(),
            now_epoch(),
        );
        on_grants!(self, Access::Ephemeral,
            sqlite: |conn| conn
                .prepare_cached(SQL)?
                .execute(rusqlite::params![user_id, client_id, scope, now]),
            postgres: |conn| sqlx::query(SQL)
                .bind(&user_id)
                .bind(&client_id)
                .bind(&scope)
                .bind(now)
                .execute(conn)
                .await
                .map(|done| done.rows_affected() as usize),
        )?;
        Ok(())
    }

    /// The remembered scope string of (user, client), if any.
    pub async fn consent(
        &self,
        user_id: &str,
        client_id: &str,
    ) -> Result<Option<String>, StoreError> {
        const SQL: &str = "SELECT scope FROM consents WHERE user_id = $1 AND client_id = $2";
        let (user_id, client_id) = (user_id.to_owned(), client_id.to_owned());
        on_grants!(self, Access::Read,
            sqlite: |conn| conn
                .prepare_cached(SQL)?
                .query_row(rusqlite::params![user_id, client_id], |row| row.get(0))
                .optional(),
            postgres: |conn| sqlx::query_scalar::<_, String>(SQL)
                .bind(&user_id)
                .bind(&client_id)
                .fetch_optional(conn)
                .await,
        )
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

    /// Forget every consent given to `client_id` and revoke its refresh
    /// tokens, keeping its registration (if any): `(consents forgotten,
    /// refresh tokens revoked)`. For clients the store does not own: those
    /// named by a metadata document or configured.
    async fn revoke_client_grants_now(&self, client_id: &str) -> Result<(u64, u64), StoreError> {
        const CONSENTS: &str = "DELETE FROM consents WHERE client_id = $1";
        const REFRESH: &str =
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE client_id = $1 AND revoked_at IS NULL";
        let now = now_epoch();
        Ok(on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let forgotten = sqlx::query(CONSENTS)
                .bind(client_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            // Repeated like revoke_family's, for the same race.
            let mut revoked = 0;
            loop {
                let n = sqlx::query(REFRESH)
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
            tx.commit().await.map(|_| (forgotten, revoked))
        })?)
    }

    /// See [`Store::revoke_client_grants_now`]; finishes even if the caller goes away.
    pub async fn revoke_client_grants(&self, client_id: &str) -> Result<(u64, u64), StoreError> {
        let (store, client_id) = (self.clone(), client_id.to_owned());
        uncancellable(async move { store.revoke_client_grants_now(&client_id).await }).await
    }

    /// Every client id that has refresh tokens or remembered consents, with
    /// its newest token, live grants and consents (the console's Clients
    /// page: clients the store has no registration of show up only here).
    /// Reads every refresh-token row; an admin page, not a hot path.
    pub async fn client_activity(&self, now: i64) -> Result<Vec<ClientActivity>, StoreError> {
        const SQL: &str = "SELECT client_id, MAX(last_token_at) AS last_token_at, \
             SUM(live) AS live_grants, SUM(consents) AS consents FROM ( \
             SELECT client_id, created_at AS last_token_at, \
             CASE WHEN revoked_at IS NULL AND rotated_at IS NULL AND expires_at > $1 THEN 1 ELSE 0 END AS live, \
             0 AS consents FROM refresh_tokens \
             UNION ALL SELECT client_id, NULL, 0, 1 FROM consents) AS seen \
             GROUP BY client_id ORDER BY client_id";
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as::<_, ClientActivity>(SQL)
                .bind(now)
                .fetch_all(pool)
                .await
        })?)
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
}
