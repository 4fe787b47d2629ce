//! Tracing with the Zipkin tracer, side by side with Envoy 1.40, on the settings istiod
//! writes (sampling percentages, the UUID request id deciding, custom tags, a Zipkin
//! provider in the bootstrap): the same B3 headers go upstream, the same trace decision is
//! packed into `x-request-id`, and the collector receives the same spans (ids and times
//! aside).

use e2e::config::{bootstrap_with, cluster, hcm_with_filters, merge};
use e2e::proxy::{agree_with_envoy, Proxy};
use e2e::upstream::Upstream;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn zipkin(shared_span_context: bool) -> Value {
    json!({"name": "envoy.tracers.zipkin", "typed_config": {
        "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
        "collector_cluster": "zipkin", "collector_endpoint": "/api/v2/spans",
        "collector_endpoint_version": "HTTP_JSON", "trace_id_128bit": true,
        "shared_span_context": shared_span_context}})
}

/// A listener in `direction` whose connection manager traces as istiod configures it.
fn traced_listener(name: &str, port: u16, direction: &str, provider: Option<Value>) -> Value {
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/plain"}, "route": {"cluster": "app"}},
        {"match": {"prefix": "/missing"}, "route": {"cluster": "empty"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "app"},
         "decorator": {"operation": "app.default.svc.cluster.local:80/*"}}]}]);
    let mut tracing = json!({
        "client_sampling": {"value": 100}, "random_sampling": {"value": 100},
        "overall_sampling": {"value": 100},
        "custom_tags": [
            {"tag": "istio.mesh_id", "literal": {"value": "cluster.local"}},
            {"tag": "istio.canonical_service", "request_header": {"name": "x-service", "default_value": "none"}},
            {"tag": "istio.authorization.dry_run.allow_policy.name", "metadata": {
                "kind": {"request": {}}, "metadata_key": {"key": "envoy.filters.http.rbac",
                "path": [{"key": "istio_dry_run_allow_shadow_effective_policy_id"}]}}}]});
    if let Some(p) = provider {
        tracing["provider"] = p;
    }
    // Istio's dry-run policy: shadow rules whose outcome the span's tags carry.
    let dry_run = json!({"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "shadow_rules_stat_prefix": "istio_dry_run_allow_",
        "shadow_rules": {"policies": {"ns[default]-policy[dry]-rule[0]": {
            "permissions": [{"url_path": {"path": {"prefix": "/new"}}}],
            "principals": [{"any": true}]}}}}});
    let http = hcm_with_filters(
        vh,
        vec![dry_run],
        json!({"stat_prefix": name, "tracing": tracing,
            "request_id_extension": {"typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
                "use_request_id_for_trace_sampling": true}}}),
    );
    json!({"name": name, "traffic_direction": direction,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": http}]}]})
}

/// A span without what differs run to run (ids, times, the request id), with the ids'
/// relations kept as facts.
fn normalized(span: &Value) -> Value {
    let mut s = span.clone();
    let o = s.as_object_mut().unwrap();
    let trace = o.remove("traceId").unwrap();
    let id = o.remove("id").unwrap();
    o.insert("traceIdLength".into(), json!(trace.as_str().unwrap().len()));
    o.insert(
        "rootSpanIdIsTraceLowHalf".into(),
        json!(trace.as_str().unwrap().ends_with(id.as_str().unwrap())),
    );
    o.insert("parentId".into(), json!(o.contains_key("parentId")));
    for k in ["timestamp", "duration"] {
        o.remove(k);
    }
    for a in o["annotations"].as_array_mut().unwrap() {
        a.as_object_mut().unwrap().remove("timestamp");
    }
    let ep = o["localEndpoint"].as_object_mut().unwrap();
    ep.remove("ipv4");
    let tags = o["tags"].as_object_mut().unwrap();
    let rid = tags.remove("guid:x-request-id").unwrap();
    tags.insert(
        "guid:x-request-id".into(),
        json!(rid.as_str().unwrap().len()),
    );
    s
}

/// The B3 headers an upstream request carried, as relations to what the client sent.
fn b3(seen: &e2e::upstream::Recorded, sent_span: Option<&str>) -> BTreeMap<&'static str, String> {
    let h = |n: &str| seen.header(n).unwrap_or("").to_string();
    let mut out = BTreeMap::new();
    out.insert("traceid.len", h("x-b3-traceid").len().to_string());
    out.insert("sampled", h("x-b3-sampled"));
    out.insert("parent", h("x-b3-parentspanid"));
    out.insert(
        "span is new",
        (Some(h("x-b3-spanid").as_str()) != sent_span && h("x-b3-spanid").len() == 16).to_string(),
    );
    out.insert(
        "x-request-id[14]",
        h("x-request-id").chars().nth(14).unwrap_or(' ').to_string(),
    );
    out.insert("decorator", h("x-envoy-decorator-operation"));
    out
}

