//! Cluster translation: discovery type, endpoints, load-balancer policy, circuit breakers,
//! upstream protocol and transport socket.

use super::common::{self, Address};
use super::error::{item, join, ConfigError, Result};
use super::secrets::Secrets;
use super::tls::{self, UpstreamTls};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use xds_client::proto::envoy::config::cluster::v3 as cluster;
use xds_client::proto::envoy::extensions::upstreams::http::v3 as upstream_http;

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// How a cluster learns its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// Fixed IPs.
    Static,
    /// Every address every name resolves to, refreshed.
    StrictDns,
    /// The first address of the name, refreshed; connections keep their address.
    LogicalDns,
    /// The connection's original destination.
    OriginalDst,
    /// Endpoints from EDS (issue 5).
    Eds,
}

/// Load-balancing policy.
#[derive(Debug, Clone, PartialEq)]
pub enum LbPolicy {
    /// Weighted round robin.
    RoundRobin,
    /// Power-of-N-choices least request with active request bias.
    LeastRequest {
        choice_count: u32,
        active_request_bias: f64,
    },
    /// Weighted random.
    Random,
    /// Consistent hashing ring.
    RingHash {
        min_ring_size: u64,
        max_ring_size: u64,
    },
    /// Maglev table.
    Maglev { table_size: u64 },
    /// Whatever the discovery type provides (ORIGINAL_DST).
    ClusterProvided,
}

/// Slow start (`slow_start_config` of round robin or least request): a host's weight
/// ramps up over its first `window` in service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStart {
    /// `slow_start_window`.
    pub window: Duration,
    /// `aggression` (default 1: linear).
    pub aggression: f64,
    /// `min_weight_percent` as a fraction (default 0.1).
    pub min_weight: f64,
}

impl SlowStart {
    /// The weight factor of a host `age` into its time in service, `None` once past the
    /// window: `max(min_weight, (max(age, 1 s) / window)^(1/aggression))`.
    pub fn factor(&self, age: Duration) -> Option<f64> {
        if age >= self.window {
            return None;
        }
        let time = age.as_secs_f64().max(1.0) / self.window.as_secs_f64();
        Some(time.powf(1.0 / self.aggression).max(self.min_weight))
    }
}

/// An endpoint as configured.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Its address (a hostname for DNS clusters).
    pub address: Address,
    /// Load-balancing weight (default 1).
    pub weight: u32,
    /// Hostname for `auto_host_rewrite`.
    pub hostname: String,
    /// Priority of its locality.
    pub priority: u32,
    /// Whether EDS reports it able to take traffic (`health_status` other than
    /// UNHEALTHY, DRAINING or TIMEOUT; DEGRADED hosts count as healthy).
    pub healthy: bool,
    /// Which locality of the assignment it belongs to (its index there).
    pub locality: u32,
    /// That locality's `load_balancing_weight` (0 when unset: no traffic under
    /// locality-weighted balancing).
    pub locality_weight: u32,
    /// Its `metadata.filter_metadata.istio.workload` (Istio's telemetry fallback for a
    /// peer that announced nothing).
    pub istio_workload: Option<Arc<str>>,
    /// Its `metadata.filter_metadata["envoy.transport_socket_match"]` string fields,
    /// sorted (what `transport_socket_matches` select on).
    pub tls_labels: Vec<(String, String)>,
}

/// Where endpoints (or the proxy itself) run: region, zone, sub-zone; two localities are
/// the same when all three are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locality {
    /// `region`.
    pub region: String,
    /// `zone`.
    pub zone: String,
    /// `sub_zone`.
    pub sub_zone: String,
}

impl Locality {
    /// From the protobuf message.
    pub fn from_proto(l: &xds_client::proto::envoy::config::core::v3::Locality) -> Self {
        Locality {
            region: l.region.clone(),
            zone: l.zone.clone(),
            sub_zone: l.sub_zone.clone(),
        }
    }
}

/// A load assignment: endpoints with the overprovisioning factor that splits load
/// across their priorities.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The endpoints.
    pub endpoints: Vec<EndpointConfig>,
    /// `policy.overprovisioning_factor` in percent (default 140).
    pub overprovisioning_factor: u32,
    /// The assignment's localities, which endpoints refer to by index.
    pub localities: Vec<Locality>,
}

impl Default for Assignment {
    fn default() -> Self {
        Assignment {
            endpoints: Vec::new(),
            overprovisioning_factor: 140,
            localities: Vec::new(),
        }
    }
}

/// Circuit-breaker thresholds of one priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Max upstream connections.
    pub max_connections: u64,
    /// Max requests waiting for a connection.
    pub max_pending_requests: u64,
    /// Max concurrent requests.
    pub max_requests: u64,
    /// Max concurrent retries.
    pub max_retries: u64,
    /// `retry_budget`: when set, it replaces `max_retries`.
    pub retry_budget: Option<RetryBudget>,
    /// `track_remaining`: publish the `remaining_*` gauges.
    pub track_remaining: bool,
}

/// A retry budget: concurrent retries limited to a share of the active and pending
/// requests, never below a floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    /// `budget_percent`, in thousandths of a percent (default 20 %).
    pub milli_percent: u64,
    /// `min_retry_concurrency` (default 3).
    pub min_concurrency: u64,
}

