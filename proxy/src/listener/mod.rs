//! Listeners: bound sockets, the per-worker accept loops, listener filters, filter-chain
//! selection, downstream TLS, and the hand-off to the HTTP connection manager or TCP proxy.

mod access_log;
pub mod chain_match;
pub mod drain;
pub mod inspect;
pub mod proxy_protocol;
pub mod socket;
pub mod workers;

use crate::config::common::Address;
use crate::config::listener::{
    ConfiguredListenerFilter, FilterChain, ListenerConfig, ListenerFilter, NetworkFilter, Terminal,
};
use crate::config::tls::ServerTls;
use crate::http::connection_manager::HttpConnectionManager;
use crate::server::Server;
use crate::stats::{Counter, Gauge, Scope};
use crate::tcp_proxy::TcpProxy;
use chain_match::ConnectionFacts;
use inspect::Inspection;
use socket::Downstream;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What the data path knows about a downstream connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectionInfo {
    /// Process-unique id.
    pub id: u64,
    /// Remote address (PROXY protocol source when present).
    pub remote: Option<SocketAddr>,
    /// Socket peer.
    pub direct_remote: Option<SocketAddr>,
    /// Local address (original destination when restored).
    pub local: Option<SocketAddr>,
    /// SNI.
    pub server_name: Option<String>,
    /// Whether the connection is TLS-terminated here.
    pub tls: bool,
    /// ALPN negotiated by our TLS handshake.
    pub alpn: Option<Vec<u8>>,
    /// Our certificate's first URI SAN (what Istio reports as the local principal).
    pub local_uri_san: Option<String>,
    /// The client certificate of a mutual-TLS connection, read for XFCC.
    pub peer_certificate: Option<Arc<crate::http::client_cert::PeerCertificate>>,
    /// The peer workload Istio's TCP metadata exchange learnt, if it ran.
    pub downstream_peer: Option<Arc<crate::istio::workload::Workload>>,
    /// The (peer, local) principals `istio_authn` found, when the chain runs it.
    pub istio_principals: Option<Arc<(String, String)>>,
    /// Accepted by a `traffic_direction: INBOUND` listener.
    pub inbound: bool,
    /// The address upstream connections for this one come from (`original_src`).
    pub upstream_source: Option<crate::upstream::source::UpstreamSource>,
}

impl ConnectionInfo {
    /// The client certificate's first URI SAN.
    pub fn peer_uri_san(&self) -> Option<String> {
        self.peer_certificate.as_ref()?.uris.first().cloned()
    }

    /// A new access-log record of a stream or session on this connection, with what the
    /// connection tells (addresses, TLS names, Istio peers).
    pub fn record(&self) -> crate::access_log::record::Record {
        let mut record = crate::access_log::record::Record::new(self.id);
        record.downstream_direct_remote = self.direct_remote;
        record.downstream_local = self.local;
        record.requested_server_name = self.server_name.clone();
        record.peer_uri_san = self.peer_uri_san();
        record.local_uri_san = self.local_uri_san.clone();
        record.istio.peers.downstream = self.downstream_peer.clone();
        record.istio.principals = self.istio_principals.clone();
        record
    }
}

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// Envoy's per-listener stats.
#[derive(Debug)]
pub struct ListenerStats {
    /// downstream_cx_total
    pub cx_total: Arc<Counter>,
    /// downstream_cx_active
    pub cx_active: Arc<Gauge>,
    /// downstream_cx_destroy
    pub cx_destroy: Arc<Counter>,
    /// no_filter_chain_match
    pub no_filter_chain_match: Arc<Counter>,
    /// downstream_pre_cx_timeout
    pub pre_cx_timeout: Arc<Counter>,
    /// downstream_global_cx_overflow
    pub global_cx_overflow: Arc<Counter>,
    /// The listener's scope (`listener.<address>.`), for per-HCM listener stats.
    pub scope: Scope,
}

