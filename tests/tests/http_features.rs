//! HTTP connection manager features through the real binary: access logs, compression,
//! upgrades, unix pipes, path normalisation, request ids and the global connection limit.

use e2e::config::{self, bootstrap, cluster, hcm, listener};
use e2e::proxy::{Kind, Proxy};
use e2e::upstream::{Behavior, Upstream};
use e2e::{curl, free_port};
use serde_json::{json, Value};
use std::io::{Read, Write};

fn to_c() -> Value {
    json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}])
}

fn file_log(path: &std::path::Path, format: Value) -> Value {
    let mut t = json!({"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": path.display().to_string()});
    config::merge(&mut t, format);
    json!({"name": "f", "typed_config": t})
}

#[test]
fn access_logs_default_text_and_json() {
    let up = Upstream::http("u");
    let port = free_port();
    let dir = e2e::scratch("alog");
    let (default_log, json_log) = (dir.join("default.log"), dir.join("json.log"));
    let logs = json!({"access_log": [
        file_log(&default_log, json!({})),
        file_log(&json_log, json!({"log_format": {"json_format": {"code": "%RESPONSE_CODE%", "path": "%REQ(:PATH)%", "cluster": "%UPSTREAM_CLUSTER%", "flags": "%RESPONSE_FLAGS%", "ua": "%REQ(USER-AGENT)%", "peer": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}}))]});
    let _p = Proxy::start(
        Kind::Meshproxy,
        &bootstrap(
            vec![listener("l", port, hcm(to_c(), logs), json!({}))],
            vec![cluster("c", &[up.port], json!({}))],
        ),
        &["--file-flush-interval-msec", "50"],
    );
    assert_eq!(
        curl::get(
            port,
            "/logged?x=1",
            &["-A", "tester/1.0", "-H", "x-request-id: rid-1"]
        )
        .status,
        200
    );
    e2e::wait_until(10, "access logs", || {
        std::fs::read_to_string(&json_log).is_ok_and(|l| !l.is_empty())
            && std::fs::read_to_string(&default_log).is_ok_and(|l| !l.is_empty())
    });
    let line = std::fs::read_to_string(&default_log).unwrap();
    let re = format!(
        r#"^\[\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\] "GET /logged\?x=1 HTTP/1\.1" 200 - 0 1 \d+ \d+ "-" "tester/1\.0" "rid-1" "127\.0\.0\.1:{port}" "127\.0\.0\.1:{}"\n$"#,
        up.port
    );
    assert!(regex::Regex::new(&re).unwrap().is_match(&line), "{line}");
    let v: Value =
        serde_json::from_str(std::fs::read_to_string(&json_log).unwrap().trim()).unwrap();
    assert_eq!(
        v,
        json!({"code": 200, "path": "/logged?x=1", "cluster": "c", "flags": "-", "ua": "tester/1.0", "peer": "127.0.0.1"})
    );
}

#[test]
fn compressor_filter_gzip_and_brotli() {
    let up = Upstream::http("u");
    up.set(Behavior {
        body: Some("compress me please ".repeat(200)),
        headers: vec![("content-type".into(), "text/plain".into())],
        ..Default::default()
    });
    let port = free_port();
    let comp = |name: &str, lib: &str| {
        json!({"name": name, "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor",
        "compressor_library": {"name": name, "typed_config": {"@type": lib}},
        "response_direction_config": {"common_config": {"content_type": ["text/plain"]}}}})
    };
    let mut filters = vec![
        comp(
            "br",
            "type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli",
        ),
        comp(
            "gz",
            "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip",
        ),
    ];
    filters.extend(config::router().as_array().unwrap().clone());
    let _p = Proxy::start(
        Kind::Meshproxy,
        &bootstrap(
            vec![listener(
                "l",
                port,
                hcm(to_c(), json!({"http_filters": filters})),
                json!({}),
            )],
            vec![cluster("c", &[up.port], json!({}))],
        ),
        &[],
    );
    let plain = "compress me please ".repeat(200);
    let r = curl::get(port, "/", &["-H", "accept-encoding: gzip", "--compressed"]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.text(), plain);
    let r = curl::get(port, "/", &["-H", "accept-encoding: br, gzip"]);
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert!(r.body.len() < plain.len() / 4);
    let r = curl::get(port, "/", &[]);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.text(), plain);
}

#[test]
fn websocket_upgrade_is_spliced_when_enabled() {
    // A raw upstream that accepts the upgrade and then echoes in upper case.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n").unwrap();
                loop {
                    let n = s.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    let _ = s.write_all(&buf[..n].to_ascii_uppercase());
                }
            });
        }
    });
    let port = free_port();
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/ws"}, "route": {"cluster": "c"}},
        {"match": {"prefix": "/no"}, "route": {"cluster": "c", "upgrade_configs": [{"upgrade_type": "websocket", "enabled": false}]}}]}]);
    let _p = Proxy::start(
        Kind::Meshproxy,
        &bootstrap(
            vec![listener(
                "l",
                port,
                hcm(
                    vh,
                    json!({"upgrade_configs": [{"upgrade_type": "websocket"}]}),
                ),
                json!({}),
            )],
            vec![cluster("c", &[up_port], json!({}))],
        ),
        &[],
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"hello frames").unwrap();
    let mut got = Vec::new();
    while got.len() < 12 {
        let n = s.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got, b"HELLO FRAMES");
    let r = curl::raw(
        port,
        b"GET /no HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        5,
    );
    assert!(
        String::from_utf8_lossy(&r).starts_with("HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&r)
    );
}

