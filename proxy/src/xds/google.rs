//! `google_grpc` targets: where `target_uri` points (`host:port`, `dns:///host:port`,
//! `unix:path`, `unix:///path`) and the TLS its `ssl_credentials` ask for (roots, and a
//! client certificate when given).

use crate::config::source::GoogleTls;
use crate::tls::pem;
use std::sync::Arc;
use xds_client::ads::{ClientTls, Target};

/// Resolves `target_uri` (a DNS name is looked up now, at stream start).
pub fn target(uri: &str) -> Result<Target, String> {
    if let Some(path) = uri.strip_prefix("unix:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        return Ok(Target::Unix(path.into()));
    }
    let hostport = uri.strip_prefix("dns:///").unwrap_or(uri);
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("google_grpc target {uri}: {e}"))?
        .next()
        .map(Target::Tcp)
        .ok_or_else(|| format!("google_grpc target {uri}: no address"))
}

/// The host part of `target_uri`, the name the server certificate is checked against.
fn host(uri: &str) -> String {
    let hostport = uri.strip_prefix("dns:///").unwrap_or(uri);
    match hostport.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => hostport.to_string(),
    }
}

/// The rustls client config of `ssl_credentials`.
pub fn tls(uri: &str, creds: &GoogleTls) -> Result<ClientTls, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem::certificates(creds.roots.as_bytes())? {
        roots
            .add(cert)
            .map_err(|e| format!("google_grpc root_certs: {e}"))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let config = match &creds.client {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                pem::certificates(chain.as_bytes())?,
                pem::private_key(key.as_bytes())?,
            )
            .map_err(|e| format!("google_grpc cert_chain/private_key: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(ClientTls {
        config: Arc::new(config),
        server_name: host(uri),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_uris() {
        assert_eq!(
            target("127.0.0.1:15012").unwrap(),
            Target::Tcp("127.0.0.1:15012".parse().unwrap())
        );
        assert_eq!(
            target("dns:///127.0.0.1:80").unwrap(),
            Target::Tcp("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            target("unix:///etc/istio/proxy/XDS").unwrap(),
            Target::Unix("/etc/istio/proxy/XDS".into())
        );
        assert_eq!(target("unix:./XDS").unwrap(), Target::Unix("./XDS".into()));
        assert!(target("no-port").is_err());
        assert_eq!(
            host("dns:///istiod.istio-system.svc:15012"),
            "istiod.istio-system.svc"
        );
    }

    #[test]
    fn ssl_credentials_build_a_client_config() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/istio/certs");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let creds = GoogleTls {
            roots: read("root-cert.pem"),
            client: Some((read("cert-chain.pem"), read("key.pem"))),
        };
        let tls = tls("dns:///istiod.istio-system.svc:15012", &creds).unwrap();
        assert_eq!(tls.server_name, "istiod.istio-system.svc");
        assert!(tls.config.client_auth_cert_resolver.has_certs());
        let bad = GoogleTls {
            roots: "not pem".into(),
            client: None,
        };
        assert!(self::tls("x:1", &bad).is_err());
    }
}
