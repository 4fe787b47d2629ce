//! The Zipkin tracer (`envoy.tracers.zipkin`): B3 context in and out, one span per
//! request, and spans reported in batches as Zipkin v2 JSON to the collector cluster.

use crate::config::error::{join, ConfigError, Result};
use http_body_util::BodyExt;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use xds_client::proto::envoy::config::trace::v3::ZipkinConfig as ZipkinProto;

const TYPE_NAME: &str = "envoy.config.trace.v3.ZipkinConfig";
/// Envoy's defaults: a batch goes out at 5 spans, or every 5 seconds.
const MIN_FLUSH_SPANS: usize = 5;
const FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// The server whose clusters reach the collectors (one per process).
static SERVER: std::sync::OnceLock<std::sync::Weak<crate::server::Server>> =
    std::sync::OnceLock::new();

/// The proxy's address, which spans name as their local endpoint.
pub fn local_ip() -> std::net::IpAddr {
    SERVER
        .get()
        .and_then(|s| s.upgrade())
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |s| {
            s.local_address()
        })
}

/// Records the server span batches go out through.
pub fn set_server(server: &Arc<crate::server::Server>) {
    let _ = SERVER.set(Arc::downgrade(server));
}

/// A translated `ZipkinConfig`, with the batch of spans waiting for its collector.
#[derive(Debug)]
pub struct ZipkinConfig {
    /// The collector's cluster.
    pub collector_cluster: String,
    /// The collector's path.
    pub collector_endpoint: String,
    /// The `host` the collector is sent.
    pub collector_hostname: String,
    /// New traces get 128-bit ids.
    pub trace_id_128bit: bool,
    /// A server span takes the client's span id instead of a child id.
    pub shared_span_context: bool,
    pending: Mutex<Vec<String>>,
    flusher: std::sync::OnceLock<tokio::sync::Notify>,
}

/// Translates a tracer (`name` + `typed_config`) at `path`: Zipkin only.
pub fn provider(
    p: &xds_client::proto::envoy::config::trace::v3::tracing::Http,
    path: &str,
) -> Result<Arc<ZipkinConfig>> {
    use xds_client::proto::envoy::config::trace::v3::tracing::http::ConfigType;
    let any = match &p.config_type {
        Some(ConfigType::TypedConfig(a)) => a,
        None => return Err(ConfigError::at(path, "a tracer needs a typed_config")),
    };
    let tp = join(path, "typed_config");
    if xds_client::descriptors::type_name_of_url(&any.type_url) != TYPE_NAME {
        return Err(ConfigError::at(
            &tp,
            format!("unsupported tracer {} (Zipkin is supported)", any.type_url),
        ));
    }
    let z = ZipkinProto::decode(any.value.as_slice())
        .map_err(|e| ConfigError::at(&tp, e.to_string()))?;
    let at = |f: &str| join(&tp, f);
    if z.collector_endpoint_version != 1 {
        return Err(ConfigError::at(
            at("collector_endpoint_version"),
            "only HTTP_JSON is supported",
        ));
    }
    if z.collector_cluster.is_empty() || z.collector_endpoint.is_empty() {
        return Err(ConfigError::at(
            at("collector_cluster"),
            "collector_cluster and collector_endpoint are required",
        ));
    }
    Ok(Arc::new(ZipkinConfig {
        collector_hostname: if z.collector_hostname.is_empty() {
            z.collector_cluster.clone()
        } else {
            z.collector_hostname.clone()
        },
        collector_cluster: z.collector_cluster,
        collector_endpoint: z.collector_endpoint,
        trace_id_128bit: z.trace_id_128bit,
        shared_span_context: z.shared_span_context.as_ref().is_none_or(|b| b.value),
        pending: Mutex::new(Vec::new()),
        flusher: std::sync::OnceLock::new(),
    }))
}

/// A B3 span context: the trace, the span, its parent, and whether it is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// High 64 bits of a 128-bit trace id.
    pub trace_high: Option<u64>,
    /// (Low 64 bits of) the trace id.
    pub trace: u64,
    /// This span.
    pub span: u64,
    /// The parent span.
    pub parent: Option<u64>,
    /// Sampled.
    pub sampled: bool,
    /// A server span sharing its caller's span id (reported with `shared: true`).
    pub shared: bool,
}

