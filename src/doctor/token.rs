//! Access tokens from the outside: decode a JWT without verifying it
//! ([`DecodedJwt`], also what `mcpgate token decode` shows), compare its
//! `iss`/`aud`/`exp`/scopes with what a server expects ([`check`]), and
//! fetch one with the client-credentials grant ([`fetch_client_credentials`]).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::{Check, DoctorError, http::Answer};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a JWT (three base64url parts separated by dots): an opaque token")]
    NotJwt,
    #[error("the JWT's {0} is not base64url-encoded JSON")]
    BadPart(&'static str),
}

/// A JWT's header and claims, unverified.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedJwt {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
}

pub fn decode(token: &str) -> Result<DecodedJwt, DecodeError> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    if parts.len() != 3 || parts.iter().take(2).any(|p| p.is_empty()) {
        return Err(DecodeError::NotJwt);
    }
    let part = |text: &str, name: &'static str| -> Result<Map<String, Value>, DecodeError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| DecodeError::BadPart(name))?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(DecodeError::BadPart(name)),
        }
    };
    Ok(DecodedJwt {
        header: part(parts[0], "header")?,
        claims: part(parts[1], "claims")?,
    })
}

impl DecodedJwt {
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// `aud` as a list (a single string is a list of one).
    pub fn audiences(&self) -> Vec<String> {
        strings(self.claims.get("aud"))
    }

    pub fn expires_at(&self) -> Option<i64> {
        self.claims.get("exp").and_then(Value::as_i64)
    }

    /// `scope` (space-separated, RFC 9068) or `scp` (string or list: Entra, Okta).
    pub fn scopes(&self) -> Vec<String> {
        let from = |key: &str| match self.claims.get(key) {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            other => strings(other),
        };
        let mut scopes: Vec<String> = from("scope");
        if scopes.is_empty() {
            scopes = from("scp");
        }
        scopes
    }

