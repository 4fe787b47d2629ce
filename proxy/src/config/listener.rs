//! Listener translation: address, listener filters, filter chains and their match criteria,
//! and each chain's terminal network filter.

use super::common::{self, Address, Cidr};
use super::error::{join, ConfigError, Result};
use super::hcm::{self, HttpConnectionManagerConfig};
use super::secrets::Secrets;
use super::tcp_proxy::{self, TcpProxyConfig};
use super::tls::{self, ServerTls};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use xds_client::proto::envoy::config::listener::v3 as listener;

const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const SNI_CLUSTER: &str = "envoy.extensions.filters.network.sni_cluster.v3.SniCluster";

/// A listener filter that runs before filter-chain selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerFilter {
    /// Reads SNI and ALPN from a TLS ClientHello.
    TlsInspector,
    /// Detects HTTP/1.x or h2c on plaintext connections.
    HttpInspector,
    /// Restores the pre-redirect destination (SO_ORIGINAL_DST).
    OriginalDst,
    /// Upstream connections come from the downstream's address (Envoy's `original_src`).
    OriginalSrc {
        /// `SO_MARK` for those upstream sockets (0: none).
        mark: u32,
    },
    /// A discovered listener filter (`config_discovery`) whose config has not arrived
    /// and that has no default: connections are closed.
    MissingConfig,
    /// Reads a PROXY protocol v1/v2 header.
    ProxyProtocol {
        /// Accept connections without a PROXY header.
        allow_without: bool,
    },
}

/// A listener filter with its `filter_disabled` predicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredListenerFilter {
    /// The filter.
    pub filter: ListenerFilter,
    /// Connections this matches skip the filter (Istio's virtualInbound turns the
    /// inspectors off on some ports).
    pub disabled: Option<FilterPredicate>,
}

/// `ListenerFilterChainMatchPredicate`, evaluated on the connection's destination port
/// (the restored one after an `original_dst` filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterPredicate {
    /// Any member matches.
    Or(Vec<FilterPredicate>),
    /// Every member matches.
    And(Vec<FilterPredicate>),
    /// The inner one does not match.
    Not(Box<FilterPredicate>),
    /// Always.
    Any,
    /// The destination port is in `[start, end)`.
    DestinationPorts(i32, i32),
}

impl FilterPredicate {
    /// Whether a connection to `port` matches.
    pub fn matches(&self, port: Option<u16>) -> bool {
        match self {
            FilterPredicate::Or(v) => v.iter().any(|p| p.matches(port)),
            FilterPredicate::And(v) => v.iter().all(|p| p.matches(port)),
            FilterPredicate::Not(p) => !p.matches(port),
            FilterPredicate::Any => true,
            FilterPredicate::DestinationPorts(start, end) => {
                port.is_some_and(|p| (*start..*end).contains(&i32::from(p)))
            }
        }
    }
}

fn predicate(
    p: &listener::ListenerFilterChainMatchPredicate,
    path: &str,
) -> Result<FilterPredicate> {
    use listener::listener_filter_chain_match_predicate::Rule;
    let set = |rules: &[listener::ListenerFilterChainMatchPredicate], field: &str| {
        common::each(rules, path, &format!("{field}.rules"), predicate)
    };
    Ok(match &p.rule {
        Some(Rule::OrMatch(m)) => FilterPredicate::Or(set(&m.rules, "or_match")?),
        Some(Rule::AndMatch(m)) => FilterPredicate::And(set(&m.rules, "and_match")?),
        Some(Rule::NotMatch(inner)) => {
            FilterPredicate::Not(Box::new(predicate(inner, &join(path, "not_match"))?))
        }
        Some(Rule::AnyMatch(true)) => FilterPredicate::Any,
        Some(Rule::DestinationPortRange(r)) => FilterPredicate::DestinationPorts(r.start, r.end),
        Some(Rule::AnyMatch(false)) | None => {
            return Err(ConfigError::at(path, "a match rule is required"))
        }
    })
}

