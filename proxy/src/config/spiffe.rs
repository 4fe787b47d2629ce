//! Envoy's SPIFFE certificate validator (`envoy.tls.cert_validator.spiffe`, a validation
//! context's `custom_validator_config`): what SPIRE-backed meshes send. Each trust domain
//! brings its own CA bundle; the peer's SPIFFE ID picks the bundle before its chain is
//! checked ([`crate::tls::verify::Trust::TrustDomains`]). The SAN matchers of the
//! validation context still apply, as in Envoy.

use super::common;
use super::error::{item, join, ConfigError, Result};
use crate::tls::{pem, verify::Trust};
use xds_client::proto::envoy::config::core::v3 as core;
use xds_client::proto::envoy::extensions::transport_sockets::tls::v3 as tls;

/// Its config message.
const SPIFFE_CONFIG: &str = "envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig";

/// A CA bundle in PEM, as a root store.
pub fn roots(source: &core::DataSource, path: &str) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem::certificates(&common::data_source(source, path)?)
        .map_err(|e| ConfigError::at(path, e))?
    {
        roots
            .add(cert)
            .map_err(|e| ConfigError::at(path, format!("invalid CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The trust a `custom_validator_config` describes (the support registry has already
/// refused the fields meshproxy lacks: `trust_bundles`, `workload_trust_domain`).
pub fn trust(config: &core::TypedExtensionConfig, path: &str) -> Result<Trust> {
    let typed_path = join(path, "typed_config");
    let spiffe: tls::SpiffeCertValidatorConfig =
        common::typed_extension(config, SPIFFE_CONFIG, path)?;
    if spiffe.trust_domains.is_empty() {
        return Err(ConfigError::at(
            join(&typed_path, "trust_domains"),
            "at least one trust domain is required",
        ));
    }
    let mut domains: Vec<(String, rustls::RootCertStore)> = Vec::new();
    for (i, domain) in spiffe.trust_domains.iter().enumerate() {
        let p = item(&typed_path, "trust_domains", i);
        let name = domain.name.to_ascii_lowercase();
        if name.is_empty() || name.starts_with("spiffe://") || name.contains('/') {
            return Err(ConfigError::at(
                join(&p, "name"),
                format!(
                    "invalid trust domain {:?} (a bare name, without spiffe://)",
                    domain.name
                ),
            ));
        }
        if domains.iter().any(|(n, _)| *n == name) {
            return Err(ConfigError::at(
                join(&p, "name"),
                format!("trust domain {name} is listed twice"),
            ));
        }
        let bundle_path = join(&p, "trust_bundle");
        let bundle = domain
            .trust_bundle
            .as_ref()
            .ok_or_else(|| ConfigError::at(&bundle_path, "trust_bundle is required"))?;
        domains.push((name, roots(bundle, &bundle_path)?));
    }
    Ok(Trust::TrustDomains(domains))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use xds_client::proto::google::protobuf::Any;

    /// The validator's extension name.
    const SPIFFE_VALIDATOR: &str = "envoy.tls.cert_validator.spiffe";

    fn config(spiffe: tls::SpiffeCertValidatorConfig) -> core::TypedExtensionConfig {
        core::TypedExtensionConfig {
            name: SPIFFE_VALIDATOR.into(),
            typed_config: Some(Any {
                type_url: format!("type.googleapis.com/{SPIFFE_CONFIG}"),
                value: spiffe.encode_to_vec(),
            }),
        }
    }

    fn domain(name: &str) -> tls::spiffe_cert_validator_config::TrustDomain {
        let ca = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/istio/certs/root-cert.pem"
        );
        tls::spiffe_cert_validator_config::TrustDomain {
            name: name.into(),
            trust_bundle: Some(core::DataSource {
                specifier: Some(core::data_source::Specifier::Filename(ca.into())),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn trust_domains_load_and_bad_ones_are_refused_by_field() {
        let ok = trust(
            &config(tls::SpiffeCertValidatorConfig {
                trust_domains: vec![domain("East.Local"), domain("west.local")],
                ..Default::default()
            }),
            "v",
        )
        .unwrap();
        let Trust::TrustDomains(domains) = ok else {
            panic!("not per trust domain");
        };
        let names: Vec<_> = domains.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["east.local", "west.local"]);
        for (spiffe, field) in [
            (vec![], "v.typed_config.trust_domains"),
            (
                vec![domain("spiffe://east.local")],
                "v.typed_config.trust_domains[0].name",
            ),
            (
                vec![domain("a"), domain("A")],
                "v.typed_config.trust_domains[1].name",
            ),
        ] {
            let err = trust(
                &config(tls::SpiffeCertValidatorConfig {
                    trust_domains: spiffe,
                    ..Default::default()
                }),
                "v",
            )
            .err()
            .expect("refused");
            assert!(err.to_string().starts_with(field), "{err}");
        }
    }
}
