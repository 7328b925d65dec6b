//! `[server]`: connection limits and timeouts, the reverse proxies whose
//! forwarding headers are believed, and who may read the operations
//! endpoints. The raw TOML shape, its validation into [`ServerConfig`];
//! `config` collects the errors.

use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Seconds a connection has to send a complete request head. Default 30.
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a request has to send its whole body. Default 30.
    pub body_read_timeout_secs: Option<u64>,
    /// Seconds a non-streaming request may take until its response. Default 60.
    pub request_timeout_secs: Option<u64>,
    /// Seconds a connection without a request in progress is kept. Default 60.
    pub keep_alive_idle_secs: Option<u64>,
    /// Connections served at once. Default 4096.
    pub max_connections: Option<usize>,
    /// CIDRs of reverse proxies whose forwarding header names the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `x-forwarded-for` (default) or `forwarded` (RFC 7239).
    pub client_address_header: Option<String>,
    /// Bearer token that opens `/metrics` and the `/readyz` detail.
    pub metrics_token: Option<String>,
    pub metrics_token_file: Option<std::path::PathBuf>,
    /// CIDRs that may read `/metrics` and the `/readyz` detail without a token.
    #[serde(default)]
    pub ops_allow: Vec<String>,
}

/// Which header a trusted proxy names the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    XForwardedFor,
    Forwarded,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    #[serde(rename = "header_read_timeout_secs", serialize_with = "as_secs")]
    pub header_read_timeout: Duration,
    #[serde(rename = "body_read_timeout_secs", serialize_with = "as_secs")]
    pub body_read_timeout: Duration,
    #[serde(rename = "request_timeout_secs", serialize_with = "as_secs")]
    pub request_timeout: Duration,
    #[serde(rename = "keep_alive_idle_secs", serialize_with = "as_secs")]
    pub keep_alive_idle: Duration,
    pub max_connections: usize,
    pub trusted_proxies: Vec<IpNet>,
    pub client_address_header: ForwardedHeader,
    #[serde(flatten)]
    pub ops: OpsAccessConfig,
}

/// Who may read `/metrics` and the `/readyz` detail. Both empty: anyone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpsAccessConfig {
    #[serde(rename = "metrics_token", serialize_with = "serialize_secret_set")]
    pub token: Option<SecretString>,
    #[serde(rename = "ops_allow")]
    pub allow: Vec<IpNet>,
}

/// Durations print as the seconds they were configured in.
fn as_secs<S: serde::Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(value.as_secs())
}

fn serialize_secret_set<S: serde::Serializer>(
    value: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => serializer.serialize_str("[redacted]"),
        None => serializer.serialize_none(),
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        validate(&RawServer::default(), &mut Vec::new())
    }
}

/// A seconds setting within `range`, or its default after recording an error.
fn seconds(
    key: &str,
    value: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    errors: &mut Vec<String>,
) -> Duration {
    let secs = value.unwrap_or(default);
    if !range.contains(&secs) {
        errors.push(format!(
            "server.{key}: {secs} must be between {} and {}",
            range.start(),
            range.end()
        ));
        return Duration::from_secs(default);
    }
    Duration::from_secs(secs)
}

fn cidrs(key: &str, raw: &[String], errors: &mut Vec<String>) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for text in raw {
        // A bare address is a one-address network.
        let parsed = text.parse::<IpNet>().or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(IpNet::from)
                .map_err(|_| ())
        });
        match parsed {
            Ok(net) => nets.push(net.trunc()),
            Err(()) => errors.push(format!(
                "server.{key}: {text:?} is not an address or CIDR like 10.0.0.0/8 or fd00::/8"
            )),
        }
    }
    nets
}

pub fn validate(raw: &RawServer, errors: &mut Vec<String>) -> ServerConfig {
    let header_read_timeout = seconds(
        "header_read_timeout_secs",
        raw.header_read_timeout_secs,
        30,
        1..=3600,
        errors,
    );
    let body_read_timeout = seconds(
        "body_read_timeout_secs",
        raw.body_read_timeout_secs,
        30,
        1..=3600,
        errors,
    );
    let request_timeout = seconds(
        "request_timeout_secs",
        raw.request_timeout_secs,
        60,
        1..=3600,
        errors,
    );
    let keep_alive_idle = seconds(
        "keep_alive_idle_secs",
        raw.keep_alive_idle_secs,
        60,
        1..=3600,
        errors,
    );
    let max_connections = raw.max_connections.unwrap_or(4096);
    if !(1..=1_000_000).contains(&max_connections) {
        errors.push(format!(
            "server.max_connections: {max_connections} must be between 1 and 1000000"
        ));
    }
    let trusted_proxies = cidrs("trusted_proxies", &raw.trusted_proxies, errors);
    let client_address_header = match raw.client_address_header.as_deref() {
        None | Some("x-forwarded-for") => ForwardedHeader::XForwardedFor,
        Some("forwarded") => ForwardedHeader::Forwarded,
        Some(other) => {
            errors.push(format!(
                "server.client_address_header: {other:?} must be \"x-forwarded-for\" or \"forwarded\""
            ));
            ForwardedHeader::XForwardedFor
        }
    };
    let token = match (&raw.metrics_token, &raw.metrics_token_file) {
        (Some(_), Some(_)) => {
            errors.push("server: set at most one of metrics_token, metrics_token_file".to_owned());
            None
        }
        (Some(token), None) => Some(token.clone()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(e) => {
                errors.push(format!(
                    "server.metrics_token_file: cannot read {}: {}",
                    path.display(),
                    e.kind()
                ));
                None
            }
        },
        (None, None) => None,
    };
    if let Some(token) = &token
        && token.len() < 16
    {
        errors.push("server.metrics_token: at least 16 characters".to_owned());
    }
    ServerConfig {
        header_read_timeout,
        body_read_timeout,
        request_timeout,
        keep_alive_idle,
        max_connections: max_connections.clamp(1, 1_000_000),
        trusted_proxies,
        client_address_header,
        ops: OpsAccessConfig {
            token: token.map(SecretString::from),
            allow: cidrs("ops_allow", &raw.ops_allow, errors),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let mut errors = Vec::new();
        let config = validate(&RawServer::default(), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(config.header_read_timeout, Duration::from_secs(30));
        assert_eq!(config.max_connections, 4096);
        assert!(config.trusted_proxies.is_empty());
        assert_eq!(config.client_address_header, ForwardedHeader::XForwardedFor);
    }

    #[test]
    fn every_problem_is_reported() {
        let raw = RawServer {
            header_read_timeout_secs: Some(0),
            max_connections: Some(0),
            trusted_proxies: vec!["10.0.0.0/33".into(), "proxy.example".into()],
            client_address_header: Some("x-real-ip".into()),
            metrics_token: Some("short".into()),
            ops_allow: vec!["nope".into()],
            ..RawServer::default()
        };
        let mut errors = Vec::new();
        validate(&raw, &mut errors);
        assert_eq!(errors.len(), 7, "{errors:?}");
    }

    #[test]
    fn bare_addresses_and_host_bits_are_accepted() {
        let raw = RawServer {
            trusted_proxies: vec!["10.1.2.3".into(), "192.168.7.9/16".into(), "::1".into()],
            ..RawServer::default()
        };
        let mut errors = Vec::new();
        let config = validate(&raw, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let shown: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["10.1.2.3/32", "192.168.0.0/16", "::1/128"]);
    }
}
