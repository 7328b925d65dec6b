//! Helpers every settings validator shares. A leaf: it imports nothing from
//! the crate, so `config` and the subsystems' `settings.rs` can all use it
//! without import cycles.
//!
//! Validators never stop at the first problem: each pushes a line
//! (`key: what is wrong`) onto the list `config` collects, so an operator
//! sees every problem of a file at once.

use std::path::Path;

use url::Url;

/// Exactly one of an inline secret (`<section>.<key>`) and a file holding
/// it (`<section>.<key>_file`, trimmed).
pub fn read_secret(
    section: &str,
    key: &str,
    inline: Option<&str>,
    file: Option<&Path>,
    errors: &mut Vec<String>,
) -> Option<String> {
    if inline.is_some() == file.is_some() {
        errors.push(format!("{section}: set exactly one of {key}, {key}_file"));
        return None;
    }
    read_inline_or_file(section, key, inline, file, errors)
}

/// At most one of an inline value (`<section>.<key>`) and a file holding it
/// (`<section>.<key>_file`, trimmed). `None` when neither is set, and when
/// a problem was reported.
pub fn read_inline_or_file(
    section: &str,
    key: &str,
    inline: Option<&str>,
    file: Option<&Path>,
    errors: &mut Vec<String>,
) -> Option<String> {
    match (inline, file) {
        (Some(s), None) => Some(s.to_owned()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(s) => Some(s.trim().to_owned()),
            Err(e) => {
                errors.push(format!(
                    "{section}.{key}_file: cannot read {}: {}",
                    path.display(),
                    e.kind()
                ));
                None
            }
        },
        (None, None) => None,
        (Some(_), Some(_)) => {
            errors.push(format!("{section}: set at most one of {key}, {key}_file"));
            None
        }
    }
}

/// A URL mcpgate fetches from configuration: https, or http on a loopback
/// host (development).
pub fn is_https_or_loopback_http(text: &str) -> bool {
    Url::parse(text).is_ok_and(|u| {
        u.scheme() == "https"
            || (u.scheme() == "http" && u.host_str().is_some_and(is_loopback_host))
    })
}

/// `value` (or `default`), reported under `key` unless within `min..=max`.
pub fn bounded(
    key: &str,
    value: Option<u64>,
    default: u64,
    (min, max): (u64, u64),
    errors: &mut Vec<String>,
) -> u64 {
    let v = value.unwrap_or(default);
    if !(min..=max).contains(&v) {
        errors.push(format!("{key}: {v} must be between {min} and {max}"));
    }
    v
}

/// OAuth endpoints mcpgate serves must be HTTPS except for loopback development.
pub fn require_https(public_url: &Url, errors: &mut Vec<String>) {
    if public_url.scheme() == "http" && !public_url.host_str().is_some_and(is_loopback_host) {
        errors.push(format!(
            "public_url: {:?} must be https when mcpgate serves OAuth endpoints (http only on loopback)",
            public_url.as_str()
        ));
    }
}

/// An issuer mcpgate talks to: https, or http on loopback (development).
pub fn check_issuer_url(key: &str, issuer: &str, errors: &mut Vec<String>) {
    match Url::parse(issuer) {
        Ok(u) if u.scheme() == "https" || u.host_str().is_some_and(is_loopback_host) => {}
        _ => errors.push(format!(
            "{key}: {issuer:?} must be an https URL (http only on loopback)"
        )),
    }
}

/// Is `host` (a URL's host, IPv6 with or without brackets) this machine:
/// `localhost`, an address in 127.0.0.0/8, or `::1`? The one definition of
/// "loopback", for settings (`public_url`, issuers) and for redirect URIs
/// and document URLs (`oauth::clients`).
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Serde helper for `check-config`: a secret prints as `***`.
pub fn redacted<S: serde::Serializer>(_: &secrecy::SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("***")
}

/// [`redacted`] for an optional secret: `***` when set, `null` when not.
pub fn redacted_option<S: serde::Serializer>(
    secret: &Option<secrecy::SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_str("***"),
        None => s.serialize_none(),
    }
}

/// [`redacted`] for a list: as many `***` as there are secrets.
pub fn redacted_list<S: serde::Serializer>(
    secrets: &[secrecy::SecretString],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(secrets.len()))?;
    for _ in secrets {
        seq.serialize_element("***")?;
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_localhost_or_a_loopback_ip() {
        for host in ["localhost", "127.0.0.1", "127.0.0.2", "[::1]", "::1"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["example.com", "10.0.0.1", "localhost.example.com"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn bounded_reports_out_of_range_values_under_their_key() {
        let mut errors = Vec::new();
        assert_eq!(bounded("a.b", None, 5, (1, 10), &mut errors), 5);
        assert_eq!(bounded("a.b", Some(11), 5, (1, 10), &mut errors), 11);
        assert_eq!(errors, vec!["a.b: 11 must be between 1 and 10".to_owned()]);
    }
}
