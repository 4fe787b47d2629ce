//! Stats with Envoy's names. Each stat is created once (at translation or first use), and
//! the hot path holds an `Arc` to it, so counting is one atomic add with no lookup and no
//! formatting. Each stat carries its tags and tag-extracted name so `/stats/prometheus`
//! renders Envoy's metric names and labels without regexes at scrape time, unless the
//! bootstrap replaces the built-in tags ([`naming`]).

pub mod naming;
pub mod render;
mod store;

pub use store::{Counter, Gauge, Histogram, Scope, StatEntry, StatKind, Store};

/// Envoy's default histogram bucket bounds (milliseconds or bytes).
pub const DEFAULT_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Joins a configured stat prefix and a name as Envoy does: with a dot between them
/// unless the prefix already ends with one (`tcp.` + `rbac.` and `tcp` + `rbac.` both
/// give `tcp.rbac.`).
pub fn join_prefix(prefix: &str, name: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('.') {
        format!("{prefix}{name}")
    } else {
        format!("{prefix}.{name}")
    }
}
