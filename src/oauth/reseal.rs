//! Re-sealing after an encryption-key change: every value sealed under a
//! previous key is opened and sealed again under the current one, row by row
//! with a conditional update, so replicas doing it at once do no harm.

use super::crypto::Sealer;
use crate::store::{SEALED_COLUMNS, Store, StoreError};

/// The sealing context of each column in [`SEALED_COLUMNS`] (the AAD binds
/// a sealed value to its column, so it must match what wrote it).
fn context(table: &str) -> &'static str {
    match table {
        "signing_keys" => super::keys::SEALING_CONTEXT,
        "auth_codes" => super::flow::CODE_CONTEXT,
        "refresh_tokens" => super::flow::REFRESH_CONTEXT,
        "upstream_tokens" => super::proxy::TOKENS_CONTEXT,
        _ => super::proxy::LOGIN_CONTEXT,
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    pub resealed: u64,
    /// Values no configured key opens (a key was dropped too early).
    pub unreadable: u64,
}

pub async fn reseal_all(store: &Store, sealer: &Sealer) -> Result<Resealed, StoreError> {
    let prefix = format!("v1.{}.", sealer.key_id());
    let mut outcome = Resealed::default();
    for column in SEALED_COLUMNS {
        for (row, old) in store.stale_sealed(*column, &prefix).await? {
            let ctx = context(column.0);
            let Ok(plain) = sealer.open(ctx, &old) else {
                outcome.unreadable += 1;
                continue;
            };
            let Ok(new) = sealer.seal(ctx, &plain) else {
                continue;
            };
            if store.replace_sealed(*column, &row, &old, &new).await? {
                outcome.resealed += 1;
            }
        }
    }
    Ok(outcome)
}
