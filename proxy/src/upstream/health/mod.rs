//! Active health checking: every host of a cluster with `health_checks` is probed on its
//! own schedule; `unhealthy_threshold` failures in a row (or one wrong answer) take it
//! out of load balancing, `healthy_threshold` passes in a row (or its very first pass)
//! bring it back. A supervisor task follows the cluster's hosts, starting a session for
//! each new host and stopping those of removed ones.

pub mod probe;

use crate::config::health_check::HealthCheckConfig;
use crate::stats::{Counter, Gauge};
use crate::upstream::cluster::Cluster;
use crate::upstream::host::Host;
use probe::Verdict;
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// `cluster.<name>.health_check.*`.
struct HealthStats {
    attempt: Arc<Counter>,
    success: Arc<Counter>,
    failure: Arc<Counter>,
    network_failure: Arc<Counter>,
    healthy: Arc<Gauge>,
}

impl HealthStats {
    fn new(cluster: &Cluster) -> Self {
        let scope = cluster.scope().child("health_check");
        HealthStats {
            attempt: scope.counter("attempt"),
            success: scope.counter("success"),
            failure: scope.counter("failure"),
            network_failure: scope.counter("network_failure"),
            healthy: scope.gauge("healthy"),
        }
    }

    fn count(&self, verdict: Verdict) {
        self.attempt.inc();
        match verdict {
            Verdict::Pass => self.success.inc(),
            Verdict::NetworkFailure => {
                self.failure.inc();
                self.network_failure.inc();
            }
            Verdict::RetriableFailure | Verdict::Failure => self.failure.inc(),
        }
    }
}

/// Starts the supervisor of `cluster`'s health checks (it ends when the cluster is
/// retired or dropped).
pub fn spawn(cluster: &Arc<Cluster>, config: Arc<HealthCheckConfig>) {
    let weak = Arc::downgrade(cluster);
    let stats = Arc::new(HealthStats::new(cluster));
    tokio::spawn(async move {
        let mut sessions: HashMap<usize, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            let Some(cluster) = weak.upgrade().filter(|c| !c.is_retired()) else {
                sessions.values().for_each(|s| s.abort());
                return;
            };
            let changed = cluster.hosts_changed();
            let hosts = cluster.members_ranked();
            let current: HashMap<usize, &Arc<Host>> = hosts
                .iter()
                .map(|r| (Arc::as_ptr(&r.host) as usize, &r.host))
                .collect();
            sessions.retain(|id, session| {
                let keep = current.contains_key(id);
                if !keep {
                    session.abort();
                }
                keep
            });
            for (id, host) in current {
                sessions.entry(id).or_insert_with(|| {
                    tokio::spawn(session(
                        weak.clone(),
                        host.clone(),
                        config.clone(),
                        stats.clone(),
                    ))
                });
            }
            stats.healthy.set(
                hosts
                    .iter()
                    .filter(|r| !r.host.failed_health_check())
                    .count() as i64,
            );
            drop(hosts);
            // Wake on membership changes, and each second to notice retirement and
            // refresh the healthy gauge.
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}

/// One host's checks, until the supervisor aborts it.
async fn session(
    cluster: Weak<Cluster>,
    host: Arc<Host>,
    config: Arc<HealthCheckConfig>,
    stats: Arc<HealthStats>,
) {
    sleep_up_to(config.initial_jitter).await;
    let mut kept = None;
    let mut first = true;
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let verdict = match tokio::time::timeout(
            config.timeout,
            probe::check(&c, &host, &config.probe, &mut kept),
        )
        .await
        {
            Ok(v) => v,
            Err(_) => {
                host.set_health_check_timed_out(true);
                Verdict::NetworkFailure
            }
        };
        if verdict == Verdict::Pass {
            host.set_health_check_timed_out(false);
        }
        stats.count(verdict);
        if verdict != Verdict::Pass || !config.reuse_connection {
            kept = None;
        }
        let was_failed = host.failed_health_check();
        let now_failed = match verdict {
            Verdict::Pass => {
                failures = 0;
                passes += 1;
                was_failed && !(first || passes >= config.healthy_threshold)
            }
            Verdict::Failure => {
                passes = 0;
                true
            }
            Verdict::NetworkFailure | Verdict::RetriableFailure => {
                passes = 0;
                failures += 1;
                was_failed || failures >= config.unhealthy_threshold
            }
        };
        c.health_checked(&host, !now_failed, first);
        if now_failed != was_failed {
            (passes, failures) = (0, 0);
        }
        first = false;
        let wait = next_interval(
            &config,
            c.has_carried_traffic(),
            now_failed,
            now_failed != was_failed,
        );
        drop(c);
        tokio::time::sleep(wait).await;
    }
}

/// The time to a host's next check, by whether the cluster has carried traffic, the
/// host's state, and whether that state just changed; jittered as configured.
fn next_interval(config: &HealthCheckConfig, traffic: bool, failed: bool, edge: bool) -> Duration {
    let base = match (traffic, failed, edge) {
        (false, false, _) => config.no_traffic_healthy_interval,
        (false, true, _) => config.no_traffic_interval,
        (true, false, true) => config.healthy_edge_interval,
        (true, true, true) => config.unhealthy_edge_interval,
        (true, false, false) => config.interval,
        (true, true, false) => config.unhealthy_interval,
    };
    let percent = base * config.interval_jitter_percent / 100;
    base + random_up_to(config.interval_jitter) + random_up_to(percent)
}

fn random_up_to(max: Duration) -> Duration {
    match max.as_millis() as u64 {
        0 => Duration::ZERO,
        ms => Duration::from_millis(rand::thread_rng().gen_range(0..ms)),
    }
}

async fn sleep_up_to(max: Duration) {
    tokio::time::sleep(random_up_to(max)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::health_check::Probe;

    fn config() -> HealthCheckConfig {
        let s = Duration::from_secs;
        HealthCheckConfig {
            probe: Probe::Tcp {
                send: Vec::new(),
                receive: Vec::new(),
            },
            timeout: s(1),
            interval: s(10),
            unhealthy_interval: s(20),
            unhealthy_edge_interval: s(30),
            healthy_edge_interval: s(40),
            no_traffic_interval: s(50),
            no_traffic_healthy_interval: s(60),
            initial_jitter: Duration::ZERO,
            interval_jitter: Duration::ZERO,
            interval_jitter_percent: 0,
            unhealthy_threshold: 1,
            healthy_threshold: 1,
            reuse_connection: true,
        }
    }

    #[test]
    fn each_state_has_its_interval() {
        let c = config();
        let s = Duration::from_secs;
        assert_eq!(next_interval(&c, false, false, false), s(60));
        assert_eq!(next_interval(&c, false, true, true), s(50));
        assert_eq!(next_interval(&c, true, false, true), s(40));
        assert_eq!(next_interval(&c, true, true, true), s(30));
        assert_eq!(next_interval(&c, true, false, false), s(10));
        assert_eq!(next_interval(&c, true, true, false), s(20));
    }

    #[test]
    fn jitter_adds_up_to_its_bounds() {
        let c = HealthCheckConfig {
            interval_jitter: Duration::from_secs(1),
            interval_jitter_percent: 50,
            ..config()
        };
        let waits: Vec<Duration> = (0..200)
            .map(|_| next_interval(&c, true, false, false))
            .collect();
        let (base, most) = (Duration::from_secs(10), Duration::from_secs(16));
        assert!(waits.iter().all(|w| *w >= base && *w < most), "{waits:?}");
        assert!(
            waits.iter().any(|w| *w > base + Duration::from_secs(1)),
            "jitter is drawn"
        );
    }
}
