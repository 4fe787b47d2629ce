//! One host's passive health record: the consecutive-error counters the data path bumps
//! on every result, the success counts of the current and last interval, and whether (and
//! since when) the host is ejected.

use crate::config::outlier::{EjectionKind, OutlierConfig};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the data path learned about one exchange with a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status (a gRPC status already mapped to HTTP).
    Status(u16),
    /// No connection could be made, or the stream was reset before a response.
    ConnectFailed,
    /// No response in time (route or per-try timeout).
    Timeout,
    /// A connection is ready for a request; the response reports the rest (HTTP).
    Connected,
    /// A connection was made and that is the whole transaction (TCP proxy).
    ConnectedFinal,
}

/// Which results a success-rate figure is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Upstream responses (and, unsplit, local failures mapped to 503/504).
    External,
    /// Connect failures, resets and timeouts (split mode only).
    Local,
}

/// Success and total counts over sweep intervals: the data path adds to the current
/// interval; each sweep moves it to `last`, which the rate detectors read.
#[derive(Debug, Default)]
struct Rate {
    total: AtomicU64,
    success: AtomicU64,
    /// (success, total) of the last complete interval.
    last: Mutex<(u64, u64)>,
}

impl Rate {
    fn record(&self, success: bool) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if success {
            self.success.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn roll(&self) {
        let total = self.total.swap(0, Ordering::Relaxed);
        let success = self.success.swap(0, Ordering::Relaxed).min(total);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = (success, total);
    }

    /// The last interval's success rate (percent) and volume, if it saw any request.
    fn last(&self) -> Option<(f64, u64)> {
        let (success, total) = *self.last.lock().unwrap_or_else(|e| e.into_inner());
        (total > 0).then(|| (success as f64 * 100.0 / total as f64, total))
    }
}

/// Ejection bookkeeping, touched only by ejections, sweeps and admin reads.
#[derive(Debug)]
struct Ejection {
    /// The ejection-time multiplier: up by one per ejection (while the time stays under
    /// the maximum), down by one per full interval the host spends in service.
    backoff: u32,
    /// In service since before the last sweep: the interval ending at the next sweep
    /// is a full interval in service.
    in_service: bool,
    /// When the current ejection started, and its random extra time.
    since: Option<(Instant, Duration)>,
    /// Success rates the last sweep computed, for `/clusters` (-1: none).
    shown_rates: [f64; 2],
}

/// A host's outlier record.
#[derive(Debug)]
pub struct HostMonitor {
    consecutive_5xx: AtomicU32,
    consecutive_gateway_failure: AtomicU32,
    consecutive_local_origin_failure: AtomicU32,
    external: Rate,
    local: Rate,
    ejected: AtomicBool,
    ejection: Mutex<Ejection>,
}

impl Default for HostMonitor {
    fn default() -> Self {
        HostMonitor {
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway_failure: AtomicU32::new(0),
            consecutive_local_origin_failure: AtomicU32::new(0),
            external: Rate::default(),
            local: Rate::default(),
            ejected: AtomicBool::new(false),
            ejection: Mutex::new(Ejection {
                backoff: 0,
                in_service: true,
                since: None,
                shown_rates: [-1.0; 2],
            }),
        }
    }
}

/// Bumps `counter`; reports `kind` when it reaches `threshold` exactly (later errors keep
/// counting without reporting again until the counter is reset).
fn count_error(counter: &AtomicU32, threshold: u32, kind: EjectionKind) -> Option<EjectionKind> {
    (counter.fetch_add(1, Ordering::Relaxed).wrapping_add(1) == threshold).then_some(kind)
}

impl HostMonitor {
    /// Whether the host is out of service.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Records one result; returns the consecutive-error detections it completes
    /// (gateway failure before 5xx, as Envoy checks them).
    pub fn record(&self, outcome: Outcome, config: &OutlierConfig) -> [Option<EjectionKind>; 2] {
        if config.split_external_local_origin_errors {
            match outcome {
                Outcome::Status(code) => self.response(code, config),
                Outcome::ConnectFailed | Outcome::Timeout => [self.local_failure(config), None],
                Outcome::Connected | Outcome::ConnectedFinal => {
                    self.local.record(true);
                    self.consecutive_local_origin_failure
                        .store(0, Ordering::Relaxed);
                    [None, None]
                }
            }
        } else {
            match outcome {
                Outcome::Status(code) => self.response(code, config),
                Outcome::ConnectFailed => self.response(503, config),
                Outcome::Timeout => self.response(504, config),
                Outcome::ConnectedFinal => self.response(200, config),
                // The response that follows reports the exchange.
                Outcome::Connected => [None, None],
            }
        }
    }

