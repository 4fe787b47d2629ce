//! The cluster manager: every cluster by name. Static clusters come from the bootstrap;
//! CDS adds, replaces and removes the others at run time. Readers (every request) load
//! the current map without a lock; writers replace it whole, so a request sees either the
//! old or the new set, never half of an update.

use super::cluster::{Cluster, Origin, UpdateCounts, ZoneContext};
use super::dns;
use crate::config::cluster::{ClusterConfig, Discovery, Locality};
use crate::stats::{Counter, Gauge, Scope};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Clusters by name. FNV rather than SipHash: names come from the configuration, and
/// one is looked up on every request.
type ClusterMap = HashMap<String, Arc<Cluster>, fnv::FnvBuildHasher>;

/// All clusters.
pub struct ClusterManager {
    clusters: ArcSwap<ClusterMap>,
    /// `cluster_manager.local_cluster_name` and `node.locality`, for zone-aware routing.
    zone: Option<(String, Locality)>,
    writer: Mutex<()>,
    root: Scope,
    update_counts: Arc<UpdateCounts>,
    active: Arc<Gauge>,
    added: Arc<Counter>,
    modified: Arc<Counter>,
    removed: Arc<Counter>,
}

impl ClusterManager {
    /// Creates the static clusters; `zone` (the local cluster's name and the node's
    /// locality) turns on zone-aware routing.
    pub fn new(
        configs: Vec<Arc<ClusterConfig>>,
        stats: &Scope,
        zone: Option<(String, Locality)>,
    ) -> Self {
        let cm = stats.child("cluster_manager");
        let manager = ClusterManager {
            clusters: ArcSwap::from_pointee(ClusterMap::default()),
            zone,
            writer: Mutex::new(()),
            root: stats.clone(),
            update_counts: Arc::new(UpdateCounts::new(stats)),
            active: cm.gauge("active_clusters"),
            added: cm.counter("cluster_added"),
            modified: cm.counter("cluster_modified"),
            removed: cm.counter("cluster_removed"),
        };
        manager.update(
            configs
                .into_iter()
                .map(|c| manager.make(c, Origin::Bootstrap))
                .collect(),
            &[],
        );
        manager
    }

    /// Resolves the static DNS clusters once and starts their background tasks (call on
    /// the main runtime).
    pub async fn initialize(&self) {
        for c in self.all() {
            start_tasks(&c, true).await;
        }
    }

    /// A cluster by name.
    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.load().get(name).cloned()
    }

    /// Every cluster, sorted by name.
    pub fn all(&self) -> Vec<Arc<Cluster>> {
        let mut v: Vec<_> = self.clusters.load().values().cloned().collect();
        v.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        v
    }

    /// Creates a cluster (not yet added) with its stats under the manager's root.
    pub fn make(&self, config: Arc<ClusterConfig>, origin: Origin) -> Arc<Cluster> {
        Cluster::new(config, &self.root, self.update_counts.clone(), origin)
    }

    /// Whether `name` is a bootstrap cluster (which CDS may not replace or remove).
    pub fn is_static(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|c| c.origin == Origin::Bootstrap)
    }

    /// Adds or replaces `upserts` and removes `removals` in one step. A replaced cluster's
    /// connection pools go with it; clusters not named are untouched.
    pub fn update(&self, upserts: Vec<Arc<Cluster>>, removals: &[String]) {
        if upserts.is_empty() && removals.is_empty() {
            return;
        }
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut map = ClusterMap::clone(&self.clusters.load());
        let upserted: Vec<String> = upserts.iter().map(|c| c.config.name.clone()).collect();
        for c in upserts {
            match map.insert(c.config.name.clone(), c) {
                Some(old) => {
                    old.retire();
                    self.modified.inc();
                }
                None => self.added.inc(),
            }
        }
        for name in removals {
            if let Some(old) = map.remove(name) {
                old.retire();
                self.removed.inc();
            }
        }
        self.active.set(map.len() as i64);
        self.wire_zones(&map, &upserted);
        self.clusters.store(Arc::new(map));
    }

    /// Gives the clusters just added zone-aware routing's view: the local cluster and the
    /// node's locality.
    fn wire_zones(&self, map: &ClusterMap, added: &[String]) {
        let Some((local_name, node)) = &self.zone else {
            return;
        };
        let local = map.get(local_name).map(Arc::downgrade);
        for name in added {
            if let Some(c) = map.get(name) {
                c.set_zone_context(Arc::new(ZoneContext {
                    local: (name != local_name).then(|| local.clone()).flatten(),
                    node: node.clone(),
                }));
            }
        }
    }
}

/// Starts a cluster's background tasks, which end when the cluster is retired: a DNS
/// cluster's refresh loop (resolving once first when `wait`), its active health checks,
/// and the outlier-detection sweep of a cluster that detects outliers.
pub async fn start_tasks(c: &Arc<Cluster>, wait: bool) {
    if matches!(
        c.config.discovery,
        Discovery::StrictDns | Discovery::LogicalDns
    ) {
        if wait {
            dns::resolve_once(c).await;
        }
        dns::spawn_refresh(c.clone());
    }
    if let Some(config) = &c.config.health_check {
        super::health::spawn(c, config.clone());
    }
    if let Some(detector) = c.outlier_detector() {
        let interval = detector.config().interval;
        let cluster = Arc::downgrade(c);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                match cluster.upgrade() {
                    Some(c) if !c.is_retired() => c.sweep_outliers(),
                    _ => return,
                }
            }
        });
    }
}
