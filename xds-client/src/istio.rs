//! Istio's own filter configs, defined from the field numbers Istio publishes: the
//! `istio.stats` plugin (`stats.PluginConfig`) and the HTTP peer metadata filter
//! (`io.istio.http.peer_metadata.Config`). istiod sends them as `Any` or wrapped in a
//! TypedStruct; the descriptors let both forms be checked and decoded.

use crate::proto::google::protobuf::Duration;
use crate::proto_def::{
    enumeration, field, file, message, message_with_oneof, one_of, repeated, string_map_entry, Kind,
};
use prost_types::FileDescriptorProto;
use std::collections::HashMap;

/// Full name of the `istio.stats` filter's config.
pub const STATS_CONFIG: &str = "stats.PluginConfig";
/// Full name of the peer metadata filter's config.
pub const PEER_METADATA_CONFIG: &str = "io.istio.http.peer_metadata.Config";
/// Full name of the `istio.alpn` filter's config.
pub const ALPN_CONFIG: &str = "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig";

/// Full name of the `istio_authn` network filter's config (an empty message).
pub const AUTHN_CONFIG: &str = "io.istio.network.authn.Config";

/// Full name of the TCP metadata exchange filter's config.
pub const TCP_EXCHANGE_CONFIG: &str = "envoy.tcp.metadataexchange.config.MetadataExchange";

/// The TCP metadata exchange config (downstream network filter and upstream cluster
/// filter alike).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetadataExchange {
    /// The ALPN protocol a connection must have negotiated for the exchange to happen.
    #[prost(string, tag = "1")]
    pub protocol: String,
    /// Fall back to the workload metadata xDS for peers that send nothing.
    #[prost(bool, tag = "2")]
    pub enable_discovery: bool,
    /// Labels beyond Istio's standard ones carried in the peer metadata.
    #[prost(string, repeated, tag = "3")]
    pub additional_labels: Vec<String>,
}

/// `istio.alpn`'s config: the ALPN to offer upstream for each upstream HTTP protocol.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlpnFilterConfig {
    /// The overrides, by upstream protocol.
    #[prost(message, repeated, tag = "1")]
    pub alpn_override: Vec<AlpnOverride>,
}

/// `FilterConfig.AlpnOverride`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlpnOverride {
    /// `Protocol`: 0 HTTP10, 1 HTTP11, 2 HTTP2.
    #[prost(int32, tag = "1")]
    pub upstream_protocol: i32,
    /// The ALPN protocols to offer, in order.
    #[prost(string, repeated, tag = "2")]
    pub alpn_override: Vec<String>,
}

/// `stats.PluginConfig`: how the standard Istio metrics are reported.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginConfig {
    /// Do not use the `host` header as the destination service when the cluster does not
    /// name one.
    #[prost(bool, tag = "6")]
    pub disable_host_header_fallback: bool,
    /// Interval of periodic reports for long-lived streams.
    #[prost(message, optional, tag = "7")]
    pub tcp_reporting_duration: Option<Duration>,
    /// Overrides of the standard metrics' dimensions.
    #[prost(message, repeated, tag = "8")]
    pub metrics: Vec<MetricConfig>,
    /// New metrics.
    #[prost(message, repeated, tag = "9")]
    pub definitions: Vec<MetricDefinition>,
    /// `Reporter`: 0 UNSPECIFIED (from the listener direction), 1 SERVER_GATEWAY.
    #[prost(int32, tag = "10")]
    pub reporter: i32,
    /// How often the stat scope is rotated.
    #[prost(message, optional, tag = "11")]
    pub rescoping_duration: Option<Duration>,
    /// How long a rotated scope lingers.
    #[prost(message, optional, tag = "12")]
    pub scope_grace_period_duration: Option<Duration>,
}

/// `stats.MetricConfig`: one override.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricConfig {
    /// Dimension name to value expression.
    #[prost(map = "string, string", tag = "1")]
    pub dimensions: HashMap<String, String>,
    /// The metric it applies to (without `istio_`); empty: all.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Dimensions to drop.
    #[prost(string, repeated, tag = "3")]
    pub tags_to_remove: Vec<String>,
    /// Condition (Istio does not implement it).
    #[prost(string, tag = "4")]
    pub r#match: String,
    /// Do not report the metric at all.
    #[prost(bool, tag = "5")]
    pub drop: bool,
}

/// `stats.MetricDefinition`: a new metric.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricDefinition {
    /// Name (without `istio_`).
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value expression.
    #[prost(string, tag = "2")]
    pub value: String,
    /// `MetricType`: COUNTER, GAUGE, HISTOGRAM.
    #[prost(int32, tag = "3")]
    pub r#type: i32,
}

/// An empty method marker (`Baggage`, `WorkloadDiscovery`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Marker {}