    fn response(&self, code: u16, config: &OutlierConfig) -> [Option<EjectionKind>; 2] {
        let error = (500..600).contains(&code);
        self.external.record(!error);
        if !error {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
            self.consecutive_gateway_failure.store(0, Ordering::Relaxed);
            return [None, None];
        }
        let gateway = if matches!(code, 502..=504) {
            count_error(
                &self.consecutive_gateway_failure,
                config.consecutive_gateway_failure,
                EjectionKind::ConsecutiveGatewayFailure,
            )
        } else {
            self.consecutive_gateway_failure.store(0, Ordering::Relaxed);
            None
        };
        let five_xx = count_error(
            &self.consecutive_5xx,
            config.consecutive_5xx,
            EjectionKind::Consecutive5xx,
        );
        [gateway, five_xx]
    }

    fn local_failure(&self, config: &OutlierConfig) -> Option<EjectionKind> {
        self.local.record(false);
        count_error(
            &self.consecutive_local_origin_failure,
            config.consecutive_local_origin_failure,
            EjectionKind::ConsecutiveLocalOriginFailure,
        )
    }

    /// Restarts the counter of a consecutive-error kind (after its detection is handled).
    pub fn reset(&self, kind: EjectionKind) {
        let counter = match kind {
            EjectionKind::Consecutive5xx => &self.consecutive_5xx,
            EjectionKind::ConsecutiveGatewayFailure => &self.consecutive_gateway_failure,
            EjectionKind::ConsecutiveLocalOriginFailure => &self.consecutive_local_origin_failure,
            _ => return,
        };
        counter.store(0, Ordering::Relaxed);
    }

    /// Takes the host out of service at `now` for `base × multiplier` (capped at the
    /// maximum) plus up to the configured jitter.
    pub fn eject(&self, now: Instant, config: &OutlierConfig) {
        let mut e = self.ejection.lock().unwrap_or_else(|e| e.into_inner());
        let base = config.base_ejection_time;
        if base * e.backoff < config.max_ejection_time + base {
            e.backoff += 1;
        }
        let jitter = match config.max_ejection_time_jitter.as_millis() as u64 {
            0 => Duration::ZERO,
            max => Duration::from_millis(rand::random::<u64>() % max),
        };
        e.since = Some((now, jitter));
        e.in_service = false;
        self.ejected.store(true, Ordering::Relaxed);
    }

    /// Sweep step for one host: returns it to service when its ejection time is over
    /// (true), or, after a full interval in service, lowers its ejection multiplier (a
    /// host returned at the last sweep has not yet proven itself); then starts a new
    /// success interval.
    pub fn sweep(&self, now: Instant, config: &OutlierConfig) -> bool {
        let mut returned = false;
        {
            let mut e = self.ejection.lock().unwrap_or_else(|e| e.into_inner());
            match e.since {
                Some((since, jitter)) => {
                    let time = (config.base_ejection_time * e.backoff)
                        .min(config.max_ejection_time)
                        + jitter;
                    if now.saturating_duration_since(since) >= time {
                        self.reinstate(&mut e);
                        returned = true;
                    }
                }
                None => {
                    if e.in_service {
                        e.backoff = e.backoff.saturating_sub(1);
                    }
                    e.in_service = true;
                }
            }
            e.shown_rates = [-1.0; 2];
        }
        self.external.roll();
        self.local.roll();
        returned
    }

    /// Returns an ejected host to service before its time (an active health check
    /// passed); true if it was ejected.
    pub fn reinstate_early(&self) -> bool {
        let mut e = self.ejection.lock().unwrap_or_else(|e| e.into_inner());
        let ejected = e.since.is_some();
        if ejected {
            self.reinstate(&mut e);
        }
        ejected
    }

