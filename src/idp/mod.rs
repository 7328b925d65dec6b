//! The upstream identity provider of `proxy` mode, as a client: discovery at
//! start, the authorization URL, the code exchange, who signed in (ID token
//! or the provider's user API), refresh and revocation. No HTTP server code
//! here; `oauth::proxy` drives it from the authorization flow.

pub mod auto;
pub mod presets;
pub mod settings;

use std::time::Duration;

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{
    jwks::{JwksCache, read_capped},
    verify::{self, IssuerVerifier, TokenError},
};
use presets::IdentitySource;
use settings::IdpSettings;

const MAX_RESPONSE_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    /// The provider could not be reached or answered with a server error.
    #[error("the identity provider is unreachable: {0}")]
    Unreachable(String),
    /// The grant is dead upstream (revoked, expired, user disabled).
    #[error("the identity provider refused the grant: {0}")]
    InvalidGrant(String),
    /// Any other OAuth error the provider answered with.
    #[error("the identity provider answered {error}: {description}")]
    Refused { error: String, description: String },
    #[error("the identity provider's ID token is not acceptable: {0}")]
    BadIdToken(String),
    #[error("the identity provider's answer is not usable: {0}")]
    BadResponse(String),
    #[error("cannot set up the identity provider: {0}")]
    Setup(String),
}

/// Tokens the upstream issued for one sign-in; stored sealed, never sent to MCP clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpstreamTokens {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Epoch seconds; `None` when the provider gives no lifetime (GitHub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// Who signed in, as the provider says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The provider's stable subject.
    pub subject: String,
    /// A readable name for operators (email, login or the subject).
    pub username: String,
    /// The provider's user name (`preferred_username`, GitHub login):
    /// what `allowed_usernames` matches, never an email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// False when the provider says the email is not verified.
    #[serde(default = "verified_by_default", skip_serializing)]
    pub email_verified: bool,
    /// Every claim the provider asserted at this sign-in (the verified ID
    /// token, then UserInfo for what it lacked), for rules that read a claim
    /// of their own (`[admin] claim`). In memory for the sign-in only: never
    /// stored or put in tokens.
    #[serde(skip)]
    pub claims: serde_json::Map<String, Value>,
}

/// Decides whether an identity-provider user holds the admin role, from who
/// they are at this sign-in (`[admin]`, `crate::admin::settings`). `None`:
/// the rule has no say, the role stays as an admin set it.
pub trait AdminRoleRule: Send + Sync {
    fn admin_role(&self, identity: &Identity) -> Option<bool>;
}

fn verified_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    Basic,
    Post,
}