fn hex64(s: &str) -> Option<u64> {
    (s.len() == 16)
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

fn trace_id(s: &str) -> Option<(Option<u64>, u64)> {
    match s.len() {
        16 => Some((None, hex64(s)?)),
        32 => Some((Some(hex64(&s[..16])?), hex64(&s[16..])?)),
        _ => None,
    }
}

fn sampled_flag(s: &str) -> Option<bool> {
    match s {
        "1" | "true" | "d" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// What the request brings: a parent context, and/or a sampling decision.
#[derive(Debug, Default)]
struct Incoming {
    parent: Option<(Option<u64>, u64, u64)>,
    sampled: Option<bool>,
}

fn incoming(h: &http::HeaderMap) -> Incoming {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    if let Some(b3) = get("b3") {
        let parts: Vec<&str> = b3.split('-').collect();
        return match parts.as_slice() {
            [flag] => Incoming {
                parent: None,
                sampled: sampled_flag(flag),
            },
            [t, s, rest @ ..] => Incoming {
                parent: trace_id(t)
                    .zip(hex64(s))
                    .map(|((hi, lo), span)| (hi, lo, span)),
                sampled: rest.first().and_then(|f| sampled_flag(f)),
            },
            _ => Incoming::default(),
        };
    }
    let sampled = if get("x-b3-flags") == Some("1") {
        Some(true)
    } else {
        get("x-b3-sampled").and_then(sampled_flag)
    };
    let parent = get("x-b3-traceid")
        .and_then(trace_id)
        .zip(get("x-b3-spanid").and_then(hex64))
        .map(|((hi, lo), span)| (hi, lo, span));
    Incoming { parent, sampled }
}

fn nonzero() -> u64 {
    loop {
        let v = rand::random::<u64>();
        if v != 0 {
            return v;
        }
    }
}

impl ZipkinConfig {
    /// The span context of a request: a child of the incoming B3 context (or, for a
    /// server span with shared contexts, that very span), else a new trace whose root
    /// span id is the trace id's low half. Sampled as the caller said, else `traced`.
    pub fn start(&self, headers: &http::HeaderMap, server: bool, traced: bool) -> Context {
        let came = incoming(headers);
        let sampled = came.sampled.unwrap_or(traced);
        match came.parent {
            Some((hi, lo, span)) if server && self.shared_span_context => Context {
                trace_high: hi,
                trace: lo,
                span,
                parent: hex_header(headers, "x-b3-parentspanid"),
                sampled,
                shared: true,
            },
            Some((hi, lo, span)) => Context {
                trace_high: hi,
                trace: lo,
                span: nonzero(),
                parent: Some(span),
                sampled,
                shared: false,
            },
            None => {
                let trace = nonzero();
                Context {
                    trace_high: self.trace_id_128bit.then(nonzero),
                    trace,
                    span: trace,
                    parent: None,
                    sampled,
                    shared: false,
                }
            }
        }
    }
}

fn hex_header(h: &http::HeaderMap, name: &str) -> Option<u64> {
    h.get(name).and_then(|v| v.to_str().ok()).and_then(hex64)
}

impl Context {
    fn trace_hex(&self) -> String {
        match self.trace_high {
            Some(hi) => format!("{hi:016x}{:016x}", self.trace),
            None => format!("{:016x}", self.trace),
        }
    }

    /// Writes the B3 headers the upstream gets.
    pub fn inject(&self, headers: &mut http::HeaderMap) {
        use http::HeaderValue;
        let set = |h: &mut http::HeaderMap, n: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(n, v);
            }
        };
        headers.remove("b3");
        set(headers, "x-b3-traceid", self.trace_hex());
        set(headers, "x-b3-spanid", format!("{:016x}", self.span));
        match self.parent {
            Some(p) => set(headers, "x-b3-parentspanid", format!("{p:016x}")),
            None => {
                headers.remove("x-b3-parentspanid");
            }
        }
        set(
            headers,
            "x-b3-sampled",
            (if self.sampled { "1" } else { "0" }).into(),
        );
    }
}

/// A finished span, ready to report.
pub struct Span<'a> {
    /// Its context.
    pub context: Context,
    /// Operation name.
    pub name: &'a str,
    /// SERVER (inbound listener) or CLIENT.
    pub server: bool,
    /// Start.
    pub start: SystemTime,
    /// Duration.
    pub duration: Duration,
    /// The node's cluster (`localEndpoint.serviceName`).
    pub service: &'a str,
    /// The proxy's address (`localEndpoint.ipv4`).
    pub local_ip: std::net::IpAddr,
    /// Tags, in order.
    pub tags: Vec<(String, String)>,
}

