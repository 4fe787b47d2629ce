//! Priority levels, as Envoy splits load across them: each level's health is its healthy
//! share of hosts scaled by the overprovisioning factor (default 1.4) and capped at 100 %;
//! level 0 takes as much load as its health allows, the next level the rest, and so on
//! (normalized when the levels together are under 100 %). A level whose healthy share
//! falls under the panic threshold (50 %) balances over all its hosts.

use super::host::Host;
use super::lb::HostSet;
use std::sync::Arc;

/// Envoy's default panic threshold, in percent.
const PANIC_THRESHOLD: u64 = 50;

/// One priority level as balancers see it.
#[derive(Debug)]
struct Level {
    /// The hosts to pick from (the healthy ones, or all of them in panic).
    set: Arc<HostSet>,
    /// This level's share of the load ends here (cumulative, out of 100).
    until: u64,
}

/// The load split across priority levels.
#[derive(Debug, Default)]
pub struct Priorities {
    levels: Vec<Level>,
}

/// A host with its level and health, as an assignment lists it.
pub struct Ranked {
    /// The host.
    pub host: Arc<Host>,
    /// Its priority (0 is the highest).
    pub priority: u32,
    /// Whether it may take traffic outside panic.
    pub healthy: bool,
}

impl Priorities {
    /// One level of healthy hosts (static and DNS clusters without priorities).
    pub fn single(set: Arc<HostSet>) -> Self {
        Priorities {
            levels: vec![Level { set, until: 100 }],
        }
    }

    /// Splits `hosts` into levels; `overprovisioning` is a percentage (140 = 1.4).
    pub fn new(hosts: &[Ranked], overprovisioning: u32) -> Self {
        let top = hosts.iter().map(|h| h.priority).max();
        let Some(top) = top else {
            return Priorities::default();
        };
        let mut levels = Vec::new();
        let mut health = Vec::new();
        for p in 0..=top {
            let all: Vec<Arc<Host>> = hosts
                .iter()
                .filter(|h| h.priority == p)
                .map(|h| h.host.clone())
                .collect();
            if all.is_empty() {
                continue;
            }
            let healthy: Vec<Arc<Host>> = hosts
                .iter()
                .filter(|h| h.priority == p && h.healthy)
                .map(|h| h.host.clone())
                .collect();
            let share = healthy.len() as u64 * 100 / all.len() as u64;
            health.push((share * u64::from(overprovisioning) / 100).min(100));
            let panic = share < PANIC_THRESHOLD;
            levels.push(HostSet::new(if panic || healthy.is_empty() {
                all
            } else {
                healthy
            }));
        }
        let total: u64 = health.iter().sum::<u64>().min(100);
        let mut until = 0;
        let mut remaining = 100u64;
        let levels = levels
            .into_iter()
            .zip(&health)
            .map(|(set, h)| {
                let load = if total == 0 {
                    // No level has health: everything goes to the first one, in panic.
                    if until == 0 {
                        100
                    } else {
                        0
                    }
                } else if total < 100 {
                    h * 100 / total
                } else {
                    (*h).min(remaining)
                };
                remaining = remaining.saturating_sub(load);
                until = (until + load).min(100);
                Level { set, until }
            })
            .collect();
        let mut p = Priorities { levels };
        // Rounding may leave the last percent unassigned: give it to the last level used.
        if let Some(last) = p.levels.iter_mut().rev().find(|l| l.until > 0) {
            if last.until < 100 {
                last.until = 100;
            }
        }
        p
    }

    /// The level a request goes to (`hash`: the request's hash, else a random draw).
    pub fn choose(&self, hash: u64) -> Option<&Arc<HostSet>> {
        let draw = hash % 100;
        self.levels
            .iter()
            .find(|l| draw < l.until)
            .or(self.levels.first())
            .map(|l| &l.set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::host::HostAddress;

    fn ranked(n: u16, priority: u32, healthy: bool) -> Ranked {
        Ranked {
            host: Arc::new(Host::new(
                HostAddress::Tcp(([127, 0, 0, 1], n).into()),
                String::new(),
                1,
            )),
            priority,
            healthy,
        }
    }

    fn loads(p: &Priorities) -> Vec<u64> {
        let mut prev = 0;
        p.levels
            .iter()
            .map(|l| {
                let load = l.until - prev;
                prev = l.until;
                load
            })
            .collect()
    }

    #[test]
    fn healthy_first_level_takes_everything() {
        let p = Priorities::new(&[ranked(1, 0, true), ranked(2, 1, true)], 140);
        assert_eq!(loads(&p), vec![100, 0]);
    }

    #[test]
    fn degraded_first_level_spills_over() {
        // 2 of 4 healthy: 50 % * 1.4 = 70 % stays, 30 % goes to level 1.
        let hosts = [
            ranked(1, 0, true),
            ranked(2, 0, true),
            ranked(3, 0, false),
            ranked(4, 0, false),
            ranked(5, 1, true),
        ];
        let p = Priorities::new(&hosts, 140);
        assert_eq!(loads(&p), vec![70, 30]);
        assert_eq!(p.levels[0].set.hosts.len(), 2, "unhealthy hosts left out");
    }

    #[test]
    fn panic_balances_over_all_hosts() {
        let hosts = [ranked(1, 0, true), ranked(2, 0, false), ranked(3, 0, false)];
        let p = Priorities::new(&hosts, 140);
        assert_eq!(p.levels[0].set.hosts.len(), 3);
        assert_eq!(loads(&p), vec![100]);
    }

    #[test]
    fn no_health_anywhere_goes_to_the_first_level() {
        let p = Priorities::new(&[ranked(1, 0, false), ranked(2, 1, false)], 140);
        assert_eq!(loads(&p), vec![100, 0]);
    }
}
