//! Load balancers: ROUND_ROBIN (smooth weighted), LEAST_REQUEST (power of N choices, or
//! weight / (active+1)^bias when weights differ), RANDOM (weighted), RING_HASH and MAGLEV
//! (tables built once per host set), and ORIGINAL_DST's pass-through.

use super::hash::hash_key;
use super::host::{Host, HostAddress};
use crate::config::cluster::{LbPolicy, SlowStart};
use rand::Rng;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// What a balancer may use from the request.
#[derive(Debug, Default, Clone, Copy)]
pub struct LbContext {
    /// Hash from the route's hash policies.
    pub hash: Option<u64>,
    /// The downstream connection's original destination (ORIGINAL_DST clusters).
    pub original_dst: Option<SocketAddr>,
}

/// An immutable set of hosts with the tables hashing balancers derive from it.
#[derive(Debug, Default)]
pub struct HostSet {
    /// Hosts in configuration order.
    pub hosts: Vec<Arc<Host>>,
    ring: OnceLock<Vec<(u64, usize)>>,
    maglev: OnceLock<Vec<usize>>,
    /// Round robin position (equal weights), started at random.
    next: AtomicUsize,
    /// Smooth weighted round robin: each host's current value.
    smooth: Mutex<Vec<i64>>,
}

impl HostSet {
    /// A host set.
    pub fn new(hosts: Vec<Arc<Host>>) -> Arc<Self> {
        let n = hosts.len();
        Arc::new(HostSet {
            hosts,
            ring: OnceLock::new(),
            maglev: OnceLock::new(),
            next: AtomicUsize::new(rand::thread_rng().gen_range(0..1024)),
            smooth: Mutex::new(vec![0; n]),
        })
    }

    fn equal_weights(&self) -> bool {
        self.hosts.windows(2).all(|w| w[0].weight == w[1].weight)
    }
}

/// A cluster's balancer (shared by workers; the round-robin state lives in each host
/// set, so priority levels and localities each keep their own rotation).
#[derive(Debug)]
pub struct Balancer {
    policy: LbPolicy,
    slow_start: Option<SlowStart>,
    /// The `transport_socket_matches` entry of ORIGINAL_DST hosts (they carry no
    /// metadata, so only an entry with empty criteria can match them).
    original_dst_tls: Option<u16>,
}

/// Weight scale under slow start: ramped weights keep three decimals.
const RAMP_SCALE: u64 = 1000;

impl Balancer {
    /// A balancer for a policy.
    pub fn new(policy: LbPolicy) -> Self {
        Balancer {
            policy,
            slow_start: None,
            original_dst_tls: None,
        }
    }

    /// The same balancer giving the ORIGINAL_DST hosts it makes `tls_match`.
    pub fn with_original_dst_tls(mut self, tls_match: Option<u16>) -> Self {
        self.original_dst_tls = tls_match;
        self
    }

    /// The same balancer ramping new hosts up over a slow start window (round robin and
    /// least request only; the config refuses it elsewhere).
    pub fn with_slow_start(mut self, slow_start: Option<SlowStart>) -> Self {
        self.slow_start = slow_start;
        self
    }

    /// The hosts' weights scaled by their slow start factors (times [`RAMP_SCALE`]), or
    /// `None` when no host of `set` is in its window (the configured weights apply).
    fn ramped(&self, set: &HostSet) -> Option<Vec<u64>> {
        let s = self.slow_start.as_ref()?;
        let now = std::time::Instant::now();
        let factors: Vec<Option<f64>> = set
            .hosts
            .iter()
            .map(|h| s.factor(now.saturating_duration_since(h.in_service_since())))
            .collect();
        if factors.iter().all(Option::is_none) {
            return None;
        }
        Some(
            set.hosts
                .iter()
                .zip(factors)
                .map(|(h, f)| {
                    let scaled = u64::from(h.weight) as f64 * RAMP_SCALE as f64 * f.unwrap_or(1.0);
                    (scaled as u64).max(1)
                })
                .collect(),
        )
    }

