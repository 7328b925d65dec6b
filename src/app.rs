//! Assemble the server from a validated [`Config`] and run it until a
//! shutdown signal.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{self, AuthSetupError, ResourceServerInfo, policy::ScopePolicy},
    config::{AuthMode, Config},
    http::{self, InFlight, OpsState},
    mcp::{self, edge::EdgeConfig, handler::McpHandler},
    store::{Store, StoreError},
    telemetry::metrics::Metrics,
    toolsets::{
        Toolbox,
        docs::{DocIndex, DocsError},
        notes::Notes,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot index documents: {0}")]
    Docs(#[from] DocsError),
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    #[error("cannot set up the authorization server: {0}")]
    Authority(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

/// A built server: the router plus what shutdown needs.
pub struct App {
    pub router: Router,
    pub store: Store,
    pub shutdown: CancellationToken,
    pub in_flight: Arc<InFlight>,
    store_healthy: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    grace: Duration,
    server: crate::server::ServerConfig,
    /// Set when this start created the first user: print it once, never log it.
    pub initial_admin_password: Option<String>,
    keys: Option<Arc<crate::oauth::keys::KeyRing>>,
    sweep: Option<(i64, Store)>,
    bridge: Option<Arc<crate::bridge::Bridge>>,
    gateway: Option<Arc<crate::upstream::Gateway>>,
}

impl App {
    pub async fn build(config: &Config) -> Result<App, StartError> {
        Self::build_with_clock(config, crate::clock::system()).await
    }

    /// [`App::build`] reading the time from `clock` (tests: a manual clock).
    pub async fn build_with_clock(
        config: &Config,
        clock: crate::clock::SharedClock,
    ) -> Result<App, StartError> {
        let resolved;
        let config = if config.auth_mode == AuthMode::Auto {
            resolved = crate::idp::auto::resolve(config)
                .await
                .map_err(|e| StartError::Authority(e.to_string()))?;
            &resolved
        } else {
            config
        };
        let store = Store::connect(&config.store.url, config.store.max_connections).await?;
        let metrics = Metrics::new();
        metrics.store_up.set(1);
        let docs = match &config.toolsets.docs {
            Some(docs) => Some(Arc::new(DocIndex::open(
                docs.path.as_deref(),
                &docs.url_base,
            )?)),
            None => None,
        };
        let notes = config.toolsets.notes.then(|| Notes::new(store.clone()));
        let toolbox = Toolbox::new(config.toolsets.calc, notes, docs.clone());
        let store_healthy = Arc::new(AtomicBool::new(true));
        let mut authenticator = auth::authenticator(config.resource_auth.as_ref()).await?;
        let rules = config.policy.clone();
        let scope_policy = Arc::new(ScopePolicy::new(rules));
        let (policy, resource_server) = match (&config.auth_mode, &config.resource_auth) {
            (AuthMode::Resource | AuthMode::Bridge, Some(resource)) => {
                let scopes = resource
                    .scopes_supported
                    .clone()
                    .unwrap_or_else(|| scope_policy.all_scopes().into_iter().collect());
                let info = ResourceServerInfo {
                    resource: config.mcp_resource(),
                    metadata_url: format!(
                        "{}/.well-known/oauth-protected-resource/mcp",
                        config.public_origin()
                    ),
                    // Bridge mode serves the IdP's discovery on mcpgate's own origin.
                    authorization_servers: vec![if config.auth_mode == AuthMode::Bridge {
                        config.public_origin()
                    } else {
                        resource.issuer.clone()
                    }],
                    // offline_access is the client's business, never advertised here.
                    scopes_supported: scopes
                        .into_iter()
                        .filter(|s| s != "offline_access")
                        .collect(),
                };
                (Some(scope_policy.clone()), Some(info))
            }
            (AuthMode::Local | AuthMode::Proxy, _) => {
                let scopes: Vec<String> = scope_policy.all_scopes().into_iter().collect();
                let info = ResourceServerInfo {
                    resource: config.mcp_resource(),
                    metadata_url: format!(
                        "{}/.well-known/oauth-protected-resource/mcp",
                        config.public_origin()
                    ),
                    authorization_servers: vec![config.public_origin()],
                    scopes_supported: scopes,
                };
                (Some(scope_policy.clone()), Some(info))
            }
            _ => (None, None),
        };
        let mut local = None;
        let mut initial_admin_password = None;
        if let (AuthMode::Local | AuthMode::Proxy, Some(local_cfg)) =
            (&config.auth_mode, &config.local_auth)
        {
            let built = crate::oauth::setup::build(
                config,
                local_cfg,
                &store,
                &scope_policy,
                metrics.password_checks.clone(),
                clock.clone(),
            )
            .await
            .map_err(StartError::Authority)?;
            authenticator = auth::Authenticator::Resource(built.verifier.clone());
            initial_admin_password = built.initial_admin_password.clone();
            local = Some(built);
        }
        let mut authorization_server = local.as_ref().map(|l| l.routes.clone());
        let mut bridge_handle = None;
        if let (Some(bridge), Some(resource), Some(info)) =
            (&config.bridge, &config.resource_auth, &resource_server)
        {
            let built = crate::bridge::Bridge::connect(
                bridge,
                resource,
                config.public_origin(),
                info.scopes_supported.clone(),
                store.clone(),
            )
            .await
            .map_err(|e| StartError::Authority(e.to_string()))?;
            let built = Arc::new(built);
            authorization_server = Some(crate::bridge::http::routes(built.clone()));
            bridge_handle = Some(built);
        }
        let edge = Arc::new(EdgeConfig {
            allowed_hosts: config.http.allowed_hosts.clone(),
            allowed_origins: config.http.allowed_origins.clone(),
            max_body_bytes: config.http.max_body_bytes,
            store_healthy: store_healthy.clone(),
            metrics: metrics.clone(),
            authenticator,
            resource_server: resource_server.clone(),
            policy: policy.clone(),
            session_owners: crate::mcp::edge::session_owner_cache(),
        });
        let gateway = if config.gateway.upstreams.is_empty() {
            None
        } else {
            let builtin =
                config.toolsets.calc || config.toolsets.notes || config.toolsets.docs.is_some();
            Some(
                crate::upstream::Gateway::start(
                    &config.gateway,
                    builtin,
                    config.public_origin(),
                    local.as_ref().map(|l| l.keys.clone()),
                    metrics.clone(),
                )
                .map_err(|e| StartError::Authority(format!("gateway HTTP client: {e}")))?,
            )
        };
        let shutdown = CancellationToken::new();
        let handler = McpHandler::new(toolbox, metrics.clone(), policy, gateway.clone());
        let docs_auth = docs.as_ref().map(|_| edge.clone());
        let mcp_routes = mcp::routes(handler, edge, shutdown.clone());
        let in_flight = Arc::new(InFlight::default());
        let ops = OpsState {
            store: store.clone(),
            store_healthy: store_healthy.clone(),
            metrics: metrics.clone(),
            docs,
            docs_auth,
            resource_server,
            gateway: gateway.clone(),
            access: Arc::new(crate::server::OpsAccess::new(&config.server.ops)),
        };
        let router = http::router(
            mcp_routes,
            ops,
            in_flight.clone(),
            &config.http.allowed_origins,
            authorization_server,
            config.server.request_timeout,
        );
        let keys = local.as_ref().map(|l| l.keys.clone());
        // Bridge mode keeps pending authorizations too (no registered clients of its own).
        let sweep = match (&config.local_auth, &config.bridge) {
            (Some(l), _) => Some(((l.unused_client_ttl_days * 86_400) as i64, store.clone())),
            (None, Some(_)) => Some((30 * 86_400, store.clone())),
            _ => None,
        };
        Ok(App {
            router,
            store,
            shutdown,
            in_flight,
            store_healthy,
            metrics,
            grace: Duration::from_secs(config.http.shutdown_grace_secs),
            server: config.server.clone(),
            initial_admin_password,
            keys,
            sweep,
            bridge: bridge_handle,
            gateway,
        })
    }

    /// Probe the store every two seconds so `/mcp` can answer 503 at once
    /// while it is down instead of failing half-way through a call.
    fn spawn_store_probe(&self) {
        let store = self.store.clone();
        let healthy = self.store_healthy.clone();
        let metrics = self.metrics.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let ok = matches!(
                    tokio::time::timeout(Duration::from_secs(2), store.ping()).await,
                    Ok(Ok(()))
                );
                if healthy.swap(ok, Ordering::Relaxed) != ok {
                    if ok {
                        tracing::info!("store reachable again");
                    } else {
                        tracing::error!(
                            "store not reachable; MCP requests get 503 until it is back"
                        );
                    }
                }
                metrics.store_up.set(i64::from(ok));
            }
        });
    }

    /// Serve on `listener` until `signal` resolves, then drain: stop
    /// accepting, let in-flight POSTs finish (up to the grace period), close
    /// event streams and sessions, close the store.
    pub async fn serve(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.spawn_store_probe();
        if let Some(keys) = &self.keys {
            keys.spawn_reload(self.shutdown.clone());
        }
        if let Some((client_ttl, store)) = self.sweep.clone() {
            let stop = self.shutdown.clone();
            let bridge = self.bridge.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(600));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    match store
                        .sweep_oauth(crate::store::now_epoch(), client_ttl)
                        .await
                    {
                        Ok(swept) => tracing::debug!(
                            clients = swept.clients,
                            rows = swept.expired_rows,
                            "swept expired authorization state"
                        ),
                        Err(e) => tracing::warn!(error = %e, "sweep failed"),
                    }
                    if let Some(bridge) = &bridge {
                        bridge.sweep().await;
                    }
                }
            });
        }
        let shutdown = self.shutdown.clone();
        let in_flight = self.in_flight.clone();
        let grace = self.grace;
        let stop_accepting = CancellationToken::new();
        let drain = {
            let stop_accepting = stop_accepting.clone();
            async move {
                signal.await;
                tracing::info!(
                    in_flight = in_flight.current(),
                    "shutdown requested; draining"
                );
                stop_accepting.cancel();
                in_flight.drained(grace).await;
                // Event streams never end on their own; end them now.
                shutdown.cancel();
            }
        };
        tokio::spawn(drain);
        let server =
            crate::server::serve::serve(listener, self.router, self.server.clone(), stop_accepting);
        // The hard limit: connections that outlive the grace period are cut.
        let hard_limit = {
            let shutdown = self.shutdown.clone();
            async move {
                shutdown.cancelled().await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        };
        tokio::select! {
            result = server => result?,
            _ = hard_limit => tracing::warn!("connections still open after the grace period; closing"),
        }
        if let Some(gateway) = &self.gateway {
            gateway.shutdown();
        }
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Listen {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
}
