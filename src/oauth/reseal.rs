//! Re-sealing after an encryption-key change: every value sealed under a
//! previous key is opened and sealed again under the current one, row by row
//! with a conditional update, so replicas doing it at once do no harm.

use super::crypto::Sealer;
use crate::store::{SealedColumn, Store, StoreError};

/// The sealing context of each sealed column (the AAD binds a sealed value
/// to its column, so it must match what wrote it). Exhaustive on purpose: a
/// new sealed column does not compile until it is given its context here.
fn context(column: SealedColumn) -> &'static str {
    match column {
        SealedColumn::SigningKeyPrivate => super::keys::SEALING_CONTEXT,
        SealedColumn::CodeResponse => super::flow::CODE_CONTEXT,
        SealedColumn::RefreshResponse => super::flow::REFRESH_CONTEXT,
        SealedColumn::UpstreamTokens => super::proxy::TOKENS_CONTEXT,
        SealedColumn::UpstreamLoginSecrets => super::proxy::LOGIN_CONTEXT,
        SealedColumn::UserUpstreamTokens => crate::store::TOKENS_CONTEXT,
        SealedColumn::ConnectAttemptSecrets => crate::store::ATTEMPT_CONTEXT,
        SealedColumn::UpstreamClient => crate::store::CLIENT_CONTEXT,
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    pub resealed: u64,
    /// Values no configured key opens (a key was dropped too early).
    pub unreadable: u64,
}

pub async fn reseal_all(store: &Store, sealer: &Sealer) -> Result<Resealed, StoreError> {
    let prefix = sealer.current_prefix();
    let mut outcome = Resealed::default();
    for column in SealedColumn::ALL {
        let ctx = context(column);
        for (row, old) in store.stale_sealed(column, &prefix).await? {
            let Ok(plain) = sealer.open(ctx, &old) else {
                outcome.unreadable += 1;
                continue;
            };
            let Ok(new) = sealer.seal(ctx, &plain) else {
                continue;
            };
            if store.replace_sealed(column, &row, &old, &new).await? {
                outcome.resealed += 1;
            }
        }
    }
    Ok(outcome)
}