/// `source_type` of a filter-chain match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceType {
    /// Any source.
    Any,
    /// Source IP equals destination IP, or is loopback.
    SameIpOrLoopback,
    /// Anything else.
    External,
}

/// Compiled `filter_chain_match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainMatch {
    /// Destination port.
    pub destination_port: Option<u16>,
    /// Destination IP ranges.
    pub prefix_ranges: Vec<Cidr>,
    /// Server names: exact or `*.suffix` (lower case).
    pub server_names: Vec<String>,
    /// `raw_buffer` or `tls`.
    pub transport_protocol: Option<String>,
    /// ALPN values.
    pub application_protocols: Vec<String>,
    /// Direct (socket peer) source ranges.
    pub direct_source_prefix_ranges: Vec<Cidr>,
    /// Source type.
    pub source_type: SourceType,
    /// Source (possibly PROXY-protocol) ranges.
    pub source_prefix_ranges: Vec<Cidr>,
    /// Source ports.
    pub source_ports: Vec<u16>,
}

/// What terminates a filter chain.
#[derive(Debug, Clone)]
pub enum Terminal {
    /// HTTP connection manager.
    Http(Arc<HttpConnectionManagerConfig>),
    /// TCP proxy.
    Tcp(Arc<TcpProxyConfig>),
}

/// A network filter that runs before the terminal one.
#[derive(Debug, Clone)]
pub enum NetworkFilter {
    /// Istio's TCP metadata exchange with the downstream peer.
    MetadataExchange(Arc<crate::istio::tcp_exchange::TcpExchangeConfig>),
    /// Istio's TCP metrics (`stats.PluginConfig` as a network filter).
    IstioStats(Arc<crate::istio::stats::IstioStatsConfig>),
    /// `istio_authn`: the connection's principals are the first `spiffe://` URI SANs of
    /// the peer's and our certificates (what Istio's metrics and RBAC read).
    IstioAuthn,
    /// `envoy.filters.network.sni_cluster`: the TCP proxy's cluster is the connection's
    /// SNI when it has one (the east-west gateway's AUTO_PASSTHROUGH before Istio 1.20,
    /// whose SNIs are `outbound_.<port>_.<subset>_.<host>` cluster names).
    SniCluster,
    /// Role-based access control on the connection (`envoy.filters.network.rbac`).
    Rbac(Arc<crate::rbac::translate::NetworkRbacConfig>),
    /// A discovered filter (`config_discovery`) whose config has not arrived and that has
    /// no default: connections are closed at once (`NFCF`).
    MissingConfig(String),
}

/// A translated filter chain.
#[derive(Debug, Clone)]
pub struct FilterChain {
    /// Name (may be empty).
    pub name: String,
    /// Match criteria.
    pub matcher: ChainMatch,
    /// Downstream TLS, if any.
    pub tls: Option<Arc<ServerTls>>,
    /// Network filters before the terminal one, in order.
    pub network_filters: Vec<NetworkFilter>,
    /// The terminal filter.
    pub terminal: Terminal,
    /// TLS handshake timeout (`transport_socket_connect_timeout`).
    pub handshake_timeout: Option<Duration>,
}