    /// Picks a host, or `None` when there is none to pick.
    pub fn pick(&self, set: &HostSet, ctx: &LbContext) -> Option<Arc<Host>> {
        if let LbPolicy::ClusterProvided = self.policy {
            return ctx.original_dst.map(|a| {
                Arc::new(
                    Host::new(HostAddress::Tcp(a), String::new(), 1)
                        .with_tls_match(self.original_dst_tls),
                )
            });
        }
        if set.hosts.is_empty() {
            return None;
        }
        let idx = match &self.policy {
            LbPolicy::RoundRobin => round_robin(set, self.ramped(set)),
            LbPolicy::Random => weighted_random(set),
            LbPolicy::LeastRequest {
                choice_count,
                active_request_bias,
            } => least_request(set, *choice_count, *active_request_bias, self.ramped(set)),
            LbPolicy::RingHash {
                min_ring_size,
                max_ring_size,
            } => {
                let ring = set
                    .ring
                    .get_or_init(|| build_ring(&set.hosts, *min_ring_size, *max_ring_size));
                let h = ctx.hash.unwrap_or_else(|| rand::thread_rng().gen());
                let pos = ring.partition_point(|(k, _)| *k < h);
                ring.get(pos).or(ring.first()).map(|(_, i)| *i).unwrap_or(0)
            }
            LbPolicy::Maglev { table_size } => {
                let table = set
                    .maglev
                    .get_or_init(|| build_maglev(&set.hosts, *table_size as usize));
                let h = ctx.hash.unwrap_or_else(|| rand::thread_rng().gen());
                table[(h % table.len() as u64) as usize]
            }
            LbPolicy::ClusterProvided => unreachable!("handled above"),
        };
        set.hosts.get(idx).cloned()
    }
}

/// Round robin; `ramped` are slow-start weights when some host is ramping up.
fn round_robin(set: &HostSet, ramped: Option<Vec<u64>>) -> usize {
    let n = set.hosts.len();
    if ramped.is_none() && set.equal_weights() {
        return set.next.fetch_add(1, Ordering::Relaxed) % n;
    }
    let weights: Vec<i64> = match ramped {
        Some(w) => w.into_iter().map(|w| w as i64).collect(),
        None => set.hosts.iter().map(|h| i64::from(h.weight)).collect(),
    };
    // Smooth weighted round robin: every pick adds each weight to its host's current
    // value and picks the largest, which then pays back the total.
    let mut current = set.smooth.lock().unwrap_or_else(|e| e.into_inner());
    let total: i64 = weights.iter().sum();
    let mut best = 0;
    for (i, w) in weights.iter().enumerate() {
        current[i] += w;
        if current[i] > current[best] {
            best = i;
        }
    }
    current[best] -= total;
    best
}

fn weighted_random(set: &HostSet) -> usize {
    let total: u64 = set.hosts.iter().map(|h| u64::from(h.weight)).sum();
    let mut r = rand::thread_rng().gen_range(0..total);
    for (i, h) in set.hosts.iter().enumerate() {
        if r < u64::from(h.weight) {
            return i;
        }
        r -= u64::from(h.weight);
    }
    0
}

/// Least request; `ramped` are slow-start weights when some host is ramping up.
fn least_request(set: &HostSet, choices: u32, bias: f64, ramped: Option<Vec<u64>>) -> usize {
    let mut rng = rand::thread_rng();
    let n = set.hosts.len();
    if ramped.is_none() && set.equal_weights() {
        let mut best = rng.gen_range(0..n);
        for _ in 1..choices {
            let c = rng.gen_range(0..n);
            if set.hosts[c].active_requests() < set.hosts[best].active_requests() {
                best = c;
            }
        }
        return best;
    }
    let weights: Vec<f64> = set
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let weight = ramped.as_ref().map_or(f64::from(h.weight), |w| w[i] as f64);
            weight / ((h.active_requests() + 1) as f64).powf(bias)
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let mut r = rng.gen::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if r < *w {
            return i;
        }
        r -= w;
    }
    n - 1
}

fn build_ring(hosts: &[Arc<Host>], min: u64, max: u64) -> Vec<(u64, usize)> {
    let total: f64 = hosts.iter().map(|h| f64::from(h.weight)).sum();
    let normalized: Vec<f64> = hosts.iter().map(|h| f64::from(h.weight) / total).collect();
    let min_norm = normalized.iter().cloned().fold(1.0, f64::min);
    let scale = ((min_norm * min as f64).ceil() / min_norm).min(max as f64);
    let mut ring = Vec::with_capacity(scale as usize + hosts.len());
    let mut current = 0.0;
    let mut target = 0.0;
    for (i, h) in hosts.iter().enumerate() {
        target += scale * normalized[i];
        let mut n = 0u64;
        while current < target {
            let key = format!("{}_{n}", h.address_string);
            ring.push((hash_key(key.as_bytes()), i));
            n += 1;
            current += 1.0;
        }
    }
    ring.sort_unstable();
    ring
}

