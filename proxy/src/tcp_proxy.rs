//! `envoy.filters.network.tcp_proxy`: picks a (weighted) cluster, connects with up to
//! `max_connect_attempts` tries, then copies bytes both ways with half-close propagation
//! and an idle timeout, and writes the access log when the connection ends.

use crate::access_log::record::{Record, ResponseFlags};
use crate::access_log::writer::AccessLogger;
use crate::config::listener::NetworkFilter;
use crate::config::tcp_proxy::TcpProxyConfig;
use crate::http::connection_manager::LocalNode;
use crate::io::{BoxIo, CountingIo};
use crate::istio::stats::IstioStats;
use crate::listener::ConnectionInfo;
use crate::server::Server;
use crate::stats::{Counter, Scope};
use crate::upstream::connect;
use crate::upstream::lb::LbContext;
use crate::upstream::outlier::monitor::Outcome;
use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The most bytes buffered per direction while copying; the listener's and cluster's
/// `per_connection_buffer_limit_bytes` can lower it.
const MAX_COPY_BUFFER: usize = 256 * 1024;

/// A TCP proxy filter instance (one per filter chain).
pub struct TcpProxy {
    config: Arc<TcpProxyConfig>,
    cx_total: Arc<Counter>,
    no_route: Arc<Counter>,
    idle_timeouts: Arc<Counter>,
    rx_bytes: Arc<Counter>,
    tx_bytes: Arc<Counter>,
    connect_attempts_exceeded: Arc<Counter>,
    access_logs: Vec<AccessLogger>,
    /// Istio's TCP metrics filters of the chain.
    istio_stats: Vec<IstioStats>,
    /// An `sni_cluster` filter precedes: a connection with SNI goes to the cluster of
    /// that name instead of the configured one.
    cluster_from_sni: bool,
    /// Draining this chain's connections (LDS changed or removed the chain): they close
    /// when the drain time is over.
    pub drain: Arc<crate::listener::drain::ChainDrain>,
}

impl TcpProxy {
    /// Builds the filter with its stats (`tcp.<stat_prefix>.`), loggers, and the Istio
    /// metrics filters among the chain's `network_filters`.
    pub fn new(
        config: Arc<TcpProxyConfig>,
        root: &Scope,
        flush: std::time::Duration,
        local: &LocalNode,
        network_filters: &[NetworkFilter],
    ) -> std::io::Result<Arc<Self>> {
        let metadata = local.node.metadata.clone().unwrap_or_default();
        let istio_stats = network_filters
            .iter()
            .filter_map(|f| match f {
                NetworkFilter::IstioStats(c) => {
                    Some(IstioStats::new(c.clone(), &metadata, local.outbound, root))
                }
                _ => None,
            })
            .collect();
        let s = root.tagged("tcp", "envoy_tcp_prefix", &config.stat_prefix);
        let access_logs = config
            .access_logs
            .iter()
            .map(|l| AccessLogger::start(l, flush))
            .collect::<std::io::Result<_>>()?;
        Ok(Arc::new(TcpProxy {
            cx_total: s.counter("downstream_cx_total"),
            no_route: s.counter("downstream_cx_no_route"),
            idle_timeouts: s.counter("idle_timeout"),
            rx_bytes: s.counter("downstream_cx_rx_bytes_total"),
            tx_bytes: s.counter("downstream_cx_tx_bytes_total"),
            connect_attempts_exceeded: s.counter("upstream_cx_connect_attempts_exceeded"),
            access_logs,
            istio_stats,
            cluster_from_sni: network_filters
                .iter()
                .any(|f| matches!(f, NetworkFilter::SniCluster)),
            drain: Arc::default(),
            config,
        }))
    }

    fn pick_cluster(&self) -> &str {
        let clusters = &self.config.clusters;
        let total: u64 = clusters.iter().map(|(_, w)| *w).sum();
        if clusters.len() == 1 || total == 0 {
            return &clusters[0].0;
        }
        let mut r = rand::thread_rng().gen_range(0..total);
        for (name, w) in clusters {
            if r < *w {
                return name;
            }
            r -= w;
        }
        &clusters[0].0
    }