pub struct IdentityProvider {
    config: IdpSettings,
    redirect_uri: String,
    authorization_endpoint: String,
    token_endpoint: String,
    revocation_endpoint: Option<String>,
    userinfo_endpoint: Option<String>,
    api_base: Option<String>,
    client_auth: ClientAuth,
    /// ID-token verifier (`aud` = our client id); `None` for OAuth-only providers.
    id_tokens: Option<IssuerVerifier>,
    /// What subjects are namespaced by: the issuer, or the preset name.
    namespace: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<Value>,
    id_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl IdentityProvider {
    /// Read the provider's discovery document (OIDC presets) and build the client.
    pub async fn connect(
        config: IdpSettings,
        redirect_uri: String,
    ) -> Result<IdentityProvider, IdpError> {
        let http = outbound_client().map_err(|e| IdpError::Setup(e.to_string()))?;
        match (config.preset.fixed_endpoints, config.issuer.clone()) {
            (Some(fixed), _) => Ok(IdentityProvider {
                authorization_endpoint: config
                    .authorization_endpoint
                    .clone()
                    .unwrap_or_else(|| fixed.authorization.to_owned()),
                token_endpoint: config
                    .token_endpoint
                    .clone()
                    .unwrap_or_else(|| fixed.token.to_owned()),
                revocation_endpoint: None,
                userinfo_endpoint: None,
                api_base: Some(
                    config
                        .api_base
                        .clone()
                        .unwrap_or_else(|| fixed.api_base.to_owned()),
                ),
                client_auth: ClientAuth::Post,
                id_tokens: None,
                namespace: config.preset.name.to_owned(),
                redirect_uri,
                http,
                config,
            }),
            (None, Some(issuer)) => {
                // Entra: multi-tenant endpoints publish a templated issuer, and
                // a tenant given by domain (or `consumers`) is named by its GUID.
                let pattern = match (&config.tenant, config.preset.name) {
                    (Some(t), "entra") if presets::is_entra_multi_tenant(t) && t != "consumers" => {
                        issuer.replace(&format!("/{t}/"), "/{tenantid}/")
                    }
                    (Some(t), "entra") => issuer.replace(&format!("/{t}/"), "/*/"),
                    _ => issuer.clone(),
                };
                let meta = verify::discover_as(&http, &issuer, &pattern)
                    .await
                    .map_err(|e| IdpError::Setup(e.to_string()))?;
                let expected = meta.issuer.clone();
                let missing =
                    |what: &str| IdpError::Setup(format!("{issuer}: discovery has no {what}"));
                let authorization_endpoint = config
                    .authorization_endpoint
                    .clone()
                    .or(meta.authorization_endpoint.clone())
                    .ok_or_else(|| missing("authorization_endpoint"))?;
                let token_endpoint = config
                    .token_endpoint
                    .clone()
                    .or(meta.token_endpoint.clone())
                    .ok_or_else(|| missing("token_endpoint"))?;
                let jwks_uri = meta.jwks_uri.clone().ok_or_else(|| missing("jwks_uri"))?;
                // RFC 8414: absent means client_secret_basic.
                let client_auth = match &meta.token_endpoint_auth_methods_supported {
                    Some(methods)
                        if !methods.iter().any(|m| m == "client_secret_basic")
                            && methods.iter().any(|m| m == "client_secret_post") =>
                    {
                        ClientAuth::Post
                    }
                    _ => ClientAuth::Basic,
                };
                let algorithms = crate::auth::SUPPORTED_ALGORITHMS
                    .iter()
                    .filter_map(|a| crate::auth::algorithm(a))
                    .collect();
                let jwks = JwksCache::new(jwks_uri, http.clone(), Duration::from_secs(30));
                let id_tokens = IssuerVerifier::new(
                    expected.clone(),
                    vec![config.client_id.clone()],
                    algorithms,
                    jwks,
                    None,
                    http.clone(),
                );
                Ok(IdentityProvider {
                    authorization_endpoint,
                    token_endpoint,
                    revocation_endpoint: meta.revocation_endpoint.clone(),
                    userinfo_endpoint: meta.userinfo_endpoint.clone(),
                    api_base: None,
                    client_auth,
                    id_tokens: Some(id_tokens),
                    namespace: expected,
                    redirect_uri,
                    http,
                    config,
                })
            }
            (None, None) => Err(IdpError::Setup(
                "auth.upstream.issuer is required".to_owned(),
            )),
        }
    }

    pub fn preset_name(&self) -> &'static str {
        self.config.preset.name
    }

    /// Subjects are unique per issuer only; this names the issuer in user ids.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Does `[auth.upstream] allowed_*` admit this user?
    pub fn admits(&self, identity: &Identity) -> bool {
        let allow = &self.config.allow;
        if allow.is_open() {
            return true;
        }
        let email = identity
            .email
            .as_deref()
            .filter(|_| identity.email_verified)
            .map(str::to_lowercase);
        let by_email = email.as_deref().is_some_and(|e| {
            allow.emails.iter().any(|a| a == e)
                || e.rsplit_once('@')
                    .is_some_and(|(_, domain)| allow.email_domains.iter().any(|d| d == domain))
        });
        by_email
            || identity.groups.iter().any(|g| allow.groups.contains(g))
            || identity
                .login
                .as_ref()
                .is_some_and(|login| allow.usernames.contains(login))
    }

    /// Entra with `common`, `organizations` or `consumers`: the `email`
    /// claim comes from any tenant, whose administrators may set it to any
    /// address without proof ("nOAuth"); Entra sends no `email_verified`.
    /// Such an email counts as verified (for `allowed_emails` and
    /// `allowed_email_domains`) only with `xms_edov: true`.
    pub fn email_needs_domain_owner_proof(&self) -> bool {
        self.config.preset.name == "entra"
            && self
                .config
                .tenant
                .as_deref()
                .is_some_and(presets::is_entra_multi_tenant)
    }

    /// Does an email allow-list apply (operators are warned when it cannot
    /// match without the optional `xms_edov` claim)?
    pub fn allows_by_email(&self) -> bool {
        !self.config.allow.emails.is_empty() || !self.config.allow.email_domains.is_empty()
    }

