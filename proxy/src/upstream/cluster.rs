//! A running cluster: its translated config, current host set, balancer, circuit
//! breakers and stats (pre-resolved so the data path never formats a stat name).

use super::host::{Host, HostAddress};
use super::lb::{Balancer, HostSet, LbContext};
use super::outlier::monitor::Outcome;
use super::outlier::Detector;
use super::priority::{Priorities, Ranked, SplitPolicy};
use super::resources::Resources;
use crate::config::cluster::{ClusterConfig, LbPolicy, Locality};
use crate::config::common::Address;
use crate::stats::{Counter, Gauge, Histogram, Scope};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Instant;

/// Envoy's per-cluster stats that meshproxy maintains.
#[derive(Debug)]
pub struct ClusterStats {
    /// upstream_cx_total
    pub cx_total: Arc<Counter>,
    /// upstream_cx_active
    pub cx_active: Arc<Gauge>,
    /// upstream_cx_http1_total
    pub cx_http1_total: Arc<Counter>,
    /// upstream_cx_http2_total
    pub cx_http2_total: Arc<Counter>,
    /// upstream_cx_connect_fail
    pub cx_connect_fail: Arc<Counter>,
    /// upstream_cx_connect_timeout
    pub cx_connect_timeout: Arc<Counter>,
    /// upstream_cx_overflow
    pub cx_overflow: Arc<Counter>,
    /// upstream_cx_destroy
    pub cx_destroy: Arc<Counter>,
    /// upstream_cx_idle_timeout: connections closed for being idle too long.
    pub cx_idle_timeout: Arc<Counter>,
    /// upstream_cx_none_healthy
    pub cx_none_healthy: Arc<Counter>,
    /// upstream_cx_rx_bytes_total
    pub cx_rx_bytes: Arc<Counter>,
    /// upstream_cx_tx_bytes_total
    pub cx_tx_bytes: Arc<Counter>,
    /// upstream_rq_total
    pub rq_total: Arc<Counter>,
    /// upstream_rq_active
    pub rq_active: Arc<Gauge>,
    /// upstream_rq_completed
    pub rq_completed: Arc<Counter>,
    /// upstream_rq_pending_total
    pub rq_pending_total: Arc<Counter>,
    /// upstream_rq_pending_active
    pub rq_pending_active: Arc<Gauge>,
    /// upstream_rq_pending_overflow
    pub rq_pending_overflow: Arc<Counter>,
    /// upstream_rq_active_overflow: requests refused by `max_requests`.
    pub rq_active_overflow: Arc<Counter>,
    /// upstream_rq_timeout
    pub rq_timeout: Arc<Counter>,
    /// upstream_rq_rx_reset
    pub rq_rx_reset: Arc<Counter>,
    /// upstream_rq_retry
    pub rq_retry: Arc<Counter>,
    /// upstream_rq_retry_success
    pub rq_retry_success: Arc<Counter>,
    /// upstream_rq_retry_overflow
    pub rq_retry_overflow: Arc<Counter>,
    /// upstream_rq_per_try_idle_timeout: attempts abandoned for lack of progress.
    pub rq_per_try_idle_timeout: Arc<Counter>,
    /// upstream_rq_retry_backoff_exponential: retries that waited the jittered exponential
    /// back-off.
    pub rq_retry_backoff_exponential: Arc<Counter>,
    /// upstream_rq_retry_backoff_ratelimited: retries that waited what the upstream's
    /// reset header asked for.
    pub rq_retry_backoff_ratelimited: Arc<Counter>,
    /// upstream_rq_time
    pub rq_time: Arc<Histogram>,
    /// lb_zone_routing_all_directly: zone-aware picks kept in the proxy's locality.
    pub lb_zone_routing_all_directly: Arc<Counter>,
    /// lb_zone_routing_sampled: picks sampled into the proxy's locality.
    pub lb_zone_routing_sampled: Arc<Counter>,
    /// lb_zone_routing_cross_zone: picks sent to another locality.
    pub lb_zone_routing_cross_zone: Arc<Counter>,
    /// lb_zone_cluster_too_small: zone routing skipped for too few hosts.
    pub lb_zone_cluster_too_small: Arc<Counter>,
    /// lb_local_cluster_not_ok: zone routing skipped, the local cluster in panic.
    pub lb_local_cluster_not_ok: Arc<Counter>,
    /// lb_zone_no_capacity_left: cross-zone picks with no spare share anywhere.
    pub lb_zone_no_capacity_left: Arc<Counter>,
    /// membership_total
    pub membership_total: Arc<Gauge>,
    /// membership_healthy
    pub membership_healthy: Arc<Gauge>,
    scope: Scope,
    by_class: [Arc<Counter>; 5],
    by_code: std::sync::RwLock<Vec<(u16, Arc<Counter>)>>,
}

