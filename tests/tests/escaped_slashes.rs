//! `path_with_escaped_slashes_action` and the UUID `request_id_extension` as istiod sets
//! them, in Envoy 1.40 and meshproxy: for each action, what the client gets (status,
//! `location`) and what path the upstream sees for paths with `%2F` and `%5C`, including
//! a gRPC request under UNESCAPE_AND_REDIRECT (gRPC cannot follow redirects).

use e2e::config::{bootstrap, cluster, hcm, listener};
use e2e::proxy::agree_with_envoy;
use e2e::upstream::{Behavior, Upstream};
use serde_json::json;

#[test]
fn escaped_slashes_are_handled_like_envoy() {
    let up = Upstream::http("app");
    for action in [
        "KEEP_UNCHANGED",
        "REJECT_REQUEST",
        "UNESCAPE_AND_REDIRECT",
        "UNESCAPE_AND_FORWARD",
    ] {
        let cfg = |port: u16| {
            let vh = json!([{"name": "v", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]);
            let extra = json!({
                "path_with_escaped_slashes_action": action,
                "normalize_path": true,
                "request_id_extension": {"typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
                    "use_request_id_for_trace_sampling": true}}});
            bootstrap(
                vec![listener("l", port, hcm(vh, extra), json!({}))],
                vec![cluster("app", &[up.port], json!({}))],
            )
        };
        let got = agree_with_envoy(cfg, |_, port| {
            up.set(Behavior::default());
            ["/a%2Fb", "/a%5cb/../c?q=%2F", "/plain"]
                .iter()
                .map(|p| {
                    let before = up.count();
                    let r = e2e::curl::get(port, p, &["--path-as-is"]);
                    let seen = (up.count() > before).then(|| up.last().unwrap().path);
                    (r.status, r.header("location").map(str::to_string), seen)
                })
                .chain(std::iter::once({
                    let r =
                        e2e::curl::get(port, "/g%2Fx", &["-H", "content-type: application/grpc"]);
                    (r.status, r.header("grpc-status").map(str::to_string), None)
                }))
                .collect::<Vec<_>>()
        });
        let got = got.expect("Envoy 1.40 is required");
        eprintln!("{action}: {got:?}");
        assert_eq!(got[2].0, 200, "{action}: a plain path passes");
    }
}
