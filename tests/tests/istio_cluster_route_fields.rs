//! Cluster and route fields real istiod output carries (issue 22), side by side with
//! Envoy 1.40: istiod's default circuit breakers with `track_remaining` and their gauges,
//! the overflow 503's `x-envoy-overloaded`, `max_grpc_timeout`/`grpc_timeout_offset`,
//! `cluster_not_found_response_code`, `max_direct_response_body_size_bytes`, and the
//! deprecated cluster protocol fields and DNS resolver configs older releases send.

use e2e::config::{bootstrap, cluster, hcm, listener};
use e2e::proxy::{agree_with_envoy, envoy_bin, meshproxy_bin, same_in_both, Kind, Proxy};
use e2e::upstream::{Behavior, Upstream};
use e2e::{curl, free_port};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// istiod's default thresholds (networking/core cluster builder), with `max_requests`
/// lowered so one request fills the cluster.
fn istiod_thresholds(max_requests: u32) -> Value {
    json!({"circuit_breakers": {"thresholds": [{
        "max_connections": 4294967295u32, "max_pending_requests": 4294967295u32,
        "max_requests": max_requests, "max_retries": 4294967295u32, "track_remaining": true
    }]}})
}

/// One listener on `port` routing `routes` (all under domain `*`) with `clusters`.
fn config(port: u16, routes: Value, clusters: Vec<Value>) -> String {
    let vh = json!([{"name": "v", "domains": ["*"], "routes": routes}]);
    bootstrap(
        vec![listener("l", port, hcm(vh, json!({})), json!({}))],
        clusters,
    )
}

/// `cluster.<name>.circuit_breakers.*` and `upstream_cx_active`, from `/stats` (gauges
/// are unsigned 64-bit: values stay text).
fn breaker_stats(p: &Proxy, name: &str) -> BTreeMap<String, String> {
    let prefix = format!("cluster.{name}.");
    let (_, body) = p.admin_get("/stats").expect("stats");
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?, v)))
        .filter(|(k, _)| k.starts_with("circuit_breakers.") || *k == "upstream_cx_active")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Checks `remaining_cx` against the connections open and removes both: how many
/// connections a pool opens for a request it then refuses differs (Envoy connects for
/// it first), the bookkeeping must not.
fn without_connections(mut stats: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let active: u64 = stats.remove("upstream_cx_active").unwrap().parse().unwrap();
    let remaining: u64 = stats
        .remove("circuit_breakers.default.remaining_cx")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        remaining,
        4294967295 - active,
        "remaining_cx tracks connections"
    );
    stats
}

/// An upstream that answers after `delay_ms`.
fn slow_upstream(delay_ms: u64) -> Upstream {
    let up = Upstream::http("slow");
    up.set(Behavior {
        delay_ms,
        ..Default::default()
    });
    up
}

/// Fills a one-request cluster behind `port` with a request `up` holds, then sends the
/// request that overflows and runs `while_held`; returns the overflow's response, what
/// `while_held` saw, and the first request's status.
fn overflow<T>(
    port: u16,
    up: &Upstream,
    while_held: impl FnOnce() -> T,
) -> (curl::Response, T, u16) {
    let first = std::thread::spawn(move || curl::get(port, "/", &[]).status);
    e2e::wait_until(10, "the first request upstream", || up.count() == 1);
    let second = curl::get(port, "/", &[]);
    let seen = while_held();
    (second, seen, first.join().unwrap())
}