impl ClusterStats {
    fn new(scope: Scope) -> Self {
        let c = |n: &str| scope.counter(n);
        let g = |n: &str| scope.gauge(n);
        let class = |d: &str| {
            scope.counter_tagged(
                &format!("upstream_rq_{d}xx"),
                "upstream_rq_xx",
                ("envoy_response_code_class", d),
            )
        };
        ClusterStats {
            cx_total: c("upstream_cx_total"),
            cx_active: g("upstream_cx_active"),
            cx_http1_total: c("upstream_cx_http1_total"),
            cx_http2_total: c("upstream_cx_http2_total"),
            cx_connect_fail: c("upstream_cx_connect_fail"),
            cx_connect_timeout: c("upstream_cx_connect_timeout"),
            cx_overflow: c("upstream_cx_overflow"),
            cx_destroy: c("upstream_cx_destroy"),
            cx_idle_timeout: c("upstream_cx_idle_timeout"),
            cx_none_healthy: c("upstream_cx_none_healthy"),
            cx_rx_bytes: c("upstream_cx_rx_bytes_total"),
            cx_tx_bytes: c("upstream_cx_tx_bytes_total"),
            rq_total: c("upstream_rq_total"),
            rq_active: g("upstream_rq_active"),
            rq_completed: c("upstream_rq_completed"),
            rq_pending_total: c("upstream_rq_pending_total"),
            rq_pending_active: g("upstream_rq_pending_active"),
            rq_pending_overflow: c("upstream_rq_pending_overflow"),
            rq_active_overflow: c("upstream_rq_active_overflow"),
            rq_timeout: c("upstream_rq_timeout"),
            rq_rx_reset: c("upstream_rq_rx_reset"),
            rq_retry: c("upstream_rq_retry"),
            rq_retry_success: c("upstream_rq_retry_success"),
            rq_retry_overflow: c("upstream_rq_retry_overflow"),
            rq_per_try_idle_timeout: c("upstream_rq_per_try_idle_timeout"),
            rq_retry_backoff_exponential: c("upstream_rq_retry_backoff_exponential"),
            rq_retry_backoff_ratelimited: c("upstream_rq_retry_backoff_ratelimited"),
            rq_time: scope.histogram("upstream_rq_time"),
            lb_zone_routing_all_directly: c("lb_zone_routing_all_directly"),
            lb_zone_routing_sampled: c("lb_zone_routing_sampled"),
            lb_zone_routing_cross_zone: c("lb_zone_routing_cross_zone"),
            lb_zone_cluster_too_small: c("lb_zone_cluster_too_small"),
            lb_local_cluster_not_ok: c("lb_local_cluster_not_ok"),
            lb_zone_no_capacity_left: c("lb_zone_no_capacity_left"),
            membership_total: g("membership_total"),
            membership_healthy: g("membership_healthy"),
            by_class: [class("1"), class("2"), class("3"), class("4"), class("5")],
            by_code: Default::default(),
            scope,
        }
    }

