//! `envoy.filters.network.http_connection_manager` configuration.

use super::access_log::{self, AccessLogConfig};
use super::common;
use super::error::{join, ConfigError, Result};
use super::rds::{RdsSlot, Routes};
use super::route;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use xds_client::proto::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;

const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";
/// The CORS filter acts only through `CorsPolicy` route or virtual-host configs, which
/// are refused where they appear; without one it passes every request (Istio installs it
/// on every HTTP listener).
const CORS: &str = "envoy.extensions.filters.http.cors.v3.Cors";

/// Downstream codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/1.1 or HTTP/2 (by preface, or ALPN over TLS).
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only.
    Http2,
}

/// What the `server` response header becomes (`server_header_transformation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHeader {
    /// Always set to `server_name`.
    Overwrite,
    /// Set only if the upstream sent none.
    AppendIfAbsent,
    /// Pass the upstream's through untouched.
    PassThrough,
}

/// What happens to a path holding escaped slashes (`%2F`, `%5C`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Leave it (the default).
    Keep,
    /// Answer 400.
    Reject,
    /// Answer 307 to the unescaped path (400 for gRPC, which cannot follow redirects).
    Redirect,
    /// Unescape and carry on.
    Forward,
}

/// Non-terminal HTTP filters meshproxy runs (the router is implied, and last).
#[derive(Debug, Clone)]
pub enum HttpFilterConfig {
    /// Response compression.
    Compressor(Arc<filters::http::compressor::CompressorConfig>),
    /// Fault injection (delays and aborts), with the filter's name, which routes'
    /// `typed_per_filter_config` uses to replace or disable it.
    Fault(String, Arc<super::fault::FaultConfig>),
    /// Istio's HTTP metadata exchange (`io.istio.http.peer_metadata.Config`).
    PeerMetadata(Arc<crate::istio::peer_metadata::PeerMetadataConfig>),
    /// Istio's standard metrics (`stats.PluginConfig`).
    IstioStats(Arc<crate::istio::stats::IstioStatsConfig>),
    /// Istio's upstream ALPN override (`istio.alpn`).
    Alpn(Arc<crate::istio::alpn::AlpnConfig>),
    /// gRPC call and message stats (`envoy.filters.http.grpc_stats`).
    GrpcStats(crate::http::grpc_stats::GrpcStatsConfig),
    /// Role-based access control (`envoy.filters.http.rbac`).
    Rbac(crate::rbac::translate::HttpRbacConfig),
    /// External authorization (`envoy.filters.http.ext_authz`).
    ExtAuthz(Arc<super::ext_authz::ExtAuthzConfig>),
    /// A discovered filter (`config_discovery`) whose config has not arrived and that
    /// has no default: every request gets 500 `NFCF`.
    MissingConfig(String),
}

