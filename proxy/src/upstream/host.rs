//! An upstream host: where to connect, its weight, its live request count (read by the
//! least-request balancer) and, where the cluster detects outliers, its outlier record.

use super::outlier::monitor::HostMonitor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// A connectable address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostAddress {
    /// TCP.
    Tcp(SocketAddr),
    /// Unix-domain socket.
    Unix(PathBuf),
}

impl std::fmt::Display for HostAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostAddress::Tcp(a) => write!(f, "{a}"),
            HostAddress::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One upstream host.
#[derive(Debug)]
pub struct Host {
    /// Where to connect.
    pub address: HostAddress,
    /// The configured hostname (for `auto_host_rewrite`), or the DNS name it came from.
    pub hostname: String,
    /// Load-balancing weight (>= 1).
    pub weight: u32,
    /// `address` rendered once for logs, stats and hashing.
    pub address_string: std::sync::Arc<str>,
    /// Its endpoint's `istio.workload` metadata, for Istio's telemetry.
    pub istio_workload: Option<std::sync::Arc<str>>,
    /// The cluster's `transport_socket_matches` entry its endpoint chose (`None`: the
    /// cluster's own transport socket).
    pub tls_match: Option<u16>,
    /// The first URI SAN of the certificate its latest TLS connection presented (the
    /// upstream principal Istio's telemetry reports).
    peer_uri_san: arc_swap::ArcSwapOption<String>,
    active_requests: AtomicU64,
    /// Its outlier record, in clusters with outlier detection (boxed: hosts of other
    /// clusters pay one pointer).
    outlier: Option<Box<HostMonitor>>,
    /// Active health checking found it failing (or has not yet seen it pass).
    failed_health_check: AtomicBool,
    /// Its last active health check timed out (cleared by a pass).
    health_check_timed_out: AtomicBool,
    /// When it (last) entered service, in nanoseconds since [`EPOCH`]: its creation, or
    /// its latest return to health by active checking (slow start ramps from here).
    in_service_since: AtomicU64,
}

/// The process-wide origin of host timestamps.
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn nanos_since_epoch() -> u64 {
    Instant::now().saturating_duration_since(*EPOCH).as_nanos() as u64
}

impl Host {
    /// A host with no active requests.
    pub fn new(address: HostAddress, hostname: String, weight: u32) -> Self {
        let address_string = address.to_string().into();
        Host {
            address,
            hostname,
            weight: weight.max(1),
            address_string,
            istio_workload: None,
            tls_match: None,
            peer_uri_san: arc_swap::ArcSwapOption::empty(),
            active_requests: AtomicU64::new(0),
            outlier: None,
            failed_health_check: AtomicBool::new(false),
            health_check_timed_out: AtomicBool::new(false),
            in_service_since: AtomicU64::new(nanos_since_epoch()),
        }
    }

    /// Records the URI SAN a new TLS connection to it presented.
    pub fn set_peer_uri_san(&self, san: String) {
        self.peer_uri_san.store(Some(std::sync::Arc::new(san)));
    }

    /// The URI SAN its latest TLS connection presented.
    pub fn peer_uri_san(&self) -> Option<String> {
        self.peer_uri_san.load().as_deref().cloned()
    }

    /// The same host using the cluster's `transport_socket_matches` entry `tls_match`.
    pub fn with_tls_match(mut self, tls_match: Option<u16>) -> Self {
        self.tls_match = tls_match;
        self
    }

    /// The same host carrying its endpoint's `istio.workload` metadata.
    pub fn with_istio_workload(mut self, workload: Option<std::sync::Arc<str>>) -> Self {
        self.istio_workload = workload;
        self
    }

    /// The same host, out of service until its first active health check passes (new
    /// hosts of health-checked clusters start that way, as in Envoy).
    pub fn awaiting_health_check(self) -> Self {
        self.failed_health_check.store(true, Ordering::Relaxed);
        self
    }

    /// Records an active health check verdict; true if that changed the host's state (a
    /// return to health restarts its time in service).
    pub fn set_failed_health_check(&self, failed: bool) -> bool {
        let changed = self.failed_health_check.swap(failed, Ordering::Relaxed) != failed;
        if changed && !failed {
            self.in_service_since
                .store(nanos_since_epoch(), Ordering::Relaxed);
        }
        changed
    }

    /// When the host (last) entered service.
    pub fn in_service_since(&self) -> Instant {
        *EPOCH + std::time::Duration::from_nanos(self.in_service_since.load(Ordering::Relaxed))
    }

    /// Records whether its last active health check timed out (Envoy's
    /// `active_hc_timeout` flag: set by a timeout, cleared by a pass).
    pub fn set_health_check_timed_out(&self, timed_out: bool) {
        self.health_check_timed_out
            .store(timed_out, Ordering::Relaxed);
    }

    /// Whether its last active health check timed out.
    pub fn health_check_timed_out(&self) -> bool {
        self.health_check_timed_out.load(Ordering::Relaxed)
    }

    /// Whether active health checking holds it out of service.
    pub fn failed_health_check(&self) -> bool {
        self.failed_health_check.load(Ordering::Relaxed)
    }

    /// Whether neither outlier detection nor active health checking holds it out.
    pub fn in_service(&self) -> bool {
        !self.is_ejected() && !self.failed_health_check()
    }

    /// The same host with an outlier record (for clusters with outlier detection).
    pub fn monitored(mut self) -> Self {
        self.outlier = Some(Box::default());
        self
    }

    /// Its outlier record, if its cluster detects outliers.
    pub fn outlier(&self) -> Option<&HostMonitor> {
        self.outlier.as_deref()
    }

    /// Whether outlier detection took it out of service.
    pub fn is_ejected(&self) -> bool {
        self.outlier.as_ref().is_some_and(|m| m.is_ejected())
    }

    /// Requests in flight to this host.
    pub fn active_requests(&self) -> u64 {
        self.active_requests.load(Ordering::Relaxed)
    }

    /// Marks a request started; the guard marks it finished.
    pub fn start_request(self: &std::sync::Arc<Self>) -> ActiveRequest {
        self.active_requests.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(self.clone())
    }
}

/// Decrements the host's active request count when dropped.
#[derive(Debug)]
pub struct ActiveRequest(std::sync::Arc<Host>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}
