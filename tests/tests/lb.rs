//! Load-balancer distributions and circuit breakers, through the real binary.

use e2e::config::{bootstrap, cluster, hcm, listener};
use e2e::proxy::{Kind, Proxy};
use e2e::upstream::{Behavior, Upstream};
use e2e::{curl, free_port};
use serde_json::{json, Value};

fn setup(lb: Value, weights: &[u32], route_extra: Value) -> (Vec<Upstream>, Proxy, u16) {
    let ups: Vec<Upstream> = (0..weights.len())
        .map(|i| Upstream::http(&format!("u{i}")))
        .collect();
    let port = free_port();
    let endpoints: Vec<Value> = ups
        .iter()
        .zip(weights)
        .map(|(u, w)| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": u.port}}}, "load_balancing_weight": w}))
        .collect();
    let mut c = cluster("c", &[], lb);
    c["load_assignment"]["endpoints"] = json!([{"lb_endpoints": endpoints}]);
    let mut r = json!({"cluster": "c"});
    e2e::config::merge(&mut r, route_extra);
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": r}]}]);
    let p = Proxy::start(
        Kind::Meshproxy,
        &bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![c],
        ),
        &[],
    );
    (ups, p, port)
}

fn spread(
    ups: &[Upstream],
    port: u16,
    n: usize,
    args: impl Fn(usize) -> Vec<String>,
) -> Vec<usize> {
    for i in 0..n {
        let a = args(i);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        assert_eq!(curl::get(port, "/", &refs).status, 200);
    }
    ups.iter().map(Upstream::count).collect()
}

#[test]
fn round_robin_is_exact_and_weighted() {
    let (ups, _p, port) = setup(json!({"lb_policy": "ROUND_ROBIN"}), &[1, 1, 1], json!({}));
    assert_eq!(spread(&ups, port, 90, |_| vec![]), vec![30, 30, 30]);
    let (ups, _p, port) = setup(json!({"lb_policy": "ROUND_ROBIN"}), &[1, 3], json!({}));
    assert_eq!(spread(&ups, port, 80, |_| vec![]), vec![20, 60]);
}

#[test]
fn random_and_least_request_use_every_host() {
    for lb in ["RANDOM", "LEAST_REQUEST"] {
        let (ups, _p, port) = setup(json!({"lb_policy": lb}), &[1, 1], json!({}));
        let c = spread(&ups, port, 100, |_| vec![]);
        assert!(c.iter().all(|n| *n >= 20), "{lb}: {c:?}");
    }
}

#[test]
fn ring_hash_and_maglev_are_sticky_by_header() {
    for lb in ["RING_HASH", "MAGLEV"] {
        let (ups, _p, port) = setup(
            json!({"lb_policy": lb}),
            &[1, 1, 1],
            json!({"hash_policy": [{"header": {"header_name": "x-user"}}]}),
        );
        // The same key always lands on the same host...
        let c = spread(&ups, port, 20, |_| {
            vec!["-H".into(), "x-user: alice".into()]
        });
        assert_eq!(c.iter().filter(|n| **n > 0).count(), 1, "{lb}: {c:?}");
        // ...and many keys spread over all hosts.
        let before: Vec<usize> = ups.iter().map(Upstream::count).collect();
        let c = spread(&ups, port, 90, |i| {
            vec!["-H".into(), format!("x-user: user-{i}")]
        });
        let delta: Vec<usize> = c.iter().zip(before).map(|(a, b)| a - b).collect();
        assert!(delta.iter().all(|n| *n >= 10), "{lb}: {delta:?}");
    }
}

#[test]
fn ring_hash_generates_a_cookie_when_missing() {
    let (ups, _p, port) = setup(
        json!({"lb_policy": "RING_HASH"}),
        &[1, 1],
        json!({"hash_policy": [{"cookie": {"name": "sticky", "ttl": "60s", "path": "/"}}]}),
    );
    let r = curl::get(port, "/", &[]);
    let cookie = r
        .header("set-cookie")
        .expect("generated cookie")
        .to_string();
    assert!(
        cookie.starts_with("sticky=\"")
            && cookie.contains("Max-Age=60")
            && cookie.contains("Path=/"),
        "{cookie}"
    );
    let value = cookie.split(';').next().unwrap().to_string();
    let first = ups.iter().position(|u| u.count() == 1).unwrap();
    for _ in 0..10 {
        let r = curl::get(port, "/", &["-H", &format!("cookie: {value}")]);
        assert!(r.header("set-cookie").is_none());
    }
    assert_eq!(ups[first].count(), 11);
}

