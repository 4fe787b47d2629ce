//! Circuit-breaker resources shared by every worker: a count and a limit, acquired with a
//! guard that releases on drop so no path can leak a slot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One limited resource (connections, pending requests, requests, retries).
#[derive(Debug)]
pub struct Resource {
    count: AtomicU64,
    max: u64,
}

impl Resource {
    /// A resource with limit `max`.
    pub fn new(max: u64) -> Arc<Self> {
        Arc::new(Resource {
            count: AtomicU64::new(0),
            max,
        })
    }

    /// Takes a slot, or `None` when the limit is reached (overflow).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        self.try_acquire_within(self.max)
    }

    /// Takes a slot if fewer than `limit` are in use (a limit computed per attempt, as a
    /// retry budget's is).
    pub fn try_acquire_within(self: &Arc<Self>, limit: u64) -> Option<Slot> {
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
                Ok(_) => return Some(Slot(self.clone())),
                Err(now) => current = now,
            }
        }
    }

    /// Slots in use.
    pub fn in_use(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// A held slot; dropping it releases the slot.
#[derive(Debug)]
pub struct Slot(Arc<Resource>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The four circuit breakers of a cluster's default priority.
#[derive(Debug)]
pub struct Resources {
    /// max_connections.
    pub connections: Arc<Resource>,
    /// max_pending_requests.
    pub pending: Arc<Resource>,
    /// max_requests.
    pub requests: Arc<Resource>,
    /// max_retries.
    pub retries: Arc<Resource>,
    /// The retry budget replacing `max_retries`, if configured.
    pub retry_budget: Option<crate::config::cluster::RetryBudget>,
}

impl Resources {
    /// A slot for one retry: within `max_retries`, or within the retry budget's share of
    /// the active and pending requests when the cluster has one.
    pub fn try_acquire_retry(&self) -> Option<Slot> {
        match &self.retry_budget {
            Some(budget) => {
                let active = self.requests.in_use() + self.pending.in_use();
                self.retries.try_acquire_within(budget.limit(active))
            }
            None => self.retries.try_acquire(),
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
}
