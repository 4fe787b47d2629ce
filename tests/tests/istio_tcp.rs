//! Istio's TCP metadata exchange and TCP metrics through two meshproxy sidecars on
//! loopback, as istio/proxy's TCP "basic flow" test sets them up: the client sidecar's
//! outbound cluster runs the upstream exchange filter over mutual TLS negotiating the
//! exchange ALPN, the server sidecar's inbound chain runs the downstream exchange and
//! `istio.stats` network filters, and the app answers 12 bytes to each 6 it gets. The
//! filter configs, node metadata and expected metrics (10 connections, 60 bytes in, 120
//! out) are istio/proxy's fixtures.

use e2e::config::merge;
use e2e::istio::{expected_metric, node_metadata, samples, yaml};
use e2e::proxy::{Kind, Proxy};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};

const CONNECTIONS: usize = 10;
const ALPN: &str = "mx-protocol";

/// A backend answering `hello world\n` to each 6 bytes, then closing.
fn backend() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 6];
                if s.read_exact(&mut buf).is_ok() {
                    let _ = s.write_all(b"hello world\n");
                }
            });
        }
    });
    port
}

fn certs(name: &str) -> Value {
    json!({"filename": e2e::fixtures().join("istio-proxy/certs").join(name).display().to_string()})
}

fn tls(kind: &str, cert: &str, key: &str, extra: Value) -> Value {
    let mut ctx = json!({
        "@type": format!("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{kind}"),
        "common_tls_context": {
            "alpn_protocols": [ALPN],
            "tls_certificates": [{"certificate_chain": certs(cert), "private_key": certs(key)}],
            "validation_context": {"trusted_ca": certs("root.cert")}}});
    merge(&mut ctx, extra);
    json!({"transport_socket": {"name": "tls", "typed_config": ctx}})
}

/// A fixture filter list (YAML with templates) as values.
fn filters(path: &str) -> Vec<Value> {
    filters_with(path, &HashMap::new())
}

/// [`filters`] rendered with `vars`.
fn filters_with(path: &str, vars: &HashMap<&str, &str>) -> Vec<Value> {
    yaml(path, vars).as_array().unwrap().clone()
}

fn cluster(name: &str, port: u16, extra: Value) -> Value {
    let mut c = json!({
        "name": name, "type": "STATIC", "connect_timeout": "5s",
        "metadata": {"filter_metadata": {"istio": {"services": [
            {"host": "server.default.svc.cluster.local", "name": "server", "namespace": "default"}]}}},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}});
    merge(&mut c, extra);
    c
}