    /// Counts a completed request's status (`upstream_rq_2xx` and `upstream_rq_200`).
    pub fn record_status(&self, status: u16) {
        self.rq_completed.inc();
        if let Some(c) = self.by_class.get((status / 100).wrapping_sub(1) as usize) {
            c.inc();
        }
        // Per-code counters are created once and then found under a read lock, so the
        // data path never formats a stat name or takes the store's lock.
        if let Some(c) = self
            .by_code
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, c)| c.clone())
        {
            c.inc();
            return;
        }
        let code = status.to_string();
        let c = self.scope.counter_tagged(
            &format!("upstream_rq_{code}"),
            "upstream_rq",
            ("envoy_response_code", &code),
        );
        c.inc();
        self.by_code
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((status, c));
    }
}

/// A cluster as the data path sees it.
#[derive(Debug)]
pub struct Cluster {
    /// Translated configuration.
    pub config: Arc<ClusterConfig>,
    /// Circuit breakers.
    pub resources: Resources,
    /// Stats, created on first use: a cluster no request ever reached costs no stat
    /// memory (Envoy's deferred stat creation, which Istio enables).
    stats: std::sync::OnceLock<Box<ClusterStats>>,
    scope: Scope,
    host_count: std::sync::atomic::AtomicI64,
    hosts: RwLock<Arc<HostSet>>,
    members: RwLock<Arc<Members>>,
    priorities: RwLock<Arc<Priorities>>,
    balancer: Balancer,
    outlier: Option<Box<Detector>>,
    /// When ejections and returns reach the load split (`update_merge_window`).
    health_updates: Mutex<HealthUpdates>,
    update_counts: Arc<UpdateCounts>,
    /// Zone-aware routing's view, when the bootstrap names a local cluster (set once, by
    /// the cluster manager; read on every pick).
    zone: std::sync::OnceLock<Arc<ZoneContext>>,
    /// Itself, for the task that delivers merged health updates.
    me: Weak<Cluster>,
    /// Wakes the health checker when hosts come and go.
    membership_changed: tokio::sync::Notify,
    retired: std::sync::atomic::AtomicBool,
    /// Where the cluster was defined.
    pub origin: Origin,
}

/// Where a cluster was defined: CDS may not replace or remove a bootstrap cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `static_resources.clusters`.
    Bootstrap,
    /// A CDS resource.
    Cds,
}

/// `cluster_manager.*` counts of how host updates reached the load split, as Envoy
/// counts its thread-local cluster updates.
#[derive(Debug)]
pub struct UpdateCounts {
    /// `cluster_updated`: delivered at once.
    updated: Arc<Counter>,
    /// `cluster_updated_via_merge`: delivered at a merge window's end.
    via_merge: Arc<Counter>,
    /// `update_merge_cancelled`: a pending merged update delivered early by a membership
    /// change.
    merge_cancelled: Arc<Counter>,
    /// `update_out_of_merge_window`: a health change after the window had passed.
    out_of_window: Arc<Counter>,
}

impl UpdateCounts {
    /// The process's counters (one set shared by every cluster).
    pub fn new(root: &Scope) -> Self {
        let cm = root.child("cluster_manager");
        UpdateCounts {
            updated: cm.counter("cluster_updated"),
            via_merge: cm.counter("cluster_updated_via_merge"),
            merge_cancelled: cm.counter("update_merge_cancelled"),
            out_of_window: cm.counter("update_out_of_merge_window"),
        }
    }
}

/// Envoy's update merging: a health change reaches the load split at once unless the
/// last update did less than `update_merge_window` ago; then it waits one window, together
/// with every other change made meanwhile. A membership change (hosts added or removed)
/// is delivered at once and carries whatever was waiting.
#[derive(Debug, Default)]
struct HealthUpdates {
    /// When a health change last reached the load split.
    delivered: Option<Instant>,
    /// A delivery is scheduled for the window's end.
    scheduled: bool,
}

