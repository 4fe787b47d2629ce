//! Active health checking differential tests: the same health-checked clusters in Envoy
//! 1.40 and meshproxy, upstreams scripted to pass or fail, comparing the check requests
//! the upstream sees, the `/clusters` health flags through each transition, where
//! traffic goes, and the `health_check.*` stats.

use e2e::config::{bootstrap, cluster, hcm, listener};
use e2e::curl;
use e2e::proxy::{agree_with_envoy, Proxy};
use e2e::upstream::{Behavior, TcpEcho, Upstream};
use serde_json::{json, Value};

fn config(port: u16, ports: &[u16], check: Value) -> String {
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]);
    bootstrap(
        vec![listener("l", port, hcm(vh, json!({})), json!({}))],
        vec![cluster("c", ports, json!({"health_checks": [check]}))],
    )
}

fn wait_flags(p: &Proxy, upstream_port: u16, want: &str) {
    e2e::wait_until(15, &format!("{upstream_port} {want}"), || {
        p.health_flags("c", upstream_port) == want
    });
}

/// Traffic (not checks) each upstream received during `n` requests.
fn traffic(port: u16, ups: &[&Upstream], n: usize) -> Vec<usize> {
    let served = |u: &Upstream| u.requests().iter().filter(|r| r.path != "/healthz").count();
    let before: Vec<usize> = ups.iter().map(|u| served(u)).collect();
    for _ in 0..n {
        curl::get(port, "/", &[]);
    }
    ups.iter().zip(before).map(|(u, b)| served(u) - b).collect()
}

/// HTTP checks: the request as sent (path, host, method, user agent, added header); a
/// status outside `expected_statuses` fails the host at once and traffic leaves it;
/// `healthy_threshold` passes bring it back.
#[test]
fn http_health_checks_match_envoy() {
    let (a, b) = (Upstream::http("a"), Upstream::http("b"));
    let check = json!({"timeout": "1s", "interval": "0.3s", "no_traffic_interval": "0.3s",
        "unhealthy_threshold": 2, "healthy_threshold": 2,
        "http_health_check": {"path": "/healthz", "host": "hc.local",
            "request_headers_to_add": [{"header": {"key": "x-hc", "value": "yes"}}],
            "expected_statuses": [{"start": 200, "end": 300}]}});
    let envoy = agree_with_envoy(
        |port| config(port, &[a.port, b.port], check.clone()),
        |p, port| {
            a.set(Behavior::default());
            b.set(Behavior::default());
            wait_flags(p, a.port, "healthy");
            wait_flags(p, b.port, "healthy");
            let request = a
                .requests()
                .into_iter()
                .find(|r| r.path == "/healthz")
                .map(|r| {
                    (
                        r.method.clone(),
                        r.header("host").map(str::to_string),
                        r.header("user-agent").map(str::to_string),
                        r.header("x-hc").map(str::to_string),
                    )
                });
            let both = traffic(port, &[&a, &b], 10).iter().all(|n| *n > 0);
            a.set(Behavior {
                status: 503,
                ..Default::default()
            });
            wait_flags(p, a.port, "/failed_active_hc");
            let only_b = traffic(port, &[&a, &b], 10);
            a.set(Behavior::default());
            wait_flags(p, a.port, "healthy");
            // The return came within update_merge_window of the failure: the balancers
            // see it when the window ends.
            std::thread::sleep(std::time::Duration::from_millis(1200));
            let back = traffic(port, &[&a, &b], 10).iter().all(|n| *n > 0);
            let stat = |s: &str| p.stat(&format!("cluster.c.health_check.{s}")).unwrap_or(-1);
            (
                request,
                both,
                only_b,
                back,
                stat("attempt") > stat("success"),
                stat("failure") > 0,
                stat("healthy"),
            )
        },
    );
    if let Some(seen) = envoy {
        let request = Some((
            "GET".into(),
            Some("hc.local".into()),
            Some("Envoy/HC".into()),
            Some("yes".into()),
        ));
        assert_eq!(seen, (request, true, vec![0, 10], true, true, true, 2));
    }
}

