//! Bridge-mode state: the clients mcpgate registered at the IdP (their own
//! redirect URIs and their callback key), authorizations in flight, codes
//! delivered through a callback, and the daily budget of Auth0 applications.

use super::{Store, StoreError, on_db};

/// A client registered at the IdP through mcpgate.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BridgeClientRecord {
    pub client_id: String,
    /// JSON array of the client's own redirect URIs.
    pub redirect_uris: String,
    pub created_at: i64,
    /// The last path segment of the client's callback at the IdP; `None` for
    /// clients registered before callbacks were per client (unusable now).
    pub callback_key: Option<String>,
    pub client_name: Option<String>,
    /// 1: created through the Auth0 Management API, so mcpgate may delete it.
    pub managed: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeStage {
    /// Waiting for mcpgate's consent page; keyed by the request id.
    Consent,
    /// At the IdP; keyed by the state mcpgate sent there.
    Idp,
}

impl BridgeStage {
    fn as_str(self) -> &'static str {
        match self {
            BridgeStage::Consent => "consent",
            BridgeStage::Idp => "idp",
        }
    }
}

/// A bridged authorization: first waiting for consent, then at the IdP.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BridgeRequestRecord {
    pub state_hash: String,
    pub client_id: String,
    pub browser_hash: String,
    pub redirect_uri: String,
    pub client_state: Option<String>,
    pub idp_query: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A code the IdP sent through a client's callback: only that client may
/// redeem it, with mcpgate's callback for that client as `redirect_uri`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BridgeCodeRecord {
    pub code_hash: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub callback: String,
    pub expires_at: i64,
    /// The PKCE challenge of the request the code answers (the funnel
    /// attempt's key); `None` for codes stored before it was kept.
    pub code_challenge: Option<String>,
}

impl Store {
    pub async fn save_bridge_client(&self, record: &BridgeClientRecord) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO bridge_clients (client_id, redirect_uris, created_at, callback_key, client_name, managed, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (client_id) DO UPDATE SET redirect_uris = excluded.redirect_uris, callback_key = excluded.callback_key, client_name = excluded.client_name, managed = excluded.managed";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(&record.client_id)
            .bind(&record.redirect_uris)
            .bind(record.created_at)
            .bind(&record.callback_key)
            .bind(&record.client_name)
            .bind(record.managed)
            .bind(record.last_used_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn bridge_client(
        &self,
        client_id: &str,
    ) -> Result<Option<BridgeClientRecord>, StoreError> {
        const SQL: &str = "SELECT client_id, redirect_uris, created_at, callback_key, client_name, managed, last_used_at FROM bridge_clients WHERE client_id = $1";
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<
            _,
            BridgeClientRecord,
        >(SQL)
        .bind(client_id)
        .fetch_optional(pool)
        .await)?)
    }

    /// A client obtained tokens: it is in use and must not be swept.
    /// Mark a client used now; `false` when no such client is registered
    /// here (the funnel then keeps no row for it).
    pub async fn touch_bridge_client(&self, client_id: &str, now: i64) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE bridge_clients SET last_used_at = $2 WHERE client_id = $1";
        let touched = on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(client_id)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(touched > 0)
    }

    /// Clients mcpgate created that obtained no token since `cutoff`
    /// (or never, and were created before it), oldest first.
    pub async fn unused_bridge_clients(
        &self,
        cutoff: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        const SQL: &str = "SELECT client_id FROM bridge_clients WHERE managed = 1 AND COALESCE(last_used_at, created_at) <= $1 ORDER BY created_at LIMIT $2";
        Ok(on_db!(self.db(), |pool| sqlx::query_scalar::<_, String>(
            SQL
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(pool)
        .await)?)
    }

    pub async fn delete_bridge_client(&self, client_id: &str) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM bridge_clients WHERE client_id = $1";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(client_id)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn insert_bridge_request(
        &self,
        stage: BridgeStage,
        record: &BridgeRequestRecord,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO bridge_requests (state_hash, stage, client_id, browser_hash, redirect_uri, client_state, idp_query, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(&record.state_hash)
            .bind(stage.as_str())
            .bind(&record.client_id)
            .bind(&record.browser_hash)
            .bind(&record.redirect_uri)
            .bind(&record.client_state)
            .bind(&record.idp_query)
            .bind(record.created_at)
            .bind(record.expires_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Consume a bridged authorization in `stage` by its key: one caller, once.
    pub async fn take_bridge_request(
        &self,
        stage: BridgeStage,
        state_hash: &str,
        now: i64,
    ) -> Result<Option<BridgeRequestRecord>, StoreError> {
        const SQL: &str = "DELETE FROM bridge_requests WHERE state_hash = $1 AND stage = $2 AND expires_at > $3 RETURNING state_hash, client_id, browser_hash, redirect_uri, client_state, idp_query, created_at, expires_at";
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<
            _,
            BridgeRequestRecord,
        >(SQL)
        .bind(state_hash)
        .bind(stage.as_str())
        .bind(now)
        .fetch_optional(pool)
        .await)?)
    }

    pub async fn save_bridge_code(&self, record: &BridgeCodeRecord) -> Result<(), StoreError> {
        // The IdP's codes are unique; a repeat is the same answer delivered twice.
        const SQL: &str = "INSERT INTO bridge_codes (code_hash, client_id, redirect_uri, callback, expires_at, code_challenge) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (code_hash) DO NOTHING";
        on_db!(self.db(), |pool| sqlx::query(SQL)
            .bind(&record.code_hash)
            .bind(&record.client_id)
            .bind(&record.redirect_uri)
            .bind(&record.callback)
            .bind(record.expires_at)
            .bind(&record.code_challenge)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn bridge_code(
        &self,
        code_hash: &str,
        now: i64,
    ) -> Result<Option<BridgeCodeRecord>, StoreError> {
        const SQL: &str = "SELECT code_hash, client_id, redirect_uri, callback, expires_at, code_challenge FROM bridge_codes WHERE code_hash = $1 AND expires_at > $2";
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<
            _,
            BridgeCodeRecord,
        >(SQL)
        .bind(code_hash)
        .bind(now)
        .fetch_optional(pool)
        .await)?)
    }

    /// Count one Auth0 application against `day`'s budget of `limit`, in one
    /// statement so replicas sharing the store cannot overshoot it together.
    /// `false`: the budget is used up.
    pub async fn reserve_bridge_application(
        &self,
        day: i64,
        limit: i64,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "INSERT INTO bridge_budget (day, used) VALUES ($1, 1) ON CONFLICT (day) DO UPDATE SET used = bridge_budget.used + 1 WHERE bridge_budget.used < $2 RETURNING used";
        if limit < 1 {
            return Ok(false);
        }
        let used = on_db!(self.db(), |pool| sqlx::query_scalar::<_, i64>(SQL)
            .bind(day)
            .bind(limit)
            .fetch_optional(pool)
            .await)?;
        Ok(used.is_some())
    }

    /// Expired requests and codes, and budget days before yesterday.
    pub async fn sweep_bridge(&self, now: i64) -> Result<u64, StoreError> {
        const REQUESTS: &str = "DELETE FROM bridge_requests WHERE expires_at <= $1";
        const CODES: &str = "DELETE FROM bridge_codes WHERE expires_at <= $1";
        const BUDGET: &str = "DELETE FROM bridge_budget WHERE day < $1 / 86400 - 1";
        let mut rows = 0;
        for sql in [REQUESTS, CODES, BUDGET] {
            rows += on_db!(self.db(), |pool| sqlx::query(sql)
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?;
        }
        Ok(rows)
    }
}
