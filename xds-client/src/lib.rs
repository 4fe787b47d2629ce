//! xDS for meshproxy: Envoy's protobuf types, proto3 JSON decoding and encoding through
//! Envoy's descriptor set, and the xDS gRPC client ([`ads`]).
//!
//! This crate knows nothing about sockets that carry traffic: it turns bytes and JSON into
//! typed protos and back. Translation into meshproxy's internal config lives in `proxy`.

pub mod ads;
pub mod contrib;
pub mod descriptors;
pub mod istio;
pub mod json;
pub mod proto_def;
pub mod transcode;
pub mod typed_struct;

/// Envoy's generated protobuf types (v3 API, xds, udpa, google.protobuf), re-exported so
/// every crate of the workspace names them the same way.
pub use envoy_types::pb as proto;
