//! Per-worker HTTP connection pools, one per (cluster, host, protocol).
//!
//! HTTP/1.1: idle connections are reused; a connection goes back to the pool only when the
//! request has been fully sent and the response body fully read (the lease travels with
//! the body). A lease dropped without [`Lease::release`] (an early answer while the
//! request body is still coming, a timeout, a reset) closes its connection at once: one
//! still writing a request body must serve nobody else, and one whose upstream stopped
//! reading must not pin its sockets. The driver also closes a connection once it has
//! been idle for the cluster's `idle_timeout`. HTTP/2: one
//! multiplexed connection, replaced when it closes or reaches `max_requests_per_connection`.
//! New connections take a `max_connections` slot for their whole life; a request that has
//! to wait for one takes a `max_pending_requests` slot, and overflows with 503 `UO` when
//! none is left.

use super::cluster::Cluster;
use super::connect::{self, ConnectError};
use super::host::Host;
use super::resources::Slot;
use super::source::UpstreamSource;
use crate::istio::alpn::Alpn;
use crate::on_wake::OnWake;
use filters::http::Body;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The wire protocol of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2.
    Http2,
    /// Whatever TLS ALPN negotiates (h2 or http/1.1).
    Auto,
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum PoolError {
    /// A circuit breaker overflowed.
    Overflow,
    /// Connecting failed.
    Connect(ConnectError),
}

/// A connection handed to one request.
pub enum Checkout {
    /// An HTTP/1.1 connection, exclusively ours until the lease is released.
    Http1(Lease),
    /// A handle on the shared HTTP/2 connection.
    Http2(http2::SendRequest<Body>),
}

/// An HTTP/1.1 connection checked out of its pool: returned by [`Lease::release`],
/// closed when dropped otherwise.
pub struct Lease {
    pool: Arc<HostPool>,
    /// The connection; taken only by `release` or `drop`.
    conn: Option<Http1Conn>,
}

/// When an HTTP/1.1 connection went idle (milliseconds since the pool clock's origin; 0
/// while a request uses it), watched by its driver task to close it after `idle_timeout`;
/// and the signal that closes it at once (its lease was dropped mid-exchange).
#[derive(Default)]
struct IdleClock {
    since_ms: std::sync::atomic::AtomicU64,
    close: tokio::sync::Notify,
}

/// The origin of idle timestamps.
static CLOCK_ORIGIN: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

impl IdleClock {
    fn now_ms() -> u64 {
        // +1 keeps 0 free to mean "in use".
        CLOCK_ORIGIN.elapsed().as_millis() as u64 + 1
    }

