//! Envoy's process-wide stats (`server.*`, `cluster_manager.*`, `listener_manager.*`),
//! created when the server is built so they show (with their true zero) before anything
//! happens, as Envoy's do: pilot-agent, dashboards and `stats_matcher` inclusion lists
//! expect every one of them. The gauges that describe the process (uptime, memory,
//! connections, certificate expiry) are refreshed before each stats request.

use crate::stats::{Gauge, Histogram, Scope};
use std::sync::Arc;
use std::time::Duration;

/// Counters created up front so they show before their first event (the cluster update
/// counts are incremented by each cluster; the others count events meshproxy never has).
const NEVER: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "debug_assertion_failures",
            "dropped_stat_flushes",
            "dynamic_unknown_fields",
            "envoy_bug_failures",
            "envoy_notifications",
            "static_unknown_fields",
            "wip_protos",
        ],
    ),
    (
        "cluster_manager",
        &[
            "cluster_updated",
            "cluster_updated_via_merge",
            "update_merge_cancelled",
            "update_out_of_merge_window",
        ],
    ),
];

/// Gauges at a fixed zero: FIPS mode, a hot-restart parent's connections, OCSP responses,
/// pinned workers, stat-name lookups (meshproxy interns no names at run time).
const ZERO_GAUGES: &[(&str, &str)] = &[
    ("server", "compilation_settings.fips_mode"),
    ("server", "parent_connections"),
    ("server", "seconds_until_first_ocsp_response_expiring"),
    ("server", "stats_recent_lookups"),
    ("listener_manager", "workers_pinned"),
];

/// `listener_manager` counters that LDS, workers and drains increment.
const LISTENER_EVENTS: &[&str] = &[
    "listener_added",
    "listener_create_failure",
    "listener_create_success",
    "listener_in_place_updated",
    "listener_modified",
    "listener_removed",
    "listener_stopped",
];

/// The process gauges refreshed per stats request, and the start-up histogram.
pub struct ServerStats {
    uptime: Arc<Gauge>,
    memory_allocated: Arc<Gauge>,
    memory_heap_size: Arc<Gauge>,
    memory_physical_size: Arc<Gauge>,
    total_connections: Arc<Gauge>,
    days_until_first_cert_expiring: Arc<Gauge>,
    initialization_time_ms: Arc<Histogram>,
    initialized: std::sync::Once,
    /// `listener_manager.total_filter_chains_draining`.
    pub chains_draining: Arc<Gauge>,
    /// `listener_manager.total_listeners_draining`.
    pub listeners_draining: Arc<Gauge>,
}

/// This build's `server.version`: the crate version as one integer (`0.1.0` -> 100).
fn version() -> i64 {
    env!("CARGO_PKG_VERSION")
        .split('.')
        .take(3)
        .map(|p| p.parse::<i64>().unwrap_or(0))
        .fold(0, |v, p| v * 100 + p)
}

impl ServerStats {
    /// Creates every process-wide stat under `root`; `workers` name the watchdog stats,
    /// `hot_restart` (the epoch, unless `--disable-hot-restart`) sets the generation.
    pub fn register(root: &Scope, workers: usize, hot_restart: Option<u32>) -> Self {
        for (scope, names) in NEVER {
            let s = root.child(scope);
            for n in *names {
                s.counter(n);
            }
        }
        for (scope, name) in ZERO_GAUGES {
            root.child(scope).gauge(name).set(0);
        }
        let lm = root.child("listener_manager");
        for n in LISTENER_EVENTS {
            lm.counter(n);
        }
        lm.gauge("total_listeners_warming");
        root.child("cluster_manager").gauge("warming_clusters");
        let server = root.child("server");
        let threads = std::iter::once("main_thread".to_string())
            .chain((0..workers).map(|i| format!("worker_{i}")));
        for thread in threads {
            let t = root.tagged("server", "thread_name", &thread);
            t.counter("watchdog_miss");
            t.counter("watchdog_mega_miss");
        }
        if let Some(epoch) = hot_restart {
            server
                .gauge("hot_restart_generation")
                .set(i64::from(epoch) + 1);
        }
        server.gauge("version").set(version());
        ServerStats {
            uptime: server.gauge("uptime"),
            memory_allocated: server.gauge("memory_allocated"),
            memory_heap_size: server.gauge("memory_heap_size"),
            memory_physical_size: server.gauge("memory_physical_size"),
            total_connections: server.gauge("total_connections"),
            days_until_first_cert_expiring: server.gauge("days_until_first_cert_expiring"),
            initialization_time_ms: server.histogram("initialization_time_ms"),
            initialized: std::sync::Once::new(),
            chains_draining: lm.gauge("total_filter_chains_draining"),
            listeners_draining: lm.gauge("total_listeners_draining"),
        }
    }

    /// Refreshes the process gauges (before a stats request).
    pub fn refresh(&self, uptime: Duration, connections: u64) {
        self.uptime.set(uptime.as_secs() as i64);
        let m = crate::memory::usage();
        self.memory_allocated.set(m.allocated as i64);
        self.memory_heap_size.set(m.heap_size as i64);
        self.memory_physical_size.set(m.physical as i64);
        self.total_connections.set(connections as i64);
        self.days_until_first_cert_expiring
            .set(crate::tls::expiry::days_until_first_expiring());
    }

    /// Records how long start-up took, once (when the server first goes LIVE).
    pub fn initialized(&self, took: Duration) {
        self.initialized
            .call_once(|| self.initialization_time_ms.record(took.as_millis() as u64));
    }
}
