//! Envoy's SPIFFE certificate validator (`custom_validator_config` with
//! `envoy.tls.cert_validator.spiffe`), as SPIRE-backed meshes configure it, side by side
//! with Envoy 1.40: a client certificate is checked against the bundle of the trust domain
//! its SPIFFE ID names, so one domain's CA cannot vouch for another's identities. The CAs
//! and SVIDs are minted here with openssl; the fixture's SPIRE secret must load as well.

use e2e::config::{bootstrap, hcm, listener};
use e2e::proxy::{agree_with_envoy, envoy_bin, meshproxy_bin, same_in_both, Kind};
use e2e::{curl, fixtures, pki, scratch};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A listener requiring client certificates validated per trust domain.
fn spiffe_listener(port: u16, dir: &Path) -> Value {
    let certs = fixtures().join("istio/certs");
    let file = |p: PathBuf| json!({"filename": p.display().to_string()});
    let tls = json!({"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    "require_client_certificate": true,
    "common_tls_context": {
        "tls_certificates": [{"certificate_chain": file(certs.join("cert-chain.pem")),
            "private_key": file(certs.join("key.pem"))}],
        "validation_context": {"custom_validator_config": {
            "name": "envoy.tls.cert_validator.spiffe",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig",
                "trust_domains": [
                    {"name": "east.local", "trust_bundle": file(dir.join("east.pem"))},
                    {"name": "west.local", "trust_bundle": file(dir.join("west.pem"))},
                ]}}}}}}});
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": "verified"}}}]}]);
    listener("spiffe", port, hcm(vh, json!({})), tls)
}

#[test]
fn client_certificates_are_checked_against_their_trust_domains_bundle_as_in_envoy() {
    let dir = scratch("spiffe-validator");
    pki::ca(&dir, "east");
    pki::ca(&dir, "west");
    let clients = [
        pki::leaf(
            &dir,
            "east-a",
            "east",
            "URI:spiffe://east.local/ns/default/sa/a",
        ),
        pki::leaf(
            &dir,
            "west-b",
            "west",
            "URI:spiffe://west.local/ns/default/sa/b",
        ),
        // West's CA minting an east identity: refused, east's bundle is the one checked.
        pki::leaf(
            &dir,
            "forged",
            "west",
            "URI:spiffe://east.local/ns/default/sa/a",
        ),
        // A domain neither bundle covers, though east's CA signed it.
        pki::leaf(
            &dir,
            "north",
            "east",
            "URI:spiffe://north.local/ns/default/sa/c",
        ),
        // No SPIFFE ID at all.
        pki::leaf(&dir, "dns-only", "east", "DNS:east.example"),
    ];
    let seen = agree_with_envoy(
        |port| bootstrap(vec![spiffe_listener(port, &dir)], vec![]),
        |_, port| {
            clients
                .iter()
                .map(|(cert, key)| {
                    let r = curl::curl(
                        &["-k", "--cert", cert, "--key", key],
                        &format!("https://127.0.0.1:{port}/"),
                    );
                    (r.status, r.text())
                })
                .collect::<Vec<_>>()
        },
    )
    .expect("Envoy");
    let verified = (200, "verified".to_string());
    assert_eq!(seen[..2], [verified.clone(), verified]);
    assert!(seen[2..].iter().all(|(status, _)| *status == 0), "{seen:?}");
}

/// Whether `kind` accepts `config` in `--mode validate`.
fn validates(kind: Kind, config: &str) -> bool {
    let path = scratch("spiffe-validate").join("bootstrap.json");
    std::fs::write(&path, config.replace("{ADMIN}", "0")).unwrap();
    let bin = match kind {
        Kind::Envoy => envoy_bin().expect("Envoy"),
        Kind::Meshproxy => meshproxy_bin(),
    };
    Command::new(bin)
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .expect("validate runs")
        .status
        .success()
}

#[test]
fn the_spire_fixture_secret_gets_envoys_verdict() {
    // The SPIRE dump's ROOTCA secret, as the static validation context of a listener. Its
    // `trusted_ca: {}` names no source, which Envoy's proto validation refuses; with a
    // CA file there instead, the validator's config loads in both.
    let dump: Value = serde_json::from_str(
        &std::fs::read_to_string(
            fixtures().join("istio/config-dumps/secret-spire.config_dump.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let root = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["dynamic_active_secrets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|s| s["name"] == "ROOTCA")
        .expect("ROOTCA secret")["secret"]["validation_context"]
        .clone();
    assert!(root["custom_validator_config"].is_object());
    let certs = fixtures().join("istio/certs");
    let mut with_ca = root.clone();
    with_ca["trusted_ca"] = json!({"filename": certs.join("root-cert.pem").display().to_string()});
    let verdicts = same_in_both(|kind| {
        [&root, &with_ca].map(|validation| {
            let file = |p: PathBuf| json!({"filename": p.display().to_string()});
            let tls = json!({"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {
                    "tls_certificates": [{"certificate_chain": file(certs.join("cert-chain.pem")),
                        "private_key": file(certs.join("key.pem"))}],
                    "validation_context": validation}}}});
            let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]);
            let cfg = bootstrap(vec![listener("l", e2e::free_port(), hcm(vh, json!({})), tls)], vec![]);
            validates(kind, &cfg)
        })
    })
    .expect("Envoy");
    assert_eq!(verdicts, [false, true]);
}
