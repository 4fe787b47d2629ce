//! Loading and translating the v3 bootstrap: file and `--config-yaml` merged, decoded with
//! the proto3 JSON mapping, checked against the support table, then translated and
//! cross-checked (unique names, route and config-source cluster references).

use super::check::{self, NoEffect};
use super::cluster::{self, ClusterConfig, Discovery};
use super::common::{self, Address};
use super::error::{join, ConfigError, Result};
use super::listener::{self, ListenerConfig, Terminal};
use super::route;
use super::secrets::Secrets;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use xds_client::proto::envoy::config::bootstrap::v3 as proto;
use xds_client::proto::envoy::config::core::v3 as core;

/// The bootstrap's protobuf name.
pub const BOOTSTRAP: &str = "envoy.config.bootstrap.v3.Bootstrap";

/// Node identity (from the bootstrap, overridden by `--service-*` flags).
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// `node.id` / `--service-node`.
    pub id: String,
    /// `node.cluster` / `--service-cluster`.
    pub cluster: String,
    /// `node.locality.zone` / `--service-zone`.
    pub zone: String,
}

/// The `dynamic_resources` section: the ADS stream and what it subscribes.
#[derive(Debug, Clone)]
pub struct DynamicConfig {
    /// The ADS stream (`ads_config`).
    pub ads: Option<AdsConfig>,
    /// LDS subscribed (`lds_config`).
    pub lds: Option<Subscription>,
    /// CDS subscribed (`cds_config`).
    pub cds: Option<Subscription>,
}

/// A wildcard subscription of the bootstrap (CDS or LDS).
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Where the resources come from.
    pub source: super::source::XdsSource,
    /// `initial_fetch_timeout`: `None` waits for the first answer forever (`0s`); Envoy's
    /// default is 15 s.
    pub initial_fetch_timeout: Option<std::time::Duration>,
}

/// `dynamic_resources.ads_config`.
#[derive(Debug, Clone)]
pub struct AdsConfig {
    /// How to reach the management server: a static cluster (`envoy_grpc`) or a
    /// `google_grpc` target; it says Delta or state-of-the-world too.
    pub source: super::source::XdsSource,
    /// `set_node_on_first_message_only`.
    pub node_on_first_message_only: bool,
    /// Largest response accepted (`envoy_grpc.max_receive_message_length`, else 100 MiB).
    pub max_message_bytes: usize,
}

/// A fully translated bootstrap.
#[derive(Debug)]
pub struct Bootstrap {
    /// Node identity.
    pub node: NodeInfo,
    /// The node as sent to management servers (the bootstrap's, with the CLI overrides).
    pub node_proto: core::Node,
    /// Admin listener address.
    pub admin: Option<Address>,
    /// Static listeners.
    pub listeners: Vec<Arc<ListenerConfig>>,
    /// Static clusters.
    pub clusters: Vec<Arc<ClusterConfig>>,
    /// Dynamic resources, when configured.
    pub dynamic: Option<DynamicConfig>,
    /// Global downstream connection limit (overload manager).
    pub max_downstream_connections: Option<u64>,
    /// `application_log_config.log_format.text_format`.
    pub log_format: Option<String>,
    /// Fields accepted without effect.
    pub no_effect: Vec<NoEffect>,
    /// The bootstrap's source, for `/config_dump`.
    pub dump: DumpSource,
    /// Static secrets, which dynamic clusters and listeners may reference too.
    pub secrets: Secrets,
    /// `cluster_manager.local_cluster_name`: the cluster of this proxy's own service,
    /// whose spread across zones steers zone-aware routing.
    pub local_cluster: Option<String>,
    /// `tracing.http`: the tracer connection managers without their own provider use.
    pub tracer: crate::trace::BootstrapTracer,
    /// `stats_config`: stat tags, matcher and histogram buckets for the stat store.
    pub stats_naming: Arc<crate::stats::naming::Naming>,
}

/// Where the bootstrap comes from.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// `-c/--config-path` text, with its path for messages.
    pub file: Option<(String, String)>,
    /// `--config-yaml` text.
    pub yaml: Option<String>,
    /// `--allow-unknown-static-fields`.
    pub allow_unknown_fields: bool,
    /// `--service-node`, `--service-cluster`, `--service-zone`.
    pub node_overrides: NodeInfo,
}