/// A filter chain ready to serve.
pub struct ChainRuntime {
    tls: Option<Arc<ServerTls>>,
    /// Istio's TCP metadata exchange with the downstream, when the chain runs it.
    exchange: Option<Arc<crate::istio::tcp_exchange::TcpExchangeConfig>>,
    /// The chain runs `istio_authn`.
    authn: bool,
    /// A discovered network filter has no config: connections are closed at once.
    missing_config: bool,
    /// The chain's RBAC filters with their counters.
    rbac: Vec<(
        Arc<crate::rbac::translate::NetworkRbacConfig>,
        crate::rbac::RbacStats,
    )>,
    handshake_timeout: Option<std::time::Duration>,
    terminal: TerminalRuntime,
}

enum TerminalRuntime {
    Http(Arc<HttpConnectionManager>),
    Tcp(Arc<TcpProxy>),
}

/// A listener with its runtime pieces.
pub struct ActiveListener {
    /// Config.
    pub config: Arc<ListenerConfig>,
    /// Stats.
    pub stats: ListenerStats,
    chains: Vec<ChainRuntime>,
    default_chain: Option<ChainRuntime>,
    retired: tokio::sync::watch::Sender<bool>,
    /// Listener-level access logs.
    access_logs: Vec<crate::access_log::writer::AccessLogger>,
}

impl ActiveListener {
    /// Builds the runtime of every chain (access-log writers, stats, and the filters
    /// that announce or report the local `node`).
    pub fn new(
        config: Arc<ListenerConfig>,
        root: &Scope,
        flush: std::time::Duration,
        node: &xds_client::proto::envoy::config::core::v3::Node,
    ) -> std::io::Result<Arc<Self>> {
        let scope = root.tagged("listener", "envoy_listener_address", &config.stat_prefix);
        let build = |c: &FilterChain| -> std::io::Result<ChainRuntime> {
            let local = crate::http::connection_manager::LocalNode {
                node,
                outbound: config.outbound,
                inbound: config.inbound,
            };
            Ok(ChainRuntime {
                tls: c.tls.clone(),
                missing_config: c
                    .network_filters
                    .iter()
                    .any(|f| matches!(f, NetworkFilter::MissingConfig(_))),
                authn: c
                    .network_filters
                    .iter()
                    .any(|f| matches!(f, NetworkFilter::IstioAuthn)),
                exchange: c.network_filters.iter().find_map(|f| match f {
                    NetworkFilter::MetadataExchange(x) => Some(x.clone()),
                    _ => None,
                }),
                rbac: c
                    .network_filters
                    .iter()
                    .filter_map(|f| match f {
                        NetworkFilter::Rbac(r) => {
                            let base = crate::stats::join_prefix(&r.stat_prefix, "rbac.");
                            Some((
                                r.clone(),
                                crate::rbac::RbacStats::new(root, &base, &r.rules),
                            ))
                        }
                        _ => None,
                    })
                    .collect(),
                handshake_timeout: c.handshake_timeout,
                terminal: match &c.terminal {
                    Terminal::Http(h) => TerminalRuntime::Http(HttpConnectionManager::new(
                        h.clone(),
                        root,
                        &scope,
                        flush,
                        &local,
                    )?),
                    Terminal::Tcp(t) => TerminalRuntime::Tcp(TcpProxy::new(
                        t.clone(),
                        root,
                        flush,
                        &local,
                        &c.network_filters,
                    )?),
                },
            })
        };
        let chains = config
            .filter_chains
            .iter()
            .map(build)
            .collect::<std::io::Result<Vec<_>>>()?;
        let default_chain = config.default_chain.as_ref().map(build).transpose()?;
        let access_logs = config
            .access_logs
            .iter()
            .map(|l| crate::access_log::writer::AccessLogger::start(l, flush))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Arc::new(ActiveListener {
            access_logs,
            stats: ListenerStats {
                cx_total: scope.counter("downstream_cx_total"),
                cx_active: scope.gauge("downstream_cx_active"),
                cx_destroy: scope.counter("downstream_cx_destroy"),
                no_filter_chain_match: scope.counter("no_filter_chain_match"),
                pre_cx_timeout: scope.counter("downstream_pre_cx_timeout"),
                global_cx_overflow: scope.counter("downstream_global_cx_overflow"),
                scope,
            },
            chains,
            default_chain,
            retired: tokio::sync::watch::channel(false).0,
            config,
        }))
    }

    /// Stops accepting (LDS removed or replaced the listener); accepted connections go on.
    pub fn retire(&self) {
        let _ = self.retired.send(true);
    }

    /// Drains the connections of chain `index` (filter chains in order, then the default
    /// chain) over `time`: HTTP connections are asked to close, TCP proxy connections close
    /// when the time is over.
    pub fn drain_chain(
        &self,
        index: usize,
        time: std::time::Duration,
        strategy: crate::cli::DrainStrategy,
        draining: &Arc<Gauge>,
    ) {
        match self.chain_at(index).map(|c| &c.terminal) {
            Some(TerminalRuntime::Http(h)) => h.drain.start(time, strategy, draining),
            Some(TerminalRuntime::Tcp(t)) => t.drain.start(time, strategy, draining),
            None => {}
        }
    }

    /// Links this listener's chains to the same chains of `older`, which it replaces:
    /// `same(i)` is the index in `older` of chain `i` when an update left it as it was.
    /// The older chain's connections then drain with this one's, and send their next
    /// HTTP streams through this one's connection manager (with the filter configs of
    /// now).
    pub fn carry_over(&self, older: &ActiveListener, same: impl Fn(usize) -> Option<usize>) {
        let count = self.chains.len() + usize::from(self.default_chain.is_some());
        for i in 0..count {
            let Some(j) = same(i) else {
                continue;
            };
            let (n, o) = (self.chain_at(i), older.chain_at(j));
            match (n.map(|c| &c.terminal), o.map(|c| &c.terminal)) {
                (Some(TerminalRuntime::Http(n)), Some(TerminalRuntime::Http(o))) => {
                    n.drain.adopt(&o.drain);
                    o.succeed(n.clone());
                }
                (Some(TerminalRuntime::Tcp(n)), Some(TerminalRuntime::Tcp(o))) => {
                    n.drain.adopt(&o.drain)
                }
                _ => {}
            }
        }
    }

    /// Chain `index` (filter chains in order, then the default chain).
    fn chain_at(&self, index: usize) -> Option<&ChainRuntime> {
        self.chains.get(index).or(if index == self.chains.len() {
            self.default_chain.as_ref()
        } else {
            None
        })
    }

    /// Whether every chain's TLS secrets are present, or were rejected (SDS dependencies
    /// warm the listener).
    pub fn warmed(&self) -> bool {
        self.chains
            .iter()
            .chain(self.default_chain.iter())
            .all(|c| c.tls.as_ref().is_none_or(|t| t.settled()))
    }
}