/// `Config.IstioHeaders`: the `x-envoy-peer-metadata` headers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioHeaders {
    /// Do not send the headers to clusters marked external (or PassthroughCluster).
    #[prost(bool, tag = "1")]
    pub skip_external_clusters: bool,
}

/// How a peer is discovered (`Config.DiscoveryMethod`).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Discovery {
    /// Deprecated `baggage` header.
    #[prost(message, tag = "1")]
    Baggage(Marker),
    /// The workload metadata xDS of the `istio.workload` bootstrap extension.
    #[prost(message, tag = "2")]
    WorkloadDiscovery(Marker),
    /// The metadata exchange headers.
    #[prost(message, tag = "3")]
    IstioHeaders(IstioHeaders),
}

/// `Config.DiscoveryMethod`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DiscoveryMethod {
    /// The method.
    #[prost(oneof = "Discovery", tags = "1, 2, 3")]
    pub method: Option<Discovery>,
}

/// How the local workload is announced (`Config.PropagationMethod`).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Propagation {
    /// The metadata exchange headers.
    #[prost(message, tag = "1")]
    IstioHeaders(IstioHeaders),
}

/// `Config.PropagationMethod`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropagationMethod {
    /// The method.
    #[prost(oneof = "Propagation", tags = "1")]
    pub method: Option<Propagation>,
}

/// `io.istio.http.peer_metadata.Config`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerMetadataConfig {
    /// Methods to learn the downstream peer, first success wins.
    #[prost(message, repeated, tag = "1")]
    pub downstream_discovery: Vec<DiscoveryMethod>,
    /// Methods to learn the upstream peer, first success wins.
    #[prost(message, repeated, tag = "2")]
    pub upstream_discovery: Vec<DiscoveryMethod>,
    /// How the local workload is announced in responses.
    #[prost(message, repeated, tag = "3")]
    pub downstream_propagation: Vec<PropagationMethod>,
    /// How the local workload is announced in requests.
    #[prost(message, repeated, tag = "4")]
    pub upstream_propagation: Vec<PropagationMethod>,
    /// Share the discovered peer with upstream filter state.
    #[prost(bool, tag = "5")]
    pub shared_with_upstream: bool,
    /// Labels beyond Istio's standard ones carried in the peer metadata.
    #[prost(string, repeated, tag = "6")]
    pub additional_labels: Vec<String>,
}

fn stats_file() -> FileDescriptorProto {
    let duration = Kind::Message(".google.protobuf.Duration");
    file(
        "stats/config.proto",
        "stats",
        &["google/protobuf/duration.proto"],
        vec![
            message(
                "MetricConfig",
                vec![
                    repeated(
                        "dimensions",
                        1,
                        Kind::Message(".stats.MetricConfig.DimensionsEntry"),
                    ),
                    field("name", 2, Kind::String),
                    repeated("tags_to_remove", 3, Kind::String),
                    field("match", 4, Kind::String),
                    field("drop", 5, Kind::Bool),
                ],
                vec![string_map_entry("DimensionsEntry")],
            ),
            message(
                "MetricDefinition",
                vec![
                    field("name", 1, Kind::String),
                    field("value", 2, Kind::String),
                    field("type", 3, Kind::Enum(".stats.MetricType")),
                ],
                vec![],
            ),
            message(
                "PluginConfig",
                vec![
                    field("disable_host_header_fallback", 6, Kind::Bool),
                    field("tcp_reporting_duration", 7, duration),
                    repeated("metrics", 8, Kind::Message(".stats.MetricConfig")),
                    repeated("definitions", 9, Kind::Message(".stats.MetricDefinition")),
                    field("reporter", 10, Kind::Enum(".stats.Reporter")),
                    field("rescoping_duration", 11, duration),
                    field("scope_grace_period_duration", 12, duration),
                ],
                vec![],
            ),
        ],
        vec![
            enumeration("MetricType", &["COUNTER", "GAUGE", "HISTOGRAM"]),
            enumeration("Reporter", &["UNSPECIFIED", "SERVER_GATEWAY"]),
        ],
    )
}

