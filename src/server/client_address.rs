//! The address a request is counted under by per-address limits.
//!
//! Handlers never read the socket peer themselves: behind a reverse proxy
//! every request would share the proxy's address. The server layer puts the
//! effective address into the request's extensions; without it (a router
//! served without that layer, as in unit tests) the socket peer is used.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, request::Parts},
};
use ipnet::IpNet;

use super::settings::ForwardedHeader;

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

/// The address a request is counted under: the socket peer, unless the peer
/// is a trusted proxy. Then the forwarding header is walked from the right
/// (the hop the nearest proxy saw), skipping further trusted proxies, and the
/// first untrusted hop is the client. Anything malformed or unknown in that
/// walk gives the peer: a header the client wrote itself must never pick
/// its own key.
pub fn resolve(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: ForwardedHeader,
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = match header {
        ForwardedHeader::XForwardedFor => forwarded_for_hops(headers),
        ForwardedHeader::Forwarded => forwarded_hops(headers),
    };
    let Some(hops) = hops else {
        return peer;
    };
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if is_trusted(ip) => continue,
            Some(ip) => return canonical(*ip),
            None => return peer,
        }
    }
    // Every hop was a trusted proxy: the left-most one is the client.
    hops.first().copied().flatten().map_or(peer, canonical)
}

/// IPv4-mapped IPv6 addresses as IPv4, so `10.0.0.0/8` matches `::ffff:10.1.2.3`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Every `X-Forwarded-For` value in order, one entry per hop (`None` for a
/// hop that is not an address). `None` when the header is absent or not text.
fn forwarded_for_hops(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let text = value.to_str().ok()?;
        for item in text.split(',') {
            hops.push(parse_node(item.trim()));
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// The `for=` parameter of every RFC 7239 `Forwarded` element, in order.
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    for value in headers.get_all("forwarded") {
        let text = value.to_str().ok()?;
        for element in split_outside_quotes(text, ',') {
            let mut node = None;
            for pair in split_outside_quotes(element, ';') {
                let (key, value) = pair.split_once('=')?;
                if key.trim().eq_ignore_ascii_case("for") {
                    let value = value.trim();
                    let value = match value.strip_prefix('"') {
                        Some(rest) => rest.strip_suffix('"')?,
                        None => value,
                    };
                    node = Some(parse_node(value));
                }
            }
            // An element without `for=` tells nothing about the client.
            hops.push(node.flatten());
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// Split on `sep` except inside double quotes.
fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A node as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`. `unknown`, obfuscated names and
/// anything else: `None`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
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

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn xff(peer: &str, trusted: &[&str], pairs: &[(&str, &str)]) -> String {
        resolve(
            peer.parse().unwrap(),
            &headers(pairs),
            &nets(trusted),
            ForwardedHeader::XForwardedFor,
        )
        .to_string()
    }

    fn fwd(peer: &str, trusted: &[&str], pairs: &[(&str, &str)]) -> String {
        resolve(
            peer.parse().unwrap(),
            &headers(pairs),
            &nets(trusted),
            ForwardedHeader::Forwarded,
        )
        .to_string()
    }

    #[test]
    fn a_spoofed_header_from_an_untrusted_peer_is_ignored() {
        let spoof = [("x-forwarded-for", "198.51.100.1")];
        assert_eq!(xff("203.0.113.9", &[], &spoof), "203.0.113.9");
        assert_eq!(xff("203.0.113.9", &["10.0.0.0/8"], &spoof), "203.0.113.9");
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        // The client prepended a fake hop; the proxy appended what it saw.
        let h = [("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.2")];
        assert_eq!(xff("10.0.0.1", &["10.0.0.0/8"], &h), "203.0.113.9");
        // Several header lines are one list, in order.
        let h = [
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9"),
        ];
        assert_eq!(xff("10.0.0.1", &["10.0.0.0/8"], &h), "203.0.113.9");
        // Ports and brackets as some proxies write them.
        let h = [("x-forwarded-for", "[2001:db8::7]:4711")];
        assert_eq!(xff("10.0.0.1", &["10.0.0.0/8"], &h), "2001:db8::7");
        let h = [("x-forwarded-for", "203.0.113.9:5555")];
        assert_eq!(xff("10.0.0.1", &["10.0.0.0/8"], &h), "203.0.113.9");
    }

    #[test]
    fn malformed_or_missing_headers_give_the_peer() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(xff("10.0.0.1", &trusted, &[]), "10.0.0.1");
        for bad in ["", "garbage", "203.0.113.9, unknown", "1.1.1.1, 300.1.1.1"] {
            assert_eq!(
                xff("10.0.0.1", &trusted, &[("x-forwarded-for", bad)]),
                "10.0.0.1",
                "{bad:?}"
            );
        }
        // A garbage hop left of the first untrusted one does not matter.
        let h = [("x-forwarded-for", "garbage, 203.0.113.9")];
        assert_eq!(xff("10.0.0.1", &trusted, &h), "203.0.113.9");
    }

    #[test]
    fn only_the_configured_header_counts() {
        let h = [("forwarded", "for=198.51.100.1")];
        assert_eq!(xff("10.0.0.1", &["10.0.0.0/8"], &h), "10.0.0.1");
        let h = [("x-forwarded-for", "198.51.100.1")];
        assert_eq!(fwd("10.0.0.1", &["10.0.0.0/8"], &h), "10.0.0.1");
    }

    #[test]
    fn rfc7239_forwarded_is_parsed() {
        let trusted = ["10.0.0.0/8"];
        let h = [(
            "forwarded",
            r#"for=1.1.1.1, for="[2001:db8:cafe::17]:4711";proto=https;by=10.0.0.2"#,
        )];
        assert_eq!(fwd("10.0.0.1", &trusted, &h), "2001:db8:cafe::17");
        let h = [("forwarded", "For=203.0.113.9;proto=http, for=10.0.0.3")];
        assert_eq!(fwd("10.0.0.1", &trusted, &h), "203.0.113.9");
        for bad in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=\"203.0.113.9",
            "for",
        ] {
            assert_eq!(
                fwd("10.0.0.1", &trusted, &[("forwarded", bad)]),
                "10.0.0.1",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn mapped_peers_match_ipv4_networks() {
        let h = [("x-forwarded-for", "203.0.113.9")];
        assert_eq!(xff("::ffff:10.0.0.1", &["10.0.0.0/8"], &h), "203.0.113.9");
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let mapped = ClientAddress("::ffff:192.0.2.7".parse().unwrap());
        let plain = ClientAddress("192.0.2.7".parse().unwrap());
        assert_eq!(mapped.limit_key(), plain.limit_key());
    }
}
