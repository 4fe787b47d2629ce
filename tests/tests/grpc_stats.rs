//! `envoy.filters.http.grpc_stats` as Istio configures it (`emit_filter_state`, no
//! per-method names) in Envoy 1.40 and meshproxy: a gRPC call of two request messages
//! answered with three and `grpc-status: 0`, and one answered `grpc-status: 13`; the
//! cluster's `grpc.` stats must agree.

use e2e::config::{bootstrap, cluster, h2_upstream, hcm_with_filters, listener, merge};
use e2e::proxy::agree_with_envoy;
use e2e::upstream::{Behavior, Upstream};
use serde_json::json;

/// gRPC messages (flag byte, big-endian length, payload) of the given sizes.
fn messages(sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    for &n in sizes {
        out.push(0);
        out.extend_from_slice(&(n as u32).to_be_bytes());
        out.extend(std::iter::repeat_n(b'x', n));
    }
    out
}

#[test]
fn grpc_call_stats_match_envoy() {
    let up = Upstream::http("grpc");
    let request = e2e::scratch("grpc-stats").join("request.bin");
    std::fs::write(&request, messages(&[3, 700])).unwrap();
    let data = format!("@{}", request.display());
    let cfg = |port: u16| {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]);
        let filters = vec![
            json!({"name": "envoy.filters.http.grpc_stats", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            "emit_filter_state": true, "stats_for_all_methods": false}}),
        ];
        let mut c = cluster("app", &[up.port], json!({}));
        merge(&mut c, h2_upstream());
        bootstrap(
            vec![listener(
                "l",
                port,
                hcm_with_filters(vh, filters, json!({})),
                json!({}),
            )],
            vec![c],
        )
    };
    let got = agree_with_envoy(cfg, |proxy, port| {
        let call = |status: &str| {
            up.set(Behavior {
                body: Some(String::from_utf8(messages(&[1, 2, 100])).unwrap()),
                headers: vec![("content-type".into(), "application/grpc".into())],
                trailers: vec![("grpc-status".into(), status.into())],
                ..Behavior::default()
            });
            e2e::curl::get(
                port,
                "/pkg.Svc/Call",
                &[
                    "--http2-prior-knowledge",
                    "-H",
                    "content-type: application/grpc",
                    "-H",
                    "te: trailers",
                    "--data-binary",
                    &data,
                ],
            )
            .status
        };
        let stat = |s: &str| proxy.stat(&format!("cluster.app.grpc.{s}"));
        let snapshot = || {
            // The stats are charged as the call ends; give it a moment.
            for _ in 0..50 {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            [
                "total",
                "success",
                "failure",
                "request_message_count",
                "response_message_count",
            ]
            .map(&stat)
        };
        let first = (call("0"), snapshot());
        let second = (call("13"), snapshot());
        (first, second)
    });
    let charged = |t, s, f, rq, rs| [Some(t), Some(s), f, Some(rq), Some(rs)];
    assert_eq!(
        got,
        Some((
            (200, charged(1, 1, None, 2, 3)),
            (200, charged(2, 1, Some(1), 4, 6))
        )),
        "Envoy 1.40 is required"
    );
}