#[test]
fn circuit_breaker_overflow_is_503_uo() {
    let up = Upstream::http("slow");
    up.set(Behavior {
        delay_ms: 800,
        ..Default::default()
    });
    let port = free_port();
    let log = e2e::scratch("cb").join("access.log");
    let c = cluster(
        "c",
        &[up.port],
        json!({"circuit_breakers": {"thresholds": [{"max_requests": 1, "max_pending_requests": 1, "max_connections": 1}]}}),
    );
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]);
    let access = json!({"access_log": [{"name": "f", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": log.display().to_string(), "log_format": {"text_format_source": {"inline_string": "%RESPONSE_CODE% %RESPONSE_FLAGS%\n"}}}}]});
    let p = Proxy::start(
        Kind::Meshproxy,
        &bootstrap(
            vec![listener("l", port, hcm(vh, access), json!({}))],
            vec![c],
        ),
        &["--file-flush-interval-msec", "50"],
    );
    let handles: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || curl::get(port, "/", &[])))
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.status == 200).count();
    let overflow: Vec<_> = results.iter().filter(|r| r.status == 503).collect();
    assert!(
        ok >= 1 && !overflow.is_empty(),
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(
        overflow[0].text(),
        "upstream connect error or disconnect/reset before headers. reset reason: overflow"
    );
    let overflow = |s: &str| {
        p.stat(&format!("cluster.c.upstream_rq_{s}_overflow"))
            .unwrap()
    };
    assert!(overflow("pending") + overflow("active") >= 1);
    e2e::wait_until(10, "log", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.lines().count() == 3)
    });
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .any(|l| l == "503 UO"));
    e2e::wait_until(10, "gauges back to zero", || {
        p.stat("cluster.c.upstream_rq_active") == Some(0)
            && p.stat("cluster.c.upstream_rq_pending_active") == Some(0)
    });
}

#[test]
fn max_requests_per_connection_rotates_upstream_connections() {
    let (ups, p, port) = setup(json!({"max_requests_per_connection": 2}), &[1], json!({}));
    for _ in 0..6 {
        assert_eq!(curl::get(port, "/", &[]).status, 200);
    }
    assert_eq!(ups[0].count(), 6);
    assert_eq!(ups[0].connections(), 3);
    assert_eq!(p.stat("cluster.c.upstream_cx_total"), Some(3));
}

