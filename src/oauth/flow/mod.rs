//! The authorization server's domain, free of HTTP (`auth.mode = "local"`
//! and `"proxy"`). The HTTP edge (`oauth::http`) parses requests, calls
//! these, and renders what they decide; [`OAuthError`] maps to RFC codes
//! there. One file per step: `register` (clients: registration, lookup,
//! authentication), `authorize` (the request and its next step), `login`
//! (passwords and sessions), `consent`, `grants` (codes and refresh
//! tokens), `machine` (client credentials), `introspect` (RFC 7662 and RFC 7009). Proxy mode's sign-in at
//! the identity provider is `oauth::proxy`.

mod authorize;
mod consent;
mod grants;
#[cfg(test)]
mod grants_tests;
mod identity_assertion;
mod introspect;
mod login;
mod machine;
mod refresh_token;
mod register;

use std::sync::Arc;

pub use authorize::{
    Authorization, AuthorizeError, AuthorizeParams, AuthorizeStep, MAX_STATE_BYTES, Pending,
    PendingError, PendingRequest, REQUEST_TTL_SECS, same_resource,
};
pub use consent::{Consent, ConsentError, RememberConsent};
pub use grants::TokenResponse;
pub(super) use grants::{CODE_CONTEXT, REFRESH_CONTEXT};
pub use introspect::{ActiveToken, Introspection, Introspector};
pub use login::{BrowserSession, LoginError, LoginOutcome};
pub use register::{Client, ClientCredentials};

use super::configured_clients::{
    GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN,
};
use super::{
    cimd::CimdResolver,
    client_auth::{self, ClientAssertionVerifier},
    client_keys::ClientKeyCache,
    crypto::Sealer,
    error::OAuthError,
    keys::KeyRing,
    passwords,
    ratelimit::{LoginLimits, WindowLimiter},
};
use super::{clients::AuthMethod, metadata::AuthorizationServerMetadata};
use super::{
    configured_clients::GRANT_JWT_BEARER,
    enterprise::{EnterpriseTrust, GRANT_PROFILE_ID_JAG},
};
use crate::funnel::Funnel;
use crate::{idp::IdentityProvider, oauth::settings::LocalAuthSettings, store::Store};

pub struct AuthorizationServer {
    pub issuer: String,
    pub resource: String,
    pub scopes_supported: Vec<String>,
    pub(super) config: LocalAuthSettings,
    pub(super) store: Store,
    keys: Arc<KeyRing>,
    pub(super) sealer: Arc<Sealer>,
    cimd: CimdResolver,
    /// `private_key_jwt`: client assertions and the clients' key sets.
    assertions: ClientAssertionVerifier,
    login_limits: LoginLimits,
    registrations: WindowLimiter,
    /// `/authorize` per address: each request stores a pending row.
    authorizations: WindowLimiter,
    /// Password checks run on a few dedicated threads (see [`passwords::CheckPool`]).
    password_checks: passwords::CheckPool,
    /// Proxy mode: users sign in at this identity provider instead of the login page.
    pub(super) upstream: Option<Arc<IdentityProvider>>,
    /// Proxy mode: which upstream identities hold the admin role (`[admin]`).
    pub(super) admin_roles: Option<Arc<dyn crate::idp::AdminRoleRule>>,
    /// Enterprise IdPs whose identity assertions (ID-JAG) `/token` accepts.
    enterprise: EnterpriseTrust,
    /// Where each attempt's steps and stop reasons go (`crate::funnel`).
    pub(super) funnel: Funnel,
    /// Registrations read before, for the refresh grant's short way.
    registered_clients: Arc<register::RegisteredClients>,
    /// The registrations never used, as last counted (the cap's cheap side).
    unused_clients: Arc<register::UnusedClients>,
    clock: crate::clock::SharedClock,
}

