//! What every authorization-server front (local, proxy, bridge) answers
//! the same way: `no-store` on token-bearing answers, 303 redirects, OAuth
//! error bodies, form parameters that appear once, and browser cookies.
//! Pages and their security headers are [`crate::branding::Site::respond`].

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::error::OAuthErrorCode;
use crate::funnel::reasons::Reason;

/// RFC 6749 §5.1: answers that carry or refuse credentials are not cached.
pub fn no_store(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// A redirect the browser follows with GET whatever the method was
/// (RFC 9110 §15.4.4): 303 everywhere, so a POSTed form never re-posts.
pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    no_store(response)
}

/// An RFC 6749 §5.2 error body with `status`: `error_description` is the
/// specific cause (`detail`) and the reason's fix in one sentence, and
/// `error_uri` the reason's section of `{base}/errors`. The reason is logged
/// beside it, so the log line, the funnel and the body agree.
pub fn error_json(
    status: StatusCode,
    code: OAuthErrorCode,
    reason: Reason,
    detail: &str,
    base: &str,
) -> Response {
    tracing::info!(
        status = status.as_u16(),
        error = code.as_str(),
        reason = reason.code(),
        detail,
        "oauth request refused"
    );
    no_store(
        (
            status,
            Json(json!({
                "error": code.as_str(),
                "error_description": reason.describe(detail),
                "error_uri": reason.error_uri(base),
            })),
        )
            .into_response(),
    )
}

/// The largest `/register` body read, on every front. Registration is
/// anonymous and stored for weeks: a metadata document is a few hundred
/// bytes, and every field has its own cap besides.
pub const MAX_REGISTRATION_BYTES: usize = 16 * 1024;

/// A parameter sent twice (RFC 6749 §3.1: "MUST NOT be included more than once").
#[derive(Debug, thiserror::Error)]
#[error("the parameter {0} appears more than once")]
pub struct RepeatedParameter(pub String);

/// `application/x-www-form-urlencoded` pairs (a body or a query), each name once.
pub fn form_pairs(encoded: &[u8]) -> Result<Vec<(String, String)>, RepeatedParameter> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(encoded).into_owned().collect();
    let mut seen = std::collections::HashSet::new();
    for (k, _) in &pairs {
        if !seen.insert(k.as_str()) {
            return Err(RepeatedParameter(k.clone()));
        }
    }
    Ok(pairs)
}

/// The first non-empty value of `name`.
pub fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// A cookie the authorization server sets in the browser. On https it is a
/// `__Host-` cookie with `Secure` (bound to this origin, path `/`); http
/// loopback development gets the plain name.
#[derive(Debug, Clone, Copy)]
pub struct BrowserCookie {
    pub base: &'static str,
    pub secure: bool,
}

impl BrowserCookie {
    pub fn name(&self) -> String {
        if self.secure {
            format!("__Host-{}", self.base)
        } else {
            self.base.to_owned()
        }
    }

    /// `Set-Cookie`: HttpOnly, SameSite=Lax (the IdP's and the client's
    /// redirects back are top-level GETs), living `max_age_secs`.
    pub fn set(&self, value: &str, max_age_secs: i64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let text = format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}",
            self.name()
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The value the browser sent, if any.
    pub fn read(&self, headers: &HeaderMap) -> Option<String> {
        let name = self.name();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_parameter_is_refused_by_name() {
        let err = form_pairs(b"a=1&b=2&a=3").unwrap_err();
        assert_eq!(err.0, "a");
        assert_eq!(form_pairs(b"a=1&b=").unwrap().len(), 2);
    }

    #[test]
    fn cookies_on_https_are_host_bound_and_secure() {
        let c = BrowserCookie {
            base: "x",
            secure: true,
        };
        let set = c.set("v", 60);
        assert_eq!(
            set.to_str().unwrap(),
            "__Host-x=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x=plain; __Host-x=v"),
        );
        assert_eq!(c.read(&headers).as_deref(), Some("v"));
        let plain = BrowserCookie {
            base: "x",
            secure: false,
        };
        assert_eq!(plain.read(&headers).as_deref(), Some("plain"));
    }
}
