//! The cluster manager: every cluster by name, created from translated configs, with DNS
//! clusters resolved before the server reports ready.

use super::cluster::Cluster;
use super::dns;
use crate::config::cluster::{ClusterConfig, Discovery};
use crate::stats::Scope;
use std::collections::HashMap;
use std::sync::Arc;

/// All clusters.
#[derive(Debug, Default)]
pub struct ClusterManager {
    clusters: HashMap<String, Arc<Cluster>>,
}

impl ClusterManager {
    /// Creates the clusters.
    pub fn new(configs: &[Arc<ClusterConfig>], stats: &Scope) -> Self {
        let cm = stats.child("cluster_manager");
        cm.gauge("active_clusters").set(configs.len() as i64);
        cm.counter("cluster_added").add(configs.len() as u64);
        ClusterManager {
            clusters: configs
                .iter()
                .map(|c| (c.name.clone(), Cluster::new(c.clone(), stats)))
                .collect(),
        }
    }

    /// Resolves DNS clusters once and starts their refresh loops (call on the main runtime).
    pub async fn initialize(&self) {
        for c in self.clusters.values() {
            if matches!(
                c.config.discovery,
                Discovery::StrictDns | Discovery::LogicalDns
            ) {
                dns::resolve_once(c).await;
                dns::spawn_refresh(c.clone());
            }
        }
    }

    /// A cluster by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }

    /// Every cluster, sorted by name.
    pub fn all(&self) -> Vec<&Arc<Cluster>> {
        let mut v: Vec<_> = self.clusters.values().collect();
        v.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        v
    }
}
