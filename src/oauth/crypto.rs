//! Small cryptographic building blocks of the authorization server: random
//! tokens, hashes for storing secrets, constant-time comparison, and the
//! AES-256-GCM envelope for data at rest.

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the system random generator failed")]
    Random,
    #[error("the encryption key is invalid: {0}")]
    Key(String),
    #[error("sealed data cannot be opened (wrong key or corrupted)")]
    Open,
    /// What was sealed or opened is not the JSON expected: a bug or a
    /// corrupted row, never the client's doing.
    #[error("sealed data is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// A failure here is the server's, never the client's (`server_error`).
impl From<CryptoError> for super::error::OAuthError {
    fn from(e: CryptoError) -> Self {
        super::error::OAuthError::Server(e.to_string())
    }
}

/// `bytes` of CSPRNG output, base64url without padding.
pub fn random_token(bytes: usize) -> Result<String, CryptoError> {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| CryptoError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// SHA-256 of `text`, base64url: how tokens, codes and secrets are stored.
pub fn sha256_b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        text.as_bytes(),
    ))
}

/// Constant-time equality for secrets (in a leaf module, shared with `auth`).
pub use crate::constant_time::ct_eq;

/// The RFC 7636 S256 transform of a PKCE verifier.
pub fn pkce_s256(verifier: &str) -> String {
    sha256_b64(verifier)
}

/// The version tag every sealed value starts with.
const SEALED_VERSION: &str = "v1";

/// AES-256-GCM with random nonces. Sealed text is
/// `v1.<key id>.<base64url(nonce || ciphertext || tag)>`; the key id lets the
/// ring open data sealed under a previous key until it is re-sealed.
pub struct Sealer {
    key_id: String,
    key: RandomizedNonceKey,
    /// Keys that only open (`[auth.local] previous_encryption_keys`).
    previous: Vec<(String, RandomizedNonceKey)>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .field(
                "previous",
                &self.previous.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Sealer {
    pub fn new(key_bytes: &[u8]) -> Result<Sealer, CryptoError> {
        if key_bytes.len() != 32 {
            return Err(CryptoError::Key(format!(
                "expected 32 bytes, got {}",
                key_bytes.len()
            )));
        }
        let key = RandomizedNonceKey::new(&AES_256_GCM, key_bytes)
            .map_err(|_| CryptoError::Key("rejected by AES-256-GCM".to_owned()))?;
        // A public fingerprint of the key, not the key.
        let key_id = sha256_b64(&URL_SAFE_NO_PAD.encode(key_bytes))[..8].to_owned();
        Ok(Sealer {
            key_id,
            key,
            previous: Vec::new(),
        })
    }

    /// Also open data sealed under these older keys.
    pub fn with_previous(mut self, older: Vec<Sealer>) -> Sealer {
        for sealer in older {
            if sealer.key_id != self.key_id {
                self.previous.push((sealer.key_id, sealer.key));
            }
        }
        self
    }

    pub fn has_previous(&self) -> bool {
        !self.previous.is_empty()
    }

    /// The id of the key new data is sealed with.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// What every value sealed under the current key starts with
    /// (`v1.<key id>.`); a value without it needs re-sealing. The one place
    /// besides [`Sealer::seal`] and [`Sealer::open`] that knows the format.
    pub fn current_prefix(&self) -> String {
        format!("{SEALED_VERSION}.{}.", self.key_id)
    }

    /// Read a base64 key from `path`, or create one (mode 0600) if absent.
    pub fn from_key_file(path: &Path) -> Result<Sealer, CryptoError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_base64(text.trim()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                aws_lc_rs::rand::fill(&mut key).map_err(|_| CryptoError::Random)?;
                let text = URL_SAFE_NO_PAD.encode(key);
                write_private_file(path, &text).map_err(|e| {
                    CryptoError::Key(format!("cannot create {}: {}", path.display(), e.kind()))
                })?;
                // Another process may have won the race to create it: use theirs.
                let stored = std::fs::read_to_string(path).map_err(|e| {
                    CryptoError::Key(format!("cannot read {}: {}", path.display(), e.kind()))
                })?;
                Self::from_base64(stored.trim())
            }
            Err(e) => Err(CryptoError::Key(format!(
                "cannot read {}: {}",
                path.display(),
                e.kind()
            ))),
        }
    }

    pub fn from_base64(text: &str) -> Result<Sealer, CryptoError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
            .map_err(|_| CryptoError::Key("not base64".to_owned()))?;
        Sealer::new(&bytes)
    }

    /// Encrypt `plain`, binding it to `context` (e.g. the table it lives in).
    pub fn seal(&self, context: &str, plain: &[u8]) -> Result<String, CryptoError> {
        let mut in_out = plain.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(context.as_bytes()), &mut in_out)
            .map_err(|_| CryptoError::Random)?;
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&in_out);
        Ok(format!(
            "{}{}",
            self.current_prefix(),
            URL_SAFE_NO_PAD.encode(out)
        ))
    }

    /// Seal `value` as JSON (token responses, upstream secrets and tokens).
    pub fn seal_json<T: serde::Serialize>(
        &self,
        context: &str,
        value: &T,
    ) -> Result<String, CryptoError> {
        self.seal(context, &serde_json::to_vec(value)?)
    }

    /// Open what [`Sealer::seal_json`] sealed under `context`.
    pub fn open_json<T: serde::de::DeserializeOwned>(
        &self,
        context: &str,
        sealed: &str,
    ) -> Result<T, CryptoError> {
        Ok(serde_json::from_slice(&self.open(context, sealed)?)?)
    }

    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, CryptoError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(SEALED_VERSION), Some(key_id), Some(body)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(CryptoError::Open);
        };
        let key = if key_id == self.key_id {
            &self.key
        } else {
            match self.previous.iter().find(|(id, _)| id == key_id) {
                Some((_, key)) => key,
                None => return Err(CryptoError::Open),
            }
        };
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| CryptoError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(CryptoError::Open);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Open)?;
        let mut in_out = ciphertext.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out)
            .map_err(|_| CryptoError::Open)?;
        Ok(plain.to_vec())
    }
}

fn write_private_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => file.write_all(text.as_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_context_binding() {
        let sealer = Sealer::new(&[7u8; 32]).unwrap();
        let sealed = sealer.seal("keys", b"secret").unwrap();
        assert!(!sealed.contains("secret"));
        assert_eq!(sealer.open("keys", &sealed).unwrap(), b"secret");
        assert!(sealer.open("codes", &sealed).is_err());
        let other = Sealer::new(&[8u8; 32]).unwrap();
        assert!(other.open("keys", &sealed).is_err());
        // Two seals of the same text differ (random nonces).
        assert_ne!(sealed, sealer.seal("keys", b"secret").unwrap());
    }

    #[test]
    fn tampering_is_detected() {
        let sealer = Sealer::new(&[7u8; 32]).unwrap();
        let mut sealed = sealer.seal("x", b"hello world").unwrap();
        let last = sealed.pop().unwrap();
        sealed.push(if last == 'A' { 'B' } else { 'A' });
        assert!(sealer.open("x", &sealed).is_err());
    }

    #[test]
    fn key_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/mcpgate.key");
        let a = Sealer::from_key_file(&path).unwrap();
        let b = Sealer::from_key_file(&path).unwrap();
        let sealed = a.seal("c", b"x").unwrap();
        assert_eq!(b.open("c", &sealed).unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn pkce_matches_rfc7636_example() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
