//! DNS for STRICT_DNS and LOGICAL_DNS clusters: resolve every endpoint name, then refresh
//! at `dns_refresh_rate` on the main runtime. STRICT_DNS keeps every address; LOGICAL_DNS
//! keeps the first. Failures keep the last good hosts, as Envoy does.

use super::cluster::Cluster;
use super::host::{Host, HostAddress};
use crate::config::cluster::{Discovery, DnsFamily};
use crate::config::common::Address;
use std::net::SocketAddr;
use std::sync::Arc;

fn family_filter(family: DnsFamily, addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let v4: Vec<_> = addrs.iter().copied().filter(SocketAddr::is_ipv4).collect();
    let v6: Vec<_> = addrs.iter().copied().filter(SocketAddr::is_ipv6).collect();
    match family {
        DnsFamily::V4Only => v4,
        DnsFamily::V6Only => v6,
        DnsFamily::V4Preferred => {
            if v4.is_empty() {
                v6
            } else {
                v4
            }
        }
        DnsFamily::Auto => {
            if v6.is_empty() {
                v4
            } else {
                v6
            }
        }
        DnsFamily::All => addrs,
    }
}

/// Resolves the cluster's names once and installs the hosts; returns whether any resolved.
pub async fn resolve_once(cluster: &Arc<Cluster>) -> bool {
    let mut hosts = Vec::new();
    let mut ok = false;
    for e in &cluster.config.assignment.endpoints {
        let (name, port) = match &e.address {
            Address::Named(n, p) => (n.clone(), *p),
            Address::Socket(a) => (a.ip().to_string(), a.port()),
            Address::Pipe(..) => continue,
        };
        let resolved = tokio::net::lookup_host(format!("{name}:{port}")).await;
        match resolved {
            Ok(addrs) => {
                ok = true;
                let mut addrs = family_filter(cluster.config.dns_family, addrs.collect());
                addrs.dedup();
                if cluster.config.discovery == Discovery::LogicalDns {
                    addrs.truncate(1);
                }
                let hostname = if e.hostname.is_empty() {
                    name.clone()
                } else {
                    e.hostname.clone()
                };
                hosts.extend(addrs.into_iter().map(|a| {
                    Host::new(HostAddress::Tcp(a), hostname.clone(), e.weight)
                        .with_tls_match(cluster.config.tls_match(&e.tls_labels))
                }));
            }
            Err(err) => {
                tracing::warn!(target: "dns", "DNS resolution of {name} for cluster {} failed: {err}", cluster.config.name)
            }
        }
    }
    if ok {
        cluster.set_hosts(hosts);
    }
    ok
}

/// Spawns the refresh loop (on the current runtime); it ends when CDS retires the cluster.
pub fn spawn_refresh(cluster: Arc<Cluster>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(cluster.config.dns_refresh_rate).await;
            if cluster.is_retired() {
                return;
            }
            resolve_once(&cluster).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        let a: Vec<SocketAddr> = vec!["1.2.3.4:80".parse().unwrap(), "[::1]:80".parse().unwrap()];
        assert_eq!(family_filter(DnsFamily::V4Only, a.clone()).len(), 1);
        assert!(family_filter(DnsFamily::Auto, a.clone())[0].is_ipv6());
        assert!(family_filter(DnsFamily::V4Preferred, a.clone())[0].is_ipv4());
        assert_eq!(family_filter(DnsFamily::All, a).len(), 2);
    }
}
