//! The console's and `mcpgate clients list --all`'s view of clients, of
//! every kind: registered here (dynamic registration), configured
//! (`[[auth.local.clients]]`) and named by a metadata document URL (CIMD),
//! each with its last use and what removing it means.

use std::{collections::BTreeMap, sync::Arc};

use super::{Admin, AdminError};
use crate::oauth::configured_clients::ConfiguredClient;
use crate::store::{ClientActivity, ClientRecord};

/// Where a client comes from, which decides how it is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKind {
    /// Registered itself here: removing deletes the registration too.
    Registered { confidential: bool },
    /// In `[[auth.local.clients]]`: its grants can be revoked here; it is
    /// removed from the configuration.
    Configured,
    /// Named by a metadata document URL: its grants can be revoked; it can
    /// sign in again (anyone may publish a document).
    Document,
}

impl ClientKind {
    pub fn label(&self) -> &'static str {
        match self {
            ClientKind::Registered { confidential: true } => "registered, confidential",
            ClientKind::Registered {
                confidential: false,
            } => "registered, public",
            ClientKind::Configured => "configured",
            ClientKind::Document => "metadata document (CIMD)",
        }
    }
}

/// One client as operators see it.
#[derive(Debug, Clone)]
pub struct ClientOverview {
    pub client_id: String,
    pub name: Option<String>,
    pub kind: ClientKind,
    pub redirect_uris: Vec<String>,
    /// When it registered (registered clients only).
    pub registered_at: Option<i64>,
    /// Its newest use the store knows: a token obtained.
    pub last_used: Option<i64>,
    pub live_grants: i64,
    pub consents: i64,
}

impl ClientOverview {
    fn registered(record: &ClientRecord) -> ClientOverview {
        let metadata: serde_json::Value =
            serde_json::from_str(&record.metadata).unwrap_or_default();
        ClientOverview {
            client_id: record.client_id.clone(),
            name: metadata["client_name"].as_str().map(str::to_owned),
            kind: ClientKind::Registered {
                confidential: record.secret_hash.is_some(),
            },
            redirect_uris: metadata["redirect_uris"]
                .as_array()
                .map(|uris| {
                    uris.iter()
                        .filter_map(|u| u.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            registered_at: Some(record.created_at),
            last_used: record.last_used_at,
            live_grants: 0,
            consents: 0,
        }
    }

    fn configured(client: &ConfiguredClient) -> ClientOverview {
        ClientOverview {
            client_id: client.client_id.clone(),
            name: client.client_name.clone(),
            kind: ClientKind::Configured,
            redirect_uris: client.redirect_uris.clone(),
            registered_at: None,
            last_used: None,
            live_grants: 0,
            consents: 0,
        }
    }

    fn document(client_id: &str) -> ClientOverview {
        ClientOverview {
            client_id: client_id.to_owned(),
            // The document is cached per replica, not stored: its host names it.
            name: url::Url::parse(client_id)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned)),
            kind: ClientKind::Document,
            redirect_uris: Vec::new(),
            registered_at: None,
            last_used: None,
            live_grants: 0,
            consents: 0,
        }
    }

    fn add(&mut self, activity: &ClientActivity) {
        self.last_used = self.last_used.max(activity.last_token_at);
        self.live_grants = activity.live_grants;
        self.consents = activity.consents;
    }
}

/// Every client: registered and configured ones, then the ones the store
/// knows only from grants and consents, whose id is a document URL.
/// Grants of an id that is none of these (a removed client's revoked
/// tokens) are left out.
pub fn overview(
    registered: &[ClientRecord],
    configured: &[Arc<ConfiguredClient>],
    activity: &[ClientActivity],
) -> Vec<ClientOverview> {
    let mut all: BTreeMap<&str, ClientOverview> = BTreeMap::new();
    for c in configured {
        all.insert(&c.client_id, ClientOverview::configured(c));
    }
    for r in registered {
        all.entry(&r.client_id)
            .or_insert_with(|| ClientOverview::registered(r));
    }
    for a in activity {
        match all.get_mut(a.client_id.as_str()) {
            Some(known) => known.add(a),
            None if a.client_id.starts_with("https://") => {
                let mut doc = ClientOverview::document(&a.client_id);
                doc.add(a);
                all.insert(&a.client_id, doc);
            }
            None => {}
        }
    }
    let mut list: Vec<ClientOverview> = all.into_values().collect();
    list.sort_by(|a, b| {
        b.last_used
            .cmp(&a.last_used)
            .then(a.client_id.cmp(&b.client_id))
    });
    list
}

impl Admin {
    /// [`overview`] from the store, with `configured` from the configuration.
    pub async fn clients(
        &self,
        configured: &[Arc<ConfiguredClient>],
        now: i64,
    ) -> Result<Vec<ClientOverview>, AdminError> {
        let registered = self.store.list_clients().await?;
        let activity = self.store.client_activity(now).await?;
        Ok(overview(&registered, configured, &activity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(id: &str, last: Option<i64>, live: i64, consents: i64) -> ClientActivity {
        ClientActivity {
            client_id: id.to_owned(),
            last_token_at: last,
            live_grants: live,
            consents,
        }
    }

    #[test]
    fn every_kind_is_listed_once_with_its_last_use() {
        let registered = vec![ClientRecord {
            client_id: "dyn-1".into(),
            secret_hash: None,
            metadata: r#"{"client_name":"Dyn","redirect_uris":["http://127.0.0.1/cb"]}"#.into(),
            created_at: 10,
            last_used_at: Some(20),
        }];
        let activity = vec![
            activity("dyn-1", Some(30), 1, 1),
            activity("https://app.example/client.json", Some(40), 2, 0),
            activity("gone-client", Some(50), 0, 0),
        ];
        let list = overview(&registered, &[], &activity);
        let ids: Vec<&str> = list.iter().map(|c| c.client_id.as_str()).collect();
        // Newest use first; a removed client's leftover tokens are not a client.
        assert_eq!(ids, ["https://app.example/client.json", "dyn-1"]);
        assert_eq!(list[0].kind, ClientKind::Document);
        assert_eq!(list[0].name.as_deref(), Some("app.example"));
        assert_eq!(list[0].live_grants, 2);
        assert_eq!(
            list[1].kind,
            ClientKind::Registered {
                confidential: false
            }
        );
        assert_eq!(list[1].last_used, Some(30));
        assert_eq!(list[1].redirect_uris, ["http://127.0.0.1/cb"]);
    }
}
