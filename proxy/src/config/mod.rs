//! The config plane's output: plain Rust types with everything the data path needs
//! pre-computed, translated from Envoy's protos. Every module here turns one resource kind
//! into its internal form and rejects what it cannot honour with the field's path.

// Envoy still honours fields its protos mark deprecated (header `append`, `exact_match`,
// `total_weight`, ...) and real configs, istiod's included, still send them.
#![allow(deprecated)]

pub mod access_log;
pub mod access_log_filter;
pub mod bootstrap;
pub mod check;
pub mod cluster;
pub mod common;
pub mod error;
pub mod ext_authz;
pub mod fault;
pub mod hcm;
pub mod health_check;
pub mod listener;
pub mod mirror;
pub mod outlier;
pub mod per_filter;
pub mod rds;
pub mod retry;
pub mod route;
pub mod secrets;
pub mod source;
pub mod spiffe;
pub mod stats;
pub mod support;
pub mod tcp_proxy;
pub mod tls;

pub use error::ConfigError;
