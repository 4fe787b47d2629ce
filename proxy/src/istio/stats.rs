//! The `istio.stats` HTTP filter (`stats.PluginConfig`): Istio's standard request
//! metrics, `istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes` and `istio_response_bytes`, labelled with both workloads of the
//! request in Istio's label order and value rules, plus the `istio_build` gauge. The
//! stats live in the `istiocustom` namespace, which `/stats/prometheus` strips, so
//! Prometheus sees the names Istio's dashboards query.

use super::workload::Workload;
use crate::access_log::record::Record;
use crate::config::error::{item, join, ConfigError, Result};
use crate::stats::Scope;
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use xds_client::istio as proto;

/// The filter's protobuf type name.
pub const TYPE_NAME: &str = proto::STATS_CONFIG;

/// The standard metrics, in Istio's registry (configs name them without `istio_`).
const METRICS: [&str; 10] = [
    "istio_requests_total",
    "istio_request_duration_milliseconds",
    "istio_request_bytes",
    "istio_response_bytes",
    "istio_request_messages_total",
    "istio_response_messages_total",
    "istio_tcp_connections_opened_total",
    "istio_tcp_connections_closed_total",
    "istio_tcp_sent_bytes_total",
    "istio_tcp_received_bytes_total",
];

/// Indexes of the gRPC message metrics in [`METRICS`].
const REQUEST_MESSAGES: usize = 4;
const RESPONSE_MESSAGES: usize = 5;
/// Indexes of the TCP metrics in [`METRICS`].
const TCP_OPENED: usize = 6;
const TCP_CLOSED: usize = 7;
const TCP_SENT: usize = 8;
const TCP_RECEIVED: usize = 9;

/// The standard labels, in the order Istio reports them.
const TAGS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// How one metric's labels differ from the standard set (`metrics[]` overrides).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelOverrides {
    /// Standard labels replaced by a value (`Some`) or removed (`None`).
    pub replaced: HashMap<&'static str, Option<Dimension>>,
    /// Labels added after the standard ones, in order.
    pub added: Vec<(String, Dimension)>,
}

/// A dimension's value: fixed at load, or one of the expressions evaluated per request
/// (by its index in [`IstioStatsConfig::expressions`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Dimension {
    /// A constant.
    Fixed(String),
    /// Computed per request or connection.
    Computed(usize),
}

/// A request's or connection's labels: the standard ones in Istio's order, and the
/// values of the config's expressions (`unknown` where one could not be evaluated).
#[derive(Debug, Clone, Default)]
pub struct Labels {
    standard: Vec<(&'static str, String)>,
    computed: Vec<String>,
}

impl Dimension {
    fn value<'a>(&'a self, labels: &'a Labels) -> &'a str {
        match self {
            Dimension::Fixed(v) => v,
            Dimension::Computed(i) => labels.computed.get(*i).map_or("unknown", String::as_str),
        }
    }
}

impl LabelOverrides {
    fn apply<'a>(&'a self, labels: &'a Labels) -> Vec<(&'a str, &'a str)> {
        let mut out: Vec<(&str, &str)> = labels
            .standard
            .iter()
            .filter_map(|(k, v)| match self.replaced.get(k) {
                Some(Some(new)) => Some((*k, new.value(labels))),
                Some(None) => None,
                None => Some((*k, v.as_str())),
            })
            .collect();
        out.extend(
            self.added
                .iter()
                .map(|(k, v)| (k.as_str(), v.value(labels))),
        );
        out
    }

    /// A custom metric's labels: only what the overrides give it, standard names in
    /// Istio's order first.
    fn custom<'a>(&'a self, labels: &'a Labels) -> Vec<(&'a str, &'a str)> {
        let mut out: Vec<(&str, &str)> = TAGS
            .iter()
            .filter_map(|t| match self.replaced.get(t) {
                Some(Some(d)) => Some((*t, d.value(labels))),
                _ => None,
            })
            .collect();
        out.extend(
            self.added
                .iter()
                .map(|(k, v)| (k.as_str(), v.value(labels))),
        );
        out
    }
}