fn micros(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

impl Span<'_> {
    /// The span in Zipkin's v2 JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let start = micros(self.start);
        let duration = self.duration.as_micros();
        let tags: serde_json::Map<String, serde_json::Value> = self
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let ip = match self.local_ip {
            std::net::IpAddr::V4(v4) => ("ipv4", v4.to_string()),
            std::net::IpAddr::V6(v6) => ("ipv6", v6.to_string()),
        };
        let mut span = serde_json::json!({
            "traceId": self.context.trace_hex(),
            "id": format!("{:016x}", self.context.span),
            "name": self.name,
            "kind": if self.server { "SERVER" } else { "CLIENT" },
            "timestamp": start,
            "duration": duration,
            "annotations": [{"value": if self.server { "ss" } else { "cr" }, "timestamp": start + duration}],
            "localEndpoint": {"serviceName": self.service, ip.0: ip.1, "port": 0},
            "tags": tags,
        });
        if let Some(p) = self.context.parent {
            span["parentId"] = serde_json::Value::String(format!("{p:016x}"));
        }
        if self.context.shared {
            span["shared"] = serde_json::Value::Bool(true);
        }
        span
    }
}

impl ZipkinConfig {
    /// Queues a sampled span; a batch goes out at [`MIN_FLUSH_SPANS`] or after
    /// [`FLUSH_INTERVAL`], on a task that finds the collector cluster then.
    pub fn report(self: &Arc<Self>, span: &Span<'_>) {
        let full = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.push(span.to_json().to_string());
            pending.len() >= MIN_FLUSH_SPANS
        };
        let mut first = false;
        let notify = self.flusher.get_or_init(|| {
            first = true;
            tokio::sync::Notify::new()
        });
        if let (true, Some(server)) = (first, SERVER.get()) {
            let me = self.clone();
            let server = server.clone();
            tokio::spawn(async move { me.flush_loop(server).await });
        }
        if full {
            notify.notify_one();
        }
    }

    async fn flush_loop(self: Arc<Self>, server: std::sync::Weak<crate::server::Server>) {
        let Some(notify) = self.flusher.get() else {
            return;
        };
        loop {
            let _ = tokio::time::timeout(FLUSH_INTERVAL, notify.notified()).await;
            let batch =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
            let Some(server) = server.upgrade() else {
                return;
            };
            if batch.is_empty() {
                continue;
            }
            let Some(cluster) = server.clusters.get(&self.collector_cluster) else {
                tracing::debug!(target: "tracing", "zipkin: collector cluster {} not found; {} spans dropped", self.collector_cluster, batch.len());
                continue;
            };
            let body = format!("[{}]", batch.join(","));
            let request = http::Request::post(self.collector_endpoint.as_str())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(
                    http_body_util::Full::new(bytes::Bytes::from(body))
                        .map_err(|e| match e {})
                        .boxed(),
                );
            if let Ok(request) = request {
                let send = crate::http::cluster_call::call(
                    &cluster,
                    request,
                    crate::upstream::pool::Protocol::Http1,
                    self.collector_hostname.clone(),
                );
                let _ = tokio::time::timeout(FLUSH_INTERVAL, send).await;
            }
        }
    }
}

/// Translates the bootstrap's `tracing` (its `http` tracer): Zipkin, or another kind
/// kept by name (refused where a connection manager would use it).
pub fn bootstrap(
    t: &xds_client::proto::envoy::config::trace::v3::Tracing,
    path: &str,
) -> Result<super::BootstrapTracer> {
    use xds_client::proto::envoy::config::trace::v3::tracing::http::ConfigType;
    let Some(h) = &t.http else {
        return Ok(super::BootstrapTracer::None);
    };
    match &h.config_type {
        Some(ConfigType::TypedConfig(a))
            if xds_client::descriptors::type_name_of_url(&a.type_url) != TYPE_NAME =>
        {
            Ok(super::BootstrapTracer::Unsupported(a.type_url.clone()))
        }
        _ => Ok(super::BootstrapTracer::Zipkin(provider(
            h,
            &join(path, "http"),
        )?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b3_headers_parse_and_a_child_keeps_the_trace() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-b3-traceid",
            "463ac35c9f6413ad48485a3953bb6124".parse().unwrap(),
        );
        h.insert("x-b3-spanid", "a2fb4a1d1a96d312".parse().unwrap());
        h.insert("x-b3-sampled", "0".parse().unwrap());
        let came = incoming(&h);
        assert_eq!(came.sampled, Some(false));
        assert_eq!(
            came.parent,
            Some((
                Some(0x463ac35c9f6413ad),
                0x48485a3953bb6124,
                0xa2fb4a1d1a96d312
            ))
        );
        let mut single = http::HeaderMap::new();
        single.insert(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
                .parse()
                .unwrap(),
        );
        assert_eq!(incoming(&single).sampled, Some(true));
        assert!(incoming(&single).parent.is_some());
    }
}
