//! The downstream sessions mcpgate serves, for what an upstream sends to a
//! session rather than to one call: list changes, resource updates.

use std::{collections::HashMap, sync::Mutex};

use rmcp::{
    RoleServer,
    service::{Peer, SubscriptionSink},
};

/// The downstream sessions mcpgate serves, for notifications that belong to
/// a session rather than to one call (list changes, resource updates).
#[derive(Default)]
pub struct Hub {
    sessions: Mutex<HashMap<u64, (String, Peer<RoleServer>)>>,
    /// (upstream, uri) → sessions subscribed to it.
    subscriptions: Mutex<HashMap<(String, String), Vec<u64>>>,
    /// Open 2026-07-28 `subscriptions/listen` streams; each filters for itself.
    listeners: Mutex<HashMap<u64, (String, SubscriptionSink)>>,
}

impl Hub {
    pub fn register(&self, session: u64, owner: String, peer: Peer<RoleServer>) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.retain(|_, (_, p)| !p.is_transport_closed());
            sessions.insert(session, (owner, peer));
        }
    }

    pub fn listen(&self, id: u64, owner: String, sink: SubscriptionSink) {
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.insert(id, (owner, sink));
        }
    }

    pub fn unlisten(&self, id: u64) {
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.remove(&id);
        }
    }

    pub fn sinks(&self, owner: Option<&str>) -> Vec<SubscriptionSink> {
        self.listeners
            .lock()
            .map(|l| {
                l.values()
                    .filter(|(o, _)| owner.is_none_or(|w| w == o))
                    .map(|(_, s)| s.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn subscribe(&self, upstream: &str, uri: &str, session: u64, subscribe: bool) {
        if let Ok(mut subs) = self.subscriptions.lock() {
            let entry = subs
                .entry((upstream.to_owned(), uri.to_owned()))
                .or_default();
            entry.retain(|s| *s != session);
            if subscribe {
                entry.push(session);
            }
            subs.retain(|_, v| !v.is_empty());
        }
    }

    /// Sessions (of `owner`, when the link serves one principal).
    pub fn peers(&self, owner: Option<&str>) -> Vec<Peer<RoleServer>> {
        self.sessions
            .lock()
            .map(|s| {
                s.values()
                    .filter(|(o, p)| owner.is_none_or(|w| w == o) && !p.is_transport_closed())
                    .map(|(_, p)| p.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn subscribers(&self, upstream: &str, uri: &str) -> Vec<Peer<RoleServer>> {
        let ids = self
            .subscriptions
            .lock()
            .ok()
            .and_then(|s| s.get(&(upstream.to_owned(), uri.to_owned())).cloned())
            .unwrap_or_default();
        let Ok(sessions) = self.sessions.lock() else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| sessions.get(id).map(|(_, p)| p.clone()))
            .collect()
    }
}