impl AuthorizationServer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        issuer: String,
        resource: String,
        scopes_supported: Vec<String>,
        config: LocalAuthSettings,
        store: Store,
        keys: Arc<KeyRing>,
        sealer: Arc<Sealer>,
        cimd: CimdResolver,
    ) -> AuthorizationServer {
        // Every limit is counted in the store, so replicas share one budget.
        let login_limits = LoginLimits::new(
            config.login_max_failures,
            config.login_max_failures_per_account,
            std::time::Duration::from_secs(300),
            store.clone(),
        );
        let registrations = WindowLimiter::new(
            "register",
            config.registrations_per_minute,
            std::time::Duration::from_secs(60),
            store.clone(),
        );
        let authorizations = WindowLimiter::new(
            "authorize",
            config.authorize_requests_per_minute,
            std::time::Duration::from_secs(60),
            store.clone(),
        );
        let assertions = ClientAssertionVerifier::new(
            ClientKeyCache::new(cimd.fetcher(), crate::clock::system()).with_store(store.clone()),
            &issuer,
        );
        AuthorizationServer {
            assertions,
            issuer,
            resource,
            scopes_supported,
            config,
            store,
            keys,
            sealer,
            cimd,
            login_limits,
            registrations,
            authorizations,
            password_checks: passwords::CheckPool::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            upstream: None,
            admin_roles: None,
            enterprise: EnterpriseTrust::default(),
            funnel: Funnel::off(),
            registered_clients: Arc::default(),
            unused_clients: Arc::default(),
            clock: crate::clock::system(),
        }
    }

    /// Read the time from `clock` (tests move a manual clock instead of sleeping).
    /// The rate-limit windows and the document cache read it too.
    pub fn with_clock(mut self, clock: crate::clock::SharedClock) -> Self {
        self.login_limits = self.login_limits.with_clock(clock.clone());
        self.registrations = self.registrations.with_clock(clock.clone());
        self.authorizations = self.authorizations.with_clock(clock.clone());
        self.cimd = self.cimd.with_clock(clock.clone());
        self.assertions = self.assertions.with_clock(clock.clone());
        self.clock = clock;
        self
    }

    /// Count the password checks on `counter` (`/metrics`).
    pub fn counting_password_checks(
        mut self,
        counter: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        self.password_checks.count_on(counter);
        self
    }

    /// Record the attempts' steps on `funnel`.
    pub fn with_funnel(mut self, funnel: Funnel) -> Self {
        self.funnel = funnel;
        self
    }

    /// The funnel the edge records the browser steps on.
    pub fn funnel(&self) -> &Funnel {
        &self.funnel
    }

    /// Proxy mode: sign users in at `upstream`.
    pub fn with_idp(mut self, upstream: Arc<IdentityProvider>) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// Proxy mode: give identity-provider users the admin role by `roles`
    /// at each sign-in.
    pub fn with_admin_roles(mut self, roles: Arc<dyn crate::idp::AdminRoleRule>) -> Self {
        self.admin_roles = Some(roles);
        self
    }

    /// The clients of `[[auth.local.clients]]` (the admin console lists them).
    pub fn configured_clients(&self) -> &[Arc<crate::oauth::configured_clients::ConfiguredClient>] {
        &self.config.clients
    }

    /// Accept identity assertions (ID-JAG) from the enterprise IdPs in `trust`.
    pub fn with_enterprise_idps(mut self, trust: EnterpriseTrust) -> Self {
        self.enterprise = trust;
        self
    }

    pub fn is_proxy(&self) -> bool {
        self.upstream.is_some()
    }

    /// RFC 8414 metadata.
    pub fn metadata(&self) -> AuthorizationServerMetadata {
        let i = &self.issuer;
        let mut scopes = self.scopes_supported.clone();
        scopes.push("offline_access".to_owned());
        let mut base = AuthorizationServerMetadata::new(i, scopes);
        base.grant_types_supported = self.grant_types_supported();
        // Enterprise-managed authorization (extension §6): only when an
        // enterprise IdP is trusted, else clients would try a grant that
        // can only fail.
        if !self.enterprise.is_empty() {
            base.grant_types_supported.push(GRANT_JWT_BEARER);
            base.authorization_grant_profiles_supported = Some(vec![GRANT_PROFILE_ID_JAG]);
        }
        AuthorizationServerMetadata {
            revocation_endpoint: Some(format!("{i}/revoke")),
            revocation_endpoint_auth_methods_supported: Some(
                AuthMethod::ALL.map(AuthMethod::as_str).to_vec(),
            ),
            revocation_endpoint_auth_signing_alg_values_supported: Some(
                client_auth::signing_algorithm_names(),
            ),
            // `none` stays listed: Codex and opencode use a metadata
            // document only when it is.
            token_endpoint_auth_methods_supported: AuthMethod::ALL.map(AuthMethod::as_str).to_vec(),
            token_endpoint_auth_signing_alg_values_supported: Some(
                client_auth::signing_algorithm_names(),
            ),
            introspection_endpoint: Some(format!("{i}/introspect")),
            introspection_endpoint_auth_methods_supported: Some(
                [AuthMethod::SecretBasic, AuthMethod::SecretPost]
                    .map(AuthMethod::as_str)
                    .to_vec(),
            ),
            jwks_uri: Some(format!("{i}/jwks.json")),
            client_id_metadata_document_supported: Some(self.config.cimd.enabled),
            ..base
        }
    }

    /// The code and refresh grants, and `client_credentials` only when a
    /// configured client may use it (advertising it otherwise would send
    /// machine clients to a grant nobody can obtain).
    fn grant_types_supported(&self) -> Vec<&'static str> {
        let mut grants = vec![GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN];
        if self
            .config
            .clients
            .iter()
            .any(|c| c.allows_grant(GRANT_CLIENT_CREDENTIALS))
        {
            grants.push(GRANT_CLIENT_CREDENTIALS);
        }
        grants
    }
}

/// The shared limits could not be counted (the store is out of reach): the
/// request is refused with 503 `temporarily_unavailable` rather than served
/// uncounted.
fn limits_unavailable(e: crate::store::StoreError) -> OAuthError {
    tracing::warn!(error = %e, "rate limits unreadable; refusing the request");
    OAuthError::Unavailable(
        "the service cannot take this request right now; retry shortly".to_owned(),
    )
}

/// Data this server wrote itself failed to encode or decode: the server's
/// fault (`server_error`). Client input is parsed with its own messages.
impl From<serde_json::Error> for OAuthError {
    fn from(e: serde_json::Error) -> Self {
        OAuthError::Server(e.to_string())
    }
}
