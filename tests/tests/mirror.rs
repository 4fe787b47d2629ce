//! Request mirroring differential tests: routes with `request_mirror_policies` in Envoy
//! 1.40 and meshproxy, comparing what the mirror upstream receives (host with `-shadow`,
//! path, method, body, headers) and that the client's exchange never depends on it.

use e2e::config::{bootstrap, cluster, hcm, listener};
use e2e::curl;
use e2e::proxy::agree_with_envoy;
use e2e::upstream::{Behavior, Upstream};
use serde_json::json;
use std::time::Duration;

/// What the mirror upstream saw of one request: method, path, host, body, a header the
/// route added.
type Seen = (String, String, Option<String>, String, Option<String>);

#[test]
fn mirrors_copy_requests_like_envoy() {
    let (main, shadow) = (Upstream::http("main"), Upstream::http("shadow"));
    let cfg = |port: u16| {
        let mirror = |policy: serde_json::Value| {
            let mut p = json!({"cluster": "shadow"});
            e2e::config::merge(&mut p, policy);
            p
        };
        let route = |prefix: &str, policies: Vec<serde_json::Value>| {
            json!({"match": {"prefix": prefix}, "route": {"cluster": "main", "request_mirror_policies": policies},
                "request_headers_to_add": [{"header": {"key": "x-route", "value": "r"}}]})
        };
        let mut rewritten = route("/rewritten", vec![mirror(json!({}))]);
        rewritten["route"]["prefix_rewrite"] = json!("/inner");
        let routes = vec![
            route("/all", vec![mirror(json!({}))]),
            route(
                "/never",
                vec![mirror(
                    json!({"runtime_fraction": {"default_value": {"numerator": 0}}}),
                )],
            ),
            route(
                "/tenth",
                vec![mirror(
                    json!({"runtime_fraction": {"default_value": {"numerator": 10}}}),
                )],
            ),
            route(
                "/plain-host",
                vec![mirror(json!({"disable_shadow_host_suffix_append": true}))],
            ),
            route(
                "/literal",
                vec![mirror(json!({"host_rewrite_literal": "copies.internal"}))],
            ),
            route("/by-header", vec![json!({"cluster_header": "x-mirror-to"})]),
            rewritten,
        ];
        let vh = json!([{"name": "v", "domains": ["*"], "routes": routes}]);
        bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![
                cluster("main", &[main.port], json!({})),
                cluster("shadow", &[shadow.port], json!({})),
            ],
        )
    };
    let envoy = agree_with_envoy(cfg, |_, port| {
        main.set(Behavior::default());
        shadow.set(Behavior::default());
        // Each request: the client's status, and what the mirror saw (if anything).
        let one = |path: &str, args: &[&str]| -> (u16, Option<Seen>) {
            let before = shadow.count();
            let status = curl::get(port, path, args).status;
            // The copy is fire and forget: give it a moment to arrive.
            let arrived = (0..50).any(|_| {
                std::thread::sleep(Duration::from_millis(10));
                shadow.count() > before
            });
            let seen = arrived.then(|| shadow.last()).flatten().map(|r| {
                (
                    r.method.clone(),
                    r.path.clone(),
                    r.header("host").map(str::to_string),
                    String::from_utf8_lossy(&r.body).into_owned(),
                    r.header("x-route").map(str::to_string),
                )
            });
            (status, seen)
        };
        let host = ["-H", "host: reviews.default:9080"];
        let mut run = vec![
            one("/all", &host),
            one(
                "/all",
                &[
                    "-H",
                    "host: reviews",
                    "-X",
                    "POST",
                    "--data-binary",
                    "payload",
                ],
            ),
            one("/never", &host),
            one("/plain-host", &host),
            one("/literal", &host),
            one(
                "/by-header",
                &["-H", "x-mirror-to: shadow", "-H", "host: ratings"],
            ),
            one("/by-header", &[]),
            one("/rewritten/x?q=1", &host),
        ];
        // The mirror's failures never reach the client.
        shadow.set(Behavior {
            status: 503,
            ..Default::default()
        });
        run.push(one("/all", &host));
        shadow.set(Behavior {
            reset: true,
            ..Default::default()
        });
        run.push(one("/all", &host));
        // Nor does its slowness: the client's answer does not wait for a mirror that
        // takes 2 s.
        shadow.set(Behavior {
            delay_ms: 2000,
            ..Default::default()
        });
        let started = std::time::Instant::now();
        let status = curl::get(port, "/all", &host).status;
        let unhurried = (status, started.elapsed() < Duration::from_millis(1500));
        // A tenth of 200 requests, give or take (binomial: 20 ± 4.2; 5..=40 is > 6 sigma).
        let before = shadow.count();
        shadow.set(Behavior::default());
        for _ in 0..200 {
            curl::get(port, "/tenth", &[]);
        }
        std::thread::sleep(Duration::from_millis(300));
        let tenth = (5..=40).contains(&(shadow.count() - before));
        (run, unhurried, tenth)
    });
    if let Some((run, unhurried, tenth)) = envoy {
        assert_eq!(
            unhurried,
            (200, true),
            "the client does not wait for the mirror"
        );
        assert!(tenth, "about a tenth mirrored");
        let copy = |method: &str, path: &str, host: &str, body: &str| {
            Some((
                method.into(),
                path.into(),
                Some(host.into()),
                body.into(),
                Some("r".into()),
            ))
        };
        assert_eq!(
            run[0],
            (200, copy("GET", "/all", "reviews.default-shadow:9080", ""))
        );
        assert_eq!(
            run[1],
            (200, copy("POST", "/all", "reviews-shadow", "payload"))
        );
        assert_eq!(run[2], (200, None), "fraction 0");
        assert_eq!(
            run[3],
            (200, copy("GET", "/plain-host", "reviews.default:9080", ""))
        );
        assert_eq!(
            run[4],
            (200, copy("GET", "/literal", "copies.internal", ""))
        );
        assert_eq!(
            run[5],
            (200, copy("GET", "/by-header", "ratings-shadow", ""))
        );
        assert_eq!(run[6], (200, None), "no header, no mirror");
        assert_eq!(
            run[7].1.as_ref().map(|s| s.1.as_str()),
            Some("/inner/x?q=1")
        );
        assert_eq!(
            (run[8].0, run[9].0),
            (200, 200),
            "mirror failures stay away"
        );
    }
}

/// A static route naming a mirror cluster that does not exist is refused at load, with
/// Envoy's wording.
#[test]
fn unknown_shadow_cluster_is_rejected() {
    let port = e2e::free_port();
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "main",
        "request_mirror_policies": [{"cluster": "no-such-cluster"}]}}]}]);
    let config = bootstrap(
        vec![listener("l", port, hcm(vh, json!({})), json!({}))],
        vec![cluster("main", &[1], json!({}))],
    );
    let path = e2e::scratch("mirror-reject").join("bootstrap.yaml");
    std::fs::write(
        &path,
        config.replace("{ADMIN}", &e2e::free_port().to_string()),
    )
    .unwrap();
    let (code, _, err) =
        e2e::proxy::run_meshproxy(&["-c", path.to_str().unwrap(), "--mode", "validate"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown shadow cluster 'no-such-cluster'"),
        "{err}"
    );
}
