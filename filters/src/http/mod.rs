//! HTTP filters and the body type they exchange with the connection manager.

pub mod compressor;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// Errors a body stream can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response inside meshproxy: boxed so filters can wrap
/// bodies (compression, accounting) without knowing where the bytes come from.
pub type Body = BoxBody<Bytes, BoxError>;
