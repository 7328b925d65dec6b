//! Constant-time comparison of secrets (tokens, hashes, nonces). A leaf:
//! the token verifier (`auth`) and the authorization servers (`oauth`,
//! `bridge`) both need it, and neither should import the other for it.

/// Constant-time equality for secrets; only the length may leak.
pub fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::ct_eq;

    #[test]
    fn equal_only_when_every_byte_is() {
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert!(!ct_eq("abc", "abcd"));
    }
}
