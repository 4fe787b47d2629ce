//! Cluster `outlier_detection` translation: the thresholds, percentages and times of
//! Envoy's passive health checking, with Envoy's defaults filled in so the detector never
//! looks at an unset field.

use super::common;
use super::error::{join, ConfigError, Result};
use std::time::Duration;
use xds_client::proto::envoy::config::cluster::v3::OutlierDetection;
use xds_client::proto::google::protobuf::UInt32Value;

/// The ways a host can be found an outlier (Envoy's `OutlierEjectionType`, which also
/// names the ejection stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectionKind {
    /// `consecutive_5xx` errors in a row.
    Consecutive5xx,
    /// `consecutive_gateway_failure` 502/503/504s in a row.
    ConsecutiveGatewayFailure,
    /// `consecutive_local_origin_failure` connect failures, resets or timeouts in a row
    /// (only with `split_external_local_origin_errors`).
    ConsecutiveLocalOriginFailure,
    /// Success rate below the cluster's mean by `success_rate_stdev_factor` deviations.
    SuccessRate,
    /// The same, over local-origin results.
    LocalOriginSuccessRate,
    /// Failure share at or above `failure_percentage_threshold`.
    FailurePercentage,
    /// The same, over local-origin results.
    LocalOriginFailurePercentage,
}

impl EjectionKind {
    /// Every kind, in the order their stats are created.
    pub const ALL: [EjectionKind; 7] = [
        EjectionKind::Consecutive5xx,
        EjectionKind::ConsecutiveGatewayFailure,
        EjectionKind::ConsecutiveLocalOriginFailure,
        EjectionKind::SuccessRate,
        EjectionKind::LocalOriginSuccessRate,
        EjectionKind::FailurePercentage,
        EjectionKind::LocalOriginFailurePercentage,
    ];

    /// The stat-name suffix Envoy uses (`ejections_detected_<name>`).
    pub fn stat_name(self) -> &'static str {
        match self {
            EjectionKind::Consecutive5xx => "consecutive_5xx",
            EjectionKind::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            EjectionKind::ConsecutiveLocalOriginFailure => "consecutive_local_origin_failure",
            EjectionKind::SuccessRate => "success_rate",
            EjectionKind::LocalOriginSuccessRate => "local_origin_success_rate",
            EjectionKind::FailurePercentage => "failure_percentage",
            EjectionKind::LocalOriginFailurePercentage => "local_origin_failure_percentage",
        }
    }
}

/// Thresholds of one statistical detector (success rate or failure percentage).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatisticalThresholds {
    /// Hosts with enough volume needed before the detector runs at all.
    pub minimum_hosts: u64,
    /// Requests a host needs in the last interval to be judged.
    pub request_volume: u64,
}

/// A translated `OutlierDetection`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// Time between sweeps (ejections by rate, returns to service).
    pub interval: Duration,
    /// Ejection time per ejection count.
    pub base_ejection_time: Duration,
    /// Longest ejection, however often the host was ejected.
    pub max_ejection_time: Duration,
    /// Random extra ejection time, up to this.
    pub max_ejection_time_jitter: Duration,
    /// Share of the cluster's hosts that may be ejected at once, in percent.
    pub max_ejection_percent: u32,
    /// Eject one host even when that exceeds `max_ejection_percent`.
    pub always_eject_one_host: bool,
    /// Consecutive 5xx (and, unsplit, local-origin errors) before an ejection.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 before an ejection.
    pub consecutive_gateway_failure: u32,
    /// Consecutive local-origin failures before an ejection (split mode).
    pub consecutive_local_origin_failure: u32,
    /// Count connect failures, resets and timeouts apart from upstream responses.
    pub split_external_local_origin_errors: bool,
    /// Success-rate detector thresholds.
    pub success_rate: StatisticalThresholds,
    /// Success-rate detector: the deviation factor, in thousandths (1900 = 1.9).
    pub success_rate_stdev_factor: u32,
    /// Failure-percentage detector thresholds.
    pub failure_percentage: StatisticalThresholds,
    /// Failure-percentage detector: the failure share that ejects, in percent.
    pub failure_percentage_threshold: u32,
    /// Per kind, the percent chance that a detection really ejects.
    enforcing: [u32; 7],
    /// A passing active health check returns an ejected host to service
    /// (`successful_active_health_check_uneject_host`, default true).
    pub uneject_on_health_check_pass: bool,
}

impl OutlierConfig {
    /// The percent chance that a detection of `kind` is enforced.
    pub fn enforcing(&self, kind: EjectionKind) -> u32 {
        self.enforcing[kind as usize]
    }
}

