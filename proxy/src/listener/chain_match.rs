//! Filter-chain selection with Envoy's precedence: criteria are applied in order
//! (destination port, destination IP, server name, transport protocol, application
//! protocols, direct source IP, source type, source IP, source port); at each step the
//! chains with the most specific match survive, and a chain that names a value that does
//! not match is out.

use crate::config::listener::{ChainMatch, FilterChain, SourceType};
use std::net::SocketAddr;

/// What is known about a connection when its chain is chosen.
#[derive(Debug, Clone, Default)]
pub struct ConnectionFacts {
    /// Local (or original destination) address.
    pub destination: Option<SocketAddr>,
    /// Source (after PROXY protocol).
    pub source: Option<SocketAddr>,
    /// Socket peer.
    pub direct_source: Option<SocketAddr>,
    /// SNI from the ClientHello.
    pub server_name: Option<String>,
    /// `tls` or `raw_buffer`.
    pub transport_protocol: &'static str,
    /// ALPN (TLS) or the detected plaintext protocol.
    pub application_protocols: Vec<String>,
}

fn cidr_score(ranges: &[crate::config::common::Cidr], ip: Option<std::net::IpAddr>) -> Option<u32> {
    if ranges.is_empty() {
        return Some(0);
    }
    let ip = ip?;
    ranges
        .iter()
        .filter(|c| c.contains(ip))
        .map(|c| u32::from(c.len) + 1)
        .max()
}

fn server_name_score(names: &[String], sni: Option<&str>) -> Option<u32> {
    if names.is_empty() {
        return Some(0);
    }
    let sni = sni?;
    names
        .iter()
        .filter_map(|n| {
            if n == sni {
                Some(10_000 + n.len() as u32)
            } else if let Some(suffix) = n.strip_prefix('*') {
                (sni.ends_with(suffix) && sni.len() > suffix.len())
                    .then_some(suffix.len() as u32 + 1)
            } else {
                None
            }
        })
        .max()
}

type Criterion = fn(&ChainMatch, &ConnectionFacts) -> Option<u32>;

const CRITERIA: [Criterion; 9] = [
    |m, f| match m.destination_port {
        None => Some(0),
        Some(p) => (f.destination.map(|d| d.port()) == Some(p)).then_some(1),
    },
    |m, f| cidr_score(&m.prefix_ranges, f.destination.map(|d| d.ip())),
    |m, f| server_name_score(&m.server_names, f.server_name.as_deref()),
    |m, f| match &m.transport_protocol {
        None => Some(0),
        Some(t) => (t == f.transport_protocol).then_some(1),
    },
    |m, f| {
        if m.application_protocols.is_empty() {
            Some(0)
        } else {
            m.application_protocols
                .iter()
                .any(|a| f.application_protocols.contains(a))
                .then_some(1)
        }
    },
    |m, f| {
        cidr_score(
            &m.direct_source_prefix_ranges,
            f.direct_source.map(|d| d.ip()),
        )
    },
    |m, f| match m.source_type {
        SourceType::Any => Some(0),
        t => {
            let local = match (f.source, f.destination) {
                (Some(s), Some(d)) => s.ip() == d.ip() || s.ip().is_loopback(),
                (Some(s), None) => s.ip().is_loopback(),
                _ => false,
            };
            ((t == SourceType::SameIpOrLoopback) == local).then_some(1)
        }
    },
    |m, f| cidr_score(&m.source_prefix_ranges, f.source.map(|s| s.ip())),
    |m, f| {
        if m.source_ports.is_empty() {
            Some(0)
        } else {
            f.source
                .filter(|s| m.source_ports.contains(&s.port()))
                .map(|_| 1)
        }
    },
];

