//! Clients: RFC 7591 registration, lookup (a registration or a Client ID
//! Metadata Document), and authentication at the token-side endpoints.

use std::sync::Arc;

use serde_json::json;

use super::AuthorizationServer;
use secrecy::ExposeSecret;

use crate::oauth::{
    client_auth::{AssertionError, CLIENT_ASSERTION_TYPE, ClientKeySource, unverified_subject},
    client_keys::ClientKeysError,
    clients::{AuthMethod, ClientMetadata},
    configured_clients::ConfiguredClient,
    crypto::{ct_eq, random_token, sha256_b64},
    error::OAuthError,
    fenced_fetch::FetchError,
};
use crate::store::{ClientRecord, Consumed};

/// A client as the flows see it: registered (DCR) or described by a document (CIMD).
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub metadata: Arc<ClientMetadata>,
    pub secret_hash: Option<String>,
    /// The document's host for CIMD clients (shown on the consent page).
    pub document_host: Option<String>,
    /// Registered clients: when one last obtained a token (the sweeper's clock).
    pub last_used_at: Option<i64>,
    /// Clients from `[[auth.local.clients]]`: what the operator allowed them.
    pub configured: Option<Arc<ConfiguredClient>>,
}

/// `last_used_at` is written at most this often: the sweeper counts in days,
/// and a write per refresh would cost every refresh a store round trip.
const TOUCH_INTERVAL_SECS: i64 = 3600;

impl Client {
    /// The methods it may authenticate with at the token endpoint: the one
    /// it registered, or those its configuration allows.
    ///
    /// A document (or registration) that offers both `none` and
    /// `private_key_jwt` lets the client choose: its own method, plus `none`
    /// or `private_key_jwt` when `token_endpoint_auth_methods_supported`
    /// lists them, plus `private_key_jwt` for a public client that publishes
    /// keys. `private_key_jwt` only with keys to verify against.
    pub fn auth_methods(&self) -> Vec<AuthMethod> {
        if let Some(configured) = &self.configured {
            return configured.auth_methods.clone();
        }
        let own = self.metadata.auth_method();
        let mut methods = vec![own];
        let listed = self
            .metadata
            .token_endpoint_auth_methods_supported
            .iter()
            .flatten()
            .filter_map(|m| AuthMethod::parse(m))
            .filter(|m| matches!(m, AuthMethod::None | AuthMethod::PrivateKeyJwt));
        let keyed = (own == AuthMethod::None).then_some(AuthMethod::PrivateKeyJwt);
        for method in listed.chain(keyed) {
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        let has_keys = self.metadata.has_keys();
        methods.retain(|m| *m != AuthMethod::PrivateKeyJwt || has_keys);
        methods
    }

    pub(super) fn touch_due(&self, now: i64) -> bool {
        self.document_host.is_none()
            && self.configured.is_none()
            && self
                .last_used_at
                .is_none_or(|at| now - at >= TOUCH_INTERVAL_SECS)
    }
}

/// Whether credentials without a client assertion authenticate `client`:
/// a public client needs none, else the secret by a method it may use.
fn accepts_without_assertion(client: &Client, creds: &ClientCredentials) -> bool {
    let methods = client.auth_methods();
    if methods.contains(&AuthMethod::None) {
        return true;
    }
    // A `private_key_jwt` client presenting a secret or nothing ends here.
    let (Some(hash), Some(presented)) = (&client.secret_hash, creds.secret.as_deref()) else {
        return false;
    };
    let used = if creds.basic {
        AuthMethod::SecretBasic
    } else {
        AuthMethod::SecretPost
    };
    methods.contains(&used) && ct_eq(hash, &sha256_b64(presented))
}

/// How a registration is inserted: see [`UnusedClients`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Insert {
    /// Far from the cap: a plain insert.
    Plain,
    /// Near (or at) the cap: the insert counts the unused clients itself.
    Counted,
}