    fn reinstate(&self, e: &mut Ejection) {
        e.since = None;
        self.ejected.store(false, Ordering::Relaxed);
        // A returning host starts from clean counters, so a few errors do not eject it
        // again at once.
        self.reset(EjectionKind::Consecutive5xx);
        self.reset(EjectionKind::ConsecutiveGatewayFailure);
    }

    /// The last interval's success rate and volume over `origin` results.
    pub fn last_rate(&self, origin: Origin) -> Option<(f64, u64)> {
        match origin {
            Origin::External => self.external.last(),
            Origin::Local => self.local.last(),
        }
    }

    /// Records the success rate a sweep computed, for `/clusters`.
    pub fn show_rate(&self, origin: Origin, rate: f64) {
        self.ejection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shown_rates[origin as usize] = rate;
    }

    /// The success rate `/clusters` shows (-1 when the last sweep had too few requests).
    pub fn shown_rate(&self, origin: Origin) -> f64 {
        self.ejection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shown_rates[origin as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_client::proto::envoy::config::cluster::v3::OutlierDetection;

    fn config(split: bool) -> OutlierConfig {
        let o = OutlierDetection {
            split_external_local_origin_errors: split,
            consecutive_5xx: Some(xds_client::proto::google::protobuf::UInt32Value { value: 3 }),
            ..Default::default()
        };
        crate::config::outlier::translate(&o, "od").unwrap()
    }

    #[test]
    fn consecutive_errors_report_once_at_the_threshold() {
        let (m, c) = (HostMonitor::default(), config(false));
        let detections: Vec<_> = (0..5).map(|_| m.record(Outcome::Status(500), &c)).collect();
        assert_eq!(detections[2], [None, Some(EjectionKind::Consecutive5xx)]);
        assert!(detections
            .iter()
            .enumerate()
            .all(|(i, d)| i == 2 || d == &[None, None]));
        m.reset(EjectionKind::Consecutive5xx);
        m.record(Outcome::Status(500), &c);
        m.record(Outcome::Status(200), &c);
        let again: Vec<_> = (0..3).map(|_| m.record(Outcome::Status(500), &c)).collect();
        assert_eq!(
            again[2][1],
            Some(EjectionKind::Consecutive5xx),
            "a success restarts the count"
        );
    }

    #[test]
    fn local_failures_count_as_gateway_errors_unless_split() {
        let (m, c) = (HostMonitor::default(), config(false));
        let d: Vec<_> = (0..5)
            .map(|_| m.record(Outcome::ConnectFailed, &c))
            .collect();
        assert_eq!(d[2][1], Some(EjectionKind::Consecutive5xx));
        assert_eq!(d[4][0], Some(EjectionKind::ConsecutiveGatewayFailure));
        let (m, c) = (HostMonitor::default(), config(true));
        let d: Vec<_> = (0..5).map(|_| m.record(Outcome::Timeout, &c)).collect();
        assert_eq!(d[4][0], Some(EjectionKind::ConsecutiveLocalOriginFailure));
        assert!(d[..4].iter().all(|d| d == &[None, None]));
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_and_shrinks_in_service() {
        let c = config(false);
        let m = HostMonitor::default();
        let t0 = Instant::now();
        m.eject(t0, &c);
        assert!(m.is_ejected());
        assert!(!m.sweep(t0 + Duration::from_secs(29), &c));
        assert!(
            m.sweep(t0 + Duration::from_secs(30), &c),
            "base time served"
        );
        m.eject(t0, &c);
        assert!(
            !m.sweep(t0 + Duration::from_secs(59), &c),
            "second ejection lasts 2x"
        );
        assert!(m.sweep(t0 + Duration::from_secs(60), &c));
        m.sweep(t0, &c);
        m.eject(t0, &c);
        assert!(
            !m.sweep(t0 + Duration::from_secs(89), &c),
            "the sweep that returned it does not count"
        );
        assert!(m.sweep(t0 + Duration::from_secs(90), &c));
        m.sweep(t0, &c);
        m.sweep(t0, &c);
        m.eject(t0, &c);
        assert!(
            m.sweep(t0 + Duration::from_secs(90), &c),
            "a full interval in service took one off"
        );
    }
}
