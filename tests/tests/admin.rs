//! Every admin endpoint, through the real binary.

use e2e::config::simple_http;
use e2e::proxy::{Kind, Proxy};
use e2e::upstream::Upstream;
use e2e::{curl, free_port};

fn proxy() -> (Upstream, Proxy, u16) {
    let up = Upstream::http("u");
    let port = free_port();
    let p = Proxy::start(
        Kind::Meshproxy,
        &simple_http(port, "web", &[up.port]),
        &["--service-node", "node-1", "--service-cluster", "svc"],
    );
    assert_eq!(curl::get(port, "/", &[]).status, 200);
    (up, p, port)
}

#[test]
fn ready_server_info_and_memory() {
    let (_u, p, _) = proxy();
    assert_eq!(p.admin_get("/ready").unwrap(), (200, "LIVE\n".into()));
    let (s, body) = p.admin_get("/server_info").unwrap();
    assert_eq!(s, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["state"], "LIVE");
    assert_eq!(info["node"]["id"], "node-1");
    assert_eq!(info["command_line_options"]["service_cluster"], "svc");
    let (s, body) = p.admin_get("/memory").unwrap();
    assert_eq!(s, 200);
    let m: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(m["allocated"].as_str().unwrap().parse::<u64>().unwrap() > 0);
}

#[test]
fn stats_text_json_prometheus_usedonly_and_filter() {
    let (_u, p, _) = proxy();
    let (_, text) = p.admin_get("/stats").unwrap();
    for name in [
        "cluster.web.upstream_rq_total: 1",
        "cluster.web.upstream_rq_200: 1",
        "http.ingress.downstream_rq_2xx: 1",
        "listener.127.0.0.1_",
        "server.state: 0",
        "server.live: 1",
        "listener_manager.workers_started: 1",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    let (_, used) = p.admin_get("/stats?usedonly&filter=upstream_rq_").unwrap();
    assert!(used.lines().all(|l| l.contains("upstream_rq_")), "{used}");
    assert!(
        !used.contains("upstream_rq_timeout"),
        "unused stats must be hidden: {used}"
    );
    let (_, filtered) = p
        .admin_get("/stats?filter=%5E%28server%5C.state%7Clistener_manager%5C.workers_started%29")
        .unwrap();
    assert_eq!(
        filtered,
        "listener_manager.workers_started: 1\nserver.state: 0\n"
    );
    let (_, json) = p
        .admin_get("/stats?format=json&filter=upstream_rq_total")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["stats"][0]["name"], "cluster.web.upstream_rq_total");
    assert_eq!(v["stats"][0]["value"], 1);
    let (_, prom) = p.admin_get("/stats/prometheus").unwrap();
    assert!(prom.contains("# TYPE envoy_cluster_upstream_rq_total counter\nenvoy_cluster_upstream_rq_total{envoy_cluster_name=\"web\"} 1\n"), "{prom}");
    assert!(prom.contains("envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix=\"ingress\",envoy_response_code_class=\"2\"} 1"), "{prom}");
    assert!(
        prom.contains(
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"web\",le=\"+Inf\"} 1"
        ),
        "{prom}"
    );
    assert_eq!(p.admin_get("/stats?filter=(").unwrap().0, 400);
}

#[test]
fn config_dump_clusters_and_listeners() {
    let (u, p, port) = proxy();
    let (_, body) = p.admin_get("/config_dump").unwrap();
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    let types: Vec<&str> = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["@type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"
        ]
    );
    let cluster = &dump["configs"][1]["static_clusters"][0]["cluster"];
    assert_eq!(
        cluster["@type"],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    );
    assert_eq!(cluster["name"], "web");
    assert_eq!(
        dump["configs"][2]["static_listeners"][0]["listener"]["name"],
        "http"
    );
    assert!(dump["configs"][0]["bootstrap"]["static_resources"].is_object());
    let (_, clusters) = p.admin_get("/clusters").unwrap();
    assert!(
        clusters.contains(&format!("web::127.0.0.1:{}::rq_active::0", u.port)),
        "{clusters}"
    );
    assert!(
        clusters.contains("web::default_priority::max_connections::1024"),
        "{clusters}"
    );
    let (_, cj) = p.admin_get("/clusters?format=json").unwrap();
    let cj: serde_json::Value = serde_json::from_str(&cj).unwrap();
    assert_eq!(
        cj["cluster_statuses"][0]["host_statuses"][0]["address"]["socket_address"]["port_value"],
        u.port
    );
    let (_, listeners) = p.admin_get("/listeners").unwrap();
    assert_eq!(listeners, format!("http::127.0.0.1:{port}\n"));
}

#[test]
fn logging_levels_change_at_runtime() {
    let (_u, p, _) = proxy();
    let (s, body) = p.admin_get("/logging").unwrap();
    assert_eq!(s, 200);
    assert!(body.contains("  upstream: info"), "{body}");
    assert_eq!(
        p.admin_get("/logging?level=debug").unwrap().0,
        405,
        "changing levels requires POST"
    );
    let (s, body) = p.admin_post("/logging?upstream=debug").unwrap();
    assert_eq!(s, 200);
    assert!(
        body.contains("  upstream: debug") && body.contains("  http: info"),
        "{body}"
    );
    let (_, body) = p.admin_post("/logging?level=error").unwrap();
    assert!(
        body.contains("  upstream: error") && body.contains("  http: error"),
        "{body}"
    );
    assert_eq!(p.admin_post("/logging?nosuch=debug").unwrap().0, 404);
}

#[test]
fn healthcheck_drain_and_quit() {
    let (_u, mut p, port) = proxy();
    assert_eq!(p.admin_get("/healthcheck/fail").unwrap().0, 405);
    assert_eq!(
        p.admin_post("/healthcheck/fail").unwrap(),
        (200, "OK\n".into())
    );
    assert_eq!(
        p.admin_post("/healthcheck/ok").unwrap(),
        (200, "OK\n".into())
    );
    assert_eq!(p.admin_post("/drain_listeners").unwrap().0, 200);
    e2e::wait_until(5, "listener closed", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    assert_eq!(p.stat("server.state"), Some(1));
    assert_eq!(p.admin_get("/ready").unwrap(), (503, "DRAINING\n".into()));
    assert_eq!(p.admin_get("/nope").unwrap().0, 404);
    assert_eq!(p.admin_post("/quitquitquit").unwrap(), (200, "OK\n".into()));
    assert_eq!(p.wait_exit(10), Some(0));
}

#[test]
fn graceful_drain_closes_connections_then_listeners() {
    let up = Upstream::http("u");
    let port = free_port();
    let p = Proxy::start(
        Kind::Meshproxy,
        &simple_http(port, "web", &[up.port]),
        &["--drain-time-s", "2", "--drain-strategy", "immediate"],
    );
    assert!(curl::get(port, "/", &[]).header("connection").is_none());
    assert_eq!(p.admin_post("/drain_listeners?graceful").unwrap().0, 200);
    // During the drain period the listener still accepts, but asks clients to close.
    let r = curl::get(port, "/", &[]);
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert_eq!(p.admin_get("/ready").unwrap().1, "DRAINING\n");
    e2e::wait_until(10, "listener stopped after the drain time", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
}
