//! Circuit-breaker resources shared by every worker: a count and a limit per resource,
//! acquired with a guard that releases on drop so no path can leak a slot. Each resource
//! shows its state in Envoy's `circuit_breakers.<priority>.*_open` gauge (1 while no slot
//! is left) and, with `track_remaining`, in its `remaining_*` gauge; the gauges are
//! resolved once and set by the acquire and release that change the count, never by
//! name. A cluster's five resources share one allocation.

use crate::config::cluster::{RetryBudget, Thresholds};
use crate::stats::{Gauge, Scope};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Which resource (an index into the shared counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connections,
    Pending,
    Requests,
    Retries,
    Pools,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Connections,
        Kind::Pending,
        Kind::Requests,
        Kind::Retries,
        Kind::Pools,
    ];
}

/// Each resource's gauge names, by [`Kind`]: `<open>`, `remaining_<x>`.
const GAUGES: [(&str, &str); 5] = [
    ("cx_open", "remaining_cx"),
    ("rq_pending_open", "remaining_pending"),
    ("rq_open", "remaining_rq"),
    ("rq_retry_open", "remaining_retries"),
    ("cx_pool_open", "remaining_cx_pools"),
];

/// The counts, limits and gauges of one priority's resources.
#[derive(Debug)]
struct Shared {
    counts: [AtomicU64; 5],
    max: [u64; 5],
    /// A retry budget replacing `max_retries`: the limit is a share of the active and
    /// pending requests.
    budget: Option<RetryBudget>,
    track_remaining: bool,
    /// The gauges, once the cluster's stats exist.
    gauges: OnceLock<Box<[Gauges; 5]>>,
}

/// The gauges of one resource: `<x>_open` and, tracked, `remaining_<x>`.
#[derive(Debug)]
struct Gauges {
    open: Arc<Gauge>,
    remaining: Option<Arc<Gauge>>,
}

impl Shared {
    /// The current limit of `kind`.
    fn limit(&self, kind: Kind) -> u64 {
        match (kind, &self.budget) {
            (Kind::Retries, Some(b)) => {
                b.limit(self.in_use(Kind::Requests) + self.in_use(Kind::Pending))
            }
            _ => self.max[kind as usize],
        }
    }

    fn in_use(&self, kind: Kind) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }

    /// Sets `kind`'s gauges for `count` slots in use under `limit`, as Envoy does on every
    /// change: open when no slot is left, remaining the slots left.
    fn show(&self, kind: Kind, count: u64, limit: u64) {
        if let Some(g) = self.gauges.get().map(|g| &g[kind as usize]) {
            g.open.set(i64::from(count >= limit));
            if let Some(r) = &g.remaining {
                // Gauges are shown unsigned: an unlimited resource shows 2^64-1 as Envoy's.
                r.set(limit.saturating_sub(count) as i64);
            }
        }
    }
}

/// One limited resource (connections, pending requests, requests, retries, pools).
#[derive(Debug, Clone)]
pub struct Resource {
    shared: Arc<Shared>,
    kind: Kind,
}

impl Resource {
    /// Takes a slot, or `None` when the limit is reached (overflow).
    pub fn try_acquire(&self) -> Option<Slot> {
        let count = &self.shared.counts[self.kind as usize];
        let limit = self.shared.limit(self.kind);
        let mut current = count.load(Ordering::Relaxed);
        loop {
            if current >= limit {
                return None;
            }
            match count.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.shared.show(self.kind, current + 1, limit);
                    return Some(Slot(self.clone()));
                }
                Err(now) => current = now,
            }
        }
    }

    /// Slots in use.
    pub fn in_use(&self) -> u64 {
        self.shared.in_use(self.kind)
    }
}

/// A held slot; dropping it releases the slot.
#[derive(Debug)]
pub struct Slot(Resource);

impl Drop for Slot {
    fn drop(&mut self) {
        let Resource { shared, kind } = &self.0;
        let before = shared.counts[*kind as usize].fetch_sub(1, Ordering::AcqRel);
        shared.show(*kind, before - 1, shared.limit(*kind));
    }
}

