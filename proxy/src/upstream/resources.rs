//! Circuit-breaker resources shared by every worker: a count and a limit, acquired with a
//! guard that releases on drop so no path can leak a slot. Each resource shows its state
//! in Envoy's `circuit_breakers.<priority>.*_open` gauge (1 while no slot is left) and,
//! with `track_remaining`, in its `remaining_*` gauge; the gauges are resolved once and
//! set by the acquire and release that change the count, never by name.

use crate::config::cluster::{RetryBudget, Thresholds};
use crate::stats::{Gauge, Scope};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// One limited resource (connections, pending requests, requests, retries, pools).
#[derive(Debug)]
pub struct Resource {
    count: AtomicU64,
    max: u64,
    /// A retry budget replacing `max`: the limit is a share of the cluster's active and
    /// pending requests.
    budget: Option<Budget>,
    /// Its gauges, once the cluster's stats exist.
    gauges: OnceLock<Gauges>,
}

/// What a retry budget's limit is computed from.
#[derive(Debug)]
struct Budget {
    budget: RetryBudget,
    requests: Arc<Resource>,
    pending: Arc<Resource>,
}

/// The gauges of one resource: `<x>_open` and, tracked, `remaining_<x>`.
#[derive(Debug)]
struct Gauges {
    open: Arc<Gauge>,
    remaining: Option<Arc<Gauge>>,
}

impl Resource {
    /// A resource with limit `max`.
    pub fn new(max: u64) -> Arc<Self> {
        Arc::new(Resource {
            count: AtomicU64::new(0),
            max,
            budget: None,
            gauges: OnceLock::new(),
        })
    }

    /// The retry resource of a retry budget: its limit is the budget's share of the
    /// `requests` and `pending` in use.
    fn budgeted(
        budget: RetryBudget,
        requests: &Arc<Resource>,
        pending: &Arc<Resource>,
    ) -> Arc<Self> {
        Arc::new(Resource {
            count: AtomicU64::new(0),
            max: 0,
            budget: Some(Budget {
                budget,
                requests: requests.clone(),
                pending: pending.clone(),
            }),
            gauges: OnceLock::new(),
        })
    }

    /// The current limit.
    fn limit(&self) -> u64 {
        match &self.budget {
            Some(b) => b.budget.limit(b.requests.in_use() + b.pending.in_use()),
            None => self.max,
        }
    }

    /// Takes a slot, or `None` when the limit is reached (overflow).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let limit = self.limit();
        let mut current = self.count.load(Ordering::Relaxed);
        loop {
            if current >= limit {
                return None;
            }
            match self.count.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.show(current + 1, limit);
                    return Some(Slot(self.clone()));
                }
                Err(now) => current = now,
            }
        }
    }

    /// Slots in use.
    pub fn in_use(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sets the gauges for `count` slots in use under `limit`, as Envoy does on every
    /// change: open when no slot is left, remaining the slots left.
    fn show(&self, count: u64, limit: u64) {
        if let Some(g) = self.gauges.get() {
            g.open.set(i64::from(count >= limit));
            if let Some(r) = &g.remaining {
                // Gauges are shown unsigned: an unlimited resource shows 2^64-1 as Envoy's.
                r.set(limit.saturating_sub(count) as i64);
            }
        }
    }

    /// Resolves the resource's gauges `<open>` and (tracked) `<remaining>` in `scope`
    /// and shows the current count.
    fn attach(&self, scope: &Scope, open: &str, remaining: Option<&str>) {
        let gauges = Gauges {
            open: scope.gauge(open),
            remaining: remaining.map(|r| scope.gauge(r)),
        };
        if self.gauges.set(gauges).is_ok() {
            self.show(self.in_use(), self.limit());
        }
    }
}

/// A held slot; dropping it releases the slot.
#[derive(Debug)]
pub struct Slot(Arc<Resource>);

impl Drop for Slot {
    fn drop(&mut self) {
        let before = self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.show(before - 1, self.0.limit());
    }
}

/// The circuit breakers of a cluster's default priority.
#[derive(Debug)]
pub struct Resources {
    /// max_connections.
    pub connections: Arc<Resource>,
    /// max_pending_requests.
    pub pending: Arc<Resource>,
    /// max_requests.
    pub requests: Arc<Resource>,
    /// max_retries, or the retry budget replacing it.
    pub retries: Arc<Resource>,
    /// Connection pools (unlimited: `max_connection_pools` is not supported), counted for
    /// `remaining_cx_pools`.
    pub pools: Arc<Resource>,
    track_remaining: bool,
}

/// Each resource's gauge names: `<open>`, `remaining_<x>`.
const GAUGES: [(&str, &str); 5] = [
    ("cx_open", "remaining_cx"),
    ("rq_pending_open", "remaining_pending"),
    ("rq_open", "remaining_rq"),
    ("rq_retry_open", "remaining_retries"),
    ("cx_pool_open", "remaining_cx_pools"),
];

impl Resources {
    /// The resources of thresholds `t`.
    pub fn new(t: &Thresholds) -> Self {
        let requests = Resource::new(t.max_requests);
        let pending = Resource::new(t.max_pending_requests);
        let retries = match t.retry_budget {
            Some(b) => Resource::budgeted(b, &requests, &pending),
            None => Resource::new(t.max_retries),
        };
        Resources {
            connections: Resource::new(t.max_connections),
            pending,
            requests,
            retries,
            pools: Resource::new(u64::MAX),
            track_remaining: t.track_remaining,
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
        let own = [
            &self.connections,
            &self.pending,
            &self.requests,
            &self.retries,
            &self.pools,
        ];
        for (r, (open, remaining)) in own.into_iter().zip(GAUGES) {
            r.attach(scope, open, self.track_remaining.then_some(remaining));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_and_released() {
        let r = Resource::new(2);
        let a = r.try_acquire().unwrap();
        let _b = r.try_acquire().unwrap();
        assert!(r.try_acquire().is_none());
        drop(a);
        assert_eq!(r.in_use(), 1);
        assert!(r.try_acquire().is_some());
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