/// TCP checks: a payload written and the expected bytes read back pass; a refused
/// connection fails after `unhealthy_threshold` tries; hosts start out of service
/// until their first pass.
#[test]
fn tcp_health_checks_match_envoy() {
    let echo = TcpEcho::start();
    let dead = e2e::free_port();
    // An echo that never says PONG times out: Envoy marks that too.
    let cases = [
        ("50494e47", "healthy"),
        ("504f4e47", "/failed_active_hc/active_hc_timeout"),
    ];
    for (receive, echo_flags) in cases {
        let check = json!({"timeout": "0.5s", "interval": "0.3s", "no_traffic_interval": "0.3s",
            "unhealthy_threshold": 2, "healthy_threshold": 1,
            "tcp_health_check": {"send": {"text": "50494e47"}, "receive": [{"text": receive}]}});
        let envoy = agree_with_envoy(
            |port| config(port, &[echo.port, dead], check.clone()),
            |p, _| {
                // Two rounds of checks have run.
                std::thread::sleep(std::time::Duration::from_millis(1500));
                (p.health_flags("c", echo.port), p.health_flags("c", dead))
            },
        );
        if let Some(seen) = envoy {
            assert_eq!(
                seen,
                (echo_flags.to_string(), "/failed_active_hc".to_string()),
                "receive {receive}"
            );
        }
    }
}

/// gRPC checks: `grpc.health.v1.Health/Check` for the configured service, SERVING passes,
/// NOT_SERVING fails the host at once.
#[test]
fn grpc_health_checks_match_envoy() {
    let (serving, not_serving) = (Upstream::http("serving"), Upstream::http("not"));
    let answer = |status: u8| Behavior {
        body: Some(String::from_utf8(vec![0, 0, 0, 0, 2, 0x08, status]).unwrap()),
        headers: vec![("content-type".into(), "application/grpc".into())],
        trailers: vec![("grpc-status".into(), "0".into())],
        ..Default::default()
    };
    let check = json!({"timeout": "1s", "interval": "0.3s", "no_traffic_interval": "0.3s",
        "unhealthy_threshold": 2, "healthy_threshold": 1,
        "grpc_health_check": {"service_name": "reviews", "authority": "hc.grpc"}});
    let envoy = agree_with_envoy(
        |port| {
            let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]);
            let mut extra = e2e::config::h2_upstream();
            extra["health_checks"] = json!([check.clone()]);
            bootstrap(
                vec![listener("l", port, hcm(vh, json!({})), json!({}))],
                vec![cluster("c", &[serving.port, not_serving.port], extra)],
            )
        },
        |p, _| {
            serving.set(answer(1));
            not_serving.set(answer(2));
            wait_flags(p, serving.port, "healthy");
            std::thread::sleep(std::time::Duration::from_millis(1000));
            let request = serving.requests().last().map(|r| {
                (
                    r.method.clone(),
                    r.path.clone(),
                    r.header("host").map(str::to_string),
                    r.header("content-type").map(str::to_string),
                    r.body.clone(),
                )
            });
            (
                request,
                p.health_flags("c", serving.port),
                p.health_flags("c", not_serving.port),
            )
        },
    );
    if let Some((request, good, bad)) = envoy {
        let mut body = vec![0, 0, 0, 0, 9, 0x0a, 7];
        body.extend_from_slice(b"reviews");
        assert_eq!(
            request,
            Some((
                "POST".into(),
                "/grpc.health.v1.Health/Check".into(),
                Some("hc.grpc".into()),
                Some("application/grpc".into()),
                body
            ))
        );
        assert_eq!(
            (good.as_str(), bad.as_str()),
            ("healthy", "/failed_active_hc")
        );
    }
}

/// Until the cluster carries traffic, checks run every `no_traffic_interval`; after, every
/// `interval`.
#[test]
fn no_traffic_interval_applies_until_traffic_like_envoy() {
    let up = Upstream::http("up");
    let check = json!({"timeout": "1s", "interval": "0.2s", "no_traffic_interval": "5s",
        "unhealthy_threshold": 2, "healthy_threshold": 1, "http_health_check": {"path": "/healthz"}});
    let checks = || {
        up.requests()
            .iter()
            .filter(|r| r.path == "/healthz")
            .count()
    };
    let envoy = agree_with_envoy(
        |port| config(port, &[up.port], check.clone()),
        |p, port| {
            wait_flags(p, up.port, "healthy");
            let before = checks();
            std::thread::sleep(std::time::Duration::from_millis(1500));
            let idle = checks() - before;
            curl::get(port, "/", &[]);
            // The check already scheduled (up to 5 s away) runs first; then every 0.2 s.
            std::thread::sleep(std::time::Duration::from_millis(6500));
            let before = checks();
            std::thread::sleep(std::time::Duration::from_millis(1500));
            let busy = checks() - before;
            (idle, busy >= 4)
        },
    );
    if let Some(seen) = envoy {
        assert_eq!(seen, (0, true));
    }
}