/// A translated HttpConnectionManager.
#[derive(Debug)]
pub struct HttpConnectionManagerConfig {
    /// `http.<stat_prefix>.` stats.
    pub stat_prefix: String,
    /// Downstream codec.
    pub codec: Codec,
    /// Inline routes or the RDS slot.
    pub routes: Routes,
    /// HTTP filters before the router, in order.
    pub filters: Vec<HttpFilterConfig>,
    /// Router option: do not add `x-envoy-*` response headers.
    pub suppress_envoy_headers: bool,
    /// `server` header value (default `envoy`), checked once here so responses share it.
    pub server_name: http::HeaderValue,
    /// How the `server` header is produced.
    pub server_header: ServerHeader,
    /// Trust the connection's peer address as the client address.
    pub use_remote_address: bool,
    /// Trusted hops in `x-forwarded-for`.
    pub xff_num_trusted_hops: u32,
    /// Do not append to `x-forwarded-for`.
    pub skip_xff_append: bool,
    /// Generate `x-request-id` when missing (default true).
    pub generate_request_id: bool,
    /// Keep an external `x-request-id` when the client is external.
    pub preserve_external_request_id: bool,
    /// Echo `x-request-id` in responses.
    pub always_set_request_id_in_response: bool,
    /// How the UUID request id takes part in tracing.
    pub request_id: crate::trace::RequestIdOptions,
    /// `tracing`: sampling, tags, and the tracer if the HCM names one.
    pub tracing: Option<crate::trace::TracingConfig>,
    /// Per-stream idle timeout (default 5 min; `0s` disables).
    pub stream_idle_timeout: Option<Duration>,
    /// Time to receive the whole request (default none).
    pub request_timeout: Option<Duration>,
    /// `request_headers_timeout`: time to receive a request head, from its first byte
    /// (default none; `0s` disables).
    pub request_headers_timeout: Option<Duration>,
    /// `common_http_protocol_options.max_stream_duration`: the whole stream's limit
    /// (default none; a route's own setting overrides it).
    pub max_stream_duration: Option<Duration>,
    /// Header size limit in bytes (default 60 KiB).
    pub max_request_headers_bytes: usize,
    /// RFC 3986 path normalisation.
    pub normalize_path: bool,
    /// Merge consecutive slashes.
    pub merge_slashes: bool,
    /// `path_with_escaped_slashes_action` for paths with `%2F` or `%5C`.
    pub escaped_slashes: EscapedSlashes,
    /// `forward_client_cert_details`.
    pub forward_client_cert: crate::http::client_cert::ForwardMode,
    /// `set_current_client_cert_details`.
    pub client_cert_details: crate::http::client_cert::Details,
    /// Upgrade types enabled by default (lower case).
    pub upgrades: Vec<(String, bool)>,
    /// Access logs.
    pub access_logs: Vec<AccessLogConfig>,
    /// Downstream connection idle timeout (default 1 h).
    pub idle_timeout: Option<Duration>,
    /// Requests per downstream connection.
    pub max_requests_per_connection: Option<u32>,
    /// HTTP/2 max concurrent streams.
    pub http2_max_concurrent_streams: Option<u32>,
    /// HTTP/2 initial stream window.
    pub http2_initial_stream_window: Option<u32>,
    /// HTTP/2 initial connection window.
    pub http2_initial_connection_window: Option<u32>,
    /// `via` header value to append, checked once here so responses share it.
    pub via: Option<http::HeaderValue>,
    /// Strip the port from the host when it equals the listener port.
    pub strip_matching_host_port: bool,
    /// Strip any port from the host.
    pub strip_any_host_port: bool,
    /// `http_protocol_options`: whether HTTP/1.0 is served, and its default host.
    pub http10: crate::http::http10::Http10Options,
}