    /// Logs a connection an earlier network filter closed (network RBAC), as Envoy's
    /// proxy logs it, with the filter's termination `details`; returns the record. Envoy
    /// has connected upstream by then (its RBAC decides on the first bytes): this record
    /// has no upstream host.
    pub fn closed_by_filter(
        &self,
        server: &Server,
        info: &ConnectionInfo,
        details: String,
    ) -> Record {
        let mut record = info.record();
        record.downstream_remote = info.remote;
        let cluster_name = self.pick_cluster();
        if let Some(cluster) = server.clusters.get(cluster_name) {
            record.cluster_found(&cluster.config);
        }
        record.upstream_cluster = Some(cluster_name.into());
        record.connection_termination_details = Some(details.into());
        for l in &self.access_logs {
            l.log(&record);
        }
        record
    }

    /// Proxies one downstream connection; returns its record (the listener-level access
    /// log writes it too).
    pub async fn serve(
        self: Arc<Self>,
        server: Arc<Server>,
        downstream: BoxIo,
        downstream_buffer_limit: usize,
        info: ConnectionInfo,
    ) -> Record {
        self.cx_total.inc();
        let started = Instant::now();
        let mut record = info.record();
        record.downstream_remote = info.remote;
        let cluster_name = match &info.server_name {
            Some(sni) if self.cluster_from_sni && !sni.is_empty() => sni.clone(),
            _ => self.pick_cluster().to_string(),
        };
        record.upstream_cluster = Some(cluster_name.as_str().into());
        let received = Arc::new(Counter::default());
        let sent = Arc::new(Counter::default());
        // Bytes already reported to Istio's metrics while the connection was open.
        let reported = ReportedBytes::default();
        // Istio's labels of this connection, fixed when it is reported opened.
        let mut istio_labels = None;
        match server.clusters.get(&cluster_name) {
            None => {
                self.no_route.inc();
                record.flags.insert(ResponseFlags::NO_CLUSTER_FOUND);
            }
            Some(cluster) => {
                record.cluster_found(&cluster.config);
                let mut upstream = None;
                for _ in 0..self.config.max_connect_attempts {
                    let Some(host) = cluster.pick(&LbContext {
                        hash: None,
                        original_dst: info.local,
                    }) else {
                        record.flags.insert(ResponseFlags::NO_HEALTHY_UPSTREAM);
                        break;
                    };
                    let Some(slot) = cluster.resources.connections.try_acquire() else {
                        cluster.stats().cx_overflow.inc();
                        record.flags.insert(ResponseFlags::UPSTREAM_OVERFLOW);
                        break;
                    };
                    record.upstream_host = Some(host.address_string.clone());
                    record.attempt_count += 1;
                    let tls = cluster.client_tls(&host);
                    cluster.stats().cx_total.inc();
                    match connect::connect(&cluster, &host, tls, info.upstream_source).await {
                        Ok(c) => {
                            cluster.report(&host, Outcome::ConnectedFinal);
                            record.upstream_local = c.local;
                            cluster.record_upstream_identity(&host, &mut record);
                            record.istio.peers.upstream = c.peer;
                            upstream = Some((c.io, slot));
                            break;
                        }
                        Err(e) => {
                            cluster.report(&host, Outcome::ConnectFailed);
                            cluster.stats().cx_connect_fail.inc();
                            // A connect timeout has no transport failure reason in Envoy.
                            record.upstream_failure =
                                (!matches!(e, connect::ConnectError::Timeout))
                                    .then(|| e.to_string());
                        }
                    }
                }
                match upstream {
                    Some((up, _slot)) => {
                        record.upstream_failure = None;
                        record.istio.cluster = cluster.config.istio.clone();
                        istio_labels = Some(self.istio_opened(&record));
                        cluster.stats().cx_active.inc();
                        let down = CountingIo::new(downstream, received.clone(), sent.clone());
                        let sizes = (
                            downstream_buffer_limit.clamp(1, MAX_COPY_BUFFER),
                            cluster.config.buffer_limit.clamp(1, MAX_COPY_BUFFER),
                        );
                        let pumping = self.pump(down, up, sizes);
                        let idle = match &istio_labels {
                            Some(labels) if !self.istio_stats.is_empty() => {
                                let live = (&*sent, &*received, &reported);
                                tokio::select! {
                                    idle = pumping => idle,
                                    never = self.report_while_open(labels, live) => match never {},
                                }
                            }
                            _ => pumping.await,
                        };
                        if idle {
                            self.idle_timeouts.inc();
                        }
                        cluster.stats().cx_active.dec();
                        cluster.stats().cx_destroy.inc();
                    }
                    None if record.flags.is_empty() => {
                        self.connect_attempts_exceeded.inc();
                        // Every attempt failed to connect (`UF`) and none is left (`URX`).
                        record
                            .flags
                            .insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
                        record
                            .flags
                            .insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
                    }
                    None => {}
                }
            }
        }
        self.rx_bytes.add(received.value());
        self.tx_bytes.add(sent.value());
        record.bytes_received = received.value();
        record.bytes_sent = sent.value();
        record.duration = started.elapsed();
        let labels = istio_labels.unwrap_or_else(|| self.istio_opened(&record));
        let sent_before = reported.sent.load(Ordering::Relaxed);
        let received_before = reported.received.load(Ordering::Relaxed);
        for (s, l) in self.istio_stats.iter().zip(&labels) {
            s.tcp_bytes(
                l,
                sent.value() - sent_before,
                received.value() - received_before,
            );
            s.tcp_closed(l);
        }
        for l in &self.access_logs {
            l.log(&record);
        }
        record
    }

