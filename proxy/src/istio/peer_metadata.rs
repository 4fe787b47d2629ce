//! Istio's HTTP metadata exchange (`io.istio.http.peer_metadata.Config`): each sidecar
//! announces its workload in `x-envoy-peer-metadata` / `x-envoy-peer-metadata-id`
//! request headers (upstream propagation) and, to a peer that announced itself, in
//! response headers (downstream propagation); the receiving side turns the headers into
//! the downstream or upstream peer the telemetry filters label metrics with, and removes
//! them so the application never sees them.

use super::workload::Workload;
use super::ClusterIstioMetadata;
use crate::config::error::{join, ConfigError, Result};
use http::{HeaderMap, HeaderValue};
use prost::Message;
use std::sync::Arc;
use xds_client::istio as proto;

/// The filter's protobuf type name.
pub const TYPE_NAME: &str = proto::PEER_METADATA_CONFIG;
/// The header carrying the peer's workload.
pub const METADATA_HEADER: &str = "x-envoy-peer-metadata";
/// The header carrying the peer's node id.
pub const ID_HEADER: &str = "x-envoy-peer-metadata-id";

/// A way of learning the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// The metadata exchange headers.
    Headers,
    /// The workload metadata xDS of the `istio.workload` bootstrap extension. That
    /// extension is not supported (the bootstrap rejects it), so, as in Envoy without
    /// it, this method finds nothing and the next one is tried.
    WorkloadXds,
}

/// A translated `io.istio.http.peer_metadata.Config`.
#[derive(Debug, Clone, Default)]
pub struct PeerMetadataConfig {
    /// How the downstream peer is learnt, in order.
    pub downstream_discovery: Vec<Discovery>,
    /// How the upstream peer is learnt, in order.
    pub upstream_discovery: Vec<Discovery>,
    /// Announce the local workload in responses (each entry: `skip_external_clusters`).
    pub downstream_propagation: Vec<bool>,
    /// Announce the local workload in requests (each entry: `skip_external_clusters`).
    pub upstream_propagation: Vec<bool>,
    /// Extra labels carried in announced and learnt workloads.
    pub additional_labels: Vec<String>,
    /// Istio's older form (the null-VM `envoy.wasm.metadata_exchange` plugin): learn
    /// both peers, announce upstream unless the listener is INBOUND and downstream
    /// unless it is OUTBOUND; see [`PeerMetadataConfig::for_direction`].
    pub by_direction: bool,
}

impl PeerMetadataConfig {
    /// Istio's older form (the null-VM `envoy.wasm.metadata_exchange` plugin, see
    /// [`super::null_vm`]), which takes its behaviour from the listener's direction.
    pub fn by_direction() -> Self {
        PeerMetadataConfig {
            by_direction: true,
            ..Default::default()
        }
    }

    /// The concrete config on a listener of the given direction (the older form
    /// depends on it; the newer one does not).
    pub fn for_direction(self: &Arc<Self>, inbound: bool, outbound: bool) -> Arc<Self> {
        if !self.by_direction {
            return self.clone();
        }
        Arc::new(PeerMetadataConfig {
            downstream_discovery: vec![Discovery::Headers],
            upstream_discovery: vec![Discovery::Headers],
            downstream_propagation: if outbound { vec![] } else { vec![false] },
            upstream_propagation: if inbound { vec![] } else { vec![false] },
            additional_labels: self.additional_labels.clone(),
            by_direction: false,
        })
    }
}

fn discovery(list: &[proto::DiscoveryMethod], path: &str) -> Result<Vec<Discovery>> {
    list.iter()
        .enumerate()
        .map(|(i, m)| match &m.method {
            Some(proto::Discovery::IstioHeaders(_)) => Ok(Discovery::Headers),
            Some(proto::Discovery::WorkloadDiscovery(_)) => Ok(Discovery::WorkloadXds),
            Some(proto::Discovery::Baggage(_)) => Err(ConfigError::at(
                format!("{path}[{i}].baggage"),
                "the deprecated baggage discovery is not supported",
            )),
            None => Err(ConfigError::at(
                format!("{path}[{i}]"),
                "a discovery method is required",
            )),
        })
        .collect()
}

fn propagation(list: &[proto::PropagationMethod], path: &str) -> Result<Vec<bool>> {
    list.iter()
        .enumerate()
        .map(|(i, m)| match &m.method {
            Some(proto::Propagation::IstioHeaders(h)) => Ok(h.skip_external_clusters),
            None => Err(ConfigError::at(
                format!("{path}[{i}]"),
                "a propagation method is required",
            )),
        })
        .collect()
}

