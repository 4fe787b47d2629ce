//! The `istio.alpn` HTTP filter (`istio.envoy.config.filter.http.alpn.v2alpha1`): the
//! ALPN a sidecar offers upstream follows the HTTP protocol it will speak there
//! (`istio-http/1.0`, `istio-http/1.1`, `istio-h2`), so the peer sidecar's inbound
//! listener picks its HTTP filter chain by `application_protocols` instead of the TCP
//! one.

use crate::config::cluster::UpstreamProtocol;
use crate::config::error::{item, join, ConfigError, Result};
use http::Version;
use prost::Message;
use std::sync::Arc;
use xds_client::istio as proto;

/// The filter's protobuf type name.
pub const TYPE_NAME: &str = proto::ALPN_CONFIG;

/// An ALPN list to offer, shared by every request that uses it (its identity keys the
/// connection pools, so connections offering different lists are never mixed).
pub type Alpn = Arc<Vec<Vec<u8>>>;

/// A translated `istio.alpn` config: the list for HTTP/1.0, HTTP/1.1 and HTTP/2.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlpnConfig {
    by_protocol: [Option<Alpn>; 3],
}

/// Translates the filter's config; the first entry for a protocol wins, as in Istio,
/// and an empty list overrides nothing.
pub fn translate(bytes: &[u8], path: &str) -> Result<AlpnConfig> {
    let c =
        proto::AlpnFilterConfig::decode(bytes).map_err(|e| ConfigError::at(path, e.to_string()))?;
    let mut out = AlpnConfig::default();
    for (i, o) in c.alpn_override.iter().enumerate() {
        let slot = out
            .by_protocol
            .get_mut(o.upstream_protocol as usize)
            .filter(|_| o.upstream_protocol >= 0)
            .ok_or_else(|| {
                ConfigError::at(
                    join(&item(path, "alpn_override", i), "upstream_protocol"),
                    format!("unknown protocol {}", o.upstream_protocol),
                )
            })?;
        if slot.is_none() && !o.alpn_override.is_empty() {
            *slot = Some(Arc::new(
                o.alpn_override
                    .iter()
                    .map(|a| a.as_bytes().to_vec())
                    .collect(),
            ));
        }
    }
    Ok(out)
}

impl AlpnConfig {
    /// The list for a request to a cluster speaking `protocol`, arriving as `downstream`:
    /// Envoy's first upstream protocol choice (HTTP/2 for ALPN-negotiated clusters, the
    /// downstream's own for `use_downstream_protocol_config`).
    pub fn for_request(&self, protocol: UpstreamProtocol, downstream: Version) -> Option<Alpn> {
        let idx = match protocol {
            UpstreamProtocol::Http1 => 1,
            UpstreamProtocol::Http2 | UpstreamProtocol::Auto => 2,
            UpstreamProtocol::UseDownstream => match downstream {
                Version::HTTP_2 => 2,
                Version::HTTP_10 => 0,
                _ => 1,
            },
        };
        self.by_protocol[idx].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Result<AlpnConfig> {
        let c: proto::AlpnFilterConfig = xds_client::json::decode(json, TYPE_NAME, false).unwrap();
        translate(&c.encode_to_vec(), "alpn")
    }

    #[test]
    fn lists_follow_the_upstream_protocol() {
        let c = config(serde_json::json!({"alpn_override": [
            {"alpn_override": ["istio-http/1.0", "istio", "http/1.0"]},
            {"upstream_protocol": "HTTP11", "alpn_override": ["istio-http/1.1", "istio", "http/1.1"]},
            {"upstream_protocol": "HTTP11", "alpn_override": ["ignored"]},
            {"upstream_protocol": "HTTP2", "alpn_override": ["istio-h2", "istio", "h2"]}]}))
        .unwrap();
        let first = |p, v| c.for_request(p, v).map(|a| a[0].clone());
        assert_eq!(
            first(UpstreamProtocol::Http1, Version::HTTP_2),
            Some(b"istio-http/1.1".to_vec())
        );
        assert_eq!(
            first(UpstreamProtocol::Auto, Version::HTTP_11),
            Some(b"istio-h2".to_vec())
        );
        assert_eq!(
            first(UpstreamProtocol::UseDownstream, Version::HTTP_10),
            Some(b"istio-http/1.0".to_vec())
        );
        assert_eq!(
            config(serde_json::json!({}))
                .unwrap()
                .for_request(UpstreamProtocol::Http1, Version::HTTP_11),
            None
        );
    }
}