impl RetryBudget {
    /// The concurrent retries allowed with `active` requests active or pending.
    pub fn limit(&self, active: u64) -> u64 {
        (active * self.milli_percent / 100_000).max(self.min_concurrency)
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            retry_budget: None,
            track_remaining: false,
        }
    }
}

/// Which HTTP protocol the cluster speaks upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (h2c or h2 over TLS).
    Http2,
    /// Whatever the downstream request used.
    UseDownstream,
    /// Negotiated by ALPN (HTTP/1.1 without TLS).
    Auto,
}

/// TCP keepalive settings for upstream sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keepalive {
    /// Probes before the connection is dropped.
    pub probes: Option<u32>,
    /// Idle time before probing.
    pub time: Option<Duration>,
    /// Interval between probes.
    pub interval: Option<Duration>,
}

/// DNS address family preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFamily {
    /// Prefer IPv4, fall back to IPv6 (`AUTO` is v6-preferred in Envoy; see translate).
    Auto,
    /// IPv4 only.
    V4Only,
    /// IPv6 only.
    V6Only,
    /// IPv4 preferred.
    V4Preferred,
    /// Everything.
    All,
}

/// A translated Cluster.
#[derive(Debug)]
pub struct ClusterConfig {
    /// Name.
    pub name: String,
    /// `alt_stat_name`, when set: the name used in stats instead of `name` (see
    /// [`ClusterConfig::stat_name`]; not a second copy of the name for every cluster).
    pub alt_stat_name: Option<String>,
    /// Discovery type.
    pub discovery: Discovery,
    /// Connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// LB policy.
    pub lb: LbPolicy,
    /// Configured endpoints (`load_assignment`).
    pub assignment: Assignment,
    /// Circuit breakers (DEFAULT priority).
    pub thresholds: Thresholds,
    /// The HIGH priority's thresholds when configured (see
    /// [`ClusterConfig::high_thresholds`]; boxed: clusters rarely set them).
    pub high_priority: Option<Box<Thresholds>>,
    /// Upstream TLS, if any.
    pub tls: Option<Arc<UpstreamTls>>,
    /// Upstream HTTP protocol.
    pub protocol: UpstreamProtocol,
    /// Requests per upstream connection before it is closed.
    pub max_requests_per_connection: Option<u32>,
    /// Idle time after which an upstream connection is closed (default 1 h).
    pub idle_timeout: Option<Duration>,
    /// HTTP/2 max concurrent streams.
    pub http2_max_concurrent_streams: Option<u32>,
    /// TCP keepalive.
    pub keepalive: Option<Keepalive>,
    /// DNS family.
    pub dns_family: DnsFamily,
    /// DNS refresh interval (default 5 s).
    pub dns_refresh_rate: Duration,
    /// Source address to bind upstream sockets to.
    pub bind_address: Option<std::net::SocketAddr>,
    /// `per_connection_buffer_limit_bytes` (default 1 MiB): bytes buffered per upstream
    /// connection.
    pub buffer_limit: usize,
    /// EDS clusters: the ClusterLoadAssignment name to subscribe (`service_name`, else the
    /// cluster name).
    pub eds_service_name: Option<String>,
    /// EDS clusters: where the assignment comes from.
    pub eds_source: Option<super::source::XdsSource>,
    /// EDS clusters: how long the cluster warms without its assignment before it is used
    /// anyway (`eds_config.initial_fetch_timeout`; `None`: until it arrives).
    pub eds_fetch_timeout: Option<Duration>,
    /// Active health checking (`health_checks`), when configured.
    pub health_check: Option<Arc<super::health_check::HealthCheckConfig>>,
    /// Passive health checking (`outlier_detection`), when configured.
    pub outlier: Option<Arc<super::outlier::OutlierConfig>>,
    /// `common_lb_config.healthy_panic_threshold` in percent (default 50; 0 disables
    /// panic): a priority level whose healthy share is below it balances over all its
    /// hosts.
    pub panic_threshold: u32,
    /// `common_lb_config.update_merge_window` (default 1 s; 0 delivers every change at
    /// once): health changes within it of the last delivered one wait for its end.
    pub update_merge_window: Duration,
    /// `common_lb_config.locality_weighted_lb_config`: within a priority level, traffic
    /// is split across localities by their weights scaled by their health.
    pub locality_weighted: bool,
    /// Slow start of round robin or least request, when configured.
    pub slow_start: Option<SlowStart>,
    /// Zone-aware routing settings.
    pub zone_aware: ZoneAware,
    /// `metadata.filter_metadata.istio` as Istio's filters read it.
    pub istio: Option<Arc<crate::istio::ClusterIstioMetadata>>,
    /// `transport_socket_matches`: per-endpoint transport sockets, chosen by endpoint
    /// metadata (Istio's auto-mTLS: `tlsMode: istio` endpoints get mutual TLS).
    pub tls_matches: Vec<TlsMatch>,
    /// The upstream network filter `filters` may hold: Istio's TCP metadata exchange.
    pub upstream_exchange: Option<Arc<crate::istio::tcp_exchange::TcpExchangeConfig>>,
}

