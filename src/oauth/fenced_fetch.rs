//! The one way the authorization server fetches a URL a client chose: Client
//! ID Metadata Documents (`cimd`) and client key sets (`client_keys`).
//! Fetching attacker-chosen URLs from the server is an SSRF vector, so the
//! fetch is fenced: https only (loopback http with the development switch),
//! every resolved address must be public (loopback only with the switch),
//! the connection is pinned to the checked address, no redirects, a size
//! cap, a timeout, and only a few fetches in flight at once, shared by
//! every caller, so `/authorize` and `/token` cannot be used to make mcpgate
//! probe hosts at will.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use url::Url;

/// Outbound fetches in flight at once; more fail at once.
pub const MAX_CONCURRENT_FETCHES: usize = 8;

/// Is this address one a server-side fetch may reach?
pub fn is_public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT 100.64/10
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24
                || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking 198.18/15
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                is_public_address(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
            };
            // Forms that carry an IPv4 address are judged by it: mapped
            // ::ffff:0:0/96, IPv4-compatible ::/96 (also :: and ::1), 6to4 2002::/16.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_address(IpAddr::V4(v4));
            }
            if s[..6] == [0; 6] {
                return embedded(s[6], s[7]);
            }
            if s[0] == 0x2002 {
                return embedded(s[1], s[2]);
            }
            // Only global unicast 2000::/3. That leaves out ::ffff:0:0:0/96,
            // NAT64 64:ff9b::/96 and 64:ff9b:1::/48, discard 100::/64,
            // unique local fc00::/7, link local fe80::/10, site local
            // fec0::/10 and multicast, whatever a host routes there.
            (s[0] & 0xe000) == 0x2000
                // IETF protocol assignments 2001::/23 (Teredo 2001::/32, benchmarking, ORCHID).
                && !(s[0] == 0x2001 && s[1] < 0x0200)
                // Documentation 2001:db8::/32 and 3fff::/20.
                && !(s[0] == 0x2001 && s[1] == 0x0db8)
                && !(s[0] == 0x3fff && s[1] < 0x1000)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("not a fetchable URL: {0}")]
    BadUrl(&'static str),
    #[error("the host resolves to a non-public address")]
    ForbiddenAddress,
    #[error("redirects are not followed")]
    Redirect,
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("larger than {0} bytes")]
    TooLarge(usize),
    /// No answer (DNS, connection, timeout, broken body): one text for all,
    /// so the error does not tell an unreachable host from a slow one.
    #[error("no answer")]
    Unreachable,
    #[error("too many fetches in flight")]
    Busy,
    #[error("the HTTP client could not be set up")]
    Setup,
}

/// A fetched body and its `Cache-Control` header.
pub struct Fetched {
    pub body: Vec<u8>,
    pub cache_control: Option<String>,
}

/// What a `Cache-Control` header says about keeping an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// No header, or none of the directives below.
    Unspecified,
    /// `no-store`, `no-cache` or `max-age=0`.
    DoNotKeep,
    MaxAge(Duration),
}

impl Freshness {
    pub fn of(cache_control: Option<&str>) -> Freshness {
        let Some(cc) = cache_control else {
            return Freshness::Unspecified;
        };
        let directives: Vec<String> = cc
            .split(',')
            .map(|d| d.trim().to_ascii_lowercase())
            .collect();
        if directives
            .iter()
            .any(|d| d == "no-store" || d == "no-cache")
        {
            return Freshness::DoNotKeep;
        }
        match directives.iter().find_map(|d| {
            d.strip_prefix("max-age=")
                .and_then(|v| v.parse::<u64>().ok())
        }) {
            Some(0) => Freshness::DoNotKeep,
            Some(secs) => Freshness::MaxAge(Duration::from_secs(secs)),
            None => Freshness::Unspecified,
        }
    }
}

/// Cheap to clone; clones share the concurrency cap.
#[derive(Clone)]
pub struct FencedFetcher {
    allow_loopback_http: bool,
    timeout: Duration,
    permits: Arc<tokio::sync::Semaphore>,
}

