//! `typed_per_filter_config` on routes, virtual hosts and route configurations: per-route
//! replacements of an HTTP filter's config, keyed by the filter's name in the HCM. Istio
//! configures VirtualService faults this way (an empty fault filter in the chain, the real
//! config on each route).

use super::error::{join, ConfigError, Result};
use super::fault::{self, FaultConfig};
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use xds_client::descriptors::type_name_of_url;
use xds_client::proto::envoy::config::route::v3::FilterConfig;
use xds_client::proto::google::protobuf::Any;

const FILTER_CONFIG: &str = "envoy.config.route.v3.FilterConfig";

/// What a route says about one named filter.
#[derive(Debug, Clone)]
pub enum PerFilter {
    /// Use this fault config instead of the filter's own.
    Fault(Arc<FaultConfig>),
    /// Use these RBAC rules instead of the filter's own (`None`: no RBAC on this route).
    Rbac(Option<Arc<crate::rbac::translate::RbacRules>>),
    /// The ext_authz filter's settings for this route.
    ExtAuthz(Arc<super::ext_authz::ExtAuthzPerRoute>),
    /// `FilterConfig.disabled`: skip the filter for this route.
    Disabled,
}

/// The per-filter configs of one route, virtual host or route configuration.
#[derive(Debug, Clone, Default)]
pub struct PerFilterConfigs(Vec<(String, PerFilter)>);

impl PerFilterConfigs {
    /// The entry for the filter named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&PerFilter> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }
}

/// Translates a `typed_per_filter_config` map found at `path`.
pub fn translate(map: &HashMap<String, Any>, path: &str) -> Result<PerFilterConfigs> {
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let p = format!("{}[{name}]", join(path, "typed_per_filter_config"));
        out.push((name.clone(), entry(&map[name], &p)?));
    }
    Ok(PerFilterConfigs(out))
}

fn entry(any: &Any, path: &str) -> Result<PerFilter> {
    match type_name_of_url(&any.type_url) {
        fault::TYPE_NAME => Ok(PerFilter::Fault(Arc::new(fault::translate(
            &any.value, path,
        )?))),
        super::ext_authz::PER_ROUTE_TYPE_NAME => Ok(PerFilter::ExtAuthz(Arc::new(
            super::ext_authz::per_route(&any.value, path)?,
        ))),
        crate::rbac::translate::PER_ROUTE_TYPE_NAME => Ok(PerFilter::Rbac(
            crate::rbac::translate::per_route(&any.value, path)?,
        )),
        FILTER_CONFIG => {
            let fc = FilterConfig::decode(any.value.as_slice())
                .map_err(|e| ConfigError::at(path, e.to_string()))?;
            if fc.disabled {
                return Ok(PerFilter::Disabled);
            }
            match &fc.config {
                Some(inner) => entry(inner, &join(path, "config")),
                None => Err(ConfigError::at(path, "FilterConfig needs a config")),
            }
        }
        other => Err(ConfigError::at(
            path,
            format!("per-route config of type {other} is not supported"),
        )),
    }
}
