//! `envoy.filters.network.tcp_proxy` configuration.

use super::access_log::{self, AccessLogConfig};
use super::common;
use super::error::{join, ConfigError, Result};
use std::time::Duration;
use xds_client::proto::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;

/// A translated TcpProxy.
#[derive(Debug)]
pub struct TcpProxyConfig {
    /// Stats prefix (`tcp.<prefix>.`).
    pub stat_prefix: String,
    /// Clusters with weights (a single cluster has weight 1).
    pub clusters: Vec<(String, u64)>,
    /// Idle timeout (default 1 h; `0s` disables).
    pub idle_timeout: Option<Duration>,
    /// Connect attempts before giving up (default 1).
    pub max_connect_attempts: u32,
    /// Access logs written when the connection closes.
    pub access_logs: Vec<AccessLogConfig>,
}

/// Translates a TcpProxy.
pub fn translate(t: &tcp::TcpProxy, path: &str) -> Result<TcpProxyConfig> {
    use tcp::tcp_proxy::ClusterSpecifier as C;
    if t.stat_prefix.is_empty() {
        return Err(ConfigError::at(
            join(path, "stat_prefix"),
            "stat_prefix is required",
        ));
    }
    let clusters = match &t.cluster_specifier {
        Some(C::Cluster(c)) => vec![(c.clone(), 1)],
        Some(C::WeightedClusters(w)) => {
            if w.clusters.is_empty() {
                return Err(ConfigError::at(
                    join(path, "weighted_clusters.clusters"),
                    "at least one cluster is required",
                ));
            }
            w.clusters
                .iter()
                .map(|c| (c.name.clone(), u64::from(c.weight)))
                .collect()
        }
        None => {
            return Err(ConfigError::at(
                path,
                "cluster or weighted_clusters is required",
            ))
        }
    };
    let attempts = t
        .max_connect_attempts
        .as_ref()
        .map(|v| v.value)
        .unwrap_or(1);
    if attempts == 0 {
        return Err(ConfigError::at(
            join(path, "max_connect_attempts"),
            "must be at least 1",
        ));
    }
    Ok(TcpProxyConfig {
        stat_prefix: t.stat_prefix.clone(),
        clusters,
        idle_timeout: common::timeout(
            t.idle_timeout.as_ref(),
            Some(Duration::from_secs(3600)),
            &join(path, "idle_timeout"),
        )?,
        max_connect_attempts: attempts,
        access_logs: access_log::translate_all(&t.access_log, &join(path, "access_log"))?,
    })
}
