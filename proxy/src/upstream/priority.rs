//! Priority levels, as Envoy splits load across them: each level's health is its healthy
//! share of hosts scaled by the overprovisioning factor (default 1.4) and capped at 100 %;
//! level 0 takes as much load as its health allows, the next level the rest, and so on
//! (normalized when the levels together are under 100 %). A level whose healthy share
//! falls under the panic threshold (`healthy_panic_threshold`, 50 % unless configured;
//! 0 disables panic) balances over all its hosts.

use super::host::Host;
use super::lb::HostSet;
use std::sync::Arc;

/// One priority level as balancers see it.
#[derive(Debug)]
struct Level {
    /// The hosts to pick from (the healthy ones, or all of them in panic).
    set: Arc<HostSet>,
    /// Under locality-weighted balancing: each locality's hosts with the cumulative
    /// effective weight its share ends at (empty otherwise, or when no locality has
    /// weight).
    localities: Vec<(Arc<HostSet>, u64)>,
    /// For zone-aware routing: the healthy hosts of each locality (empty unless the
    /// split asked for them).
    zones: Vec<Zone>,
    /// Whether the level balances in panic.
    panic: bool,
    /// The level's priority number.
    priority: u32,
    /// Its health: healthy share times the overprovisioning factor, capped at 100.
    health: u64,
    /// This level's share of the load ends here (cumulative, out of 100).
    until: u64,
}

/// The load split across priority levels.
#[derive(Debug, Default)]
pub struct Priorities {
    levels: Vec<Level>,
}

/// A host with its level and health, as an assignment lists it.
#[derive(Debug, Clone)]
pub struct Ranked {
    /// The host.
    pub host: Arc<Host>,
    /// Its priority (0 is the highest).
    pub priority: u32,
    /// Whether it may take traffic outside panic.
    pub healthy: bool,
    /// Its locality (index in the assignment) and that locality's weight.
    pub locality: (u32, u32),
}

/// How a cluster splits load: the overprovisioning factor and panic threshold
/// (percentages; 140 = 1.4) and whether localities are weighted within a level.
#[derive(Debug, Clone, Copy)]
pub struct SplitPolicy {
    /// `overprovisioning_factor`.
    pub overprovisioning: u32,
    /// `healthy_panic_threshold`.
    pub panic_threshold: u32,
    /// `locality_weighted_lb_config`.
    pub locality_weighted: bool,
    /// Group each level's healthy hosts by locality (zone-aware routing reads them).
    pub zones: bool,
    /// `fail_traffic_on_panic`: a level in panic offers no host at all.
    pub fail_on_panic: bool,
}

/// Cumulative load bounds (out of 100) for levels of these healths: the first level takes
/// what its health allows, the next the rest, and so on, normalized when the healths sum
/// under 100; with no health anywhere everything goes to the first level.
fn split(health: &[u64]) -> Vec<u64> {
    let total: u64 = health.iter().sum::<u64>().min(100);
    let mut until = 0;
    let mut remaining = 100u64;
    let mut bounds: Vec<u64> = health
        .iter()
        .map(|h| {
            let load = if total == 0 {
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
            until
        })
        .collect();
    // Rounding may leave the last percent unassigned: give it to the last level used.
    if let Some(last) = bounds.iter_mut().rev().find(|b| **b > 0) {
        *last = 100;
    }
    bounds
}

/// A level's hosts grouped by locality index, in index order (each group non-empty).
fn by_locality<'a>(level: &[&'a Ranked]) -> Vec<(u32, Vec<&'a Ranked>)> {
    let mut groups: Vec<(u32, Vec<&Ranked>)> = Vec::new();
    for r in level {
        match groups.iter_mut().find(|(id, _)| *id == r.locality.0) {
            Some((_, members)) => members.push(r),
            None => groups.push((r.locality.0, vec![r])),
        }
    }
    groups.sort_unstable_by_key(|(id, _)| *id);
    groups
}

