//! Envoy's subscription stats (`cluster_manager.cds.*`, `listener_manager.lds.*`,
//! `cluster.<name>.update_*` for EDS, `http.<prefix>.rds.<name>.*` for RDS) and the
//! control-plane gauges pilot-agent's readiness probe and dashboards read.

use crate::stats::{Counter, Gauge, Scope};
use std::sync::Arc;

/// The counters of one subscription.
#[derive(Debug)]
pub struct SubscriptionStats {
    /// update_attempt: responses received (and stream failures).
    pub attempt: Arc<Counter>,
    /// update_success: responses applied in full.
    pub success: Arc<Counter>,
    /// update_rejected: responses NACKed.
    pub rejected: Arc<Counter>,
    /// update_failure: streams that failed while subscribed.
    pub failure: Arc<Counter>,
    /// update_empty: SotW responses without resources.
    pub empty: Arc<Counter>,
    /// init_fetch_timeout: the initial fetch gave up waiting.
    pub init_fetch_timeout: Arc<Counter>,
    /// version: a hash of the last accepted version string.
    pub version: Arc<Gauge>,
    /// update_time: when the last update was accepted (ms since the epoch).
    pub update_time: Arc<Gauge>,
}

impl SubscriptionStats {
    /// The stats under `scope` (for example `cluster_manager.cds`).
    pub fn new(scope: &Scope) -> Self {
        SubscriptionStats {
            attempt: scope.counter("update_attempt"),
            success: scope.counter("update_success"),
            rejected: scope.counter("update_rejected"),
            failure: scope.counter("update_failure"),
            empty: scope.counter("update_empty"),
            init_fetch_timeout: scope.counter("init_fetch_timeout"),
            version: scope.gauge("version"),
            update_time: scope.gauge("update_time"),
        }
    }

    /// Counts a response and its outcome.
    pub fn record(&self, version: &str, accepted: bool, empty: bool) {
        self.attempt.inc();
        if empty {
            self.empty.inc();
        }
        if accepted {
            self.success.inc();
            self.version.set(version_hash(version));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            self.update_time.set(now.as_millis() as i64);
        } else {
            self.rejected.inc();
        }
    }

    /// Counts a stream failure.
    pub fn record_failure(&self) {
        self.attempt.inc();
        self.failure.inc();
    }
}

/// Envoy reports the version as a 64-bit hash of the version string; the gauge holds its
/// low 63 bits.
fn version_hash(version: &str) -> i64 {
    (xxhash_rust::xxh64::xxh64(version.as_bytes(), 0) >> 1) as i64
}
