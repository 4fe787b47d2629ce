//! The interval detectors' arithmetic: which hosts the success-rate (mean minus a factor
//! of standard deviations) and failure-percentage rules single out, from the last
//! interval's per-host rates. Pure, so the rules are unit-tested on their own.

use crate::config::outlier::OutlierConfig;

/// One host's last-interval figures.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Success rate in percent.
    pub rate: f64,
    /// Requests it is over.
    pub volume: u64,
}

/// The success-rate rule's figures for a sweep (`/clusters` shows them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// Mean success rate of the hosts with enough volume.
    pub mean: f64,
    /// Rates under this eject.
    pub ejection_threshold: f64,
}

/// What one sweep's rules decide over the hosts' samples (indices into the input).
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    /// The success-rate figures, when enough hosts had enough volume.
    pub threshold: Option<Threshold>,
    /// Hosts below the success-rate threshold.
    pub below_success_rate: Vec<usize>,
    /// Hosts at or above the failure-percentage threshold.
    pub above_failure_percentage: Vec<usize>,
    /// Hosts with enough volume for either rule (their rate is worth showing).
    pub judged: Vec<usize>,
}

/// Applies both rules to `samples` (`None`: no request last interval, or ejected) out of
/// `hosts` hosts in the cluster.
pub fn judge(samples: &[Option<Sample>], hosts: usize, config: &OutlierConfig) -> Verdict {
    let sr = config.success_rate;
    let fp = config.failure_percentage;
    let mut verdict = Verdict::default();
    let hosts = hosts as u64;
    if hosts < sr.minimum_hosts && hosts < fp.minimum_hosts {
        return verdict;
    }
    let with = |volume: u64| -> Vec<(usize, f64)> {
        samples
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.filter(|s| s.volume >= volume).map(|s| (i, s.rate)))
            .collect()
    };
    verdict.judged = with(sr.request_volume.min(fp.request_volume))
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    let for_rate = with(sr.request_volume);
    if !for_rate.is_empty() && for_rate.len() as u64 >= sr.minimum_hosts {
        let n = for_rate.len() as f64;
        let mean = for_rate.iter().map(|(_, r)| r).sum::<f64>() / n;
        let variance = for_rate
            .iter()
            .map(|(_, r)| (r - mean).powi(2))
            .sum::<f64>()
            / n;
        let factor = f64::from(config.success_rate_stdev_factor) / 1000.0;
        let threshold = Threshold {
            mean,
            ejection_threshold: mean - factor * variance.sqrt(),
        };
        verdict.below_success_rate = for_rate
            .iter()
            .filter(|(_, r)| *r < threshold.ejection_threshold)
            .map(|(i, _)| *i)
            .collect();
        verdict.threshold = Some(threshold);
    }
    let for_failures = with(fp.request_volume);
    if !for_failures.is_empty() && for_failures.len() as u64 >= fp.minimum_hosts {
        let limit = f64::from(config.failure_percentage_threshold);
        verdict.above_failure_percentage = for_failures
            .iter()
            .filter(|(_, r)| 100.0 - r >= limit)
            .map(|(i, _)| *i)
            .collect();
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_client::proto::envoy::config::cluster::v3::OutlierDetection;

    fn sample(rate: f64, volume: u64) -> Option<Sample> {
        Some(Sample { rate, volume })
    }

    #[test]
    fn success_rate_ejects_below_mean_minus_factor_deviations() {
        let c = crate::config::outlier::translate(&OutlierDetection::default(), "od").unwrap();
        // mean 90, stdev 20, factor 1.9: threshold 52.
        let s = [
            sample(50.0, 100),
            sample(100.0, 100),
            sample(100.0, 100),
            sample(100.0, 100),
            sample(100.0, 100),
        ];
        let v = judge(&s, 5, &c);
        let t = v.threshold.unwrap();
        assert!((t.mean - 90.0).abs() < 1e-9 && (t.ejection_threshold - 52.0).abs() < 1e-9);
        assert_eq!(v.below_success_rate, vec![0]);
        assert!(
            v.above_failure_percentage.is_empty(),
            "the failure rule is 85 %"
        );
    }

    #[test]
    fn too_few_hosts_or_too_little_volume_judges_nobody() {
        let c = crate::config::outlier::translate(&OutlierDetection::default(), "od").unwrap();
        let s = [
            sample(0.0, 100),
            sample(100.0, 100),
            sample(100.0, 100),
            sample(100.0, 100),
            sample(100.0, 99),
        ];
        let v = judge(&s, 5, &c);
        assert_eq!(v.threshold, None, "only four hosts have the volume");
        assert!(v.below_success_rate.is_empty());
        assert_eq!(
            v.above_failure_percentage,
            vec![0],
            "five hosts have 50 requests"
        );
        assert_eq!(judge(&s[..4], 4, &c), Verdict::default());
    }
}