/// A bound listening socket, cloned into every worker.
pub enum BoundSocket {
    /// TCP.
    Tcp(std::net::TcpListener),
    /// Unix.
    Unix(std::os::unix::net::UnixListener),
}

impl BoundSocket {
    /// A duplicate of the socket (same bound port, its own fd).
    pub fn try_clone(&self) -> std::io::Result<BoundSocket> {
        Ok(match self {
            BoundSocket::Tcp(t) => BoundSocket::Tcp(t.try_clone()?),
            BoundSocket::Unix(u) => BoundSocket::Unix(u.try_clone()?),
        })
    }
}

/// A listener's bound sockets: one for its address, then one per additional address.
pub struct ListenerSockets(pub Vec<BoundSocket>);

/// Binds every address of a listener (see [`bind`]).
pub fn bind_listener(config: &ListenerConfig) -> std::io::Result<ListenerSockets> {
    config
        .addresses()
        .map(|a| {
            bind(a, config.transparent, config.ipv6_only.contains(a))
                .map_err(|e| std::io::Error::new(e.kind(), format!("{a}: {e}")))
        })
        .collect::<std::io::Result<_>>()
        .map(ListenerSockets)
}

/// Binds a listener's address (SO_REUSEADDR, non-blocking; an IPv6 one accepts IPv4 too
/// unless `ipv6_only`); `transparent` sets IP_TRANSPARENT so TPROXY'd connections are
/// accepted.
pub fn bind(address: &Address, transparent: bool, ipv6_only: bool) -> std::io::Result<BoundSocket> {
    match address {
        Address::Socket(a) => {
            let domain = if a.is_ipv4() {
                socket2::Domain::IPV4
            } else {
                socket2::Domain::IPV6
            };
            let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            if a.is_ipv6() {
                s.set_only_v6(ipv6_only)?;
            }
            if transparent {
                crate::upstream::source::set_transparent(&s, a.is_ipv6())?;
            }
            s.bind(&(*a).into())?;
            s.listen(1024)?;
            s.set_nonblocking(true)?;
            Ok(BoundSocket::Tcp(s.into()))
        }
        Address::Pipe(p, mode) => {
            let path = p.to_string_lossy();
            if let Some(name) = path.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                let l = std::os::unix::net::UnixListener::bind_addr(&addr)?;
                l.set_nonblocking(true)?;
                return Ok(BoundSocket::Unix(l));
            }
            let _ = std::fs::remove_file(p);
            let l = std::os::unix::net::UnixListener::bind(p)?;
            if *mode != 0 {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(*mode))?;
            }
            l.set_nonblocking(true)?;
            Ok(BoundSocket::Unix(l))
        }
        Address::Named(..) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "listeners need an IP address",
        )),
    }
}

