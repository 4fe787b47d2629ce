//! HTTP: the connection manager (codecs, header sanitation, request ids, route selection,
//! local replies, access logs), the router that forwards to clusters, and request
//! mirroring.

pub mod client_cert;
pub mod cluster_call;
pub mod connection_manager;
pub mod ext_authz;
pub mod fault;
pub mod grpc_stats;
pub mod head_deadline;
pub mod headers;
pub mod http10;
pub mod local_reply;
pub mod metadata;
pub mod mirror;
pub mod path;
pub mod route_match;
pub mod router;
pub mod stream_timeouts;
pub mod throttle;
