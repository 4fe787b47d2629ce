//! What each resource type is subscribed to, shared between the handler (which changes it
//! as clusters and listeners come and go) and the stream task (which turns changes into
//! requests).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use tokio::sync::Notify;

/// The subscription of one resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interest {
    /// Every resource of the type (CDS, LDS).
    Wildcard,
    /// These names (EDS, RDS, SDS). An empty set unsubscribes everything.
    Names(BTreeSet<String>),
}

/// The subscriptions, in the order types were first subscribed (Envoy's ADS order: CDS
/// before EDS, LDS before RDS).
#[derive(Default)]
pub struct Subscriptions {
    by_type: Mutex<(Vec<String>, BTreeMap<String, Interest>)>,
    changed: Notify,
}

impl Subscriptions {
    /// Sets the interest of `type_url`; wakes the stream when it changed.
    pub fn set(&self, type_url: &str, interest: Interest) {
        let mut g = self.by_type.lock().unwrap_or_else(|e| e.into_inner());
        let (order, map) = &mut *g;
        if map.get(type_url) == Some(&interest) {
            return;
        }
        if !map.contains_key(type_url) {
            order.push(type_url.to_string());
        }
        map.insert(type_url.to_string(), interest);
        drop(g);
        self.changed.notify_one();
    }

    /// Every subscribed type with its interest, in subscription order.
    pub fn snapshot(&self) -> Vec<(String, Interest)> {
        let g = self.by_type.lock().unwrap_or_else(|e| e.into_inner());
        g.0.iter()
            .filter_map(|t| g.1.get(t).map(|i| (t.clone(), i.clone())))
            .collect()
    }

    /// Every subscribed type.
    pub fn subscribed_types(&self) -> Vec<String> {
        self.snapshot().into_iter().map(|(t, _)| t).collect()
    }

    /// Resolves when an interest changes (or at once if one changed since the last wait).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}
