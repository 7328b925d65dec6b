//! Assemble the local authorization server from configuration.

use std::{sync::Arc, time::Duration};

use axum::Router;
use secrecy::ExposeSecret;

use super::{
    cimd::{CimdError, CimdResolver},
    crypto::{CryptoError, Sealer},
    enterprise::EnterpriseTrust,
    flow::AuthorizationServer,
    http::{OAuthState, routes},
    keys::{KeyError, KeyRing},
    passwords::{self, PasswordError},
    settings::{EncryptionKeySource, LocalAuthSettings},
};
use crate::{
    auth::{policy::AccessPolicy, verify::IssuerVerifier},
    idp::{IdentityProvider, IdpError, settings::IdpSettings},
    store::{Store, StoreError},
};

/// Why the authorization server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    EncryptionKey(CryptoError),
    #[error("auth.local.previous_encryption_keys[{index}]: {source}")]
    PreviousEncryptionKey { index: usize, source: CryptoError },
    #[error("signing keys: {0}")]
    SigningKeys(#[from] KeyError),
    #[error("pinned document for {client_id}: {source}")]
    PinnedDocument {
        client_id: String,
        source: CimdError,
    },
    #[error(transparent)]
    Idp(#[from] IdpError),
    #[error("auth.local.enterprise_idps: building the key fetcher: {0}")]
    EnterpriseIdps(reqwest::Error),
    #[error("creating the first user: {0}")]
    FirstUser(#[from] FirstUserError),
}

/// Why the first user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum FirstUserError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("generating a password: {0}")]
    Password(#[from] CryptoError),
    #[error("hashing the password: {0}")]
    Hash(#[from] PasswordError),
    #[error("the hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What the authorization server needs from the rest of the program.
pub struct Surroundings<'a> {
    /// mcpgate's public origin: the issuer of its tokens.
    pub issuer: String,
    /// The MCP resource (`issuer + "/mcp"`): the audience of its tokens.
    pub resource: String,
    pub store: &'a Store,
    pub policy: &'a AccessPolicy,
    pub password_checks: prometheus_client::metrics::counter::Counter,
    /// Where the attempts' steps go (`crate::funnel`).
    pub funnel: crate::funnel::Funnel,
    pub clock: crate::clock::SharedClock,
    /// The pages' look.
    pub site: Arc<crate::branding::Site>,
    /// Proxy mode: the identity-provider users who hold the admin role.
    pub admin_roles: Arc<dyn crate::idp::AdminRoleRule>,
}

pub struct LocalAuthority {
    pub routes: Router,
    /// What the admin console signs in and rotates keys with.
    pub console: ConsoleParts,
    pub keys: Arc<KeyRing>,
    pub verifier: Arc<IssuerVerifier>,
    pub initial_admin_password: Option<String>,
    /// The encryption key ring, for other subsystems' sealed values (`upstream::user_auth`).
    pub sealer: Arc<Sealer>,
}

pub fn sealer(config: &LocalAuthSettings) -> Result<Sealer, SetupError> {
    let current = match &config.encryption_key {
        EncryptionKeySource::Inline(key) => Sealer::from_base64(key.expose_secret()),
        EncryptionKeySource::File(path) => Sealer::from_key_file(path),
    }
    .map_err(SetupError::EncryptionKey)?;
    let previous = config
        .previous_encryption_keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            Sealer::from_base64(key.expose_secret())
                .map_err(|source| SetupError::PreviousEncryptionKey { index: i, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(current.with_previous(previous))
}

/// The scopes the authorization server advertises: the policy's, then
/// `extra_scopes` (also what `mcpgate token verify --config` expects).
pub fn advertised_scopes(local: &LocalAuthSettings, policy: &AccessPolicy) -> Vec<String> {
    let mut scopes: Vec<String> = policy.all_scopes().into_iter().collect();
    for extra in &local.extra_scopes {
        if !scopes.contains(extra) {
            scopes.push(extra.clone());
        }
    }
    scopes
}

/// The authorization server's parts the admin console (`crate::admin`) uses.
#[derive(Clone)]
pub struct ConsoleParts {
    pub server: Arc<AuthorizationServer>,
    pub sealer: Arc<Sealer>,
    pub access_token_ttl_secs: i64,
    pub secure_cookies: bool,
}

/// Create `admin` (an admin of the console) with a random password when the store has no user yet.
pub async fn ensure_first_user(store: &Store) -> Result<Option<String>, FirstUserError> {
    if store.count_users().await? > 0 {
        return Ok(None);
    }
    let password = passwords::generate_password()?;
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || passwords::hash_password(&password)).await??
    };
    match store.create_user_with_role("admin", &hash, true).await {
        Ok(_) => Ok(Some(password)),
        // Another replica created it first.
        Err(StoreError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The authorization server of local mode (`idp` absent: users in the
/// store, the first one created here) and proxy mode (users sign in at `idp`).
pub async fn build(
    local: &LocalAuthSettings,
    idp: Option<&IdpSettings>,
    at: Surroundings<'_>,
) -> Result<LocalAuthority, SetupError> {
    let Surroundings {
        issuer,
        resource,
        store,
        policy,
        password_checks,
        funnel,
        clock,
        site,
        admin_roles,
    } = at;
    let sealer = Arc::new(sealer(local)?);
    if sealer.has_previous() {
        // Old keys stay configured until this reports nothing unreadable.
        // Replicas starting together re-seal once: whoever holds the lease
        // does it (each row is swapped only if unchanged, so even an overlap
        // would be harmless, merely wasted work).
        let (store, sealer) = (store.clone(), sealer.clone());
        tokio::spawn(async move {
            let run = store.run_exclusively("reseal", super::reseal::reseal_all(&store, &sealer));
            match run.await {
                Ok(Some(Ok(done))) => tracing::info!(
                    resealed = done.resealed,
                    unreadable = done.unreadable,
                    "re-sealed data under the current encryption key"
                ),
                Ok(None) => tracing::info!("another replica is re-sealing; not re-sealing here"),
                Ok(Some(Err(e))) | Err(e) => {
                    tracing::warn!(error = %e, "re-sealing failed; it is retried at the next start")
                }
            }
        });
    }
    let keys = KeyRing::open_on_clock(store.clone(), sealer.clone(), clock.clone()).await?;
    let verifier = Arc::new(
        IssuerVerifier::new(
            issuer.clone(),
            vec![resource.clone()],
            vec![jsonwebtoken::Algorithm::ES256],
            keys.verification_keys(),
            None,
            reqwest::Client::new(),
        )
        // Same clock signs and verifies: expiry must show at once so clients
        // refresh. Identity JWTs for upstreams share the keys, never the typ.
        .for_own_tokens()
        .with_clock(clock.clone()),
    );
    // Failed document fetches are remembered in the store, for every replica.
    let mut cimd = CimdResolver::new(
        local.cimd.allow_loopback_http,
        Duration::from_secs(local.cimd.fetch_timeout_secs),
    )
    .with_store(store.clone());
    for (client_id, document) in &local.cimd.pinned {
        cimd.pin(client_id, document)
            .map_err(|source| SetupError::PinnedDocument {
                client_id: client_id.clone(),
                source,
            })?;
    }
    let scopes = advertised_scopes(local, policy);
    let enterprise = EnterpriseTrust::build(&local.enterprise_idps, clock.clone())
        .map_err(SetupError::EnterpriseIdps)?;
    let mut server = AuthorizationServer::new(
        issuer.clone(),
        resource,
        scopes,
        local.clone(),
        store.clone(),
        keys.clone(),
        sealer.clone(),
        cimd,
    )
    .counting_password_checks(password_checks)
    .with_enterprise_idps(enterprise)
    .with_funnel(funnel)
    .with_clock(clock);
    // Proxy mode: users come from the identity provider, so no local admin.
    let initial_admin_password = match idp {
        Some(settings) => {
            let idp =
                IdentityProvider::connect(settings.clone(), format!("{issuer}/callback")).await?;
            tracing::info!(preset = idp.preset_name(), issuer = %idp.namespace(), "proxy mode: users sign in upstream");
            if idp.email_needs_domain_owner_proof() && idp.allows_by_email() {
                tracing::warn!(
                    "Entra multi-tenant: allowed_emails and allowed_email_domains match only ID tokens with xms_edov = true; add that optional claim (docs/idp/entra.md) or use allowed_groups"
                );
            }
            if idp.allow_list_is_open() {
                tracing::warn!(
                    preset = idp.preset_name(),
                    "every account the identity provider signs in may use this server; set auth.upstream.allowed_* to restrict it"
                );
            }
            server = server.with_idp(Arc::new(idp)).with_admin_roles(admin_roles);
            None
        }
        None => ensure_first_user(store).await?,
    };
    let server = Arc::new(server);
    let console = ConsoleParts {
        server: server.clone(),
        sealer: sealer.clone(),
        access_token_ttl_secs: local.access_token_ttl_secs as i64,
        secure_cookies: issuer.starts_with("https://"),
    };
    let routes = routes(OAuthState {
        server,
        keys: keys.clone(),
        verifier: verifier.clone(),
        secure_cookies: issuer.starts_with("https://"),
        site,
    });
    Ok(LocalAuthority {
        routes,
        console,
        keys,
        verifier,
        initial_admin_password,
        sealer,
    })
}