/// A level's localities with their cumulative effective weights: each locality's weight
/// times its availability (healthy share times the overprovisioning factor, capped at 1;
/// all hosts count in panic). Localities without weight or without hosts to pick get none.
fn weighted_localities(
    level: &[&Ranked],
    panic: bool,
    overprovisioning: u32,
) -> Vec<(Arc<HostSet>, u64)> {
    let mut until = 0;
    let mut out = Vec::new();
    for (_, members) in by_locality(level) {
        let weight = u64::from(members[0].locality.1);
        let usable: Vec<Arc<Host>> = members
            .iter()
            .filter(|r| panic || r.healthy)
            .map(|r| r.host.clone())
            .collect();
        let availability = if panic {
            100
        } else {
            (usable.len() as u64 * u64::from(overprovisioning) / members.len() as u64).min(100)
        };
        let effective = weight * availability;
        if effective > 0 && !usable.is_empty() {
            until += effective;
            out.push((HostSet::new(usable), until));
        }
    }
    out
}

/// One locality's healthy hosts: the locality's index in the assignment, and the hosts.
pub type Zone = (u32, Arc<HostSet>);

/// A level's healthy hosts grouped by locality index, in index order.
fn healthy_by_locality(level: &[&Ranked]) -> Vec<Zone> {
    by_locality(level)
        .into_iter()
        .map(|(id, members)| {
            let healthy = members
                .iter()
                .filter(|r| r.healthy)
                .map(|r| r.host.clone())
                .collect();
            (id, HostSet::new(healthy))
        })
        .collect()
}

impl Level {
    /// The hosts a pick at this level chooses among: a locality drawn by effective
    /// weight under locality-weighted balancing, else the level's hosts.
    fn hosts_to_pick(&self) -> &Arc<HostSet> {
        let Some((_, total)) = self.localities.last() else {
            return &self.set;
        };
        let point = rand::random::<u64>() % total;
        self.localities
            .iter()
            .find(|(_, until)| point < *until)
            .map_or(&self.set, |(set, _)| set)
    }
}