/// The circuit breakers of a cluster's default priority.
#[derive(Debug)]
pub struct Resources {
    /// max_connections.
    pub connections: Resource,
    /// max_pending_requests.
    pub pending: Resource,
    /// max_requests.
    pub requests: Resource,
    /// max_retries, or the retry budget replacing it.
    pub retries: Resource,
    /// Connection pools (unlimited: `max_connection_pools` is not supported), counted for
    /// `remaining_cx_pools`.
    pub pools: Resource,
}

impl Resources {
    /// The resources of thresholds `t`.
    pub fn new(t: &Thresholds) -> Self {
        let shared = Arc::new(Shared {
            counts: Default::default(),
            max: [
                t.max_connections,
                t.max_pending_requests,
                t.max_requests,
                t.max_retries,
                u64::MAX,
            ],
            budget: t.retry_budget,
            track_remaining: t.track_remaining,
            gauges: OnceLock::new(),
        });
        let of = |kind| Resource {
            shared: shared.clone(),
            kind,
        };
        Resources {
            connections: of(Kind::Connections),
            pending: of(Kind::Pending),
            requests: of(Kind::Requests),
            retries: of(Kind::Retries),
            pools: of(Kind::Pools),
        }
    }

    /// A slot for one retry: within `max_retries`, or within the retry budget's share of
    /// the active and pending requests when the cluster has one.
    pub fn try_acquire_retry(&self) -> Option<Slot> {
        self.retries.try_acquire()
    }

    /// Creates the `circuit_breakers.default.*` gauges in the cluster's `scope`, and the
    /// `circuit_breakers.high.*` ones of the high priority (`high`), which no route
    /// uses (`RouteAction.priority` is not supported): they show its idle state.
    pub fn attach_stats(&self, scope: &Scope, high: &Thresholds) {
        let breakers = scope.child("circuit_breakers");
        self.attach(&breakers.child("default"));
        Resources::new(high).attach(&breakers.child("high"));
    }

    fn attach(&self, scope: &Scope) {
        let shared = &self.connections.shared;
        let gauges = GAUGES.map(|(open, remaining)| Gauges {
            open: scope.gauge(open),
            remaining: shared.track_remaining.then(|| scope.gauge(remaining)),
        });
        if shared.gauges.set(Box::new(gauges)).is_ok() {
            for kind in Kind::ALL {
                shared.show(kind, shared.in_use(kind), shared.limit(kind));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_and_released() {
        let resources = Resources::new(&Thresholds {
            max_connections: 2,
            ..Thresholds::default()
        });
        let r = &resources.connections;
        let a = r.try_acquire().unwrap();
        let _b = r.try_acquire().unwrap();
        assert!(r.try_acquire().is_none());
        drop(a);
        assert_eq!(r.in_use(), 1);
        assert!(r.try_acquire().is_some());
        assert_eq!(
            resources.requests.in_use(),
            0,
            "each resource counts its own"
        );
    }

    #[test]
    fn gauges_follow_the_count() {
        let store = crate::stats::Store::new();
        let scope = store.root().child("c");
        let t = Thresholds {
            max_requests: 1,
            track_remaining: true,
            ..Thresholds::default()
        };
        let r = Resources::new(&t);
        r.attach_stats(&scope, &Thresholds::default());
        let value = |name: &str| {
            store
                .snapshot()
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, e)| match e.kind {
                    crate::stats::StatKind::Gauge(g) => g.value(),
                    _ => panic!("{name} is a gauge"),
                })
        };
        assert_eq!(value("c.circuit_breakers.default.remaining_rq"), Some(1));
        let slot = r.requests.try_acquire().unwrap();
        assert_eq!(value("c.circuit_breakers.default.rq_open"), Some(1));
        assert_eq!(value("c.circuit_breakers.default.remaining_rq"), Some(0));
        drop(slot);
        assert_eq!(value("c.circuit_breakers.default.rq_open"), Some(0));
        assert_eq!(value("c.circuit_breakers.default.remaining_rq"), Some(1));
        assert_eq!(
            value("c.circuit_breakers.default.remaining_cx_pools"),
            Some(-1),
            "2^64-1, shown unsigned"
        );
        assert_eq!(value("c.circuit_breakers.high.rq_open"), Some(0));
        assert_eq!(
            value("c.circuit_breakers.high.remaining_rq"),
            None,
            "the high priority tracks nothing unless asked"
        );
    }
}