/// Translates an HttpConnectionManager.
pub fn translate(
    h: &hcm::HttpConnectionManager,
    path: &str,
) -> Result<HttpConnectionManagerConfig> {
    use hcm::http_connection_manager::{RouteSpecifier as R, StripPortMode as S};
    if h.stat_prefix.is_empty() {
        return Err(ConfigError::at(
            join(path, "stat_prefix"),
            "stat_prefix is required",
        ));
    }
    let routes = match &h.route_specifier {
        Some(R::RouteConfig(rc)) => {
            Routes::Static(Arc::new(route::translate(rc, &join(path, "route_config"))?))
        }
        Some(R::Rds(rds)) => {
            let p = join(path, "rds");
            let source =
                super::source::xds_source(rds.config_source.as_ref(), &join(&p, "config_source"))?;
            if rds.route_config_name.is_empty() {
                return Err(ConfigError::at(
                    join(&p, "route_config_name"),
                    "route_config_name is required",
                ));
            }
            let timeout = super::source::fetch_timeout(
                rds.config_source.as_ref(),
                &join(&p, "config_source"),
            )?;
            Routes::Rds(Arc::new(RdsSlot::new(
                rds.route_config_name.clone(),
                source,
                timeout,
            )))
        }
        Some(R::ScopedRoutes(_)) => {
            return Err(ConfigError::at(
                join(path, "scoped_routes"),
                "scoped routes are not supported",
            ))
        }
        None => return Err(ConfigError::at(path, "route_config is required")),
    };
    let (filters, suppress_envoy_headers) =
        http_filters(&h.http_filters, &join(path, "http_filters"))?;
    let common_opts = h.common_http_protocol_options.unwrap_or_default();
    let h2 = h.http2_protocol_options.clone().unwrap_or_default();
    let max_kb = h
        .max_request_headers_kb
        .as_ref()
        .map(|v| v.value)
        .unwrap_or(60);
    if !(1..=8192).contains(&max_kb) {
        return Err(ConfigError::at(
            join(path, "max_request_headers_kb"),
            "must be in [1, 8192]",
        ));
    }
    Ok(HttpConnectionManagerConfig {
        stat_prefix: h.stat_prefix.clone(),
        codec: match h.codec_type {
            0 => Codec::Auto,
            1 => Codec::Http1,
            2 => Codec::Http2,
            _ => {
                return Err(ConfigError::at(
                    join(path, "codec_type"),
                    "HTTP/3 is not supported",
                ))
            }
        },
        routes,
        filters,
        suppress_envoy_headers,
        server_name: if h.server_name.is_empty() {
            http::HeaderValue::from_static("envoy")
        } else {
            http::HeaderValue::from_str(&h.server_name).map_err(|_| {
                ConfigError::at(join(path, "server_name"), "is not a valid header value")
            })?
        },
        server_header: match h.server_header_transformation {
            0 => ServerHeader::Overwrite,
            1 => ServerHeader::AppendIfAbsent,
            _ => ServerHeader::PassThrough,
        },
        use_remote_address: h
            .use_remote_address
            .as_ref()
            .map(|b| b.value)
            .unwrap_or(false),
        xff_num_trusted_hops: h.xff_num_trusted_hops,
        skip_xff_append: h.skip_xff_append,
        generate_request_id: h
            .generate_request_id
            .as_ref()
            .map(|b| b.value)
            .unwrap_or(true),
        preserve_external_request_id: h.preserve_external_request_id,
        always_set_request_id_in_response: h.always_set_request_id_in_response,
        request_id: request_id_options(
            h.request_id_extension.as_ref(),
            &join(path, "request_id_extension"),
        )?,
        tracing: h
            .tracing
            .as_ref()
            .map(|t| crate::trace::translate(t, &join(path, "tracing")))
            .transpose()?,
        max_request_headers_bytes: max_kb as usize * 1024,
        stream_idle_timeout: common::timeout(
            h.stream_idle_timeout.as_ref(),
            Some(Duration::from_secs(300)),
            &join(path, "stream_idle_timeout"),
        )?,
        request_timeout: common::timeout(
            h.request_timeout.as_ref(),
            None,
            &join(path, "request_timeout"),
        )?,
        request_headers_timeout: common::timeout(
            h.request_headers_timeout.as_ref(),
            None,
            &join(path, "request_headers_timeout"),
        )?,
        normalize_path: h.normalize_path.as_ref().map(|b| b.value).unwrap_or(false),
        merge_slashes: h.merge_slashes,
        forward_client_cert: forward_client_cert(h.forward_client_cert_details, path)?,
        client_cert_details: client_cert_details(h)?,
        escaped_slashes: match h.path_with_escaped_slashes_action {
            0 | 1 => EscapedSlashes::Keep,
            2 => EscapedSlashes::Reject,
            3 => EscapedSlashes::Redirect,
            4 => EscapedSlashes::Forward,
            n => {
                return Err(ConfigError::at(
                    join(path, "path_with_escaped_slashes_action"),
                    format!("unknown action {n}"),
                ))
            }
        },
        upgrades: h
            .upgrade_configs
            .iter()
            .enumerate()
            .map(|(i, u)| {
                if !u.filters.is_empty() {
                    return Err(ConfigError::at(
                        format!("{}[{i}].filters", join(path, "upgrade_configs")),
                        "upgrade filter chains are not supported",
                    ));
                }
                Ok((
                    u.upgrade_type.to_ascii_lowercase(),
                    u.enabled.as_ref().map(|b| b.value).unwrap_or(true),
                ))
            })
            .collect::<Result<_>>()?,
        access_logs: access_log::translate_all(&h.access_log, &join(path, "access_log"))?,
        max_stream_duration: common::timeout(
            common_opts.max_stream_duration.as_ref(),
            None,
            &join(path, "common_http_protocol_options.max_stream_duration"),
        )?,
        idle_timeout: common::timeout(
            common_opts.idle_timeout.as_ref(),
            Some(Duration::from_secs(3600)),
            &join(path, "common_http_protocol_options.idle_timeout"),
        )?,
        max_requests_per_connection: common_opts
            .max_requests_per_connection
            .as_ref()
            .map(|v| v.value)
            .filter(|v| *v > 0),
        http2_max_concurrent_streams: h2.max_concurrent_streams.as_ref().map(|v| v.value),
        http2_initial_stream_window: h2.initial_stream_window_size.as_ref().map(|v| v.value),
        http2_initial_connection_window: h2
            .initial_connection_window_size
            .as_ref()
            .map(|v| v.value),
        via: if h.via.is_empty() {
            None
        } else {
            Some(
                http::HeaderValue::from_str(&h.via).map_err(|_| {
                    ConfigError::at(join(path, "via"), "is not a valid header value")
                })?,
            )
        },
        strip_matching_host_port: h.strip_matching_host_port,
        strip_any_host_port: matches!(h.strip_port_mode, Some(S::StripAnyHostPort(true))),
        http10: http10_options(h.http_protocol_options.as_ref(), path)?,
    })
}

