//! `POST /introspect` (RFC 7662: who may see what, and the answer) and
//! `POST /revoke` (RFC 7009).

use serde::Serialize;

use super::{AuthorizationServer, register::ClientCredentials};
use crate::auth::verify::IssuerVerifier;
use crate::oauth::{
    clients::AuthMethod,
    crypto::{ct_eq, sha256_b64},
    error::OAuthError,
};

/// An authenticated `/introspect` caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introspector {
    /// A configured resource server: any token.
    ResourceServer,
    /// A registered confidential client: only tokens issued to it. Anything
    /// else is reported inactive (RFC 7662 §2.2 allows it), so the endpoint
    /// is no status oracle for stolen tokens and discloses no subjects.
    Client(String),
}

impl Introspector {
    /// May this caller learn about a token issued to `client_id`?
    pub fn may_see(&self, client_id: Option<&str>) -> bool {
        match self {
            Introspector::ResourceServer => true,
            Introspector::Client(own) => client_id == Some(own.as_str()),
        }
    }
}

/// An RFC 7662 answer: `{"active": false}`, or `active: true` with what
/// the token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introspection {
    Inactive,
    Active(ActiveToken),
}

/// What an active token says (RFC 7662 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveToken {
    pub iss: String,
    pub sub: String,
    pub client_id: Option<String>,
    pub scope: String,
    /// Access tokens only; refresh tokens are for this server alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<Vec<String>>,
    pub exp: Option<i64>,
    /// `Bearer` or `refresh_token`.
    pub token_type: &'static str,
}

impl Serialize for Introspection {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            active: bool,
            #[serde(flatten)]
            token: Option<&'a ActiveToken>,
        }
        let token = match self {
            Introspection::Inactive => None,
            Introspection::Active(token) => Some(token),
        };
        Wire {
            active: token.is_some(),
            token,
        }
        .serialize(serializer)
    }
}

impl AuthorizationServer {
    /// Authenticate an introspection caller: a configured resource server
    /// (`introspection_clients`), or a confidential client, which learns only
    /// about its own tokens. Public clients cannot introspect (401).
    pub async fn introspector(
        &self,
        creds: &ClientCredentials,
    ) -> Result<Introspector, OAuthError> {
        if let Some(id) = creds.client_id.as_deref()
            && let Some(rs) = self
                .config
                .introspection_clients
                .iter()
                .find(|c| c.client_id == id)
        {
            use secrecy::ExposeSecret;
            let presented = creds.secret.as_deref().ok_or(OAuthError::InvalidClient)?;
            // Hashed first, so the comparison's time says nothing about length.
            return if ct_eq(
                &sha256_b64(rs.client_secret.expose_secret()),
                &sha256_b64(presented),
            ) {
                Ok(Introspector::ResourceServer)
            } else {
                Err(OAuthError::InvalidClient)
            };
        }
        let client = self.authenticate_client(creds).await?;
        if client.metadata.auth_method() == AuthMethod::None {
            return Err(OAuthError::InvalidClient);
        }
        Ok(Introspector::Client(client.client_id))
    }

    /// RFC 7662 for a refresh token: inactive unless the caller may see it.
    pub async fn introspect_refresh(
        &self,
        caller: &Introspector,
        token: &str,
    ) -> Result<Introspection, OAuthError> {
        let now = self.clock.now();
        Ok(match self.store.get_refresh(&sha256_b64(token)).await? {
            Some(r)
                if r.revoked_at.is_none()
                    && r.rotated_at.is_none()
                    && r.expires_at > now
                    && caller.may_see(Some(&r.client_id)) =>
            {
                Introspection::Active(ActiveToken {
                    iss: self.issuer.clone(),
                    sub: r.user_id,
                    client_id: Some(r.client_id),
                    scope: r.scope,
                    aud: None,
                    exp: Some(r.expires_at),
                    token_type: "refresh_token",
                })
            }
            _ => Introspection::Inactive,
        })
    }

    /// RFC 7662: authenticate the caller, then describe `token`. A JWT is
    /// checked by `verifier` (the one `/mcp` uses); anything else is looked
    /// up as a refresh token. Whatever the caller may not see is inactive.
    pub async fn introspect(
        &self,
        creds: &ClientCredentials,
        token: Option<&str>,
        verifier: &IssuerVerifier,
    ) -> Result<Introspection, OAuthError> {
        let caller = self.introspector(creds).await?;
        let token =
            token.ok_or_else(|| OAuthError::InvalidRequest("token is missing".to_owned()))?;
        if token.split('.').count() == 3 {
            return Ok(match verifier.verify(token).await {
                Ok(p) if caller.may_see(p.client_id.as_deref()) => {
                    Introspection::Active(ActiveToken {
                        iss: p.issuer,
                        sub: p.subject,
                        client_id: p.client_id,
                        scope: p.scopes.into_iter().collect::<Vec<_>>().join(" "),
                        aud: Some(p.audience),
                        exp: p.expires_at,
                        token_type: "Bearer",
                    })
                }
                _ => Introspection::Inactive,
            });
        }
        self.introspect_refresh(&caller, token).await
    }

    /// RFC 7009: revoke a refresh token's family; unknown tokens are fine.
    pub async fn revoke(&self, creds: &ClientCredentials, token: &str) -> Result<(), OAuthError> {
        let client = self.authenticate_client(creds).await?;
        if let Some(record) = self.store.get_refresh(&sha256_b64(token)).await?
            && record.client_id == client.client_id
        {
            self.store
                .revoke_family(&record.family_id, self.clock.now())
                .await?;
            self.end_upstream_grant(&record.family_id).await?;
        }
        // Access tokens are self-contained JWTs: they lapse at `exp`.
        Ok(())
    }
}