/// Parses, merges, decodes, checks and translates a bootstrap.
pub fn load(source: &Source) -> Result<Bootstrap> {
    // Check the support table on the encoded message (as for an xDS resource), then decode it.
    let bytes = encode(source)?;
    let mut no_effect = Vec::new();
    check::check_encoded(BOOTSTRAP, &bytes, "", &mut no_effect)?;
    let proto: proto::Bootstrap = xds_client::json::decode_bytes(&bytes, BOOTSTRAP)?;
    let dump = DumpSource::new(&bytes);
    drop(bytes);
    translate(proto, &source.node_overrides, dump, no_effect)
}

/// The bootstrap's protobuf encoding: a lone JSON file straight from its text; YAML, an
/// overlay, or anything the direct transcoder leaves, through a parsed (and merged) tree.
fn encode(source: &Source) -> Result<Vec<u8>> {
    if let (Some((_, text)), None) = (&source.file, &source.yaml) {
        if let Some(bytes) =
            xds_client::json::text_to_bytes(text, BOOTSTRAP, source.allow_unknown_fields)
        {
            return Ok(bytes);
        }
    }
    let mut doc = serde_json::Value::Object(Default::default());
    if let Some((path, text)) = &source.file {
        doc = xds_client::json::parse_document(text)
            .map_err(|e| ConfigError::at("", format!("{path}: {e}")))?;
    }
    if let Some(yaml) = &source.yaml {
        let overlay = xds_client::json::parse_document(yaml)
            .map_err(|e| ConfigError::at("", format!("--config-yaml: {e}")))?;
        xds_client::json::merge(&mut doc, overlay);
    }
    if source.file.is_none() && source.yaml.is_none() {
        return Err(ConfigError::at(
            "",
            "no configuration: give -c/--config-path or --config-yaml",
        ));
    }
    Ok(xds_client::json::to_bytes(
        doc,
        BOOTSTRAP,
        source.allow_unknown_fields,
    )?)
}

/// What `/config_dump` shows of the bootstrap. The decoded proto of a large bootstrap is
/// many times the size of its encoding, so the encoded bootstrap is kept, compressed, and
/// decoded again on the rare dump request.
#[derive(Debug, Clone)]
pub struct DumpSource {
    /// The bootstrap's protobuf encoding, deflate-compressed.
    deflated: Vec<u8>,
}

impl DumpSource {
    /// Keeps the encoded bootstrap for later dumps.
    pub fn new(encoded: &[u8]) -> Self {
        use std::io::Write;
        // One large write: the encoder re-initialises its tables per call.
        let mut enc = flate2::write::DeflateEncoder::new(
            Vec::with_capacity(encoded.len() / 4),
            flate2::Compression::fast(),
        );
        let _ = enc.write_all(encoded);
        DumpSource {
            deflated: enc.finish().unwrap_or_default(),
        }
    }

    /// The bootstrap as loaded.
    pub fn decode(&self) -> Result<proto::Bootstrap> {
        use std::io::Read;
        let mut encoded = Vec::with_capacity(self.deflated.len() * 4);
        flate2::read::DeflateDecoder::new(self.deflated.as_slice())
            .read_to_end(&mut encoded)
            .map_err(|e| ConfigError::at("", e.to_string()))?;
        Ok(xds_client::json::decode_bytes(&encoded, BOOTSTRAP)?)
    }
}