/// A translated Listener.
#[derive(Debug)]
pub struct ListenerConfig {
    /// Unique name.
    pub name: String,
    /// Bound address.
    pub address: Address,
    /// `additional_addresses`: more addresses the listener also binds and serves alike
    /// (Istio's dual-stack listeners carry the IPv6 one here).
    pub additional_addresses: Vec<Address>,
    /// The IPv6 ones among these addresses that are bound IPv6-only: as Envoy binds an
    /// IPv6 address unless its `ipv4_compat` is set, which lets a dual-stack listener
    /// hold `0.0.0.0` and `[::]` on one port.
    pub ipv6_only: Vec<Address>,
    /// Stat prefix for `listener.<prefix>.` (defaults to the address).
    pub stat_prefix: String,
    /// Whether to bind a socket (false: only reachable by original-destination hand-off).
    pub bind_to_port: bool,
    /// Hand connections to the listener matching their original destination.
    pub use_original_dst: bool,
    /// IP_TRANSPARENT on the bound socket: accepts connections TPROXY delivers.
    pub transparent: bool,
    /// Listener filters in order.
    pub listener_filters: Vec<ConfiguredListenerFilter>,
    /// Timeout for listener filters (default 15 s; `None` disables).
    pub listener_filters_timeout: Option<Duration>,
    /// On timeout, continue to chain selection instead of closing.
    pub continue_on_timeout: bool,
    /// Filter chains.
    pub filter_chains: Vec<FilterChain>,
    /// Chain used when none matches.
    pub default_chain: Option<FilterChain>,
    /// Exempt from the global connection limit.
    pub ignore_global_conn_limit: bool,
    /// Per-connection buffer limit (default 1 MiB).
    pub buffer_limit: usize,
    /// `traffic_direction: INBOUND` (`/drain_listeners?inboundonly`).
    pub inbound: bool,
    /// `traffic_direction: OUTBOUND` (Istio's filters report as the client side).
    pub outbound: bool,
    /// Listener-level access logs, written when a connection ends (istiod's logs the
    /// connections no filter chain matched, `NR`).
    pub access_logs: Vec<super::access_log::AccessLogConfig>,
}

impl ListenerConfig {
    /// Every address the listener binds: its address, then the additional ones.
    pub fn addresses(&self) -> impl Iterator<Item = &Address> {
        std::iter::once(&self.address).chain(&self.additional_addresses)
    }
}

/// Formats an address the way Envoy names listener stats (`0.0.0.0_15001`, `[::]_80`).
pub fn stat_address(a: &Address) -> String {
    match a {
        Address::Socket(s) => format!(
            "{}_{}",
            if s.is_ipv6() {
                format!("[{}]", s.ip())
            } else {
                s.ip().to_string()
            },
            s.port()
        ),
        Address::Named(h, p) => format!("{h}_{p}"),
        Address::Pipe(p, _) => p.display().to_string(),
    }
}