    pub fn allow_list_is_open(&self) -> bool {
        self.config.allow.is_open()
    }

    pub fn uses_nonce(&self) -> bool {
        self.config.preset.identity == IdentitySource::IdToken
    }

    /// The authorization request the browser is sent to.
    pub fn authorize_url(&self, state: &str, nonce: &str, code_challenge: &str) -> String {
        let mut url = match url::Url::parse(&self.authorization_endpoint) {
            Ok(u) => u,
            Err(_) => return self.authorization_endpoint.clone(),
        };
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair("scope", &self.config.scopes.join(" "))
                .append_pair("state", state)
                .append_pair("code_challenge", code_challenge)
                .append_pair("code_challenge_method", "S256");
            if self.uses_nonce() {
                q.append_pair("nonce", nonce);
            }
            if self.config.preset.audience_param
                && let Some(audience) = &self.config.audience
            {
                q.append_pair("audience", audience);
            }
            for (k, v) in &self.config.authorize_params {
                q.append_pair(k, v);
            }
        }
        url.to_string()
    }

    /// Exchange the callback's code (with our PKCE verifier) for tokens.
    pub async fn exchange(&self, code: &str, verifier: &str) -> Result<UpstreamTokens, IdpError> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
        .map(|(tokens, _)| tokens)
    }

    /// Refresh upstream tokens. A provider that omits a new refresh token
    /// keeps the old one valid (RFC 6749 §6).
    pub async fn refresh(&self, current: &UpstreamTokens) -> Result<UpstreamTokens, IdpError> {
        let Some(refresh_token) = &current.refresh_token else {
            return Err(IdpError::InvalidGrant(
                "no upstream refresh token".to_owned(),
            ));
        };
        let (mut tokens, _) = self
            .token_request(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .await?;
        if tokens.refresh_token.is_none() {
            tokens.refresh_token = Some(refresh_token.clone());
        }
        if tokens.id_token.is_none() {
            tokens.id_token = current.id_token.clone();
        }
        Ok(tokens)
    }

    /// RFC 7009 revocation of the upstream refresh (or access) token, best effort.
    pub async fn revoke(&self, tokens: &UpstreamTokens) {
        let Some(endpoint) = &self.revocation_endpoint else {
            return;
        };
        let (token, hint) = match &tokens.refresh_token {
            Some(r) => (r.as_str(), "refresh_token"),
            None => (tokens.access_token.as_str(), "access_token"),
        };
        let request = self.authenticated(
            self.http.post(endpoint),
            &[("token", token), ("token_type_hint", hint)],
        );
        match request.send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = r.status().as_u16(), "upstream revocation refused"),
            Err(e) => tracing::warn!(error = %e.without_url(), "upstream revocation failed"),
        }
    }

    /// Who signed in: the verified ID token, or the provider's user API.
    pub async fn identify(
        &self,
        tokens: &UpstreamTokens,
        nonce: &str,
    ) -> Result<Identity, IdpError> {
        match (&self.id_tokens, self.config.preset.identity) {
            (Some(verifier), IdentitySource::IdToken) => {
                let id_token = tokens.id_token.as_deref().ok_or_else(|| {
                    IdpError::BadIdToken("the token response has no id_token".to_owned())
                })?;
                let claims =
                    verifier
                        .verify_id_token(id_token, nonce)
                        .await
                        .map_err(|e| match e {
                            TokenError::Upstream(m) => IdpError::Unreachable(m),
                            other => IdpError::BadIdToken(other.to_string()),
                        })?;
                let mut identity = identity_from_claims(&claims, self.config.preset.groups_claim);
                if identity.email.is_none() {
                    self.complete_from_userinfo(&mut identity, &tokens.access_token)
                        .await;
                }
                if self.email_needs_domain_owner_proof() {
                    identity.email_verified = email_domain_owner_verified(&claims);
                }
                Ok(identity)
            }
            _ => self.github_identity(&tokens.access_token).await,
        }
    }

    /// ID tokens may carry only `sub` (OIDC Core §5.4: claims requested by
    /// scope may be returned from UserInfo instead). Best effort: a failure
    /// leaves the identity as the ID token made it.
    async fn complete_from_userinfo(&self, identity: &mut Identity, access_token: &str) {
        let Some(endpoint) = &self.userinfo_endpoint else {
            return;
        };
        let request = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .header("accept", "application/json");
        let claims = match self.fetch(request, "userinfo").await {
            Ok((status, body)) if status.is_success() => {
                serde_json::from_slice::<serde_json::Map<String, Value>>(&body).ok()
            }
            _ => None,
        };
        // UserInfo about another subject is ignored (OIDC Core §5.3.2).
        let Some(claims) = claims
            .filter(|c| c.get("sub").and_then(Value::as_str) == Some(identity.subject.as_str()))
        else {
            tracing::debug!("no usable userinfo answer");
            return;
        };
        let extra = identity_from_claims(&claims, self.config.preset.groups_claim);
        identity.email = extra.email;
        identity.email_verified = extra.email_verified;
        identity.name = identity.name.take().or(extra.name);
        identity.login = identity.login.take().or(extra.login);
        if identity.groups.is_empty() {
            identity.groups = extra.groups;
        }
        for (name, value) in claims {
            identity.claims.entry(name).or_insert(value);
        }
        if identity.username == identity.subject {
            identity.username = extra.username;
        }
    }

    async fn github_identity(&self, access_token: &str) -> Result<Identity, IdpError> {
        let base = self
            .api_base
            .as_deref()
            .unwrap_or("https://api.github.com")
            .trim_end_matches('/');
        let user = self.api_get(&format!("{base}/user"), access_token).await?;
        let subject = match &user["id"] {
            Value::Number(n) => n.to_string(),
            Value::String(s) if !s.is_empty() => s.clone(),
            _ => return Err(IdpError::BadResponse("GitHub /user has no id".to_owned())),
        };
        let login = user["login"].as_str().map(str::to_owned);
        let mut email = user["email"].as_str().map(str::to_owned);
        if email.is_none() {
            // The profile email is optional; the primary verified one needs user:email.
            if let Ok(Value::Array(emails)) = self
                .api_get(&format!("{base}/user/emails"), access_token)
                .await
            {
                email = emails
                    .iter()
                    .find(|e| e["primary"] == true && e["verified"] == true)
                    .and_then(|e| e["email"].as_str())
                    .map(str::to_owned);
            }
        }
        Ok(Identity {
            username: login.clone().unwrap_or_else(|| subject.clone()),
            login,
            subject,
            email,
            name: user["name"].as_str().map(str::to_owned),
            groups: Vec::new(),
            // Only the primary verified address is looked up; a profile email is public data.
            email_verified: true,
            claims: serde_json::Map::new(),
        })
    }

    async fn api_get(&self, url: &str, access_token: &str) -> Result<Value, IdpError> {
        let request = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .header("accept", "application/vnd.github+json");
        let (status, body) = self.fetch(request, url).await?;
        if !status.is_success() {
            return Err(IdpError::InvalidGrant(format!(
                "{url}: HTTP {}",
                status.as_u16()
            )));
        }
        serde_json::from_slice(&body).map_err(|e| IdpError::BadResponse(e.to_string()))
    }

    /// Send, read at most [`MAX_RESPONSE_BYTES`]; network failures and 5xx
    /// are `Unreachable` (worth a retry), everything else is the caller's.
    async fn fetch(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), IdpError> {
        let response = request
            .send()
            .await
            .map_err(|e| IdpError::Unreachable(e.without_url().to_string()))?;
        let status = response.status();
        let body = read_capped(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| IdpError::Unreachable(e.to_string()))?;
        if status.is_server_error() {
            return Err(IdpError::Unreachable(format!(
                "{what}: HTTP {}",
                status.as_u16()
            )));
        }
        Ok((status, body))
    }

    fn authenticated(
        &self,
        request: reqwest::RequestBuilder,
        form: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let secret = self.config.client_secret.expose_secret();
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        let request = match self.client_auth {
            // RFC 6749 §2.3.1: both parts form-encoded before Basic.
            ClientAuth::Basic => request.basic_auth(
                form_encode(&self.config.client_id),
                Some(form_encode(secret)),
            ),
            ClientAuth::Post => {
                fields.push(("client_id", &self.config.client_id));
                fields.push(("client_secret", secret));
                request
            }
        };
        request.header("accept", "application/json").form(&fields)
    }

    async fn token_request(
        &self,
        form: &[(&str, &str)],
    ) -> Result<(UpstreamTokens, Value), IdpError> {
        let request = self.authenticated(self.http.post(&self.token_endpoint), form);
        let (status, body) = self.fetch(request, "token endpoint").await?;
        let raw: Value = serde_json::from_slice(&body).map_err(|_| {
            IdpError::BadResponse(format!(
                "token endpoint HTTP {} without a JSON body",
                status.as_u16()
            ))
        })?;
        let answer: TokenAnswer = serde_json::from_value(raw.clone())
            .map_err(|e| IdpError::BadResponse(e.to_string()))?;
        // GitHub reports errors with status 200.
        if let Some(error) = answer.error {
            let description = answer.error_description.unwrap_or_default();
            return Err(
                if error == "invalid_grant" || error == "bad_verification_code" {
                    IdpError::InvalidGrant(description)
                } else {
                    IdpError::Refused { error, description }
                },
            );
        }
        if !status.is_success() {
            return Err(IdpError::BadResponse(format!(
                "token endpoint HTTP {}",
                status.as_u16()
            )));
        }
        let access_token = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| IdpError::BadResponse("no access_token".to_owned()))?;
        let expires_in = match &answer.expires_in {
            Some(Value::Number(n)) => n.as_i64(),
            // Some providers send it as a string.
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        Ok((
            UpstreamTokens {
                access_token,
                refresh_token: answer.refresh_token.filter(|t| !t.is_empty()),
                expires_at: expires_in.map(|s| crate::store::now_epoch() + s),
                id_token: answer.id_token,
            },
            raw,
        ))
    }
}

