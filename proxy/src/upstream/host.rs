//! An upstream host: where to connect, its weight, and its live request count (read by the
//! least-request balancer).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

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
    pub address_string: String,
    active_requests: AtomicU64,
}

impl Host {
    /// A host with no active requests.
    pub fn new(address: HostAddress, hostname: String, weight: u32) -> Self {
        let address_string = address.to_string();
        Host {
            address,
            hostname,
            weight: weight.max(1),
            address_string,
            active_requests: AtomicU64::new(0),
        }
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
