//! Config sources of resources that xDS delivers (EDS of a cluster, RDS of an HTTP
//! connection manager): meshproxy fetches them over the ADS stream.

use super::error::{join, ConfigError, Result};
use xds_client::proto::envoy::config::core::v3 as core;

/// Accepts a config source only when it is `ads`; anything else is rejected by path.
pub fn require_ads(source: Option<&core::ConfigSource>, path: &str) -> Result<()> {
    use core::config_source::ConfigSourceSpecifier as S;
    match source.and_then(|s| s.config_source_specifier.as_ref()) {
        Some(S::Ads(_)) => Ok(()),
        None => Err(ConfigError::at(path, "a config source is required")),
        Some(S::ApiConfigSource(_)) => Err(ConfigError::at(
            join(path, "api_config_source"),
            "only ads config sources are supported for EDS and RDS",
        )),
        Some(S::PathConfigSource(_)) | Some(S::Path(_)) => Err(ConfigError::at(
            join(path, "path_config_source"),
            "only ads config sources are supported for EDS and RDS",
        )),
        Some(S::Self_(_)) => Err(ConfigError::at(
            join(path, "self"),
            "only ads config sources are supported for EDS and RDS",
        )),
    }
}