/// Translates a bootstrap already checked against the support table; `dump` is what
/// `/config_dump` will show, `no_effect` what the check accepted without effect.
fn translate(
    mut b: proto::Bootstrap,
    overrides: &NodeInfo,
    dump: DumpSource,
    no_effect: Vec<NoEffect>,
) -> Result<Bootstrap> {
    let statics = b.static_resources.take().unwrap_or_default();
    let secrets = Secrets::new(&statics.secrets, "static_resources.secrets")?;
    let clusters = statics
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cluster::translate(c, &secrets, &format!("static_resources.clusters[{i}]"))
                .map(Arc::new)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut names = HashSet::new();
    for (i, c) in clusters.iter().enumerate() {
        if !names.insert(c.name.as_str()) {
            return Err(ConfigError::at(
                format!("static_resources.clusters[{i}].name"),
                format!("cluster manager: duplicate cluster '{}' found", c.name),
            ));
        }
        if c.discovery == Discovery::Eds
            && b.dynamic_resources
                .as_ref()
                .and_then(|d| d.ads_config.as_ref())
                .is_none()
        {
            return Err(ConfigError::at(
                format!("static_resources.clusters[{i}].eds_cluster_config"),
                "EDS clusters are fetched over ADS: dynamic_resources.ads_config is required",
            ));
        }
    }
    // Connection managers that trace without a provider of their own use this tracer;
    // it must be known before the static listeners are translated.
    let tracer = b
        .tracing
        .as_ref()
        .map(|t| crate::trace::zipkin::bootstrap(t, "tracing"))
        .transpose()?
        .unwrap_or(crate::trace::BootstrapTracer::None);
    crate::trace::set_bootstrap_tracer(tracer.clone());
    let listeners = statics
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            listener::translate(l, &secrets, &format!("static_resources.listeners[{i}]"))
                .map(Arc::new)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut listener_names = HashSet::new();
    // Envoy refuses a second listener on an address, whether or not either binds it.
    let mut addresses = HashMap::new();
    for (i, l) in listeners.iter().enumerate() {
        if !listener_names.insert(l.name.as_str()) {
            return Err(ConfigError::at(
                format!("static_resources.listeners[{i}].name"),
                format!("duplicate listener name {}", l.name),
            ));
        }
        if let Address::Socket(a) = &l.address {
            if let Some(first) = addresses.insert(*a, l.name.as_str()) {
                return Err(ConfigError::at(
                    format!("static_resources.listeners[{i}].address"),
                    format!(
                        "listener {} has the address {a} of listener {first}",
                        l.name
                    ),
                ));
            }
        }
        check_route_clusters(l, &names, &format!("static_resources.listeners[{i}]"))?;
        if let Some(name) = discovered_filter(l) {
            return Err(ConfigError::at(
                format!("static_resources.listeners[{i}]"),
                format!("filter {name}: config_discovery (ECDS) serves listeners that come over LDS, not static ones"),
            ));
        }
    }
    let dynamic = b
        .dynamic_resources
        .as_ref()
        .map(|d| dynamic(d, &names))
        .transpose()?;
    check_config_sources(&statics, &names)?;
    let node_proto = node(b.node.clone().unwrap_or_default(), overrides);
    let local_cluster = b
        .cluster_manager
        .as_ref()
        .map(|c| c.local_cluster_name.clone())
        .filter(|n| !n.is_empty());
    if let Some(name) = &local_cluster {
        if !names.contains(name.as_str()) {
            return Err(ConfigError::at(
                "cluster_manager.local_cluster_name",
                format!("local cluster '{name}' must be defined as a static cluster"),
            ));
        }
    }
    Ok(Bootstrap {
        node: NodeInfo {
            id: node_proto.id.clone(),
            cluster: node_proto.cluster.clone(),
            zone: node_proto
                .locality
                .as_ref()
                .map(|l| l.zone.clone())
                .unwrap_or_default(),
        },
        node_proto,
        admin: b
            .admin
            .as_ref()
            .and_then(|a| a.address.as_ref())
            .map(|a| common::address(a, "admin.address", false))
            .transpose()?,
        listeners,
        clusters,
        dynamic,
        max_downstream_connections: overload(&b)?,
        log_format: b
            .application_log_config
            .as_ref()
            .and_then(|a| a.log_format.as_ref())
            .and_then(|f| match &f.log_format {
                Some(
                    proto::bootstrap::application_log_config::log_format::LogFormat::TextFormat(t),
                ) => Some(t.clone()),
                _ => None,
            }),
        no_effect,
        dump,
        secrets,
        local_cluster,
        tracer,
        stats_naming: Arc::new(super::stats::naming(
            b.stats_config.as_ref(),
            "stats_config",
        )?),
    })
}

