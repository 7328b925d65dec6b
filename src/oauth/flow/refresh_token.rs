//! Self-describing refresh tokens and the rotation that needs no read.
//!
//! A refresh token is its grant sealed with the store's key (family, client,
//! user, scope, resource, expiry, and 32 random bytes). Presented back, it
//! tells `/token` what the successor and the access token must say before
//! anything is read, so a rotation is one store write: the conditional
//! UPDATE of the presented token's row (by its hash: not rotated, not
//! revoked, not expired, issued to this client) with the successor's INSERT.
//!
//! The row stays the authority. The token is only stored hashed; opening it
//! proves that mcpgate made it, not that it is live. A token that does not
//! open (altered, forged, sealed with a retired key, or issued before this
//! format) or whose write finds no live row goes the long way
//! (`refresh_traced` in `grants.rs`), which reads the client and the row and
//! answers exactly as before: unknown, expired, revoked, another client's,
//! or a reuse (replay within the grace window, else the family is revoked).

use serde::{Deserialize, Serialize};

use super::{AuthorizationServer, Client, TokenResponse, grants::REFRESH_CONTEXT};
use crate::oauth::{
    crypto::{random_token, sha256_b64},
    error::OAuthError,
};
use crate::store::{Consumed, NewRefresh};

/// Where a refresh token's own claims are sealed (not the stored response's
/// context: a sealed response is never accepted as a token, nor the reverse).
const CLAIMS_CONTEXT: &str = "refresh_tokens.presented";

/// Stands for the sealed value's dots in the token: three dot-separated parts
/// would look like a JWT (to `/introspect`, and to clients that peek into
/// tokens). Neither the key id nor the base64url body contains it.
const TOKEN_SEPARATOR: &str = "~";

/// The grant a refresh token belongs to, as its claims or its row say.
pub(super) struct Grant<'a> {
    pub family_id: &'a str,
    pub client_id: &'a str,
    pub user_id: &'a str,
    /// The family's granted scope (a narrowed refresh keeps it).
    pub scope: &'a str,
    pub resource: &'a str,
}

/// What a refresh token says about its grant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct RefreshClaims {
    /// 32 random bytes: the token is as unguessable as a random one even to
    /// someone who knows every other claim.
    #[serde(rename = "n")]
    nonce: String,
    #[serde(rename = "f")]
    pub family_id: String,
    #[serde(rename = "c")]
    pub client_id: String,
    #[serde(rename = "u")]
    pub user_id: String,
    /// The family's granted scope (a narrowed refresh keeps it).
    #[serde(rename = "s")]
    pub scope: String,
    #[serde(rename = "r")]
    pub resource: String,
    #[serde(rename = "e")]
    pub expires_at: i64,
}

impl AuthorizationServer {
    /// A new refresh token for a grant, and the row that stores its hash.
    pub(super) fn issue_refresh_token(
        &self,
        family_id: &str,
        client_id: &str,
        user_id: &str,
        scope: &str,
        resource: &str,
        now: i64,
    ) -> Result<(String, NewRefresh), OAuthError> {
        let claims = RefreshClaims {
            nonce: random_token(32)?,
            family_id: family_id.to_owned(),
            client_id: client_id.to_owned(),
            user_id: user_id.to_owned(),
            scope: scope.to_owned(),
            resource: resource.to_owned(),
            expires_at: now + self.config.refresh_token_ttl_secs as i64,
        };
        let token = self
            .sealer
            .seal_json(CLAIMS_CONTEXT, &claims)?
            .replace('.', TOKEN_SEPARATOR);
        let row = NewRefresh {
            token_hash: sha256_b64(&token),
            family_id: claims.family_id,
            client_id: claims.client_id,
            user_id: claims.user_id,
            scope: claims.scope,
            resource: claims.resource,
            expires_at: claims.expires_at,
        };
        Ok((token, row))
    }

    /// The claims of a refresh token mcpgate sealed; `None` for anything else
    /// (which the long way then looks up by hash like any token).
    pub(super) fn refresh_claims(&self, token: &str) -> Option<RefreshClaims> {
        if token.contains('.') {
            return None;
        }
        let sealed = token.replace(TOKEN_SEPARATOR, ".");
        self.sealer.open_json(CLAIMS_CONTEXT, &sealed).ok()
    }

    /// The rotation in one write, for a token whose claims name `client`
    /// (already authenticated). `None` when any check or the write says no:
    /// nothing was written, and the caller goes the long way for the exact
    /// answer. `scope` and `resource` are the request's.
    pub(super) async fn rotate_described(
        &self,
        client: &Client,
        claims: &RefreshClaims,
        token_hash: &str,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<Option<TokenResponse>, OAuthError> {
        let now = self.clock.now();
        if claims.client_id != client.client_id
            || claims.expires_at <= now
            || resource.is_some_and(|r| !self.is_our_resource(r))
        {
            return Ok(None);
        }
        let Ok(scope) = super::grants::narrowed_scope(&claims.scope, scope) else {
            return Ok(None);
        };
        let grant = Grant {
            family_id: &claims.family_id,
            client_id: &claims.client_id,
            user_id: &claims.user_id,
            scope: &claims.scope,
            resource: &claims.resource,
        };
        self.rotate_to_successor(client, &grant, &scope, token_hash, now)
            .await
    }

    /// The rotation's one write, on both ways: the successor token and the
    /// response that carries it (`scope`, the request's, possibly narrowed),
    /// sealed for a replay, stored in place of the token `token_hash`. `None`
    /// when the write finds no live row of this client's (rotated, revoked,
    /// expired): nothing was written.
    pub(super) async fn rotate_to_successor(
        &self,
        client: &Client,
        grant: &Grant<'_>,
        scope: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<TokenResponse>, OAuthError> {
        let profile = self.profile_of(grant.user_id).await?;
        let (next, row) = self.issue_refresh_token(
            grant.family_id,
            grant.client_id,
            grant.user_id,
            grant.scope,
            grant.resource,
            now,
        )?;
        let response = self.mint(
            client,
            grant.user_id,
            scope,
            grant.resource,
            Some(&next),
            profile.as_ref(),
        )?;
        let sealed = self.sealer.seal_json(REFRESH_CONTEXT, &response)?;
        let touch = client.touch_due(now);
        // The write checks what the claims cannot: that the row is live
        // (not rotated, not revoked: a removed user or client revoked it),
        // unexpired and this client's.
        if self
            .store
            .rotate_refresh(token_hash, now, &sealed, &row, touch)
            .await?
            == Consumed::Lost
        {
            return Ok(None);
        }
        if touch {
            self.registered_clients.touched(&client.client_id, now);
        }
        // Proxy mode: only the winner of the rotation talks to the IdP
        // (concurrent upstream refreshes would look like a replay there), and
        // a grant the IdP ended ends here too.
        self.check_idp_grant(grant.family_id, now).await?;
        Ok(Some(response))
    }
}