/// A translated `stats.PluginConfig`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IstioStatsConfig {
    /// Do not take the destination service from the `host` header.
    pub disable_host_header_fallback: bool,
    /// `reporter: SERVER_GATEWAY` (a waypoint) instead of the listener's direction.
    pub gateway: bool,
    /// Metrics not reported (`drop`), by index into the standard list.
    pub dropped: Vec<usize>,
    /// Per standard metric (same index), its label overrides.
    pub overrides: Vec<LabelOverrides>,
    /// How often a TCP connection's byte counts are reported while it lasts (istio/proxy's
    /// default is 5 s), so long-lived connections show up before they close.
    pub tcp_reporting_period: std::time::Duration,
    /// The dimension expressions evaluated per request ([`Dimension::Computed`]).
    pub expressions: Vec<super::cel::Expr>,
    /// Metrics the config defines (`definitions`); their overrides follow the standard
    /// ones' in `overrides`.
    pub custom: Vec<CustomMetric>,
}

/// A metric of the config's own (`definitions`): `istio_<name>`, its kind, and the value
/// each request or connection adds (counter), sets (gauge) or records (histogram). Its
/// only labels are the dimensions `metrics[]` gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomMetric {
    /// The full name (`istio_<name>`).
    pub name: String,
    /// COUNTER, GAUGE or HISTOGRAM.
    pub kind: CustomKind,
    /// The value.
    pub value: Dimension,
}

/// The kind of a custom metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomKind {
    /// Adds the value.
    Counter,
    /// Sets the value.
    Gauge,
    /// Records the value.
    Histogram,
}

/// Compiles an expression into a dimension: a constant folds at load.
fn compile_dimension(e: super::cel::Expr, expressions: &mut Vec<super::cel::Expr>) -> Dimension {
    match e.constant() {
        Some(v) => Dimension::Fixed(v),
        None => {
            expressions.push(e);
            Dimension::Computed(expressions.len() - 1)
        }
    }
}

