//! mcpgate's token-signing keys: ES256, private halves sealed in the store,
//! held in memory for signing and verification.
//!
//! Rotation publishes a new key before it signs anything: `keys rotate`
//! stores it with `activate_at = now + ACTIVATION_DELAY`, longer than the
//! reload interval, so every replica already verifies it when the first
//! token signed with it arrives. The old key stays published until every
//! token it signed has expired.

use crate::clock::SharedClock;
use std::sync::Arc;

use arc_swap::ArcSwap;
use aws_lc_rs::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::JwkSet;
use serde::Serialize;
use serde_json::{Value, json};

use super::crypto::{CryptoError, Sealer};
use crate::{
    auth::jwks::{JwksCache, keys_from_set},
    store::{SigningKeyRecord, Store, StoreError, now_epoch},
};

/// How long a rotated-in key is published before it signs.
pub const ACTIVATION_DELAY_SECS: i64 = 60;
/// How often replicas re-read the key table.
pub const RELOAD_INTERVAL_SECS: u64 = 30;
pub(super) const SEALING_CONTEXT: &str = "signing_keys";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("signing key {kid} is unusable: {reason}")]
    Unusable { kid: String, reason: String },
    #[error("no signing key is available")]
    NoKey,
    #[error("cannot sign a token: {0}")]
    Sign(String),
}

/// Signing is the server's business: a failure is never the client's.
impl From<KeyError> for super::error::OAuthError {
    fn from(e: KeyError) -> Self {
        super::error::OAuthError::Server(e.to_string())
    }
}

/// The active key, parsed once: parsing a PKCS#8 key derives its public
/// point, which costs as much as a signature, and `jsonwebtoken` would do
/// that on every token.
struct Signer {
    kid: String,
    key: EcdsaKeyPair,
}

struct KeyState {
    signer: Option<Signer>,
    /// Public keys of every live key, as served at `/jwks.json`.
    jwks: Value,
}

/// The live signing keys of this process.
pub struct KeyRing {
    store: Store,
    sealer: Arc<Sealer>,
    state: ArcSwap<KeyState>,
    verification: Arc<JwksCache>,
    /// Which keys are live (activation, retirement) is read on this clock.
    clock: SharedClock,
}

/// A freshly generated key: the row to store.
fn generate(sealer: &Sealer, now: i64, activate_at: i64) -> Result<SigningKeyRecord, KeyError> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| KeyError::Crypto(CryptoError::Random))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|_| KeyError::Crypto(CryptoError::Random))?;
    let point = pair.public_key().as_ref();
    // Uncompressed SEC1 point: 0x04 || X || Y.
    if point.len() != 65 || point[0] != 4 {
        return Err(KeyError::Unusable {
            kid: String::new(),
            reason: "unexpected public key encoding".to_owned(),
        });
    }
    let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
    let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
    // RFC 7638 thumbprint as the key id.
    let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = super::crypto::sha256_b64(&thumbprint_input);
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"});
    Ok(SigningKeyRecord {
        private_sealed: sealer.seal(SEALING_CONTEXT, pkcs8.as_ref())?,
        public_jwk: jwk.to_string(),
        kid,
        alg: "ES256".to_owned(),
        created_at: now,
        activate_at,
        retire_at: None,
    })
}

/// Add a new key that starts signing after the activation delay, and
/// schedule the current ones to leave the key set once their tokens expired.
pub async fn rotate(
    store: &Store,
    sealer: &Sealer,
    token_lifetime_secs: i64,
) -> Result<String, KeyError> {
    rotate_at(store, sealer, token_lifetime_secs, now_epoch()).await
}

/// [`rotate`] as of `now` (tests pass a manual clock's reading).
pub async fn rotate_at(
    store: &Store,
    sealer: &Sealer,
    token_lifetime_secs: i64,
    now: i64,
) -> Result<String, KeyError> {
    let record = generate(sealer, now, now + ACTIVATION_DELAY_SECS)?;
    // Old keys sign until the new one activates, then their tokens live up to a lifetime.
    let retire_at = now + ACTIVATION_DELAY_SECS + token_lifetime_secs + 300;
    store.rotate_signing_key(&record, retire_at).await?;
    Ok(record.kid)
}

impl KeyRing {
    /// Load the keys, creating the first one if the store has none.
    pub async fn open(store: Store, sealer: Arc<Sealer>) -> Result<Arc<KeyRing>, KeyError> {
        KeyRing::open_on_clock(store, sealer, crate::clock::system()).await
    }

    /// [`KeyRing::open`] reading the time from `clock`.
    pub async fn open_on_clock(
        store: Store,
        sealer: Arc<Sealer>,
        clock: SharedClock,
    ) -> Result<Arc<KeyRing>, KeyError> {
        let now = clock.now();
        if store.live_signing_keys(now).await?.is_empty() {
            // Replicas starting at once on an empty database all get here;
            // the store lets exactly one of their keys in.
            let record = generate(&sealer, now, now)?;
            if store.insert_first_signing_key(&record, now).await? {
                tracing::info!(kid = %record.kid, "created the first token-signing key");
            }
        }
        let ring = Arc::new(KeyRing {
            store,
            sealer,
            state: ArcSwap::from_pointee(KeyState {
                signer: None,
                jwks: json!({"keys": []}),
            }),
            verification: JwksCache::preloaded(Vec::new()),
            clock,
        });
        ring.reload().await?;
        Ok(ring)
    }