/// Translates `outlier_detection` (`path` names it in errors).
pub fn translate(o: &OutlierDetection, path: &str) -> Result<OutlierConfig> {
    let positive = |d: &Option<xds_client::proto::google::protobuf::Duration>,
                    field: &str,
                    default: Duration| {
        let p = join(path, field);
        match d {
            None => Ok(default),
            Some(d) => match common::duration(d, &p)? {
                Duration::ZERO => Err(ConfigError::at(p, "must be greater than zero")),
                v => Ok(v),
            },
        }
    };
    let percent = |v: &Option<UInt32Value>, field: &str, default: u32| {
        let value = v.as_ref().map_or(default, |v| v.value);
        if value > 100 {
            return Err(ConfigError::at(
                join(path, field),
                format!("{value} is not a percentage (at most 100)"),
            ));
        }
        Ok(value)
    };
    let count = |v: &Option<UInt32Value>, default: u32| v.as_ref().map_or(default, |v| v.value);
    let base_ejection_time = positive(
        &o.base_ejection_time,
        "base_ejection_time",
        Duration::from_secs(30),
    )?;
    let max_ejection_time = positive(
        &o.max_ejection_time,
        "max_ejection_time",
        Duration::from_secs(300),
    )?;
    if max_ejection_time < base_ejection_time {
        return Err(ConfigError::at(
            join(path, "max_ejection_time"),
            "max_ejection_time cannot be smaller than base_ejection_time",
        ));
    }
    let jitter = match &o.max_ejection_time_jitter {
        Some(d) => common::duration(d, &join(path, "max_ejection_time_jitter"))?,
        None => Duration::ZERO,
    };
    use EjectionKind as K;
    let enforcing_fields = [
        (
            K::Consecutive5xx,
            "enforcing_consecutive_5xx",
            &o.enforcing_consecutive_5xx,
            100,
        ),
        (
            K::ConsecutiveGatewayFailure,
            "enforcing_consecutive_gateway_failure",
            &o.enforcing_consecutive_gateway_failure,
            0,
        ),
        (
            K::ConsecutiveLocalOriginFailure,
            "enforcing_consecutive_local_origin_failure",
            &o.enforcing_consecutive_local_origin_failure,
            100,
        ),
        (
            K::SuccessRate,
            "enforcing_success_rate",
            &o.enforcing_success_rate,
            100,
        ),
        (
            K::LocalOriginSuccessRate,
            "enforcing_local_origin_success_rate",
            &o.enforcing_local_origin_success_rate,
            100,
        ),
        (
            K::FailurePercentage,
            "enforcing_failure_percentage",
            &o.enforcing_failure_percentage,
            0,
        ),
        (
            K::LocalOriginFailurePercentage,
            "enforcing_failure_percentage_local_origin",
            &o.enforcing_failure_percentage_local_origin,
            0,
        ),
    ];
    let mut enforcing = [0; 7];
    for (kind, field, value, default) in enforcing_fields {
        enforcing[kind as usize] = percent(value, field, default)?;
    }
    Ok(OutlierConfig {
        interval: positive(&o.interval, "interval", Duration::from_secs(10))?,
        base_ejection_time,
        max_ejection_time,
        max_ejection_time_jitter: jitter,
        max_ejection_percent: count(&o.max_ejection_percent, 10).min(100),
        always_eject_one_host: o.always_eject_one_host.as_ref().is_some_and(|b| b.value),
        consecutive_5xx: count(&o.consecutive_5xx, 5),
        consecutive_gateway_failure: count(&o.consecutive_gateway_failure, 5),
        consecutive_local_origin_failure: count(&o.consecutive_local_origin_failure, 5),
        split_external_local_origin_errors: o.split_external_local_origin_errors,
        success_rate: StatisticalThresholds {
            minimum_hosts: count(&o.success_rate_minimum_hosts, 5).into(),
            request_volume: count(&o.success_rate_request_volume, 100).into(),
        },
        success_rate_stdev_factor: count(&o.success_rate_stdev_factor, 1900),
        failure_percentage: StatisticalThresholds {
            minimum_hosts: count(&o.failure_percentage_minimum_hosts, 5).into(),
            request_volume: count(&o.failure_percentage_request_volume, 50).into(),
        },
        failure_percentage_threshold: percent(
            &o.failure_percentage_threshold,
            "failure_percentage_threshold",
            85,
        )?,
        enforcing,
        uneject_on_health_check_pass: o
            .successful_active_health_check_uneject_host
            .as_ref()
            .is_none_or(|b| b.value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_client::proto::google::protobuf::Duration as PbDuration;

    fn secs(s: i64) -> Option<PbDuration> {
        Some(PbDuration {
            seconds: s,
            nanos: 0,
        })
    }

    #[test]
    fn defaults_are_envoys() {
        let c = translate(&OutlierDetection::default(), "od").unwrap();
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.base_ejection_time, Duration::from_secs(30));
        assert_eq!(c.max_ejection_time, Duration::from_secs(300));
        assert_eq!((c.max_ejection_percent, c.consecutive_5xx), (10, 5));
        assert_eq!(c.enforcing(EjectionKind::Consecutive5xx), 100);
        assert_eq!(c.enforcing(EjectionKind::ConsecutiveGatewayFailure), 0);
        assert_eq!(c.enforcing(EjectionKind::FailurePercentage), 0);
        assert_eq!(c.success_rate.request_volume, 100);
        assert_eq!(c.failure_percentage_threshold, 85);
    }

    #[test]
    fn bad_values_are_named() {
        let o = OutlierDetection {
            base_ejection_time: secs(60),
            max_ejection_time: secs(30),
            ..Default::default()
        };
        let e = translate(&o, "od").unwrap_err().to_string();
        assert!(e.contains("od.max_ejection_time"), "{e}");
        let o = OutlierDetection {
            enforcing_success_rate: Some(UInt32Value { value: 101 }),
            ..Default::default()
        };
        let e = translate(&o, "od").unwrap_err().to_string();
        assert!(e.contains("od.enforcing_success_rate"), "{e}");
        let o = OutlierDetection {
            interval: secs(0),
            ..Default::default()
        };
        assert!(translate(&o, "od").is_err());
    }
}
