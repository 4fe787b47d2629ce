//! Config sources of resources that xDS delivers (CDS, LDS, EDS of a cluster, RDS of an
//! HTTP connection manager, SDS of a TLS context): the ADS stream, or a separate gRPC
//! stream to a static cluster (`api_config_source` with an `envoy_grpc` service).

use super::error::{join, ConfigError, Result};
use xds_client::proto::envoy::config::core::v3 as core;

/// Where a resource comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XdsSource {
    /// The ADS stream.
    Ads,
    /// Its own stream to this static cluster; `delta` for `DELTA_GRPC`.
    Cluster {
        /// The cluster.
        name: String,
        /// Delta or state-of-the-world.
        delta: bool,
    },
    /// A file holding a `DiscoveryResponse`, re-read when it changes.
    Path(String),
}

/// Reads a config source; `self` sources and non-`envoy_grpc` services are rejected by
/// path.
pub fn xds_source(source: Option<&core::ConfigSource>, path: &str) -> Result<XdsSource> {
    use core::config_source::ConfigSourceSpecifier as S;
    match source.and_then(|s| s.config_source_specifier.as_ref()) {
        Some(S::Ads(_)) => Ok(XdsSource::Ads),
        None => Err(ConfigError::at(path, "a config source is required")),
        Some(S::ApiConfigSource(a)) => {
            let p = join(path, "api_config_source");
            if !matches!(a.api_type, 2 | 3 | 5 | 6) {
                return Err(ConfigError::at(
                    join(&p, "api_type"),
                    "only GRPC and DELTA_GRPC config sources are supported",
                ));
            }
            use core::grpc_service::TargetSpecifier as T;
            match a
                .grpc_services
                .first()
                .and_then(|g| g.target_specifier.as_ref())
            {
                Some(T::EnvoyGrpc(g)) => Ok(XdsSource::Cluster {
                    name: g.cluster_name.clone(),
                    delta: matches!(a.api_type, 3 | 6),
                }),
                _ => Err(ConfigError::at(
                    join(&p, "grpc_services"),
                    "an envoy_grpc service is required",
                )),
            }
        }
        Some(S::PathConfigSource(p)) => {
            if p.path.is_empty() {
                return Err(ConfigError::at(
                    join(path, "path_config_source.path"),
                    "path is required",
                ));
            }
            Ok(XdsSource::Path(p.path.clone()))
        }
        Some(S::Path(p)) => Ok(XdsSource::Path(p.clone())),
        Some(S::Self_(_)) => Err(ConfigError::at(
            join(path, "self"),
            "self config sources are not supported",
        )),
    }
}
