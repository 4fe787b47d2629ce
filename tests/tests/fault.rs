//! Fault injection differential tests: the same `envoy.filters.http.fault` filters in
//! Envoy 1.40 and meshproxy, each selected by an `x-case` header, comparing what the client
//! sees (status, body, gRPC status, injected delay) and the `fault.*` stats.

use e2e::config::{bootstrap, cluster, hcm, listener, router};
use e2e::curl;
use e2e::free_port;
use e2e::proxy::{envoy_bin, Kind, Proxy};
use e2e::upstream::Upstream;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn fault(case: &str, body: Value) -> Value {
    let mut typed = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "headers": [{"name": "x-case", "string_match": {"exact": case}}]
    });
    e2e::config::merge(&mut typed, body);
    json!({"name": format!("fault-{case}"), "typed_config": typed})
}

fn config(port: u16, upstream: u16, log: &std::path::Path) -> String {
    let all = json!({"numerator": 100});
    let mut filters = vec![
        fault(
            "abort",
            json!({"abort": {"http_status": 599, "percentage": all}}),
        ),
        fault(
            "delay",
            json!({"delay": {"fixed_delay": "0.3s", "percentage": all}}),
        ),
        fault(
            "header",
            json!({"abort": {"header_abort": {}, "percentage": all}, "delay": {"header_delay": {}, "percentage": all}}),
        ),
        fault("unset-percentage", json!({"abort": {"http_status": 503}})),
        fault(
            "other-cluster",
            json!({"upstream_cluster": "other", "abort": {"http_status": 500, "percentage": all}}),
        ),
        fault(
            "weighted",
            json!({"upstream_cluster": "b", "abort": {"http_status": 504, "percentage": all}}),
        ),
        fault(
            "body",
            json!({"abort": {"http_status": 451, "percentage": all, "response_body": "gone for legal reasons"}}),
        ),
        fault(
            "grpc",
            json!({"abort": {"grpc_status": 14, "percentage": all}}),
        ),
        fault(
            "nodes",
            json!({"downstream_nodes": ["n1"], "abort": {"http_status": 418, "percentage": all}}),
        ),
        fault(
            "half",
            json!({"abort": {"http_status": 503, "percentage": {"numerator": 5000, "denominator": "TEN_THOUSAND"}}}),
        ),
        fault(
            "limited",
            json!({"max_active_faults": 1, "delay": {"fixed_delay": "1s", "percentage": all}}),
        ),
    ];
    filters.extend(router().as_array().unwrap().iter().cloned());
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/", "headers": [{"name": "x-case", "string_match": {"exact": "weighted"}}]},
            "route": {"weighted_clusters": {"clusters": [{"name": "b", "weight": 1}]}}},
        {"match": {"prefix": "/"}, "route": {"cluster": "a"}}]}]);
    bootstrap(
        vec![listener(
            "l",
            port,
            hcm(
                vh,
                json!({"http_filters": filters, "access_log": [{"name": "f", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": log.display().to_string(), "log_format": {"text_format_source": {
                    "inline_string": "%REQ(X-CASE)% %RESPONSE_CODE% %RESPONSE_FLAGS%\n"}}}}]}),
            ),
            json!({}),
        )],
        vec![
            cluster("a", &[upstream], json!({})),
            cluster("b", &[upstream], json!({})),
        ],
    )
}

/// What the client saw for one request: status, body, grpc-status, grpc-message.
type Seen = (u16, String, Option<String>, Option<String>);