fn build_maglev(hosts: &[Arc<Host>], m: usize) -> Vec<usize> {
    let max_weight = hosts.iter().map(|h| h.weight).max().unwrap_or(1) as f64;
    struct Entry {
        offset: u64,
        skip: u64,
        weight: f64,
        target: f64,
        next: u64,
    }
    let mut entries: Vec<Entry> = hosts
        .iter()
        .map(|h| {
            let key = h.address_string.as_bytes();
            Entry {
                offset: xxhash_rust::xxh64::xxh64(key, 0) % m as u64,
                skip: xxhash_rust::xxh64::xxh64(key, 1) % (m as u64 - 1) + 1,
                weight: f64::from(h.weight) / max_weight,
                target: 0.0,
                next: 0,
            }
        })
        .collect();
    let mut table = vec![usize::MAX; m];
    let mut filled = 0;
    let mut iteration = 1u64;
    while filled < m {
        for (i, e) in entries.iter_mut().enumerate() {
            if (iteration as f64) * e.weight < e.target {
                continue;
            }
            e.target += 1.0;
            let mut c = ((e.offset + e.skip * e.next) % m as u64) as usize;
            while table[c] != usize::MAX {
                e.next += 1;
                c = ((e.offset + e.skip * e.next) % m as u64) as usize;
            }
            table[c] = i;
            e.next += 1;
            filled += 1;
            if filled == m {
                break;
            }
        }
        iteration += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(weights: &[u32]) -> Arc<HostSet> {
        HostSet::new(
            weights
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    Arc::new(Host::new(
                        HostAddress::Tcp(format!("127.0.0.{}:80", i + 1).parse().unwrap()),
                        String::new(),
                        *w,
                    ))
                })
                .collect(),
        )
    }

    fn counts(
        b: &Balancer,
        s: &HostSet,
        n: usize,
        hash: impl Fn(usize) -> Option<u64>,
    ) -> Vec<usize> {
        let mut c = vec![0; s.hosts.len()];
        for i in 0..n {
            let h = b
                .pick(
                    s,
                    &LbContext {
                        hash: hash(i),
                        original_dst: None,
                    },
                )
                .unwrap();
            c[s.hosts.iter().position(|x| Arc::ptr_eq(x, &h)).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn weighted_round_robin_is_exact() {
        let s = set(&[1, 3]);
        assert_eq!(
            counts(&Balancer::new(LbPolicy::RoundRobin), &s, 400, |_| None),
            vec![100, 300]
        );
        let s = set(&[1, 1, 1]);
        assert_eq!(
            counts(&Balancer::new(LbPolicy::RoundRobin), &s, 300, |_| None),
            vec![100, 100, 100]
        );
    }

    #[test]
    fn hashing_balancers_are_sticky_and_spread() {
        let s = set(&[1, 1, 1]);
        for policy in [
            LbPolicy::RingHash {
                min_ring_size: 1024,
                max_ring_size: 8 << 20,
            },
            LbPolicy::Maglev { table_size: 65537 },
        ] {
            let b = Balancer::new(policy);
            let a = b
                .pick(
                    &s,
                    &LbContext {
                        hash: Some(42),
                        original_dst: None,
                    },
                )
                .unwrap();
            for _ in 0..10 {
                assert!(Arc::ptr_eq(
                    &a,
                    &b.pick(
                        &s,
                        &LbContext {
                            hash: Some(42),
                            original_dst: None
                        }
                    )
                    .unwrap()
                ));
            }
            let c = counts(&b, &s, 3000, |i| Some(hash_key(i.to_string().as_bytes())));
            assert!(c.iter().all(|n| *n > 700), "{c:?}");
        }
    }

    #[test]
    fn maglev_respects_weights() {
        let s = set(&[1, 3]);
        let table = build_maglev(&s.hosts, 65537);
        let ones = table.iter().filter(|i| **i == 1).count() as f64 / table.len() as f64;
        assert!((ones - 0.75).abs() < 0.01, "{ones}");
    }

    #[test]
    fn random_and_least_request_cover_hosts() {
        let s = set(&[1, 1]);
        for p in [
            LbPolicy::Random,
            LbPolicy::LeastRequest {
                choice_count: 2,
                active_request_bias: 1.0,
            },
        ] {
            let c = counts(&Balancer::new(p), &s, 1000, |_| None);
            assert!(c.iter().all(|n| *n > 350), "{c:?}");
        }
        let busy = s.hosts[0].start_request();
        let c = counts(
            &Balancer::new(LbPolicy::LeastRequest {
                choice_count: 2,
                active_request_bias: 1.0,
            }),
            &s,
            1000,
            |_| None,
        );
        assert!(c[1] > 700, "{c:?}");
        drop(busy);
    }
}
