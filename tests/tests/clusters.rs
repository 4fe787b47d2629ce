//! Cluster discovery types and upstream protocol selection, through the real binary.

use e2e::config::{self, bootstrap, cluster, hcm, listener};
use e2e::proxy::{Kind, Proxy};
use e2e::upstream::Upstream;
use e2e::{curl, fixtures, free_port};
use serde_json::{json, Value};

fn dns_cluster(name: &str, kind: &str, port: u16) -> Value {
    json!({"name": name, "type": kind, "connect_timeout": "1s", "dns_lookup_family": "V4_ONLY", "dns_refresh_rate": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "localhost", "port_value": port}}}}]}]}})
}

#[test]
fn strict_and_logical_dns_clusters_resolve_and_auto_host_rewrite_uses_the_name() {
    let up = Upstream::http("dns");
    let port = free_port();
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/strict"}, "route": {"cluster": "strict", "auto_host_rewrite": true}},
        {"match": {"prefix": "/logical"}, "route": {"cluster": "logical"}}]}]);
    let cfg = bootstrap(
        vec![listener("l", port, hcm(vh, json!({})), json!({}))],
        vec![
            dns_cluster("strict", "STRICT_DNS", up.port),
            dns_cluster("logical", "LOGICAL_DNS", up.port),
        ],
    );
    let p = Proxy::start(Kind::Meshproxy, &cfg, &[]);
    assert_eq!(curl::get(port, "/strict", &[]).text(), "dns");
    assert_eq!(up.last().unwrap().header("host"), Some("localhost"));
    assert_eq!(curl::get(port, "/logical", &[]).text(), "dns");
    assert_eq!(
        up.last().unwrap().header("host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    let (_, clusters) = p.admin_get("/clusters").unwrap();
    assert!(
        clusters.contains(&format!(
            "strict::127.0.0.1:{}::hostname::localhost",
            up.port
        )),
        "{clusters}"
    );
    assert_eq!(p.stat("cluster.logical.membership_total"), Some(1));
}

#[test]
fn use_downstream_protocol_follows_the_client() {
    let up = Upstream::http("u");
    let port = free_port();
    let opts = json!({"typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "use_downstream_protocol_config": {"http2_protocol_options": {}}}}});
    let _p = Proxy::start(
        Kind::Meshproxy,
        &config::bootstrap(
            vec![listener(
                "l",
                port,
                hcm(
                    json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]),
                    json!({}),
                ),
                json!({}),
            )],
            vec![cluster("c", &[up.port], opts)],
        ),
        &[],
    );
    curl::get(port, "/", &["--http1.1"]);
    assert_eq!(up.last().unwrap().version, "HTTP/1.1");
    curl::get(port, "/", &["--http2-prior-knowledge"]);
    assert_eq!(up.last().unwrap().version, "HTTP/2.0");
}

#[test]
fn auto_protocol_negotiates_h2_by_alpn() {
    let d = fixtures().join("istio/certs");
    let up = Upstream::tls("tls", &d.join("cert-chain.pem"), &d.join("key.pem"));
    let port = free_port();
    let opts = json!({"typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "auto_config": {"http2_protocol_options": {}}}},
        "transport_socket": {"name": "tls", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"}}});
    let _p = Proxy::start(
        Kind::Meshproxy,
        &config::bootstrap(
            vec![listener(
                "l",
                port,
                hcm(
                    json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]),
                    json!({}),
                ),
                json!({}),
            )],
            vec![cluster("c", &[up.port], opts)],
        ),
        &[],
    );
    assert_eq!(curl::get(port, "/", &[]).status, 200);
    assert_eq!(up.last().unwrap().version, "HTTP/2.0");
    assert_eq!(curl::get(port, "/", &[]).status, 200);
    assert_eq!(up.connections(), 1, "the h2 connection is reused");
}

#[test]
fn ipv6_listener_and_upstream() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIP: no IPv6 loopback here");
        return;
    }
    let up = Upstream::http("u");
    let port = free_port();
    let l = json!({"name": "v6", "address": {"socket_address": {"address": "::1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm(json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]), json!({}))}]}]});
    let p = Proxy::start(
        Kind::Meshproxy,
        &bootstrap(vec![l], vec![cluster("c", &[up.port], json!({}))]),
        &[],
    );
    let r = curl::curl(&["-g"], &format!("http://[::1]:{port}/"));
    assert_eq!((r.status, r.text().as_str()), (200, "u"));
    assert!(p
        .admin_get("/stats")
        .unwrap()
        .1
        .contains(&format!("listener.[::1]_{port}.downstream_cx_total: 1")));
}

/// A STATIC or STRICT_DNS cluster without a load assignment has no hosts (Istio's
/// BlackHoleCluster is one): both proxies load it and answer 503 without an upstream;
/// a LOGICAL_DNS one needs its host, and both refuse it.
#[test]
fn clusters_without_a_load_assignment_have_no_hosts() {
    let bare =
        |name: &str, kind: &str| json!({"name": name, "type": kind, "connect_timeout": "1s"});
    let cfg = |port: u16| {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/static"}, "route": {"cluster": "BlackHoleCluster"}},
            {"match": {"prefix": "/dns"}, "route": {"cluster": "dns"}}]}]);
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![
                bare("BlackHoleCluster", "STATIC"),
                bare("dns", "STRICT_DNS"),
            ],
        )
    };
    let seen = e2e::proxy::agree_with_envoy(cfg, |_, port| {
        (
            curl::get(port, "/static", &[]).status,
            curl::get(port, "/dns", &[]).status,
        )
    });
    if let Some(seen) = seen {
        assert_eq!(seen, (503, 503));
    }
    let logical = bootstrap(vec![], vec![bare("logical", "LOGICAL_DNS")]).replace("{ADMIN}", "0");
    let (code, _, err) =
        e2e::proxy::run_meshproxy(&["--mode", "validate", "--config-yaml", &logical]);
    assert_ne!(code, 0);
    assert!(
        err.contains("LOGICAL_DNS") && err.contains("load_assignment"),
        "{err}"
    );
}
