//! Clients: RFC 7591 registration, lookup (a registration or a Client ID
//! Metadata Document), and authentication at the token-side endpoints.

use std::sync::Arc;

use serde_json::json;

use super::AuthorizationServer;
use secrecy::ExposeSecret;

use crate::oauth::{
    clients::{AuthMethod, ClientMetadata},
    configured_clients::ConfiguredClient,
    crypto::{ct_eq, random_token, sha256_b64},
    error::OAuthError,
};
use crate::store::ClientRecord;

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
    pub fn auth_methods(&self) -> Vec<AuthMethod> {
        match &self.configured {
            Some(configured) => configured.auth_methods.clone(),
            None => vec![self.metadata.auth_method()],
        }
    }

    pub(super) fn touch_due(&self, now: i64) -> bool {
        self.document_host.is_none()
            && self.configured.is_none()
            && self
                .last_used_at
                .is_none_or(|at| now - at >= TOUCH_INTERVAL_SECS)
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
        if !self.registrations.hit(client_address) {
            return Err(OAuthError::RateLimited);
        }
        let metadata: ClientMetadata = serde_json::from_value(body).map_err(|_| {
            OAuthError::InvalidClientMetadata("the body is not valid client metadata".to_owned())
        })?;
        let metadata = metadata.normalise_for_registration()?;
        let client_id = random_token(18)?;
        let secret = match metadata.auth_method() {
            AuthMethod::None => None,
            _ => Some(random_token(32)?),
        };
        let now = self.clock.now();
        let stored = serde_json::to_string(&metadata)?;
        let max_unused = i64::try_from(self.config.max_unused_clients).unwrap_or(i64::MAX);
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
                max_unused,
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
        let Some(record) = self.store.get_client(client_id).await? else {
            return Ok(None);
        };
        let metadata: ClientMetadata = serde_json::from_str(&record.metadata)?;
        Ok(Some(Client {
            client_id: record.client_id,
            metadata: Arc::new(metadata),
            secret_hash: record.secret_hash,
            document_host: None,
            last_used_at: record.last_used_at,
            configured: None,
        }))
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

    pub(super) async fn authenticate_client(
        &self,
        creds: &ClientCredentials,
    ) -> Result<Client, OAuthError> {
        let client_id = creds
            .client_id
            .as_deref()
            .ok_or(OAuthError::InvalidClient)?;
        let client = match self.client(client_id).await {
            Ok(Some(c)) => c,
            Ok(None) | Err(OAuthError::InvalidClientMetadata(_)) => {
                return Err(OAuthError::InvalidClient);
            }
            Err(e) => return Err(e),
        };
        let methods = client.auth_methods();
        match (methods.first().copied(), &client.secret_hash) {
            (Some(AuthMethod::None), _) => Ok(client),
            // Not verified yet: refused like a wrong secret.
            (Some(AuthMethod::PrivateKeyJwt), _) | (None, _) => Err(OAuthError::InvalidClient),
            (Some(_), Some(hash)) => {
                let presented = creds.secret.as_deref().ok_or(OAuthError::InvalidClient)?;
                let used = if creds.basic {
                    AuthMethod::SecretBasic
                } else {
                    AuthMethod::SecretPost
                };
                if !methods.contains(&used) {
                    return Err(OAuthError::InvalidClient);
                }
                if ct_eq(hash, &sha256_b64(presented)) {
                    Ok(client)
                } else {
                    Err(OAuthError::InvalidClient)
                }
            }
            (_, None) => Err(OAuthError::InvalidClient),
        }
    }
}
