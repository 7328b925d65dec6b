//! The address a request is counted under by per-address limits.
//!
//! Handlers never read the socket peer themselves: behind a reverse proxy
//! every request would share the proxy's address. The server layer puts the
//! effective address into the request's extensions; without it (a router
//! served without that layer, as in unit tests) the socket peer is used.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::request::Parts,
};

/// Where a request came from, as far as mcpgate can trust it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

impl ClientAddress {
    /// The key per-address limits count under. An IPv6 client usually holds
    /// a whole /64, so it is counted as one client; IPv4-mapped IPv6
    /// addresses count as their IPv4 address.
    pub fn limit_key(&self) -> String {
        match self.0 {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let s = v6.segments();
                    let prefix = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                    format!("{prefix}/64")
                }
            },
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(address) = parts.extensions.get::<ClientAddress>() {
            return Ok(*address);
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip())
            // Only a router driven without a socket (unit tests) lacks both.
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        Ok(ClientAddress(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let a = ClientAddress("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ClientAddress("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = ClientAddress("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a.limit_key(), b.limit_key());
        assert_ne!(a.limit_key(), c.limit_key());
        assert_eq!(a.limit_key(), "2001:db8:1:2::/64");
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let mapped = ClientAddress("::ffff:192.0.2.7".parse().unwrap());
        let plain = ClientAddress("192.0.2.7".parse().unwrap());
        assert_eq!(mapped.limit_key(), plain.limit_key());
    }
}
