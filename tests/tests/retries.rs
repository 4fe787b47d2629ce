//! Retry policy differential tests: the same routes in Envoy 1.40 and meshproxy, upstreams
//! scripted to fail, comparing the client's status and the attempts each upstream saw.

use e2e::config::{bootstrap, cluster, hcm, listener};
use e2e::curl;
use e2e::free_port;
use e2e::proxy::{agree_with_envoy, envoy_bin, Kind, Proxy};
use e2e::upstream::{Behavior, Upstream};
use serde_json::json;

struct Case {
    name: &'static str,
    path: &'static str,
    /// Scripted behaviour of upstream a before the request.
    a: Behavior,
    /// Scripted behaviour of upstream b.
    b: Behavior,
    /// Extra request headers (`name: value`).
    headers: &'static [&'static str],
}

fn fail(status: u16, n: usize) -> Behavior {
    Behavior {
        status,
        only_next: n,
        ..Default::default()
    }
}

fn reset(n: usize) -> Behavior {
    Behavior {
        reset: true,
        only_next: n,
        ..Default::default()
    }
}

fn with_header(name: &str, value: &str, n: usize) -> Behavior {
    Behavior {
        headers: vec![(name.into(), value.into())],
        only_next: n,
        ..Default::default()
    }
}

fn ok() -> Behavior {
    Behavior::default()
}

fn config(port: u16, a: u16, b: u16, dead: u16) -> String {
    let previous = json!([{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}]);
    let vh = json!([{"name": "v", "domains": ["*"], "include_request_attempt_count": true, "include_attempt_count_in_response": true, "routes": [
        {"match": {"prefix": "/5xx"}, "route": {"cluster": "a", "retry_policy": {"retry_on": "5xx", "num_retries": 2, "retry_back_off": {"base_interval": "0.01s"}}}},
        {"match": {"prefix": "/gateway"}, "route": {"cluster": "a", "retry_policy": {"retry_on": "gateway-error", "num_retries": 3, "retry_back_off": {"base_interval": "0.01s"}}}},
        {"match": {"prefix": "/codes"}, "route": {"cluster": "a", "retry_policy": {"retry_on": "retriable-status-codes", "retriable_status_codes": [418], "retry_back_off": {"base_interval": "0.01s"}}}},
        {"match": {"prefix": "/reset"}, "route": {"cluster": "a", "retry_policy": {"retry_on": "reset", "num_retries": 1, "retry_back_off": {"base_interval": "0.01s"}}}},
        {"match": {"prefix": "/none"}, "route": {"cluster": "a"}},
        {"match": {"prefix": "/grpc"}, "route": {"cluster": "a", "retry_policy": {"retry_on": "unavailable,cancelled,deadline-exceeded", "num_retries": 2, "retry_back_off": {"base_interval": "0.01s"}}}},
        {"match": {"prefix": "/ratelimited"}, "route": {"cluster": "a", "retry_policy": {"retry_on": "envoy-ratelimited", "num_retries": 1, "retry_back_off": {"base_interval": "0.01s"}}}},
        {"match": {"prefix": "/istio"}, "route": {"cluster": "ab", "retry_policy": {"retry_on": "connect-failure,refused-stream,retriable-status-codes", "num_retries": 2,
            "retriable_status_codes": [503], "retry_host_predicate": previous, "host_selection_retry_max_attempts": "5", "retry_back_off": {"base_interval": "0.01s"}}}},
        {"match": {"prefix": "/connect"}, "route": {"cluster": "deadfirst", "retry_policy": {"retry_on": "connect-failure", "num_retries": 1,
            "retry_host_predicate": previous, "host_selection_retry_max_attempts": "5", "retry_back_off": {"base_interval": "0.01s"}}}},
        {"match": {"prefix": "/post"}, "route": {"cluster": "a", "retry_policy": {"retry_on": "5xx", "num_retries": 1, "retry_back_off": {"base_interval": "0.01s"}}}},
        {"match": {"prefix": "/headers"}, "route": {"cluster": "a", "retry_policy": {"retry_on": "retriable-headers", "num_retries": 2, "retry_back_off": {"base_interval": "0.01s"},
            "retriable_headers": [{"name": "x-upstream-retry", "exact_match": "yes"}, {"name": "x-overloaded", "present_match": true}]}}},
        {"match": {"prefix": "/gated"}, "route": {"cluster": "a", "retry_policy": {"retry_on": "5xx", "num_retries": 2, "retry_back_off": {"base_interval": "0.01s"},
            "retriable_request_headers": [{"name": "x-idempotent", "exact_match": "true"}]}}}
    ]}]);
    bootstrap(
        vec![listener("l", port, hcm(vh, json!({})), json!({}))],
        vec![
            cluster("a", &[a], json!({})),
            cluster("ab", &[a, b], json!({})),
            cluster("deadfirst", &[dead, a], json!({"lb_policy": "ROUND_ROBIN"})),
        ],
    )
}

