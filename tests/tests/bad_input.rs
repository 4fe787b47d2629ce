//! Hostile clients and broken upstreams: clear errors, no panic, no leaked connections or
//! requests (the `/stats` gauges return to zero), and the proxy keeps serving.

use e2e::config::{bootstrap, cluster, hcm, listener};
use e2e::proxy::{Kind, Proxy};
use e2e::upstream::{Behavior, Upstream};
use e2e::{curl, free_port};
use serde_json::json;
use std::io::{Read, Write};

fn setup(upstream_port: u16, hcm_extra: serde_json::Value) -> (Proxy, u16, std::path::PathBuf) {
    let port = free_port();
    let log = e2e::scratch("bad").join("access.log");
    let mut extra = json!({"access_log": [{"name": "f", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": log.display().to_string(), "log_format": {"text_format_source": {"inline_string": "%RESPONSE_CODE% %RESPONSE_FLAGS%\n"}}}}]});
    e2e::config::merge(&mut extra, hcm_extra);
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c", "timeout": "3s"}}]}]);
    let p = Proxy::start(
        Kind::Meshproxy,
        &bootstrap(
            vec![listener("l", port, hcm(vh, extra), json!({}))],
            vec![cluster("c", &[upstream_port], json!({}))],
        ),
        &["--file-flush-interval-msec", "50"],
    );
    (p, port, log)
}

fn assert_quiescent(p: &Proxy) {
    e2e::wait_until(10, "gauges back to zero", || {
        [
            "http.ingress.downstream_rq_active",
            "http.ingress.downstream_cx_active",
            "cluster.c.upstream_rq_active",
            "cluster.c.upstream_rq_pending_active",
        ]
        .iter()
        .all(|g| p.stat(g).unwrap_or(0) == 0)
    });
}

#[test]
fn invalid_http_and_oversized_headers() {
    let up = Upstream::http("u");
    let (p, port, _) = setup(up.port, json!({"max_request_headers_kb": 2}));
    let r = String::from_utf8_lossy(&curl::raw(port, b"NOT HTTP AT ALL\r\n\r\n", 5)).to_string();
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = String::from_utf8_lossy(&curl::raw(
        port,
        b"GET / HTTP/1.1\r\nhost: x\r\nbad header line\r\n\r\n",
        5,
    ))
    .to_string();
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let big = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let r = String::from_utf8_lossy(&curl::raw(port, big.as_bytes(), 5)).to_string();
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    // Garbage in many shapes, including a bogus HTTP/2 preface.
    for junk in [
        &b"\x00\x01\x02\xff"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x09\x00\x00\x00\x00\x00junk",
        b"GET / HTTP/9.9\r\n\r\n",
    ] {
        let _ = curl::raw(port, junk, 2);
    }
    assert_eq!(curl::get(port, "/", &[]).status, 200, "still serving");
    assert_eq!(up.count(), 1, "nothing malformed reached the upstream");
    assert_quiescent(&p);
}

#[test]
fn upstream_reset_before_headers_is_503_uc() {
    let up = Upstream::http("u");
    up.set(Behavior {
        reset: true,
        ..Default::default()
    });
    let (p, port, log) = setup(up.port, json!({}));
    let r = curl::get(port, "/", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "upstream connect error or disconnect/reset before headers. reset reason: connection termination");
    e2e::wait_until(5, "log", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("503 UC"))
    });
    assert_quiescent(&p);
}

#[test]
fn upstream_reset_mid_body_truncates_without_harm() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789");
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(s);
        }
    });
    let (p, port, _) = setup(up_port, json!({}));
    let r = curl::raw(port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", 5);
    let text = String::from_utf8_lossy(&r).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("0123456789"),
        "the client sees exactly the bytes that arrived: {text}"
    );
    assert_quiescent(&p);
    assert!(p.stat("http.ingress.downstream_cx_destroy").unwrap() >= 1);
}

#[test]
fn client_disconnect_mid_stream_is_logged_and_cleaned_up() {
    let up = Upstream::http("slow");
    up.set(Behavior {
        delay_ms: 1500,
        ..Default::default()
    });
    let (p, port, log) = setup(up.port, json!({}));
    let r = curl::get(port, "/", &["--max-time", "0.3"]);
    assert_eq!(r.status, 0);
    assert_quiescent(&p);
    up.set(Behavior::default());
    assert_eq!(curl::get(port, "/", &[]).status, 200);
    e2e::wait_until(5, "log", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("200 -"))
    });
}

#[test]
fn route_timeout_is_504_ut_and_counted() {
    let up = Upstream::http("slow");
    up.set(Behavior {
        delay_ms: 5000,
        ..Default::default()
    });
    let (p, port, log) = setup(up.port, json!({}));
    let started = std::time::Instant::now();
    let r = curl::get(port, "/", &[]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (504, "upstream request timeout")
    );
    assert!(started.elapsed() < std::time::Duration::from_millis(4500));
    assert_eq!(p.stat("cluster.c.upstream_rq_timeout"), Some(1));
    e2e::wait_until(5, "log", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("504 UT"))
    });
    assert_quiescent(&p);
}
