//! The CORS filter as Istio installs it on every HTTP listener (no `CorsPolicy`
//! anywhere): requests, preflights included, pass through untouched in Envoy 1.40 and
//! meshproxy alike; a route `CorsPolicy`, which meshproxy does not implement, is refused
//! with its path.

use e2e::config::{bootstrap, cluster, hcm_with_filters, listener};
use e2e::proxy::agree_with_envoy;
use e2e::upstream::{Behavior, Upstream};
use serde_json::{json, Value};

/// Istio's CORS filter entry.
fn cors() -> Value {
    json!({"name": "envoy.filters.http.cors", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}})
}

#[test]
fn cors_without_a_policy_passes_requests_like_envoy() {
    let up = Upstream::http("app");
    let cfg = |port: u16| {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]);
        bootstrap(
            vec![listener(
                "l",
                port,
                hcm_with_filters(vh, vec![cors()], json!({})),
                json!({}),
            )],
            vec![cluster("app", &[up.port], json!({}))],
        )
    };
    let got = agree_with_envoy(cfg, |_, port| {
        up.set(Behavior::default());
        let origin = ["-H", "origin: https://example.com"];
        let plain = e2e::curl::get(port, "/", &origin);
        let before = up.count();
        let preflight = e2e::curl::get(
            port,
            "/",
            &[
                "-X",
                "OPTIONS",
                "-H",
                "origin: https://example.com",
                "-H",
                "access-control-request-method: PUT",
            ],
        );
        (
            plain.status,
            plain
                .header("access-control-allow-origin")
                .map(str::to_string),
            preflight.status,
            up.count() - before,
        )
    });
    assert_eq!(got, Some((200, None, 200, 1)), "Envoy 1.40 is required");
}

#[test]
fn a_cors_policy_is_refused_by_path() {
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "app"},
         "typed_per_filter_config": {"envoy.filters.http.cors": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "allow_origin_string_match": [{"exact": "https://example.com"}]}}}]}]);
    let config = bootstrap(
        vec![listener(
            "l",
            1,
            hcm_with_filters(vh, vec![cors()], json!({})),
            json!({}),
        )],
        vec![cluster("app", &[2], json!({}))],
    )
    .replace("{ADMIN}", "0");
    let (code, _, err) =
        e2e::proxy::run_meshproxy(&["--mode", "validate", "--config-yaml", &config]);
    assert_ne!(code, 0);
    assert!(
        err.contains("typed_per_filter_config") && err.contains("CorsPolicy"),
        "{err}"
    );
}