#[test]
fn zipkin_spans_and_b3_headers_match_envoy() {
    let app = Upstream::http("app");
    let collector = Upstream::http("collector");
    let inbound = e2e::free_port();
    let cfg = |port: u16| {
        bootstrap_with(
            vec![
                traced_listener("out", port, "OUTBOUND", None),
                traced_listener("in", inbound, "INBOUND", Some(zipkin(true))),
            ],
            vec![
                cluster("app", &[app.port], json!({})),
                cluster("zipkin", &[collector.port], json!({})),
                {
                    let mut c = cluster("empty", &[], json!({}));
                    merge(&mut c, json!({"load_assignment": {"endpoints": []}}));
                    c
                },
            ],
            json!({"node": {"id": "sidecar~10.0.0.1~app.default~default.svc.cluster.local", "cluster": "app.default"},
                "tracing": {"http": zipkin(false)}}),
        )
    };
    let seen = agree_with_envoy(cfg, |p: &Proxy, port| {
        let before = collector.count();
        let calls: Vec<(&str, Vec<&str>)> = vec![
            ("/new", vec!["x-service: svc"]),
            (
                "/child",
                vec![
                    "x-b3-traceid: 463ac35c9f6413ad48485a3953bb6124",
                    "x-b3-spanid: a2fb4a1d1a96d312",
                    "x-b3-sampled: 1",
                ],
            ),
            (
                "/unsampled",
                vec![
                    "x-b3-traceid: 463ac35c9f6413ad48485a3953bb6125",
                    "x-b3-spanid: a2fb4a1d1a96d313",
                    "x-b3-sampled: 0",
                ],
            ),
            ("/plain", vec![]),
            ("/missing", vec![]),
        ];
        let mut headers = Vec::new();
        for (path, hs) in &calls {
            let mut args = Vec::new();
            for h in hs {
                args.extend(["-H", *h]);
            }
            let r = e2e::curl::get(port, path, &args);
            let upstream = app.last().filter(|_| r.status == 200);
            let sent = hs.iter().find_map(|h| h.strip_prefix("x-b3-spanid: "));
            headers.push((r.status, upstream.map(|u| b3(&u, sent))));
        }
        // An inbound call in a trace: with shared span contexts the server span is the
        // caller's span.
        let r = e2e::curl::get(
            inbound,
            "/server",
            &[
                "-H",
                "x-b3-traceid: 563ac35c9f6413ad48485a3953bb6124",
                "-H",
                "x-b3-spanid: b2fb4a1d1a96d312",
                "-H",
                "x-b3-parentspanid: c2fb4a1d1a96d312",
                "-H",
                "x-b3-sampled: 1",
            ],
        );
        let upstream = app.last().filter(|_| r.status == 200);
        headers.push((r.status, upstream.map(|u| b3(&u, Some("b2fb4a1d1a96d312")))));
        // Five sampled spans (the unsampled one is not reported): wait for the batches.
        let mut spans: Vec<Value> = Vec::new();
        e2e::wait_until(20, "the spans reach the collector", || {
            spans = collector.requests()[before..]
                .iter()
                .flat_map(|r| serde_json::from_slice::<Vec<Value>>(&r.body).unwrap_or_default())
                .collect();
            spans.len() >= 5
        });
        let posts: Vec<(String, String, Option<String>)> = collector.requests()[before..]
            .iter()
            .map(|r| {
                (
                    r.method.clone(),
                    r.path.clone(),
                    r.header("content-type").map(str::to_string),
                )
            })
            .take(1)
            .collect();
        // The listener's port is each run's own.
        let mut normalized: Vec<String> = spans
            .iter()
            .map(|s| {
                normalized(s)
                    .to_string()
                    .replace(&format!("127.0.0.1:{port}"), "127.0.0.1:PORT")
            })
            .collect();
        normalized.sort();
        let _ = p;
        (headers, normalized, posts)
    });
    let Some((headers, spans, posts)) = seen else {
        return;
    };
    assert_eq!(headers[0].1.as_ref().unwrap()["traceid.len"], "32");
    assert_eq!(headers[1].1.as_ref().unwrap()["parent"], "a2fb4a1d1a96d312");
    assert_eq!(headers[2].1.as_ref().unwrap()["sampled"], "0");
    assert_eq!(headers[4].0, 503);
    assert_eq!(spans.len(), 5, "{spans:#?}");
    assert!(
        spans.iter().any(|s| s.contains("\"kind\":\"SERVER\"")),
        "{spans:#?}"
    );
    assert!(
        spans.iter().any(|s| s.contains(
            "\"istio.authorization.dry_run.allow_policy.name\":\"ns[default]-policy[dry]-rule[0]\""
        )),
        "the dry-run policy's tag: {spans:#?}"
    );
    assert!(
        spans.iter().any(|s| s.contains("\"error\":\"true\"")),
        "{spans:#?}"
    );
    assert_eq!(posts[0].1, "/api/v2/spans");
}