/// The HTTP client for calls to identity providers: short timeouts, no
/// redirects (a redirected token request would carry our secret elsewhere).
pub fn outbound_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mcpgate/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Entra's optional `xms_edov` claim: the email's domain is verified by
/// the tenant that owns it. Anything but `true` (absent, false, a string)
/// is no proof.
fn email_domain_owner_verified(claims: &serde_json::Map<String, Value>) -> bool {
    claims.get("xms_edov") == Some(&Value::Bool(true))
}

/// The claims mcpgate keeps from an ID token.
pub fn identity_from_claims(
    claims: &serde_json::Map<String, Value>,
    groups_claim: &str,
) -> Identity {
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let subject = text("sub").unwrap_or_default();
    let email = text("email");
    let groups = claim_values(claims, groups_claim);
    Identity {
        username: email
            .clone()
            .or_else(|| text("preferred_username"))
            .unwrap_or_else(|| subject.clone()),
        name: text("name"),
        login: text("preferred_username"),
        email,
        groups,
        subject,
        // Absent means the provider makes no statement (Entra): trusted.
        email_verified: claims.get("email_verified").and_then(Value::as_bool) != Some(false),
        claims: claims.clone(),
    }
}

/// A list-valued claim (groups, roles): a JSON array of strings, or one
/// space-separated string (Cognito); anything else is no values.
pub fn claim_values(claims: &serde_json::Map<String, Value>, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identity_takes_email_name_groups_and_falls_back_for_the_username() {
        let claims =
            json!({"sub": "u1", "email": "a@example.com", "name": "A", "groups": ["x", "y"]});
        let id = identity_from_claims(claims.as_object().unwrap(), "groups");
        assert_eq!(id.subject, "u1");
        assert_eq!(id.username, "a@example.com");
        assert_eq!(id.groups, vec!["x", "y"]);
        let claims = json!({"sub": "u2", "preferred_username": "bob", "cognito:groups": "a b", "email_verified": false});
        let id = identity_from_claims(claims.as_object().unwrap(), "cognito:groups");
        assert!(!id.email_verified);
        assert_eq!(id.username, "bob");
        assert_eq!(id.email, None);
        assert_eq!(id.groups, vec!["a", "b"]);
        let id = identity_from_claims(json!({"sub": "u3"}).as_object().unwrap(), "groups");
        assert!(id.email_verified);
        assert_eq!(id.username, "u3");
    }

    #[test]
    fn only_a_true_xms_edov_proves_an_entra_email() {
        for (claims, proven) in [
            (json!({"xms_edov": true}), true),
            (json!({"xms_edov": false}), false),
            (json!({"xms_edov": "true"}), false),
            (json!({"xms_edov": 1}), false),
            (json!({}), false),
        ] {
            assert_eq!(
                email_domain_owner_verified(claims.as_object().unwrap()),
                proven,
                "{claims}"
            );
        }
    }

    #[test]
    fn client_credentials_are_form_encoded_for_basic() {
        assert_eq!(form_encode("a b:c%"), "a+b%3Ac%25");
    }
}