/// Translates a Listener.
pub fn translate(l: &listener::Listener, secrets: &Secrets, path: &str) -> Result<ListenerConfig> {
    let address = common::address(
        l.address
            .as_ref()
            .ok_or_else(|| ConfigError::at(join(path, "address"), "address is required"))?,
        &join(path, "address"),
        false,
    )?;
    let additional_addresses = common::each(
        &l.additional_addresses,
        path,
        "additional_addresses",
        |a, p| additional_address(a, &address, &join(p, "address")),
    )?;
    let ipv6_only = std::iter::once(l.address.as_ref())
        .chain(l.additional_addresses.iter().map(|a| a.address.as_ref()))
        .zip(std::iter::once(&address).chain(&additional_addresses))
        .filter(|(proto, a)| matches!(a, Address::Socket(s) if s.is_ipv6()) && !ipv4_compat(*proto))
        .map(|(_, a)| a.clone())
        .collect();
    for (i, a) in additional_addresses.iter().enumerate() {
        if additional_addresses[..i].contains(a) {
            return Err(ConfigError::at(
                format!("{}[{i}].address", join(path, "additional_addresses")),
                "the listener has this address already",
            ));
        }
    }
    if l.name.is_empty() {
        return Err(ConfigError::at(
            join(path, "name"),
            "listener name is required",
        ));
    }
    let mut listener_filters = common::each(
        &l.listener_filters,
        path,
        "listener_filters",
        listener_filter,
    )?;
    let use_original_dst = l.use_original_dst.as_ref().is_some_and(|b| b.value);
    // As in Envoy, `use_original_dst` brings the original destination filter with it:
    // Istio's virtualOutbound lists no listener filters and relies on that.
    if use_original_dst
        && !listener_filters
            .iter()
            .any(|f| f.filter == ListenerFilter::OriginalDst)
    {
        listener_filters.insert(
            0,
            ConfiguredListenerFilter {
                filter: ListenerFilter::OriginalDst,
                disabled: None,
            },
        );
    }
    let filter_chains = common::each(&l.filter_chains, path, "filter_chains", |x, p| {
        filter_chain(x, secrets, p)
    })?;
    for (i, a) in filter_chains.iter().enumerate() {
        if let Some(j) = filter_chains[..i]
            .iter()
            .position(|b| b.matcher == a.matcher)
        {
            return Err(ConfigError::at(
                format!("{}[{i}].filter_chain_match", join(path, "filter_chains")),
                format!("multiple filter chains with the same matching rules are defined (same as filter_chains[{j}])"),
            ));
        }
    }
    let default_chain = l
        .default_filter_chain
        .as_ref()
        .map(|c| filter_chain(c, secrets, &join(path, "default_filter_chain")))
        .transpose()?;
    if filter_chains.is_empty() && default_chain.is_none() {
        return Err(ConfigError::at(
            join(path, "filter_chains"),
            "a listener needs at least one filter chain",
        ));
    }
    Ok(ListenerConfig {
        name: l.name.clone(),
        stat_prefix: if l.stat_prefix.is_empty() {
            stat_address(&address)
        } else {
            l.stat_prefix.clone()
        },
        address,
        additional_addresses,
        ipv6_only,
        bind_to_port: bind_to_port(l),
        use_original_dst,
        transparent: l.transparent.as_ref().is_some_and(|b| b.value),
        listener_filters,
        listener_filters_timeout: common::timeout(
            l.listener_filters_timeout.as_ref(),
            Some(Duration::from_secs(15)),
            &join(path, "listener_filters_timeout"),
        )?,
        continue_on_timeout: l.continue_on_listener_filters_timeout,
        filter_chains,
        default_chain,
        ignore_global_conn_limit: l.ignore_global_conn_limit,
        buffer_limit: l
            .per_connection_buffer_limit_bytes
            .as_ref()
            .map(|v| v.value as usize)
            .unwrap_or(1024 * 1024),
        inbound: l.traffic_direction == 1,
        outbound: l.traffic_direction == 2,
        access_logs: super::access_log::translate_all(&l.access_log, &join(path, "access_log"))?,
    })
}

/// One of `additional_addresses`: bound and served like the listener's address, so both
/// must be IP socket addresses, and different.
fn additional_address(
    a: &listener::AdditionalAddress,
    main: &Address,
    path: &str,
) -> Result<Address> {
    let address = common::address(
        a.address
            .as_ref()
            .ok_or_else(|| ConfigError::at(path, "address is required"))?,
        path,
        false,
    )?;
    if !matches!((&address, main), (Address::Socket(_), Address::Socket(_))) {
        return Err(ConfigError::at(
            path,
            "additional addresses (and the listener's own) must be IP socket addresses",
        ));
    }
    if address == *main {
        return Err(ConfigError::at(
            path,
            "the listener has this address already",
        ));
    }
    Ok(address)
}

/// `socket_address.ipv4_compat` of an address.
fn ipv4_compat(a: Option<&xds_client::proto::envoy::config::core::v3::Address>) -> bool {
    use xds_client::proto::envoy::config::core::v3::address::Address as A;
    matches!(a.and_then(|a| a.address.as_ref()), Some(A::SocketAddress(s)) if s.ipv4_compat)
}

/// Whether the listener binds its address: as in Envoy, both `bind_to_port` and the
/// deprecated `deprecated_v1.bind_to_port` (which older istiods set on virtual listeners)
/// must allow it; each defaults to true.
fn bind_to_port(l: &listener::Listener) -> bool {
    let allows =
        |b: Option<&xds_client::proto::google::protobuf::BoolValue>| b.is_none_or(|b| b.value);
    allows(l.bind_to_port.as_ref())
        && allows(
            l.deprecated_v1
                .as_ref()
                .and_then(|d| d.bind_to_port.as_ref()),
        )
}