#[test]
fn retries_match_envoy() {
    if envoy_bin().is_none() {
        return;
    }
    let a = Upstream::http("a");
    let b = Upstream::http("b");
    let dead = free_port();
    let cases = vec![
        Case {
            name: "5xx retried until success",
            path: "/5xx",
            a: fail(500, 2),
            b: ok(),
            headers: &[],
        },
        Case {
            name: "5xx exhausted",
            path: "/5xx",
            a: fail(500, 5),
            b: ok(),
            headers: &[],
        },
        Case {
            name: "gateway-error does not retry 500",
            path: "/gateway",
            a: fail(500, 1),
            b: ok(),
            headers: &[],
        },
        Case {
            name: "gateway-error retries 503",
            path: "/gateway",
            a: fail(503, 2),
            b: ok(),
            headers: &[],
        },
        Case {
            name: "retriable status code",
            path: "/codes",
            a: fail(418, 1),
            b: ok(),
            headers: &[],
        },
        Case {
            name: "reset retried",
            path: "/reset",
            a: reset(1),
            b: ok(),
            headers: &[],
        },
        Case {
            name: "reset exhausted",
            path: "/reset",
            a: reset(3),
            b: ok(),
            headers: &[],
        },
        Case {
            name: "no policy no retry",
            path: "/none",
            a: fail(503, 1),
            b: ok(),
            headers: &[],
        },
        Case {
            name: "istio default policy moves to the other host",
            path: "/istio",
            a: fail(503, 1),
            b: fail(503, 1),
            headers: &[],
        },
        Case {
            name: "grpc unavailable retried",
            path: "/grpc",
            a: with_header("grpc-status", "14", 2),
            b: ok(),
            headers: &[],
        },
        Case {
            name: "grpc internal not retried",
            path: "/grpc",
            a: with_header("grpc-status", "13", 1),
            b: ok(),
            headers: &[],
        },
        Case {
            name: "grpc cancelled exhausted",
            path: "/grpc",
            a: with_header("grpc-status", "1", 5),
            b: ok(),
            headers: &[],
        },
        Case {
            name: "envoy-ratelimited retried",
            path: "/ratelimited",
            a: with_header("x-envoy-ratelimited", "true", 1),
            b: ok(),
            headers: &[],
        },
        Case {
            name: "retriable-headers: an exact header match retries",
            path: "/headers",
            a: with_header("x-upstream-retry", "yes", 1),
            b: ok(),
            headers: &[],
        },
        Case {
            name: "retriable-headers: a present header retries until exhausted",
            path: "/headers",
            a: with_header("x-overloaded", "1", 5),
            b: ok(),
            headers: &[],
        },
        Case {
            name: "retriable-headers: another value is final",
            path: "/headers",
            a: with_header("x-upstream-retry", "no", 1),
            b: ok(),
            headers: &[],
        },
        Case {
            name: "retriable_request_headers: a matching request is retried",
            path: "/gated",
            a: fail(503, 1),
            b: ok(),
            headers: &["x-idempotent: true"],
        },
        Case {
            name: "retriable_request_headers: other requests are not",
            path: "/gated",
            a: fail(503, 1),
            b: ok(),
            headers: &["x-idempotent: false"],
        },
        Case {
            name: "post body replayed",
            path: "/post",
            a: fail(502, 1),
            b: ok(),
            headers: &[],
        },
    ];
    // Envoy 1.40 treats no client as internal (no internal_address_config), so it removes
    // the router-steering x-envoy-* request headers instead of honouring them.
    let header_cases = [
        (
            "x-envoy-retry-on from an external client is dropped",
            "/none",
            fail(500, 1),
            &["x-envoy-retry-on: 5xx"][..],
        ),
        (
            "x-envoy-max-retries from an external client is dropped",
            "/none",
            fail(500, 5),
            &["x-envoy-retry-on: 5xx", "x-envoy-max-retries: 3"][..],
        ),
        (
            "x-envoy-max-retries: 0 does not disable the route policy",
            "/5xx",
            fail(500, 1),
            &["x-envoy-max-retries: 0"][..],
        ),
        (
            "x-envoy-retry-grpc-on from an external client is dropped",
            "/none",
            with_header("grpc-status", "14", 1),
            &["x-envoy-retry-grpc-on: unavailable"][..],
        ),
        (
            "unknown condition in a dropped header",
            "/none",
            fail(500, 1),
            &["x-envoy-retry-on: bogus"][..],
        ),
        (
            "a dropped header does not add to the route's conditions",
            "/gateway",
            fail(500, 1),
            &["x-envoy-retry-on: 5xx"][..],
        ),
    ];
    let cases: Vec<Case> = cases
        .into_iter()
        .chain(
            header_cases
                .into_iter()
                .map(|(name, path, a, headers)| Case {
                    name,
                    path,
                    a,
                    b: ok(),
                    headers,
                }),
        )
        .collect();
    let (ep, mp) = (free_port(), free_port());
    let envoy = Proxy::start(Kind::Envoy, &config(ep, a.port, b.port, dead), &[]);
    let mesh = Proxy::start(Kind::Meshproxy, &config(mp, a.port, b.port, dead), &[]);
    let mut failures = Vec::new();
    for c in &cases {
        let mut seen = Vec::new();
        for port in [ep, mp] {
            a.set(c.a.clone());
            b.set(c.b.clone());
            let (a0, b0) = (a.count(), b.count());
            let mut args: Vec<&str> = if c.path == "/post" {
                vec!["-X", "POST", "--data-binary", "replay-me"]
            } else {
                vec![]
            };
            for h in c.headers {
                args.extend(["-H", h]);
            }
            let r = curl::get(port, c.path, &args);
            std::thread::sleep(std::time::Duration::from_millis(50));
            let attempts_a = a.count() - a0;
            let attempts_b = b.count() - b0;
            let bodies: Vec<Vec<u8>> = a.requests()[a0..]
                .iter()
                .chain(b.requests()[b0..].iter())
                .map(|r| r.body.clone())
                .collect();
            // Which host gets which attempt depends on round robin's (random) start: compare the
            // set of attempt numbers seen.
            let mut counts: Vec<String> = a.requests()[a0..]
                .iter()
                .chain(b.requests()[b0..].iter())
                .map(|r| r.header("x-envoy-attempt-count").unwrap_or("-").to_string())
                .collect();
            counts.sort();
            // Whether the retry headers reached the upstream (Envoy consumes them).
            let leaked = a.requests()[a0..]
                .iter()
                .chain(b.requests()[b0..].iter())
                .any(|r| {
                    [
                        "x-envoy-retry-on",
                        "x-envoy-retry-grpc-on",
                        "x-envoy-max-retries",
                    ]
                    .iter()
                    .any(|h| r.header(h).is_some())
                });
            seen.push((
                leaked,
                r.status,
                r.header("x-envoy-attempt-count").map(str::to_string),
                attempts_a + attempts_b,
                bodies,
                counts,
            ));
        }
        a.set(ok());
        b.set(ok());
        if seen[0] != seen[1] {
            failures.push(format!(
                "{}: envoy={:?} meshproxy={:?}",
                c.name, seen[0], seen[1]
            ));
        }
    }
    // Connect failure to the first host, retried on the other (ROUND_ROBIN may start on
    // either, so compare outcomes, not host order).
    for port in [ep, mp] {
        let r = curl::get(port, "/connect", &[]);
        let r2 = curl::get(port, "/connect", &[]);
        if r.status != 200 || r2.status != 200 {
            failures.push(format!(
                "connect-failure retry on port {port}: {} {}",
                r.status, r2.status
            ));
        }
    }
    assert!(mesh.stat("cluster.a.upstream_rq_retry").unwrap_or(0) > 0);
    drop((envoy, mesh));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A cluster's `retry_budget` replaces `max_retries`: with `budget_percent: 0` and
/// `min_retry_concurrency: 1`, four requests failing together get one retry at a time and
/// three overflows; a generous budget retries all four. Same counts in Envoy 1.40.
#[test]
fn retry_budget_limits_concurrent_retries_like_envoy() {
    // Slow enough that the four requests overlap even on a loaded machine: every retry
    // decision falls inside the first retry's 1.5 s.
    let up = Upstream::http("slow-failing");
    up.set(Behavior {
        status: 503,
        delay_ms: 1500,
        ..Default::default()
    });
    let cfg = |port: u16| {
        let budget = |percent: f64, min: u32| {
            json!({"circuit_breakers": {"thresholds": [{"max_retries": 100,
                "retry_budget": {"budget_percent": {"value": percent}, "min_retry_concurrency": min}}]}})
        };
        let route = |prefix: &str, cluster: &str| {
            json!({"match": {"prefix": prefix}, "route": {"cluster": cluster, "retry_policy": {
                "retry_on": "5xx", "num_retries": 1, "retry_back_off": {"base_interval": "0.001s", "max_interval": "0.002s"}}}})
        };
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [route("/tight", "tight"), route("/", "generous")]}]);
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![
                cluster("tight", &[up.port], budget(0.0, 1)),
                cluster("generous", &[up.port], budget(100.0, 10)),
            ],
        )
    };
    let burst = |port: u16, path: &'static str| {
        let clients: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(move || curl::get(port, path, &[]).status))
            .collect();
        for c in clients {
            assert_eq!(c.join().unwrap(), 503);
        }
    };
    let envoy = agree_with_envoy(cfg, |p, port| {
        burst(port, "/tight");
        burst(port, "/generous");
        let stat = |c: &str, s: &str| p.stat(&format!("cluster.{c}.{s}")).unwrap_or(0);
        [
            stat("tight", "upstream_rq_retry"),
            stat("tight", "upstream_rq_retry_overflow"),
            stat("generous", "upstream_rq_retry"),
            stat("generous", "upstream_rq_retry_overflow"),
        ]
    });
    assert_eq!(envoy, Some([1, 3, 4, 0]), "envoy's counts");
}