/// The cluster's hosts with their levels and EDS health, from which the load split is
/// computed (again whenever outlier detection ejects or returns a host).
#[derive(Debug, Default)]
struct Members {
    ranked: Vec<Ranked>,
    overprovisioning: u32,
    localities: Vec<Locality>,
}

/// What zone-aware routing needs to know: the proxy's own locality and the local cluster
/// (`None` for the local cluster itself, whose zones only inform the others).
#[derive(Debug)]
pub struct ZoneContext {
    /// The local cluster.
    pub local: Option<Weak<Cluster>>,
    /// `node.locality`.
    pub node: Locality,
}

impl Cluster {
    /// Creates a cluster; STATIC endpoints become hosts at once, DNS clusters get theirs
    /// from [`super::dns`].
    ///
    /// A STATIC cluster's endpoint configs are dropped once its hosts exist (nothing reads
    /// them again): they are most of a small cluster's config.
    pub fn new(
        mut config: Arc<ClusterConfig>,
        root: &Scope,
        update_counts: Arc<UpdateCounts>,
        origin: Origin,
    ) -> Arc<Self> {
        let static_assignment = match Arc::get_mut(&mut config) {
            Some(c) if c.discovery == crate::config::cluster::Discovery::Static => {
                Some(std::mem::take(&mut c.assignment))
            }
            _ => None,
        };
        let scope = root.tagged("cluster", "envoy_cluster_name", config.stat_name());
        let outlier = config
            .outlier
            .as_ref()
            .map(|o| Box::new(Detector::new(o.clone(), &scope)));
        let cluster = Arc::new_cyclic(|me| Cluster {
            me: me.clone(),
            membership_changed: tokio::sync::Notify::new(),
            zone: std::sync::OnceLock::new(),
            health_updates: Mutex::new(HealthUpdates::default()),
            update_counts,
            resources: Resources::new(&config.thresholds),
            stats: std::sync::OnceLock::new(),
            scope,
            host_count: std::sync::atomic::AtomicI64::new(0),
            hosts: RwLock::new(HostSet::new(Vec::new())),
            members: RwLock::new(Arc::default()),
            priorities: RwLock::new(Arc::new(Priorities::default())),
            balancer: Balancer::new(config.lb.clone())
                .with_slow_start(config.slow_start)
                .with_original_dst_tls(config.tls_match(&[])),
            outlier,
            retired: std::sync::atomic::AtomicBool::new(false),
            origin,
            config,
        });
        cluster.set_endpoints(
            static_assignment
                .as_ref()
                .unwrap_or(&cluster.config.assignment),
        );
        cluster
    }

    /// Replaces the hosts with an assignment (STATIC load assignments, EDS), split into
    /// priority levels; hostnames (DNS clusters) are skipped, [`super::dns`] resolves
    /// those.
    pub fn set_endpoints(&self, assignment: &crate::config::cluster::Assignment) {
        let previous = self.members();
        let ranked: Vec<Ranked> = assignment
            .endpoints
            .iter()
            .filter_map(|e| {
                let address = match &e.address {
                    Address::Socket(a) => HostAddress::Tcp(*a),
                    Address::Pipe(p, _) => HostAddress::Unix(p.clone()),
                    Address::Named(..) => return None,
                };
                Some(Ranked {
                    host: self.keep_or_make(
                        &previous,
                        Host::new(address, e.hostname.clone(), e.weight)
                            .with_istio_workload(e.istio_workload.clone())
                            .with_tls_match(self.config.tls_match(&e.tls_labels)),
                    ),
                    priority: e.priority,
                    healthy: e.healthy,
                    locality: (e.locality, e.locality_weight),
                })
            })
            .collect();
        self.install(Members {
            ranked,
            overprovisioning: assignment.overprovisioning_factor,
            localities: assignment.localities.clone(),
        });
    }