/// Translates the cluster's upstream network `filters` (only Istio's TCP metadata
/// exchange is supported).
fn upstream_filters(
    c: &cluster::Cluster,
    path: &str,
) -> Result<Option<Arc<crate::istio::tcp_exchange::TcpExchangeConfig>>> {
    let mut out = None;
    for (i, f) in c.filters.iter().enumerate() {
        let p = format!("{}[{i}].typed_config", join(path, "filters"));
        let any = f
            .typed_config
            .as_ref()
            .ok_or_else(|| ConfigError::at(&p, "typed_config is required"))?;
        if xds_client::descriptors::type_name_of_url(&any.type_url)
            != crate::istio::tcp_exchange::TYPE_NAME
            || out.is_some()
        {
            return Err(ConfigError::at(
                &p,
                format!(
                    "upstream network filter {} is not supported (one TCP metadata exchange is)",
                    f.name
                ),
            ));
        }
        out = Some(Arc::new(crate::istio::tcp_exchange::translate(
            &any.value, &p,
        )?));
    }
    Ok(out)
}

/// One `transport_socket_matches` entry.
#[derive(Debug)]
pub struct TlsMatch {
    /// `name` (for errors and the admin output).
    pub name: String,
    /// `match`: every key must equal the endpoint's
    /// `filter_metadata["envoy.transport_socket_match"]` value (empty matches all).
    pub criteria: Vec<(String, String)>,
    /// Its transport socket: TLS, or `None` for raw buffer.
    pub tls: Option<Arc<UpstreamTls>>,
}

impl ClusterConfig {
    /// The HIGH priority's thresholds: no route selects it (`RouteAction.priority` is not
    /// supported), they only show in `/clusters` and the `circuit_breakers.high.*` gauges.
    pub fn high_thresholds(&self) -> Thresholds {
        self.high_priority.as_deref().copied().unwrap_or_default()
    }

    /// The name the cluster's stats carry (`cluster.<stat name>.*`).
    pub fn stat_name(&self) -> &str {
        self.alt_stat_name.as_deref().unwrap_or(&self.name)
    }

    /// Which `transport_socket_matches` entry an endpoint with `labels` uses (`None`:
    /// the cluster's own `transport_socket`): the first whose criteria all hold.
    pub fn tls_match(&self, labels: &[(String, String)]) -> Option<u16> {
        self.tls_matches
            .iter()
            .position(|m| m.criteria.iter().all(|c| labels.contains(c)))
            .map(|i| i as u16)
    }

    /// The TLS context for an endpoint that chose `tls_match` (see [`Self::tls_match`]).
    pub fn tls_for(&self, tls_match: Option<u16>) -> Option<&Arc<UpstreamTls>> {
        match tls_match {
            Some(i) => self
                .tls_matches
                .get(i as usize)
                .and_then(|m| m.tls.as_ref()),
            None => self.tls.as_ref(),
        }
    }

    /// Every TLS context the cluster may use (its own and its matches').
    pub fn tls_contexts(&self) -> impl Iterator<Item = &Arc<UpstreamTls>> {
        self.tls
            .iter()
            .chain(self.tls_matches.iter().filter_map(|m| m.tls.as_ref()))
    }
}