/// `rate_limited_retry_back_off`: a 429 with `Retry-After: 1` is retried after about a
/// second (Envoy jitters up to half again), one asking for more than `max_interval` falls
/// back to the exponential back-off; the back-off stats agree with Envoy 1.40.
#[test]
fn rate_limited_back_off_waits_what_the_upstream_asks_like_envoy() {
    let up = Upstream::http("limited");
    let cfg = |port: u16| {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {
            "cluster": "limited", "retry_policy": {"retry_on": "retriable-status-codes", "retriable_status_codes": [429],
            "num_retries": 1, "retry_back_off": {"base_interval": "0.01s"},
            "rate_limited_retry_back_off": {"reset_headers": [{"name": "Retry-After", "format": "SECONDS"}], "max_interval": "5s"}}}}]}]);
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![cluster("limited", &[up.port], json!({}))],
        )
    };
    let limited = |retry_after: &str| Behavior {
        status: 429,
        headers: vec![("retry-after".into(), retry_after.into())],
        only_next: 1,
        ..Default::default()
    };
    let envoy = agree_with_envoy(cfg, |p, port| {
        up.set(limited("1"));
        let started = std::time::Instant::now();
        assert_eq!(curl::get(port, "/", &[]).status, 200);
        let waited = started.elapsed();
        assert!(
            waited >= std::time::Duration::from_millis(950)
                && waited < std::time::Duration::from_millis(2500),
            "{:?} waited {waited:?}",
            p.kind
        );
        up.set(limited("10"));
        let started = std::time::Instant::now();
        assert_eq!(curl::get(port, "/", &[]).status, 200);
        // Ten seconds if the header were honoured; the exponential back-off is 10 ms.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            p.kind
        );
        let stat = |s: &str| p.stat(&format!("cluster.limited.{s}")).unwrap_or(0);
        [
            stat("upstream_rq_retry_backoff_ratelimited"),
            stat("upstream_rq_retry_backoff_exponential"),
        ]
    });
    assert_eq!(envoy, Some([1, 1]), "envoy's counts");
}

