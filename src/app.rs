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

use crate::branding::Site;
use crate::{
    auth::{
        self, AuthSetupError, Authenticator, ResourceServerInfo, policy::AccessPolicy,
        settings::ResourceAuthSettings,
    },
    bridge::{Bridge, BridgeError},
    config::{Config, ResolvedAuth},
    funnel::Funnel,
    http::{self, OpsState},
    idp::{auto::AutoError, settings::IdpSettings},
    mcp::{self, edge::EdgeState, handler::McpHandler},
    oauth::{keys::KeyRing, settings::LocalAuthSettings, setup::SetupError},
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
    Auto(#[from] AutoError),
    #[error("cannot set up the authorization server: {0}")]
    Authority(#[from] SetupError),
    #[error("cannot set up the authorization server: {0}")]
    Bridge(#[from] BridgeError),
    #[error("cannot set up the authorization server: gateway HTTP client: {0}")]
    GatewayClient(reqwest::Error),
    #[error(transparent)]
    Branding(#[from] crate::branding::BrandingError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("cannot create the key for 2026-07-28 requestState: {0}")]
    RequestState(String),
}

/// What one auth mode contributes to the server.
struct Front {
    authenticator: Authenticator,
    /// Present when scopes are enforced (every mode but `none`).
    policy: Option<Arc<AccessPolicy>>,
    /// `/authorize`, `/token`, discovery, ...: local, proxy and bridge.
    authorization_server: Option<Router>,
    /// Signing keys (local, proxy): reloaded while serving, used for identity JWTs.
    keys: Option<Arc<KeyRing>>,
    /// Seconds an unused client is kept before the sweep deletes it.
    sweep_client_ttl: Option<i64>,
    /// Set when this start created the first user (local).
    initial_admin_password: Option<String>,
    bridge: Option<Arc<Bridge>>,
    /// The admin console's parts (local, proxy).
    console: Option<crate::oauth::setup::ConsoleParts>,
    /// The encryption key ring (local, proxy).
    sealer: Option<Arc<crate::oauth::crypto::Sealer>>,
}

impl Front {
    fn new(authenticator: Authenticator, policy: Option<Arc<AccessPolicy>>) -> Front {
        Front {
            authenticator,
            policy,
            authorization_server: None,
            keys: None,
            sweep_client_ttl: None,
            initial_admin_password: None,
            bridge: None,
            console: None,
            sealer: None,
        }
    }
}

/// Where clients learn about the resource and which authorization server
/// to ask; `scopes` is the baseline they should request.
fn resource_server(
    config: &Config,
    authorization_server: String,
    scopes: Vec<String>,
) -> ResourceServerInfo {
    ResourceServerInfo {
        resource: config.mcp_resource(),
        metadata_url: format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            config.public_origin()
        ),
        authorization_servers: vec![authorization_server],
        scopes_supported: scopes,
        public_origin: config.public_origin(),
    }
}

/// The scopes an external issuer's clients are told to ask for: the
/// configured list or the policy's; `offline_access` is the client's
/// business, never advertised here.
pub fn external_scopes(resource: &ResourceAuthSettings, policy: &AccessPolicy) -> Vec<String> {
    resource
        .scopes_supported
        .clone()
        .unwrap_or_else(|| policy.all_scopes().into_iter().collect())
        .into_iter()
        .filter(|s| s != "offline_access")
        .collect()
}

/// The front of each mode: one exhaustive `match`, one subsystem call per arm.
async fn front(
    auth: ResolvedAuth,
    config: &Config,
    store: &Store,
    metrics: &Metrics,
    funnel: &Funnel,
    clock: crate::clock::SharedClock,
    site: &Arc<Site>,
) -> Result<Front, StartError> {
    let policy = Arc::new(AccessPolicy::new(config.policy.clone()));
    Ok(match auth {
        ResolvedAuth::None => {
            if !config.policy.is_empty() {
                tracing::warn!(
                    rules = config.policy.len(),
                    "auth.mode = \"none\": every caller is anonymous, so [[policy]] rules are not enforced"
                );
            }
            Front::new(Authenticator::Anonymous, None)
        }
        ResolvedAuth::Resource { resource } => {
            let info = resource_server(
                config,
                resource.issuer.clone(),
                external_scopes(&resource, &policy),
            );
            Front::new(auth::bearer(&resource, info, clock).await?, Some(policy))
        }
        ResolvedAuth::Local { local } => {
            let surroundings = (config, store, metrics, funnel, clock, site.clone());
            local_front(&local, None, surroundings, policy).await?
        }
        ResolvedAuth::Proxy { local, idp } => {
            let surroundings = (config, store, metrics, funnel, clock, site.clone());
            local_front(&local, Some(&idp), surroundings, policy).await?
        }
        ResolvedAuth::Bridge { resource, bridge } => {
            // Bridge mode serves the IdP's discovery on mcpgate's own origin.
            let info = resource_server(
                config,
                config.public_origin(),
                external_scopes(&resource, &policy),
            );
            let scopes = info.scopes_supported.clone();
            let authenticator = auth::bearer(&resource, info, clock.clone()).await?;
            let built = Arc::new(
                Bridge::connect_with_clock(
                    &bridge,
                    &resource,
                    config.public_origin(),
                    scopes,
                    store.clone(),
                    clock,
                )
                .await?
                .with_funnel(funnel.clone()),
            );
            Front {
                authorization_server: Some(crate::bridge::http::routes(
                    built.clone(),
                    site.clone(),
                )),
                // Bridge mode keeps pending authorizations too (no registered clients of its own).
                sweep_client_ttl: Some(30 * 86_400),
                bridge: Some(built),
                ..Front::new(authenticator, Some(policy))
            }
        }
    })
}

/// Local and proxy modes: mcpgate's own authorization server.
#[allow(clippy::too_many_arguments)]
async fn local_front(
    local: &LocalAuthSettings,
    idp: Option<&IdpSettings>,
    (config, store, metrics, funnel, clock, site): (
        &Config,
        &Store,
        &Metrics,
        &Funnel,
        crate::clock::SharedClock,
        Arc<Site>,
    ),
    policy: Arc<AccessPolicy>,
) -> Result<Front, StartError> {
    let built = crate::oauth::setup::build(
        local,
        idp,
        crate::oauth::setup::Surroundings {
            issuer: config.public_origin(),
            resource: config.mcp_resource(),
            store,
            policy: &policy,
            password_checks: metrics.password_checks.clone(),
            funnel: funnel.clone(),
            clock,
            site,
            admin_roles: Arc::new(config.admin.clone()),
        },
    )
    .await?;
    let info = resource_server(
        config,
        config.public_origin(),
        policy.all_scopes().into_iter().collect(),
    );
    Ok(Front {
        authorization_server: Some(built.routes),
        keys: Some(built.keys),
        sweep_client_ttl: Some((local.unused_client_ttl_days * 86_400) as i64),
        initial_admin_password: built.initial_admin_password,
        console: Some(built.console),
        sealer: Some(built.sealer),
        ..Front::new(
            Authenticator::Bearer {
                verifier: built.verifier,
                challenge: info,
            },
            Some(policy),
        )
    })
}

/// A built server: the router plus what shutdown needs.
pub struct App {
    pub router: Router,
    pub store: Store,
    pub shutdown: CancellationToken,
    pub in_flight: Arc<crate::server::InFlight>,
    store_healthy: Arc<AtomicBool>,
    store_probe: Arc<tokio::sync::Mutex<crate::store::StoreProbe>>,
    metrics: Arc<Metrics>,
    grace: Duration,
    /// How long the listener keeps serving after the signal, `/readyz` 503.
    drain_delay: Duration,
    draining: crate::server::Draining,
    server: crate::server::ServerConfig,
    /// Set when this start created the first user: print it once, never log it.
    pub initial_admin_password: Option<String>,
    keys: Option<Arc<KeyRing>>,
    /// The unused-client lifetime (modes with an authorization server) and
    /// the store to sweep; the funnel is swept in every mode.
    sweep: (Option<i64>, Store),
    funnel: Funnel,
    bridge: Option<Arc<Bridge>>,
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
        let auth = config.auth.clone().resolve().await?;
        let store = Store::connect(&config.store.url, config.store.max_connections).await?;
        let metrics = Metrics::new();
        metrics.store_up.set(1);
        let funnel = Funnel::start(store.clone(), &metrics, clock.clone());
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
        let site = Arc::new(Site::new(
            &config.branding,
            &config.public_url,
            &AccessPolicy::new(config.policy.clone()),
        )?);
        let Front {
            authenticator,
            policy,
            authorization_server,
            keys,
            sweep_client_ttl,
            initial_admin_password,
            bridge: bridge_handle,
            console,
            sealer,
        } = front(
            auth,
            config,
            &store,
            &metrics,
            &funnel,
            clock.clone(),
            &site,
        )
        .await?;
        let resource_server = authenticator.resource_server().cloned();
        let edge = Arc::new(EdgeState {
            allowed_hosts: config.http.allowed_hosts.clone(),
            allowed_origins: config.http.allowed_origins.clone(),
            max_body_bytes: config.http.max_body_bytes,
            store_healthy: store_healthy.clone(),
            metrics: metrics.clone(),
            authenticator,
            policy: policy.clone(),
            store: store.clone(),
            funnel: funnel.clone(),
            clock: clock.clone(),
        });
        // `[upstreams.user_auth]`: validation admits it only where there is a sealer.
        let user_auth = match &sealer {
            Some(sealer) => crate::upstream::user_auth::UserAuth::new(
                &config.gateway,
                store.clone(),
                sealer.clone(),
                clock.clone(),
                config.public_origin(),
            )
            .map_err(StartError::GatewayClient)?,
            None => None,
        };
        let authorization_server = match (&user_auth, authorization_server) {
            (Some(auth), Some(routes)) => {
                Some(routes.merge(crate::upstream::connect_page::routes(
                    crate::upstream::connect_page::ConnectPages {
                        auth: auth.clone(),
                        store: store.clone(),
                        clock: clock.clone(),
                        site: site.clone(),
                        secure_cookies: config.public_origin().starts_with("https://"),
                    },
                )))
            }
            (_, routes) => routes,
        };
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
                    keys.clone(),
                    metrics.clone(),
                    user_auth.clone(),
                )
                .map_err(StartError::GatewayClient)?,
            )
        };
        let shutdown = CancellationToken::new();
        let handler = McpHandler::new(toolbox, metrics.clone(), policy, gateway.clone());
        let docs_auth = docs.as_ref().map(|_| edge.clone());
        // 2026-07-28 `requestState`s are sealed with the store's keys, so
        // any replica's retry opens; without them (`auth.mode = "none"`),
        // with a key of this process's own.
        let codec = match &sealer {
            Some(sealer) => crate::request_state::RequestStateCodec::new(sealer.clone()),
            None => crate::request_state::RequestStateCodec::ephemeral()
                .map_err(|e| StartError::RequestState(e.to_string()))?,
        };
        let mcp_routes = mcp::routes(handler, edge, codec, shutdown.clone());
        let in_flight = Arc::new(crate::server::InFlight::default());
        let draining = crate::server::Draining::default();
        let store_probe = Arc::new(tokio::sync::Mutex::new(
            crate::store::StoreProbe::new(store.clone(), &config.store.url).await,
        ));
        let ops = OpsState {
            store: store.clone(),
            store_healthy: store_healthy.clone(),
            store_probe: store_probe.clone(),
            metrics: metrics.clone(),
            docs,
            docs_auth,
            resource_server,
            gateway: gateway.clone(),
            access: Arc::new(crate::server::OpsAccess::new(&config.server.ops)),
            draining: draining.clone(),
        };
        // The admin console sits beside the authorization server it signs in with.
        let authorization_server = match (authorization_server, console) {
            (Some(routes), Some(parts)) => Some(routes.merge(crate::admin::http::routes(
                crate::admin::http::ConsoleState {
                    admin: crate::admin::Admin::new(store.clone()),
                    server: parts.server,
                    site: site.clone(),
                    secure_cookies: parts.secure_cookies,
                    sealer: parts.sealer,
                    access_token_ttl_secs: parts.access_token_ttl_secs,
                    gateway: gateway.clone(),
                    user_auth,
                    metrics: metrics.clone(),
                    clock: clock.clone(),
                },
            ))),
            (routes, _) => routes,
        };
        let router = http::router(
            mcp_routes,
            ops,
            &config.http.allowed_origins,
            authorization_server,
            crate::branding::http::routes(site.clone())
                .merge(crate::oauth::errors_page::routes(site)),
            config.server.request_timeout,
        );
        let sweep = (sweep_client_ttl, store.clone());
        Ok(App {
            router,
            store,
            shutdown,
            in_flight,
            store_healthy,
            store_probe,
            metrics,
            grace: Duration::from_secs(config.http.shutdown_grace_secs),
            drain_delay: Duration::from_secs(config.http.drain_delay_secs),
            draining,
            server: config.server.clone(),
            initial_admin_password,
            keys,
            sweep,
            funnel,
            bridge: bridge_handle,
            gateway,
        })
    }

    /// Probe the store every two seconds so `/mcp` can answer 503 while it
    /// is down instead of failing half-way through a call; down means
    /// several failed probes in a row ([`crate::store::StoreHealth`]).
    fn spawn_store_probe(&self) {
        let probe = self.store_probe.clone();
        let healthy = self.store_healthy.clone();
        let metrics = self.metrics.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            let mut health = crate::store::StoreHealth::default();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let probe_ok = {
                    let mut probe = probe.lock().await;
                    matches!(
                        tokio::time::timeout(Duration::from_secs(2), probe.probe()).await,
                        Ok(true)
                    )
                };
                let ok = health.record(probe_ok);
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

    /// Serve on `listener` until `signal` resolves, then drain: `/readyz`
    /// answers 503 at once and responses say `Connection: close`, while the
    /// listener keeps serving for the drain delay (so a balancer sees the
    /// change and stops sending); then stop accepting (serving the listen
    /// queue first), finish every request already sent (up to the grace
    /// period), and only then cancel event streams, sessions and MCP tasks;
    /// close the store. The order: src/server/README.md.
    pub async fn serve(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.spawn_store_probe();
        if let Some(keys) = &self.keys {
            keys.spawn_reload(self.shutdown.clone());
        }
        {
            let (client_ttl, store) = self.sweep.clone();
            let stop = self.shutdown.clone();
            let bridge = self.bridge.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(600));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    // One replica sweeps per round; the others skip it.
                    let round = sweep(&store, client_ttl, bridge.as_deref());
                    match store.run_exclusively(SWEEP_JOB, round).await {
                        Ok(Some(())) => {}
                        Ok(None) => tracing::debug!("another replica is sweeping; skipped"),
                        Err(e) => tracing::warn!(error = %e, "sweep not started"),
                    }
                }
            });
        }
        let shutdown = self.shutdown.clone();
        let in_flight = self.in_flight.clone();
        let (grace, drain_delay) = (self.grace, self.drain_delay);
        let stop_accepting = CancellationToken::new();
        let listener_closed = CancellationToken::new();
        let drain = {
            let stop_accepting = stop_accepting.clone();
            let listener_closed = listener_closed.clone();
            let draining = self.draining.clone();
            async move {
                signal.await;
                draining.start();
                tracing::info!(
                    in_flight = in_flight.current(),
                    drain_delay_secs = drain_delay.as_secs(),
                    "shutdown requested; /readyz answers 503, still serving until the drain delay ends"
                );
                tokio::time::sleep(drain_delay).await;
                tracing::info!(
                    in_flight = in_flight.current(),
                    grace_secs = grace.as_secs(),
                    "drain delay over; no longer accepting, waiting for requests in flight"
                );
                stop_accepting.cancel();
                // What the kernel had queued is accepted and counted by now.
                listener_closed.cancelled().await;
                in_flight.drained(grace).await;
                tracing::info!(
                    in_flight = in_flight.current(),
                    "closing event streams and sessions"
                );
                // Event streams never end on their own; end them now.
                shutdown.cancel();
            }
        };
        tokio::spawn(drain);
        let server = crate::server::serve::serve(
            listener,
            self.router,
            self.server.clone(),
            self.draining.clone(),
            self.in_flight.clone(),
            stop_accepting,
            listener_closed,
        );
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
        tracing::info!("connections closed; closing the store");
        // Steps still queued for the funnel are written before the store closes.
        self.funnel.flush().await;
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The lease name of the periodic sweep ([`Store::run_exclusively`]).
pub const SWEEP_JOB: &str = "sweep";

/// One round of the periodic sweep: expired authorization state, shared
/// limit counters and failures, the bridge's applications. Runs on one
/// replica at a time.
pub async fn sweep(store: &Store, client_ttl: Option<i64>, bridge: Option<&Bridge>) {
    let now = crate::store::now_epoch();
    if let Some(client_ttl) = client_ttl {
        match store.sweep_oauth(now, client_ttl).await {
            Ok(swept) => tracing::debug!(
                clients = swept.clients,
                rows = swept.expired_rows,
                "swept expired authorization state"
            ),
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
    }
    match store.sweep_auth_funnel(now).await {
        Ok(rows) => tracing::debug!(rows, "swept old auth funnel rows"),
        Err(e) => tracing::warn!(error = %e, "sweep of the auth funnel failed"),
    }
    match store.sweep_limits(now).await {
        Ok(rows) => tracing::debug!(rows, "swept expired limit counters and fetch failures"),
        Err(e) => tracing::warn!(error = %e, "sweep of limit counters failed"),
    }
    if let Some(bridge) = bridge {
        bridge.sweep().await;
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
