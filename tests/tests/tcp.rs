//! The TCP proxy and plaintext protocol detection, through the real binary.

use e2e::config::{self, bootstrap, cluster, hcm, listener};
use e2e::proxy::{Kind, Proxy};
use e2e::upstream::{TcpEcho, Upstream};
use e2e::{curl, free_port};
use serde_json::json;
use std::io::{Read, Write};

fn tcp_proxy(stat_prefix: &str, target: serde_json::Value) -> serde_json::Value {
    let mut t = json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": stat_prefix});
    config::merge(&mut t, target);
    t
}

#[test]
fn tcp_proxy_round_trips_bytes_and_counts_them() {
    let echo = TcpEcho::start();
    let port = free_port();
    let log = e2e::scratch("tcplog").join("access.log");
    let access = json!({"access_log": [{"name": "file", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": log.display().to_string(), "log_format": {"text_format_source": {"inline_string": "%UPSTREAM_CLUSTER% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_HOST% %RESPONSE_FLAGS%\n"}}}}]});
    let mut t = tcp_proxy("echo", json!({"cluster": "echo"}));
    config::merge(&mut t, access);
    let cfg = bootstrap(
        vec![listener("tcp", port, t, json!({}))],
        vec![cluster("echo", &[echo.port], json!({}))],
    );
    let p = Proxy::start(Kind::Meshproxy, &cfg, &["--file-flush-interval-msec", "50"]);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = s.try_clone().unwrap();
    let expected = payload.clone();
    let t = std::thread::spawn(move || {
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        got
    });
    s.write_all(&payload).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let got = t.join().unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "echoed bytes differ");
    e2e::wait_until(10, "tcp stats", || {
        p.stat("tcp.echo.downstream_cx_total") == Some(1)
            && p.stat("cluster.echo.upstream_cx_active") == Some(0)
    });
    e2e::wait_until(10, "tcp access log", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("echo 200000 200000"))
    });
    let line = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        line.trim(),
        format!("echo 200000 200000 127.0.0.1:{} -", echo.port)
    );
}

#[test]
fn tcp_connect_failure_closes_and_logs_uf() {
    let port = free_port();
    let dead = free_port();
    let log = e2e::scratch("tcpfail").join("access.log");
    let mut t = tcp_proxy(
        "dead",
        json!({"cluster": "dead", "max_connect_attempts": 3}),
    );
    config::merge(
        &mut t,
        json!({"access_log": [{"name": "f", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": log.display().to_string(), "log_format": {"text_format_source": {"inline_string": "%RESPONSE_FLAGS% %UPSTREAM_TRANSPORT_FAILURE_REASON%\n"}}}}]}),
    );
    let cfg = bootstrap(
        vec![listener("tcp", port, t, json!({}))],
        vec![cluster("dead", &[dead], json!({}))],
    );
    let p = Proxy::start(Kind::Meshproxy, &cfg, &["--file-flush-interval-msec", "50"]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "closed without data");
    e2e::wait_until(10, "access log", || {
        std::fs::read_to_string(&log).is_ok_and(|l| !l.is_empty())
    });
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().trim(),
        "UF,URX delayed_connect_error:_Connection_refused"
    );
    assert_eq!(p.stat("cluster.dead.upstream_cx_connect_fail"), Some(3));
}

#[test]
fn tcp_weighted_clusters_and_idle_timeout() {
    let a = TcpEcho::start();
    let b = TcpEcho::start();
    let port = free_port();
    let t = tcp_proxy(
        "w",
        json!({"weighted_clusters": {"clusters": [{"name": "a", "weight": 0}, {"name": "b", "weight": 1}]}, "idle_timeout": "0.3s"}),
    );
    let cfg = bootstrap(
        vec![listener("tcp", port, t, json!({}))],
        vec![
            cluster("a", &[a.port], json!({})),
            cluster("b", &[b.port], json!({})),
        ],
    );
    let p = Proxy::start(Kind::Meshproxy, &cfg, &[]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    // Idle: the proxy closes after 0.3 s without traffic.
    let start = std::time::Instant::now();
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    assert!(start.elapsed() < std::time::Duration::from_secs(4));
    assert_eq!((a.connections(), b.connections()), (0, 1));
    e2e::wait_until(5, "idle stat", || p.stat("tcp.w.idle_timeout") == Some(1));
}

#[test]
fn http_inspector_selects_chains_by_protocol() {
    let up = Upstream::http("u");
    let port = free_port();
    let direct = |body: &str| json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}]}]);
    let chain = |protos: serde_json::Value, body: &str| {
        json!({"filter_chain_match": {"application_protocols": protos},
        "filters": [{"name": "hcm", "typed_config": hcm(direct(body), json!({"stat_prefix": body}))}]})
    };
    let l = json!({"name": "insp", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "listener_filters": [{"name": "envoy.filters.listener.http_inspector", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}}],
        "filter_chains": [chain(json!(["h2c"]), "h2c"), chain(json!(["http/1.1"]), "http11")]});
    let _p = Proxy::start(Kind::Meshproxy, &bootstrap(vec![l], vec![]), &[]);
    assert_eq!(curl::get(port, "/", &["--http1.1"]).text(), "http11");
    assert_eq!(
        curl::get(port, "/", &["--http2-prior-knowledge"]).text(),
        "h2c"
    );
    drop(up);
}

#[test]
fn proxy_protocol_sets_the_downstream_address() {
    let up = Upstream::http("u");
    let port = free_port();
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]);
    let l = json!({"name": "pp", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "listener_filters": [{"name": "envoy.filters.listener.proxy_protocol", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"}}],
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm(vh, json!({"use_remote_address": true}))}]}]});
    let _p = Proxy::start(
        Kind::Meshproxy,
        &bootstrap(vec![l], vec![cluster("c", &[up.port], json!({}))]),
        &[],
    );
    let r = curl::raw(port, b"PROXY TCP4 198.51.100.9 10.0.0.1 40000 80\r\nGET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", 5);
    assert!(
        String::from_utf8_lossy(&r).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    let rec = up.last().unwrap();
    assert_eq!(rec.header("x-forwarded-for"), Some("198.51.100.9"));
    assert_eq!(rec.header("x-envoy-external-address"), Some("198.51.100.9"));
    // Without the header the connection is refused.
    let r = curl::raw(port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", 5);
    assert!(r.is_empty());
}

/// Envoy turns Nagle's algorithm off on every downstream connection, HTTP or TCP proxy;
/// so must meshproxy, or a response written in two parts (HTTP/2 HEADERS, then DATA)
/// waits in the kernel for the client's next ACK.
#[test]
fn downstream_connections_have_nagle_off_as_in_envoy() {
    let echo = TcpEcho::start();
    let nodelay = |kind| {
        let (http, tcp) = (free_port(), free_port());
        let cfg = bootstrap(
            vec![
                listener("http", http, hcm(json!([]), json!({})), json!({})),
                listener(
                    "tcp",
                    tcp,
                    tcp_proxy("t", json!({"cluster": "echo"})),
                    json!({}),
                ),
            ],
            vec![cluster("echo", &[echo.port], json!({}))],
        );
        let p = Proxy::start(kind, &cfg, &[]);
        [http, tcp].map(|port| {
            let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let client = s.local_addr().unwrap().port();
            let mut seen = None;
            e2e::wait_until(10, "the proxy accepts", || {
                seen = e2e::sockets::tcp_nodelay(p.pid(), port, client);
                seen.is_some()
            });
            seen.unwrap()
        })
    };
    assert_eq!(nodelay(Kind::Meshproxy), [true, true]);
    e2e::proxy::same_in_both(nodelay);
}
