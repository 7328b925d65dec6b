//! MCP sessions across replicas. The `mcp_sessions` table holds each
//! session's owner, expiry and (Streamable HTTP) the `initialize`
//! parameters; rmcp restores a session it does not hold in memory by
//! replaying them ([`StoredSessions`]), and the edge checks the row on every
//! request naming a session ([`SessionBook::admit`]), so an ended, expired
//! or foreign id is refused on every replica alike.

use std::{sync::Arc, time::Duration};

use http::{HeaderMap, StatusCode};
use rmcp::transport::streamable_http_server::session::{
    SessionManager,
    local::LocalSessionManager,
    store::{SessionState, SessionStore, SessionStoreError},
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::edge::{JSONRPC_SESSION_NOT_FOUND, jsonrpc_refusal, store_unavailable};
use crate::{
    auth::Principal,
    clock::SharedClock,
    funnel::Reason,
    store::{STREAMABLE, Store, StoreError},
};

/// A session unused this long is gone (as with the per-process binding
/// before it).
pub const SESSION_TTL_SECS: i64 = 24 * 3600;
/// The stored expiry is pushed forward only once it is this old, so a busy
/// session costs one write an hour, not one per request.
const EXTEND_AFTER_SECS: i64 = 3600;
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// End session `id` for every replica (`DELETE /mcp`, and the admin console):
/// marked ended in the store, so each replica refuses it on its next request
/// and drops its in-memory copy; their GET streams of it are told to close.
pub async fn end_everywhere(store: &Store, id: &str, now: i64) -> Result<(), StoreError> {
    store.end_mcp_session(id, now).await?;
    if let Err(e) = store.announce_mcp_stream(id).await {
        // The streams close when they next look (or their replica's
        // copy of the session ends).
        tracing::warn!(error = %e, "ended session not announced to GET streams");
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum SessionRefusal {
    /// Unknown, ended, expired or another principal's: one answer for all.
    #[error("session not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SessionRefusal {
    /// 404 + -32001 (as for any unknown session), or 503 when the store
    /// cannot tell.
    pub fn response(&self, id: Value) -> axum::response::Response {
        match self {
            SessionRefusal::NotFound => jsonrpc_refusal(
                StatusCode::NOT_FOUND,
                id,
                JSONRPC_SESSION_NOT_FOUND,
                Reason::SessionNotFound,
                "Session not found",
            ),
            SessionRefusal::Store(e) => {
                tracing::error!(error = %e, "session lookup failed");
                store_unavailable()
            }
        }
    }
}

/// The shared session records plus this process's in-memory sessions.
pub struct SessionBook {
    store: Store,
    clock: SharedClock,
    local: Arc<LocalSessionManager>,
}

impl SessionBook {
    pub fn new(store: Store, clock: SharedClock, local: Arc<LocalSessionManager>) -> Self {
        SessionBook {
            store,
            clock,
            local,
        }
    }

    /// The `Mcp-Session-Id` of a request, admitted only when its row says the
    /// session is live and `principal`'s.
    pub async fn admit_header(
        &self,
        headers: &HeaderMap,
        principal: &Principal,
    ) -> Result<Option<String>, SessionRefusal> {
        let Some(id) = headers.get("mcp-session-id") else {
            return Ok(None);
        };
        let Ok(id) = id.to_str() else {
            return Err(SessionRefusal::NotFound);
        };
        self.admit(id, STREAMABLE, principal).await?;
        Ok(Some(id.to_owned()))
    }

    /// Whether session `id` of `transport` is live and belongs to
    /// `principal`; slides its expiry.
    pub async fn admit(
        &self,
        id: &str,
        transport: &str,
        principal: &Principal,
    ) -> Result<(), SessionRefusal> {
        let now = self.clock.now();
        let owner = principal.owner_key();
        let record = self.store.mcp_session(id).await?;
        match record {
            Some(record) if record.admits(transport, &owner, now) => {
                if record.expires_at - now < SESSION_TTL_SECS - EXTEND_AFTER_SECS
                    && let Err(e) = self
                        .store
                        .extend_mcp_session(id, now + SESSION_TTL_SECS)
                        .await
                {
                    // The session stays usable until its current expiry.
                    tracing::warn!(error = %e, "session expiry not extended");
                }
                Ok(())
            }
            Some(record) if record.owner.as_deref().is_some_and(|o| o != owner) => {
                // Another principal's session: indistinguishable from an
                // unknown one, and left alone for its owner.
                tracing::warn!(target: "audit", subject = %principal.subject, outcome = "foreign_session", "session rejected");
                Err(SessionRefusal::NotFound)
            }
            _ => {
                // Ended (perhaps on another replica), expired or unknown: a
                // copy this process restored earlier goes too.
                if transport == STREAMABLE {
                    self.forget_local(id).await;
                }
                Err(SessionRefusal::NotFound)
            }
        }
    }

    /// Record who created session `id`. `false`: it cannot be theirs.
    pub async fn bind(&self, id: &str, transport: &str, owner: &str) -> Result<bool, StoreError> {
        let now = self.clock.now();
        self.store
            .bind_mcp_session(id, transport, owner, now, now + SESSION_TTL_SECS)
            .await
    }

    /// End session `id` for every replica; their GET streams of it close.
    pub async fn end(&self, id: &str) -> Result<(), StoreError> {
        end_everywhere(&self.store, id, self.clock.now()).await
    }

    /// Close this process's in-memory copy of a Streamable HTTP session.
    pub async fn forget_local(&self, id: &str) {
        if let Err(e) = self.local.close_session(&id.to_owned().into()).await {
            tracing::debug!(error = %e, "closing a local session failed");
        }
    }

    /// The rmcp side: restore state in the same rows.
    pub fn rmcp_store(&self) -> Arc<dyn SessionStore> {
        Arc::new(StoredSessions {
            store: self.store.clone(),
            clock: self.clock.clone(),
        })
    }

    /// Delete expired rows every few minutes until `shutdown`, on one
    /// replica at a time (the lease [`SWEEP_JOB`]).
    pub fn spawn_sweeper(&self, shutdown: CancellationToken) {
        let store = self.store.clone();
        let clock = self.clock.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let round = store.sweep_mcp_sessions(clock.now());
                match store.run_exclusively(SWEEP_JOB, round).await {
                    Ok(Some(Ok(rows))) => tracing::debug!(rows, "swept expired MCP sessions"),
                    Ok(None) => tracing::debug!("another replica is sweeping MCP sessions"),
                    Ok(Some(Err(e))) | Err(e) => {
                        tracing::warn!(error = %e, "MCP session sweep failed")
                    }
                }
            }
        });
    }
}

/// The lease name of the session sweep ([`Store::run_exclusively`]).
const SWEEP_JOB: &str = "mcp-session-sweep";

/// rmcp's `SessionStore` over the `mcp_sessions` rows.
struct StoredSessions {
    store: Store,
    clock: SharedClock,
}

#[async_trait::async_trait]
impl SessionStore for StoredSessions {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        let Some(text) = self
            .store
            .mcp_session_state(session_id, self.clock.now())
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_str(&text)?))
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        let text = serde_json::to_string(state)?;
        let version = state.initialize_params.protocol_version.as_str();
        let now = self.clock.now();
        self.store
            .save_mcp_session_state(session_id, &text, version, now, now + SESSION_TTL_SECS)
            .await?;
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.store
            .end_mcp_session(session_id, self.clock.now())
            .await?;
        Ok(())
    }
}