/// The registrations that never obtained a token, as this replica last
/// counted them. The cap (`max_unused_clients`) bounds what junk
/// registrations can store. Counting reads up to the cap's number of index
/// entries, and doing so in every registration made each one slower as
/// unused clients piled up (at 15 000 of them, registration throughput
/// halved), most of all under the flood the cap is there for. So the count
/// is taken at most once a clock second, registrations made since are added
/// to it, and while that sum is below the cap by more than a tenth of it an
/// insert does not count. Closer than that, every insert counts in its own
/// statement as before, so the cap holds exactly as it did on one replica;
/// replicas together can pass the far side of the margin only by registering
/// more than a tenth of the cap in one second, which the per-address limit
/// on `/register` stands in the way of.
#[derive(Debug, Default)]
pub(super) struct UnusedClients {
    last: std::sync::Mutex<Option<UnusedCount>>,
}

#[derive(Debug, Clone, Copy)]
struct UnusedCount {
    /// As counted (up to the cap).
    counted: u64,
    /// The clock second it was counted in.
    at: i64,
    /// Registrations this replica made since.
    since: u64,
}

impl UnusedClients {
    /// `None`: no count of this clock second; take one and call [`Self::counted`].
    fn plan(&self, now: i64, cap: u64) -> Option<Insert> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let count = last.as_mut().filter(|c| c.at == now)?;
        Some(Self::admit(count, cap))
    }

    fn counted(&self, now: i64, counted: u64, cap: u64) -> Insert {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let count = last.insert(UnusedCount {
            counted,
            at: now,
            since: 0,
        });
        Self::admit(count, cap)
    }

    fn admit(count: &mut UnusedCount, cap: u64) -> Insert {
        let margin = (cap / 10).max(1);
        if count.counted.saturating_add(count.since) < cap.saturating_sub(margin) {
            count.since += 1;
            Insert::Plain
        } else {
            Insert::Counted
        }
    }
}

/// Where [`AuthorizationServer::lookup_client`] may find a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registrations {
    Store,
    Memory,
}

/// Registered clients this replica has read, for the refresh grant's short
/// way. A registration never changes after it is made (only its
/// `last_used_at`, kept here as this replica last wrote or read it), so what
/// is remembered authenticates exactly as the row would. A removed client is
/// no risk: its removal revoked its refresh tokens in the same transaction,
/// so the short way's write finds no live row and the long way reads the
/// store (and forgets the client here).
#[derive(Debug, Default)]
pub(super) struct RegisteredClients {
    clients: std::sync::Mutex<std::collections::HashMap<String, Client>>,
}

/// Beyond this many the memory starts over (registrations are unbounded).
const REMEMBERED_CLIENTS: usize = 4096;

impl RegisteredClients {
    fn get(&self, client_id: &str) -> Option<Client> {
        self.clients.lock().ok()?.get(client_id).cloned()
    }

    fn remember(&self, client: &Client) {
        if let Ok(mut clients) = self.clients.lock() {
            if clients.len() >= REMEMBERED_CLIENTS && !clients.contains_key(&client.client_id) {
                clients.clear();
            }
            clients.insert(client.client_id.clone(), client.clone());
        }
    }

    fn forget(&self, client_id: &str) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.remove(client_id);
        }
    }

    /// A grant wrote the client's `last_used_at` (so the next is not due).
    pub(super) fn touched(&self, client_id: &str, now: i64) {
        if let Ok(mut clients) = self.clients.lock()
            && let Some(client) = clients.get_mut(client_id)
        {
            client.last_used_at = Some(now);
        }
    }
}

/// Credentials a token-endpoint caller presented.
#[derive(Debug, Clone, Default)]
pub struct ClientCredentials {
    pub client_id: Option<String>,
    pub secret: Option<String>,
    /// Presented with HTTP Basic (the method must then be client_secret_basic).
    pub basic: bool,
    /// RFC 7523 §2.2: `client_assertion` and `client_assertion_type`.
    pub assertion: Option<String>,
    pub assertion_type: Option<String>,
}

