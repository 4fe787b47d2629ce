//! The external authorization filter's config (`envoy.filters.http.ext_authz`, gRPC
//! service, v3), and its per-route form. Istio's CUSTOM AuthorizationPolicies arrive as
//! this filter, enabled per request by the RBAC shadow outcome in dynamic metadata.

use super::error::{item, join, ConfigError, Result};
use crate::http::metadata::{metadata_matcher, MetadataMatch};
use prost::Message;
use std::collections::BTreeMap;
use std::time::Duration;
use xds_client::proto::envoy::extensions::filters::http::ext_authz::v3 as pb;

/// `envoy.extensions.filters.http.ext_authz.v3.ExtAuthz`.
pub const TYPE_NAME: &str = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
/// `envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute`.
pub const PER_ROUTE_TYPE_NAME: &str = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";

/// How much of the request body goes to the authorization service.
#[derive(Debug, Clone, Copy)]
pub struct BodySettings {
    /// The most bytes buffered.
    pub max_bytes: usize,
    /// Send the first `max_bytes` of a longer body instead of answering 413.
    pub allow_partial: bool,
    /// Send the body as bytes (`raw_body`) rather than as a string.
    pub as_bytes: bool,
}

/// A translated `ExtAuthz`.
#[derive(Debug, Clone)]
pub struct ExtAuthzConfig {
    /// The filter's name (routes address it by name).
    pub name: String,
    /// The authorization service's cluster (HTTP/2).
    pub cluster: String,
    /// `:authority` of the Check calls (default: the cluster name).
    pub authority: String,
    /// The Check call's deadline (default 200 ms).
    pub timeout: Duration,
    /// Headers sent with every Check call (`initial_metadata`).
    pub initial_metadata: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The largest Check answer accepted (`max_receive_message_length`).
    pub max_response_bytes: Option<usize>,
    /// On a failed call, let the request through.
    pub failure_mode_allow: bool,
    /// ... and mark it with `x-envoy-auth-failure-mode-allowed: true`.
    pub failure_mode_allow_header_add: bool,
    /// Send (part of) the body.
    pub body: Option<BodySettings>,
    /// The status of a request whose call failed (default 403).
    pub status_on_error: u16,
    /// Call only for requests whose dynamic metadata matches.
    pub enabled_metadata: Option<MetadataMatch>,
    /// Stats under `ext_authz.<stat_prefix>.`.
    pub stat_prefix: String,
}

/// A route's `ExtAuthzPerRoute`.
#[derive(Debug, Clone, Default)]
pub struct ExtAuthzPerRoute {
    /// The filter is off for the route.
    pub disabled: bool,
    /// Sent with the Check call.
    pub context_extensions: BTreeMap<String, String>,
    /// Do not buffer the body for this route.
    pub disable_body: bool,
}

fn body_settings(b: &pb::BufferSettings) -> BodySettings {
    BodySettings {
        max_bytes: b.max_request_bytes as usize,
        allow_partial: b.allow_partial_message,
        as_bytes: b.pack_as_bytes,
    }
}

/// Translates the filter's config.
pub fn translate(name: &str, bytes: &[u8], path: &str) -> Result<ExtAuthzConfig> {
    use xds_client::proto::envoy::config::core::v3::grpc_service::TargetSpecifier;
    let c = pb::ExtAuthz::decode(bytes).map_err(|e| ConfigError::at(path, e.to_string()))?;
    if c.transport_api_version != 2 {
        return Err(ConfigError::at(
            join(path, "transport_api_version"),
            "only V3 is supported",
        ));
    }
    let grpc = match &c.services {
        Some(pb::ext_authz::Services::GrpcService(g)) => g,
        _ => {
            return Err(ConfigError::at(
                path,
                "ext_authz needs a grpc_service (http_service is not supported)",
            ))
        }
    };
    let gp = join(path, "grpc_service");
    let Some(TargetSpecifier::EnvoyGrpc(target)) = &grpc.target_specifier else {
        return Err(ConfigError::at(
            &gp,
            "only envoy_grpc targets are supported",
        ));
    };
    let timeout = grpc
        .timeout
        .as_ref()
        .map(|d| super::common::duration(d, &join(&gp, "timeout")))
        .transpose()?
        .unwrap_or(Duration::from_millis(200));
    Ok(ExtAuthzConfig {
        name: name.to_string(),
        cluster: target.cluster_name.clone(),
        authority: if target.authority.is_empty() {
            target.cluster_name.clone()
        } else {
            target.authority.clone()
        },
        timeout,
        initial_metadata: grpc
            .initial_metadata
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let p = item(&gp, "initial_metadata", i);
                let name = http::HeaderName::from_bytes(h.key.to_ascii_lowercase().as_bytes())
                    .map_err(|_| ConfigError::at(join(&p, "key"), "invalid header name"))?;
                let value = http::HeaderValue::from_str(&h.value)
                    .map_err(|_| ConfigError::at(join(&p, "value"), "invalid header value"))?;
                Ok((name, value))
            })
            .collect::<Result<_>>()?,
        max_response_bytes: target
            .max_receive_message_length
            .as_ref()
            .map(|v| v.value as usize),
        failure_mode_allow: c.failure_mode_allow,
        failure_mode_allow_header_add: c.failure_mode_allow_header_add,
        body: c.with_request_body.as_ref().map(body_settings),
        status_on_error: match c.status_on_error.as_ref().map(|s| s.code) {
            None | Some(0) => 403,
            Some(code) => u16::try_from(code)
                .ok()
                .filter(|c| (100..600).contains(c))
                .ok_or_else(|| {
                    ConfigError::at(join(path, "status_on_error.code"), "not an HTTP status")
                })?,
        },
        enabled_metadata: c
            .filter_enabled_metadata
            .as_ref()
            .map(|m| metadata_matcher(m, &join(path, "filter_enabled_metadata")))
            .transpose()?,
        stat_prefix: c.stat_prefix,
    })
}

/// Translates a route's `ExtAuthzPerRoute`.
pub fn per_route(bytes: &[u8], path: &str) -> Result<ExtAuthzPerRoute> {
    let c =
        pb::ExtAuthzPerRoute::decode(bytes).map_err(|e| ConfigError::at(path, e.to_string()))?;
    Ok(match c.r#override {
        Some(pb::ext_authz_per_route::Override::Disabled(d)) => ExtAuthzPerRoute {
            disabled: d,
            ..Default::default()
        },
        Some(pb::ext_authz_per_route::Override::CheckSettings(s)) => ExtAuthzPerRoute {
            disabled: false,
            context_extensions: s.context_extensions.into_iter().collect(),
            disable_body: s.disable_request_body_buffering,
        },
        None => ExtAuthzPerRoute::default(),
    })
}