#[test]
fn circuit_breaker_gauges_and_overloaded_header_match_envoy() {
    let seen = same_in_both(|kind| {
        let up = slow_upstream(1500);
        let port = free_port();
        let routes = json!([{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]);
        let c = cluster("c", &[up.port], istiod_thresholds(1));
        let p = Proxy::start(kind, &config(port, routes, vec![c]), &[]);
        let (second, during, first) =
            overflow(port, &up, || without_connections(breaker_stats(&p, "c")));
        assert_eq!(first, 200);
        e2e::wait_until(10, "the request slot back", || {
            breaker_stats(&p, "c")["circuit_breakers.default.rq_open"] == "0"
        });
        let after = without_connections(breaker_stats(&p, "c"));
        let (_, clusters) = p.admin_get("/clusters").unwrap();
        let limits: Vec<String> = clusters
            .lines()
            .filter(|l| l.contains("_priority::"))
            .map(str::to_string)
            .collect();
        (
            limits,
            second.status,
            second.header("x-envoy-overloaded").map(str::to_string),
            second.text(),
            during,
            after,
        )
    });
    if let Some((limits, status, overloaded, _, during, after)) = seen {
        assert_eq!(limits.len(), 8, "both priorities in /clusters: {limits:?}");
        assert_eq!(status, 503);
        assert_eq!(overloaded.as_deref(), Some("true"));
        assert_eq!(during["circuit_breakers.default.rq_open"], "1");
        assert_eq!(during["circuit_breakers.default.remaining_rq"], "0");
        assert_eq!(after["circuit_breakers.default.remaining_rq"], "1");
        assert_eq!(
            after["circuit_breakers.default.remaining_pending"],
            "4294967295"
        );
        assert!(
            !after.contains_key("circuit_breakers.high.remaining_rq"),
            "untracked priority"
        );
    }
}

#[test]
fn suppressed_envoy_headers_leave_overflow_unmarked() {
    let up = slow_upstream(1500);
    let port = free_port();
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]);
    let router = json!([{"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        "suppress_envoy_headers": true}}]);
    let config = bootstrap(
        vec![listener(
            "l",
            port,
            hcm(vh, json!({"http_filters": router})),
            json!({}),
        )],
        vec![cluster("c", &[up.port], istiod_thresholds(1))],
    );
    let _p = Proxy::start(Kind::Meshproxy, &config, &[]);
    let (second, (), first) = overflow(port, &up, || ());
    assert_eq!(second.status, 503);
    assert_eq!(second.header("x-envoy-overloaded"), None);
    assert_eq!(first, 200);
}

#[test]
fn cluster_not_found_response_code_matches_envoy() {
    let routes = json!([
        {"match": {"prefix": "/404"}, "route": {"cluster_header": "x-c", "cluster_not_found_response_code": "NOT_FOUND"}},
        {"match": {"prefix": "/500"}, "route": {"cluster_header": "x-c", "cluster_not_found_response_code": "INTERNAL_SERVER_ERROR"}},
        {"match": {"prefix": "/503"}, "route": {"cluster_header": "x-c"}},
    ]);
    let seen = agree_with_envoy(
        |port| config(port, routes.clone(), vec![cluster("c", &[1], json!({}))]),
        |_, port| {
            ["/404", "/500", "/503"]
                .iter()
                .flat_map(|path| {
                    [&["-H", "x-c: missing"][..], &[]].map(|args| {
                        let r = curl::get(port, path, args);
                        (r.status, r.text())
                    })
                })
                .collect::<Vec<_>>()
        },
    );
    if let Some(seen) = seen {
        let statuses: Vec<u16> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(statuses, [404, 404, 500, 500, 503, 503]);
    }
}

/// What the client and the upstream saw of one gRPC-timeout case: the status, the
/// `grpc-status`, and the `grpc-timeout` upstream (its milliseconds rounded down to
/// tens: the proxies take off the time already spent).
fn grpc_case(port: u16, up: &Upstream, path: &str, timeout: Option<&str>) -> Value {
    let before = up.count();
    let mut args = vec!["-H", "content-type: application/grpc"];
    let header = timeout.map(|t| format!("grpc-timeout: {t}"));
    if let Some(h) = &header {
        args.extend(["-H", h.as_str()]);
    }
    let r = curl::get(port, path, &args);
    e2e::wait_until(5, "the request upstream", || up.count() > before);
    let sent = up.requests()[before].header("grpc-timeout").map(|v| {
        let (digits, unit) = v.split_at(v.len() - 1);
        let scale = match unit {
            "m" => 1,
            "S" => 1000,
            other => panic!("unit {other}"),
        };
        (digits.parse::<u64>().unwrap() * scale).div_ceil(10) * 10
    });
    json!({"path": path, "status": r.status, "grpc-status": r.header("grpc-status"), "upstream grpc-timeout": sent})
}

#[test]
fn max_grpc_timeout_sets_the_route_timeout_as_in_envoy() {
    let up = slow_upstream(1200);
    let routes = json!([
        // istiod's routes: max_grpc_timeout 0s, a gRPC request's own deadline rules.
        {"match": {"prefix": "/uncapped"}, "route": {"cluster": "c", "timeout": "0.6s", "max_grpc_timeout": "0s"}},
        {"match": {"prefix": "/capped"}, "route": {"cluster": "c", "max_grpc_timeout": "0.3s"}},
        {"match": {"prefix": "/offset"}, "route": {"cluster": "c", "max_grpc_timeout": "0s", "grpc_timeout_offset": "0.5s"}},
        // max_stream_duration makes Envoy ignore max_grpc_timeout and the route timeout.
        {"match": {"prefix": "/new"}, "route": {"cluster": "c", "timeout": "0.4s", "max_grpc_timeout": "0s", "max_stream_duration": {}}},
    ]);
    let port_of = |u: &Upstream| u.port;
    let seen = agree_with_envoy(
        |port| {
            config(
                port,
                routes.clone(),
                vec![cluster("c", &[port_of(&up)], json!({}))],
            )
        },
        |_, port| {
            vec![
                // No grpc-timeout: no timeout at all, not the route's 0.6 s.
                grpc_case(port, &up, "/uncapped", None),
                grpc_case(port, &up, "/uncapped", Some("400m")),
                grpc_case(port, &up, "/uncapped", Some("5S")),
                grpc_case(port, &up, "/capped", Some("5S")),
                grpc_case(port, &up, "/capped", None),
                grpc_case(port, &up, "/offset", Some("1S")),
                grpc_case(port, &up, "/offset", Some("300m")),
                grpc_case(port, &up, "/new", Some("5S")),
            ]
        },
    );
    if let Some(seen) = seen {
        // A gRPC local reply is a 200 with a `grpc-status`; the upstream's own answer has
        // none.
        let timed_out: Vec<bool> = seen.iter().map(|c| !c["grpc-status"].is_null()).collect();
        assert_eq!(
            timed_out,
            [false, true, false, true, true, true, true, false],
            "{seen:?}"
        );
        let sent: Vec<Option<u64>> = seen
            .iter()
            .map(|c| c["upstream grpc-timeout"].as_u64())
            .collect();
        assert_eq!(
            sent,
            [
                None,
                Some(400),
                Some(5000),
                Some(300),
                Some(300),
                Some(500),
                Some(300),
                Some(5000)
            ],
            "{seen:?}"
        );
    }
}

/// Whether `kind` accepts `config` in validate mode, and meshproxy's error.
fn validates(kind: Kind, config: &str) -> (bool, String) {
    let path = e2e::scratch("validate").join("bootstrap.json");
    std::fs::write(&path, config).unwrap();
    let bin = match kind {
        Kind::Envoy => envoy_bin().expect("envoy"),
        Kind::Meshproxy => meshproxy_bin(),
    };
    let out = std::process::Command::new(bin)
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .args(["-l", "critical"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn direct_response_bodies_are_bounded_as_in_envoy() {
    let body = "x".repeat(5000);
    let direct = |port: u16, limit: Option<u32>| {
        let routes = json!([{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}]);
        let mut route_config = json!({"name": "local", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": routes}]});
        if let Some(l) = limit {
            route_config["max_direct_response_body_size_bytes"] = json!(l);
        }
        bootstrap(
            vec![listener(
                "l",
                port,
                hcm(json!([]), json!({"route_config": route_config})),
                json!({}),
            )],
            vec![],
        )
    };
    let offline = |limit| direct(free_port(), limit).replace("{ADMIN}", "0");
    let verdicts = same_in_both(|kind| {
        [None, Some(4999), Some(5000)].map(|limit| validates(kind, &offline(limit)).0)
    });
    if let Some(v) = verdicts {
        assert_eq!(v, [false, false, true]);
    }
    let (_, err) = validates(Kind::Meshproxy, &offline(None));
    assert!(
        err.contains("direct_response.body") && err.contains("maximum is 4096"),
        "{err}"
    );
    // With the limit raised, the body is served whole.
    agree_with_envoy(
        |port| direct(port, Some(8192)),
        |_, port| {
            let r = curl::get(port, "/", &[]);
            (r.status, r.body.len())
        },
    );
}

/// The HTTP version the upstream saw for a request over HTTP/1.1 and one over h2c, with
/// `extra` cluster fields.
fn upstream_versions(kind: Kind, extra: Value) -> Vec<String> {
    let up = Upstream::http("u");
    let port = free_port();
    let routes = json!([{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]);
    let p = Proxy::start(
        kind,
        &config(port, routes, vec![cluster("c", &[up.port], extra)]),
        &[],
    );
    let versions = [&[][..], &["--http2-prior-knowledge"][..]].map(|args| {
        let r = curl::get(port, "/", args);
        assert_eq!(r.status, 200, "{}", r.text());
        up.last().unwrap().version
    });
    drop(p);
    versions.to_vec()
}

#[test]
fn deprecated_cluster_protocol_fields_select_the_protocol_as_in_envoy() {
    let cases = [
        json!({"http2_protocol_options": {}}),
        json!({"protocol_selection": "USE_DOWNSTREAM_PROTOCOL"}),
        json!({"protocol_selection": "USE_DOWNSTREAM_PROTOCOL", "http2_protocol_options": {"max_concurrent_streams": 10}}),
        json!({"protocol_selection": "USE_CONFIGURED_PROTOCOL"}),
        // The extension options replace the deprecated fields.
        {
            let mut c = e2e::config::h2_upstream();
            c["protocol_selection"] = json!("USE_DOWNSTREAM_PROTOCOL");
            c
        },
    ];
    let seen = same_in_both(|kind| {
        cases
            .iter()
            .map(|extra| upstream_versions(kind, extra.clone()))
            .collect::<Vec<_>>()
    });
    if let Some(seen) = seen {
        assert_eq!(seen[0], ["HTTP/2.0", "HTTP/2.0"]);
        assert_eq!(seen[1], ["HTTP/1.1", "HTTP/2.0"]);
        assert_eq!(seen[3], ["HTTP/1.1", "HTTP/1.1"]);
    }
}

#[test]
fn dns_resolver_configs_resolve_or_are_refused_by_name() {
    let resolver = |type_name: &str, fields: Value| {
        let mut config = json!({"@type": format!("type.googleapis.com/{type_name}")});
        e2e::config::merge(&mut config, fields);
        json!({"type": "STRICT_DNS", "dns_lookup_family": "V4_ONLY",
            "typed_dns_resolver_config": {"name": "resolver", "typed_config": config}})
    };
    const CARES: &str = "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig";
    const GAI: &str =
        "envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig";
    let served = |kind: Kind, extra: Value| {
        let up = Upstream::http("u");
        let port = free_port();
        let routes = json!([{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]);
        let mut c = cluster("c", &[up.port], extra);
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"]["address"] = json!("localhost");
        let _p = Proxy::start(kind, &config(port, routes, vec![c]), &[]);
        let mut status = 0;
        e2e::wait_until(10, "localhost resolved", || {
            status = curl::get(port, "/", &[]).status;
            status == 200
        });
        status
    };
    same_in_both(|kind| {
        [
            served(kind, resolver(CARES, json!({}))),
            served(kind, resolver(GAI, json!({"num_resolver_threads": 2}))),
        ]
    });
    // A c-ares resolver with its own servers cannot be honoured by the system resolver.
    let refused = config(
        free_port(),
        json!([]),
        vec![cluster(
            "c",
            &[1],
            resolver(CARES, json!({"resolvers": [{"socket_address": {"address": "10.0.0.1", "port_value": 53}}]})),
        )],
    )
    .replace("{ADMIN}", "0");
    let (ok, err) = validates(Kind::Meshproxy, &refused);
    assert!(!ok);
    assert!(
        err.contains("typed_dns_resolver_config.typed_config") && err.contains("resolvers"),
        "{err}"
    );
    let other = config(
        free_port(),
        json!([]),
        vec![cluster(
            "c",
            &[1],
            resolver(
                "envoy.extensions.network.dns_resolver.apple.v3.AppleDnsResolverConfig",
                json!({}),
            ),
        )],
    )
    .replace("{ADMIN}", "0");
    let (ok, err) = validates(Kind::Meshproxy, &other);
    assert!(!ok);
    assert!(err.contains("typed_dns_resolver_config"), "{err}");
}