impl AuthorizationServer {
    /// RFC 7591: validate, store, answer with the registered metadata.
    pub async fn register(
        &self,
        body: serde_json::Value,
        client_address: &str,
    ) -> Result<serde_json::Value, OAuthError> {
        // Counted in the store across replicas; if it cannot count, refuse.
        if !self
            .registrations
            .hit(client_address)
            .await
            .map_err(super::limits_unavailable)?
        {
            return Err(OAuthError::RateLimited);
        }
        let metadata: ClientMetadata = serde_json::from_value(body).map_err(|_| {
            OAuthError::InvalidClientMetadata("the body is not valid client metadata".to_owned())
        })?;
        let metadata = metadata.normalise_for_registration_with_assertions()?;
        if let Some(uri) = &metadata.jwks_uri {
            self.cimd.fetcher().check_url(uri).map_err(|e| {
                OAuthError::InvalidClientMetadata(format!("jwks_uri is not allowed: {e}"))
            })?;
        }
        let client_id = random_token(18)?;
        // `private_key_jwt` clients prove themselves with their keys.
        let secret = match metadata.auth_method() {
            AuthMethod::SecretBasic | AuthMethod::SecretPost => Some(random_token(32)?),
            AuthMethod::None | AuthMethod::PrivateKeyJwt => None,
        };
        let now = self.clock.now();
        let stored = serde_json::to_string(&metadata)?;
        let cap = self.config.max_unused_clients;
        let max_unused = i64::try_from(cap).unwrap_or(i64::MAX);
        let insert = match self.unused_clients.plan(now, cap) {
            Some(insert) => insert,
            None => {
                let counted = self.store.count_unused_clients(max_unused).await?;
                self.unused_clients
                    .counted(now, u64::try_from(counted).unwrap_or(0), cap)
            }
        };
        let inserted = self
            .store
            .insert_client_capped(
                &ClientRecord {
                    client_id: client_id.clone(),
                    secret_hash: secret.as_deref().map(sha256_b64),
                    metadata: stored,
                    created_at: now,
                    last_used_at: None,
                },
                (insert == Insert::Counted).then_some(max_unused),
            )
            .await?;
        if !inserted {
            tracing::warn!(
                max_unused_clients = self.config.max_unused_clients,
                "registration refused: too many registered clients have never been used"
            );
            return Err(OAuthError::TooManyClients);
        }
        let mut response = serde_json::to_value(&metadata)?;
        if let Some(obj) = response.as_object_mut() {
            obj.insert("client_id".into(), json!(client_id));
            obj.insert("client_id_issued_at".into(), json!(now));
            if let Some(secret) = secret {
                obj.insert("client_secret".into(), json!(secret));
                obj.insert("client_secret_expires_at".into(), json!(0));
            }
        }
        Ok(response)
    }

    /// Look a client up by id: one configured in `[[auth.local.clients]]`,
    /// a document URL, or a registration.
    pub async fn client(&self, client_id: &str) -> Result<Option<Client>, OAuthError> {
        self.lookup_client(client_id, Registrations::Store).await
    }