fn sidecar(
    node: &str,
    metadata: Value,
    direction: &str,
    port: u16,
    chain: Value,
    clusters: Vec<Value>,
) -> String {
    let inspector = json!({"listener_filters": [{"name": "tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}]});
    e2e::istio::sidecar_bootstrap(
        (node, metadata),
        (direction, port),
        chain,
        inspector,
        clusters,
    )
}

fn tcp_proxy(cluster: &str) -> Value {
    json!({"name": "tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "tcp", "cluster": cluster}})
}

#[test]
fn tcp_basic_flow_reports_istio_metrics_with_both_workloads() {
    tcp_basic_flow(&HashMap::new());
}

/// The stats filters as istiod up to 1.16 sent them: `envoy.filters.network.wasm` naming
/// the null-VM `envoy.wasm.stats` plugin (istio/proxy's fixtures with a Wasm runtime).
#[test]
fn the_null_vm_network_stats_plugin_reports_the_same() {
    tcp_basic_flow(&HashMap::from([("WasmRuntime", "envoy.wasm.runtime.null")]));
}

/// istio/proxy's TCP basic flow, its stats filter fixtures rendered with `vars`.
fn tcp_basic_flow(vars: &HashMap<&str, &str>) {
    let (client_port, server_port, app) = (e2e::free_port(), e2e::free_port(), backend());
    let inbound = "inbound|9080|tcp|server.default.svc.cluster.local";
    let outbound = "outbound|9080|tcp|server.default.svc.cluster.local";
    let mut server_filters = filters("filters/server_mx_network_filter.yaml.tmpl");
    server_filters.extend(filters_with(
        "filters/server_stats_network_filter.yaml.tmpl",
        vars,
    ));
    server_filters.push(tcp_proxy(inbound));
    let mut server_chain = json!({"filters": server_filters});
    merge(
        &mut server_chain,
        tls(
            "DownstreamTlsContext",
            "server.cert",
            "server-key.cert",
            json!({"require_client_certificate": true}),
        ),
    );
    let server = Proxy::start(
        Kind::Meshproxy,
        &sidecar(
            "server",
            node_metadata("server_node_metadata.json.tmpl"),
            "INBOUND",
            server_port,
            server_chain,
            vec![cluster(inbound, app, json!({}))],
        ),
        &[],
    );
    // The client's stats filter: istio/proxy's client network filter fixture.
    let mut client_filters = filters_with("filters/client_stats_network_filter.yaml.tmpl", vars);
    client_filters.push(tcp_proxy(outbound));
    let mut up = cluster(
        outbound,
        server_port,
        tls(
            "UpstreamTlsContext",
            "client.cert",
            "client-key.cert",
            json!({"sni": "server.com"}),
        ),
    );
    up["filters"] = json!(filters("filters/client_mx_network_filter.yaml.tmpl"));
    let client = Proxy::start(
        Kind::Meshproxy,
        &sidecar(
            "client",
            node_metadata("client_node_metadata.json.tmpl"),
            "OUTBOUND",
            client_port,
            json!({"filters": client_filters}),
            vec![up],
        ),
        &[],
    );
    for _ in 0..CONNECTIONS {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", client_port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(b"world ").unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        assert_eq!(
            answer, b"hello world\n",
            "the application bytes pass untouched"
        );
    }
    let no_vars = HashMap::new();
    for (proxy, side) in [(&client, "client"), (&server, "server")] {
        e2e::wait_until(10, "connections reported closed", || {
            let text = proxy.admin_get("/stats/prometheus").unwrap().1;
            samples(&text, "istio_tcp_connections_closed_total")
                .first()
                .is_some_and(|s| s.1 == CONNECTIONS as f64)
        });
        let text = proxy.admin_get("/stats/prometheus").unwrap().1;
        for metric in [
            "connection_open",
            "connection_close",
            "sent_bytes",
            "received_bytes",
        ] {
            let fixture = format!("metric/tcp_{side}_{metric}.yaml.tmpl");
            let (name, labels, value) = expected_metric(&fixture, &no_vars);
            assert_eq!(
                samples(&text, &name),
                vec![(labels, value)],
                "{fixture}:\n{text}"
            );
        }
    }
}

/// A long-lived connection's bytes show while it is open, at the filter's
/// `tcp_reporting_duration` (1 s in istio/proxy's client fixture), and the final report
/// adds only what the periodic ones did not.
#[test]
fn long_lived_connections_report_bytes_while_open() {
    let echo = e2e::upstream::TcpEcho::start();
    let port = e2e::free_port();
    let mut chain_filters = filters("filters/client_stats_network_filter.yaml.tmpl");
    chain_filters.push(tcp_proxy("outbound|7070||echo.default.svc.cluster.local"));
    let client = Proxy::start(
        Kind::Meshproxy,
        &sidecar(
            "client",
            node_metadata("client_node_metadata.json.tmpl"),
            "OUTBOUND",
            port,
            json!({"filters": chain_filters}),
            vec![cluster(
                "outbound|7070||echo.default.svc.cluster.local",
                echo.port,
                json!({}),
            )],
        ),
        &[],
    );
    let received = || {
        let text = client.admin_get("/stats/prometheus").unwrap().1;
        samples(&text, "istio_tcp_received_bytes_total")
            .first()
            .map_or(0.0, |s| s.1)
    };
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"12345").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    e2e::wait_until(10, "the open connection's bytes are reported", || {
        received() == 5.0
    });
    s.write_all(b"678").unwrap();
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).unwrap();
    drop(s);
    e2e::wait_until(10, "the connection is reported closed", || {
        let text = client.admin_get("/stats/prometheus").unwrap().1;
        !samples(&text, "istio_tcp_connections_closed_total").is_empty()
    });
    assert_eq!(received(), 8.0, "every byte counted once");
}