/// Runs the accept loop of one listener on the calling worker until `stop` fires or the
/// listener is retired.
pub async fn accept_loop(
    server: Arc<Server>,
    listener: Arc<ActiveListener>,
    socket: BoundSocket,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    enum L {
        Tcp(tokio::net::TcpListener),
        Unix(tokio::net::UnixListener),
    }
    let l = match socket {
        BoundSocket::Tcp(s) => tokio::net::TcpListener::from_std(s).map(L::Tcp),
        BoundSocket::Unix(s) => tokio::net::UnixListener::from_std(s).map(L::Unix),
    };
    let l = match l {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(target: "conn_handler", "listener {}: cannot register socket: {e}", listener.config.name);
            return;
        }
    };
    let mut retired = listener.retired.subscribe();
    loop {
        if *retired.borrow() {
            return;
        }
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            _ = retired.changed() => return,
            a = async {
                match &l {
                    L::Tcp(t) => t.accept().await.map(|(s, peer)| {
                        // As Envoy does for every downstream connection: without it, a
                        // response written in two parts (HTTP/2 HEADERS, then DATA) waits in
                        // the kernel for the client's next ACK, often its next request.
                        let _ = s.set_nodelay(true);
                        (Downstream::Tcp(s), Some(peer))
                    }),
                    L::Unix(u) => u.accept().await.map(|(s, _)| (Downstream::Unix(s), None)),
                }
            } => a,
        };
        match accepted {
            Ok((ds, peer)) => {
                let server = server.clone();
                let listener = listener.clone();
                tokio::spawn(async move { handle(server, listener, ds, peer).await });
            }
            Err(e) => {
                tracing::warn!(target: "conn_handler", "listener {}: accept failed: {e}", listener.config.name);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// Counts a connection against the global limit for its lifetime.
struct GlobalSlot(Option<Arc<AtomicU64>>);

impl Drop for GlobalSlot {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Counts a connection in a listener's stats for its lifetime.
struct ActiveGuard(Arc<ActiveListener>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.stats.cx_active.dec();
        self.0.stats.cx_destroy.inc();
    }
}

async fn handle(
    server: Arc<Server>,
    mut listener: Arc<ActiveListener>,
    mut ds: Downstream,
    peer: Option<SocketAddr>,
) {
    let global = match server.admit_connection(listener.config.ignore_global_conn_limit) {
        Some(g) => GlobalSlot(g),
        None => {
            listener.stats.global_cx_overflow.inc();
            return;
        }
    };
    let mut info = ConnectionInfo {
        id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
        remote: peer,
        direct_remote: peer,
        local: match &ds {
            Downstream::Tcp(s) => s.local_addr().ok(),
            Downstream::Unix(_) => None,
        },
        ..Default::default()
    };
    let mut log = access_log::ConnectionLog::start(&listener, &info);
    let mut facts = ConnectionFacts {
        transport_protocol: "raw_buffer",
        ..Default::default()
    };
    // Listener filters of the accepting listener; with use_original_dst, the connection
    // moves to the listener of its original destination, whose filters run too.
    let mut hops = 0;
    loop {
        let timeout = listener.config.listener_filters_timeout;
        let run = run_listener_filters(
            &listener.config.listener_filters,
            &mut ds,
            &mut info,
            &mut facts,
        );
        let outcome = match timeout {
            Some(t) => tokio::time::timeout(t, run).await,
            None => Ok(run.await),
        };
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(target: "conn_handler", "listener {}: listener filter closed the connection: {e}", listener.config.name);
                return;
            }
            Err(_) => {
                listener.stats.pre_cx_timeout.inc();
                if !listener.config.continue_on_timeout {
                    return;
                }
            }
        }
        if hops == 0 && listener.config.use_original_dst {
            if let Some(target) = info
                .local
                .and_then(|dst| server.listener_for_original_dst(dst, &listener))
            {
                access_log::ConnectionLog::hand_off(&mut log, &target, &info);
                listener = target;
                hops += 1;
                continue;
            }
        }
        break;
    }
    let _global = global;
    info.inbound = listener.config.inbound;
    listener.stats.cx_total.inc();
    listener.stats.cx_active.inc();
    let _active = ActiveGuard(listener.clone());
    if let Some(log) = &mut log {
        log.connection(&info);
    }
    facts.destination = info.local;
    facts.source = info.remote;
    facts.direct_source = info.direct_remote;
    facts.server_name = info.server_name.clone();
    let Some(chosen) = chain_match::select(
        &listener.config.filter_chains,
        listener.config.default_chain.as_ref(),
        &facts,
    ) else {
        listener.stats.no_filter_chain_match.inc();
        if let Some(log) = &mut log {
            log.no_filter_chain();
        }
        return;
    };
    let chain = match listener
        .config
        .filter_chains
        .iter()
        .position(|c| std::ptr::eq(c, chosen))
    {
        Some(i) => &listener.chains[i],
        None => match &listener.default_chain {
            Some(d) => d,
            None => return,
        },
    };
    if chain.missing_config {
        tracing::debug!(target: "connection", "closed: a discovered network filter has no config (NFCF)");
        return;
    }
    let mut io = ds.into_io();
    if let Some(tls) = &chain.tls {
        // The config current now: a rotated certificate serves from the next handshake.
        let Ok(config) = tls.current().as_ref().clone() else {
            return;
        };
        let handshake = crate::tls::multibuffer::handshake(
            tls.batching(),
            tokio_rustls::TlsAcceptor::from(config).accept(io),
        );
        let stream = match chain.handshake_timeout {
            Some(t) => match tokio::time::timeout(t, handshake).await {
                Ok(r) => r,
                Err(_) => return,
            },
            None => handshake.await,
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(target: "connection", "TLS handshake failed: {e}");
                return;
            }
        };
        let conn = stream.get_ref().1;
        info.tls = true;
        info.alpn = conn.alpn_protocol().map(|a| a.to_vec());
        info.server_name = conn.server_name().map(str::to_string).or(info.server_name);
        info.peer_certificate = conn
            .peer_certificates()
            .and_then(crate::http::client_cert::PeerCertificate::from_chain)
            .map(Arc::new);
        info.local_uri_san = tls.local_uri_san();
        if chain.authn {
            // As `istio_authn`: only with a client certificate, the first `spiffe://`
            // URI SAN of each side.
            info.istio_principals = info.peer_certificate.as_ref().map(|p| {
                Arc::new((
                    crate::tls::san::first_spiffe(&p.uris).unwrap_or_default(),
                    tls.local_spiffe_id().unwrap_or_default(),
                ))
            });
        }
        io = Box::new(stream);
        if let Some(log) = &mut log {
            log.connection(&info);
        }
    }
    if let Some(x) = &chain.exchange {
        (io, info.downstream_peer) = x.run(info.alpn.as_deref(), io).await;
    }
    // Decided once, as soon as the connection is up: nothing a rule reads changes later.
    let subject = crate::rbac::Subject {
        conn: &info,
        request: None,
        metadata: None,
    };
    for (filter, stats) in &chain.rbac {
        if let Some(policy) = crate::rbac::enforce(&filter.rules, stats, &subject).denied {
            tracing::debug!(target: "rbac", "connection denied by RBAC");
            let details = format!("rbac_access_denied_matched_policy[{policy}]");
            let record = match &chain.terminal {
                TerminalRuntime::Tcp(t) => {
                    Some(t.closed_by_filter(&server, &info, details.clone()))
                }
                TerminalRuntime::Http(_) => None,
            };
            if let Some(log) = &mut log {
                log.terminated(record, details);
            }
            return;
        }
    }
    match &chain.terminal {
        TerminalRuntime::Http(h) => match &mut log {
            None => {
                h.clone().serve(server, io, info).await;
            }
            Some(log) => {
                let (received, sent) = (Arc::new(Counter::default()), Arc::new(Counter::default()));
                let counted = crate::io::CountingIo::new(io, received.clone(), sent.clone());
                let protocol = h.clone().serve(server, Box::new(counted), info).await;
                log.served_by_http(protocol, received.value(), sent.value());
            }
        },
        TerminalRuntime::Tcp(t) => {
            let record = t
                .clone()
                .serve(server, io, listener.config.buffer_limit, info)
                .await;
            if let Some(log) = &mut log {
                log.served_by_tcp_proxy(record);
            }
        }
    }
}

