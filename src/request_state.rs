//! A 2026-07-28 `requestState` mcpgate mints: sealed (AES-GCM, the store's
//! sealing keys) so a client can neither read nor change it, bound to what
//! it was issued for, and expiring.
//!
//! The client echoes the value back verbatim, so it is untrusted input
//! (SEP-2322). [`RequestStateCodec::open`] rejects it unless it opens under
//! one of mcpgate's keys, every part of the [`Binding`] the retry presents
//! equals the sealed one (the error names the first that differs: a state
//! issued to another user or for another tool), and it has not expired.
//! What the payload means is the caller's business.

use std::sync::Arc;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::oauth::crypto::{CryptoError, Sealer};

/// The sealing context: a value sealed for anything else never opens here.
const CONTEXT: &str = "mcpgate.request-state.v1";

/// What a state is bound to, as named parts (`subject`, `issuer`, `tool`,
/// ...): the retry must present the same parts, in the same order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding(Vec<(String, String)>);

impl Binding {
    pub fn new() -> Self {
        Binding::default()
    }

    pub fn with(mut self, part: &str, value: impl Into<String>) -> Self {
        self.0.push((part.to_owned(), value.into()));
        self
    }

    /// The first part where `presented` differs from `self`.
    fn differs(&self, presented: &Binding) -> Option<String> {
        if self.0.len() != presented.0.len() {
            return Some("shape".to_owned());
        }
        self.0
            .iter()
            .zip(&presented.0)
            .find(|(sealed, given)| {
                sealed.0 != given.0 || !crate::constant_time::ct_eq(&sealed.1, &given.1)
            })
            .map(|(sealed, _)| sealed.0.clone())
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<P> {
    binding: Binding,
    expires_at: i64,
    payload: P,
}

/// Why a presented `requestState` was refused (JSON-RPC -32602 at the edge).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestStateError {
    #[error("requestState was not issued by this gateway or was altered")]
    Tampered,
    #[error("requestState was issued for another {0}")]
    Mismatch(String),
    #[error("requestState has expired; start the request again")]
    Expired,
    #[error("requestState could not be sealed: {0}")]
    Seal(String),
}

impl From<CryptoError> for RequestStateError {
    fn from(e: CryptoError) -> Self {
        RequestStateError::Seal(e.to_string())
    }
}

/// Seals and opens `requestState` values.
#[derive(Clone)]
pub struct RequestStateCodec {
    sealer: Arc<Sealer>,
}

impl RequestStateCodec {
    pub fn new(sealer: Arc<Sealer>) -> Self {
        RequestStateCodec { sealer }
    }

    /// A codec with a fresh random key, for deployments without a sealing
    /// key (`auth.mode = "none"`): its states open only in this process.
    pub fn ephemeral() -> Result<Self, RequestStateError> {
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| CryptoError::Random)?;
        Ok(RequestStateCodec::new(Arc::new(Sealer::new(&key)?)))
    }

    pub fn seal<P: Serialize>(
        &self,
        binding: &Binding,
        payload: &P,
        expires_at: i64,
    ) -> Result<String, RequestStateError> {
        let envelope = Envelope {
            binding: binding.clone(),
            expires_at,
            payload,
        };
        Ok(self.sealer.seal_json(CONTEXT, &envelope)?)
    }

    /// The payload of `sealed`, if it is ours, unaltered, bound to
    /// `binding` and unexpired at `now` (seconds).
    pub fn open<P: DeserializeOwned>(
        &self,
        sealed: &str,
        binding: &Binding,
        now: i64,
    ) -> Result<P, RequestStateError> {
        let envelope: Envelope<P> = self
            .sealer
            .open_json(CONTEXT, sealed)
            .map_err(|_| RequestStateError::Tampered)?;
        if let Some(part) = envelope.binding.differs(binding) {
            return Err(RequestStateError::Mismatch(part));
        }
        if envelope.expires_at <= now {
            return Err(RequestStateError::Expired);
        }
        Ok(envelope.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(key: u8) -> RequestStateCodec {
        RequestStateCodec::new(Arc::new(Sealer::new(&[key; 32]).unwrap()))
    }

    fn alice(tool: &str) -> Binding {
        Binding::new()
            .with("subject", "alice")
            .with("issuer", "https://idp")
            .with("tool", tool)
    }

    #[test]
    fn a_state_opens_for_its_binding_until_it_expires() {
        let c = codec(1);
        let sealed = c.seal(&alice("fx__sampling"), &"handle-1", 1_000).unwrap();
        let opened: String = c.open(&sealed, &alice("fx__sampling"), 999).unwrap();
        assert_eq!(opened, "handle-1");
        assert_eq!(
            c.open::<String>(&sealed, &alice("fx__sampling"), 1_000),
            Err(RequestStateError::Expired)
        );
        // Not readable by the client.
        assert!(!sealed.contains("alice") && !sealed.contains("handle"));
    }

    #[test]
    fn another_user_or_tool_is_named_as_the_cause() {
        let c = codec(1);
        let sealed = c.seal(&alice("t"), &1u64, 1_000).unwrap();
        let bob = Binding::new()
            .with("subject", "bob")
            .with("issuer", "https://idp")
            .with("tool", "t");
        assert_eq!(
            c.open::<u64>(&sealed, &bob, 0),
            Err(RequestStateError::Mismatch("subject".to_owned()))
        );
        let other_issuer = Binding::new()
            .with("subject", "alice")
            .with("issuer", "https://evil")
            .with("tool", "t");
        assert_eq!(
            c.open::<u64>(&sealed, &other_issuer, 0),
            Err(RequestStateError::Mismatch("issuer".to_owned()))
        );
        assert_eq!(
            c.open::<u64>(&sealed, &alice("u"), 0),
            Err(RequestStateError::Mismatch("tool".to_owned()))
        );
    }

    #[test]
    fn a_tampered_or_foreign_state_never_opens() {
        let c = codec(1);
        let sealed = c.seal(&alice("t"), &1u64, 1_000).unwrap();
        // Every single-character change in the body is caught.
        let prefix = sealed.rfind('.').unwrap() + 1;
        for i in prefix..sealed.len() {
            let mut bytes = sealed.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(bytes).unwrap();
            if altered == sealed {
                continue;
            }
            assert_eq!(
                c.open::<u64>(&altered, &alice("t"), 0),
                Err(RequestStateError::Tampered),
                "{i}"
            );
        }
        // Another key (another deployment), or garbage.
        assert_eq!(
            codec(2).open::<u64>(&sealed, &alice("t"), 0),
            Err(RequestStateError::Tampered)
        );
        assert_eq!(
            c.open::<u64>("v1.x.AAAA", &alice("t"), 0),
            Err(RequestStateError::Tampered)
        );
        // Sealed by the same key for another purpose.
        let other = Sealer::new(&[1; 32]).unwrap().seal("other", b"{}").unwrap();
        assert_eq!(
            c.open::<u64>(&other, &alice("t"), 0),
            Err(RequestStateError::Tampered)
        );
    }

    #[test]
    fn ephemeral_codecs_do_not_open_each_others_states() {
        let (a, b) = (
            RequestStateCodec::ephemeral().unwrap(),
            RequestStateCodec::ephemeral().unwrap(),
        );
        let sealed = a.seal(&alice("t"), &1u64, 10).unwrap();
        assert_eq!(a.open::<u64>(&sealed, &alice("t"), 0), Ok(1));
        assert_eq!(
            b.open::<u64>(&sealed, &alice("t"), 0),
            Err(RequestStateError::Tampered)
        );
    }
}
