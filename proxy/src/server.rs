//! The server: owns the translated bootstrap, stats, clusters and listeners; starts the
//! per-core workers (each a current-thread runtime accepting on every listener) and the
//! main runtime (admin, DNS); tracks Envoy's server state for `/ready` and `server.state`.

use crate::cli::Options;
use crate::config::bootstrap::Bootstrap;
use crate::listener::workers::Workers;
use crate::listener::{self, ActiveListener, ListenerSockets};
use crate::stats::{Scope, Store};
use crate::upstream::manager::ClusterManager;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Envoy's `server.state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Serving.
    Live = 0,
    /// Draining listeners.
    Draining = 1,
    /// Before initialisation.
    PreInitializing = 2,
    /// Waiting for the initial xDS fetch.
    Initializing = 3,
}

impl State {
    /// The word `/ready` answers with.
    pub fn name(self) -> &'static str {
        match self {
            State::Live => "LIVE",
            State::Draining => "DRAINING",
            State::PreInitializing => "PRE_INITIALIZING",
            State::Initializing => "INITIALIZING",
        }
    }
}

/// Everything the data path and admin API share.
pub struct Server {
    /// Command line.
    pub options: Options,
    /// Translated bootstrap.
    pub bootstrap: Arc<Bootstrap>,
    /// Stats store.
    pub stats: Arc<Store>,
    /// The process-wide stats and their refresh.
    pub server_stats: crate::server_stats::ServerStats,
    /// Clusters.
    pub clusters: ClusterManager,
    /// Active listeners (including `bind_to_port: false` ones): the static ones, then
    /// what LDS made active.
    listeners: arc_swap::ArcSwap<Vec<Arc<ActiveListener>>>,
    /// The worker threads.
    pub workers: Workers,
    /// The xDS manager, when the bootstrap has `dynamic_resources`.
    pub xds: std::sync::OnceLock<Arc<crate::xds::XdsManager>>,
    /// Process start.
    pub started: SystemTime,
    started_instant: Instant,
    state: AtomicU8,
    /// `/healthcheck/fail` was called (and not undone).
    pub healthcheck_failed: AtomicBool,
    global_connections: Arc<AtomicU64>,
    stop_inbound: tokio::sync::watch::Sender<bool>,
    stop_all: tokio::sync::watch::Sender<bool>,
    /// Set when `/quitquitquit` or a signal asks the process to exit.
    pub quit: tokio::sync::Notify,
    local_address: std::sync::OnceLock<std::net::IpAddr>,
    /// When draining started (`None`: not draining), and whether only inbound listeners drain.
    drain: std::sync::Mutex<Option<(Instant, bool)>>,
}

impl Server {
    /// Builds clusters and listeners from the bootstrap.
    pub fn new(options: Options, mut bootstrap: Bootstrap) -> std::io::Result<Arc<Self>> {
        crate::istio::set_local_node(&bootstrap.node_proto);
        let stats = Store::with_naming(bootstrap.stats_naming.clone());
        let root = stats.root();
        crate::tls::multibuffer::stats::register(&root);
        let zone = bootstrap.local_cluster.clone().map(|name| {
            let node = bootstrap
                .node_proto
                .locality
                .as_ref()
                .map(crate::config::cluster::Locality::from_proto)
                .unwrap_or_default();
            (name, node)
        });
        // The clusters own their configs from here (a STATIC one drops its endpoint list).
        let clusters = ClusterManager::new(std::mem::take(&mut bootstrap.clusters), &root, zone);
        let flush = std::time::Duration::from_millis(options.file_flush_interval_msec.max(1));
        let listeners = bootstrap
            .listeners
            .iter()
            .map(|l| ActiveListener::new(l.clone(), &root, flush, &bootstrap.node_proto))
            .collect::<std::io::Result<Vec<_>>>()?;
        let server_stats = crate::server_stats::ServerStats::register(
            &root,
            concurrency(&options),
            (!options.disable_hot_restart).then_some(options.restart_epoch),
        );
        let server = Arc::new(Server {
            server_stats,
            workers: Workers::new(concurrency(&options)),
            xds: std::sync::OnceLock::new(),
            options,
            bootstrap: Arc::new(bootstrap),
            stats,
            clusters,
            listeners: arc_swap::ArcSwap::from_pointee(listeners),
            started: SystemTime::now(),
            started_instant: Instant::now(),
            state: AtomicU8::new(State::PreInitializing as u8),
            healthcheck_failed: AtomicBool::new(false),
            global_connections: Arc::new(AtomicU64::new(0)),
            stop_inbound: tokio::sync::watch::channel(false).0,
            stop_all: tokio::sync::watch::channel(false).0,
            quit: tokio::sync::Notify::new(),
            local_address: std::sync::OnceLock::new(),
            drain: std::sync::Mutex::new(None),
        });
        server.set_state(State::PreInitializing);
        let s = root.child("server");
        s.gauge("concurrency").set(server.concurrency() as i64);
        s.gauge("live").set(0);
        s.gauge("hot_restart_epoch")
            .set(i64::from(server.options.restart_epoch));
        let lm = root.child("listener_manager");
        lm.gauge("total_listeners_active")
            .set(server.listeners().len() as i64);
        lm.counter("listener_added")
            .add(server.listeners().len() as u64);
        crate::trace::zipkin::set_server(&server);
        Ok(server)
    }

