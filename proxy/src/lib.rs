//! meshproxy: a native data-plane proxy that runs Envoy v3 bootstraps with Envoy's command
//! line, admin API and stat names.
//!
//! Config plane: [`config`] translates protos into plain types once. Data plane: listeners
//! accept on per-core workers and hand connections to the HTTP connection manager or the
//! TCP proxy, which reach clusters through per-worker connection pools.

pub mod access_log;
pub mod config;
pub mod stats;
pub mod tls;