fn request(port: u16, case: &str, extra: &[&str]) -> (Seen, Duration) {
    let mut args = vec!["-H".to_string(), format!("x-case: {case}")];
    for e in extra {
        args.push(e.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let start = Instant::now();
    let r = curl::get(port, "/", &args);
    let seen = (
        r.status,
        r.text(),
        r.header("grpc-status").map(str::to_string),
        r.header("grpc-message").map(str::to_string),
    );
    (seen, start.elapsed())
}

#[test]
fn faults_match_envoy() {
    if envoy_bin().is_none() {
        return;
    }
    let up = Upstream::http("a");
    let (ep, mp) = (free_port(), free_port());
    let dir = e2e::scratch("fault");
    let logs = [dir.join("envoy.log"), dir.join("meshproxy.log")];
    let flush = ["--file-flush-interval-msec", "50"];
    let envoy = Proxy::start(Kind::Envoy, &config(ep, up.port, &logs[0]), &flush);
    let mesh = Proxy::start(Kind::Meshproxy, &config(mp, up.port, &logs[1]), &flush);
    let grpc = [
        "--http2-prior-knowledge",
        "-H",
        "content-type: application/grpc",
    ];
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("abort", vec![]),
        ("body", vec![]),
        ("none", vec![]),
        ("header", vec!["-H", "x-envoy-fault-abort-request: 429"]),
        ("header", vec!["-H", "x-envoy-fault-abort-request: 700"]),
        (
            "header",
            vec![
                "-H",
                "x-envoy-fault-abort-request: 429",
                "-H",
                "x-envoy-fault-abort-request-percentage: 0",
            ],
        ),
        ("header", vec![]),
        ("unset-percentage", vec![]),
        ("other-cluster", vec![]),
        ("weighted", vec![]),
        ("grpc", grpc.to_vec()),
        ("grpc", vec![]),
        ("header", {
            let mut v = grpc.to_vec();
            v.extend(["-H", "x-envoy-fault-abort-grpc-request: 8"]);
            v
        }),
        ("nodes", vec![]),
        ("nodes", vec!["-H", "x-envoy-downstream-service-node: n1"]),
        ("nodes", vec!["-H", "x-envoy-downstream-service-node: n2"]),
    ];
    let mut failures = Vec::new();
    for (case, extra) in &cases {
        let e = request(ep, case, extra).0;
        let m = request(mp, case, extra).0;
        if e != m {
            failures.push(format!("{case} {extra:?}: envoy={e:?} meshproxy={m:?}"));
        }
    }
    // The comparison above must not pass by both proxies ignoring the filter.
    for port in [ep, mp] {
        for (case, want) in [
            ("abort", 599),
            ("weighted", 504),
            ("body", 451),
            ("none", 200),
        ] {
            let got = request(port, case, &[]).0 .0;
            if got != want {
                failures.push(format!("{case} on {port}: {got}, want {want}"));
            }
        }
    }
    // Delays: the fixed one, and one asked for by header; both then reach the upstream.
    for port in [ep, mp] {
        for (case, extra, at_least) in [
            ("delay", vec![], 300),
            (
                "header",
                vec!["-H", "x-envoy-fault-delay-request: 400"],
                400,
            ),
        ] {
            let (seen, took) = request(port, case, &extra);
            if seen.0 != 200 || took < Duration::from_millis(at_least) {
                failures.push(format!("{case} on {port}: {seen:?} after {took:?}"));
            }
        }
    }
    // 50% aborts: both proxies land near half of 200 requests.
    let mut half = Vec::new();
    for port in [ep, mp] {
        let aborted = (0..200)
            .filter(|_| request(port, "half", &[]).0 .0 == 503)
            .count() as i64;
        if !(60..=140).contains(&aborted) {
            failures.push(format!("half on {port}: {aborted}/200 aborted"));
        }
        half.push(aborted);
    }
    // max_active_faults 1: of two concurrent requests, one is delayed (1 s), the other
    // overflows and passes at once (which one depends on arrival order).
    for port in [ep, mp] {
        let other = std::thread::spawn(move || request(port, "limited", &[]));
        std::thread::sleep(Duration::from_millis(200));
        let (seen, took) = request(port, "limited", &[]);
        let (first, first_took) = other.join().unwrap();
        let delayed = [took, first_took]
            .iter()
            .filter(|t| **t >= Duration::from_secs(1))
            .count();
        if seen.0 != 200 || first.0 != 200 || delayed == 0 {
            failures.push(format!(
                "limited on {port}: {seen:?} {took:?}, {first:?} {first_took:?}"
            ));
        }
    }
    // Stats agree once the 50% case (drawn independently by each proxy) is taken out.
    for (stat, random) in [
        ("http.ingress.fault.aborts_injected", &half),
        ("http.ingress.fault.delays_injected", &vec![0, 0]),
        ("http.ingress.fault.faults_overflow", &vec![0, 0]),
    ] {
        let e = envoy.stat(stat).map(|v| v - random[0]);
        let m = mesh.stat(stat).map(|v| v - random[1]);
        if e.is_none() || e != m {
            failures.push(format!("{stat}: envoy={e:?} meshproxy={m:?}"));
        }
        if stat.ends_with("faults_overflow") && m != Some(1) {
            failures.push(format!("{stat}: meshproxy={m:?}, want 1"));
        }
    }
    // Response flags (DI, FI) in the access logs, leaving out the randomly drawn case.
    std::thread::sleep(Duration::from_millis(300));
    let lines = |p: &std::path::Path| {
        let mut v: Vec<String> = std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with("half "))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let (e, m) = (lines(&logs[0]), lines(&logs[1]));
    if e != m || !m.iter().any(|l| l == "abort 599 FI") || !m.iter().any(|l| l == "delay 200 DI") {
        failures.push(format!("access logs: envoy={e:?}\nmeshproxy={m:?}"));
    }
    drop((envoy, mesh));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Istio's shape: an empty fault filter in the chain, the real faults in the routes' and
/// virtual host's `typed_per_filter_config` (the most specific wins; `disabled` skips it).
fn per_route_config(port: u16, upstream: u16) -> String {
    let fault = |status: u16| {
        json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "abort": {"http_status": status, "percentage": {"numerator": 100}}})
    };
    let per = |v: Value| json!({"envoy.filters.http.fault": v});
    let mut filters = vec![json!({"name": "envoy.filters.http.fault", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}})];
    filters.extend(router().as_array().unwrap().iter().cloned());
    let vh = json!([{"name": "v", "domains": ["*"], "typed_per_filter_config": per(fault(418)), "routes": [
        {"match": {"prefix": "/route"}, "route": {"cluster": "a"}, "typed_per_filter_config": per(fault(503))},
        {"match": {"prefix": "/wrapped"}, "route": {"cluster": "a"}, "typed_per_filter_config": per(json!({
            "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": fault(502)}))},
        {"match": {"prefix": "/disabled"}, "route": {"cluster": "a"}, "typed_per_filter_config": per(json!({
            "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true}))},
        {"match": {"prefix": "/"}, "route": {"cluster": "a"}}
    ]}]);
    let mut route_config = hcm(vh, json!({"http_filters": filters}));
    route_config["route_config"]["typed_per_filter_config"] = per(fault(500));
    bootstrap(
        vec![listener("l", port, route_config, json!({}))],
        vec![cluster("a", &[upstream], json!({}))],
    )
}

#[test]
fn per_route_faults_match_envoy() {
    if envoy_bin().is_none() {
        return;
    }
    let up = Upstream::http("a");
    let (ep, mp) = (free_port(), free_port());
    let _envoy = Proxy::start(Kind::Envoy, &per_route_config(ep, up.port), &[]);
    let _mesh = Proxy::start(Kind::Meshproxy, &per_route_config(mp, up.port), &[]);
    let mut failures = Vec::new();
    for (path, want) in [
        ("/route", 503),
        ("/wrapped", 502),
        ("/disabled", 200),
        ("/other", 418),
    ] {
        let e = curl::get(ep, path, &[]);
        let m = curl::get(mp, path, &[]);
        if m.status != want {
            failures.push(format!(
                "{path}: meshproxy answered {}, want {want}",
                m.status
            ));
        }
        if (e.status, e.text()) != (m.status, m.text()) {
            failures.push(format!(
                "{path}: envoy={} {:?} meshproxy={} {:?}",
                e.status,
                e.text(),
                m.status,
                m.text()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `response_rate_limit`: a 32 KiB response at 16 KiB/s takes about two seconds (one
/// slice every 50 ms), at a header-given 64 KiB/s about half a second, and arrives whole;
/// `response_rl_injected` counts both. Same as Envoy 1.40.
#[test]
fn response_rate_limit_paces_the_body_like_envoy() {
    let up = Upstream::http("big");
    let body = "x".repeat(32 * 1024);
    let cfg = |port: u16| {
        let all = json!({"numerator": 100});
        let mut filters = vec![
            fault(
                "fixed",
                json!({"response_rate_limit": {"fixed_limit": {"limit_kbps": 16}, "percentage": all}}),
            ),
            fault(
                "header",
                json!({"response_rate_limit": {"header_limit": {}, "percentage": all}}),
            ),
        ];
        filters.extend(router().as_array().cloned().unwrap_or_default());
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]);
        bootstrap(
            vec![listener(
                "l",
                port,
                hcm(vh, json!({"http_filters": filters})),
                json!({}),
            )],
            vec![cluster("c", &[up.port], json!({}))],
        )
    };
    let envoy = e2e::proxy::agree_with_envoy(cfg, |p, port| {
        up.set(e2e::upstream::Behavior {
            body: Some(body.clone()),
            ..Default::default()
        });
        let timed = |args: &[&str]| {
            let started = Instant::now();
            let r = curl::get(port, "/", args);
            (r.status, r.text().len(), started.elapsed())
        };
        let (s1, n1, fixed) = timed(&["-H", "x-case: fixed"]);
        let (s2, n2, header) = timed(&[
            "-H",
            "x-case: header",
            "-H",
            "x-envoy-fault-throughput-response: 64",
        ]);
        let (s3, n3, none) = timed(&["-H", "x-case: header"]);
        (
            (s1, n1, (1500..3000).contains(&fixed.as_millis())),
            (s2, n2, (300..1200).contains(&header.as_millis())),
            (s3, n3, none < Duration::from_millis(300)),
            p.stat("http.ingress.fault.response_rl_injected"),
            p.stat("http.ingress.fault.active_faults"),
        )
    });
    if let Some(seen) = envoy {
        let n = 32 * 1024;
        assert_eq!(
            seen,
            (
                (200, n, true),
                (200, n, true),
                (200, n, true),
                Some(2),
                Some(0)
            )
        );
    }
}