    /// Worker count (`--concurrency`, default the available cores).
    pub fn concurrency(&self) -> usize {
        concurrency(&self.options)
    }

    /// The active listeners.
    pub fn listeners(&self) -> Arc<Vec<Arc<ActiveListener>>> {
        self.listeners.load_full()
    }

    /// Replaces the active listener set (LDS); retiring the replaced ones is the caller's.
    pub fn set_listeners(&self, listeners: Vec<Arc<ActiveListener>>) {
        self.scope()
            .child("listener_manager")
            .gauge("total_listeners_active")
            .set(listeners.len() as i64);
        self.listeners.store(Arc::new(listeners));
    }

    /// The drain signal a listener's accept loops stop on.
    pub fn drain_signal(&self, inbound: bool) -> tokio::sync::watch::Receiver<bool> {
        if inbound {
            self.stop_inbound.subscribe()
        } else {
            self.stop_all.subscribe()
        }
    }

    /// The root stats scope.
    pub fn scope(&self) -> Scope {
        self.stats.root()
    }

    /// Current state.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Relaxed) {
            0 => State::Live,
            1 => State::Draining,
            3 => State::Initializing,
            _ => State::PreInitializing,
        }
    }

    /// Changes state and the `server.state` / `server.live` gauges.
    pub fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Relaxed);
        let scope = self.scope().child("server");
        scope.gauge("state").set(s as i64);
        scope.gauge("live").set(i64::from(s == State::Live));
        if s == State::Live {
            self.server_stats
                .initialized(self.started_instant.elapsed());
        }
    }

    /// Refreshes the process gauges (uptime, memory, connections, certificate expiry)
    /// before the stats are read.
    pub fn refresh_stats(&self) {
        self.server_stats.refresh(
            self.started_instant.elapsed(),
            self.global_connections.load(Ordering::Relaxed),
        );
    }

    /// Counts `n` listeners started, as Envoy does once per worker
    /// (`listener_create_success`).
    pub fn listeners_created(&self, n: usize) {
        self.scope()
            .child("listener_manager")
            .counter("listener_create_success")
            .add((n * self.concurrency()) as u64);
    }

    /// The host's own address, as Envoy picks it: the first non-loopback interface address
    /// of `--local-address-ip-version`'s family (loopback when there is none).
    pub fn local_address(&self) -> std::net::IpAddr {
        *self.local_address.get_or_init(|| {
            let v6 = self.options.local_address_ip_version == crate::cli::IpVersion::V6;
            nix::ifaddrs::getifaddrs()
                .ok()
                .and_then(|addrs| {
                    addrs.filter_map(|a| a.address).find_map(|a| {
                        let ip: std::net::IpAddr = if v6 {
                            a.as_sockaddr_in6()?.ip().into()
                        } else {
                            a.as_sockaddr_in()?.ip().into()
                        };
                        (!ip.is_loopback()).then_some(ip)
                    })
                })
                .unwrap_or(if v6 {
                    std::net::Ipv6Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv4Addr::LOCALHOST.into()
                })
        })
    }

    /// Seconds since start.
    pub fn uptime(&self) -> u64 {
        self.started_instant.elapsed().as_secs()
    }

    /// Admits a connection under the overload manager's global limit: `None` rejects,
    /// `Some(None)` admits an exempt listener's connection, `Some(Some(c))` admits and
    /// counts it in `c` (the caller decrements when the connection ends).
    pub fn admit_connection(&self, exempt: bool) -> Option<Option<Arc<AtomicU64>>> {
        let Some(limit) = self.bootstrap.max_downstream_connections else {
            return Some(None);
        };
        if exempt {
            return Some(None);
        }
        let c = &self.global_connections;
        if c.fetch_add(1, Ordering::Relaxed) >= limit {
            c.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Some(c.clone()))
    }

    /// With `use_original_dst`: the listener bound to exactly `dst`, else the wildcard
    /// listener on its port; never the accepting listener itself.
    pub fn listener_for_original_dst(
        &self,
        dst: SocketAddr,
        current: &Arc<ActiveListener>,
    ) -> Option<Arc<ActiveListener>> {
        use crate::config::common::Address;
        let all = self.listeners();
        let candidates = all.iter().filter(|l| !Arc::ptr_eq(l, current));
        let mut wildcard = None;
        for l in candidates {
            for address in l.config.addresses() {
                let Address::Socket(a) = address else {
                    continue;
                };
                if *a == dst {
                    return Some(l.clone());
                }
                if a.port() == dst.port() && a.ip().is_unspecified() && a.is_ipv4() == dst.is_ipv4()
                {
                    wildcard = Some(l.clone());
                }
            }
        }
        wildcard
    }

    /// `/drain_listeners`: connections on the drained listeners are asked to close (HTTP/1
    /// `connection: close`, HTTP/2 GOAWAY) per `--drain-strategy` over `--drain-time-s`;
    /// with `graceful` the listeners keep accepting for the drain time, otherwise they stop
    /// at once. `inbound_only` limits all of it to `traffic_direction: INBOUND` listeners.
    pub fn drain_listeners(self: &Arc<Self>, inbound_only: bool, graceful: bool) {
        {
            let mut d = self.drain.lock().unwrap_or_else(|e| e.into_inner());
            if d.is_none() {
                *d = Some((Instant::now(), inbound_only));
            }
        }
        self.set_state(State::Draining);
        let server = self.clone();
        let wait = if graceful {
            std::time::Duration::from_secs(self.options.drain_time_s)
        } else {
            std::time::Duration::ZERO
        };
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let stopped = server
                .listeners()
                .iter()
                .filter(|l| l.config.bind_to_port && (l.config.inbound || !inbound_only))
                .count();
            server
                .scope()
                .child("listener_manager")
                .counter("listener_stopped")
                .add(stopped as u64);
            let _ = server.stop_inbound.send(true);
            if !inbound_only {
                let _ = server.stop_all.send(true);
            }
        });
    }

    /// Whether a connection of a listener (inbound or not) should close now, per the drain
    /// strategy: immediately, or with a probability growing over the drain time.
    pub fn should_drain(&self, inbound: bool) -> bool {
        let Some((since, inbound_only)) = *self.drain.lock().unwrap_or_else(|e| e.into_inner())
        else {
            return false;
        };
        if inbound_only && !inbound {
            return false;
        }
        match self.options.drain_strategy {
            crate::cli::DrainStrategy::Immediate => true,
            crate::cli::DrainStrategy::Gradual => {
                let total = self.options.drain_time_s.max(1) as f64;
                rand::random::<f64>() < since.elapsed().as_secs_f64() / total
            }
        }
    }

    /// Binds every listener that binds a port (done before workers start, so bind errors
    /// are reported at start-up like Envoy's).
    pub fn bind_listeners(&self) -> std::io::Result<Vec<(Arc<ActiveListener>, ListenerSockets)>> {
        self.listeners()
            .iter()
            .filter(|l| l.config.bind_to_port)
            .map(|l| {
                listener::bind_listener(&l.config)
                    .map(|s| (l.clone(), s))
                    .map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!(
                                "cannot bind listener {} on {}: {e}",
                                l.config.name, l.config.address
                            ),
                        )
                    })
            })
            .collect()
    }

    /// Starts `concurrency` worker threads accepting on the bound listeners (and on the
    /// listeners LDS activated before).
    pub fn start_workers(
        self: &Arc<Self>,
        bound: Vec<(Arc<ActiveListener>, ListenerSockets)>,
    ) -> std::io::Result<()> {
        for (l, s) in &bound {
            self.workers.accept(l, s)?;
        }
        self.listeners_created(self.listeners().len());
        self.workers.start(self)?;
        self.scope()
            .child("listener_manager")
            .gauge("workers_started")
            .set(1);
        Ok(())
    }
}

/// The number of workers: `--concurrency`, or one per hardware thread as Envoy defaults.
pub(crate) fn concurrency(options: &Options) -> usize {
    options.concurrency.filter(|n| *n > 0).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}
