//! Upstream: clusters and their hosts, circuit-breaker resources, load balancers, DNS,
//! the transport that connects to a host (with a transparent source when asked), per-worker HTTP connection pools, and active and
//! passive (outlier) health checking.

pub mod cluster;
pub mod connect;
pub mod dns;
pub mod hash;
pub mod health;
pub mod host;
pub mod lb;
pub mod manager;
pub mod outlier;
pub mod pool;
pub mod priority;
pub mod resources;
pub mod source;