/// `retry_priority` previous_priorities: a failing priority-0 host is left for the
/// priority-1 one on the retry (without the policy the retry stays at priority 0), and an
/// update frequency of 2 keeps the first retry at priority 0. Same outcome as Envoy 1.40.
#[test]
fn previous_priorities_moves_retries_to_the_next_level_like_envoy() {
    let (p0, p1) = (Upstream::http("p0"), Upstream::http("p1"));
    p0.set(Behavior {
        status: 503,
        ..Default::default()
    });
    let cfg = |port: u16| {
        let endpoint = |p: u16| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}});
        let levels = json!({"load_assignment": {"cluster_name": "levels", "endpoints": [
            {"priority": 0, "lb_endpoints": [endpoint(p0.port)]},
            {"priority": 1, "lb_endpoints": [endpoint(p1.port)]}]}});
        let priority = |f: u32| {
            json!({"name": "envoy.retry_priorities.previous_priorities", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
            "update_frequency": f}})
        };
        let route = |prefix: &str, retries: u32, retry_priority: Option<serde_json::Value>| {
            let mut policy = json!({"retry_on": "5xx", "num_retries": retries, "retry_back_off": {"base_interval": "0.001s"}});
            if let Some(p) = retry_priority {
                policy["retry_priority"] = p;
            }
            json!({"match": {"prefix": prefix}, "route": {"cluster": "levels", "retry_policy": policy}})
        };
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [
            route("/every", 1, Some(priority(1))),
            route("/pairs", 2, Some(priority(2))),
            route("/", 1, None)]}]);
        let mut c = cluster("levels", &[], levels.clone());
        c["load_assignment"] = levels["load_assignment"].clone();
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![c],
        )
    };
    let envoy = agree_with_envoy(cfg, |_, port| {
        let mut run = Vec::new();
        for path in ["/every", "/pairs", "/plain"] {
            let (before0, before1) = (p0.count(), p1.count());
            let status = curl::get(port, path, &[]).status;
            run.push((path, status, p0.count() - before0, p1.count() - before1));
        }
        run
    });
    let expected = [
        ("/every", 200, 1, 1),
        ("/pairs", 200, 2, 1),
        ("/plain", 503, 2, 0),
    ];
    assert_eq!(envoy, Some(expected.to_vec()), "envoy's outcome");
}

