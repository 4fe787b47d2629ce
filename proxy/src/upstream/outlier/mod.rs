//! Outlier detection (Envoy's passive health checking): hosts that fail in a row, or
//! whose success rate falls out of line with the others', are ejected from load
//! balancing for a time that grows with each ejection, within `max_ejection_percent` of
//! the cluster. Consecutive errors eject at once from the data path; the rate rules and
//! returns to service run in a sweep every `interval`.

pub mod monitor;
pub mod rates;
mod stats;

use crate::config::outlier::{EjectionKind, OutlierConfig};
use crate::stats::Scope;
use monitor::{HostMonitor, Origin, Outcome};
use rates::{Sample, Threshold};
use stats::OutlierStats;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A cluster's outlier detector.
#[derive(Debug)]
pub struct Detector {
    config: Arc<OutlierConfig>,
    stats: OutlierStats,
    /// Serializes ejection decisions so the count of ejected hosts stays exact.
    ejecting: Mutex<()>,
    /// The last sweep's success-rate figures per origin, for `/clusters`.
    thresholds: Mutex<[Option<Threshold>; 2]>,
}

impl Detector {
    /// A detector whose stats live under `<cluster scope>.outlier_detection`.
    pub fn new(config: Arc<OutlierConfig>, cluster_scope: &Scope) -> Self {
        Detector {
            config,
            stats: OutlierStats::new(&cluster_scope.child("outlier_detection")),
            ejecting: Mutex::new(()),
            thresholds: Mutex::new([None; 2]),
        }
    }

    /// The configuration (the sweep task reads its interval).
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// Records one result for the host `monitor` watches, in a cluster of `hosts` hosts;
    /// true when it ejected the host (the cluster's load split must be recomputed).
    pub fn report(&self, monitor: &HostMonitor, hosts: usize, outcome: Outcome) -> bool {
        let mut ejected = false;
        for kind in monitor.record(outcome, &self.config).into_iter().flatten() {
            ejected |= self.detected(monitor, kind, hosts, Instant::now());
        }
        ejected
    }

    /// Handles a detection: counts it and ejects the host if the ejection cap and the
    /// enforcement percentage allow. A host already out of service is left alone.
    fn detected(
        &self,
        monitor: &HostMonitor,
        kind: EjectionKind,
        hosts: usize,
        now: Instant,
    ) -> bool {
        let _serial = self.ejecting.lock().unwrap_or_else(|e| e.into_inner());
        if monitor.is_ejected() {
            return false;
        }
        self.stats.count_detection(kind);
        let ejected = self.eject(monitor, kind, hosts, now);
        // The counter restarts so a new run of errors is detected even without an
        // interleaved success.
        monitor.reset(kind);
        ejected
    }

    fn eject(&self, monitor: &HostMonitor, kind: EjectionKind, hosts: usize, now: Instant) -> bool {
        let active = self.stats.ejections_active.value().max(0) as f64;
        let share = 100.0 * (active + 1.0) / hosts.max(1) as f64;
        let allowed = share <= f64::from(self.config.max_ejection_percent)
            || (self.config.always_eject_one_host && active == 0.0);
        if !allowed {
            self.stats.ejections_overflow.inc();
            return false;
        }
        self.stats.count_allowed(kind);
        if rand::random::<u32>() % 100 >= self.config.enforcing(kind) {
            return false;
        }
        self.stats.count_enforced(kind);
        monitor.eject(now, &self.config);
        true
    }

    /// An active health check passed for the host `monitor` watches: an ejected host
    /// returns to service unless `successful_active_health_check_uneject_host` is off.
    /// True when it returned.
    pub fn health_check_passed(&self, monitor: &HostMonitor) -> bool {
        if !self.config.uneject_on_health_check_pass {
            return false;
        }
        let _serial = self.ejecting.lock().unwrap_or_else(|e| e.into_inner());
        let returned = monitor.reinstate_early();
        if returned {
            self.stats.ejections_active.dec();
        }
        returned
    }

    /// Forgets ejections of hosts no longer in the cluster: the active count becomes the
    /// number of `monitors` (the current hosts') that are ejected.
    pub fn recount(&self, monitors: &[&HostMonitor]) {
        let _serial = self.ejecting.lock().unwrap_or_else(|e| e.into_inner());
        let ejected = monitors.iter().filter(|m| m.is_ejected()).count();
        self.stats.ejections_active.set(ejected as i64);
    }

    /// The periodic sweep over the cluster's hosts: returns hosts whose ejection time is
    /// over, then applies the success-rate and failure-percentage rules to the interval
    /// that just ended. True when any host changed state.
    pub fn sweep(&self, monitors: &[&HostMonitor], now: Instant) -> bool {
        let mut changed = false;
        for m in monitors {
            if m.sweep(now, &self.config) {
                self.stats.ejections_active.dec();
                changed = true;
            }
        }
        changed |= self.judge(monitors, Origin::External, now);
        if self.config.split_external_local_origin_errors {
            changed |= self.judge(monitors, Origin::Local, now);
        }
        changed
    }

    fn judge(&self, monitors: &[&HostMonitor], origin: Origin, now: Instant) -> bool {
        let samples: Vec<Option<Sample>> = monitors
            .iter()
            .map(|m| {
                if m.is_ejected() {
                    return None;
                }
                m.last_rate(origin)
                    .map(|(rate, volume)| Sample { rate, volume })
            })
            .collect();
        let verdict = rates::judge(&samples, monitors.len(), &self.config);
        for &i in &verdict.judged {
            if let Some(s) = samples[i] {
                monitors[i].show_rate(origin, s.rate);
            }
        }
        self.thresholds.lock().unwrap_or_else(|e| e.into_inner())[origin as usize] =
            verdict.threshold;
        let (rate_kind, failure_kind) = match origin {
            Origin::External => (EjectionKind::SuccessRate, EjectionKind::FailurePercentage),
            Origin::Local => (
                EjectionKind::LocalOriginSuccessRate,
                EjectionKind::LocalOriginFailurePercentage,
            ),
        };
        let mut changed = false;
        for (hosts, kind) in [
            (&verdict.below_success_rate, rate_kind),
            (&verdict.above_failure_percentage, failure_kind),
        ] {
            for &i in hosts {
                changed |= self.detected(monitors[i], kind, monitors.len(), now);
            }
        }
        changed
    }

    /// The last sweep's mean success rate and ejection threshold over `origin` results
    /// (-1 for both when the rule did not run), as `/clusters` shows them.
    pub fn success_rate_figures(&self, origin: Origin) -> (f64, f64) {
        match self.thresholds.lock().unwrap_or_else(|e| e.into_inner())[origin as usize] {
            Some(t) => (t.mean, t.ejection_threshold),
            None => (-1.0, -1.0),
        }
    }
}