    /// The host already serving `host`'s address with the same name and weight (so its
    /// outlier record and active requests carry over an update, as in Envoy), else
    /// `host`, with an outlier record if the cluster detects outliers.
    fn keep_or_make(&self, previous: &Members, host: Host) -> Arc<Host> {
        let same = previous.ranked.iter().find(|r| {
            r.host.address == host.address
                && r.host.hostname == host.hostname
                && r.host.weight == host.weight
                && r.host.istio_workload == host.istio_workload
                && r.host.tls_match == host.tls_match
        });
        if let Some(r) = same {
            return r.host.clone();
        }
        let host = match self.outlier {
            Some(_) => host.monitored(),
            None => host,
        };
        Arc::new(match self.config.health_check {
            Some(_) => host.awaiting_health_check(),
            None => host,
        })
    }

    fn members(&self) -> Arc<Members> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Marks the cluster replaced or removed by CDS: its DNS refresh stops and worker
    /// pools drop it when they next sweep.
    pub fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether CDS replaced or removed this cluster.
    pub fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The cluster's stat scope (`cluster.<name>`), for the stats of its helpers.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The cluster's stats (its circuit-breaker gauges with them), created on first use.
    pub fn stats(&self) -> &ClusterStats {
        self.stats.get_or_init(|| {
            // Boxed: 36 stats inline would cost every idle cluster about 300 bytes.
            let stats = Box::new(ClusterStats::new(self.scope.clone()));
            let members = self.members();
            stats.membership_total.set(members.ranked.len() as i64);
            stats.membership_healthy.set(
                members
                    .ranked
                    .iter()
                    .filter(|r| r.healthy && r.host.in_service())
                    .count() as i64,
            );
            // The circuit-breaker gauges come with the other stats: an idle cluster
            // carries none.
            self.resources
                .attach_stats(&self.scope, &self.config.high_thresholds());
            stats
        })
    }

    /// Counts an EDS response for this cluster (`cluster.<name>.update_attempt` and
    /// `update_success` or `update_rejected`, Envoy's names).
    pub fn count_eds_update(&self, accepted: bool) {
        self.scope.counter("update_attempt").inc();
        let outcome = if accepted {
            "update_success"
        } else {
            "update_rejected"
        };
        self.scope.counter(outcome).inc();
    }

    /// Counts that the cluster stopped waiting for its assignment
    /// (`cluster.<name>.init_fetch_timeout`).
    pub fn count_init_fetch_timeout(&self) {
        self.scope.counter("init_fetch_timeout").inc();
    }

    /// The stats if some traffic created them (read-only views such as `/clusters`).
    pub fn stats_if_created(&self) -> Option<&ClusterStats> {
        self.stats.get().map(|s| &**s)
    }

    /// Replaces the host set with one level of healthy hosts (DNS refresh).
    pub fn set_hosts(&self, hosts: Vec<Host>) {
        let previous = self.members();
        let ranked = hosts
            .into_iter()
            .map(|h| Ranked {
                host: self.keep_or_make(&previous, h),
                priority: 0,
                healthy: true,
                locality: (0, 1),
            })
            .collect();
        self.install(Members {
            ranked,
            overprovisioning: 140,
            localities: Vec::new(),
        });
    }

    fn install(&self, members: Members) {
        let previous = self.members();
        let same_hosts = previous.ranked.len() == members.ranked.len()
            && previous
                .ranked
                .iter()
                .zip(&members.ranked)
                .all(|(a, b)| Arc::ptr_eq(&a.host, &b.host));
        if !previous.ranked.is_empty() {
            self.update_counts.updated.inc();
        }
        if !previous.ranked.is_empty() && !same_hosts {
            // Hosts came or went: this update is delivered now, with anything pending.
            let mut updates = self
                .health_updates
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            updates.delivered = Some(Instant::now());
            if updates.scheduled {
                self.update_counts.merge_cancelled.inc();
            }
            updates.scheduled = false;
        }
        let hosts: Vec<Arc<Host>> = members.ranked.iter().map(|r| r.host.clone()).collect();
        self.host_count
            .store(hosts.len() as i64, std::sync::atomic::Ordering::Relaxed);
        if let Some(stats) = self.stats.get() {
            stats.membership_total.set(hosts.len() as i64);
        }
        if let Some(detector) = &self.outlier {
            let monitors: Vec<_> = hosts.iter().filter_map(|h| h.outlier()).collect();
            detector.recount(&monitors);
        }
        *self.hosts.write().unwrap_or_else(|e| e.into_inner()) = HostSet::new(hosts);
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(members);
        self.split_load();
        self.membership_changed.notify_waiters();
    }

