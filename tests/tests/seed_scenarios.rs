//! Issue 8's seed scenarios as istiod renders them, through Envoy 1.40 and meshproxy: a
//! 50/50 canary (`weighted_clusters`), a fixed 5 s delay at 100% (the fault filter),
//! which must show in the median latency, and locality failover driven by outlier
//! detection, with recovery.

use e2e::config::{bootstrap, cluster, hcm, listener, router};
use e2e::curl;
use e2e::proxy::agree_with_envoy;
use e2e::upstream::{Behavior, Upstream};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[test]
fn canary_splits_half_and_half_and_a_fixed_delay_shows_in_the_median() {
    let (v1, v2) = (Upstream::http("v1"), Upstream::http("v2"));
    let cfg = |port: u16| {
        let canary = json!({"weighted_clusters": {"clusters": [
            {"name": "outbound|80|v1|reviews.default.svc.cluster.local", "weight": 50},
            {"name": "outbound|80|v2|reviews.default.svc.cluster.local", "weight": 50}]}});
        let vh = json!([{"name": "reviews.default.svc.cluster.local:80", "domains": ["*"], "routes": [
            {"match": {"prefix": "/delayed"}, "route": {"cluster": "outbound|80|v1|reviews.default.svc.cluster.local"},
                "typed_per_filter_config": {"envoy.filters.http.fault": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                    "delay": {"fixed_delay": "5s", "percentage": {"numerator": 1000000, "denominator": "MILLION"}}}}},
            {"match": {"prefix": "/"}, "route": canary}]}]);
        let mut chain = vec![json!({"name": "envoy.filters.http.fault", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}})];
        chain.extend(router().as_array().cloned().unwrap_or_default());
        let filters = json!({"http_filters": chain});
        bootstrap(
            vec![listener("l", port, hcm(vh, filters), json!({}))],
            vec![
                cluster(
                    "outbound|80|v1|reviews.default.svc.cluster.local",
                    &[v1.port],
                    json!({}),
                ),
                cluster(
                    "outbound|80|v2|reviews.default.svc.cluster.local",
                    &[v2.port],
                    json!({}),
                ),
            ],
        )
    };
    let envoy = agree_with_envoy(cfg, |_, port| {
        let before = v1.count();
        for _ in 0..1000 {
            assert_eq!(curl::get(port, "/", &[]).status, 200);
        }
        // The bound: within 5 % of half over 1,000 requests (3.2 standard
        // deviations of a fair split).
        let to_v1 = v1.count() - before;
        let split_is_even = (450..=550).contains(&to_v1);
        let delayed: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(move || {
                    let started = Instant::now();
                    (curl::get(port, "/delayed", &[]).status, started.elapsed())
                })
            })
            .collect();
        let mut waits: Vec<Duration> = delayed
            .into_iter()
            .map(|h| {
                let (status, waited) = h.join().unwrap();
                assert_eq!(status, 200);
                waited
            })
            .collect();
        waits.sort();
        (split_is_even, waits[1] >= Duration::from_secs(5))
    });
    if let Some(seen) = envoy {
        assert_eq!(seen, (true, true), "envoy: even split, 5 s median");
    }
}

/// A cluster as istiod renders a DestinationRule with `localityLbSetting` and
/// `outlierDetection {consecutiveErrors, interval, baseEjectionTime, maxEjectionPercent}`
/// for a proxy in the local zone: the local endpoint at priority 0, the remote one at
/// priority 1, gateway errors (only) ejecting, panic disabled.
fn locality_cluster(name: &str, local: u16, remote: u16, interval: &str, base: &str) -> Value {
    let endpoint = |p: u16| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}});
    cluster(
        name,
        &[],
        json!({
            "load_assignment": {"cluster_name": name, "endpoints": [
                {"locality": {"region": "us-east", "zone": "us-east-1a"}, "priority": 0, "lb_endpoints": [endpoint(local)]},
                {"locality": {"region": "us-west", "zone": "us-west-1a"}, "priority": 1, "lb_endpoints": [endpoint(remote)]}]},
            "common_lb_config": {"healthy_panic_threshold": {}},
            "outlier_detection": {"consecutive_gateway_failure": 5, "enforcing_consecutive_gateway_failure": 100,
                "enforcing_consecutive_5xx": 0, "interval": interval, "base_ejection_time": base,
                "max_ejection_percent": 100}}),
    )
}

/// Locality failover: a client reaches only the local endpoint until it fails
/// (`consecutiveErrors: 5`, `interval: 2m`, `baseEjectionTime: 5m`: five 503s, then
/// everything goes to the remote locality), and, with times short enough to wait for,
/// comes back to the local endpoint once it is returned to service.
#[test]
fn locality_failover_and_recovery() {
    let ups: Vec<Upstream> = ["local", "remote", "local2", "remote2"]
        .iter()
        .map(|n| Upstream::http(n))
        .collect();
    let cfg = |port: u16| {
        let vh = json!([{"name": "reviews", "domains": ["*"], "routes": [
            {"match": {"prefix": "/short"}, "route": {"cluster": "short"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "outbound|9080||reviews.default.svc.cluster.local"}}]}]);
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![
                locality_cluster(
                    "outbound|9080||reviews.default.svc.cluster.local",
                    ups[0].port,
                    ups[1].port,
                    "120s",
                    "300s",
                ),
                locality_cluster("short", ups[2].port, ups[3].port, "1s", "2s"),
            ],
        )
    };
    // Requests to `path`, with how many each upstream got.
    let run = |port: u16, path: &str, n: usize| {
        let before: Vec<usize> = ups.iter().map(|u| u.count()).collect();
        let ok = (0..n)
            .filter(|_| {
                let ok = curl::get(port, path, &[]).status == 200;
                std::thread::sleep(Duration::from_millis(10));
                ok
            })
            .count();
        let got: Vec<usize> = ups.iter().zip(before).map(|(u, b)| u.count() - b).collect();
        (ok, got)
    };
    let envoy = agree_with_envoy(cfg, |_, port| {
        for u in &ups {
            u.set(Behavior::default());
        }
        let healthy = (run(port, "/", 10), run(port, "/short", 10));
        ups[0].set(Behavior {
            status: 503,
            ..Default::default()
        });
        ups[2].set(Behavior {
            status: 503,
            ..Default::default()
        });
        let failing = (run(port, "/", 20), run(port, "/short", 20));
        // The local endpoints recover; only the short ejection (2 s, returned at a 1 s
        // sweep) is over after 3.5 s.
        ups[0].set(Behavior::default());
        ups[2].set(Behavior::default());
        std::thread::sleep(Duration::from_millis(3500));
        let recovered = (run(port, "/", 10), run(port, "/short", 10));
        (healthy, failing, recovered)
    });
    if let Some((healthy, failing, recovered)) = envoy {
        assert_eq!(
            healthy,
            ((10, vec![10, 0, 0, 0]), (10, vec![0, 0, 10, 0])),
            "all local"
        );
        assert_eq!(
            failing,
            ((15, vec![5, 15, 0, 0]), (15, vec![0, 0, 5, 15])),
            "five 503s, then remote"
        );
        assert_eq!(
            recovered,
            ((10, vec![0, 10, 0, 0]), (10, vec![0, 0, 10, 0])),
            "short ejection over"
        );
    }
}