impl Priorities {
    /// Splits `hosts` into levels (and, if weighted, localities) under `policy`.
    pub fn new(hosts: &[Ranked], policy: SplitPolicy) -> Self {
        let SplitPolicy {
            overprovisioning,
            panic_threshold,
            locality_weighted,
            zones,
            fail_on_panic,
        } = policy;
        let top = hosts.iter().map(|h| h.priority).max();
        let Some(top) = top else {
            return Priorities::default();
        };
        let mut levels = Vec::new();
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
            let panic = share < u64::from(panic_threshold);
            let level: Vec<&Ranked> = hosts.iter().filter(|h| h.priority == p).collect();
            levels.push(Level {
                localities: if locality_weighted {
                    weighted_localities(&level, panic, overprovisioning)
                } else {
                    Vec::new()
                },
                zones: if zones {
                    healthy_by_locality(&level)
                } else {
                    Vec::new()
                },
                panic,
                set: HostSet::new(match (panic, fail_on_panic) {
                    (true, true) => Vec::new(),
                    (true, false) => all,
                    (false, _) => healthy,
                }),
                priority: p,
                health: (share * u64::from(overprovisioning) / 100).min(100),
                until: 0,
            });
        }
        let health: Vec<u64> = levels.iter().map(|l| l.health).collect();
        for (level, until) in levels.iter_mut().zip(split(&health)) {
            level.until = until;
        }
        // Kept for the cluster's life: no spare slots (most clusters have one level).
        levels.shrink_to_fit();
        Priorities { levels }
    }

    /// The level a request goes to (`hash`: the request's hash, else a random draw), with
    /// its priority. Levels in `excluded` (the previous_priorities retry policy) count as
    /// having no health, so their load goes to the others by health; when that leaves no
    /// health at all, the usual split applies.
    pub fn choose(&self, hash: u64, excluded: &[u32]) -> Option<(&Arc<HostSet>, u32)> {
        let draw = hash % 100;
        let level = if excluded.is_empty() {
            self.by_usual_split(draw)
        } else {
            self.by_split_excluding(draw, excluded)
        };
        level
            .or(self.levels.first())
            .map(|l| (l.hosts_to_pick(), l.priority))
    }

    /// Priority 0's healthy hosts per locality and whether it is in panic (for
    /// zone-aware routing), when the split grouped them.
    pub fn first_level_zones(&self) -> Option<(&[Zone], bool)> {
        self.levels
            .first()
            .filter(|l| l.priority == 0)
            .map(|l| (l.zones.as_slice(), l.panic))
    }

    /// The level `draw` falls in under the precomputed split (no allocation: every
    /// request without excluded levels comes here).
    fn by_usual_split(&self, draw: u64) -> Option<&Level> {
        self.levels.iter().find(|l| draw < l.until)
    }

    /// The level `draw` falls in once `excluded` levels count as having no health.
    fn by_split_excluding(&self, draw: u64, excluded: &[u32]) -> Option<&Level> {
        let adjusted: Vec<u64> = self
            .levels
            .iter()
            .map(|l| {
                if excluded.contains(&l.priority) {
                    0
                } else {
                    l.health
                }
            })
            .collect();
        if adjusted.iter().all(|h| *h == 0) {
            return self.by_usual_split(draw);
        }
        self.levels
            .iter()
            .zip(split(&adjusted))
            .find(|(_, until)| draw < *until)
            .map(|(l, _)| l)
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
            locality: (0, 1),
        }
    }

    const USUAL: SplitPolicy = SplitPolicy {
        overprovisioning: 140,
        panic_threshold: 50,
        locality_weighted: false,
        zones: false,
        fail_on_panic: false,
    };

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
        let p = Priorities::new(&[ranked(1, 0, true), ranked(2, 1, true)], USUAL);
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
        let p = Priorities::new(&hosts, USUAL);
        assert_eq!(loads(&p), vec![70, 30]);
        assert_eq!(p.levels[0].set.hosts.len(), 2, "unhealthy hosts left out");
    }

    #[test]
    fn panic_balances_over_all_hosts() {
        let hosts = [ranked(1, 0, true), ranked(2, 0, false), ranked(3, 0, false)];
        let p = Priorities::new(&hosts, USUAL);
        assert_eq!(p.levels[0].set.hosts.len(), 3);
        assert_eq!(loads(&p), vec![100]);
    }

    #[test]
    fn excluded_levels_hand_their_load_to_the_others() {
        let hosts = [ranked(1, 0, true), ranked(2, 1, true), ranked(3, 2, false)];
        let p = Priorities::new(&hosts, USUAL);
        let level = |draw: u64, excluded: &[u32]| p.choose(draw, excluded).map(|(_, l)| l);
        assert_eq!((level(0, &[]), level(99, &[])), (Some(0), Some(0)));
        assert_eq!((level(0, &[0]), level(99, &[0])), (Some(1), Some(1)));
        // Nothing healthy left after excluding: the usual split.
        assert_eq!(level(50, &[0, 1]), Some(0));
    }

    #[test]
    fn localities_share_by_weight_times_availability() {
        let at = |n: u16, locality: (u32, u32), healthy: bool| Ranked {
            locality,
            ..ranked(n, 0, healthy)
        };
        let weighted = SplitPolicy {
            locality_weighted: true,
            ..USUAL
        };
        // Weights 2 and 1, all healthy; a locality without weight gets nothing.
        let p = Priorities::new(
            &[
                at(1, (0, 2), true),
                at(2, (1, 1), true),
                at(3, (2, 0), true),
            ],
            weighted,
        );
        let bounds: Vec<u64> = p.levels[0].localities.iter().map(|(_, u)| *u).collect();
        assert_eq!(bounds, vec![200, 300]);
        // Half of locality 0 unhealthy: availability 0.5 x 1.4 = 0.7 of its weight.
        let hosts = [
            at(1, (0, 1), true),
            at(2, (0, 1), false),
            at(3, (1, 1), true),
        ];
        let p = Priorities::new(&hosts, weighted);
        let bounds: Vec<u64> = p.levels[0].localities.iter().map(|(_, u)| *u).collect();
        assert_eq!(bounds, vec![70, 170]);
        assert_eq!(
            p.levels[0].localities[0].0.hosts.len(),
            1,
            "only the healthy host"
        );
    }

    #[test]
    fn no_health_anywhere_goes_to_the_first_level() {
        let p = Priorities::new(&[ranked(1, 0, false), ranked(2, 1, false)], USUAL);
        assert_eq!(loads(&p), vec![100, 0]);
    }
}