    fn set_idle(&self, idle: bool) {
        let value = if idle { Self::now_ms() } else { 0 };
        self.since_ms
            .store(value, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the connection has been idle for at least `timeout`.
    fn idle_for(&self, timeout: Duration) -> bool {
        let since = self.since_ms.load(std::sync::atomic::Ordering::Relaxed);
        since != 0 && Self::now_ms().saturating_sub(since) >= timeout.as_millis() as u64
    }

    /// Resolves once the connection has been idle for `timeout` without interruption.
    async fn expired(&self, timeout: Duration) {
        let timeout_ms = timeout.as_millis() as u64;
        loop {
            let since = self.since_ms.load(std::sync::atomic::Ordering::Relaxed);
            let wait = if since == 0 {
                timeout_ms
            } else {
                match (since + timeout_ms).checked_sub(Self::now_ms()) {
                    None | Some(0) => return,
                    Some(left) => left,
                }
            };
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
}

impl Lease {
    fn new(pool: Arc<HostPool>, conn: Http1Conn) -> Self {
        Lease {
            pool,
            conn: Some(conn),
        }
    }

    /// The request sender.
    pub fn sender(&mut self) -> &mut http1::SendRequest<Body> {
        &mut self
            .conn
            .as_mut()
            .expect("a lease holds its connection until released or dropped")
            .sender
    }

    /// Returns the connection to the pool after a complete exchange (request sent and
    /// response read); dropping the lease instead closes it.
    pub fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Dropping the sender alone would let hyper finish writing the request body
        // first, which an upstream that stopped reading never lets happen.
        if let Some(conn) = self.conn.take() {
            conn.clock.close.notify_one();
        }
    }
}

/// An HTTP/1.1 connection: its sender, the requests it has served, its idle clock, its
/// local address.
struct Http1Conn {
    sender: http1::SendRequest<Body>,
    requests: u32,
    clock: Arc<IdleClock>,
    /// The connection's local address, logged for every request it carries.
    local: Option<std::net::SocketAddr>,
}

struct H2 {
    sender: http2::SendRequest<Body>,
    requests: u32,
    local: Option<std::net::SocketAddr>,
}

#[derive(Default)]
struct State {
    idle: Vec<Http1Conn>,
    h2: Option<H2>,
}

/// The pool of one host for one protocol on one worker.
pub struct HostPool {
    cluster: Arc<Cluster>,
    host: Arc<Host>,
    protocol: Protocol,
    /// The ALPN to offer instead of the context's (`istio.alpn`).
    alpn: Option<Alpn>,
    /// The downstream client's address to connect from (`original_src`).
    source: Option<UpstreamSource>,
    /// The TLS config with this pool's ALPN, cached until the cluster's secrets rotate
    /// (keyed by the identity of the config it was derived from).
    tls_cache: Mutex<Option<(usize, Arc<rustls::ClientConfig>)>>,
    state: Mutex<State>,
    freed: tokio::sync::Notify,
    /// The pool's place in the cluster's count of pools (`remaining_cx_pools`).
    _counted: Option<Slot>,
}

/// Identity of a pool: cluster (by pointer), host address, protocol, ALPN override (by
/// pointer; 0 for none), upstream source.
type PoolKey = (
    usize,
    super::host::HostAddress,
    Protocol,
    usize,
    Option<UpstreamSource>,
);

thread_local! {
    /// FNV rather than SipHash: the keys are config identities and addresses, hashed
    /// on every request.
    static POOLS: RefCell<HashMap<PoolKey, Arc<HostPool>, fnv::FnvBuildHasher>> =
        RefCell::new(HashMap::default());
}

/// The calling worker's pool for (cluster, host, protocol, ALPN override, source),
/// created on first use.
pub fn for_host(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    protocol: Protocol,
    alpn: Option<&Alpn>,
    source: Option<UpstreamSource>,
) -> Result<Arc<HostPool>, PoolError> {
    // Keyed by the cluster's identity and the host's address: no allocation per request,
    // and ORIGINAL_DST hosts (created per connection) share their address's pool.
    let key = (
        Arc::as_ptr(cluster) as usize,
        host.address.clone(),
        protocol,
        alpn.map_or(0, |a| Arc::as_ptr(a) as usize),
        source,
    );
    if let Some(p) = POOLS.with(|p| p.borrow().get(&key).cloned()) {
        if Arc::ptr_eq(&p.cluster, cluster) {
            return Ok(p);
        }
    }
    let pool = Arc::new(HostPool {
        cluster: cluster.clone(),
        host: host.clone(),
        protocol,
        alpn: alpn.cloned(),
        source,
        tls_cache: Mutex::new(None),
        state: Mutex::default(),
        freed: tokio::sync::Notify::new(),
        _counted: cluster.resources.pools.try_acquire(),
    });
    POOLS.with(|p| {
        let mut pools = p.borrow_mut();
        // Pools of clusters CDS replaced or removed go when a new pool is made.
        pools.retain(|_, pool| !pool.cluster.is_retired());
        pools.insert(key, pool.clone());
    });
    Ok(pool)
}

impl HostPool {
    /// The TLS config for a new connection: the cluster's current one (a rotated secret
    /// applies from the next connection) with this pool's ALPN.
    fn tls(&self) -> Result<Option<connect::ClientTls>, ConnectError> {
        let Some(t) = self.cluster.config.tls_for(self.host.tls_match) else {
            return Ok(None);
        };
        let state = t.tls.current();
        let base = state
            .as_ref()
            .as_ref()
            .map_err(|_| ConnectError::SecretsPending)?;
        let key = Arc::as_ptr(base) as usize;
        let client = |config: Arc<rustls::ClientConfig>| connect::ClientTls {
            config,
            sni: t.sni.clone(),
            batching: t.tls.batching(),
        };
        let mut cache = self.tls_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, config)) = &*cache {
            if *k == key {
                return Ok(Some(client(config.clone())));
            }
        }
        let mut config = (**base).clone();
        config.alpn_protocols = if let Some(a) = &self.alpn {
            a.to_vec()
        } else if !t.alpn.is_empty() {
            t.alpn.clone()
        } else {
            match self.protocol {
                Protocol::Http2 => vec![b"h2".to_vec()],
                Protocol::Http1 => vec![b"http/1.1".to_vec()],
                Protocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            }
        };
        let config = Arc::new(config);
        *cache = Some((key, config.clone()));
        Ok(Some(client(config)))
    }

    fn limits(&self) -> (Option<u32>, Option<Duration>) {
        (
            self.cluster
                .config
                .max_requests_per_connection
                .filter(|n| *n > 0),
            self.cluster.config.idle_timeout,
        )
    }

    /// A ready connection and its local address.
    fn take_ready(self: &Arc<Self>) -> Option<(Checkout, Option<std::net::SocketAddr>)> {
        let (_, idle_timeout) = self.limits();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // An HTTP/2 connection serves Http2 pools and Auto pools that negotiated h2.
        if self.protocol != Protocol::Http1 {
            let (max, _) = self.limits();
            let usable = st
                .h2
                .as_ref()
                .is_some_and(|h| !h.sender.is_closed() && max.is_none_or(|m| h.requests < m));
            if usable {
                let h = st.h2.as_mut()?;
                h.requests += 1;
                return Some((Checkout::Http2(h.sender.clone()), h.local));
            }
            st.h2 = None;
        }
        while let Some(idle) = st.idle.pop() {
            let expired = idle_timeout.is_some_and(|t| idle.clock.idle_for(t));
            if !expired && !idle.sender.is_closed() {
                idle.clock.set_idle(false);
                let local = idle.local;
                return Some((Checkout::Http1(Lease::new(self.clone(), idle)), local));
            }
        }
        None
    }

    fn put_back(&self, mut conn: Http1Conn) {
        let (max, _) = self.limits();
        conn.requests += 1;
        if max.is_none_or(|m| conn.requests < m) && !conn.sender.is_closed() {
            conn.clock.set_idle(true);
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.idle.push(conn);
        }
        self.freed.notify_one();
    }

    /// Gets a connection: a ready one, a new one, or (as a pending request) the next one
    /// freed. The caller bounds the wait with its own timeout.
    pub async fn checkout(
        self: &Arc<Self>,
    ) -> Result<(Checkout, Option<std::net::SocketAddr>), PoolError> {
        let mut pending: Option<(Slot, PendingGuard)> = None;
        loop {
            if let Some(ready) = self.take_ready() {
                return Ok(ready);
            }
            if pending.is_none() {
                let slot = self
                    .cluster
                    .resources
                    .pending
                    .try_acquire()
                    .ok_or_else(|| {
                        self.cluster.stats().rq_pending_overflow.inc();
                        PoolError::Overflow
                    })?;
                self.cluster.stats().rq_pending_total.inc();
                pending = Some((slot, PendingGuard::new(&self.cluster)));
            }
            match self.cluster.resources.connections.try_acquire() {
                // Boxed: connecting (TCP, TLS, the HTTP/2 handshake) is the rare path, and
                // its state inline would grow every request's future, copied as it moves.
                Some(slot) => return Box::pin(self.connect(slot)).await,
                None => {
                    self.cluster.stats().cx_overflow.inc();
                    tokio::select! {
                        _ = self.freed.notified() => {}
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                }
            }
        }
    }

    async fn connect(
        self: &Arc<Self>,
        slot: Slot,
    ) -> Result<(Checkout, Option<std::net::SocketAddr>), PoolError> {
        let stats = self.cluster.stats();
        let connected = match async {
            connect::connect(&self.cluster, &self.host, self.tls()?, self.source).await
        }
        .await
        {
            Ok(c) => c,
            Err(e) => {
                if matches!(e, ConnectError::Timeout) {
                    stats.cx_connect_timeout.inc();
                }
                stats.cx_connect_fail.inc();
                stats.cx_total.inc();
                return Err(PoolError::Connect(e));
            }
        };
        stats.cx_total.inc();
        stats.cx_active.inc();
        let local = connected.local;
        let io = TokioIo::new(connected.io);
        let cluster = self.cluster.clone();
        let on_close = move || {
            cluster.stats().cx_active.dec();
            cluster.stats().cx_destroy.inc();
        };
        let h2 = self.protocol == Protocol::Http2 || connected.alpn.as_deref() == Some(b"h2");
        if h2 {
            stats.cx_http2_total.inc();
            let (sender, conn) = match http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
            {
                Ok(x) => x,
                Err(e) => {
                    on_close();
                    return Err(PoolError::Connect(ConnectError::Tls(e.to_string())));
                }
            };
            tokio::spawn(async move {
                let _slot = slot;
                let _ = conn.await;
                on_close();
            });
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.h2 = Some(H2 {
                sender: sender.clone(),
                requests: 1,
                local,
            });
            Ok((Checkout::Http2(sender), local))
        } else {
            stats.cx_http1_total.inc();
            let (sender, conn) = match http1::Builder::new().handshake(io).await {
                Ok(x) => x,
                Err(e) => {
                    on_close();
                    return Err(PoolError::Connect(ConnectError::Tls(e.to_string())));
                }
            };
            let freed = self.clone();
            let clock = Arc::new(IdleClock::default());
            let watched = clock.clone();
            let (_, idle_timeout) = self.limits();
            let cluster = self.cluster.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let connection = conn.with_upgrades();
                let idle = async {
                    match idle_timeout {
                        Some(t) => watched.expired(t).await,
                        None => std::future::pending().await,
                    }
                };
                // Closing a connection is dropping its driver. The idle watch and the
                // close signal are polled only when they woke the task, not on every
                // exchange.
                tokio::select! {
                    biased;
                    _ = connection => {}
                    _ = OnWake::new(idle) => cluster.stats().cx_idle_timeout.inc(),
                    _ = OnWake::new(watched.close.notified()) => {}
                }
                on_close();
                freed.freed.notify_one();
            });
            let conn = Http1Conn {
                sender,
                requests: 0,
                clock,
                local,
            };
            Ok((Checkout::Http1(Lease::new(self.clone(), conn)), local))
        }
    }
}

/// Keeps `upstream_rq_pending_active` right on every exit path.
struct PendingGuard(Arc<Cluster>);

impl PendingGuard {
    fn new(c: &Arc<Cluster>) -> Self {
        c.stats().rq_pending_active.inc();
        PendingGuard(c.clone())
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.stats().rq_pending_active.dec();
    }
}