    /// Reports the bytes of a live connection to the Istio metrics filters every
    /// reporting period (the shortest of theirs), as istio/proxy does, so a long-lived
    /// connection's traffic shows before it closes; `reported` keeps what went out.
    async fn report_while_open(
        &self,
        labels: &[crate::istio::stats::Labels],
        (sent, received, reported): (&Counter, &Counter, &ReportedBytes),
    ) -> std::convert::Infallible {
        let period = self
            .istio_stats
            .iter()
            .map(IstioStats::tcp_reporting_period)
            .min()
            .unwrap_or(std::time::Duration::from_secs(5));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tick.tick().await;
            let (s1, r1) = (sent.value(), received.value());
            let s0 = reported.sent.swap(s1, Ordering::Relaxed);
            let r0 = reported.received.swap(r1, Ordering::Relaxed);
            for (s, l) in self.istio_stats.iter().zip(labels) {
                s.tcp_bytes(l, s1 - s0, r1 - r0);
            }
        }
    }

    /// Reports the connection opened to each Istio metrics filter; their labels.
    fn istio_opened(&self, record: &Record) -> Vec<crate::istio::stats::Labels> {
        self.istio_stats
            .iter()
            .map(|s| s.tcp_opened(record))
            .collect()
    }

    /// Copies both ways until both sides are done or the chain's drain time is over; true
    /// when the idle timeout ended it.
    async fn pump<D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        &self,
        down: D,
        up: BoxIo,
        (down_to_up, up_to_down): (usize, usize),
    ) -> bool {
        let epoch = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let mut down = Activity {
            inner: down,
            last: last.clone(),
            epoch,
        };
        let mut up = Activity {
            inner: up,
            last: last.clone(),
            epoch,
        };
        // Large buffers move bulk transfers in few syscalls (tokio's default is 8 KiB).
        let copy =
            tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, down_to_up, up_to_down);
        tokio::pin!(copy);
        loop {
            let since = epoch
                .elapsed()
                .saturating_sub(std::time::Duration::from_millis(
                    last.load(Ordering::Relaxed),
                ));
            // Without an idle timeout the sleep branch is disabled; its duration is moot.
            let idle = self
                .config
                .idle_timeout
                .unwrap_or(std::time::Duration::from_secs(3600));
            let wait = idle.saturating_sub(since);
            tokio::select! {
                _ = &mut copy => return false,
                _ = self.drain.finished() => return false,
                _ = tokio::time::sleep(wait), if self.config.idle_timeout.is_some() => {
                    let since = epoch.elapsed().saturating_sub(std::time::Duration::from_millis(last.load(Ordering::Relaxed)));
                    if since >= idle {
                        return true;
                    }
                }
            }
        }
    }
}

/// Marks the time of the last byte moved in either direction.
struct Activity<T> {
    inner: T,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl<T> Activity<T> {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Activity<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if r.is_ready() {
            self.touch();
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if r.is_ready() {
            self.touch();
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a live connection's periodic reports already counted, so the final report adds
/// only the rest.
#[derive(Default)]
struct ReportedBytes {
    sent: AtomicU64,
    received: AtomicU64,
}