/// The string fields of a metadata struct (other kinds cannot be matched and are
/// skipped).
fn string_fields(s: &xds_client::proto::google::protobuf::Struct) -> Vec<(String, String)> {
    use xds_client::proto::google::protobuf::value::Kind;
    let mut out: Vec<(String, String)> = s
        .fields
        .iter()
        .filter_map(|(k, v)| match &v.kind {
            Some(Kind::StringValue(v)) => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Translates `transport_socket_matches`.
fn tls_matches(c: &cluster::Cluster, secrets: &Secrets, path: &str) -> Result<Vec<TlsMatch>> {
    let mut out = Vec::new();
    for (i, m) in c.transport_socket_matches.iter().enumerate() {
        let p = item(path, "transport_socket_matches", i);
        let criteria = m.r#match.as_ref().map(string_fields).unwrap_or_default();
        if m.r#match
            .as_ref()
            .is_some_and(|s| s.fields.len() != criteria.len())
        {
            return Err(ConfigError::at(
                join(&p, "match"),
                "only string values can be matched",
            ));
        }
        let tls = match &m.transport_socket {
            Some(ts) => tls::upstream_transport_socket(ts, secrets, &join(&p, "transport_socket"))?,
            None => None,
        };
        out.push(TlsMatch {
            name: m.name.clone(),
            criteria,
            tls,
        });
    }
    Ok(out)
}

fn u32_value(v: &Option<xds_client::proto::google::protobuf::UInt32Value>) -> Option<u32> {
    v.as_ref().map(|v| v.value)
}

/// Translates a Cluster.
pub fn translate(c: &cluster::Cluster, secrets: &Secrets, path: &str) -> Result<ClusterConfig> {
    use cluster::cluster::ClusterDiscoveryType as T;
    if c.name.is_empty() {
        return Err(ConfigError::at(
            join(path, "name"),
            "cluster name is required",
        ));
    }
    let discovery = match &c.cluster_discovery_type {
        Some(T::Type(0)) | None => Discovery::Static,
        Some(T::Type(1)) => Discovery::StrictDns,
        Some(T::Type(2)) => Discovery::LogicalDns,
        Some(T::Type(3)) => Discovery::Eds,
        Some(T::Type(4)) => Discovery::OriginalDst,
        Some(T::Type(n)) => {
            return Err(ConfigError::at(
                join(path, "type"),
                format!("unknown discovery type {n}"),
            ))
        }
        Some(T::ClusterType(_)) => {
            return Err(ConfigError::at(
                join(path, "cluster_type"),
                "custom cluster types are not supported",
            ))
        }
    };
    let lb = lb_policy(c, discovery, path)?;
    dns_resolver(c, path)?;
    let (eds_service_name, eds_source, eds_fetch_timeout) = match eds_config(c, discovery, path)? {
        Some((name, source, timeout)) => (Some(name), Some(source), timeout),
        None => (None, None, None),
    };
    let assignment = endpoints(
        c.load_assignment.as_ref(),
        discovery,
        &join(path, "load_assignment"),
    )?;
    let (protocol, idle_timeout, max_rpc, h2_streams) = protocol_options(c, path)?;
    let tls = match &c.transport_socket {
        Some(ts) => tls::upstream_transport_socket(ts, secrets, &join(path, "transport_socket"))?,
        None => None,
    };
    let keepalive = c
        .upstream_connection_options
        .as_ref()
        .and_then(|o| o.tcp_keepalive.as_ref())
        .map(|k| Keepalive {
            probes: u32_value(&k.keepalive_probes),
            time: u32_value(&k.keepalive_time).map(|s| Duration::from_secs(s.into())),
            interval: u32_value(&k.keepalive_interval).map(|s| Duration::from_secs(s.into())),
        });
    let bind_address = match c
        .upstream_bind_config
        .as_ref()
        .and_then(|b| b.source_address.as_ref())
    {
        Some(sa) => {
            let p = join(path, "upstream_bind_config.source_address");
            let ip: std::net::IpAddr = sa
                .address
                .parse()
                .map_err(|_| ConfigError::at(&p, "malformed IP address"))?;
            let port = match sa.port_specifier {
                Some(xds_client::proto::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p)) => p as u16,
                _ => 0,
            };
            Some(std::net::SocketAddr::new(ip, port))
        }
        None => None,
    };
    let outlier = match &c.outlier_detection {
        Some(_) if discovery == Discovery::OriginalDst => {
            return Err(ConfigError::at(
                join(path, "outlier_detection"),
                "outlier detection is not supported on ORIGINAL_DST clusters (their hosts live one connection)",
            ))
        }
        Some(o) => Some(Arc::new(super::outlier::translate(
            o,
            &join(path, "outlier_detection"),
        )?)),
        None => None,
    };
    let locality_weighted = locality_weighted(c, discovery, &lb, path)?;
    Ok(ClusterConfig {
        name: c.name.clone(),
        alt_stat_name: (!c.alt_stat_name.is_empty()).then(|| c.alt_stat_name.clone()),
        discovery,
        connect_timeout: connect_timeout(c, path)?,
        lb,
        assignment,
        thresholds: thresholds(c, 0).unwrap_or_default(),
        high_priority: thresholds(c, 1).map(Box::new),
        tls,
        protocol,
        max_requests_per_connection: max_rpc.or(u32_value(&c.max_requests_per_connection)),
        idle_timeout,
        http2_max_concurrent_streams: h2_streams,
        keepalive,
        dns_family: match c.dns_lookup_family {
            0 => DnsFamily::Auto,
            1 => DnsFamily::V4Only,
            2 => DnsFamily::V6Only,
            3 => DnsFamily::V4Preferred,
            _ => DnsFamily::All,
        },
        dns_refresh_rate: match &c.dns_refresh_rate {
            Some(d) => {
                common::duration(d, &join(path, "dns_refresh_rate"))?.max(Duration::from_millis(1))
            }
            None => Duration::from_secs(5),
        },
        bind_address,
        buffer_limit: c
            .per_connection_buffer_limit_bytes
            .as_ref()
            .map(|v| v.value as usize)
            .unwrap_or(1024 * 1024),
        eds_service_name,
        eds_source,
        eds_fetch_timeout,
        outlier,
        health_check: super::health_check::translate(
            &c.health_checks,
            &join(path, "health_checks"),
        )?
        .map(Arc::new),
        panic_threshold: panic_threshold(c, path)?,
        locality_weighted,
        slow_start: slow_start(c, path)?,
        zone_aware: zone_aware(c, path)?,
        istio: crate::istio::ClusterIstioMetadata::from_metadata(c.metadata.as_ref()),
        tls_matches: tls_matches(c, secrets, path)?,
        upstream_exchange: upstream_filters(c, path)?,
        update_merge_window: match c
            .common_lb_config
            .as_ref()
            .and_then(|l| l.update_merge_window.as_ref())
        {
            Some(d) => common::duration(d, &join(path, "common_lb_config.update_merge_window"))?,
            None => Duration::from_secs(1),
        },
    })
}

fn lb_policy(c: &cluster::Cluster, discovery: Discovery, path: &str) -> Result<LbPolicy> {
    use cluster::cluster::LbConfig as L;
    let policy = match c.lb_policy {
        0 => LbPolicy::RoundRobin,
        1 => {
            let (choice_count, bias) = match &c.lb_config {
                Some(L::LeastRequestLbConfig(l)) => (
                    u32_value(&l.choice_count).unwrap_or(2),
                    l.active_request_bias
                        .as_ref()
                        .map(|b| b.default_value)
                        .unwrap_or(1.0),
                ),
                _ => (2, 1.0),
            };
            if choice_count < 2 {
                return Err(ConfigError::at(
                    join(path, "least_request_lb_config.choice_count"),
                    "must be at least 2",
                ));
            }
            LbPolicy::LeastRequest {
                choice_count,
                active_request_bias: bias,
            }
        }
        2 => {
            let (min, max) = match &c.lb_config {
                Some(L::RingHashLbConfig(r)) => {
                    if r.hash_function != 0 {
                        return Err(ConfigError::at(
                            join(path, "ring_hash_lb_config.hash_function"),
                            "only XX_HASH is supported",
                        ));
                    }
                    (
                        r.minimum_ring_size
                            .as_ref()
                            .map(|v| v.value)
                            .unwrap_or(1024),
                        r.maximum_ring_size
                            .as_ref()
                            .map(|v| v.value)
                            .unwrap_or(8 * 1024 * 1024),
                    )
                }
                _ => (1024, 8 * 1024 * 1024),
            };
            if min > max {
                return Err(ConfigError::at(
                    join(path, "ring_hash_lb_config"),
                    "minimum_ring_size exceeds maximum_ring_size",
                ));
            }
            LbPolicy::RingHash {
                min_ring_size: min,
                max_ring_size: max,
            }
        }
        3 => LbPolicy::Random,
        5 => {
            let table_size = match &c.lb_config {
                Some(L::MaglevLbConfig(m)) => {
                    m.table_size.as_ref().map(|v| v.value).unwrap_or(65537)
                }
                _ => 65537,
            };
            if !is_prime(table_size) {
                return Err(ConfigError::at(
                    join(path, "maglev_lb_config.table_size"),
                    "table size must be prime",
                ));
            }
            LbPolicy::Maglev { table_size }
        }
        6 => LbPolicy::ClusterProvided,
        n => {
            return Err(ConfigError::at(
                join(path, "lb_policy"),
                format!("unsupported lb_policy {n}"),
            ))
        }
    };
    if discovery == Discovery::OriginalDst && policy != LbPolicy::ClusterProvided {
        return Err(ConfigError::at(
            join(path, "lb_policy"),
            "ORIGINAL_DST clusters need lb_policy CLUSTER_PROVIDED",
        ));
    }
    if discovery != Discovery::OriginalDst && policy == LbPolicy::ClusterProvided {
        return Err(ConfigError::at(
            join(path, "lb_policy"),
            "CLUSTER_PROVIDED is only valid for ORIGINAL_DST clusters",
        ));
    }
    Ok(policy)
}

/// Whether `common_lb_config.locality_weighted_lb_config` is set, refused where it
/// cannot apply: hash balancers pick by key, not by locality, and DNS clusters' resolved
/// hosts carry no locality here.
fn locality_weighted(
    c: &cluster::Cluster,
    discovery: Discovery,
    lb: &LbPolicy,
    path: &str,
) -> Result<bool> {
    use cluster::cluster::common_lb_config::LocalityConfigSpecifier as L;
    let p = join(path, "common_lb_config");
    match c
        .common_lb_config
        .as_ref()
        .and_then(|l| l.locality_config_specifier.as_ref())
    {
        None => Ok(false),
        Some(L::LocalityWeightedLbConfig(_)) => {
            if matches!(lb, LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. }) {
                return Err(ConfigError::at(
                    join(&p, "locality_weighted_lb_config"),
                    "locality-weighted balancing does not apply to RING_HASH or MAGLEV",
                ));
            }
            if matches!(
                discovery,
                Discovery::StrictDns | Discovery::LogicalDns | Discovery::OriginalDst
            ) {
                return Err(ConfigError::at(
                    join(&p, "locality_weighted_lb_config"),
                    "locality-weighted balancing is supported for STATIC and EDS clusters",
                ));
            }
            Ok(true)
        }
        Some(L::ZoneAwareLbConfig(_)) => Ok(false),
    }
}

/// Zone-aware routing settings (`common_lb_config.zone_aware_lb_config`), in effect when
/// the bootstrap names a local cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZoneAware {
    /// `routing_enabled`: the share of requests routed zone-aware, in percent (default
    /// 100).
    pub routing_enabled: f64,
    /// `min_cluster_size`: fewer healthy hosts than this route without zones (default 6).
    pub min_cluster_size: u64,
    /// `fail_traffic_on_panic`: a cluster in panic fails requests instead of balancing
    /// over every host.
    pub fail_traffic_on_panic: bool,
}

