//! `cluster.<name>.outlier_detection.*`: Envoy's ejection stats, including the deprecated
//! totals dashboards still read.

use crate::config::outlier::EjectionKind;
use crate::stats::{Counter, Gauge, Scope};
use std::sync::Arc;

/// The detector's stats, created with it.
#[derive(Debug)]
pub struct OutlierStats {
    /// ejections_active: hosts out of service now.
    pub ejections_active: Arc<Gauge>,
    /// ejections_overflow: ejections refused by `max_ejection_percent`.
    pub ejections_overflow: Arc<Counter>,
    enforced_total: Arc<Counter>,
    detected: Vec<Arc<Counter>>,
    enforced: Vec<Arc<Counter>>,
    /// Deprecated ejections_total: allowed consecutive-5xx and success-rate ejections.
    legacy_total: Arc<Counter>,
    /// Deprecated ejections_consecutive_5xx: consecutive-5xx detections.
    legacy_consecutive_5xx: Arc<Counter>,
    /// Deprecated ejections_success_rate: success-rate detections.
    legacy_success_rate: Arc<Counter>,
}

impl OutlierStats {
    /// Creates every stat under `scope` (`cluster.<name>.outlier_detection`).
    pub fn new(scope: &Scope) -> Self {
        let per_kind = |prefix: &str| -> Vec<Arc<Counter>> {
            EjectionKind::ALL
                .iter()
                .map(|k| scope.counter(&format!("{prefix}_{}", k.stat_name())))
                .collect()
        };
        OutlierStats {
            ejections_active: scope.gauge("ejections_active"),
            ejections_overflow: scope.counter("ejections_overflow"),
            enforced_total: scope.counter("ejections_enforced_total"),
            detected: per_kind("ejections_detected"),
            enforced: per_kind("ejections_enforced"),
            legacy_total: scope.counter("ejections_total"),
            legacy_consecutive_5xx: scope.counter("ejections_consecutive_5xx"),
            legacy_success_rate: scope.counter("ejections_success_rate"),
        }
    }

    /// A host was found an outlier of `kind`.
    pub fn count_detection(&self, kind: EjectionKind) {
        self.detected[kind as usize].inc();
        match kind {
            EjectionKind::Consecutive5xx => self.legacy_consecutive_5xx.inc(),
            EjectionKind::SuccessRate | EjectionKind::LocalOriginSuccessRate => {
                self.legacy_success_rate.inc()
            }
            _ => {}
        }
    }

    /// The ejection cap let an ejection of `kind` through (enforced or not).
    pub fn count_allowed(&self, kind: EjectionKind) {
        if matches!(
            kind,
            EjectionKind::Consecutive5xx | EjectionKind::SuccessRate
        ) {
            self.legacy_total.inc();
        }
    }

    /// A host was ejected for `kind`.
    pub fn count_enforced(&self, kind: EjectionKind) {
        self.enforced_total.inc();
        self.enforced[kind as usize].inc();
        self.ejections_active.inc();
    }
}
