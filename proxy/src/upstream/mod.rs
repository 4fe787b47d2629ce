//! Upstream: clusters and their hosts, circuit-breaker resources, load balancers, DNS,
//! the transport that connects to a host, and per-worker HTTP connection pools.

pub mod cluster;
pub mod connect;
pub mod dns;
pub mod hash;
pub mod host;
pub mod lb;
pub mod manager;
pub mod pool;
pub mod priority;
pub mod resources;
