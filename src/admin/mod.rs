//! Administration: the actions an operator takes on users, clients, grants
//! and signing keys, each audited (`target: "audit"`, fields `who`,
//! `action`, `object`, `outcome`), called by both the CLI (`mcpgate users
//! ...`) and the admin console ([`http`], `/admin`): one implementation per
//! action. The console's pages are [`pages`].

pub mod clients;
pub mod funnel;
pub mod http;
pub mod pages;
pub mod settings;

use crate::oauth::{crypto::Sealer, keys::KeyError};
use crate::store::{Store, StoreError, UserRecord};

/// Why an admin action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no user named {0}")]
    NoUser(String),
    #[error("no registered client {0}")]
    NoClient(String),
    #[error("{user} has neither a remembered consent nor live tokens for {client_id}")]
    NoGrant { user: String, client_id: String },
    #[error("no live grant {0}")]
    NoFamily(String),
    #[error("no live MCP session {0}")]
    NoSession(String),
    #[error("{0} has neither remembered consents nor refresh tokens")]
    NoClientGrants(String),
    #[error("{user} has no connection to the upstream {upstream}")]
    NoConnection { user: String, upstream: String },
    #[error("the upstream connection could not be revoked: {0}")]
    UserAuth(String),
    #[error("user names are 1 to 100 characters without spaces")]
    BadName,
    #[error("passwords are 8 to 1000 characters")]
    BadPassword,
    #[error("an admin cannot disable, demote or remove themselves here; use the CLI")]
    OwnAccount,
    #[error("hashing the password failed")]
    Hash,
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AdminError {
    /// For the audit log: why it failed, in one word.
    fn outcome(&self) -> &'static str {
        match self {
            AdminError::NoUser(_)
            | AdminError::NoClient(_)
            | AdminError::NoGrant { .. }
            | AdminError::NoFamily(_)
            | AdminError::NoSession(_)
            | AdminError::NoClientGrants(_)
            | AdminError::NoConnection { .. } => "not_found",
            AdminError::BadName | AdminError::BadPassword | AdminError::OwnAccount => "refused",
            AdminError::Store(StoreError::Conflict(_)) => "conflict",
            AdminError::Hash
            | AdminError::Keys(_)
            | AdminError::Store(_)
            | AdminError::UserAuth(_) => "error",
        }
    }
}

/// Who acts: `cli` (whoever can run the binary against the store) or
/// `admin:<user name>` (a signed-in admin in the console).
#[derive(Debug, Clone)]
pub struct Actor(String);

impl Actor {
    pub fn cli() -> Actor {
        Actor("cli".to_owned())
    }