fn listener_filter(f: &listener::ListenerFilter, path: &str) -> Result<ConfiguredListenerFilter> {
    Ok(ConfiguredListenerFilter {
        filter: listener_filter_kind(f, path)?,
        disabled: f
            .filter_disabled
            .as_ref()
            .map(|p| predicate(p, &join(path, "filter_disabled")))
            .transpose()?,
    })
}

fn listener_filter_kind(f: &listener::ListenerFilter, path: &str) -> Result<ListenerFilter> {
    use listener::listener_filter::ConfigType as C;
    let any = match &f.config_type {
        Some(C::TypedConfig(a)) => a,
        // LDS puts discovered configs (or defaults) in before translating.
        Some(C::ConfigDiscovery(_)) => return Ok(ListenerFilter::MissingConfig),
        None => return Err(ConfigError::at(path, "typed_config is required")),
    };
    let p = join(path, "typed_config");
    Ok(
        match xds_client::descriptors::type_name_of_url(&any.type_url) {
            "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector" => {
                ListenerFilter::TlsInspector
            }
            "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector" => {
                ListenerFilter::HttpInspector
            }
            "envoy.extensions.filters.listener.original_dst.v3.OriginalDst" => {
                ListenerFilter::OriginalDst
            }
            "envoy.extensions.filters.listener.original_src.v3.OriginalSrc" => {
                let o = xds_client::proto::envoy::extensions::filters::listener::original_src::v3::OriginalSrc::decode(any.value.as_slice())
                .map_err(|e| ConfigError::at(&p, e.to_string()))?;
                ListenerFilter::OriginalSrc { mark: o.mark }
            }
            "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol" => {
                let pp = xds_client::proto::envoy::extensions::filters::listener::proxy_protocol::v3::ProxyProtocol::decode(any.value.as_slice())
                .map_err(|e| ConfigError::at(&p, e.to_string()))?;
                ListenerFilter::ProxyProtocol {
                    allow_without: pp.allow_requests_without_proxy_protocol,
                }
            }
            _ => {
                return Err(ConfigError::at(
                    &p,
                    format!("unsupported listener filter {}", any.type_url),
                ))
            }
        },
    )
}

fn chain_match(m: Option<&listener::FilterChainMatch>, path: &str) -> Result<ChainMatch> {
    let m = m.cloned().unwrap_or_default();
    let port = |p: u32, field: &str| -> Result<u16> {
        u16::try_from(p).map_err(|_| ConfigError::at(join(path, field), "port out of range"))
    };
    Ok(ChainMatch {
        destination_port: m
            .destination_port
            .as_ref()
            .map(|v| port(v.value, "destination_port"))
            .transpose()?,
        prefix_ranges: common::cidrs(&m.prefix_ranges, &join(path, "prefix_ranges"))?,
        server_names: m
            .server_names
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        transport_protocol: (!m.transport_protocol.is_empty())
            .then(|| m.transport_protocol.clone()),
        application_protocols: m.application_protocols.clone(),
        direct_source_prefix_ranges: common::cidrs(
            &m.direct_source_prefix_ranges,
            &join(path, "direct_source_prefix_ranges"),
        )?,
        source_type: match m.source_type {
            1 => SourceType::SameIpOrLoopback,
            2 => SourceType::External,
            _ => SourceType::Any,
        },
        source_prefix_ranges: common::cidrs(
            &m.source_prefix_ranges,
            &join(path, "source_prefix_ranges"),
        )?,
        source_ports: m
            .source_ports
            .iter()
            .map(|p| port(*p, "source_ports"))
            .collect::<Result<_>>()?,
    })
}

