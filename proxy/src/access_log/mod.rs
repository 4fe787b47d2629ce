//! Access logging: Envoy's format strings ([`format`]), the per-stream record they read
//! ([`record`]), the filters that pick the records to log ([`filter`]), and the writers
//! that append lines to files or stdio ([`writer`]).

pub mod filter;
pub mod format;
pub mod record;
pub mod time;
pub mod writer;