/// Translates the filter's config.
pub fn translate(bytes: &[u8], path: &str) -> Result<PeerMetadataConfig> {
    let c = proto::PeerMetadataConfig::decode(bytes)
        .map_err(|e| ConfigError::at(path, e.to_string()))?;
    Ok(PeerMetadataConfig {
        downstream_discovery: discovery(
            &c.downstream_discovery,
            &join(path, "downstream_discovery"),
        )?,
        upstream_discovery: discovery(&c.upstream_discovery, &join(path, "upstream_discovery"))?,
        downstream_propagation: propagation(
            &c.downstream_propagation,
            &join(path, "downstream_propagation"),
        )?,
        upstream_propagation: propagation(
            &c.upstream_propagation,
            &join(path, "upstream_propagation"),
        )?,
        additional_labels: c.additional_labels,
        by_direction: false,
    })
}

/// The peers a stream learnt (Envoy's `downstream_peer` / `upstream_peer` filter state):
/// the first discovery to succeed sets each.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    /// Who sent the request.
    pub downstream: Option<Arc<Workload>>,
    /// Who answered it.
    pub upstream: Option<Arc<Workload>>,
    /// The request carried `x-envoy-peer-metadata-id` (downstream propagation answers
    /// only such a peer).
    request_had_id: bool,
    /// The request carried `x-envoy-peer-metadata`.
    request_had_metadata: bool,
}

/// The filter, ready to serve: its config and the local workload's announcement.
#[derive(Debug)]
pub struct PeerMetadata {
    config: Arc<PeerMetadataConfig>,
    id: HeaderValue,
    value: HeaderValue,
}