impl FencedFetcher {
    pub fn new(allow_loopback_http: bool, timeout: Duration) -> FencedFetcher {
        FencedFetcher {
            allow_loopback_http,
            timeout,
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_FETCHES)),
        }
    }

    /// Replace the concurrency cap (tests).
    #[cfg(test)]
    pub fn with_max_concurrent(mut self, concurrent: usize) -> FencedFetcher {
        self.permits = Arc::new(tokio::sync::Semaphore::new(concurrent));
        self
    }

    pub fn allows_loopback_http(&self) -> bool {
        self.allow_loopback_http
    }

    /// https (or http on a loopback host with the development switch), no
    /// user information, no fragment.
    pub fn check_url(&self, text: &str) -> Result<Url, FetchError> {
        let url = Url::parse(text).map_err(|_| FetchError::BadUrl("not a URL"))?;
        let loopback_dev = self.allow_loopback_http
            && url.scheme() == "http"
            && url.host_str().is_some_and(super::clients::is_loopback_host);
        if url.scheme() != "https" && !loopback_dev {
            return Err(FetchError::BadUrl("must be https"));
        }
        if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::BadUrl(
                "no fragment or user information allowed",
            ));
        }
        Ok(url)
    }

    /// GET `url` (already through [`FencedFetcher::check_url`]): resolve,
    /// check every address, connect to the checked one only, read at most
    /// `max_bytes`. `what` names the thing in logs.
    pub async fn get(
        &self,
        url: &Url,
        max_bytes: usize,
        what: &'static str,
    ) -> Result<Fetched, FetchError> {
        // Over the cap the request fails now rather than queueing behind
        // slow hosts.
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            tracing::warn!(
                max = MAX_CONCURRENT_FETCHES,
                what,
                "outbound client fetches at their limit; request refused"
            );
            return Err(FetchError::Busy);
        };
        let host = url.host_str().ok_or(FetchError::BadUrl("no host"))?;
        let port = url.port_or_known_default().unwrap_or(443);
        let bare_host = host.trim_matches(['[', ']']);
        let addrs: Vec<SocketAddr> = match bare_host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                tokio::time::timeout(self.timeout, tokio::net::lookup_host((bare_host, port)))
                    .await
                    .map_err(|_| unreachable(url, what, "DNS timeout"))?
                    .map_err(|e| unreachable(url, what, &format!("DNS lookup failed: {e}")))?
                    .collect()
            }
        };
        if addrs.is_empty() {
            return Err(unreachable(url, what, "no address"));
        }
        let allowed =
            |ip: IpAddr| is_public_address(ip) || (self.allow_loopback_http && ip.is_loopback());
        // Any private answer fails the whole name (DNS rebinding tricks mix them).
        if addrs.iter().any(|a| !allowed(a.ip())) {
            return Err(FetchError::ForbiddenAddress);
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .resolve_to_addrs(bare_host, &addrs)
            .no_proxy()
            .build()
            .map_err(|_| FetchError::Setup)?;
        let mut response = client
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| {
                let why = if e.is_timeout() {
                    "timeout"
                } else {
                    "connection failed"
                };
                unreachable(url, what, why)
            })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(FetchError::Redirect);
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let cache_control = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| unreachable(url, what, "body read failed"))?
        {
            if body.len() + chunk.len() > max_bytes {
                return Err(FetchError::TooLarge(max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            body,
            cache_control,
        })
    }
}

/// The detail goes to the debug log only; see [`FetchError::Unreachable`].
fn unreachable(url: &Url, what: &'static str, why: &str) -> FetchError {
    tracing::debug!(%url, what, reason = why, "client-chosen URL not fetched");
    FetchError::Unreachable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_directives() {
        assert_eq!(Freshness::of(None), Freshness::Unspecified);
        assert_eq!(Freshness::of(Some("public")), Freshness::Unspecified);
        assert_eq!(Freshness::of(Some("no-store")), Freshness::DoNotKeep);
        assert_eq!(Freshness::of(Some("max-age=0")), Freshness::DoNotKeep);
        assert_eq!(
            Freshness::of(Some("public, Max-Age=60")),
            Freshness::MaxAge(Duration::from_secs(60))
        );
    }

    #[test]
    fn urls_need_https_unless_loopback_development() {
        let strict = FencedFetcher::new(false, Duration::from_secs(1));
        let dev = FencedFetcher::new(true, Duration::from_secs(1));
        assert!(strict.check_url("https://a.example/k.json").is_ok());
        assert!(strict.check_url("http://127.0.0.1:9/k.json").is_err());
        assert!(dev.check_url("http://127.0.0.1:9/k.json").is_ok());
        assert!(dev.check_url("http://a.example/k.json").is_err());
        assert!(dev.check_url("https://u:p@a.example/k.json").is_err());
    }
}
