//! Route `request_mirror_policies` translation: which cluster a sampled share of a
//! route's requests is copied to, and how the copy's host is marked.

use super::common::fraction;
use super::error::{join, ConfigError, Result};
use xds_client::proto::envoy::config::route::v3::route_action::RequestMirrorPolicy;

/// Where mirrored requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorTarget {
    /// A named cluster.
    Named(String),
    /// The cluster a request header names (no mirror without the header).
    Header(http::HeaderName),
}

/// How the mirrored request's host is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShadowHost {
    /// The request's host with `-shadow` appended to its name (Envoy's default).
    Suffixed,
    /// The request's host unchanged (`disable_shadow_host_suffix_append`).
    Unchanged,
    /// This host (`host_rewrite_literal`).
    Literal(String),
}

/// One translated mirror policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorPolicy {
    /// The cluster copies go to.
    pub target: MirrorTarget,
    /// Share of requests mirrored: numerator over denominator (default all).
    pub fraction: (u64, u64),
    /// The copy's host.
    pub host: ShadowHost,
}

/// Translates one `RequestMirrorPolicy` (`path` names it in errors).
pub fn translate(m: &RequestMirrorPolicy, path: &str) -> Result<MirrorPolicy> {
    let target = match (m.cluster.is_empty(), m.cluster_header.is_empty()) {
        (false, true) => MirrorTarget::Named(m.cluster.clone()),
        (true, false) => MirrorTarget::Header(
            http::HeaderName::from_bytes(m.cluster_header.to_ascii_lowercase().as_bytes())
                .map_err(|_| {
                    ConfigError::at(join(path, "cluster_header"), "invalid header name")
                })?,
        ),
        _ => {
            return Err(ConfigError::at(
                path,
                "exactly one of cluster and cluster_header is required",
            ))
        }
    };
    let host = if !m.host_rewrite_literal.is_empty() {
        ShadowHost::Literal(m.host_rewrite_literal.clone())
    } else if m.disable_shadow_host_suffix_append {
        ShadowHost::Unchanged
    } else {
        ShadowHost::Suffixed
    };
    Ok(MirrorPolicy {
        target,
        fraction: m
            .runtime_fraction
            .as_ref()
            .and_then(|r| r.default_value.as_ref())
            .map_or((100, 100), fraction),
        host,
    })
}

/// `host` with `-shadow` appended to its name, before any port (`a.b:80` becomes
/// `a.b-shadow:80`; a bracketed IPv6 literal keeps its brackets).
pub fn shadow_host(host: &str) -> String {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            (name, Some(port))
        }
        _ => (host, None),
    };
    match port {
        Some(port) => format!("{name}-shadow:{port}"),
        None => format!("{name}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_suffix_goes_before_the_port() {
        assert_eq!(shadow_host("reviews"), "reviews-shadow");
        assert_eq!(shadow_host("reviews.ns:9080"), "reviews.ns-shadow:9080");
        assert_eq!(shadow_host("[::1]:80"), "[::1]-shadow:80");
        assert_eq!(shadow_host("::1"), "::1-shadow");
    }

    #[test]
    fn one_target_is_required() {
        let both = RequestMirrorPolicy {
            cluster: "a".into(),
            cluster_header: "x-c".into(),
            ..Default::default()
        };
        assert!(translate(&both, "m").is_err());
        assert!(translate(&RequestMirrorPolicy::default(), "m").is_err());
        let p = translate(
            &RequestMirrorPolicy {
                cluster: "a".into(),
                ..Default::default()
            },
            "m",
        )
        .unwrap();
        assert_eq!((p.fraction, p.host), ((100, 100), ShadowHost::Suffixed));
    }
}
