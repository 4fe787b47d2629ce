//! `original_dst` + `use_original_dst` hand-off and ORIGINAL_DST passthrough, with real
//! iptables REDIRECT inside a network namespace this test creates (root required; skipped
//! with a message where namespaces cannot be created). meshproxy runs as uid 1337 so its
//! own upstream connections are exempt from the redirect, as in an Istio pod.

use e2e::config::hcm;
use e2e::netns::Netns;
use serde_json::json;

/// A namespace with three local addresses whose traffic to them is redirected to 15001,
/// except meshproxy's own (uid 1337).
fn namespace() -> Option<Netns> {
    let ns = Netns::create("mp-od")?;
    ns.sh(
        "ip addr add 10.99.0.5/32 dev lo && ip addr add 10.99.0.6/32 dev lo && ip addr add 10.99.0.7/32 dev lo \
         && iptables -t nat -A OUTPUT -p tcp -m owner --uid-owner 1337 -j RETURN \
         && iptables -t nat -A OUTPUT -p tcp -d 10.99.0.0/24 -j REDIRECT --to-ports 15001",
    );
    Some(ns)
}

fn curl(ns: &Netns, url: &str) -> String {
    e2e::curl::curl_in(ns, &[], url).text()
}

fn direct(body: &str) -> serde_json::Value {
    hcm(
        json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}]}]),
        json!({"stat_prefix": body}),
    )
}

#[test]
fn original_destination_hand_off_and_passthrough() {
    let Some(mut ns) = namespace() else {
        return;
    };
    let dir = e2e::scratch("origdst");
    // Listener-level logs, written by uid 1337: the listener a connection ends on logs it.
    let logs = dir.join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::set_permissions(&logs, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let listener_log = |file: &str| {
        json!([{"name": "f", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": logs.join(file).display().to_string(),
            "log_format": {"text_format_source": {"inline_string": "%DOWNSTREAM_LOCAL_ADDRESS%\n"}}}}])
    };
    let cfg = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
        "static_resources": {
            "listeners": [
                // As istiod sends it: `use_original_dst` without an explicit
                // original_dst listener filter (Envoy adds one).
                {"name": "virtualOutbound", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
                 "use_original_dst": true, "access_log": listener_log("virtual.log"),
                 "filter_chains": [{"filters": [{"name": "tcp", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": "PassthroughCluster", "cluster": "PassthroughCluster"}}]}]},
                {"name": "10.99.0.5_8080", "address": {"socket_address": {"address": "10.99.0.5", "port_value": 8080}}, "bind_to_port": false,
                 "filter_chains": [{"filters": [{"name": "hcm", "typed_config": direct("exact-listener")}]}]},
                {"name": "0.0.0.0_9090", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 9090}}, "bind_to_port": false,
                 "access_log": listener_log("wildcard.log"),
                 "filter_chains": [{"filters": [{"name": "hcm", "typed_config": direct("wildcard-listener")}]}]}
            ],
            "clusters": [{"name": "PassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s"}]
        }
    });
    ns.spawn_sidecar(&dir, &cfg.to_string(), 1337);
    // A plain server inside the namespace for the passthrough case.
    let _server = e2e::upstream::Upstream::http_on("passthrough-origin", ns.bind("10.99.0.6:7001"));
    e2e::wait_until(30, "meshproxy LIVE in the namespace", || {
        curl(&ns, "http://127.0.0.1:15000/ready").trim() == "LIVE"
    });
    e2e::wait_until(10, "origin server via passthrough", || {
        curl(&ns, "http://10.99.0.6:7001/") == "passthrough-origin"
    });
    assert_eq!(curl(&ns, "http://10.99.0.5:8080/"), "exact-listener");
    assert_eq!(curl(&ns, "http://10.99.0.7:9090/"), "wildcard-listener");
    assert_eq!(curl(&ns, "http://10.99.0.6:7001/"), "passthrough-origin");
    let count = |name: &str| -> u64 {
        let stats = curl(
            &ns,
            &format!("http://127.0.0.1:15000/stats?filter=^{name}$"),
        );
        stats
            .split(": ")
            .nth(1)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let passthrough = count("tcp.PassthroughCluster.downstream_cx_total");
    assert!(passthrough >= 2, "passthrough connections: {passthrough}");
    assert_eq!(count("http.exact-listener.downstream_rq_total"), 1);
    assert_eq!(count("http.wildcard-listener.downstream_rq_total"), 1);
    // Connections handed off are logged by the listener they were handed to (none for
    // 10.99.0.5:8080, which has no log), passthrough ones by virtualOutbound.
    let read = |f: &str| std::fs::read_to_string(logs.join(f)).unwrap_or_default();
    e2e::wait_until(10, "listener logs", || {
        read("wildcard.log").contains("10.99.0.7:9090")
            && read("virtual.log").lines().count() as u64 >= passthrough
    });
    let virtual_log = read("virtual.log");
    assert!(
        virtual_log.lines().all(|l| l == "10.99.0.6:7001"),
        "{virtual_log}"
    );
    assert_eq!(read("wildcard.log"), "10.99.0.7:9090\n");
}
