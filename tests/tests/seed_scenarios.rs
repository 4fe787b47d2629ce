//! Issue 8's seed scenarios as istiod renders them, through Envoy 1.40 and meshproxy: a
//! 50/50 canary (`weighted_clusters`) and a fixed 5 s delay at 100% (the fault filter),
//! which must show in the median latency.

use e2e::config::{bootstrap, cluster, hcm, listener, router};
use e2e::curl;
use e2e::proxy::agree_with_envoy;
use e2e::upstream::Upstream;
use serde_json::json;
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
        for _ in 0..200 {
            assert_eq!(curl::get(port, "/", &[]).status, 200);
        }
        // 200 fair coin flips land in 70..=130 with probability > 0.99999.
        let to_v1 = v1.count() - before;
        let split_is_even = (70..=130).contains(&to_v1);
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