impl Default for ZoneAware {
    fn default() -> Self {
        ZoneAware {
            routing_enabled: 100.0,
            min_cluster_size: 6,
            fail_traffic_on_panic: false,
        }
    }
}

fn zone_aware(c: &cluster::Cluster, path: &str) -> Result<ZoneAware> {
    use cluster::cluster::common_lb_config::LocalityConfigSpecifier as L;
    let Some(L::ZoneAwareLbConfig(z)) = c
        .common_lb_config
        .as_ref()
        .and_then(|l| l.locality_config_specifier.as_ref())
    else {
        return Ok(ZoneAware::default());
    };
    let routing_enabled = z.routing_enabled.as_ref().map_or(100.0, |p| p.value);
    if !(0.0..=100.0).contains(&routing_enabled) {
        return Err(ConfigError::at(
            join(
                path,
                "common_lb_config.zone_aware_lb_config.routing_enabled",
            ),
            format!("{routing_enabled} is not a percentage"),
        ));
    }
    Ok(ZoneAware {
        routing_enabled,
        min_cluster_size: z.min_cluster_size.as_ref().map_or(6, |v| v.value),
        fail_traffic_on_panic: z.fail_traffic_on_panic,
    })
}

/// `common_lb_config.healthy_panic_threshold`, truncated to a whole percent as Envoy does.
fn panic_threshold(c: &cluster::Cluster, path: &str) -> Result<u32> {
    match c
        .common_lb_config
        .as_ref()
        .and_then(|l| l.healthy_panic_threshold.as_ref())
    {
        None => Ok(50),
        Some(p) if (0.0..=100.0).contains(&p.value) => Ok(p.value as u32),
        Some(p) => Err(ConfigError::at(
            join(path, "common_lb_config.healthy_panic_threshold"),
            format!("{} is not a percentage", p.value),
        )),
    }
}