/// `locality_weighted_lb_config`: within a level, localities share traffic by weight
/// times availability (healthy share x 1.4, capped at 1); a locality without weight gets
/// none. Same split as Envoy 1.40 (within sampling bounds).
#[test]
fn locality_weighted_balancing_matches_envoy() {
    let ups: Vec<Upstream> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| Upstream::http(n))
        .collect();
    let cfg = |port: u16| {
        let ep = |u: &Upstream, health: &str| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": u.port}}}, "health_status": health});
        let mut weights = cluster(
            "weights",
            &[],
            json!({"common_lb_config": {"locality_weighted_lb_config": {}}}),
        );
        weights["load_assignment"]["endpoints"] = json!([
            {"locality": {"zone": "a"}, "load_balancing_weight": 3, "lb_endpoints": [ep(&ups[0], "HEALTHY")]},
            {"locality": {"zone": "b"}, "load_balancing_weight": 1, "lb_endpoints": [ep(&ups[1], "HEALTHY")]},
            {"locality": {"zone": "c"}, "lb_endpoints": [ep(&ups[2], "HEALTHY")]}]);
        let mut degraded = cluster(
            "degraded",
            &[],
            json!({"common_lb_config": {"locality_weighted_lb_config": {}}}),
        );
        degraded["load_assignment"]["endpoints"] = json!([
            {"locality": {"zone": "d"}, "load_balancing_weight": 1, "lb_endpoints": [ep(&ups[3], "HEALTHY"), ep(&ups[2], "UNHEALTHY")]},
            {"locality": {"zone": "e"}, "load_balancing_weight": 1, "lb_endpoints": [ep(&ups[4], "HEALTHY")]}]);
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/degraded"}, "route": {"cluster": "degraded"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "weights"}}]}]);
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![weights, degraded],
        )
    };
    let counts = |port: u16, path: &str| {
        let before: Vec<usize> = ups.iter().map(|u| u.count()).collect();
        for _ in 0..400 {
            curl::get(port, path, &[]);
        }
        ups.iter()
            .zip(before)
            .map(|(u, b)| u.count() - b)
            .collect::<Vec<_>>()
    };
    let envoy = e2e::proxy::agree_with_envoy(cfg, |_, port| {
        // 3:1 over 400 requests: 300 ± 9 (sd) for a; 0.7:1 for d and e: 165 ± 10 for d.
        let w = counts(port, "/");
        let d = counts(port, "/degraded");
        (
            (255..=345).contains(&w[0]),
            w[0] + w[1],
            w[2],
            (120..=210).contains(&d[3]),
            d[3] + d[4],
            d[2],
        )
    });
    if let Some(seen) = envoy {
        assert_eq!(seen, (true, 400, 0, true, 400, 0));
    }
}

/// Slow start (`round_robin_lb_config.slow_start_config`, Istio's `warmupDurationSecs`):
/// a host EDS adds ramps up from `min_weight_percent` over the window (linear with
/// aggression 1), then takes its full share; same shares as Envoy 1.40 within sampling
/// bounds.
#[test]
fn slow_start_ramps_new_hosts_up_like_envoy() {
    use e2e::xds::resources::{ads_bootstrap, assignment, seed_http_service};
    use e2e::xds::{ControlPlane, CLUSTER, ENDPOINT};
    if e2e::proxy::envoy_bin().is_none() {
        return;
    }
    let (old, new) = (Upstream::http("old"), Upstream::http("new"));
    let mut seen = Vec::new();
    for kind in [Kind::Envoy, Kind::Meshproxy] {
        let port = free_port();
        let cp = ControlPlane::tcp();
        seed_http_service(&cp, port, old.port);
        let mut c = e2e::xds::resources::eds_cluster("backend");
        c["round_robin_lb_config"] = json!({"slow_start_config": {"slow_start_window": "5s"}});
        cp.set_json(CLUSTER, "backend", c);
        let _proxy = Proxy::start(kind, &ads_bootstrap(&cp, true, vec![]), &[]);
        // The first host's own window passes before the second arrives.
        std::thread::sleep(std::time::Duration::from_millis(5500));
        cp.set_json(
            ENDPOINT,
            "backend",
            assignment("backend", &[old.port, new.port]),
        );
        cp.push(ENDPOINT);
        e2e::wait_until(10, "the new host", || {
            let before = new.count();
            curl::get(port, "/", &[]);
            new.count() > before
        });
        // In its first second or so the new host weighs 1/5 of the old one: ~17 %.
        let share = |n: usize| {
            let before = new.count();
            for _ in 0..n {
                curl::get(port, "/", &[]);
            }
            (new.count() - before) * 100 / n
        };
        let ramping = share(60);
        std::thread::sleep(std::time::Duration::from_millis(5000));
        let full = share(100);
        seen.push(((5..=35).contains(&ramping), (40..=60).contains(&full)));
    }
    assert_eq!(
        seen[0], seen[1],
        "envoy (left) and meshproxy (right) differ"
    );
    assert_eq!(seen[0], (true, true));
}

