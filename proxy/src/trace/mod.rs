//! Request tracing: the connection manager's `tracing` block (sampling, custom tags), the
//! trace decision packed into `x-request-id` as Envoy's UUID extension does, and the Zipkin
//! tracer ([`zipkin`]) that propagates B3 headers and reports spans. Istio turns tracing on
//! in every sidecar HTTP connection manager, with a Zipkin provider in the bootstrap.

pub mod tags;
pub mod zipkin;

use crate::config::error::{item, join, ConfigError, Result};
use std::sync::Arc;
use xds_client::proto::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;

/// A connection manager's tracing settings.
#[derive(Debug, Clone)]
pub struct TracingConfig {
    /// Chance (per 10 000) to trace a request carrying `x-client-trace-id`.
    pub client_sampling: u64,
    /// Chance (per 10 000) to trace any other request.
    pub random_sampling: u64,
    /// Chance (per 10 000) to keep a decision to trace.
    pub overall_sampling: u64,
    /// Tags added to every span.
    pub custom_tags: Vec<CustomTag>,
    /// Longest `http.url` tag value.
    pub max_path_tag_length: usize,
    /// The connection manager's own tracer (else the bootstrap's).
    pub provider: Option<Arc<zipkin::ZipkinConfig>>,
}

/// A tag with a value of the operator's choosing.
#[derive(Debug, Clone)]
pub enum CustomTag {
    /// A fixed value (an environment variable's is read at load).
    Literal(String, String),
    /// A request header's value, or the default when absent (no tag without one).
    RequestHeader(String, http::HeaderName, Option<String>),
    /// A string of the request's dynamic metadata (namespace, key), or the default.
    Metadata(String, String, String, Option<String>),
}

fn percent(p: Option<&xds_client::proto::envoy::r#type::v3::Percent>, path: &str) -> Result<u64> {
    let value = p.map_or(100.0, |p| p.value);
    if !(0.0..=100.0).contains(&value) {
        return Err(ConfigError::at(
            path,
            "a percentage must be within [0, 100]",
        ));
    }
    Ok((value * 100.0).round() as u64)
}

/// Translates the connection manager's `tracing`.
pub fn translate(t: &Tracing, path: &str) -> Result<TracingConfig> {
    use xds_client::proto::envoy::r#type::tracing::v3::custom_tag::Type;
    let mut custom_tags = Vec::new();
    for (i, tag) in t.custom_tags.iter().enumerate() {
        let p = item(path, "custom_tags", i);
        let name = tag.tag.clone();
        custom_tags.extend(match &tag.r#type {
            Some(Type::Literal(l)) => Some(CustomTag::Literal(name, l.value.clone())),
            Some(Type::Environment(e)) => std::env::var(&e.name)
                .ok()
                .or_else(|| (!e.default_value.is_empty()).then(|| e.default_value.clone()))
                .map(|v| CustomTag::Literal(name, v)),
            Some(Type::RequestHeader(h)) => {
                let header = http::HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| ConfigError::at(join(&p, "request_header.name"), "invalid header name"))?;
                let default = (!h.default_value.is_empty()).then(|| h.default_value.clone());
                Some(CustomTag::RequestHeader(name, header, default))
            }
            Some(Type::Metadata(m)) => Some(metadata_tag(name, m, &join(&p, "metadata"))?),
            _ => {
                return Err(ConfigError::at(
                    &p,
                    "custom tags of this kind are not supported (literal, environment, request_header, metadata are)",
                ))
            }
        });
    }
    let provider = t
        .provider
        .as_ref()
        .map(|p| zipkin::provider(p, &join(path, "provider")))
        .transpose()?;
    if let (None, BootstrapTracer::Unsupported(kind)) = (&provider, current()) {
        return Err(ConfigError::at(
            path,
            format!(
                "traces with the bootstrap's tracer {kind}, which is not supported (Zipkin is)"
            ),
        ));
    }
    Ok(TracingConfig {
        client_sampling: percent(t.client_sampling.as_ref(), &join(path, "client_sampling"))?,
        random_sampling: percent(t.random_sampling.as_ref(), &join(path, "random_sampling"))?,
        overall_sampling: percent(t.overall_sampling.as_ref(), &join(path, "overall_sampling"))?,
        custom_tags,
        max_path_tag_length: t
            .max_path_tag_length
            .as_ref()
            .map_or(256, |v| v.value as usize),
        provider,
    })
}

