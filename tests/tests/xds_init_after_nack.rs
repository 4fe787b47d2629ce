//! Startup past rejected resources over ADS, side by side with Envoy 1.40: with
//! `initial_fetch_timeout: 0s` (pilot-agent's setting) a proxy waits for every cluster's
//! first assignment and every listener's routes, discovered filter configs and secrets,
//! but a rejected assignment, route configuration, filter config or secret ends that wait
//! as an accepted one does. The server turns LIVE; the listener whose routes were
//! rejected answers 404 (no routes), the cluster whose assignment was rejected has no
//! hosts (503), the filter whose config was rejected answers 500 (no config, no default),
//! the listener whose certificate was rejected fails its handshakes.

use e2e::curl;
use e2e::proxy::{same_in_both, Kind, Proxy};
use e2e::xds::resources::*;
use e2e::xds::{ControlPlane, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use serde_json::{json, Value};

/// Discovered filter configs.
const EXTENSION: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// An ADS config source that waits until its resource is answered.
fn wait_forever() -> Value {
    json!({"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"})
}

/// A listener `name` on `port` routing everything to `backend` with inline routes (a
/// response carrying a rejected route configuration is all rejected by Envoy, good ones
/// beside it included, so the cluster is reached without RDS).
fn inline_listener(name: &str, port: u16) -> Value {
    let mut l = rds_listener(name, port, "unused");
    let hcm = &mut l["filter_chains"][0]["filters"][0]["typed_config"];
    hcm.as_object_mut().unwrap().remove("rds");
    hcm["route_config"] = route_config("inline", "backend", "v1");
    l
}

/// Whether the server turned LIVE, the types it NACKed, then what a request to the
/// listener with rejected routes, one to the cluster with a rejected assignment, one
/// through the filter with a rejected config and one over TLS with a rejected certificate
/// got (0: no response).
fn startup_past_rejections(kind: Kind, delta: bool) -> (bool, Vec<String>, [u16; 4]) {
    let cp = ControlPlane::tcp();
    let ports = [0; 4].map(|_| e2e::free_port());
    // The cluster's assignment has a weight of 0.
    let mut cluster = eds_cluster("backend");
    cluster["eds_cluster_config"]["eds_config"] = wait_forever();
    cp.set_json(CLUSTER, "backend", cluster);
    let mut bad_assignment = assignment("backend", &[e2e::free_port()]);
    bad_assignment["endpoints"][0]["lb_endpoints"][0]["load_balancing_weight"] = json!(0);
    cp.set_json(ENDPOINT, "backend", bad_assignment);
    // A listener whose routes have a direct response status out of range.
    let mut rejected = rds_listener("rejected", ports[0], "bad-routes");
    rejected["filter_chains"][0]["filters"][0]["typed_config"]["rds"]["config_source"] =
        wait_forever();
    cp.set_json(LISTENER, "rejected", rejected);
    let mut bad_routes = route_config("bad-routes", "backend", "v1");
    bad_routes["virtual_hosts"][0]["routes"][0] =
        json!({"match": {"prefix": "/"}, "direct_response": {"status": 99}});
    cp.set_json(ROUTE, "bad-routes", bad_routes);
    cp.set_json(LISTENER, "served", inline_listener("served", ports[1]));
    // A fault filter discovered over ADS, whose config is of a type it does not accept.
    let mut filtered = inline_listener("filtered", ports[2]);
    filtered["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"] = json!([
        {"name": "fault", "config_discovery": {"config_source": wait_forever(),
            "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"]}},
        e2e::config::router()[0].clone()]);
    cp.set_json(LISTENER, "filtered", filtered);
    cp.set_json(
        EXTENSION,
        "fault",
        json!({"name": "fault", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}}),
    );
    // A TLS listener whose certificate comes over ADS and does not parse.
    let mut tls = inline_listener("tls", ports[3]);
    tls["filter_chains"][0]["transport_socket"] = json!({"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {"tls_certificate_sds_secret_configs": [
            {"name": "cred", "sds_config": wait_forever()}]}}});
    cp.set_json(LISTENER, "tls", tls);
    cp.set_json(
        SECRET,
        "cred",
        json!({"name": "cred", "tls_certificate": {
            "certificate_chain": {"inline_string": "not a certificate"},
            "private_key": {"inline_string": "not a key"}}}),
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
    let nacked: std::collections::BTreeSet<String> = cp
        .requests()
        .iter()
        .filter(|r| r.is_nack())
        .filter_map(|r| r.type_url.rsplit('.').next().map(str::to_string))
        .collect();
    let status = |port| curl::get(port, "/", &[]).status;
    (
        live(),
        nacked.into_iter().collect(),
        [
            status(ports[0]),
            status(ports[1]),
            status(ports[2]),
            curl::get_tls(ports[3], "/", &["-k"]).status,
        ],
    )
}

#[test]
fn rejected_resources_end_the_initial_fetch_like_envoy() {
    for delta in [false, true] {
        if let Some(seen) = same_in_both(|kind| startup_past_rejections(kind, delta)) {
            let nacked = [
                "ClusterLoadAssignment",
                "RouteConfiguration",
                "Secret",
                "TypedExtensionConfig",
            ]
            .map(String::from);
            assert_eq!(
                seen,
                (true, nacked.to_vec(), [404, 503, 500, 0]),
                "delta {delta}"
            );
        }
    }
}
