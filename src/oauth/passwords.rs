//! Argon2id password hashes (PHC strings) for local users. Hashing is CPU
//! work by design, so callers on the async runtime use `spawn_blocking`.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};

use super::crypto::CryptoError;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("passwords must be 8 to 1024 characters")]
    Policy,
    #[error("cannot hash the password")]
    Hash,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

fn argon2() -> Argon2<'static> {
    // OWASP baseline: m = 19 MiB, t = 2, p = 1.
    let params = argon2::Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let length = password.chars().count();
    if !(8..=1024).contains(&length) {
        return Err(PasswordError::Policy);
    }
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| CryptoError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| PasswordError::Hash)?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hash)
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    if password.len() > 4096 {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(hash) => argon2().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, verified against when the user name is
/// unknown so that the answer takes the same time either way.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let password = super::crypto::random_token(24).unwrap_or_else(|_| "decoy-password".into());
        hash_password(&password).unwrap_or_default()
    })
}

/// A readable random password for the first admin.
pub fn generate_password() -> Result<String, CryptoError> {
    super::crypto::random_token(15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a hash"));
        assert!(hash_password("short").is_err());
    }
}