    /// [`AuthorizationServer::client`]; a registration is read from the store
    /// (and remembered), or with [`Registrations::Memory`] only from what this
    /// replica read before (`None` if it has not).
    async fn lookup_client(
        &self,
        client_id: &str,
        registrations: Registrations,
    ) -> Result<Option<Client>, OAuthError> {
        if let Some(configured) = self
            .config
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
        {
            return Ok(Some(Client {
                client_id: configured.client_id.clone(),
                metadata: Arc::new(configured.metadata()),
                secret_hash: configured
                    .client_secret
                    .as_ref()
                    .map(|s| sha256_b64(s.expose_secret())),
                document_host: None,
                last_used_at: None,
                configured: Some(configured.clone()),
            }));
        }
        if self.config.cimd.enabled && self.cimd.is_document_id(client_id) {
            let metadata = self
                .cimd
                .resolve(client_id)
                .await
                .map_err(|e| OAuthError::InvalidClientMetadata(e.to_string()))?;
            return Ok(Some(Client {
                client_id: client_id.to_owned(),
                metadata,
                secret_hash: None,
                last_used_at: None,
                configured: None,
                document_host: url::Url::parse(client_id)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned)),
            }));
        }
        if registrations == Registrations::Memory {
            return Ok(self.registered_clients.get(client_id));
        }
        let Some(record) = self.store.get_client(client_id).await? else {
            self.registered_clients.forget(client_id);
            return Ok(None);
        };
        let metadata: ClientMetadata = serde_json::from_str(&record.metadata)?;
        let client = Client {
            client_id: record.client_id,
            metadata: Arc::new(metadata),
            secret_hash: record.secret_hash,
            document_host: None,
            last_used_at: record.last_used_at,
            configured: None,
        };
        self.registered_clients.remember(&client);
        Ok(Some(client))
    }

    /// The refresh grant's short way (`refresh_token.rs`): the client the
    /// credentials name, authenticated without a store read, or `None`
    /// (then the long way authenticates as [`Self::authenticate_client`]).
    /// A client assertion always goes the long way (its `jti` is recorded
    /// in the store).
    pub(super) async fn authenticate_from_memory(
        &self,
        creds: &ClientCredentials,
    ) -> Option<Client> {
        if creds.assertion.is_some() || creds.assertion_type.is_some() {
            return None;
        }
        let client_id = creds.client_id.as_deref()?;
        let client = self
            .lookup_client(client_id, Registrations::Memory)
            .await
            .ok()??;
        accepts_without_assertion(&client, creds).then_some(client)
    }

    /// How long `client`'s access tokens live: its own setting (configured
    /// clients), else its known client's (`access_token_ttl_by_client`),
    /// else the server's.
    pub fn access_token_ttl(&self, client: &Client) -> u64 {
        client
            .configured
            .as_ref()
            .and_then(|c| c.access_token_ttl_secs)
            .or_else(|| {
                crate::oauth::known_clients::recognise(client)
                    .and_then(|known| self.config.access_token_ttl_by_client.get(known.name))
                    .copied()
            })
            .unwrap_or(self.config.access_token_ttl_secs)
    }

    /// Authenticate the caller of `/token`, `/revoke` or `/introspect` by
    /// the one method it used (the edge refuses requests using two): a
    /// client assertion, a secret, or nothing for a public client.
    pub(super) async fn authenticate_client(
        &self,
        creds: &ClientCredentials,
    ) -> Result<Client, OAuthError> {
        self.authenticate_named(creds, &mut None).await
    }

    /// [`AuthorizationServer::authenticate_client`], noting in `named` the
    /// client the request names once it is known to exist here, whether or
    /// not it then authenticates (the funnel keeps rows of known clients only).
    pub(super) async fn authenticate_named(
        &self,
        creds: &ClientCredentials,
        named: &mut Option<String>,
    ) -> Result<Client, OAuthError> {
        let assertion = match (&creds.assertion, &creds.assertion_type) {
            (None, None) => None,
            (Some(assertion), Some(kind)) if kind == CLIENT_ASSERTION_TYPE => {
                Some(assertion.as_str())
            }
            (Some(_), Some(_)) => {
                return Err(OAuthError::ClientAssertion(AssertionError::WrongType));
            }
            _ => {
                return Err(OAuthError::InvalidRequest(
                    "client_assertion and client_assertion_type are sent together".to_owned(),
                ));
            }
        };
        // An assertion names its client in `sub`; a `client_id` sent along
        // must be the same one (checked by the verification: iss = sub = it).
        let client_id = match (&creds.client_id, assertion) {
            (Some(id), _) => id.clone(),
            (None, Some(assertion)) => {
                unverified_subject(assertion).ok_or(OAuthError::InvalidClient)?
            }
            (None, None) => return Err(OAuthError::InvalidClient),
        };
        let client = match self.client(&client_id).await {
            Ok(Some(c)) => c,
            Ok(None) | Err(OAuthError::InvalidClientMetadata(_)) => {
                return Err(OAuthError::InvalidClient);
            }
            Err(e) => return Err(e),
        };
        *named = Some(client.client_id.clone());
        let methods = client.auth_methods();
        if let Some(assertion) = assertion {
            if !methods.contains(&AuthMethod::PrivateKeyJwt) {
                return Err(OAuthError::InvalidClient);
            }
            self.verify_client_assertion(&client, assertion).await?;
            return Ok(client);
        }
        if accepts_without_assertion(&client, creds) {
            Ok(client)
        } else {
            Err(OAuthError::InvalidClient)
        }
    }

    /// RFC 7523 §3 via `client_auth`, then the `jti` recorded in the store
    /// until the assertion could no longer be accepted: single use across
    /// replicas.
    async fn verify_client_assertion(
        &self,
        client: &Client,
        assertion: &str,
    ) -> Result<(), OAuthError> {
        let metadata = &client.metadata;
        let keys = match (&metadata.jwks, &metadata.jwks_uri) {
            (Some(set), _) => ClientKeySource::Inline(set),
            (None, Some(uri)) => ClientKeySource::Uri(uri),
            (None, None) => return Err(OAuthError::ClientAssertion(AssertionError::NoKeys)),
        };
        let now = self.clock.now();
        let verified = self
            .assertions
            .verify(
                &client.client_id,
                keys,
                metadata.token_endpoint_auth_signing_alg.as_deref(),
                assertion,
                now,
            )
            .await
            .map_err(|e| match e {
                // Mcpgate's own limit, not the client's fault: retry later.
                AssertionError::Keys(ClientKeysError::Fetch(FetchError::Busy)) => {
                    OAuthError::Unavailable(
                        "too many client key sets are being fetched right now; retry shortly"
                            .to_owned(),
                    )
                }
                e => OAuthError::ClientAssertion(e),
            })?;
        let key = format!("client_assertion|{}|{}", client.client_id, verified.jti);
        match self
            .store
            .use_assertion_jti(&key, verified.usable_until, now)
            .await?
        {
            Consumed::Won => Ok(()),
            Consumed::Lost => {
                tracing::warn!(client_id = %client.client_id, "client assertion replayed");
                Err(OAuthError::ClientAssertion(AssertionError::Replayed))
            }
        }
    }
}