/// Selects the filter chain for a connection, falling back to the default chain.
pub fn select<'a>(
    chains: &'a [FilterChain],
    default: Option<&'a FilterChain>,
    facts: &ConnectionFacts,
) -> Option<&'a FilterChain> {
    let mut candidates: Vec<&FilterChain> = chains.iter().collect();
    for criterion in CRITERIA {
        let scored: Vec<(u32, &FilterChain)> = candidates
            .iter()
            .filter_map(|c| criterion(&c.matcher, facts).map(|s| (s, *c)))
            .collect();
        let Some(best) = scored.iter().map(|(s, _)| *s).max() else {
            return default;
        };
        candidates = scored
            .into_iter()
            .filter(|(s, _)| *s == best)
            .map(|(_, c)| c)
            .collect();
    }
    candidates.first().copied().or(default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::common::Cidr;
    use crate::config::listener::Terminal;
    use std::sync::Arc;

    fn chain(name: &str, f: impl FnOnce(&mut ChainMatch)) -> FilterChain {
        let mut m = ChainMatch {
            destination_port: None,
            prefix_ranges: vec![],
            server_names: vec![],
            transport_protocol: None,
            application_protocols: vec![],
            direct_source_prefix_ranges: vec![],
            source_type: SourceType::Any,
            source_prefix_ranges: vec![],
            source_ports: vec![],
        };
        f(&mut m);
        let tcp = crate::config::tcp_proxy::TcpProxyConfig {
            stat_prefix: "s".into(),
            clusters: vec![],
            idle_timeout: None,
            max_connect_attempts: 1,
            access_logs: vec![],
        };
        FilterChain {
            name: name.into(),
            matcher: m,
            tls: None,
            network_filters: vec![],
            terminal: Terminal::Tcp(Arc::new(tcp)),
            handshake_timeout: None,
        }
    }

    fn facts(dst: &str, sni: Option<&str>, tp: &'static str) -> ConnectionFacts {
        ConnectionFacts {
            destination: Some(dst.parse().unwrap()),
            source: Some("10.0.0.9:5000".parse().unwrap()),
            direct_source: Some("10.0.0.9:5000".parse().unwrap()),
            server_name: sni.map(str::to_string),
            transport_protocol: tp,
            application_protocols: vec![],
        }
    }

    #[test]
    fn most_specific_wins_in_order() {
        let chains = vec![
            chain("catch-all", |_| {}),
            chain("port", |m| m.destination_port = Some(80)),
            chain("port+tls", |m| {
                m.destination_port = Some(80);
                m.transport_protocol = Some("tls".into());
            }),
            chain("wild", |m| m.server_names = vec!["*.example.com".into()]),
            chain("exact", |m| m.server_names = vec!["api.example.com".into()]),
            chain("net", |m| {
                m.prefix_ranges = vec![Cidr {
                    addr: "10.1.0.0".parse().unwrap(),
                    len: 16,
                }]
            }),
        ];
        let pick = |f: &ConnectionFacts| select(&chains, None, f).map(|c| c.name.clone());
        assert_eq!(
            pick(&facts("10.2.0.1:80", None, "raw_buffer")).as_deref(),
            Some("port")
        );
        assert_eq!(
            pick(&facts("10.2.0.1:80", None, "tls")).as_deref(),
            Some("port+tls")
        );
        assert_eq!(
            pick(&facts("10.2.0.1:81", Some("api.example.com"), "tls")).as_deref(),
            Some("exact")
        );
        assert_eq!(
            pick(&facts("10.2.0.1:81", Some("www.example.com"), "tls")).as_deref(),
            Some("wild")
        );
        assert_eq!(
            pick(&facts("10.1.0.1:81", Some("www.example.com"), "tls")).as_deref(),
            Some("net")
        );
        assert_eq!(
            pick(&facts("10.2.0.1:81", None, "raw_buffer")).as_deref(),
            Some("catch-all")
        );
    }

    #[test]
    fn no_match_uses_default() {
        let chains = vec![chain("port", |m| m.destination_port = Some(80))];
        let default = chain("default", |_| {});
        assert_eq!(
            select(
                &chains,
                Some(&default),
                &facts("1.1.1.1:81", None, "raw_buffer")
            )
            .unwrap()
            .name,
            "default"
        );
        assert!(select(&chains, None, &facts("1.1.1.1:81", None, "raw_buffer")).is_none());
    }
}