/// Random sampling off: only a client asking with `x-client-trace-id` is traced, and
/// whatever is not traced still carries its (unsampled) B3 context upstream.
#[test]
fn sampling_decisions_match_envoy() {
    let app = Upstream::http("app");
    let collector = Upstream::http("collector");
    let cfg = |port: u16| {
        let mut l = traced_listener("out", port, "OUTBOUND", None);
        let tracing = &mut l["filter_chains"][0]["filters"][0]["typed_config"]["tracing"];
        tracing["random_sampling"] = json!({"value": 0});
        bootstrap_with(
            vec![l],
            vec![
                cluster("app", &[app.port], json!({})),
                cluster("zipkin", &[collector.port], json!({})),
                cluster("empty", &[], json!({})),
            ],
            json!({"node": {"id": "n", "cluster": "c"}, "tracing": {"http": zipkin(false)}}),
        )
    };
    let seen = agree_with_envoy(cfg, |_, port| {
        let mut out = Vec::new();
        for args in [vec![], vec!["-H", "x-client-trace-id: abc"]] {
            e2e::curl::get(port, "/x", &args);
            out.push(b3(&app.last().unwrap(), None));
        }
        out
    });
    if let Some(seen) = seen {
        assert_eq!(seen[0]["sampled"], "0");
        assert_eq!(seen[0]["x-request-id[14]"], "4");
        assert_eq!(seen[1]["sampled"], "1");
        assert_eq!(seen[1]["x-request-id[14]"], "b");
    }
}

#[test]
fn tracers_other_than_zipkin_are_refused_by_path() {
    let mut l = traced_listener("out", 1, "OUTBOUND", None);
    l["filter_chains"][0]["filters"][0]["typed_config"]["tracing"]["provider"] = json!({
        "name": "envoy.tracers.opentelemetry", "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
            "service_name": "x"}});
    let cfg = bootstrap_with(vec![l], vec![cluster("app", &[1], json!({}))], json!({}))
        .replace("{ADMIN}", "0");
    let (code, _, err) = e2e::proxy::run_meshproxy(&["--mode", "validate", "--config-yaml", &cfg]);
    assert_ne!(code, 0);
    assert!(err.contains("tracing.provider.typed_config"), "{err}");
}

/// A bootstrap tracer meshproxy does not implement (Datadog, in one of pilot-agent's
/// goldens) loads, and a connection manager that would trace with it is refused.
#[test]
fn an_unsupported_bootstrap_tracer_refuses_the_managers_that_use_it() {
    let datadog = json!({"tracing": {"http": {"name": "envoy.tracers.datadog", "typed_config": {
        "@type": "type.googleapis.com/envoy.config.trace.v3.DatadogConfig",
        "collector_cluster": "datadog", "service_name": "svc"}}}});
    let plain = bootstrap_with(vec![], vec![], datadog.clone()).replace("{ADMIN}", "0");
    let (code, _, err) =
        e2e::proxy::run_meshproxy(&["--mode", "validate", "--config-yaml", &plain]);
    assert_eq!(code, 0, "{err}");
    let traced = bootstrap_with(
        vec![traced_listener("out", 1, "OUTBOUND", None)],
        vec![
            cluster("app", &[1], json!({})),
            cluster("empty", &[], json!({})),
        ],
        datadog,
    )
    .replace("{ADMIN}", "0");
    let (code, _, err) =
        e2e::proxy::run_meshproxy(&["--mode", "validate", "--config-yaml", &traced]);
    assert_ne!(code, 0);
    assert!(
        err.contains("typed_config.tracing") && err.contains("DatadogConfig"),
        "{err}"
    );
}