/// `hedge_policy.hedge_on_per_try_timeout`: when the first attempt (priority 0, slow)
/// passes its per-try timeout, the retry (moved to priority 1 by previous_priorities,
/// failing fast with 503) races it instead of replacing it, so the slow 200 still wins;
/// without hedging the first attempt is cancelled and the 503 is final. Same as Envoy
/// 1.40.
#[test]
fn hedging_on_per_try_timeout_races_the_retry_like_envoy() {
    let (slow, failing) = (Upstream::http("slow"), Upstream::http("failing"));
    let cfg = |port: u16| {
        let endpoint = |p: u16| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}});
        let levels = json!({"cluster_name": "levels", "endpoints": [
            {"priority": 0, "lb_endpoints": [endpoint(slow.port)]},
            {"priority": 1, "lb_endpoints": [endpoint(failing.port)]}]});
        let route = |prefix: &str, hedge: bool| {
            json!({"match": {"prefix": prefix}, "route": {"cluster": "levels", "timeout": "3s",
                "hedge_policy": {"hedge_on_per_try_timeout": hedge},
                "retry_policy": {"retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.2s",
                    "retry_back_off": {"base_interval": "0.01s"},
                    "retry_priority": {"name": "envoy.retry_priorities.previous_priorities", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                        "update_frequency": 1}}}}})
        };
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [route("/hedged", true), route("/plain", false)]}]);
        let mut c = cluster("levels", &[], json!({}));
        c["load_assignment"] = levels;
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![c],
        )
    };
    let envoy = agree_with_envoy(cfg, |_, port| {
        slow.set(Behavior {
            delay_ms: 600,
            ..Default::default()
        });
        failing.set(Behavior {
            status: 503,
            ..Default::default()
        });
        let run = |path: &str| {
            let (s0, f0) = (slow.count(), failing.count());
            let r = curl::get(port, path, &[]);
            (
                r.status,
                r.header("x-upstream").map(str::to_string),
                slow.count() - s0,
                failing.count() - f0,
            )
        };
        (run("/plain"), run("/hedged"))
    });
    if let Some(seen) = envoy {
        assert_eq!(
            seen,
            (
                (503, Some("failing".into()), 1, 1),
                (200, Some("slow".into()), 1, 1)
            )
        );
    }
}

