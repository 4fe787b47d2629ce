//! Startup past rejected resources over ADS, side by side with Envoy 1.40: with
//! `initial_fetch_timeout: 0s` (pilot-agent's setting) a proxy waits for every cluster's
//! first assignment and every listener's routes and discovered filter configs, but a
//! rejected assignment, route configuration or filter config ends that wait as an
//! accepted one does. The server turns LIVE; the listener whose routes were rejected
//! answers 404 (no routes), the cluster whose assignment was rejected has no hosts (503),
//! the filter whose config was rejected answers 500 (no config, no default).

use e2e::curl;
use e2e::proxy::{same_in_both, Kind, Proxy};
use e2e::xds::resources::*;
use e2e::xds::{ControlPlane, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use serde_json::json;

/// Discovered filter configs.
const EXTENSION: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// Whether the server turned LIVE, the types it NACKed, then what a request to the
/// listener with rejected routes, one to the cluster with a rejected assignment, and one
/// through the filter with a rejected config got.
fn startup_past_rejections(kind: Kind, delta: bool) -> (bool, Vec<String>, [u16; 3]) {
    let cp = ControlPlane::tcp();
    let wait_forever = json!("0s");
    let mut cluster = eds_cluster("backend");
    cluster["eds_cluster_config"]["eds_config"]["initial_fetch_timeout"] = wait_forever.clone();
    cp.set_json(CLUSTER, "backend", cluster);
    let mut bad_assignment = assignment("backend", &[e2e::free_port()]);
    bad_assignment["endpoints"][0]["lb_endpoints"][0]["load_balancing_weight"] = json!(0);
    cp.set_json(ENDPOINT, "backend", bad_assignment);
    let (rejected_port, served_port) = (e2e::free_port(), e2e::free_port());
    let mut rejected = rds_listener("rejected", rejected_port, "bad-routes");
    let hcm = &mut rejected["filter_chains"][0]["filters"][0]["typed_config"];
    hcm["rds"]["config_source"]["initial_fetch_timeout"] = wait_forever;
    cp.set_json(LISTENER, "rejected", rejected);
    let mut bad_routes = route_config("bad-routes", "backend", "v1");
    bad_routes["virtual_hosts"][0]["routes"][0] =
        json!({"match": {"prefix": "/"}, "direct_response": {"status": 99}});
    cp.set_json(ROUTE, "bad-routes", bad_routes);
    // The cluster is reached through inline routes: a response carrying a rejected
    // route configuration is all rejected by Envoy, good ones beside it included.
    let mut served = rds_listener("served", served_port, "unused");
    let hcm = &mut served["filter_chains"][0]["filters"][0]["typed_config"];
    hcm.as_object_mut().unwrap().remove("rds");
    hcm["route_config"] = route_config("inline", "backend", "v1");
    cp.set_json(LISTENER, "served", served.clone());
    // The same routes behind a fault filter discovered over ADS, whose config is of a
    // type the filter does not accept.
    let filtered_port = e2e::free_port();
    let mut filtered = served;
    filtered["name"] = json!("filtered");
    filtered["address"]["socket_address"]["port_value"] = json!(filtered_port);
    let hcm = &mut filtered["filter_chains"][0]["filters"][0]["typed_config"];
    hcm["http_filters"] = json!([{"name": "fault", "config_discovery": {
        "config_source": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
        "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"]}},
        e2e::config::router()[0].clone()]);
    cp.set_json(LISTENER, "filtered", filtered);
    cp.set_json(
        EXTENSION,
        "fault",
        json!({"name": "fault", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}}),
    );
    let proxy = Proxy::spawn(kind, &ads_bootstrap(&cp, delta, vec![]), &[]);
    let live = || {
        proxy
            .admin_get("/ready")
            .is_some_and(|(s, b)| s == 200 && b.trim() == "LIVE")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !live() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let nacked: Vec<String> = cp
        .requests()
        .iter()
        .filter(|r| r.is_nack())
        .map(|r| {
            r.type_url
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let status = |port| curl::get(port, "/", &[]).status;
    (
        live(),
        nacked,
        [rejected_port, served_port, filtered_port].map(status),
    )
}

#[test]
fn rejected_assignment_routes_and_filter_config_end_the_initial_fetch_like_envoy() {
    for delta in [false, true] {
        if let Some(seen) = same_in_both(|kind| startup_past_rejections(kind, delta)) {
            let nacked = [
                "ClusterLoadAssignment",
                "RouteConfiguration",
                "TypedExtensionConfig",
            ]
            .map(String::from);
            assert_eq!(
                seen,
                (true, nacked.to_vec(), [404, 503, 500]),
                "delta {delta}"
            );
        }
    }
}