/// A metadata tag: the request's dynamic metadata (Istio's dry-run RBAC tags read the
/// RBAC filter's shadow outcome); one-key paths, as the values there are strings.
fn metadata_tag(
    name: String,
    m: &xds_client::proto::envoy::r#type::tracing::v3::custom_tag::Metadata,
    path: &str,
) -> Result<CustomTag> {
    use xds_client::proto::envoy::r#type::metadata::v3::metadata_key::path_segment::Segment;
    use xds_client::proto::envoy::r#type::metadata::v3::metadata_kind::Kind;
    if !matches!(
        m.kind.as_ref().and_then(|k| k.kind.as_ref()),
        Some(Kind::Request(_))
    ) {
        return Err(ConfigError::at(
            join(path, "kind"),
            "only request (dynamic) metadata tags are supported",
        ));
    }
    let key = m.metadata_key.clone().unwrap_or_default();
    let keys: Vec<String> = key
        .path
        .iter()
        .filter_map(|s| match &s.segment {
            Some(Segment::Key(k)) => Some(k.clone()),
            _ => None,
        })
        .collect();
    let ([entry], 1) = (keys.as_slice(), key.path.len()) else {
        return Err(ConfigError::at(
            join(path, "metadata_key.path"),
            "a metadata tag reads one key",
        ));
    };
    let default = (!m.default_value.is_empty()).then(|| m.default_value.clone());
    Ok(CustomTag::Metadata(name, key.key, entry.clone(), default))
}

/// The bootstrap's `tracing.http`.
#[derive(Debug, Clone, Default)]
pub enum BootstrapTracer {
    /// None configured.
    #[default]
    None,
    /// Zipkin.
    Zipkin(Arc<zipkin::ZipkinConfig>),
    /// A tracer meshproxy does not implement (its type): fine until a connection
    /// manager traces without a provider of its own, which is then refused.
    Unsupported(String),
}

static BOOTSTRAP_TRACER: std::sync::Mutex<BootstrapTracer> =
    std::sync::Mutex::new(BootstrapTracer::None);

fn current() -> BootstrapTracer {
    BOOTSTRAP_TRACER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Records the bootstrap's tracer (a process serves one bootstrap; the last loaded wins).
pub fn set_bootstrap_tracer(tracer: BootstrapTracer) {
    *BOOTSTRAP_TRACER.lock().unwrap_or_else(|e| e.into_inner()) = tracer;
}

/// The bootstrap's tracer, the one a connection manager without a provider uses.
pub fn bootstrap_tracer() -> Option<Arc<zipkin::ZipkinConfig>> {
    match current() {
        BootstrapTracer::Zipkin(z) => Some(z),
        _ => None,
    }
}

/// Why a request is traced, as the 15th character of a UUID `x-request-id` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    NotTraced,
    Sampled,
    Forced,
    Client,
}

const REASON_AT: usize = 14;

impl Reason {
    fn read(rid: &str) -> Reason {
        match rid.as_bytes().get(REASON_AT) {
            Some(b'9') if rid.len() == 36 => Reason::Sampled,
            Some(b'a') if rid.len() == 36 => Reason::Forced,
            Some(b'b') if rid.len() == 36 => Reason::Client,
            _ => Reason::NotTraced,
        }
    }

    fn mark(self) -> u8 {
        match self {
            Reason::NotTraced => b'4',
            Reason::Sampled => b'9',
            Reason::Forced => b'a',
            Reason::Client => b'b',
        }
    }
}

/// How the request id takes part (the UUID extension's two options).
#[derive(Debug, Clone, Copy)]
pub struct RequestIdOptions {
    /// Write the decision into `x-request-id`.
    pub pack_trace_reason: bool,
    /// Sample by the request id (stable along a request's path) rather than at random.
    pub use_for_sampling: bool,
}

impl TracingConfig {
    /// Decides whether the request is traced, as Envoy's connection manager does: a
    /// decision already in `x-request-id` stands; otherwise `x-client-trace-id` (client
    /// sampling), `x-envoy-force-trace`, then random sampling; overall sampling last.
    pub fn decide(&self, headers: &mut http::HeaderMap, rid: RequestIdOptions) -> bool {
        let id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let valid = id.len() == 36 && id.is_ascii();
        let roll = if rid.use_for_sampling && valid {
            u64::from_str_radix(&id[..8], 16).unwrap_or(0)
        } else {
            rand::random::<u64>()
        };
        let enabled = |per_10000: u64| roll % 10_000 < per_10000;
        let mut reason = if rid.pack_trace_reason {
            Reason::read(&id)
        } else {
            Reason::NotTraced
        };
        if reason == Reason::NotTraced {
            if headers.contains_key("x-client-trace-id") && enabled(self.client_sampling) {
                reason = Reason::Client;
            } else if headers.contains_key("x-envoy-force-trace") {
                reason = Reason::Forced;
            } else if enabled(self.random_sampling) {
                reason = Reason::Sampled;
            }
        }
        if !enabled(self.overall_sampling) {
            reason = Reason::NotTraced;
        }
        if rid.pack_trace_reason && valid {
            let mut bytes = id.into_bytes();
            bytes[REASON_AT] = reason.mark();
            if let Ok(v) = http::HeaderValue::from_bytes(&bytes) {
                headers.insert("x-request-id", v);
            }
        }
        reason != Reason::NotTraced
    }
}
