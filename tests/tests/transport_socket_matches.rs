//! `transport_socket_matches` (Istio's auto-mTLS shape) in Envoy 1.40 and meshproxy: an
//! endpoint labelled `tlsMode: istio` gets the TLS entry, an unlabelled one the empty-match
//! raw-buffer entry, so the same cluster config reaches a TLS and a plaintext upstream;
//! a labelled endpoint in front of a plaintext server fails in both.

use e2e::config::{bootstrap, cluster, hcm, listener};
use e2e::proxy::agree_with_envoy;
use e2e::upstream::Upstream;
use serde_json::{json, Value};

/// The matches istiod puts on an outbound cluster.
fn istio_matches() -> Value {
    let certs = e2e::fixtures().join("istio-proxy/certs");
    let file = |n: &str| json!({"filename": certs.join(n).display().to_string()});
    json!({"transport_socket_matches": [
        {"name": "tlsMode-istio", "match": {"tlsMode": "istio"},
         "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": file("client.cert"), "private_key": file("client-key.cert")}],
                "validation_context": {"trusted_ca": file("root.cert")}},
            "sni": "server.com"}}},
        {"name": "tlsMode-disabled", "match": {},
         "transport_socket": {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}}
    ]})
}

/// A cluster on `port` with Istio's matches, its endpoint labelled `tlsMode: istio` or not.
fn meshed(name: &str, port: u16, labelled: bool) -> Value {
    let mut c = cluster(name, &[port], istio_matches());
    if labelled {
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"] = json!({
            "filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}});
    }
    c
}

#[test]
fn endpoints_choose_their_transport_socket_by_metadata() {
    let certs = e2e::fixtures().join("istio-proxy/certs");
    let tls_up = Upstream::tls(
        "mtls",
        &certs.join("server.cert"),
        &certs.join("server-key.cert"),
    );
    let plain_up = Upstream::http("plain");
    let cfg = |port: u16| {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/tls"}, "route": {"cluster": "tls"}},
            {"match": {"prefix": "/plain"}, "route": {"cluster": "plain"}},
            {"match": {"prefix": "/mismatch"}, "route": {"cluster": "mismatch"}}]}]);
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![
                meshed("tls", tls_up.port, true),
                meshed("plain", plain_up.port, false),
                meshed("mismatch", plain_up.port, true),
            ],
        )
    };
    let got = agree_with_envoy(cfg, |_, port| {
        let before = (tls_up.count(), plain_up.count());
        let statuses: Vec<u16> = ["/tls", "/plain", "/mismatch"]
            .iter()
            .map(|p| e2e::curl::get(port, p, &[]).status)
            .collect();
        (
            statuses,
            tls_up.count() - before.0,
            plain_up.count() - before.1,
        )
    });
    assert_eq!(
        got,
        Some((vec![200, 200, 503], 1, 1)),
        "Envoy 1.40 is required"
    );
}