    /// Recomputes the load split from the members' EDS health and ejections.
    fn split_load(&self) {
        let members = self.members();
        let ranked: Vec<Ranked> = members
            .ranked
            .iter()
            .map(|r| Ranked {
                healthy: r.healthy && r.host.in_service(),
                ..r.clone()
            })
            .collect();
        if let Some(stats) = self.stats.get() {
            stats
                .membership_healthy
                .set(ranked.iter().filter(|r| r.healthy).count() as i64);
        }
        let priorities = Priorities::new(
            &ranked,
            SplitPolicy {
                overprovisioning: members.overprovisioning,
                panic_threshold: self.config.panic_threshold,
                locality_weighted: self.config.locality_weighted,
                zones: self.zone_context().is_some(),
                fail_on_panic: self.config.zone_aware.fail_traffic_on_panic,
            },
        );
        *self.priorities.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(priorities);
    }

    /// Reports how an exchange with `host` went to outlier detection (nothing without
    /// it); an ejection reaches the load split as [`HealthUpdates`] describes.
    pub fn report(&self, host: &Host, outcome: Outcome) {
        if let (Some(detector), Some(monitor)) = (&self.outlier, host.outlier()) {
            let hosts = self.host_count.load(std::sync::atomic::Ordering::Relaxed);
            if detector.report(monitor, hosts.max(0) as usize, outcome) {
                self.health_changed();
            }
        }
    }

    /// An active health check verdict for `host`: a state change (or a pass that returns
    /// an ejected host to service) reaches the load split. A host's first verdict is part
    /// of the cluster's initialization and applies at once, outside update merging (Envoy
    /// builds the workers' view of a health-checked cluster after its first round).
    pub fn health_checked(&self, host: &Host, passed: bool, first: bool) {
        let mut changed = host.set_failed_health_check(!passed);
        if let (true, Some(detector), Some(monitor)) = (passed, &self.outlier, host.outlier()) {
            changed |= detector.health_check_passed(monitor);
        }
        match (changed, first) {
            (true, true) => self.split_load(),
            (true, false) => self.health_changed(),
            (false, _) => {}
        }
    }

    /// Records what Istio's telemetry reads of the upstream `host` a stream or
    /// connection went to: its endpoint's `istio.workload` and, over TLS, the URI SANs
    /// of its certificate (from its latest handshake) and of ours.
    pub fn record_upstream_identity(
        &self,
        host: &Host,
        record: &mut crate::access_log::record::Record,
    ) {
        record.istio.upstream_workload = host.istio_workload.clone();
        if let Some(t) = self.config.tls_for(host.tls_match) {
            record.upstream_peer_uri_san = host.peer_uri_san();
            record.upstream_local_uri_san = t.tls.local_uri_san();
        }
    }

    /// The TLS client config and SNI for a connection outside the HTTP pools (TCP proxy,
    /// health checks): the cluster's current one, `None` without TLS or before its
    /// secrets arrive.
    pub fn client_tls(&self, host: &Host) -> Option<super::connect::ClientTls> {
        let t = self.config.tls_for(host.tls_match)?;
        let state = t.tls.current();
        state
            .as_ref()
            .as_ref()
            .ok()
            .map(|c| super::connect::ClientTls {
                config: c.clone(),
                sni: t.sni.clone(),
                batching: t.tls.batching(),
            })
    }