async fn run_listener_filters(
    filters: &[ConfiguredListenerFilter],
    ds: &mut Downstream,
    info: &mut ConnectionInfo,
    facts: &mut ConnectionFacts,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for configured in filters {
        if configured
            .disabled
            .as_ref()
            .is_some_and(|p| p.matches(info.local.map(|a| a.port())))
        {
            continue;
        }
        match &configured.filter {
            ListenerFilter::MissingConfig => {
                return Err(std::io::Error::other(
                    "a discovered listener filter has no config (NFCF)",
                ))
            }
            ListenerFilter::OriginalDst => {
                if let Some(dst) = ds.original_dst() {
                    info.local = Some(dst);
                }
            }
            &ListenerFilter::OriginalSrc { mark } => {
                info.upstream_source = info
                    .remote
                    .map(|r| crate::upstream::source::UpstreamSource { ip: r.ip(), mark });
            }
            &ListenerFilter::ProxyProtocol { allow_without } => {
                let mut need = 16;
                loop {
                    let n = ds.peek(need, &mut buf).await?;
                    match proxy_protocol::parse(&buf[..n]) {
                        proxy_protocol::Parse::Header(h) => {
                            let len = match h {
                                proxy_protocol::Header::Proxied {
                                    source,
                                    destination,
                                    len,
                                } => {
                                    info.remote = Some(source);
                                    info.local = Some(destination);
                                    len
                                }
                                proxy_protocol::Header::Local { len } => len,
                            };
                            ds.discard(len).await?;
                            break;
                        }
                        proxy_protocol::Parse::NotProxy if allow_without => break,
                        proxy_protocol::Parse::NotProxy => {
                            return Err(std::io::Error::other("missing PROXY protocol header"))
                        }
                        proxy_protocol::Parse::Invalid(why) => {
                            return Err(std::io::Error::other(why))
                        }
                        proxy_protocol::Parse::NeedMore(m) if n == 0 || m <= n => {
                            return Err(std::io::Error::other("connection closed in PROXY header"))
                        }
                        proxy_protocol::Parse::NeedMore(m) => need = m,
                    }
                }
            }
            ListenerFilter::TlsInspector => {
                let mut need = 1;
                loop {
                    let n = ds.peek(need, &mut buf).await?;
                    match inspect::client_hello(&buf[..n]) {
                        Inspection::Done(Some(hello)) => {
                            facts.transport_protocol = "tls";
                            info.server_name = hello.sni;
                            facts.application_protocols = hello.alpn;
                            break;
                        }
                        Inspection::Done(None) => break,
                        Inspection::NeedMore(_) if n == 0 => break,
                        Inspection::NeedMore(m) if m <= n => break,
                        Inspection::NeedMore(m) => need = m,
                    }
                }
            }
            ListenerFilter::HttpInspector => {
                if facts.transport_protocol == "tls" {
                    continue;
                }
                let mut need = 1;
                loop {
                    let n = ds.peek(need, &mut buf).await?;
                    match inspect::http_protocol(&buf[..n]) {
                        Inspection::Done(Some(p)) => {
                            facts.application_protocols = vec![p.to_string()];
                            break;
                        }
                        Inspection::Done(None) => break,
                        Inspection::NeedMore(_) if n == 0 => break,
                        Inspection::NeedMore(m) if m <= n => break,
                        Inspection::NeedMore(m) => need = m,
                    }
                }
            }
        }
    }
    Ok(())
}