#[cfg(test)]
mod unused_clients_tests {
    use super::{Insert, UnusedClients};

    #[test]
    fn far_from_the_cap_inserts_do_not_count_and_the_count_is_taken_once_a_second() {
        let unused = UnusedClients::default();
        assert_eq!(unused.plan(100, 1000), None, "no count yet");
        assert_eq!(unused.counted(100, 0, 1000), Insert::Plain);
        // The same second: the registrations made since add to the count.
        for _ in 0..899 {
            assert_eq!(unused.plan(100, 1000), Some(Insert::Plain));
        }
        // 900 made since a count of 0: the next is within a tenth of the cap.
        assert_eq!(unused.plan(100, 1000), Some(Insert::Counted));
        assert_eq!(unused.plan(100, 1000), Some(Insert::Counted));
        // A new second asks for a new count, which starts the sum over.
        assert_eq!(unused.plan(101, 1000), None);
        assert_eq!(unused.counted(101, 10, 1000), Insert::Plain);
        // A clock that went back also asks for one.
        assert_eq!(unused.plan(99, 1000), None);
    }

    #[test]
    fn near_or_at_the_cap_every_insert_counts() {
        let unused = UnusedClients::default();
        assert_eq!(unused.counted(5, 900, 1000), Insert::Counted);
        assert_eq!(unused.counted(6, 1000, 1000), Insert::Counted);
        assert_eq!(unused.counted(7, 5000, 1000), Insert::Counted);
        // Small caps keep a margin of one: the last free place is counted.
        assert_eq!(unused.counted(8, 0, 2), Insert::Plain);
        assert_eq!(unused.plan(8, 2), Some(Insert::Counted));
        assert_eq!(unused.counted(9, 0, 1), Insert::Counted);
        assert_eq!(unused.counted(10, 0, 0), Insert::Counted);
    }
}