/// `http_protocol_options`' HTTP/1.0 switch and default host.
fn http10_options(
    o: Option<&xds_client::proto::envoy::config::core::v3::Http1ProtocolOptions>,
    path: &str,
) -> Result<crate::http::http10::Http10Options> {
    let Some(o) = o else {
        return Ok(Default::default());
    };
    let default_host = match o.default_host_for_http_10.as_str() {
        "" => None,
        h => Some(http::HeaderValue::from_str(h).map_err(|_| {
            ConfigError::at(
                join(path, "http_protocol_options.default_host_for_http_10"),
                "is not a valid host",
            )
        })?),
    };
    Ok(crate::http::http10::Http10Options {
        accept: o.accept_http_10,
        default_host,
    })
}

fn forward_client_cert(mode: i32, path: &str) -> Result<crate::http::client_cert::ForwardMode> {
    use crate::http::client_cert::ForwardMode as M;
    Ok(match mode {
        0 => M::Sanitize,
        1 => M::ForwardOnly,
        2 => M::AppendForward,
        3 => M::SanitizeSet,
        4 => M::AlwaysForwardOnly,
        n => {
            return Err(ConfigError::at(
                join(path, "forward_client_cert_details"),
                format!("unknown mode {n}"),
            ))
        }
    })
}

fn client_cert_details(
    h: &hcm::HttpConnectionManager,
) -> Result<crate::http::client_cert::Details> {
    let Some(d) = &h.set_current_client_cert_details else {
        return Ok(Default::default());
    };
    Ok(crate::http::client_cert::Details {
        cert: d.cert,
        chain: d.chain,
        subject: d.subject.as_ref().is_some_and(|b| b.value),
        dns: d.dns,
        uri: d.uri,
    })
}

