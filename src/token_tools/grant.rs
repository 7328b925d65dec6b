//! Token requests at any issuer's token endpoint: the client-credentials
//! grant and the refresh-token grant, with the client authenticated by a
//! secret (HTTP Basic or form) or a `private_key_jwt` assertion. The
//! endpoint comes from `--token-endpoint` or from the issuer's metadata
//! (RFC 8414, then OpenID Connect discovery).

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::{TokenToolError, reason, signing_key::SigningKey};

/// Larger answers are cut: a token response is a few KiB.
const BODY_CAP: usize = 256 * 1024;

/// How the client proves who it is at the token endpoint.
pub enum ClientAuth {
    /// A public client: `client_id` in the form only.
    None,
    /// `client_secret_basic` (RFC 6749 §2.3.1).
    SecretBasic(SecretString),
    /// `client_secret_post`: some IdPs take only this.
    SecretPost(SecretString),
    /// `private_key_jwt` (RFC 7523): an assertion per request.
    PrivateKeyJwt(SigningKey),
}

impl ClientAuth {
    /// The method's registered name, for the explanation.
    pub fn method(&self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::SecretBasic(_) => "client_secret_basic",
            ClientAuth::SecretPost(_) => "client_secret_post",
            ClientAuth::PrivateKeyJwt(_) => "private_key_jwt",
        }
    }
}

pub struct Client {
    pub id: String,
    pub auth: ClientAuth,
}

/// What to ask for besides the grant: RFC 8707 `resource`, `scope`, and
/// Auth0's `audience` (its name for the API a token is for).
#[derive(Debug, Default, Clone)]
pub struct Target {
    pub resource: Option<String>,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
}

/// A successful token response. The tokens are secrets: only `main` puts
/// them on stdout, and never in the explanation.
pub struct Tokens {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    /// The whole response, for `--json`.
    pub response: Map<String, Value>,
}

impl Tokens {
    pub fn token_type(&self) -> Option<&str> {
        self.response.get("token_type").and_then(Value::as_str)
    }

    pub fn expires_in(&self) -> Option<i64> {
        self.response.get("expires_in").and_then(Value::as_i64)
    }

    pub fn scope(&self) -> Option<&str> {
        self.response.get("scope").and_then(Value::as_str)
    }
}

/// What a token response holds, in lines without any token: its type,
/// lifetime and scope in words, and a JWT's claims (times in words).
pub fn describe(tokens: &Tokens, now: i64) -> Vec<String> {
    let mut lines = vec![format!(
        "{} token{}{}",
        tokens.token_type().unwrap_or("(no token_type)"),
        tokens
            .expires_in()
            .map(|s| format!(", expires {}", crate::doctor::token::relative(s)))
            .unwrap_or_default(),
        tokens
            .scope()
            .map(|s| format!(", scope \"{s}\""))
            .unwrap_or_default(),
    )];
    match crate::doctor::token::decode(tokens.access_token.expose_secret()) {
        Ok(jwt) => {
            let explained = jwt.explain(now);
            let width = explained.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            lines.push("a JWT (decoded, not verified: mcpgate token verify checks it):".to_owned());
            lines.extend(
                explained
                    .into_iter()
                    .map(|(k, v)| format!("  {k:width$}  {v}")),
            );
        }
        Err(_) => lines.push(
            "an opaque token (not a JWT): only the authorization server can say what it holds (Auth0 issues opaque tokens without --audience)".to_owned(),
        ),
    }
    lines
}