/// Translates the filter's config.
pub fn translate(bytes: &[u8], path: &str) -> Result<IstioStatsConfig> {
    let c = proto::PluginConfig::decode(bytes).map_err(|e| ConfigError::at(path, e.to_string()))?;
    let mut out = IstioStatsConfig {
        disable_host_header_fallback: c.disable_host_header_fallback,
        gateway: match c.reporter {
            0 => false,
            1 => true,
            n => {
                return Err(ConfigError::at(
                    join(path, "reporter"),
                    format!("unknown reporter {n}"),
                ))
            }
        },
        dropped: Vec::new(),
        overrides: vec![LabelOverrides::default(); METRICS.len()],
        expressions: Vec::new(),
        custom: Vec::new(),
        tcp_reporting_period: match &c.tcp_reporting_duration {
            Some(d) => {
                let d = crate::config::common::duration(d, &join(path, "tcp_reporting_duration"))?;
                if d.is_zero() {
                    return Err(ConfigError::at(
                        join(path, "tcp_reporting_duration"),
                        "the reporting period must be positive",
                    ));
                }
                d
            }
            None => std::time::Duration::from_secs(5),
        },
    };
    for (i, d) in c.definitions.iter().enumerate() {
        let dp = item(path, "definitions", i);
        if d.name.is_empty()
            || METRICS
                .iter()
                .any(|n| n.strip_prefix("istio_") == Some(&d.name))
        {
            return Err(ConfigError::at(
                join(&dp, "name"),
                "a custom metric needs a name of its own",
            ));
        }
        let value = super::cel::parse(&d.value)
            .map_err(|e| ConfigError::at(join(&dp, "value"), format!("{:?}: {e}", d.value)))?;
        let kind = match d.r#type {
            0 => CustomKind::Counter,
            1 => CustomKind::Gauge,
            2 => CustomKind::Histogram,
            n => {
                return Err(ConfigError::at(
                    join(&dp, "type"),
                    format!("unknown type {n}"),
                ))
            }
        };
        out.custom.push(CustomMetric {
            name: format!("istio_{}", d.name),
            kind,
            value: compile_dimension(value, &mut out.expressions),
        });
        out.overrides.push(LabelOverrides::default());
    }
    let all = METRICS.len() + out.custom.len();
    for (i, m) in c.metrics.iter().enumerate() {
        let mp = item(path, "metrics", i);
        let targets: Vec<usize> = if m.name.is_empty() {
            (0..all).collect()
        } else {
            let standard = METRICS
                .iter()
                .position(|n| n.strip_prefix("istio_") == Some(m.name.as_str()));
            let custom = out
                .custom
                .iter()
                .position(|c| c.name.strip_prefix("istio_") == Some(m.name.as_str()))
                .map(|i| METRICS.len() + i);
            match standard.or(custom) {
                Some(idx) => vec![idx],
                None => {
                    return Err(ConfigError::at(
                        join(&mp, "name"),
                        format!("{} is neither a standard Istio metric nor defined", m.name),
                    ))
                }
            }
        };
        if m.drop {
            out.dropped.extend(targets);
            continue;
        }
        for tag in &m.tags_to_remove {
            // Istio skips labels it does not know; so do we.
            if let Some(t) = TAGS.iter().find(|t| *t == tag) {
                for &idx in &targets {
                    out.overrides[idx].replaced.insert(t, None);
                }
            }
        }
        let mut names: Vec<&String> = m.dimensions.keys().collect();
        names.sort();
        for name in names {
            let expr = &m.dimensions[name];
            let dimension = match super::cel::parse(expr) {
                Ok(e) => Some(compile_dimension(e, &mut out.expressions)),
                // As istio/proxy: a dimension whose expression does not parse is left
                // out of the metric (and said so in the log).
                Err(e) => {
                    tracing::warn!(
                        "{}[{name}]: {expr:?} does not parse ({e}); the dimension is left out",
                        join(&mp, "dimensions")
                    );
                    None
                }
            };
            for &idx in &targets {
                let o = &mut out.overrides[idx];
                match (TAGS.iter().find(|t| *t == name), &dimension) {
                    (Some(t), d) => {
                        o.replaced.insert(t, d.clone());
                    }
                    (None, Some(d)) => o.added.push((name.clone(), d.clone())),
                    (None, None) => {}
                }
            }
        }
    }
    Ok(out)
}

/// Who reports a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reporter {
    /// An outbound listener of a sidecar.
    Client,
    /// An inbound listener of a sidecar.
    Server,
    /// A waypoint.
    Gateway,
}

/// The filter, ready to serve.
#[derive(Debug)]
pub struct IstioStats {
    config: Arc<IstioStatsConfig>,
    reporter: Reporter,
    local: Workload,
    scope: Scope,
    /// `xds.node` as expressions read it (only built when the config has some).
    node: serde_json::Value,
}

fn or<'a>(v: &'a str, fallback: &'a str) -> &'a str {
    if v.is_empty() {
        fallback
    } else {
        v
    }
}

/// The namespace in a SPIFFE principal (`.../ns/<namespace>/sa/...`).
fn namespace_of(principal: &str) -> Option<&str> {
    let rest = &principal[principal.find("/ns/")? + 4..];
    Some(rest.split('/').next().unwrap_or(rest))
}

/// What identifies both sides of a request.
struct Sides<'a> {
    peer: Option<&'a Workload>,
    peer_san: &'a str,
    local_san: &'a str,
    service_host: String,
    service_name: String,
}