fn peer_metadata_file() -> FileDescriptorProto {
    const P: &str = ".io.istio.http.peer_metadata.Config.";
    let nested = |n: &str| format!("{P}{n}");
    let (headers, marker_b, marker_w) = (
        nested("IstioHeaders"),
        nested("Baggage"),
        nested("WorkloadDiscovery"),
    );
    let (discovery, propagation) = (nested("DiscoveryMethod"), nested("PropagationMethod"));
    let config = message(
        "Config",
        vec![
            repeated("downstream_discovery", 1, Kind::Message(&discovery)),
            repeated("upstream_discovery", 2, Kind::Message(&discovery)),
            repeated("downstream_propagation", 3, Kind::Message(&propagation)),
            repeated("upstream_propagation", 4, Kind::Message(&propagation)),
            field("shared_with_upstream", 5, Kind::Bool),
            repeated("additional_labels", 6, Kind::String),
        ],
        vec![
            message("Baggage", vec![], vec![]),
            message("WorkloadDiscovery", vec![], vec![]),
            message(
                "IstioHeaders",
                vec![field("skip_external_clusters", 1, Kind::Bool)],
                vec![],
            ),
            message_with_oneof(
                "DiscoveryMethod",
                vec![
                    one_of("baggage", 1, Kind::Message(&marker_b), 0),
                    one_of("workload_discovery", 2, Kind::Message(&marker_w), 0),
                    one_of("istio_headers", 3, Kind::Message(&headers), 0),
                ],
                &["method_specifier"],
            ),
            message_with_oneof(
                "PropagationMethod",
                vec![one_of("istio_headers", 1, Kind::Message(&headers), 0)],
                &["method_specifier"],
            ),
        ],
    );
    file(
        "source/extensions/filters/http/peer_metadata/config.proto",
        "io.istio.http.peer_metadata",
        &[],
        vec![config],
        vec![],
    )
}

fn alpn_file() -> FileDescriptorProto {
    const CONFIG: &str = ".istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig";
    let overrides = format!("{CONFIG}.AlpnOverride");
    let protocol = format!("{CONFIG}.Protocol");
    let config = prost_types::DescriptorProto {
        enum_type: vec![enumeration("Protocol", &["HTTP10", "HTTP11", "HTTP2"])],
        ..message(
            "FilterConfig",
            vec![repeated("alpn_override", 1, Kind::Message(&overrides))],
            vec![message(
                "AlpnOverride",
                vec![
                    field("upstream_protocol", 1, Kind::Enum(&protocol)),
                    repeated("alpn_override", 2, Kind::String),
                ],
                vec![],
            )],
        )
    };
    file(
        "envoy/config/filter/http/alpn/v2alpha1/config.proto",
        "istio.envoy.config.filter.http.alpn.v2alpha1",
        &[],
        vec![config],
        vec![],
    )
}

fn tcp_exchange_file() -> FileDescriptorProto {
    file(
        "envoy/tcp/metadataexchange/config/metadata_exchange.proto",
        "envoy.tcp.metadataexchange.config",
        &[],
        vec![message(
            "MetadataExchange",
            vec![
                field("protocol", 1, Kind::String),
                field("enable_discovery", 2, Kind::Bool),
                repeated("additional_labels", 3, Kind::String),
            ],
            vec![],
        )],
        vec![],
    )
}

fn authn_file() -> FileDescriptorProto {
    file(
        "source/extensions/filters/network/istio_authn/config.proto",
        "io.istio.network.authn",
        &[],
        vec![message("Config", vec![], vec![])],
        vec![],
    )
}

/// The Istio files to add to the descriptor pool.
pub fn files() -> Vec<FileDescriptorProto> {
    vec![
        stats_file(),
        peer_metadata_file(),
        alpn_file(),
        tcp_exchange_file(),
        authn_file(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_and_structs_agree_through_json() {
        let json = serde_json::json!({
            "disable_host_header_fallback": true,
            "reporter": "SERVER_GATEWAY",
            "metrics": [{"name": "requests_total", "dimensions": {"a": "'b'"}, "tags_to_remove": ["reporter"]}]
        });
        let c: PluginConfig = crate::json::decode(json, STATS_CONFIG, false).unwrap();
        assert!(c.disable_host_header_fallback);
        assert_eq!(c.reporter, 1);
        assert_eq!(c.metrics[0].dimensions["a"], "'b'");
        assert_eq!(c.metrics[0].tags_to_remove, vec!["reporter"]);
        let json = serde_json::json!({
            "upstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
            "upstream_propagation": [{"istio_headers": {"skip_external_clusters": true}}]
        });
        let c: PeerMetadataConfig = crate::json::decode(json, PEER_METADATA_CONFIG, false).unwrap();
        let alpn = serde_json::json!({"alpn_override": [
            {"alpn_override": ["istio-http/1.0", "istio"]},
            {"upstream_protocol": "HTTP2", "alpn_override": ["istio-h2"]}]});
        let a: AlpnFilterConfig = crate::json::decode(alpn, ALPN_CONFIG, false).unwrap();
        assert_eq!(a.alpn_override[1].upstream_protocol, 2);
        assert_eq!(
            a.alpn_override[0].alpn_override,
            vec!["istio-http/1.0", "istio"]
        );
        assert_eq!(
            c.upstream_discovery[1].method,
            Some(Discovery::WorkloadDiscovery(Marker {}))
        );
        assert_eq!(
            c.upstream_propagation[0].method,
            Some(Propagation::IstioHeaders(IstioHeaders {
                skip_external_clusters: true
            }))
        );
    }
}
