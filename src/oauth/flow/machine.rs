//! `grant_type=client_credentials` (RFC 6749 §4.4, the MCP OAuth
//! client-credentials extension): a client configured in
//! `[[auth.local.clients]]` obtains a token for itself, with no browser and
//! no user. The token acts as the client's configured `subject`.
//!
//! Scopes: what is asked must lie within what the client may obtain; a scope
//! outside that (unknown ones included) is refused with `invalid_scope`
//! rather than dropped, so a typo in a service's configuration is seen at
//! once instead of surfacing later as a refused tool call. `offline_access`
//! is dropped: this grant issues no refresh token (RFC 6749 §4.4.3).

use super::{AuthorizationServer, ClientCredentials, TokenResponse};
use crate::funnel::{FunnelEvent, Step};
use crate::oauth::{
    configured_clients::{ConfiguredClient, GRANT_CLIENT_CREDENTIALS},
    error::OAuthError,
};

/// What a machine grant has shown about its attempt, for its funnel row:
/// the client it names (once known to exist here) and the user the token
/// would act as.
#[derive(Default)]
pub(super) struct MachineTrace {
    pub(super) client_id: Option<String>,
    pub(super) user_id: Option<String>,
}

/// Asking for it here is harmless but changes nothing: no refresh token.
const OFFLINE_ACCESS: &str = "offline_access";

impl AuthorizationServer {
    /// `grant_type=client_credentials`. The client authenticates the one
    /// way every grant does ([`AuthorizationServer::authenticate_client`]);
    /// only configured clients allowed this grant get a token.
    /// The attempt is one funnel step, `client_credentials`.
    pub async fn client_credentials_grant(
        &self,
        creds: &ClientCredentials,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let mut trace = MachineTrace::default();
        let result = self
            .client_credentials_traced(&mut trace, creds, scope, resource)
            .await;
        self.record_machine_step(Step::ClientCredentials, trace, &result);
        result
    }

    /// A machine grant's attempt: one step of its own (no browser, no PKCE
    /// challenge to join on); the token's first MCP call joins it (by client
    /// and user, as after a code redemption). A request naming no client
    /// known here is counted only.
    pub(super) fn record_machine_step(
        &self,
        step: Step,
        trace: MachineTrace,
        result: &Result<TokenResponse, OAuthError>,
    ) {
        let mut event = match &trace.client_id {
            Some(client_id) => FunnelEvent::new(step, client_id),
            None => FunnelEvent::new(step, "-").unknown_client(),
        };
        if let Some(user) = &trace.user_id {
            event = event.user(user);
        }
        if let Err(e) = result {
            event = event.stopped(e.reason());
        }
        self.funnel.record(event);
    }

    async fn client_credentials_traced(
        &self,
        trace: &mut MachineTrace,
        creds: &ClientCredentials,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let client = self.authenticate_named(creds, &mut trace.client_id).await?;
        let configured = match &client.configured {
            Some(c) if c.allows_grant(GRANT_CLIENT_CREDENTIALS) => c.clone(),
            Some(_) => {
                return Err(OAuthError::UnauthorizedClient(
                    "this client is not allowed the client_credentials grant (grant_types in its [[auth.local.clients]] entry)".to_owned(),
                ));
            }
            None => {
                return Err(OAuthError::UnauthorizedClient(
                    "client_credentials is only for clients configured in [[auth.local.clients]]"
                        .to_owned(),
                ));
            }
        };
        trace.user_id = Some(configured.subject.clone());
        let resource = self.machine_resource(&configured, resource)?;
        let scope = self.machine_scope(&configured, scope)?;
        self.mint(&client, &configured.subject, &scope, &resource, None, None)
    }

    /// RFC 8707: absent means this server's `/mcp` (or, for a client not
    /// allowed that, its first listed resource); present must name one the
    /// client is allowed. The token's audience is the allowed entry, as
    /// configured, not the spelling the client sent.
    fn machine_resource(
        &self,
        client: &ConfiguredClient,
        requested: Option<&str>,
    ) -> Result<String, OAuthError> {
        let allowed: Vec<&str> = if client.resources.is_empty() {
            vec![self.resource.as_str()]
        } else {
            client.resources.iter().map(String::as_str).collect()
        };
        let Some(requested) = requested else {
            return Ok(allowed
                .iter()
                .find(|r| self.is_our_resource(r))
                .or(allowed.first())
                .map_or_else(|| self.resource.clone(), |r| (*r).to_owned()));
        };
        allowed
            .iter()
            .find(|r| {
                if self.is_our_resource(r) {
                    self.is_our_resource(requested)
                } else {
                    r.trim_end_matches('/') == requested.trim_end_matches('/')
                }
            })
            .map(|r| {
                if self.is_our_resource(r) {
                    self.resource.clone()
                } else {
                    (*r).to_owned()
                }
            })
            .ok_or_else(|| {
                OAuthError::InvalidTarget(format!(
                    "resource {requested} is not one this client may obtain tokens for"
                ))
            })
    }

    /// What is asked, each within the client's allowed scopes (its `scopes`,
    /// or every advertised scope when unset); nothing asked means all of them.
    fn machine_scope(
        &self,
        client: &ConfiguredClient,
        requested: Option<&str>,
    ) -> Result<String, OAuthError> {
        // A configured scope the server does not advertise is never granted:
        // the policy knows nothing of it.
        let allowed: Vec<&String> = match &client.scopes {
            Some(scopes) => scopes
                .iter()
                .filter(|s| self.scopes_supported.contains(s))
                .collect(),
            None => self.scopes_supported.iter().collect(),
        };
        let mut asked: Vec<&str> = Vec::new();
        for s in requested
            .unwrap_or_default()
            .split_whitespace()
            .filter(|s| *s != OFFLINE_ACCESS)
        {
            if !allowed.iter().any(|a| *a == s) {
                return Err(OAuthError::InvalidScope(format!(
                    "scope {s} is not one this client may obtain"
                )));
            }
            if !asked.contains(&s) {
                asked.push(s);
            }
        }
        if asked.is_empty() {
            let all: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
            return Ok(all.join(" "));
        }
        Ok(asked.join(" "))
    }
}