fn filter_chain(c: &listener::FilterChain, secrets: &Secrets, path: &str) -> Result<FilterChain> {
    let matcher = chain_match(
        c.filter_chain_match.as_ref(),
        &join(path, "filter_chain_match"),
    )?;
    let tls = c
        .transport_socket
        .as_ref()
        .map(|ts| tls::downstream_transport_socket(ts, secrets, &join(path, "transport_socket")))
        .transpose()?
        .flatten();
    let filters_path = join(path, "filters");
    let (last, rest) = c
        .filters
        .split_last()
        .ok_or_else(|| ConfigError::at(&filters_path, "a filter chain needs a terminal filter"))?;
    use listener::filter::ConfigType as C;
    let mut network_filters = Vec::new();
    for (i, f) in rest.iter().enumerate() {
        let tp = format!("{filters_path}[{i}].typed_config");
        if let Some(C::ConfigDiscovery(_)) = &f.config_type {
            // LDS puts discovered configs (or defaults) in before translating.
            network_filters.push(NetworkFilter::MissingConfig(f.name.clone()));
            continue;
        }
        let Some(C::TypedConfig(any)) = &f.config_type else {
            return Err(ConfigError::at(
                format!("{filters_path}[{i}]"),
                "typed_config is required",
            ));
        };
        network_filters.push(
            match xds_client::descriptors::type_name_of_url(&any.type_url) {
                crate::istio::tcp_exchange::TYPE_NAME => NetworkFilter::MetadataExchange(Arc::new(
                    crate::istio::tcp_exchange::translate(&any.value, &tp)?,
                )),
                crate::istio::stats::TYPE_NAME => NetworkFilter::IstioStats(Arc::new(
                    crate::istio::stats::translate(&any.value, &tp)?,
                )),
                crate::istio::null_vm::NETWORK_TYPE_NAME => NetworkFilter::IstioStats(Arc::new(
                    crate::istio::null_vm::translate_network(&any.value, &tp)?,
                )),
                xds_client::istio::AUTHN_CONFIG => NetworkFilter::IstioAuthn,
                SNI_CLUSTER => NetworkFilter::SniCluster,
                crate::rbac::translate::NETWORK_TYPE_NAME => {
                    NetworkFilter::Rbac(Arc::new(crate::rbac::translate::network(&any.value, &tp)?))
                }
                _ => {
                    return Err(ConfigError::at(
                        &tp,
                        format!(
                            "network filter {} before the terminal filter is not supported",
                            f.name
                        ),
                    ))
                }
            },
        );
    }
    let fp = format!("{filters_path}[{}]", rest.len());
    let any = match &last.config_type {
        Some(C::TypedConfig(a)) => a,
        _ => return Err(ConfigError::at(&fp, "typed_config is required")),
    };
    let tp = join(&fp, "typed_config");
    let terminal = match xds_client::descriptors::type_name_of_url(&any.type_url) {
        HCM => {
            if let Some(i) = network_filters
                .iter()
                .position(|f| matches!(f, NetworkFilter::IstioStats(_)))
            {
                return Err(ConfigError::at(
                    format!("{filters_path}[{i}]"),
                    "Istio's TCP metrics filter is supported before tcp_proxy only",
                ));
            }
            let h = xds_client::proto::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager::decode(any.value.as_slice())
                .map_err(|e| ConfigError::at(&tp, e.to_string()))?;
            Terminal::Http(Arc::new(hcm::translate(&h, &tp)?))
        }
        TCP_PROXY => {
            let t = xds_client::proto::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy::decode(any.value.as_slice())
                .map_err(|e| ConfigError::at(&tp, e.to_string()))?;
            Terminal::Tcp(Arc::new(tcp_proxy::translate(&t, &tp)?))
        }
        _ => {
            return Err(ConfigError::at(
                &tp,
                format!("unsupported terminal network filter {}", any.type_url),
            ))
        }
    };
    Ok(FilterChain {
        name: c.name.clone(),
        matcher,
        tls,
        network_filters,
        terminal,
        handshake_timeout: c
            .transport_socket_connect_timeout
            .as_ref()
            .map(|d| common::duration(d, &join(path, "transport_socket_connect_timeout")))
            .transpose()?,
    })
}