    /// Whether the cluster ever opened a connection for traffic (health checks use their
    /// `no_traffic_interval` until it has).
    pub fn has_carried_traffic(&self) -> bool {
        self.stats_if_created()
            .is_some_and(|s| s.cx_total.value() > 0)
    }

    /// Resolves when the cluster's hosts change (the health checker follows them).
    pub fn hosts_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.membership_changed.notified()
    }

    /// A host's health status changed: recompute the load split now, or at the end of
    /// the merge window.
    fn health_changed(&self) {
        let window = self.config.update_merge_window;
        let now = Instant::now();
        let mut updates = self
            .health_updates
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let within = updates
            .delivered
            .is_some_and(|last| now.duration_since(last) <= window);
        if !within || window.is_zero() {
            updates.delivered = Some(now);
            updates.scheduled = false;
            drop(updates);
            self.update_counts.updated.inc();
            if !window.is_zero() {
                self.update_counts.out_of_window.inc();
            }
            self.split_load();
            return;
        }
        if updates.scheduled {
            return;
        }
        updates.scheduled = true;
        let due = now + window;
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            if let Some(cluster) = me.upgrade() {
                cluster.deliver_merged();
            }
        });
    }

    /// The merge window ended: the changes made during it reach the load split.
    fn deliver_merged(&self) {
        let mut updates = self
            .health_updates
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !updates.scheduled {
            // An update outside the window delivered everything already.
            return;
        }
        updates.scheduled = false;
        updates.delivered = Some(Instant::now());
        drop(updates);
        self.update_counts.via_merge.inc();
        self.split_load();
    }

    /// The outlier detector, if the cluster has one.
    pub fn outlier_detector(&self) -> Option<&Detector> {
        self.outlier.as_deref()
    }

    /// One outlier-detection sweep (returns to service, rate rules); the sweep task
    /// calls it every `interval`.
    pub fn sweep_outliers(&self) {
        if let Some(detector) = &self.outlier {
            let members = self.members();
            let monitors: Vec<_> = members
                .ranked
                .iter()
                .filter_map(|r| r.host.outlier())
                .collect();
            if detector.sweep(&monitors, Instant::now()) {
                self.health_changed();
            }
        }
    }

    /// Every host with its priority and EDS health (for `/clusters`).
    pub fn members_ranked(&self) -> Vec<Ranked> {
        self.members().ranked.clone()
    }

    /// The current hosts.
    pub fn hosts(&self) -> Arc<HostSet> {
        self.hosts.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Picks a host for a request or connection: a priority level by its load share,
    /// then a host of that level by the balancer.
    pub fn pick(&self, ctx: &LbContext) -> Option<Arc<Host>> {
        self.pick_excluding(ctx, &[]).map(|(host, _)| host)
    }

    /// Sets zone-aware routing's view (the cluster manager does, when the bootstrap names
    /// a local cluster) and regroups the hosts by locality.
    pub fn set_zone_context(&self, context: Arc<ZoneContext>) {
        if self.zone.set(context).is_ok() {
            self.split_load();
        }
    }

    fn zone_context(&self) -> Option<&Arc<ZoneContext>> {
        self.zone.get()
    }

    fn priorities(&self) -> Arc<Priorities> {
        self.priorities
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Picks a host, with priority levels in `excluded` giving their load to the others
    /// (the previous_priorities retry policy); returns the host and its priority.
    pub fn pick_excluding(&self, ctx: &LbContext, excluded: &[u32]) -> Option<(Arc<Host>, u32)> {
        let priorities = self.priorities();
        let draw = ctx.hash.unwrap_or_else(rand::random);
        let host = match priorities.choose(draw, excluded) {
            Some((set, 0)) => {
                let zoned = self.zone_hosts(&priorities);
                self.balancer
                    .pick(zoned.as_ref().unwrap_or(set), ctx)
                    .map(|h| (h, 0))
            }
            Some((set, priority)) => self.balancer.pick(set, ctx).map(|h| (h, priority)),
            // ORIGINAL_DST clusters have no hosts: the balancer makes one per request.
            None => self.balancer.pick(&self.hosts(), ctx).map(|h| (h, 0)),
        };
        if host.is_none() {
            self.stats().cx_none_healthy.inc();
        }
        host
    }
}

impl Cluster {
    /// Zone-aware routing (priority 0 only), as Envoy does it against the local cluster:
    /// all traffic to the proxy's own locality when this cluster has at least the local
    /// cluster's share of hosts there; otherwise that share scaled down, and the rest to
    /// the other localities by their spare share. `None`: route without zones (no local
    /// cluster, fewer than two localities, none in the proxy's, the local cluster in
    /// panic, too few hosts, or `routing_enabled` not sampled).
    fn zone_hosts(&self, priorities: &Priorities) -> Option<Arc<HostSet>> {
        let context = self.zone_context()?;
        let local = context.local.as_ref()?.upgrade()?;
        if self.config.locality_weighted
            || matches!(
                self.config.lb,
                LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. } | LbPolicy::ClusterProvided
            )
        {
            return None;
        }
        let (zones, _) = priorities.first_level_zones()?;
        let members = self.members();
        let locality = |id: u32| members.localities.get(id as usize);
        let own = zones
            .iter()
            .position(|(id, _)| locality(*id) == Some(&context.node))?;
        if zones.len() < 2 {
            return None;
        }
        let local_priorities = local.priorities();
        let local_members = local.members();
        let Some((local_zones, false)) = local_priorities.first_level_zones() else {
            self.stats().lb_local_cluster_not_ok.inc();
            return None;
        };
        let total: usize = zones.iter().map(|(_, s)| s.hosts.len()).sum();
        if (total as u64) < self.config.zone_aware.min_cluster_size {
            self.stats().lb_zone_cluster_too_small.inc();
            return None;
        }
        if rand::random::<f64>() * 100.0 >= self.config.zone_aware.routing_enabled {
            return None;
        }
        let local_total: usize = local_zones.iter().map(|(_, s)| s.hosts.len()).sum();
        // Shares in hundredths of a percent, as Envoy computes them.
        let share = |n: usize, of: usize| {
            if of == 0 {
                0
            } else {
                n as u64 * 10_000 / of as u64
            }
        };
        let local_share = |l: Option<&Locality>| {
            let n = local_zones
                .iter()
                .find(|(id, _)| local_members.localities.get(*id as usize) == l)
                .map_or(0, |(_, s)| s.hosts.len());
            share(n, local_total)
        };
        let upstream_here = share(zones[own].1.hosts.len(), total);
        let local_here = local_share(Some(&context.node));
        let stats = self.stats();
        if upstream_here > 0 && upstream_here >= local_here {
            stats.lb_zone_routing_all_directly.inc();
            return Some(zones[own].1.clone());
        }
        let direct = (upstream_here * 10_000)
            .checked_div(local_here)
            .unwrap_or(0);
        if rand::random::<u64>() % 10_000 < direct {
            stats.lb_zone_routing_sampled.inc();
            return Some(zones[own].1.clone());
        }
        stats.lb_zone_routing_cross_zone.inc();
        let mut spare = Vec::with_capacity(zones.len());
        let mut until = 0;
        for (id, set) in zones {
            let upstream = share(set.hosts.len(), total);
            until += upstream.saturating_sub(local_share(locality(*id)));
            spare.push(until);
        }
        if until == 0 {
            stats.lb_zone_no_capacity_left.inc();
            return Some(zones[rand::random::<usize>() % zones.len()].1.clone());
        }
        let point = rand::random::<u64>() % until;
        let at = spare.iter().position(|u| point < *u)?;
        Some(zones[at].1.clone())
    }
}