/// The `slow_start_config` of the round-robin or least-request settings, if any.
fn slow_start(c: &cluster::Cluster, path: &str) -> Result<Option<SlowStart>> {
    use cluster::cluster::LbConfig as L;
    let (config, field) = match &c.lb_config {
        Some(L::RoundRobinLbConfig(r)) => (r.slow_start_config.as_ref(), "round_robin_lb_config"),
        Some(L::LeastRequestLbConfig(l)) => {
            (l.slow_start_config.as_ref(), "least_request_lb_config")
        }
        _ => (None, ""),
    };
    let Some(config) = config else {
        return Ok(None);
    };
    let p = join(&join(path, field), "slow_start_config");
    let Some(window) = config.slow_start_window.as_ref() else {
        return Ok(None);
    };
    let window = common::duration(window, &join(&p, "slow_start_window"))?;
    let aggression = config.aggression.as_ref().map_or(1.0, |a| a.default_value);
    if aggression <= 0.0 || !aggression.is_finite() {
        return Err(ConfigError::at(
            join(&p, "aggression"),
            "aggression must be greater than 0",
        ));
    }
    let min_weight = config.min_weight_percent.as_ref().map_or(10.0, |m| m.value);
    if !(0.0..=100.0).contains(&min_weight) {
        return Err(ConfigError::at(
            join(&p, "min_weight_percent"),
            format!("{min_weight} is not a percentage"),
        ));
    }
    Ok((!window.is_zero()).then_some(SlowStart {
        window,
        aggression,
        min_weight: min_weight / 100.0,
    }))
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// The thresholds of `priority` (0 DEFAULT, 1 HIGH): the first entry for it, if any.
/// `connect_timeout`: 5 s when unset; Envoy's proto validation requires it to be
/// greater than zero (a zero would fail every connection at once).
fn connect_timeout(c: &cluster::Cluster, path: &str) -> Result<Duration> {
    let Some(d) = &c.connect_timeout else {
        return Ok(Duration::from_secs(5));
    };
    let p = join(path, "connect_timeout");
    let timeout = common::duration(d, &p)?;
    if timeout.is_zero() {
        return Err(ConfigError::at(p, "value must be greater than 0s"));
    }
    Ok(timeout)
}

fn thresholds(c: &cluster::Cluster, priority: i32) -> Option<Thresholds> {
    let t = Thresholds::default();
    let th = c
        .circuit_breakers
        .as_ref()
        .and_then(|cb| cb.thresholds.iter().find(|t| t.priority == priority))?;
    let v = |x: &Option<xds_client::proto::google::protobuf::UInt32Value>, d: u64| {
        x.as_ref().map(|v| u64::from(v.value)).unwrap_or(d)
    };
    Some(Thresholds {
        max_connections: v(&th.max_connections, t.max_connections),
        max_pending_requests: v(&th.max_pending_requests, t.max_pending_requests),
        max_requests: v(&th.max_requests, t.max_requests),
        max_retries: v(&th.max_retries, t.max_retries),
        retry_budget: th.retry_budget.as_ref().map(|b| RetryBudget {
            milli_percent: b
                .budget_percent
                .as_ref()
                .map_or(20_000, |p| (p.value.clamp(0.0, 100.0) * 1000.0) as u64),
            min_concurrency: v(&b.min_retry_concurrency, 3),
        }),
        track_remaining: th.track_remaining,
    })
}

/// The assignment name an EDS cluster subscribes to, where it comes from, and how long
/// the cluster waits for it.
fn eds_config(
    c: &cluster::Cluster,
    discovery: Discovery,
    path: &str,
) -> Result<Option<(String, super::source::XdsSource, Option<Duration>)>> {
    if discovery != Discovery::Eds {
        return Ok(None);
    }
    let p = join(path, "eds_cluster_config");
    let Some(eds) = &c.eds_cluster_config else {
        return Err(ConfigError::at(
            p,
            "eds_cluster_config is required for EDS clusters",
        ));
    };
    let source = super::source::xds_source(eds.eds_config.as_ref(), &join(&p, "eds_config"))?;
    let timeout = super::source::fetch_timeout(eds.eds_config.as_ref(), &join(&p, "eds_config"))?;
    let name = if eds.service_name.is_empty() {
        c.name.clone()
    } else {
        eds.service_name.clone()
    };
    Ok(Some((name, source, timeout)))
}

/// Translates an EDS `ClusterLoadAssignment` into the endpoints of an EDS cluster.
pub fn load_assignment(
    la: &xds_client::proto::envoy::config::endpoint::v3::ClusterLoadAssignment,
    path: &str,
) -> Result<Assignment> {
    endpoints(Some(la), Discovery::Eds, path)
}

fn endpoints(
    la: Option<&xds_client::proto::envoy::config::endpoint::v3::ClusterLoadAssignment>,
    discovery: Discovery,
    path: &str,
) -> Result<Assignment> {
    // Without a load assignment a STATIC or STRICT_DNS cluster has no hosts (Istio's
    // BlackHoleCluster is exactly that); a LOGICAL_DNS cluster needs its one host.
    let Some(la) = la else {
        return match discovery {
            Discovery::LogicalDns => Err(ConfigError::at(
                path,
                "LOGICAL_DNS clusters must have a single host",
            )),
            _ => Ok(Assignment::default()),
        };
    };
    let mut out = Vec::with_capacity(la.endpoints.iter().map(|l| l.lb_endpoints.len()).sum());
    for (i, locality) in la.endpoints.iter().enumerate() {
        let locality_path = || item(path, "endpoints", i);
        for (j, lbe) in locality.lb_endpoints.iter().enumerate() {
            // Paths are built only for an error: a large bootstrap has many endpoints.
            let ep = || item(&locality_path(), "lb_endpoints", j);
            use xds_client::proto::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier as HI;
            let endpoint = match &lbe.host_identifier {
                Some(HI::Endpoint(e)) => e,
                _ => {
                    return Err(ConfigError::at(
                        ep(),
                        "endpoint is required (endpoint_name is not supported)",
                    ))
                }
            };
            let addr_path = || join(&ep(), "endpoint.address");
            let a = endpoint
                .address
                .as_ref()
                .ok_or_else(|| ConfigError::at(addr_path(), "address is required"))?;
            let allow_names = matches!(discovery, Discovery::StrictDns | Discovery::LogicalDns);
            let address = common::address(a, "", allow_names).map_err(|e| e.under(&addr_path()))?;
            let weight = lbe
                .load_balancing_weight
                .as_ref()
                .map(|w| w.value)
                .unwrap_or(1);
            if weight == 0 {
                return Err(ConfigError::at(
                    join(&ep(), "load_balancing_weight"),
                    "weight must be at least 1",
                ));
            }
            out.push(EndpointConfig {
                address,
                weight,
                hostname: endpoint.hostname.clone(),
                priority: locality.priority,
                // UNHEALTHY, DRAINING and TIMEOUT take no traffic outside panic.
                healthy: !matches!(lbe.health_status, 2..=4),
                locality: i as u32,
                locality_weight: locality
                    .load_balancing_weight
                    .as_ref()
                    .map_or(0, |w| w.value),
                istio_workload: crate::istio::endpoint_workload(lbe.metadata.as_ref()),
                tls_labels: lbe
                    .metadata
                    .as_ref()
                    .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
                    .map(string_fields)
                    .unwrap_or_default(),
            });
        }
    }
    if discovery == Discovery::LogicalDns && out.len() != 1 {
        return Err(ConfigError::at(
            path,
            "LOGICAL_DNS clusters must have exactly one endpoint",
        ));
    }
    let overprovisioning_factor = la
        .policy
        .as_ref()
        .and_then(|p| p.overprovisioning_factor.as_ref())
        .map(|f| f.value)
        .unwrap_or(140);
    if overprovisioning_factor == 0 {
        return Err(ConfigError::at(
            join(path, "policy.overprovisioning_factor"),
            "must be greater than 0",
        ));
    }
    Ok(Assignment {
        endpoints: out,
        overprovisioning_factor,
        localities: la
            .endpoints
            .iter()
            .map(|l| {
                l.locality
                    .as_ref()
                    .map(Locality::from_proto)
                    .unwrap_or_default()
            })
            .collect(),
    })
}

/// The protocol the deprecated cluster fields select, which Envoy 1.40 still honours when
/// no `HttpProtocolOptions` extension options are set (those then replace them):
/// `protocol_selection: USE_DOWNSTREAM_PROTOCOL` follows the downstream protocol, else
/// `http2_protocol_options` selects HTTP/2 (Istio up to 1.9 writes it); with its
/// `max_concurrent_streams`.
fn legacy_protocol(c: &cluster::Cluster) -> (UpstreamProtocol, Option<u32>) {
    #[allow(deprecated)]
    let h2 = c.http2_protocol_options.as_ref();
    let streams = h2.and_then(|o| u32_value(&o.max_concurrent_streams));
    let use_downstream = c.protocol_selection
        == cluster::cluster::ClusterProtocolSelection::UseDownstreamProtocol as i32;
    match (use_downstream, h2) {
        (true, _) => (UpstreamProtocol::UseDownstream, streams),
        (false, Some(_)) => (UpstreamProtocol::Http2, streams),
        (false, None) => (UpstreamProtocol::Http1, None),
    }
}

/// The DNS resolver `typed_dns_resolver_config` names: meshproxy resolves with the
/// system's resolver (getaddrinfo, `/etc/resolv.conf`), which is what the getaddrinfo
/// resolver and a c-ares resolver without its own servers or options use. The support
/// table refuses every option of theirs that would change that; another resolver type
/// is refused here.
fn dns_resolver(c: &cluster::Cluster, path: &str) -> Result<()> {
    const RESOLVERS: [&str; 2] = [
        "envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig",
        "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
    ];
    let Some(config) = &c.typed_dns_resolver_config else {
        return Ok(());
    };
    let p = join(path, "typed_dns_resolver_config.typed_config");
    match &config.typed_config {
        Some(any)
            if RESOLVERS.contains(&xds_client::descriptors::type_name_of_url(&any.type_url)) =>
        {
            Ok(())
        }
        Some(any) => Err(ConfigError::at(
            p,
            format!(
                "DNS resolver {} is not supported (getaddrinfo and c-ares are)",
                any.type_url
            ),
        )),
        None => Err(ConfigError::at(p, "typed_config is required")),
    }
}

/// Upstream protocol, idle timeout, max requests per connection, max concurrent streams.
type ProtocolOptions = (UpstreamProtocol, Option<Duration>, Option<u32>, Option<u32>);

fn protocol_options(c: &cluster::Cluster, path: &str) -> Result<ProtocolOptions> {
    let (mut protocol, mut h2_streams) = legacy_protocol(c);
    let mut idle = Some(Duration::from_secs(3600));
    let mut max_rpc = None;
    for (key, any) in &c.typed_extension_protocol_options {
        let p = format!(
            "{}[{key:?}]",
            join(path, "typed_extension_protocol_options")
        );
        if xds_client::descriptors::type_name_of_url(&any.type_url) != HTTP_PROTOCOL_OPTIONS {
            return Err(ConfigError::at(
                &p,
                format!("unsupported protocol options {}", any.type_url),
            ));
        }
        let hpo = upstream_http::HttpProtocolOptions::decode(any.value.as_slice())
            .map_err(|e| ConfigError::at(&p, format!("malformed HttpProtocolOptions: {e}")))?;
        // These options replace the deprecated cluster fields.
        (protocol, h2_streams) = (UpstreamProtocol::Http1, None);
        use upstream_http::http_protocol_options::UpstreamProtocolOptions as U;
        let h2 = |o: &Option<xds_client::proto::envoy::config::core::v3::Http2ProtocolOptions>| {
            o.as_ref()
                .and_then(|h| h.max_concurrent_streams.as_ref())
                .map(|v| v.value)
        };
        match &hpo.upstream_protocol_options {
            Some(U::ExplicitHttpConfig(e)) => {
                use upstream_http::http_protocol_options::explicit_http_config::ProtocolConfig as PC;
                match &e.protocol_config {
                    Some(PC::Http2ProtocolOptions(o)) => {
                        protocol = UpstreamProtocol::Http2;
                        h2_streams = h2(&Some(o.clone()));
                    }
                    Some(PC::HttpProtocolOptions(_)) | None => protocol = UpstreamProtocol::Http1,
                    Some(PC::Http3ProtocolOptions(_)) => {
                        return Err(ConfigError::at(
                            join(&p, "explicit_http_config.http3_protocol_options"),
                            "HTTP/3 is not supported",
                        ))
                    }
                }
            }
            Some(U::UseDownstreamProtocolConfig(u)) => {
                protocol = UpstreamProtocol::UseDownstream;
                h2_streams = h2(&u.http2_protocol_options);
            }
            Some(U::AutoConfig(a)) => {
                protocol = UpstreamProtocol::Auto;
                h2_streams = h2(&a.http2_protocol_options);
            }
            None => {}
        }
        if let Some(common_opts) = &hpo.common_http_protocol_options {
            if common_opts.max_stream_duration.is_some() {
                return Err(ConfigError::at(
                    join(&p, "common_http_protocol_options.max_stream_duration"),
                    "an upstream stream duration limit is not supported yet",
                ));
            }
            idle = common::timeout(
                common_opts.idle_timeout.as_ref(),
                idle,
                &join(&p, "common_http_protocol_options.idle_timeout"),
            )?;
            max_rpc = u32_value(&common_opts.max_requests_per_connection);
        }
    }
    Ok((protocol, idle, max_rpc, h2_streams))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_factor_ramps_from_the_floor() {
        let s = SlowStart {
            window: Duration::from_secs(10),
            aggression: 1.0,
            min_weight: 0.1,
        };
        assert_eq!(
            s.factor(Duration::ZERO),
            Some(0.1),
            "max(age, 1 s) / 10 = the floor"
        );
        assert_eq!(s.factor(Duration::from_secs(5)), Some(0.5));
        assert_eq!(s.factor(Duration::from_secs(10)), None, "out of the window");
        let steep = SlowStart {
            aggression: 2.0,
            ..s
        };
        assert!((steep.factor(Duration::from_secs(4)).unwrap() - 0.4f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn primes() {
        assert!(super::is_prime(65537));
        assert!(!super::is_prime(65536));
        assert!(super::is_prime(2));
    }
}