/// An upstream that sends its headers and then closes mid-body: the response has started,
/// so the `reset` retry policy does not retry it; the client gets the status and the
/// bytes that came, then a closed connection. One that resets before any header is
/// retried, and the final 503 names the latest reset. Same as Envoy 1.40.
#[test]
fn close_after_headers_is_not_retried_like_envoy() {
    let up = Upstream::http("breaks");
    let cfg = |port: u16| {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c",
            "retry_policy": {"retry_on": "reset,5xx", "num_retries": 2, "retry_back_off": {"base_interval": "0.01s"}}}}]}]);
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![cluster("c", &[up.port], json!({}))],
        )
    };
    let envoy = agree_with_envoy(cfg, |p, port| {
        up.set(Behavior {
            close_after_headers: true,
            ..Default::default()
        });
        let before = up.count();
        let r = curl::get(port, "/", &[]);
        let cut = (
            r.status,
            r.text(),
            up.count() - before,
            p.stat("cluster.c.upstream_rq_retry").unwrap_or(-1),
        );
        // Resets before any header are retried, and the final reply says so.
        up.set(Behavior {
            reset: true,
            ..Default::default()
        });
        let before = up.count();
        let r = curl::get(port, "/", &[]);
        (cut, (r.status, r.text(), up.count() - before))
    });
    if let Some((cut, reset)) = envoy {
        assert_eq!(cut, (200, "abc".to_string(), 1, 0));
        assert_eq!(
            reset,
            (
                503,
                "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: connection termination".to_string(),
                3
            )
        );
    }
}

/// Retry spacing: with `retry_back_off` base 0.1 s (max 1 s), the n-th back-off is drawn
/// from [0, 0.1 s x 2^(n-1)) (full jitter): every gap between attempts stays within its
/// bound (plus a little for the exchange itself), and the third gaps average well above
/// zero. Both proxies hold to it.
#[test]
fn retry_back_off_spacing_stays_within_bounds_like_envoy() {
    let up = Upstream::http("spaced");
    let cfg = |port: u16| {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c",
            "retry_policy": {"retry_on": "5xx", "num_retries": 3,
                "retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}}}}]}]);
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![cluster("c", &[up.port], json!({}))],
        )
    };
    let envoy = agree_with_envoy(cfg, |_, port| {
        up.set(fail(503, 0));
        let mut within = true;
        let mut third = Vec::new();
        for _ in 0..6 {
            let before = up.count();
            assert_eq!(curl::get(port, "/", &[]).status, 503);
            let times: Vec<_> = up.requests()[before..].iter().map(|r| r.received).collect();
            assert_eq!(times.len(), 4, "one try and three retries");
            for (n, pair) in times.windows(2).enumerate() {
                let gap = pair[1] - pair[0];
                let bound = std::time::Duration::from_millis(100 << n)
                    + std::time::Duration::from_millis(60);
                within &= gap < bound;
                if n == 2 {
                    third.push(gap.as_millis());
                }
            }
        }
        let mean_third = third.iter().sum::<u128>() / third.len() as u128;
        (within, mean_third > 60)
    });
    if let Some(seen) = envoy {
        assert_eq!(seen, (true, true));
    }
}