    /// Header and claims as `name: value` lines, times also in words
    /// relative to `now` (unix seconds).
    pub fn explain(&self, now: i64) -> Vec<(String, String)> {
        let mut lines = Vec::new();
        for (k, v) in &self.header {
            lines.push((format!("header.{k}"), show(v)));
        }
        for (k, v) in &self.claims {
            let mut text = show(v);
            if matches!(k.as_str(), "exp" | "iat" | "nbf" | "auth_time")
                && let Some(t) = v.as_i64()
            {
                text = format!("{text} ({})", relative(t - now));
            }
            lines.push((k.clone(), text));
        }
        lines
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `delta` seconds from now in words: "in 59 minutes", "3 hours ago".
pub fn relative(delta: i64) -> String {
    let size = delta.unsigned_abs();
    let amount = match size {
        0..=89 => format!("{size} seconds"),
        90..=5399 => format!("{} minutes", (size + 30) / 60),
        5400..=172_799 => format!("{} hours", (size + 1800) / 3600),
        _ => format!("{} days", (size + 43_200) / 86_400),
    };
    if delta >= 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// What the server expects of a token, as read from its metadata.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// The resource URL: the token's `aud` must name it.
    pub resource: String,
    /// Issuers the server trusts (its PRM's `authorization_servers`, and the
    /// issuer its AS metadata names).
    pub issuers: Vec<String>,
    /// The scopes the 401 challenge asked for.
    pub scopes: Vec<String>,
}

/// The token's claims against `expected`; `now` in unix seconds.
pub fn check(token: &str, expected: &Expectations, now: i64) -> Vec<Check> {
    let jwt = match decode(token) {
        Ok(jwt) => jwt,
        Err(e) => {
            return vec![Check::skip(
                "token.claims",
                format!(
                    "{e}: its claims cannot be read from outside; the call below shows whether the server accepts it"
                ),
            )];
        }
    };
    let mut checks = Vec::new();
    checks.push(match jwt.issuer() {
        Some(iss) if expected.issuers.iter().any(|i| same_url(i, iss)) => {
            Check::pass("token.iss", format!("iss {iss} is the server's authorization server"))
        }
        Some(iss) => Check::fail(
            "token.iss",
            format!("iss {iss} is not among the server's authorization servers {:?}", expected.issuers),
            "the token comes from another authorization server (or another tenant/realm) than the one the server's protected-resource metadata names, so the server rejects it",
            "get the token from the issuer in the server's metadata, or list this issuer there (mcpgate: auth.resource.issuer)",
        ),
        None => Check::fail(
            "token.iss",
            "the token has no iss claim",
            "a resource server cannot tell who issued a token without iss",
            "configure the authorization server to issue RFC 9068 access tokens (they carry iss)",
        ),
    });
    let audiences = jwt.audiences();
    checks.push(if audiences.iter().any(|a| a == &expected.resource) {
        Check::pass("token.aud", format!("aud names {}", expected.resource))
    } else {
        let trailing = audiences
            .iter()
            .any(|a| a.trim_end_matches('/') == expected.resource.trim_end_matches('/'));
        let cause = if trailing {
            format!("aud {audiences:?} differs from the resource {} only by a trailing slash, and audiences are compared exactly", expected.resource)
        } else if audiences.is_empty() {
            "the token has no aud claim, so it is not bound to this server (RFC 8707); the server must reject it".to_owned()
        } else {
            format!("aud {audiences:?} does not name the resource {} (the classic wrong-audience cause: the token was issued for another API or for the authorization server itself)", expected.resource)
        };
        Check::fail(
            "token.aud",
            format!("aud {audiences:?} lacks {}", expected.resource),
            cause,
            format!("have the authorization server put aud = {} in its tokens: the client sends resource={0} (RFC 8707); Auth0: an API whose identifier is exactly this URL; Keycloak: an audience mapper (Client scopes → Mappers → Audience, included custom audience {0}); Entra: the application ID URI and requested scope of the API app", expected.resource),
        )
    });
    let now_text = |t: i64| relative(t - now);
    checks.push(match jwt.expires_at() {
        Some(exp) if exp > now => Check::pass("token.exp", format!("expires {}", now_text(exp))),
        Some(exp) => Check::fail(
            "token.exp",
            format!("expired {}", now_text(exp)),
            "the token is past its exp; the server answers 401 invalid_token and the client must refresh",
            "get a fresh token (a client that keeps sending an expired token does not refresh: sign in again, and check that the authorization server issues refresh tokens — offline_access)",
        ),
        None => Check::warn(
            "token.exp",
            "the token has no exp claim",
            "a token without exp never expires: a leaked one works forever",
            "configure an access-token lifetime at the authorization server",
        ),
    });
    let granted = jwt.scopes();
    let missing: Vec<&String> = expected
        .scopes
        .iter()
        .filter(|s| !granted.contains(s))
        .collect();
    checks.push(if missing.is_empty() {
        Check::pass("token.scope", format!("scopes {granted:?} cover what the server asks for"))
    } else {
        Check::warn(
            "token.scope",
            format!("scopes {granted:?} lack {missing:?}"),
            format!("the server's challenge asks for {:?}; tools needing the missing scopes answer 403 insufficient_scope", expected.scopes),
            "request the missing scopes (scope=… on the authorization or token request), and allow them for this client at the authorization server",
        )
    });
    checks
}

/// Two URLs naming the same issuer: compared exactly, except that one
/// trailing slash does not count (some issuers end in one, e.g. Auth0).
fn same_url(a: &str, b: &str) -> bool {
    a == b || a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// A confidential client's credentials, from a file or stdin: either JSON
/// `{"client_id": …, "client_secret": …}` or two lines (id, then secret).
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: SecretString,
}

impl ClientCredentials {
    pub fn parse(text: &SecretString) -> Result<ClientCredentials, DoctorError> {
        let text = text.expose_secret().trim();
        let bad = |reason: &str| DoctorError::Secret {
            what: "client credentials",
            from: "the given source".to_owned(),
            reason: reason.to_owned(),
        };
        let (id, secret) = if text.starts_with('{') {
            let v: Value = serde_json::from_str(text)
                .map_err(|_| bad("not JSON with client_id and client_secret"))?;
            (
                v["client_id"].as_str().unwrap_or_default().to_owned(),
                v["client_secret"].as_str().unwrap_or_default().to_owned(),
            )
        } else {
            let mut lines = text.lines().map(str::trim);
            (
                lines.next().unwrap_or_default().to_owned(),
                lines.next().unwrap_or_default().to_owned(),
            )
        };
        if id.is_empty() || secret.is_empty() {
            return Err(bad(
                "expected JSON {\"client_id\", \"client_secret\"} or two lines: client id, then secret",
            ));
        }
        Ok(ClientCredentials {
            client_id: id,
            client_secret: secret.into(),
        })
    }
}

/// A token for `resource` by the client-credentials grant (secret in
/// HTTP Basic); the error is the server's answer, never the secret.
pub async fn fetch_client_credentials(
    client: &reqwest::Client,
    token_endpoint: &str,
    credentials: &ClientCredentials,
    resource: &str,
    scopes: &[String],
) -> Result<SecretString, String> {
    let mut form = vec![
        ("grant_type", "client_credentials".to_owned()),
        ("resource", resource.to_owned()),
    ];
    if !scopes.is_empty() {
        form.push(("scope", scopes.join(" ")));
    }
    let response = client
        .post(token_endpoint)
        .basic_auth(
            &credentials.client_id,
            Some(credentials.client_secret.expose_secret()),
        )
        .form(&form)
        .send()
        .await
        .map_err(|e| format!("{token_endpoint}: {}", super::http::reason(&e)))?;
    let answer = Answer::read(response).await;
    if answer.status != 200 {
        return Err(format!(
            "{token_endpoint} answered {}: {}",
            answer.status,
            answer.oauth_error()
        ));
    }
    answer
        .json()
        .and_then(|v| {
            v["access_token"]
                .as_str()
                .map(|t| SecretString::from(t.to_owned()))
        })
        .ok_or_else(|| format!("{token_endpoint} answered 200 without an access_token"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Outcome;
    use serde_json::json;

    fn jwt(claims: Value) -> String {
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.sig",
            enc(&json!({"alg":"ES256","typ":"at+jwt"})),
            enc(&claims)
        )
    }

    fn expected() -> Expectations {
        Expectations {
            resource: "https://mcp.example.com/mcp".into(),
            issuers: vec!["https://idp.example.com/".into()],
            scopes: vec!["notes:read".into()],
        }
    }

    #[test]
    fn decodes_header_claims_and_times_in_words() {
        let token = jwt(json!({"iss":"https://idp.example.com","exp":10_003_600,"scp":["a","b"]}));
        let decoded = decode(&token).unwrap();
        assert_eq!(decoded.header["typ"], "at+jwt");
        assert_eq!(decoded.scopes(), ["a", "b"]);
        let lines = decoded.explain(10_000_000);
        assert!(
            lines.contains(&("exp".into(), "10003600 (in 60 minutes)".into())),
            "{lines:?}"
        );
        assert_eq!(decode("opaque-token"), Err(DecodeError::NotJwt));
        assert_eq!(decode("a.b.c"), Err(DecodeError::BadPart("header")));
        assert_eq!(relative(-7200), "2 hours ago");
        assert_eq!(relative(3 * 86_400), "in 3 days");
    }

    #[test]
    fn a_good_token_passes_every_check() {
        let token = jwt(
            json!({"iss":"https://idp.example.com","aud":["https://mcp.example.com/mcp"],
            "exp": 2000, "scope": "notes:read notes:write"}),
        );
        let checks = check(&token, &expected(), 1000);
        assert!(
            checks.iter().all(|c| c.outcome == Outcome::Pass),
            "{checks:?}"
        );
    }

    #[test]
    fn wrong_audience_expiry_and_scopes_are_named_with_their_fix() {
        let token = jwt(
            json!({"iss":"https://other.example.com","aud":"https://mcp.example.com/mcp/",
            "exp": 900, "scope": "calc"}),
        );
        let checks = check(&token, &expected(), 1000);
        let by = |id: &str| checks.iter().find(|c| c.id == id).unwrap();
        assert_eq!(by("token.iss").outcome, Outcome::Fail);
        let aud = by("token.aud");
        assert_eq!(aud.outcome, Outcome::Fail);
        assert!(
            aud.cause.as_deref().unwrap().contains("trailing slash"),
            "{aud:?}"
        );
        assert!(
            aud.fix.as_deref().unwrap().contains("audience mapper"),
            "{aud:?}"
        );
        assert_eq!(by("token.exp").outcome, Outcome::Fail);
        assert!(
            by("token.exp").summary.contains("100 seconds ago")
                || by("token.exp").summary.contains("ago")
        );
        assert_eq!(by("token.scope").outcome, Outcome::Warn);
    }

    #[test]
    fn opaque_tokens_are_skipped_not_guessed() {
        let checks = check("opaque", &expected(), 0);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].outcome, Outcome::Skip);
    }

    #[test]
    fn client_credentials_parse_from_json_or_two_lines() {
        let c = ClientCredentials::parse(&SecretString::from(
            r#"{"client_id":"a","client_secret":"s"}"#,
        ))
        .unwrap();
        assert_eq!(
            (c.client_id.as_str(), c.client_secret.expose_secret()),
            ("a", "s")
        );
        let c = ClientCredentials::parse(&SecretString::from("a\ns\n")).unwrap();
        assert_eq!(c.client_id, "a");
        let err = ClientCredentials::parse(&SecretString::from("only-id"))
            .err()
            .unwrap();
        assert!(!err.to_string().contains("only-id"));
    }
}
