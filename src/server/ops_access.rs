//! Who may read `/metrics` and the `/readyz` detail (upstream names and
//! states, store backend): holders of `[server] metrics_token`, and clients
//! in `[server] ops_allow`. With neither configured, anyone.

use axum::http::{HeaderMap, header};
use ipnet::IpNet;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::{ClientAddress, settings::OpsAccessConfig};

#[derive(Debug, Default)]
pub struct OpsAccess {
    /// SHA-256 of the token: compared in constant time, never kept in clear.
    token_hash: Option<Vec<u8>>,
    allow: Vec<IpNet>,
}

fn sha256(text: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text)
        .as_ref()
        .to_vec()
}

impl OpsAccess {
    pub fn new(config: &OpsAccessConfig) -> Self {
        OpsAccess {
            token_hash: config
                .token
                .as_ref()
                .map(|t| sha256(t.expose_secret().as_bytes())),
            allow: config.allow.clone(),
        }
    }

    /// True when anything restricts access.
    pub fn is_restricted(&self) -> bool {
        self.token_hash.is_some() || !self.allow.is_empty()
    }

    /// True when a token is configured (a refusal then asks for it).
    pub fn wants_token(&self) -> bool {
        self.token_hash.is_some()
    }

    pub fn permits(&self, headers: &HeaderMap, client: ClientAddress) -> bool {
        if !self.is_restricted() {
            return true;
        }
        if self.allow.iter().any(|net| net.contains(&client.0)) {
            return true;
        }
        let Some(expected) = &self.token_hash else {
            return false;
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        match presented {
            Some(token) => bool::from(sha256(token.as_bytes()).ct_eq(expected)),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn access(token: Option<&str>, allow: &[&str]) -> OpsAccess {
        OpsAccess::new(&OpsAccessConfig {
            token: token.map(|t| SecretString::from(t.to_owned())),
            allow: allow.iter().map(|n| n.parse().unwrap()).collect(),
        })
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    fn from(ip: &str) -> ClientAddress {
        ClientAddress(ip.parse().unwrap())
    }

    #[test]
    fn unrestricted_by_default() {
        assert!(access(None, &[]).permits(&HeaderMap::new(), from("203.0.113.9")));
    }

    #[test]
    fn the_token_or_an_allowed_address_opens() {
        let a = access(Some("0123456789abcdef"), &["10.0.0.0/8"]);
        assert!(!a.permits(&HeaderMap::new(), from("203.0.113.9")));
        assert!(!a.permits(&bearer("Bearer wrong-token-xxxxxx"), from("203.0.113.9")));
        assert!(!a.permits(&bearer("Basic 0123456789abcdef"), from("203.0.113.9")));
        assert!(a.permits(&bearer("Bearer 0123456789abcdef"), from("203.0.113.9")));
        assert!(a.permits(&bearer("bearer 0123456789abcdef"), from("203.0.113.9")));
        assert!(a.permits(&HeaderMap::new(), from("10.2.3.4")));
    }

    #[test]
    fn an_allow_list_alone_wants_no_token() {
        let a = access(None, &["127.0.0.1/32"]);
        assert!(!a.wants_token());
        assert!(a.permits(&HeaderMap::new(), from("127.0.0.1")));
        assert!(!a.permits(&bearer("Bearer anything"), from("127.0.0.2")));
    }
}
