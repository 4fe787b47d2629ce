//! Fuzz targets for every parser of untrusted bytes: one `fn(&[u8])` per parser, each
//! asserting the parser's invariants (no panic; where a reference model or a second path
//! exists, agreement with it). `tests/corpus.rs` replays the committed corpus under
//! `corpus/<target>/` and a bounded number of seeded mutations of it on every
//! `cargo test`; `fuzz/` wraps each target in a libFuzzer binary for long runs (README,
//! "Fuzzing").

pub mod access_log;
pub mod config;
pub mod grpc;
pub mod istio;
pub mod listener;
pub mod path;
mod path_model;

/// A fuzz target: it panics when a parser breaks one of its invariants.
pub type Target = fn(&[u8]);

/// Every target by name; the name is its corpus directory and its libFuzzer binary.
pub const TARGETS: &[(&str, Target)] = &[
    ("proxy_protocol", listener::proxy_protocol),
    ("tls_client_hello", listener::tls_client_hello),
    ("http_inspector", listener::http_inspector),
    ("tcp_exchange", istio::tcp_exchange),
    ("cel", istio::cel),
    ("grpc_frames", grpc::frames),
    ("grpc_timeout", grpc::timeout),
    ("access_log_format", access_log::format),
    ("bootstrap_transcode", config::bootstrap_transcode),
    ("xds_resource", config::xds_resource),
    ("path_normalize", path::normalize),
];
