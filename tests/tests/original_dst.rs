//! `original_dst` + `use_original_dst` hand-off and ORIGINAL_DST passthrough, with real
//! iptables REDIRECT inside a network namespace this test creates (root required; skipped
//! with a message where namespaces cannot be created). meshproxy runs as uid 1337 so its
//! own upstream connections are exempt from the redirect, as in an Istio pod.

use e2e::config::hcm;
use serde_json::json;
use std::process::{Child, Command, Stdio};

struct Netns(String);

impl Netns {
    fn create(name: &str) -> Option<Netns> {
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIP: cannot create network namespaces here (needs root and iproute2)");
            return None;
        }
        let ns = Netns(name.to_string());
        for args in [
            vec!["ip", "link", "set", "lo", "up"],
            vec!["ip", "addr", "add", "10.99.0.5/32", "dev", "lo"],
            vec!["ip", "addr", "add", "10.99.0.6/32", "dev", "lo"],
            vec!["ip", "addr", "add", "10.99.0.7/32", "dev", "lo"],
            vec![
                "iptables",
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "-m",
                "owner",
                "--uid-owner",
                "1337",
                "-j",
                "RETURN",
            ],
            vec![
                "iptables",
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "-d",
                "10.99.0.0/24",
                "-j",
                "REDIRECT",
                "--to-ports",
                "15001",
            ],
        ] {
            let s = ns.exec(&args).status().expect("run in netns");
            assert!(s.success(), "{args:?} failed");
        }
        Some(ns)
    }

    fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    fn curl(&self, url: &str) -> String {
        let out = self
            .exec(&["curl", "-sS", "--max-time", "5", url])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn direct(body: &str) -> serde_json::Value {
    hcm(
        json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}]}]),
        json!({"stat_prefix": body}),
    )
}

#[test]
fn original_destination_hand_off_and_passthrough() {
    let Some(ns) = Netns::create(&format!("mp-od-{}", std::process::id())) else {
        return;
    };
    let dir = e2e::scratch("origdst");
    let cfg = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
        "static_resources": {
            "listeners": [
                {"name": "virtualOutbound", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
                 "use_original_dst": true,
                 "listener_filters": [{"name": "envoy.filters.listener.original_dst", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}}],
                 "filter_chains": [{"filters": [{"name": "tcp", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": "PassthroughCluster", "cluster": "PassthroughCluster"}}]}]},
                {"name": "10.99.0.5_8080", "address": {"socket_address": {"address": "10.99.0.5", "port_value": 8080}}, "bind_to_port": false,
                 "filter_chains": [{"filters": [{"name": "hcm", "typed_config": direct("exact-listener")}]}]},
                {"name": "0.0.0.0_9090", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 9090}}, "bind_to_port": false,
                 "filter_chains": [{"filters": [{"name": "hcm", "typed_config": direct("wildcard-listener")}]}]}
            ],
            "clusters": [{"name": "PassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s"}]
        }
    });
    let path = dir.join("b.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let bin = e2e::proxy::meshproxy_bin();
    let _proxy = Killed(
        ns.exec(&[
            "setpriv",
            "--reuid",
            "1337",
            "--regid",
            "1337",
            "--clear-groups",
            bin.to_str().unwrap(),
            "-c",
            path.to_str().unwrap(),
            "--concurrency",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("stderr")).unwrap(),
        ))
        .spawn()
        .unwrap(),
    );
    // A plain server inside the namespace for the passthrough case.
    let _server = Killed(
        ns.exec(&["python3", "-c", "import http.server as h\nclass H(h.BaseHTTPRequestHandler):\n def do_GET(s):\n  s.send_response(200); s.end_headers(); s.wfile.write(b'passthrough-origin')\n def log_message(s,*a): pass\nh.HTTPServer(('10.99.0.6', 7001), H).serve_forever()"])
            .spawn()
            .unwrap(),
    );
    e2e::wait_until(30, "meshproxy LIVE in the namespace", || {
        ns.curl("http://127.0.0.1:15000/ready").trim() == "LIVE"
    });
    e2e::wait_until(10, "origin server via passthrough", || {
        ns.curl("http://10.99.0.6:7001/") == "passthrough-origin"
    });
    assert_eq!(ns.curl("http://10.99.0.5:8080/"), "exact-listener");
    assert_eq!(ns.curl("http://10.99.0.7:9090/"), "wildcard-listener");
    assert_eq!(ns.curl("http://10.99.0.6:7001/"), "passthrough-origin");
    let count = |name: &str| -> u64 {
        let stats = ns.curl(&format!("http://127.0.0.1:15000/stats?filter=^{name}$"));
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
}
