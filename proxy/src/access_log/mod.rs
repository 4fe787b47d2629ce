//! Access logging: Envoy's format strings ([`format`]), the per-stream record they read
//! ([`record`]), and the writers that append lines to files or stdio ([`writer`]).

pub mod format;
pub mod record;
pub mod time;
pub mod writer;