/// Circuit breakers against Envoy 1.40: five concurrent requests to a slow upstream under
/// `max_connections`/`max_pending_requests` of 1 (one served, one queued, three 503 UO),
/// under `max_requests` of 1 (one served, `upstream_rq_active_overflow`, and only the
/// served request in `upstream_rq_total`), and a retry refused by `max_retries` of 0;
/// same statuses and overflow stats.
#[test]
fn circuit_breakers_overflow_like_envoy() {
    let (slow, failing) = (Upstream::http("slow"), Upstream::http("failing"));
    let cfg = |port: u16| {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/pending"}, "route": {"cluster": "pending"}},
            {"match": {"prefix": "/requests"}, "route": {"cluster": "requests"}},
            {"match": {"prefix": "/retries"}, "route": {"cluster": "retries",
                "retry_policy": {"retry_on": "5xx", "num_retries": 2}}}]}]);
        let breakers = |t: Value| json!({"circuit_breakers": {"thresholds": [t]}});
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![
                cluster(
                    "pending",
                    &[slow.port],
                    breakers(json!({"max_connections": 1, "max_pending_requests": 1})),
                ),
                cluster(
                    "requests",
                    &[slow.port],
                    breakers(json!({"max_requests": 1})),
                ),
                cluster(
                    "retries",
                    &[failing.port],
                    breakers(json!({"max_retries": 0})),
                ),
            ],
        )
    };
    let envoy = e2e::proxy::agree_with_envoy(cfg, |p, port| {
        slow.set(Behavior {
            delay_ms: 800,
            ..Default::default()
        });
        failing.set(Behavior {
            status: 503,
            ..Default::default()
        });
        // The first request gets the connection, the second (100 ms later) waits for
        // it, the last three come while both are in progress.
        let burst = |path: &'static str| {
            let handles: Vec<_> = (0..5)
                .map(|i| {
                    if i < 3 {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    std::thread::spawn(move || curl::get(port, path, &[]).status)
                })
                .collect();
            let mut statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            statuses.sort();
            statuses
        };
        let stat = |s: &str| p.stat(s).unwrap_or(-1);
        let pending = (
            burst("/pending"),
            stat("cluster.pending.upstream_rq_pending_overflow"),
        );
        let requests = (
            burst("/requests"),
            stat("cluster.requests.upstream_rq_active_overflow"),
            stat("cluster.requests.upstream_rq_total"),
        );
        let before = failing.count();
        let retries = (
            curl::get(port, "/retries", &[]).status,
            failing.count() - before,
            stat("cluster.retries.upstream_rq_retry_overflow"),
        );
        (pending, requests, retries)
    });
    if let Some(seen) = envoy {
        assert_eq!(
            seen,
            (
                (vec![200, 200, 503, 503, 503], 3),
                (vec![200, 503, 503, 503, 503], 4, 1),
                (503, 1, 1)
            )
        );
    }
}

/// Connection-pool settings as Envoy 1.40 applies them: an upstream HTTP/1.1 connection
/// idle past `idle_timeout` is closed (`upstream_cx_idle_timeout`) and the next request
/// opens a new one; a host that never completes the handshake fails the request after
/// `connect_timeout` (503, `upstream_cx_connect_timeout`).
#[test]
fn idle_and_connect_timeouts_like_envoy() {
    let up = Upstream::http("up");
    // A listener whose accept queue is full: further handshakes get no answer.
    let stuck = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    stuck
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    stuck.listen(0).unwrap();
    let stuck_addr = stuck.local_addr().unwrap().as_socket().unwrap();
    let _fillers: Vec<_> = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&stuck_addr, std::time::Duration::from_millis(200))
                .ok()
        })
        .collect();
    let cfg = |port: u16| {
        let idle = json!({"typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": {"idle_timeout": "0.5s"},
            "explicit_http_config": {"http_protocol_options": {}}}}});
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/stuck"}, "route": {"cluster": "stuck"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "idle"}}]}]);
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![
                cluster("idle", &[up.port], idle),
                cluster(
                    "stuck",
                    &[stuck_addr.port()],
                    json!({"connect_timeout": "0.3s"}),
                ),
            ],
        )
    };
    let envoy = e2e::proxy::agree_with_envoy(cfg, |p, port| {
        let stat = |s: &str| p.stat(s).unwrap_or(-1);
        let before = up.connections();
        curl::get(port, "/", &[]);
        std::thread::sleep(std::time::Duration::from_millis(1200));
        let closed = (
            stat("cluster.idle.upstream_cx_idle_timeout"),
            stat("cluster.idle.upstream_cx_active"),
        );
        curl::get(port, "/", &[]);
        let reconnected = up.connections() - before;
        let r = curl::get(port, "/stuck", &[]);
        (
            closed,
            reconnected,
            r.status,
            r.text(),
            stat("cluster.stuck.upstream_cx_connect_timeout"),
        )
    });
    if let Some(seen) = envoy {
        assert_eq!(seen.0, (1, 0));
        assert_eq!((seen.1, seen.2, seen.4), (2, 503, 1));
        assert!(
            seen.3.ends_with("reset reason: connection timeout"),
            "{}",
            seen.3
        );
    }
}

