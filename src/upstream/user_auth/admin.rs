//! `mcpgate connections list|revoke`: users' connections, for operators.
//! Returns the lines to print; `main.rs` prints them.

use std::sync::Arc;

use super::{UserAuth, UserAuthError};
use crate::{oauth::settings::LocalAuthSettings, store::Store, upstream::settings::GatewayConfig};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("connections exist only with auth.mode = \"local\" or \"proxy\"")]
    NoLocalAuth,
    #[error("no [[upstreams]] entry has user_auth")]
    NoUserAuth,
    #[error("no user named {0}")]
    NoSuchUser(String),
    #[error("{0} has no such connection")]
    NoConnection(String),
    #[error(transparent)]
    Setup(#[from] crate::oauth::setup::SetupError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    UserAuth(#[from] UserAuthError),
}

/// The `UserAuth` of a configuration, for one command.
pub fn open(
    gateway: &GatewayConfig,
    local: Option<&LocalAuthSettings>,
    public_origin: String,
    store: &Store,
) -> Result<Arc<UserAuth>, AdminError> {
    let local = local.ok_or(AdminError::NoLocalAuth)?;
    let sealer = Arc::new(crate::oauth::setup::sealer(local)?);
    UserAuth::new(
        gateway,
        store.clone(),
        sealer,
        crate::clock::system(),
        public_origin,
    )?
    .ok_or(AdminError::NoUserAuth)
}

async fn user_id(store: &Store, name: &str) -> Result<String, AdminError> {
    match store.find_user_by_name(name).await? {
        Some(user) => Ok(user.id),
        None => Err(AdminError::NoSuchUser(name.to_owned())),
    }
}

/// One line per connection of `user`.
pub async fn list(auth: &UserAuth, store: &Store, user: &str) -> Result<Vec<String>, AdminError> {
    Ok(auth
        .connections(&user_id(store, user).await?)
        .await?
        .into_iter()
        .map(|c| {
            format!(
                "{}\tconnected {}\trefreshed {}\texpires {}\t{}",
                c.upstream,
                c.connected_at,
                c.refreshed_at,
                c.expires_at
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".to_owned()),
                c.scope.unwrap_or_default()
            )
        })
        .collect())
}

/// Revoke `user`'s connection to `upstream`, or every one; a line per revocation.
pub async fn revoke(
    auth: &UserAuth,
    store: &Store,
    user: &str,
    upstream: Option<String>,
) -> Result<Vec<String>, AdminError> {
    let id = user_id(store, user).await?;
    let names: Vec<String> = match upstream {
        Some(u) => vec![u],
        None => auth
            .connections(&id)
            .await?
            .into_iter()
            .map(|c| c.upstream)
            .collect(),
    };
    let mut lines = Vec::new();
    for name in &names {
        if auth.revoke(name, &id).await? {
            lines.push(format!("revoked {user}'s connection to {name}"));
        }
    }
    if lines.is_empty() {
        return Err(AdminError::NoConnection(user.to_owned()));
    }
    Ok(lines)
}
