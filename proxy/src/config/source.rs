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
    /// A `google_grpc` target: its own stream to `target_uri` (`host:port`, `dns:///…`
    /// or `unix:…`); `delta` for `DELTA_GRPC`.
    Google {
        /// `target_uri`.
        target: String,
        /// `channel_credentials.ssl_credentials`, as PEM.
        tls: Option<GoogleTls>,
        /// Delta or state-of-the-world.
        delta: bool,
    },
}

/// `ssl_credentials` of a `google_grpc` service, as PEM text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GoogleTls {
    /// `root_certs`: the CAs the server certificate must chain to.
    pub roots: String,
    /// `cert_chain` and `private_key`, for a client certificate.
    pub client: Option<(String, String)>,
}

/// Reads a `google_grpc` service.
fn google(g: &core::grpc_service::GoogleGrpc, delta: bool, path: &str) -> Result<XdsSource> {
    if g.target_uri.is_empty() {
        return Err(ConfigError::at(
            join(path, "target_uri"),
            "target_uri is required",
        ));
    }
    use core::grpc_service::google_grpc::channel_credentials::CredentialSpecifier as C;
    let cp = join(path, "channel_credentials");
    let tls = match g
        .channel_credentials
        .as_ref()
        .and_then(|c| c.credential_specifier.as_ref())
    {
        None | Some(C::LocalCredentials(_)) => None,
        Some(C::SslCredentials(ssl)) => {
            let sp = join(&cp, "ssl_credentials");
            let source = |d: &Option<core::DataSource>, field: &str| -> Result<Option<String>> {
                d.as_ref()
                    .map(|d| {
                        super::common::data_source(d, &join(&sp, field))
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                    })
                    .transpose()
            };
            let roots = source(&ssl.root_certs, "root_certs")?.ok_or_else(|| {
                ConfigError::at(join(&sp, "root_certs"), "root_certs is required")
            })?;
            let client = match (
                source(&ssl.cert_chain, "cert_chain")?,
                source(&ssl.private_key, "private_key")?,
            ) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => {
                    return Err(ConfigError::at(
                        sp,
                        "cert_chain and private_key go together",
                    ))
                }
            };
            Some(GoogleTls { roots, client })
        }
        Some(C::GoogleDefault(_)) => {
            return Err(ConfigError::at(
                join(&cp, "google_default"),
                "Google default credentials are not supported",
            ))
        }
    };
    Ok(XdsSource::Google {
        target: g.target_uri.clone(),
        tls,
        delta,
    })
}

/// Reads a config source; `self` sources are rejected by path.
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
            let delta = matches!(a.api_type, 3 | 6);
            match a
                .grpc_services
                .first()
                .and_then(|g| g.target_specifier.as_ref())
            {
                Some(T::EnvoyGrpc(g)) => Ok(XdsSource::Cluster {
                    name: g.cluster_name.clone(),
                    delta,
                }),
                Some(T::GoogleGrpc(g)) => {
                    google(g, delta, &join(&p, "grpc_services[0].google_grpc"))
                }
                None => Err(ConfigError::at(
                    join(&p, "grpc_services"),
                    "a gRPC service is required",
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

/// `initial_fetch_timeout` of a config source: `None` waits for the first answer forever
/// (`0s`); unset means Envoy's default, 15 s.
pub fn fetch_timeout(
    source: Option<&core::ConfigSource>,
    path: &str,
) -> Result<Option<std::time::Duration>> {
    match source.and_then(|s| s.initial_fetch_timeout.as_ref()) {
        Some(t) => Ok(Some(super::common::duration(
            t,
            &join(path, "initial_fetch_timeout"),
        )?)
        .filter(|d| !d.is_zero())),
        None => Ok(Some(std::time::Duration::from_secs(15))),
    }
}
