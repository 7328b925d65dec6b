//! The downstream sessions mcpgate serves, for what an upstream sends to a
//! session rather than to one call: list changes, resource updates.

use std::{collections::HashMap, sync::Mutex};

use rmcp::{
    RoleServer,
    service::{Peer, SubscriptionSink},
};

use super::locks::lock;

/// Whether a session starts or stops following a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    Subscribe,
    Unsubscribe,
}

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
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, (_, p)| !p.is_transport_closed());
        sessions.insert(session, (owner, peer));
    }

    pub fn listen(&self, id: u64, owner: String, sink: SubscriptionSink) {
        lock(&self.listeners).insert(id, (owner, sink));
    }

    pub fn unlisten(&self, id: u64) {
        lock(&self.listeners).remove(&id);
    }

    pub fn sinks(&self, owner: Option<&str>) -> Vec<SubscriptionSink> {
        lock(&self.listeners)
            .values()
            .filter(|(o, _)| owner.is_none_or(|w| w == o))
            .map(|(_, s)| s.clone())
            .collect()
    }

    pub fn subscribe(&self, upstream: &str, uri: &str, session: u64, change: Subscription) {
        let mut subs = lock(&self.subscriptions);
        let entry = subs
            .entry((upstream.to_owned(), uri.to_owned()))
            .or_default();
        entry.retain(|s| *s != session);
        if change == Subscription::Subscribe {
            entry.push(session);
        }
        subs.retain(|_, v| !v.is_empty());
    }

    /// Whether any session or listen stream (of `owner`, when the link
    /// serves one principal) still follows `uri` on `upstream`: the
    /// upstream's subscription is one per link, shared by all of them.
    pub fn followed(&self, upstream: &str, uri: &str, owner: Option<&str>) -> bool {
        let ids = lock(&self.subscriptions)
            .get(&(upstream.to_owned(), uri.to_owned()))
            .cloned()
            .unwrap_or_default();
        let Some(owner) = owner else {
            return !ids.is_empty();
        };
        let sessions = lock(&self.sessions);
        let listeners = lock(&self.listeners);
        ids.iter().any(|id| {
            let of = sessions
                .get(id)
                .map(|(o, _)| o)
                .or_else(|| listeners.get(id).map(|(o, _)| o));
            // A listen stream subscribes before it is registered: unknown
            // ids count, as the cautious choice is to keep the subscription.
            of.is_none_or(|o| o == owner)
        })
    }

    /// Sessions (of `owner`, when the link serves one principal).
    pub fn peers(&self, owner: Option<&str>) -> Vec<Peer<RoleServer>> {
        lock(&self.sessions)
            .values()
            .filter(|(o, p)| owner.is_none_or(|w| w == o) && !p.is_transport_closed())
            .map(|(_, p)| p.clone())
            .collect()
    }

    pub fn subscribers(&self, upstream: &str, uri: &str) -> Vec<Peer<RoleServer>> {
        let ids = lock(&self.subscriptions)
            .get(&(upstream.to_owned(), uri.to_owned()))
            .cloned()
            .unwrap_or_default();
        let sessions = lock(&self.sessions);
        ids.iter()
            .filter_map(|id| sessions.get(id).map(|(_, p)| p.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_stays_followed_while_any_session_or_stream_of_the_links_owner_follows_it() {
        let hub = Hub::default();
        hub.subscribe("fx", "u", 1, Subscription::Subscribe);
        hub.subscribe("fx", "u", 2, Subscription::Subscribe);
        hub.subscribe("fx", "u", 1, Subscription::Unsubscribe);
        assert!(hub.followed("fx", "u", None));
        assert!(!hub.followed("fx", "other", None));
        assert!(!hub.followed("other", "u", None));
        hub.subscribe("fx", "u", 2, Subscription::Unsubscribe);
        assert!(!hub.followed("fx", "u", None));
    }
}