impl IstioStats {
    /// The filter for a listener (`outbound`: its traffic direction is OUTBOUND), on the
    /// node with `metadata`; records `istio_build` as Istio does when the filter is
    /// created.
    pub fn new(
        config: Arc<IstioStatsConfig>,
        metadata: &xds_client::proto::google::protobuf::Struct,
        outbound: bool,
        root: &Scope,
    ) -> Self {
        let reporter = match (config.gateway, outbound) {
            (true, _) => Reporter::Gateway,
            (false, true) => Reporter::Client,
            (false, false) => Reporter::Server,
        };
        let scope = root.child("istiocustom");
        let version = match metadata
            .fields
            .get("ISTIO_VERSION")
            .and_then(|v| v.kind.as_ref())
        {
            Some(xds_client::proto::google::protobuf::value::Kind::StringValue(s)) => s.as_str(),
            _ => "",
        };
        scope
            .gauge_with_tags(
                "istio_build",
                &[("component", "proxy"), ("tag", or(version, "unknown"))],
            )
            .set(1);
        let node = if config.expressions.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!({"id": super::local_node().0, "metadata": super::workload::node_json(metadata)})
        };
        IstioStats {
            local: Workload::from_node(metadata, &[]),
            node,
            config,
            reporter,
            scope,
        }
    }

    fn sides<'a>(&self, r: &'a Record, endpoint_peer: &'a Option<Workload>) -> Sides<'a> {
        let facts = &r.istio;
        let peer = match self.reporter {
            Reporter::Client => facts.peers.upstream.as_deref().or(endpoint_peer.as_ref()),
            Reporter::Server | Reporter::Gateway => facts.peers.downstream.as_deref(),
        };
        let mut service_host = String::new();
        let mut service_name = String::new();
        if !self.config.disable_host_header_fallback {
            service_host = r.authority.as_deref().unwrap_or_default().to_string();
            service_name = service_host.clone();
        }
        let cluster = r.upstream_cluster.as_deref().unwrap_or("");
        match (r.route_name.as_deref(), cluster) {
            (Some("block_all"), _) => service_name = "BlackHoleCluster".into(),
            (Some("allow_any"), _) => service_name = "PassthroughCluster".into(),
            (
                _,
                "BlackHoleCluster"
                | "PassthroughCluster"
                | "InboundPassthroughCluster"
                | "InboundPassthroughClusterIpv4"
                | "InboundPassthroughClusterIpv6",
            ) => service_name = cluster.into(),
            _ => {
                if let Some(m) = facts
                    .cluster
                    .as_deref()
                    .filter(|m| m.service_host.is_some() || m.service_name.is_some())
                {
                    if let Some(h) = &m.service_host {
                        service_host = h.clone();
                    }
                    service_name = match &m.service_name {
                        Some(n) => n.clone(),
                        None => service_host.split('.').next().unwrap_or("").to_string(),
                    };
                }
            }
        }
        let (peer_san, local_san) = match self.reporter {
            Reporter::Client => (
                r.upstream_peer_uri_san.as_deref().unwrap_or(""),
                r.upstream_local_uri_san.as_deref().unwrap_or(""),
            ),
            // `istio_authn`'s principals when it found any, else the certificates'
            // first URI SANs.
            Reporter::Server | Reporter::Gateway => match facts
                .principals
                .as_deref()
                .filter(|(p, l)| !p.is_empty() || !l.is_empty())
            {
                Some((p, l)) => (p.as_str(), l.as_str()),
                None => (
                    r.peer_uri_san.as_deref().unwrap_or(""),
                    r.local_uri_san.as_deref().unwrap_or(""),
                ),
            },
        };
        Sides {
            peer,
            peer_san,
            local_san,
            service_host,
            service_name,
        }
    }

    /// The standard labels of a request (`http`: `Some` with its gRPC status, if gRPC) or
    /// TCP connection (`http: None`), in Istio's order.
    fn labels(&self, r: &Record, http: Option<Option<&str>>) -> Labels {
        let endpoint_peer = match self.reporter {
            Reporter::Client => r
                .istio
                .upstream_workload
                .as_deref()
                .and_then(Workload::from_endpoint),
            _ => None,
        };
        let s = self.sides(r, &endpoint_peer);
        let empty = Workload::default();
        let peer = s.peer.unwrap_or(&empty);
        let peer_namespace = namespace_of(s.peer_san)
            .filter(|n| !n.is_empty())
            .unwrap_or(&peer.namespace)
            .to_string();
        let local = &self.local;
        let unknown = |v: &str| or(v, "unknown").to_string();
        let mut t: Vec<(&'static str, String)> = Vec::with_capacity(TAGS.len());
        let reporter = match self.reporter {
            Reporter::Client => "source",
            Reporter::Server => "destination",
            Reporter::Gateway => "waypoint",
        };
        t.push(("reporter", reporter.into()));
        let mutual_tls = match self.reporter {
            Reporter::Client => None,
            _ => Some(!s.peer_san.is_empty() && !s.local_san.is_empty()),
        };
        if self.reporter == Reporter::Client {
            t.push(("source_workload", local.workload.clone()));
            t.push(("source_canonical_service", local.canonical_name.clone()));
            t.push((
                "source_canonical_revision",
                local.canonical_revision.clone(),
            ));
            t.push(("source_workload_namespace", local.namespace.clone()));
            t.push(("source_principal", unknown(s.local_san)));
            t.push(("source_app", local.app.clone()));
            t.push(("source_version", local.version.clone()));
            t.push(("source_cluster", local.cluster.clone()));
            t.push(("destination_workload", unknown(&peer.workload)));
            t.push(("destination_workload_namespace", unknown(&peer_namespace)));
            t.push(("destination_principal", unknown(s.peer_san)));
            t.push(("destination_app", unknown(&peer.app)));
            t.push(("destination_version", unknown(&peer.version)));
            t.push(("destination_service", unknown(&s.service_host)));
            t.push((
                "destination_canonical_service",
                unknown(&peer.canonical_name),
            ));
            t.push((
                "destination_canonical_revision",
                or(&peer.canonical_revision, "latest").into(),
            ));
            t.push(("destination_service_name", unknown(&s.service_name)));
            t.push(("destination_service_namespace", unknown(&peer_namespace)));
            t.push(("destination_cluster", unknown(&peer.cluster)));
        } else {
            t.push(("source_workload", unknown(&peer.workload)));
            t.push(("source_canonical_service", unknown(&peer.canonical_name)));
            t.push((
                "source_canonical_revision",
                or(&peer.canonical_revision, "latest").into(),
            ));
            t.push(("source_workload_namespace", unknown(&peer_namespace)));
            t.push(("source_principal", unknown(s.peer_san)));
            t.push(("source_app", unknown(&peer.app)));
            t.push(("source_version", unknown(&peer.version)));
            t.push(("source_cluster", unknown(&peer.cluster)));
            t.push(("destination_workload", local.workload.clone()));
            t.push(("destination_workload_namespace", local.namespace.clone()));
            t.push(("destination_principal", unknown(s.local_san)));
            t.push(("destination_app", local.app.clone()));
            t.push(("destination_version", local.version.clone()));
            t.push((
                "destination_service",
                or(&s.service_host, &local.canonical_name).into(),
            ));
            t.push((
                "destination_canonical_service",
                local.canonical_name.clone(),
            ));
            t.push((
                "destination_canonical_revision",
                local.canonical_revision.clone(),
            ));
            t.push((
                "destination_service_name",
                or(&s.service_name, &local.canonical_name).into(),
            ));
            t.push(("destination_service_namespace", local.namespace.clone()));
            t.push(("destination_cluster", local.cluster.clone()));
        }
        match http {
            Some(grpc_status) => {
                let protocol = if grpc_status.is_some() {
                    "grpc"
                } else {
                    "http"
                };
                t.push(("request_protocol", protocol.into()));
                t.push(("response_code", r.response_code.to_string()));
                t.push(("grpc_response_status", grpc_status.unwrap_or("").into()));
            }
            None => t.push(("request_protocol", "tcp".into())),
        }
        t.push(("response_flags", r.flags.to_string()));
        t.push((
            "connection_security_policy",
            match mutual_tls {
                Some(true) => "mutual_tls",
                Some(false) => "none",
                None => "unknown",
            }
            .into(),
        ));
        let computed = if self.config.expressions.is_empty() {
            Vec::new()
        } else {
            let attributes = self.attributes(r, peer, http.is_some());
            self.config
                .expressions
                .iter()
                .map(|e| e.label(&attributes).unwrap_or_else(|| "unknown".into()))
                .collect()
        };
        Labels {
            standard: t,
            computed,
        }
    }

    /// The attributes expressions read, as istio/proxy names them: the node (`xds.node`),
    /// route, cluster and its metadata (`xds.*`), the request (`request.*`), the response
    /// code, and the peer (`filter_state.upstream_peer` / `downstream_peer`).
    fn attributes(&self, r: &Record, peer: &Workload, http: bool) -> serde_json::Value {
        use serde_json::json;
        let peer = peer.attributes();
        let services = r.istio.cluster.as_deref().map_or(json!([]), |c| {
            json!([{"host": c.service_host.clone().unwrap_or_default(),
                "name": c.service_name.clone().unwrap_or_default()}])
        });
        let peer_key = if self.reporter == Reporter::Client {
            "upstream_peer"
        } else {
            "downstream_peer"
        };
        let mut all = json!({
            "xds": {
                "node": self.node.clone(),
                "route_name": r.route_name.as_deref().unwrap_or_default(),
                "cluster_name": r.upstream_cluster.as_deref().unwrap_or_default(),
                "cluster_metadata": {"filter_metadata": {"istio": {"services": services}}},
            },
            "filter_state": {peer_key: peer.clone()},
            peer_key: peer,
        });
        if let Some(m) = all.as_object_mut() {
            super::attributes::add(m, r, http);
        }
        all
    }

    /// Reports a finished request. `grpc` says whether it was a gRPC request; its status
    /// comes from the response trailers, else the headers (trailers-only replies);
    /// `messages` are the gRPC message counts a grpc_stats filter shared, if any.
    pub fn record(
        &self,
        r: &Record,
        grpc: bool,
        (request_bytes, response_bytes): (u64, u64),
        messages: Option<&crate::http::grpc_stats::MessageCounts>,
    ) {
        let status = grpc.then(|| r.grpc_status().unwrap_or(""));
        let labels = self.labels(r, Some(status));
        let values = [
            1,
            r.duration.as_millis() as u64,
            request_bytes,
            response_bytes,
        ];
        if let Some(m) = messages.filter(|_| grpc) {
            use std::sync::atomic::Ordering::Relaxed;
            self.count(REQUEST_MESSAGES, &labels, m.request.load(Relaxed));
            self.count(RESPONSE_MESSAGES, &labels, m.response.load(Relaxed));
        }
        for (idx, value) in values.into_iter().enumerate() {
            if idx == 0 {
                self.count(idx, &labels, 1);
            } else if let Some(tags) = self.tags(idx, &labels) {
                self.scope
                    .histogram_with_tags(METRICS[idx], &tags)
                    .record(value);
            }
        }
        self.record_custom(&labels);
    }

    /// Reports the config's own metrics for a finished request or connection.
    fn record_custom(&self, labels: &Labels) {
        for (i, m) in self.config.custom.iter().enumerate() {
            let idx = METRICS.len() + i;
            if self.config.dropped.contains(&idx) {
                continue;
            }
            let Ok(value) = m.value.value(labels).parse::<f64>() else {
                continue;
            };
            let tags = self.config.overrides[idx].custom(labels);
            match m.kind {
                CustomKind::Counter => self
                    .scope
                    .counter_with_tags(&m.name, &tags)
                    .add(value.max(0.0) as u64),
                CustomKind::Gauge => self.scope.gauge_with_tags(&m.name, &tags).set(value as i64),
                CustomKind::Histogram => self
                    .scope
                    .histogram_with_tags(&m.name, &tags)
                    .record(value.max(0.0) as u64),
            }
        }
    }

    /// Metric `idx`'s labels after its overrides, `None` when it is dropped.
    fn tags<'a>(&'a self, idx: usize, labels: &'a Labels) -> Option<Vec<(&'a str, &'a str)>> {
        (!self.config.dropped.contains(&idx)).then(|| self.config.overrides[idx].apply(labels))
    }

    /// Adds `n` to counter metric `idx` under `labels`.
    fn count(&self, idx: usize, labels: &Labels, n: u64) {
        if let Some(tags) = self.tags(idx, labels) {
            self.scope.counter_with_tags(METRICS[idx], &tags).add(n);
        }
    }

    /// Reports a TCP connection opened (once its peer is known, or it failed): returns
    /// the labels its byte counts and close are reported under.
    pub fn tcp_opened(&self, r: &Record) -> Labels {
        let labels = self.labels(r, None);
        self.count(TCP_OPENED, &labels, 1);
        labels
    }

    /// Reports bytes a TCP connection moved since the last report.
    pub fn tcp_bytes(&self, labels: &Labels, sent: u64, received: u64) {
        self.count(TCP_SENT, labels, sent);
        self.count(TCP_RECEIVED, labels, received);
    }

    /// How often this filter reports a live TCP connection's bytes.
    pub fn tcp_reporting_period(&self) -> std::time::Duration {
        self.config
            .tcp_reporting_period
            .max(std::time::Duration::from_millis(1))
    }

    /// Reports a TCP connection closed.
    pub fn tcp_closed(&self, labels: &Labels) {
        self.count(TCP_CLOSED, labels, 1);
        self.record_custom(labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Result<IstioStatsConfig> {
        let c: proto::PluginConfig = xds_client::json::decode(json, TYPE_NAME, false).unwrap();
        translate(&c.encode_to_vec(), "stats")
    }

    #[test]
    fn overrides_replace_remove_and_add_labels() {
        let c = config(serde_json::json!({"metrics": [
            {"name": "request_duration_milliseconds", "drop": true},
            {"tags_to_remove": ["response_flags", "not_a_label"]},
            {"name": "requests_total", "dimensions": {"reporter": "'proxy'", "extra": "\"x\""}}
        ]}))
        .unwrap();
        assert_eq!(c.dropped, vec![1]);
        let labels = Labels {
            standard: vec![
                ("reporter", "source".to_string()),
                ("response_flags", "-".to_string()),
            ],
            computed: vec![],
        };
        assert_eq!(
            c.overrides[0].apply(&labels),
            vec![("reporter", "proxy"), ("extra", "x")]
        );
        assert_eq!(c.overrides[2].apply(&labels), vec![("reporter", "source")]);
    }

    #[test]
    fn expressions_and_definitions_compile_and_bad_ones_are_rejected_by_path() {
        let c = config(serde_json::json!({"metrics": [{"dimensions": {
            "a": "request.protocol", "b": "'x' + 'y'", "c": "cannot _ parse"}}]}))
        .unwrap();
        assert_eq!(
            c.expressions.len(),
            1,
            "constants fold, unparsable ones are left out"
        );
        assert_eq!(c.overrides[0].added.len(), 2);
        let c = config(
            serde_json::json!({"definitions": [{"name": "x", "value": "1"}],
            "metrics": [{"name": "x", "dimensions": {"reporter": "'r'"}}]}),
        )
        .unwrap();
        assert_eq!(c.custom.len(), 1);
        assert_eq!(c.custom[0].value, Dimension::Fixed("1".into()));
        let e = config(serde_json::json!({"definitions": [{"name": "x", "value": "1 +"}]}))
            .unwrap_err();
        assert!(e.to_string().contains("stats.definitions[0].value"), "{e}");
        let e =
            config(serde_json::json!({"definitions": [{"name": "requests_total", "value": "1"}]}))
                .unwrap_err();
        assert!(e.to_string().contains("stats.definitions[0].name"), "{e}");
        let e =
            config(serde_json::json!({"metrics": [{"name": "nope", "drop": true}]})).unwrap_err();
        assert!(e.to_string().contains("stats.metrics[0].name"), "{e}");
    }

    #[test]
    fn spiffe_namespaces() {
        assert_eq!(
            namespace_of("spiffe://cluster.local/ns/default/sa/x"),
            Some("default")
        );
        assert_eq!(namespace_of("spiffe://cluster.local/sa/x"), None);
    }
}
