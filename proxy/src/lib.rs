//! meshproxy: a native data-plane proxy that runs Envoy v3 bootstraps with Envoy's command
//! line, admin API and stat names.
//!
//! Config plane: [`config`] translates protos into plain types once. Data plane: listeners
//! accept on per-core workers and hand connections to the HTTP connection manager or the
//! TCP proxy, which reach clusters through per-worker connection pools.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod http;
pub mod io;
pub mod istio;
pub mod lazy_timer;
pub mod listener;
pub mod logging;
pub mod memory;
pub mod on_wake;
pub mod rbac;
pub mod server;
pub mod server_stats;
pub mod stats;
pub mod tcp_proxy;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod xds;