    /// Re-read the key table (rotation by the CLI or another replica).
    pub async fn reload(&self) -> Result<(), KeyError> {
        let now = self.clock.now();
        let records = self.store.live_signing_keys(now).await?;
        let public: Vec<Value> = records
            .iter()
            .filter_map(|r| serde_json::from_str(&r.public_jwk).ok())
            .collect();
        let jwks = json!({ "keys": public });
        let set: JwkSet = serde_json::from_value(jwks.clone()).map_err(|e| KeyError::Unusable {
            kid: String::new(),
            reason: e.to_string(),
        })?;
        // The newest key already active signs; if none is active yet, the oldest.
        let signing_record = records
            .iter()
            .filter(|r| r.activate_at <= now)
            .max_by_key(|r| (r.activate_at, r.kid.clone()))
            .or_else(|| records.first())
            .ok_or(KeyError::NoKey)?;
        let current = self.state.load();
        let signer = match current.signer.as_ref() {
            Some(s) if s.kid == signing_record.kid => Signer {
                kid: s.kid.clone(),
                key: s.key.clone(),
            },
            _ => self.open_signer(signing_record)?,
        };
        self.verification.replace(keys_from_set(&set));
        self.state.store(Arc::new(KeyState {
            signer: Some(signer),
            jwks,
        }));
        Ok(())
    }

    fn open_signer(&self, record: &SigningKeyRecord) -> Result<Signer, KeyError> {
        let pkcs8 = self
            .sealer
            .open(SEALING_CONTEXT, &record.private_sealed)
            .map_err(|e| KeyError::Unusable {
                kid: record.kid.clone(),
                reason: e.to_string(),
            })?;
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).map_err(|e| {
                KeyError::Unusable {
                    kid: record.kid.clone(),
                    reason: e.to_string(),
                }
            })?;
        Ok(Signer {
            kid: record.kid.clone(),
            key,
        })
    }

    /// The verification keys, shared with the token verifier.
    pub fn verification_keys(&self) -> Arc<JwksCache> {
        self.verification.clone()
    }

    pub fn jwks(&self) -> Value {
        self.state.load().jwks.clone()
    }

    /// Sign `claims` as an `at+jwt` (RFC 9068) with the active key.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        self.sign_typed(claims, "at+jwt")
    }

    /// Sign `claims` with the active key under another `typ`, so a token
    /// meant for someone else can never pass as an access token here.
    pub fn sign_typed<T: Serialize>(&self, claims: &T, typ: &str) -> Result<String, KeyError> {
        let state = self.state.load();
        let signer = state.signer.as_ref().ok_or(KeyError::NoKey)?;
        // JWS compact serialization (RFC 7515 §7.1) with an ES256 signature:
        // the fixed-length R || S form RFC 7518 §3.4 asks for.
        let header = json!({"alg": "ES256", "typ": typ, "kid": signer.kid});
        let header = serde_json::to_vec(&header).map_err(|e| KeyError::Sign(e.to_string()))?;
        let claims = serde_json::to_vec(claims).map_err(|e| KeyError::Sign(e.to_string()))?;
        let mut jws = URL_SAFE_NO_PAD.encode(header);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut jws);
        let signature = signer
            .key
            .sign(&SystemRandom::new(), jws.as_bytes())
            .map_err(|e| KeyError::Sign(e.to_string()))?;
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jws);
        Ok(jws)
    }

    /// Reload every [`RELOAD_INTERVAL_SECS`] until `stop`.
    pub fn spawn_reload(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let ring = self.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(std::time::Duration::from_secs(RELOAD_INTERVAL_SECS));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = ring.reload().await {
                    tracing::warn!(error = %e, "cannot reload signing keys; keeping the current ones");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kid_of(token: &str) -> String {
        jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
    }

    #[tokio::test]
    async fn a_rotated_key_signs_only_after_the_activation_delay_on_the_rings_clock() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("keys.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let sealer = Arc::new(Sealer::new(&[7u8; 32]).unwrap());
        let clock = crate::clock::ManualClock::new();
        let ring = KeyRing::open_on_clock(store.clone(), sealer.clone(), clock.clone())
            .await
            .unwrap();
        let first = kid_of(&ring.sign(&json!({"sub": "x"})).unwrap());
        let now = crate::clock::Clock::now(clock.as_ref());
        let new = rotate_at(&store, &sealer, 3600, now).await.unwrap();
        assert_ne!(first, new);
        clock.advance(std::time::Duration::from_secs(
            ACTIVATION_DELAY_SECS as u64 - 1,
        ));
        ring.reload().await.unwrap();
        assert_eq!(kid_of(&ring.sign(&json!({"sub": "x"})).unwrap()), first);
        clock.advance(std::time::Duration::from_secs(1));
        ring.reload().await.unwrap();
        assert_eq!(kid_of(&ring.sign(&json!({"sub": "x"})).unwrap()), new);
    }
}