    pub fn console(username: &str) -> Actor {
        Actor(format!("admin:{username}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Write the audit event of an action, then hand its result on.
fn audited<T>(
    actor: &Actor,
    action: &str,
    object: &str,
    result: Result<T, AdminError>,
) -> Result<T, AdminError> {
    match &result {
        Ok(_) => {
            tracing::info!(target: "audit", who = actor.as_str(), action, object, outcome = "ok", "admin action")
        }
        Err(e) => {
            tracing::warn!(target: "audit", who = actor.as_str(), action, object, outcome = e.outcome(), error = %e, "admin action failed")
        }
    }
    result
}

/// `mcpgate users list`: name, id, created, and `admin` / `disabled <time>` when so.
pub fn user_line(user: &UserRecord) -> String {
    let mut line = format!(
        "{}\t{}\tcreated {}",
        user.username, user.id, user.created_at
    );
    if user.is_admin {
        line.push_str("\tadmin");
    }
    if let Some(at) = user.disabled_at {
        line.push_str(&format!("\tdisabled {at}"));
    }
    line
}

/// `mcpgate consents grants`: the grant's id, client, scopes and times.
pub fn grant_line(grant: &crate::store::GrantRecord) -> String {
    format!(
        "{}\t{}\t{}\tlast refreshed {}\texpires {}",
        grant.family_id, grant.client_id, grant.scope, grant.last_refreshed_at, grant.expires_at
    )
}

/// How many live sessions `end_mcp_session` looks through for a handle.
const MAX_SESSIONS_SEARCHED: i64 = 100_000;

/// What the console and `mcpgate sessions list` call an MCP session: the
/// session id is a bearer handle of its client, so operators see a digest.
pub fn session_handle(id: &str) -> String {
    crate::oauth::crypto::sha256_b64(id)[..16].to_owned()
}

/// `mcpgate sessions list`: handle, transport, owner, started, expires.
pub fn session_line(session: &(String, String, Option<String>, i64, i64)) -> String {
    let (id, transport, owner, created, expires) = session;
    format!(
        "{}\t{transport}\t{}\tstarted {created}\texpires {expires}",
        session_handle(id),
        owner.as_deref().unwrap_or("-")
    )
}

/// A user name mcpgate accepts: 1 to 100 characters, no spaces or controls.
pub fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 100
        && !name.chars().any(|c| c.is_control() || c.is_whitespace())
}

async fn hash_password(password: String) -> Result<String, AdminError> {
    if password.chars().count() < 8 || password.len() > 1000 {
        return Err(AdminError::BadPassword);
    }
    tokio::task::spawn_blocking(move || crate::oauth::passwords::hash_password(&password))
        .await
        .map_err(|_| AdminError::Hash)?
        .map_err(|_| AdminError::Hash)
}

/// The administrative actions, against one store.
#[derive(Clone)]
pub struct Admin {
    pub store: Store,
}

impl Admin {
    pub fn new(store: Store) -> Admin {
        Admin { store }
    }

    /// Add a local user with `password`; `is_admin` gives the console.
    pub async fn add_user(
        &self,
        actor: &Actor,
        name: &str,
        password: String,
        is_admin: bool,
    ) -> Result<UserRecord, AdminError> {
        let result = async {
            if !valid_username(name) {
                return Err(AdminError::BadName);
            }
            let hash = hash_password(password).await?;
            Ok(self
                .store
                .create_user_with_role(name, &hash, is_admin)
                .await?)
        }
        .await;
        audited(
            actor,
            if is_admin {
                "user.add_admin"
            } else {
                "user.add"
            },
            name,
            result,
        )
    }

    /// Remove a user with their sessions and consents; their refresh tokens are revoked.
    pub async fn remove_user(&self, actor: &Actor, name: &str) -> Result<(), AdminError> {
        let result = async {
            self.not_self(actor, name).await?;
            match self.store.delete_user(name).await? {
                true => Ok(()),
                false => Err(AdminError::NoUser(name.to_owned())),
            }
        }
        .await;
        audited(actor, "user.remove", name, result)
    }

    /// Set a local user's password; sessions, consents and refresh tokens end.
    pub async fn reset_password(
        &self,
        actor: &Actor,
        name: &str,
        password: String,
    ) -> Result<(), AdminError> {
        let result = async {
            let hash = hash_password(password).await?;
            // The console names users by id, the CLI by name; the store sets by name.
            let user = self.store.find_user_by_name(name).await?;
            let username = user.map(|u| u.username).unwrap_or_else(|| name.to_owned());
            match self.store.set_password(&username, &hash).await? {
                true => Ok(()),
                false => Err(AdminError::NoUser(name.to_owned())),
            }
        }
        .await;
        audited(actor, "user.reset_password", name, result)
    }

    /// Disable (no sign-in; sessions end, refresh tokens revoked) or enable a user.
    pub async fn set_disabled(
        &self,
        actor: &Actor,
        name: &str,
        disabled: bool,
    ) -> Result<(), AdminError> {
        let result = async {
            if disabled {
                self.not_self(actor, name).await?;
            }
            match self.store.set_disabled(name, disabled).await? {
                true => Ok(()),
                false => Err(AdminError::NoUser(name.to_owned())),
            }
        }
        .await;
        audited(
            actor,
            if disabled {
                "user.disable"
            } else {
                "user.enable"
            },
            name,
            result,
        )
    }

    /// Give or take the admin role.
    pub async fn set_admin(
        &self,
        actor: &Actor,
        name: &str,
        is_admin: bool,
    ) -> Result<(), AdminError> {
        let result = async {
            if !is_admin {
                self.not_self(actor, name).await?;
            }
            match self.store.set_admin(name, is_admin).await? {
                true => Ok(()),
                false => Err(AdminError::NoUser(name.to_owned())),
            }
        }
        .await;
        audited(
            actor,
            if is_admin {
                "user.grant_admin"
            } else {
                "user.revoke_admin"
            },
            name,
            result,
        )
    }

    /// Remove a registered client with its consents; its refresh tokens are revoked.
    pub async fn remove_client(&self, actor: &Actor, client_id: &str) -> Result<(), AdminError> {
        let result = match self.store.delete_client(client_id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(AdminError::NoClient(client_id.to_owned())),
            Err(e) => Err(e.into()),
        };
        audited(actor, "client.remove", client_id, result)
    }

    /// Forget every consent to `client_id` and revoke its refresh tokens,
    /// for clients whose registration is not the store's to remove (named
    /// by a metadata document, or configured): `(consents, tokens)`.
    pub async fn revoke_client_grants(
        &self,
        actor: &Actor,
        client_id: &str,
    ) -> Result<(u64, u64), AdminError> {
        let result = match self.store.revoke_client_grants(client_id).await {
            Ok((0, 0)) => Err(AdminError::NoClientGrants(client_id.to_owned())),
            Ok(done) => Ok(done),
            Err(e) => Err(e.into()),
        };
        audited(actor, "client.revoke_grants", client_id, result)
    }

    /// End a live MCP session, named by its handle ([`session_handle`]) or
    /// id, exactly as its client's `DELETE /mcp` would: on every replica.
    pub async fn end_mcp_session(
        &self,
        actor: &Actor,
        handle: &str,
        now: i64,
    ) -> Result<(), AdminError> {
        let result = async {
            let id = self
                .store
                .live_mcp_sessions(now, MAX_SESSIONS_SEARCHED)
                .await?
                .into_iter()
                .map(|(id, ..)| id)
                .find(|id| id == handle || session_handle(id) == handle)
                .ok_or_else(|| AdminError::NoSession(handle.to_owned()))?;
            crate::mcp::sessions::end_everywhere(&self.store, &id, now).await?;
            Ok(())
        }
        .await;
        audited(actor, "session.end", handle, result)
    }

    /// Forget `user`'s consent to `client_id` and revoke the refresh tokens
    /// it produced: `(a remembered consent existed, refresh tokens revoked)`.
    pub async fn revoke_consent(
        &self,
        actor: &Actor,
        user: &str,
        client_id: &str,
    ) -> Result<(bool, u64), AdminError> {
        let result = async {
            let found = self.store.find_user_by_name(user).await?;
            let user_id = found.ok_or_else(|| AdminError::NoUser(user.to_owned()))?.id;
            let (remembered, revoked) = self.store.revoke_consent(&user_id, client_id).await?;
            if !remembered && revoked == 0 {
                return Err(AdminError::NoGrant {
                    user: user.to_owned(),
                    client_id: client_id.to_owned(),
                });
            }
            Ok((remembered, revoked))
        }
        .await;
        audited(
            actor,
            "consent.revoke",
            &format!("{user} -> {client_id}"),
            result,
        )
    }

    /// Remove a user's connection to a `user_auth` upstream (user by id);
    /// its tokens are revoked at the upstream's authorization server too,
    /// best effort (`UserAuth::revoke`). The next call asks the user again.
    pub async fn revoke_connection(
        &self,
        actor: &Actor,
        auth: &crate::upstream::user_auth::UserAuth,
        user: &str,
        upstream: &str,
    ) -> Result<(), AdminError> {
        let result = async {
            let found = self.store.find_user(user).await?;
            let user_id = found.ok_or_else(|| AdminError::NoUser(user.to_owned()))?.id;
            match auth.revoke(upstream, &user_id).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(AdminError::NoConnection {
                    user: user.to_owned(),
                    upstream: upstream.to_owned(),
                }),
                Err(e) => Err(AdminError::UserAuth(e.to_string())),
            }
        }
        .await;
        audited(
            actor,
            "connection.revoke",
            &format!("{user} -> {upstream}"),
            result,
        )
    }

    /// Revoke one grant (a refresh-token family): the refresh tokens revoked.
    pub async fn revoke_grant(
        &self,
        actor: &Actor,
        family_id: &str,
        now: i64,
    ) -> Result<u64, AdminError> {
        let result = match self.store.revoke_family(family_id, now).await {
            Ok(0) => Err(AdminError::NoFamily(family_id.to_owned())),
            Ok(n) => Ok(n),
            Err(e) => Err(e.into()),
        };
        audited(actor, "grant.revoke", family_id, result)
    }

    /// Add a signing key (it signs after the publication delay); the others retire.
    pub async fn rotate_key(
        &self,
        actor: &Actor,
        sealer: &Sealer,
        token_lifetime_secs: i64,
        now: i64,
    ) -> Result<String, AdminError> {
        let result = crate::oauth::keys::rotate_at(&self.store, sealer, token_lifetime_secs, now)
            .await
            .map_err(AdminError::from);
        let object = result.as_deref().unwrap_or("-").to_owned();
        audited(actor, "key.rotate", &object, result)
    }

    /// The console refuses to lock its user out of it (the CLI does not).
    async fn not_self(&self, actor: &Actor, name: &str) -> Result<(), AdminError> {
        let Some(me) = actor.as_str().strip_prefix("admin:") else {
            return Ok(());
        };
        match self.store.find_user_by_name(name).await {
            Ok(Some(user)) if user.username == me => Err(AdminError::OwnAccount),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_visible_and_bounded() {
        assert!(valid_username("alice"));
        assert!(valid_username("<b>x</b>"));
        assert!(!valid_username(""));
        assert!(!valid_username("a b"));
        assert!(!valid_username("a\u{7}"));
        assert!(!valid_username(&"x".repeat(101)));
    }

    #[test]
    fn the_console_actor_is_distinct_from_the_cli() {
        assert_eq!(Actor::cli().as_str(), "cli");
        assert_eq!(Actor::console("root").as_str(), "admin:root");
    }
}