/// The token endpoint named in `issuer`'s metadata.
pub async fn discover_token_endpoint(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<String, TokenToolError> {
    let metadata = crate::auth::verify::discover(http, issuer)
        .await
        .map_err(|e| TokenToolError::Discovery {
            issuer: issuer.to_owned(),
            reason: e.to_string(),
        })?;
    metadata
        .token_endpoint
        .ok_or_else(|| TokenToolError::Discovery {
            issuer: issuer.to_owned(),
            reason: "its metadata names no token_endpoint".to_owned(),
        })
}

/// `grant_type=client_credentials`.
pub async fn client_credentials(
    http: &reqwest::Client,
    endpoint: &str,
    client: &Client,
    target: &Target,
    now: i64,
) -> Result<Tokens, TokenToolError> {
    let mut form = vec![("grant_type", "client_credentials".to_owned())];
    add_target(&mut form, target);
    request(http, endpoint, client, form, now).await
}

/// `grant_type=refresh_token`; `target` narrows the new token (RFC 8707
/// `resource`, a subset of the scopes).
pub async fn refresh(
    http: &reqwest::Client,
    endpoint: &str,
    client: &Client,
    refresh_token: &SecretString,
    target: &Target,
    now: i64,
) -> Result<Tokens, TokenToolError> {
    let mut form = vec![
        ("grant_type", "refresh_token".to_owned()),
        ("refresh_token", refresh_token.expose_secret().to_owned()),
    ];
    add_target(&mut form, target);
    request(http, endpoint, client, form, now).await
}

fn add_target(form: &mut Vec<(&'static str, String)>, target: &Target) {
    if let Some(resource) = &target.resource {
        form.push(("resource", resource.clone()));
    }
    if !target.scopes.is_empty() {
        form.push(("scope", target.scopes.join(" ")));
    }
    if let Some(audience) = &target.audience {
        form.push(("audience", audience.clone()));
    }
}

async fn request(
    http: &reqwest::Client,
    endpoint: &str,
    client: &Client,
    mut form: Vec<(&'static str, String)>,
    now: i64,
) -> Result<Tokens, TokenToolError> {
    let mut builder = http.post(endpoint).header("accept", "application/json");
    match &client.auth {
        ClientAuth::None => form.push(("client_id", client.id.clone())),
        ClientAuth::SecretBasic(secret) => {
            // RFC 6749 §2.3.1: both halves form-urlencoded before Basic.
            let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            let (id, secret): (String, String) =
                (encode(&client.id), encode(secret.expose_secret()));
            builder = builder.basic_auth(id, Some(secret));
        }
        ClientAuth::SecretPost(secret) => {
            form.push(("client_id", client.id.clone()));
            form.push(("client_secret", secret.expose_secret().to_owned()));
        }
        ClientAuth::PrivateKeyJwt(key) => {
            form.push(("client_id", client.id.clone()));
            form.push((
                "client_assertion_type",
                super::signing_key::CLIENT_ASSERTION_TYPE.to_owned(),
            ));
            form.push((
                "client_assertion",
                key.assertion(&client.id, endpoint, now)?,
            ));
        }
    }
    let response = builder
        .form(&form)
        .send()
        .await
        .map_err(|e| TokenToolError::Unreachable {
            url: endpoint.to_owned(),
            reason: reason(&e),
        })?;
    let status = response.status().as_u16();
    let body = read_capped(response).await;
    let json: Option<Map<String, Value>> = serde_json::from_slice(&body).ok();
    let excerpt = || {
        String::from_utf8_lossy(&body)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect::<String>()
    };
    match json {
        Some(map) if status != 200 || map.contains_key("error") => {
            let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
            Err(TokenToolError::Refused {
                endpoint: endpoint.to_owned(),
                status,
                error: text("error").unwrap_or_else(|| "no OAuth error code".to_owned()),
                description: text("error_description"),
            })
        }
        Some(map) if status == 200 => {
            let secret = |key: &str| {
                map.get(key)
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(|t| SecretString::from(t.to_owned()))
            };
            let Some(access_token) = secret("access_token") else {
                return Err(TokenToolError::NoToken {
                    endpoint: endpoint.to_owned(),
                    status,
                    body: "the JSON has no access_token".to_owned(),
                });
            };
            Ok(Tokens {
                access_token,
                refresh_token: secret("refresh_token"),
                response: map,
            })
        }
        _ if status == 200 => Err(TokenToolError::NoToken {
            endpoint: endpoint.to_owned(),
            status,
            body: format!("not JSON: {}", excerpt()),
        }),
        _ => Err(TokenToolError::Refused {
            endpoint: endpoint.to_owned(),
            status,
            error: "no OAuth error".to_owned(),
            description: Some(excerpt()),
        }),
    }
}

async fn read_capped(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = BODY_CAP.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= BODY_CAP {
            break;
        }
    }
    body
}

/// What usually causes a token endpoint's error code, and what to change.
pub fn hint(error: &str) -> Option<&'static str> {
    Some(match error {
        "invalid_client" => {
            "the client id is unknown, the secret or key is wrong, or the client authenticates another way: a secret sent with HTTP Basic (default) or in the form (--client-auth post), or private_key_jwt with a key whose public half (and kid) the authorization server holds for this client"
        }
        "unauthorized_client" => {
            "this client may not use this grant: allow client_credentials for it (Auth0: a Machine-to-Machine application authorized for the API; Keycloak: Service accounts roles on; Okta: an API Services app; Entra: an app with a client secret or certificate), or refresh_token for a refresh"
        }
        "invalid_scope" => {
            "a requested scope is unknown or not allowed for this client: Entra wants exactly api://<app-id>/.default for client credentials; Auth0 grants the API's permissions to the M2M application; Okta and Cognito want custom scopes defined on the authorization server or resource server"
        }
        "invalid_target" => {
            "the resource (RFC 8707) is unknown to the authorization server or not allowed for this client: it must be exactly the MCP URL (public_url + /mcp, no trailing slash) as registered; Auth0 takes --audience with the API identifier instead"
        }
        "invalid_grant" => {
            "the refresh token is expired, revoked, already used (a rotated refresh token dies once used; reusing it may revoke the whole grant), or issued to another client"
        }
        "unsupported_grant_type" => {
            "the authorization server does not offer this grant at this endpoint (grant_types_supported in its metadata)"
        }
        "invalid_request" => {
            "a parameter is missing or repeated; the description says which (Auth0 without --audience, a confidential client without its secret)"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_errors_have_hints_and_others_none() {
        for code in [
            "invalid_client",
            "unauthorized_client",
            "invalid_scope",
            "invalid_target",
            "invalid_grant",
        ] {
            assert!(hint(code).is_some(), "{code}");
        }
        assert!(hint("invalid_target").unwrap().contains("audience"));
        assert!(hint("server_error").is_none());
    }

    #[test]
    fn the_target_becomes_resource_scope_and_audience() {
        let mut form = Vec::new();
        add_target(
            &mut form,
            &Target {
                resource: Some("https://mcp.example.com/mcp".into()),
                scopes: vec!["a".into(), "b".into()],
                audience: Some("https://api".into()),
            },
        );
        assert_eq!(
            form,
            vec![
                ("resource", "https://mcp.example.com/mcp".to_owned()),
                ("scope", "a b".to_owned()),
                ("audience", "https://api".to_owned()),
            ]
        );
        let mut none = Vec::new();
        add_target(&mut none, &Target::default());
        assert!(none.is_empty());
    }
}