fn check_route_clusters(l: &ListenerConfig, clusters: &HashSet<&str>, path: &str) -> Result<()> {
    for chain in l.filter_chains.iter().chain(l.default_chain.iter()) {
        if let Terminal::Http(h) = &chain.terminal {
            let Some(routes) = h.routes.inline() else {
                continue;
            };
            for r in route::referenced_clusters(routes) {
                if !clusters.contains(r.cluster) {
                    let kind = if r.shadow {
                        "shadow cluster"
                    } else {
                        "cluster"
                    };
                    return Err(ConfigError::at(
                        path,
                        format!(
                            "route: unknown {kind} '{}' in virtual host '{}'",
                            r.cluster, r.virtual_host
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn grpc_cluster(
    source: &core::ApiConfigSource,
    path: &str,
    clusters: &HashSet<&str>,
) -> Result<Option<String>> {
    if !matches!(source.api_type, 2 | 3 | 5 | 6) {
        return Err(ConfigError::at(
            join(path, "api_type"),
            "only GRPC and DELTA_GRPC config sources are supported",
        ));
    }
    let Some(service) = source.grpc_services.first() else {
        return Err(ConfigError::at(
            join(path, "grpc_services"),
            "a gRPC service is required",
        ));
    };
    use core::grpc_service::TargetSpecifier as T;
    match &service.target_specifier {
        Some(T::EnvoyGrpc(g)) => {
            if !clusters.contains(g.cluster_name.as_str()) {
                return Err(ConfigError::at(
                    join(path, "grpc_services[0].envoy_grpc.cluster_name"),
                    format!("unknown static cluster {}", g.cluster_name),
                ));
            }
            Ok(Some(g.cluster_name.clone()))
        }
        Some(T::GoogleGrpc(_)) => Ok(None),
        None => Err(ConfigError::at(
            join(path, "grpc_services[0]"),
            "a gRPC service is required",
        )),
    }
}

fn config_source(cs: &core::ConfigSource, path: &str, clusters: &HashSet<&str>) -> Result<()> {
    use core::config_source::ConfigSourceSpecifier as S;
    match &cs.config_source_specifier {
        Some(S::Ads(_)) => Ok(()),
        Some(S::ApiConfigSource(a)) => {
            grpc_cluster(a, &join(path, "api_config_source"), clusters).map(|_| ())
        }
        Some(S::PathConfigSource(_)) => Ok(()),
        _ => Err(ConfigError::at(
            path,
            "config source needs ads, api_config_source or path_config_source",
        )),
    }
}

/// The bootstrap's node with the `--service-*` overrides and meshproxy's user agent.
fn node(mut node: core::Node, overrides: &NodeInfo) -> core::Node {
    if !overrides.id.is_empty() {
        node.id = overrides.id.clone();
    }
    if !overrides.cluster.is_empty() {
        node.cluster = overrides.cluster.clone();
    }
    if !overrides.zone.is_empty() {
        node.locality.get_or_insert_with(Default::default).zone = overrides.zone.clone();
    }
    node.user_agent_name = "meshproxy".into();
    node.user_agent_version_type = Some(core::node::UserAgentVersionType::UserAgentVersion(
        env!("CARGO_PKG_VERSION").into(),
    ));
    node
}

fn dynamic(
    d: &proto::bootstrap::DynamicResources,
    clusters: &HashSet<&str>,
) -> Result<DynamicConfig> {
    let ads = d
        .ads_config
        .as_ref()
        .map(|a| ads_config(a, clusters))
        .transpose()?;
    let fetch = |name: &str, cs: &Option<core::ConfigSource>| -> Result<Option<Subscription>> {
        let Some(cs) = cs else { return Ok(None) };
        let path = join("dynamic_resources", name);
        config_source(cs, &path, clusters)?;
        let source = super::source::xds_source(Some(cs), &path)?;
        if source == super::source::XdsSource::Ads && ads.is_none() {
            return Err(ConfigError::at(
                path,
                "ads is used but dynamic_resources.ads_config is missing",
            ));
        }
        let initial_fetch_timeout = super::source::fetch_timeout(Some(cs), &path)?;
        Ok(Some(Subscription {
            source,
            initial_fetch_timeout,
        }))
    };
    Ok(DynamicConfig {
        lds: fetch("lds_config", &d.lds_config)?,
        cds: fetch("cds_config", &d.cds_config)?,
        ads,
    })
}

fn ads_config(a: &core::ApiConfigSource, clusters: &HashSet<&str>) -> Result<AdsConfig> {
    let path = "dynamic_resources.ads_config";
    grpc_cluster(a, path, clusters)?;
    let source = super::source::xds_source(
        Some(&core::ConfigSource {
            config_source_specifier: Some(
                core::config_source::ConfigSourceSpecifier::ApiConfigSource(a.clone()),
            ),
            ..Default::default()
        }),
        "dynamic_resources",
    )
    .map_err(|e| ConfigError::at(e.path.replace("api_config_source", "ads_config"), e.message))?;
    let max = match &a.grpc_services[0].target_specifier {
        Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(g)) => g
            .max_receive_message_length
            .as_ref()
            .map(|v| v.value as usize),
        _ => None,
    };
    Ok(AdsConfig {
        source,
        node_on_first_message_only: a.set_node_on_first_message_only,
        max_message_bytes: max.unwrap_or(100 << 20),
    })
}

/// SDS config sources inside TLS contexts must name known clusters too.
fn check_config_sources(
    statics: &proto::bootstrap::StaticResources,
    clusters: &HashSet<&str>,
) -> Result<()> {
    let mut found = Vec::new();
    for (i, c) in statics.clusters.iter().enumerate() {
        if let Some(ts) = &c.transport_socket {
            collect_sds_sources(
                ts,
                &format!("static_resources.clusters[{i}].transport_socket"),
                &mut found,
            );
        }
    }
    for (i, l) in statics.listeners.iter().enumerate() {
        for (j, fc) in l.filter_chains.iter().enumerate() {
            if let Some(ts) = &fc.transport_socket {
                collect_sds_sources(
                    ts,
                    &format!("static_resources.listeners[{i}].filter_chains[{j}].transport_socket"),
                    &mut found,
                );
            }
        }
    }
    found
        .iter()
        .try_for_each(|(path, cs)| config_source(cs, path, clusters))
}

fn collect_sds_sources(
    ts: &core::TransportSocket,
    path: &str,
    out: &mut Vec<(String, core::ConfigSource)>,
) {
    use xds_client::proto::envoy::extensions::transport_sockets::tls::v3 as tls;
    let Some(core::transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        return;
    };
    let common = match xds_client::descriptors::type_name_of_url(&any.type_url) {
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext" => {
            tls::UpstreamTlsContext::decode(any.value.as_slice())
                .ok()
                .and_then(|c| c.common_tls_context)
        }
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext" => {
            tls::DownstreamTlsContext::decode(any.value.as_slice())
                .ok()
                .and_then(|c| c.common_tls_context)
        }
        _ => None,
    };
    let Some(common) = common else { return };
    let base = join(path, "typed_config.common_tls_context");
    for (i, s) in common.tls_certificate_sds_secret_configs.iter().enumerate() {
        if let Some(cs) = &s.sds_config {
            out.push((
                format!("{base}.tls_certificate_sds_secret_configs[{i}].sds_config"),
                cs.clone(),
            ));
        }
    }
    use tls::common_tls_context::ValidationContextType as V;
    let sds = match &common.validation_context_type {
        Some(V::ValidationContextSdsSecretConfig(s)) => Some((join(&base, "validation_context_sds_secret_config.sds_config"), s)),
        Some(V::CombinedValidationContext(c)) => c
            .validation_context_sds_secret_config
            .as_ref()
            .map(|s| (join(&base, "combined_validation_context.validation_context_sds_secret_config.sds_config"), s)),
        _ => None,
    };
    if let Some((p, s)) = sds {
        if let Some(cs) = &s.sds_config {
            out.push((p, cs.clone()));
        }
    }
}

fn overload(b: &proto::Bootstrap) -> Result<Option<u64>> {
    let Some(om) = &b.overload_manager else {
        return Ok(None);
    };
    if !om.actions.is_empty() {
        return Err(ConfigError::at(
            "overload_manager.actions",
            "overload actions are not supported",
        ));
    }
    let mut limit = None;
    for (i, m) in om.resource_monitors.iter().enumerate() {
        let p = format!("overload_manager.resource_monitors[{i}].typed_config");
        let Some(xds_client::proto::envoy::config::overload::v3::resource_monitor::ConfigType::TypedConfig(any)) = &m.config_type else {
            return Err(ConfigError::at(p, "typed_config is required"));
        };
        let c = xds_client::proto::envoy::extensions::resource_monitors::downstream_connections::v3::DownstreamConnectionsConfig::decode(any.value.as_slice())
            .map_err(|e| ConfigError::at(&p, e.to_string()))?;
        if c.max_active_downstream_connections <= 0 {
            return Err(ConfigError::at(
                join(&p, "max_active_downstream_connections"),
                "must be positive",
            ));
        }
        limit = Some(c.max_active_downstream_connections as u64);
    }
    Ok(limit)
}

/// The first filter of `l` configured through `config_discovery`, if any.
fn discovered_filter(l: &ListenerConfig) -> Option<&str> {
    if l.listener_filters
        .iter()
        .any(|f| f.filter == super::listener::ListenerFilter::MissingConfig)
    {
        return Some("of listener_filters");
    }
    let chains = || l.filter_chains.iter().chain(l.default_chain.iter());
    let network = chains()
        .flat_map(|c| c.network_filters.iter())
        .find_map(|f| match f {
            super::listener::NetworkFilter::MissingConfig(name) => Some(name.as_str()),
            _ => None,
        });
    network.or_else(|| {
        chains()
            .filter_map(|c| match &c.terminal {
                Terminal::Http(h) => Some(h),
                Terminal::Tcp(_) => None,
            })
            .flat_map(|h| h.filters.iter())
            .find_map(|f| match f {
                super::hcm::HttpFilterConfig::MissingConfig(name) => Some(name.as_str()),
                _ => None,
            })
    })
}
