//! Istio's own extensions, written from the field numbers and behaviour Istio publishes:
//! the workload identity they share ([`workload`]), the HTTP metadata exchange filter
//! ([`peer_metadata`]), the `istio.stats` filter that reports Istio's standard metrics
//! ([`stats`]) with the CEL ([`cel`]) and attributes ([`attributes`]) its dimensions
//! read, the `istio.alpn` filter ([`alpn`]), and the null-VM Wasm forms older istiods
//! sent for the exchange and stats filters ([`null_vm`]).

pub mod alpn;
pub mod attributes;
pub mod cel;
pub mod null_vm;
pub mod peer_metadata;
pub mod stats;
pub mod tcp_exchange;
pub mod workload;

use std::sync::Arc;
use xds_client::proto::google::protobuf as pb;

/// What a cluster's `metadata.filter_metadata.istio` tells Istio's filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterIstioMetadata {
    /// `services[0].host`: the destination service's FQDN.
    pub service_host: Option<String>,
    /// `services[0].name`: its short name.
    pub service_name: Option<String>,
    /// `external`: the cluster leaves the mesh.
    pub external: bool,
    /// `disable_mx`: no metadata exchange with it.
    pub disable_mx: bool,
}

fn string_of(v: &pb::Value) -> Option<String> {
    match &v.kind {
        Some(pb::value::Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn bool_of(s: &pb::Struct, key: &str) -> bool {
    matches!(
        s.fields.get(key).and_then(|v| v.kind.as_ref()),
        Some(pb::value::Kind::BoolValue(true))
    )
}

impl ClusterIstioMetadata {
    /// Reads the `istio` filter metadata of a cluster; `None` when it has none.
    pub fn from_metadata(
        metadata: Option<&xds_client::proto::envoy::config::core::v3::Metadata>,
    ) -> Option<Arc<Self>> {
        let istio = metadata?.filter_metadata.get("istio")?;
        let first_service = match istio.fields.get("services").and_then(|v| v.kind.as_ref()) {
            Some(pb::value::Kind::ListValue(l)) => {
                match l.values.first().and_then(|v| v.kind.as_ref()) {
                    Some(pb::value::Kind::StructValue(s)) => Some(s.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        let field = |k: &str| {
            first_service
                .as_ref()
                .and_then(|s| s.fields.get(k))
                .and_then(string_of)
        };
        Some(Arc::new(ClusterIstioMetadata {
            service_host: field("host"),
            service_name: field("name"),
            external: bool_of(istio, "external"),
            disable_mx: bool_of(istio, "disable_mx"),
        }))
    }
}

/// An endpoint's `metadata.filter_metadata.istio.workload` string, if any.
pub fn endpoint_workload(
    metadata: Option<&xds_client::proto::envoy::config::core::v3::Metadata>,
) -> Option<Arc<str>> {
    let istio = metadata?.filter_metadata.get("istio")?;
    istio
        .fields
        .get("workload")
        .and_then(string_of)
        .map(Arc::from)
}

/// The local node (id and metadata), set once at start-up: Istio's filters announce it,
/// and upstream connections made outside any listener (cluster filters) need it.
static LOCAL_NODE: std::sync::OnceLock<(String, String, pb::Struct)> = std::sync::OnceLock::new();

/// Records the bootstrap's node (the first call wins; a process has one node).
pub fn set_local_node(node: &xds_client::proto::envoy::config::core::v3::Node) {
    let _ = LOCAL_NODE.set((
        node.id.clone(),
        node.cluster.clone(),
        node.metadata.clone().unwrap_or_default(),
    ));
}

/// The node recorded by [`set_local_node`] (empty before it).
pub fn local_node() -> (&'static str, &'static pb::Struct) {
    static EMPTY: std::sync::LazyLock<pb::Struct> = std::sync::LazyLock::new(Default::default);
    match LOCAL_NODE.get() {
        Some((id, _, m)) => (id, m),
        None => ("", &EMPTY),
    }
}

/// The local node's cluster (what tracers report as the service name).
pub fn local_node_cluster() -> &'static str {
    LOCAL_NODE.get().map_or("", |(_, cluster, _)| cluster)
}

/// What Istio's filters learnt about a stream, carried to its completion.
#[derive(Debug, Clone, Default)]
pub struct StreamFacts {
    /// Peers learnt by metadata exchange.
    pub peers: peer_metadata::Peers,
    /// The routed cluster's Istio metadata.
    pub cluster: Option<Arc<ClusterIstioMetadata>>,
    /// The chosen endpoint's `istio.workload` metadata.
    pub upstream_workload: Option<Arc<str>>,
    /// The (peer, local) principals `istio_authn` found on the downstream connection.
    pub principals: Option<Arc<(String, String)>>,
}