impl PeerMetadata {
    /// Precomputes the announcement of the local node (`id`, node `metadata`).
    pub fn new(
        config: Arc<PeerMetadataConfig>,
        id: &str,
        metadata: &xds_client::proto::google::protobuf::Struct,
    ) -> Self {
        let local = Workload::from_node(metadata, &config.additional_labels);
        PeerMetadata {
            id: HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("")),
            value: HeaderValue::from_str(&local.header_value())
                .unwrap_or(HeaderValue::from_static("")),
            config,
        }
    }

    /// Learns a peer from `headers` by the first method that finds one, then removes the
    /// exchange headers whatever was found.
    fn discover(&self, methods: &[Discovery], headers: &mut HeaderMap) -> Option<Arc<Workload>> {
        let found = methods.iter().find_map(|m| match m {
            Discovery::Headers => headers
                .get(METADATA_HEADER)
                .filter(|v| !v.is_empty())
                .and_then(|v| Workload::from_header(v.as_bytes(), &self.config.additional_labels)),
            Discovery::WorkloadXds => None,
        });
        if methods.contains(&Discovery::Headers) {
            headers.remove(METADATA_HEADER);
            headers.remove(ID_HEADER);
        }
        found.map(Arc::new)
    }

    /// Whether an announcement is withheld from `cluster`: it disables metadata
    /// exchange, or (with `skip_external_clusters`) it is PassthroughCluster or marked
    /// external.
    fn withheld(
        skip_external: bool,
        cluster: Option<(&str, Option<&ClusterIstioMetadata>)>,
    ) -> bool {
        let Some((name, meta)) = cluster else {
            return false;
        };
        (skip_external && name == "PassthroughCluster")
            || meta.is_some_and(|m| m.disable_mx || (skip_external && m.external))
    }

    /// The request side: learn the downstream peer, announce the local workload
    /// upstream. `cluster` is the routed cluster's name and Istio metadata.
    pub fn on_request(
        &self,
        headers: &mut HeaderMap,
        cluster: Option<(&str, Option<&ClusterIstioMetadata>)>,
        peers: &mut Peers,
    ) {
        let c = &self.config;
        if c.downstream_discovery.contains(&Discovery::Headers) {
            peers.request_had_id |= headers.contains_key(ID_HEADER);
            peers.request_had_metadata |= headers.contains_key(METADATA_HEADER);
        }
        let found = self.discover(&c.downstream_discovery, headers);
        peers.downstream = peers.downstream.take().or(found);
        for skip in &c.upstream_propagation {
            if !Self::withheld(*skip, cluster) {
                headers.insert(ID_HEADER, self.id.clone());
                headers.insert(METADATA_HEADER, self.value.clone());
            }
        }
    }

    /// The response side: learn the upstream peer, and answer a downstream peer that
    /// announced itself.
    pub fn on_response(
        &self,
        headers: &mut HeaderMap,
        cluster: Option<(&str, Option<&ClusterIstioMetadata>)>,
        peers: &mut Peers,
    ) {
        let c = &self.config;
        let found = self.discover(&c.upstream_discovery, headers);
        peers.upstream = peers.upstream.take().or(found);
        for skip in &c.downstream_propagation {
            if Self::withheld(*skip, cluster) {
                continue;
            }
            if peers.request_had_id {
                headers.insert(ID_HEADER, self.id.clone());
            }
            if peers.request_had_metadata {
                headers.insert(METADATA_HEADER, self.value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> xds_client::proto::google::protobuf::Struct {
        let json = serde_json::json!({"NAMESPACE": "default", "WORKLOAD_NAME": "productpage-v1",
            "LABELS": {"app": "productpage"}});
        xds_client::json::decode(json, "google.protobuf.Struct", false).unwrap()
    }

    fn filter(c: PeerMetadataConfig) -> PeerMetadata {
        PeerMetadata::new(Arc::new(c), "sidecar~1", &node())
    }

    #[test]
    fn outbound_announces_and_learns_the_upstream() {
        let client = filter(PeerMetadataConfig {
            upstream_discovery: vec![Discovery::Headers, Discovery::WorkloadXds],
            upstream_propagation: vec![false],
            ..Default::default()
        });
        let server = filter(PeerMetadataConfig {
            downstream_discovery: vec![Discovery::Headers],
            downstream_propagation: vec![false],
            ..Default::default()
        });
        let (mut client_peers, mut server_peers) = (Peers::default(), Peers::default());
        let mut req = HeaderMap::new();
        client.on_request(&mut req, Some(("outbound", None)), &mut client_peers);
        assert_eq!(req[ID_HEADER], "sidecar~1");
        server.on_request(&mut req, None, &mut server_peers);
        assert!(req.get(METADATA_HEADER).is_none(), "removed before the app");
        let peer = server_peers.downstream.clone().expect("learnt");
        assert_eq!(
            (peer.workload.as_str(), peer.app.as_str()),
            ("productpage-v1", "productpage")
        );
        let mut resp = HeaderMap::new();
        server.on_response(&mut resp, None, &mut server_peers);
        assert!(
            resp.contains_key(METADATA_HEADER),
            "answered an announced peer"
        );
        client.on_response(&mut resp, None, &mut client_peers);
        assert!(resp.get(METADATA_HEADER).is_none());
        assert_eq!(client_peers.upstream.unwrap().namespace, "default");
    }

    #[test]
    fn silent_peers_get_no_answer_and_external_clusters_no_announcement() {
        let c = filter(PeerMetadataConfig {
            downstream_discovery: vec![Discovery::Headers],
            downstream_propagation: vec![false],
            upstream_propagation: vec![true],
            ..Default::default()
        });
        let mut peers = Peers::default();
        let mut req = HeaderMap::new();
        let external = ClusterIstioMetadata {
            external: true,
            ..Default::default()
        };
        c.on_request(&mut req, Some(("egress", Some(&external))), &mut peers);
        assert!(req.is_empty(), "external cluster: nothing announced");
        c.on_request(&mut req, Some(("PassthroughCluster", None)), &mut peers);
        assert!(req.is_empty());
        let mut resp = HeaderMap::new();
        c.on_response(&mut resp, None, &mut peers);
        assert!(resp.is_empty(), "the client announced nothing");
        assert!(peers.downstream.is_none());
    }

    #[test]
    fn the_older_form_follows_the_listener_direction() {
        let legacy = Arc::new(PeerMetadataConfig::by_direction());
        let inbound = legacy.for_direction(true, false);
        assert!(
            inbound.upstream_propagation.is_empty() && !inbound.downstream_propagation.is_empty()
        );
        let outbound = legacy.for_direction(false, true);
        assert!(
            !outbound.upstream_propagation.is_empty() && outbound.downstream_propagation.is_empty()
        );
    }

    #[test]
    fn baggage_is_rejected_with_its_path() {
        let c = proto::PeerMetadataConfig {
            upstream_discovery: vec![proto::DiscoveryMethod {
                method: Some(proto::Discovery::Baggage(proto::Marker {})),
            }],
            ..Default::default()
        };
        let e = translate(&c.encode_to_vec(), "f").unwrap_err();
        assert!(
            e.to_string().contains("f.upstream_discovery[0].baggage"),
            "{e}"
        );
    }
}
