//! Local replies to gRPC requests: Envoy answers them trailers-only (HTTP 200) with a
//! `grpc-status` mapped from the HTTP status and the body as `grpc-message`. Compared
//! between Envoy 1.40 and meshproxy for connect failures, no route, fault aborts and
//! direct responses.

use e2e::config::{bootstrap, cluster, hcm, listener, router};
use e2e::proxy::{envoy_bin, Kind, Proxy};
use e2e::{curl, free_port};
use serde_json::json;

fn config(port: u16, dead: u16) -> String {
    let abort = json!({"envoy.filters.http.fault": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "abort": {"http_status": 403, "percentage": {"numerator": 100}}}});
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/dead"}, "route": {"cluster": "dead"}},
        {"match": {"prefix": "/abort"}, "route": {"cluster": "dead"}, "typed_per_filter_config": abort},
        {"match": {"prefix": "/direct"}, "direct_response": {"status": 503, "body": {"inline_string": "down for maintenance"}}}
    ]}]);
    let mut filters = vec![json!({"name": "envoy.filters.http.fault", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}})];
    filters.extend(router().as_array().unwrap().iter().cloned());
    bootstrap(
        vec![listener(
            "l",
            port,
            hcm(vh, json!({"http_filters": filters})),
            json!({}),
        )],
        vec![cluster("dead", &[dead], json!({}))],
    )
}

#[test]
fn grpc_local_replies_match_envoy() {
    if envoy_bin().is_none() {
        return;
    }
    let dead = free_port();
    let (ep, mp) = (free_port(), free_port());
    let _envoy = Proxy::start(Kind::Envoy, &config(ep, dead), &[]);
    let _mesh = Proxy::start(Kind::Meshproxy, &config(mp, dead), &[]);
    let grpc = [
        "--http2-prior-knowledge",
        "-X",
        "POST",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
    ];
    let mut failures = Vec::new();
    for path in ["/dead", "/nothing", "/abort", "/direct"] {
        let seen = |port: u16| {
            let r = curl::get(port, path, &grpc);
            (
                r.status,
                r.header("grpc-status").map(str::to_string),
                r.header("grpc-message").map(str::to_string),
                r.header("content-type").map(str::to_string),
            )
        };
        let (e, m) = (seen(ep), seen(mp));
        if e != m {
            failures.push(format!("{path}: envoy={e:?} meshproxy={m:?}"));
        }
        if path == "/dead" && m.1.as_deref() != Some("14") {
            failures.push(format!("{path}: meshproxy={m:?}, want grpc-status 14"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