fn http_filters(list: &[hcm::HttpFilter], path: &str) -> Result<(Vec<HttpFilterConfig>, bool)> {
    let mut out = Vec::new();
    let mut router = None;
    for (i, f) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if f.disabled {
            return Err(ConfigError::at(
                join(&p, "disabled"),
                "disabled filters (enabled per route) are not supported",
            ));
        }
        let any = match &f.config_type {
            Some(hcm::http_filter::ConfigType::TypedConfig(a)) => a,
            Some(hcm::http_filter::ConfigType::ConfigDiscovery(_)) => {
                // LDS puts discovered configs (or defaults) in before translating; what
                // is left has neither yet.
                out.push(HttpFilterConfig::MissingConfig(f.name.clone()));
                continue;
            }
            None => {
                return Err(ConfigError::at(
                    &p,
                    format!("filter {} needs a typed_config", f.name),
                ))
            }
        };
        if router.is_some() {
            return Err(ConfigError::at(
                &p,
                "the router must be the last HTTP filter",
            ));
        }
        let tp = join(&p, "typed_config");
        match xds_client::descriptors::type_name_of_url(&any.type_url) {
            ROUTER => {
                let r = xds_client::proto::envoy::extensions::filters::http::router::v3::Router::decode(any.value.as_slice())
                    .map_err(|e| ConfigError::at(&tp, e.to_string()))?;
                router = Some(r.suppress_envoy_headers);
            }
            filters::http::compressor::TYPE_NAME => {
                let c = filters::http::compressor::CompressorConfig::from_proto(&any.value)
                    .map_err(|e| ConfigError::at(&tp, e))?;
                out.push(HttpFilterConfig::Compressor(Arc::new(c)));
            }
            super::fault::TYPE_NAME => {
                let c = super::fault::translate(&any.value, &tp)?;
                out.push(HttpFilterConfig::Fault(f.name.clone(), Arc::new(c)));
            }
            crate::istio::peer_metadata::TYPE_NAME => {
                let c = crate::istio::peer_metadata::translate(&any.value, &tp)?;
                out.push(HttpFilterConfig::PeerMetadata(Arc::new(c)));
            }
            crate::istio::alpn::TYPE_NAME => {
                let c = crate::istio::alpn::translate(&any.value, &tp)?;
                out.push(HttpFilterConfig::Alpn(Arc::new(c)));
            }
            CORS => {}
            super::ext_authz::TYPE_NAME => {
                let c = super::ext_authz::translate(&f.name, &any.value, &tp)?;
                out.push(HttpFilterConfig::ExtAuthz(Arc::new(c)));
            }
            crate::rbac::translate::HTTP_TYPE_NAME => {
                let c = crate::rbac::translate::http(&f.name, &any.value, &tp)?;
                out.push(HttpFilterConfig::Rbac(c));
            }
            crate::http::grpc_stats::TYPE_NAME => {
                let c = crate::http::grpc_stats::translate(&any.value, &tp)?;
                out.push(HttpFilterConfig::GrpcStats(c));
            }
            crate::istio::null_vm::HTTP_TYPE_NAME => {
                use crate::istio::null_vm::{translate_http, NullVmPlugin};
                out.push(match translate_http(&any.value, &tp)? {
                    NullVmPlugin::MetadataExchange(c) => {
                        HttpFilterConfig::PeerMetadata(Arc::new(c))
                    }
                    NullVmPlugin::Stats(c) => HttpFilterConfig::IstioStats(Arc::new(c)),
                });
            }
            crate::istio::stats::TYPE_NAME => {
                let c = crate::istio::stats::translate(&any.value, &tp)?;
                out.push(HttpFilterConfig::IstioStats(Arc::new(c)));
            }
            _ => {
                return Err(ConfigError::at(
                    &tp,
                    format!("unsupported HTTP filter {}", any.type_url),
                ))
            }
        }
    }
    let suppress = router.ok_or_else(|| {
        ConfigError::at(
            path,
            "the last HTTP filter must be envoy.filters.http.router",
        )
    })?;
    Ok((out, suppress))
}

/// The UUID request-id extension's options (both default to true; no other extension
/// exists in Envoy 1.40).
fn request_id_options(
    ext: Option<&xds_client::proto::envoy::extensions::filters::network::http_connection_manager::v3::RequestIdExtension>,
    path: &str,
) -> Result<crate::trace::RequestIdOptions> {
    use xds_client::proto::envoy::extensions::request_id::uuid::v3::UuidRequestIdConfig;
    let mut options = crate::trace::RequestIdOptions {
        pack_trace_reason: true,
        use_for_sampling: true,
    };
    if let Some(any) = ext.and_then(|e| e.typed_config.as_ref()) {
        let c = UuidRequestIdConfig::decode(any.value.as_slice())
            .map_err(|e| ConfigError::at(join(path, "typed_config"), e.to_string()))?;
        options.pack_trace_reason = c.pack_trace_reason.as_ref().is_none_or(|b| b.value);
        options.use_for_sampling = c
            .use_request_id_for_trace_sampling
            .as_ref()
            .is_none_or(|b| b.value);
    }
    Ok(options)
}