#[test]
fn unix_pipe_listener_and_pipe_cluster() {
    let up = Upstream::http("via-pipe");
    let dir = e2e::scratch("pipe");
    let sock = dir.join("in.sock");
    let port = free_port();
    let pipe_listener = json!({"name": "pipe", "address": {"pipe": {"path": sock.display().to_string()}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm(to_c(), json!({"stat_prefix": "pipe"}))}]}]});
    let front_vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "to_pipe"}}]}]);
    let to_pipe = json!({"name": "to_pipe", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {"cluster_name": "to_pipe",
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": sock.display().to_string()}}}}]}]}});
    let cfg = bootstrap(
        vec![
            pipe_listener,
            listener(
                "front",
                port,
                hcm(front_vh, json!({"stat_prefix": "front"})),
                json!({}),
            ),
        ],
        vec![cluster("c", &[up.port], json!({})), to_pipe],
    );
    let p = Proxy::start(Kind::Meshproxy, &cfg, &[]);
    assert_eq!(curl::get(port, "/x", &[]).text(), "via-pipe");
    assert_eq!(
        curl::curl(
            &["--unix-socket", sock.to_str().unwrap()],
            "http://localhost/y"
        )
        .text(),
        "via-pipe"
    );
    assert_eq!(p.stat("http.pipe.downstream_rq_total"), Some(2));
}

#[test]
fn path_normalization_merge_slashes_and_request_ids() {
    let up = Upstream::http("u");
    let port = free_port();
    let extra = json!({"normalize_path": true, "merge_slashes": true, "always_set_request_id_in_response": true});
    let _p = Proxy::start(
        Kind::Meshproxy,
        &bootstrap(
            vec![listener("l", port, hcm(to_c(), extra), json!({}))],
            vec![cluster("c", &[up.port], json!({}))],
        ),
        &[],
    );
    let r = curl::get(port, "//a/./b/../%63//d", &["--path-as-is"]);
    assert_eq!(r.status, 200);
    assert_eq!(up.last().unwrap().path, "/a/c/d");
    let rid = up
        .last()
        .unwrap()
        .header("x-request-id")
        .unwrap()
        .to_string();
    assert_eq!(rid.len(), 36);
    assert_eq!(r.header("x-request-id"), Some(rid.as_str()));
    let r = curl::get(port, "/", &["-H", "x-request-id: mine"]);
    assert_eq!(r.header("x-request-id"), Some("mine"));
    assert_eq!(up.last().unwrap().header("x-request-id"), Some("mine"));
}

#[test]
fn global_downstream_connection_limit() {
    let up = Upstream::http("u");
    let port = free_port();
    let overload = json!({"overload_manager": {"resource_monitors": [{"name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig", "max_active_downstream_connections": 1}}]}});
    let text = config::bootstrap_with(
        vec![listener("l", port, hcm(to_c(), json!({})), json!({}))],
        vec![cluster("c", &[up.port], json!({}))],
        overload,
    );
    let p = Proxy::start(Kind::Meshproxy, &text, &[]);
    let held = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let r = curl::get(port, "/", &[]);
    assert_eq!(r.status, 0, "second connection must be refused");
    e2e::wait_until(5, "overflow stat", || {
        p.admin_get("/stats?filter=downstream_global_cx_overflow")
            .is_some_and(|(_, b)| b.contains(": 1"))
    });
    drop(held);
    e2e::wait_until(5, "slot freed", || curl::get(port, "/", &[]).status == 200);
}

#[test]
fn header_byte_counts_agree_with_envoy() {
    // Istio's `istio_request_bytes`/`istio_response_bytes` are these header sizes plus
    // the bodies: pseudo-headers included, headers the router adds included.
    let up = Upstream::http("u");
    up.set(Behavior {
        headers: vec![("x-upstream-says".into(), "a somewhat longer value".into())],
        ..Default::default()
    });
    let dir = e2e::scratch("header-bytes");
    let routes = json!([{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/none"}, "direct_response": {"status": 404}},
        {"match": {"prefix": "/"}, "route": {"cluster": "c", "timeout": "7s"},
         "request_headers_to_add": [{"header": {"key": "x-added", "value": "by-the-route"}}]}]}]);
    let got = e2e::proxy::agree_with_envoy(
        |port| {
            let log = dir.join(format!("{port}.log"));
            // The router's `x-envoy-upstream-service-time` takes as many digits as the
            // milliseconds it reports, which differ between two loaded runs: suppressed,
            // every size is exact.
            let logs = json!({"access_log": [file_log(&log, json!({"log_format": {"text_format_source": {"inline_string":
                "%REQUEST_HEADERS_BYTES% %RESPONSE_HEADERS_BYTES% %BYTES_RECEIVED% %BYTES_SENT%\n"}}}))],
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                    "suppress_envoy_headers": true}}]});
            bootstrap(
                vec![listener("l", port, hcm(routes.clone(), logs), json!({}))],
                vec![cluster("c", &[up.port], json!({}))],
            )
        },
        |_, port| {
            let requests: [&[&str]; 3] = [
                &[],
                &["--http2-prior-knowledge", "-H", "x-custom: 12345"],
                &["-d", "hello body"],
            ];
            let mut statuses = vec![];
            for args in requests {
                statuses.push(curl::get(port, "/path?q=1", args).status);
            }
            statuses.push(curl::get(port, "/none", &[]).status);
            let log = dir.join(format!("{port}.log"));
            e2e::wait_until(10, "access log lines", || {
                std::fs::read_to_string(&log).is_ok_and(|l| l.lines().count() >= 4)
            });
            (statuses, std::fs::read_to_string(&log).unwrap())
        },
    );
    if let Some((statuses, log)) = got {
        assert_eq!(statuses, [200, 200, 200, 404]);
        assert!(log.lines().all(|l| !l.starts_with("0 ")), "{log}");
    }
}