/// Zone-aware routing against `cluster_manager.local_cluster_name` from a proxy in zone
/// a, where the local service runs 3 of its 4 hosts: an upstream with 5 of 6 hosts in
/// zone a takes everything there; one split 3/3 keeps two thirds in zone a and sends the
/// rest to b; one with only 4 hosts (under `min_cluster_size`) ignores zones. Same as
/// Envoy 1.40 within sampling bounds, with the same `lb_zone_*` stats.
#[test]
fn zone_aware_routing_matches_envoy() {
    let a: Vec<Upstream> = (0..5).map(|i| Upstream::http(&format!("a{i}"))).collect();
    let b: Vec<Upstream> = (0..3).map(|i| Upstream::http(&format!("b{i}"))).collect();
    let zoned = |name: &str, a_ports: &[u16], b_ports: &[u16]| {
        let eps = |ports: &[u16]| {
            ports
                .iter()
                .map(|p| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}))
                .collect::<Vec<_>>()
        };
        let mut c = cluster(name, &[], json!({}));
        c["load_assignment"]["endpoints"] = json!([
            {"locality": {"region": "r", "zone": "a"}, "lb_endpoints": eps(a_ports)},
            {"locality": {"region": "r", "zone": "b"}, "lb_endpoints": eps(b_ports)}]);
        c
    };
    let ports = |ups: &[Upstream], n: usize| ups.iter().take(n).map(|u| u.port).collect::<Vec<_>>();
    let cfg = |port: u16| {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/direct"}, "route": {"cluster": "direct"}},
            {"match": {"prefix": "/residual"}, "route": {"cluster": "residual"}},
            {"match": {"prefix": "/small"}, "route": {"cluster": "small"}}]}]);
        e2e::config::bootstrap_with(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![
                zoned("local", &[1, 2, 3], &[4]),
                zoned("direct", &ports(&a, 5), &ports(&b, 1)),
                zoned("residual", &ports(&a, 3), &ports(&b, 3)),
                zoned("small", &ports(&a, 2), &ports(&b, 2)),
            ],
            json!({"cluster_manager": {"local_cluster_name": "local"},
                "node": {"id": "n", "cluster": "c", "locality": {"region": "r", "zone": "a"}}}),
        )
    };
    let to_a = |port: u16, path: &str, n: usize| {
        let count = |ups: &[Upstream]| ups.iter().map(|u| u.count()).sum::<usize>();
        let before = count(&a);
        for _ in 0..n {
            curl::get(port, path, &[]);
        }
        (count(&a) - before) * 100 / n
    };
    let envoy = e2e::proxy::agree_with_envoy(cfg, |p, port| {
        let stat = |c: &str, s: &str| p.stat(&format!("cluster.{c}.{s}")).unwrap_or(-1);
        (
            to_a(port, "/direct", 60),
            (55..=78).contains(&to_a(port, "/residual", 300)),
            (35..=65).contains(&to_a(port, "/small", 200)),
            stat("direct", "lb_zone_routing_all_directly") > 0,
            stat("residual", "lb_zone_routing_sampled") > 0,
            stat("residual", "lb_zone_routing_cross_zone") > 0,
            stat("small", "lb_zone_cluster_too_small") > 0,
        )
    });
    if let Some(seen) = envoy {
        assert_eq!(seen, (100, true, true, true, true, true, true));
    }
}
