//! Istio's HTTP metadata exchange and standard metrics through two meshproxy sidecars on
//! loopback, as istio/proxy's own "basic flow" test sets them up: a client sidecar
//! (outbound listener with `mx_outbound` and `stats_outbound`) in front of a server
//! sidecar (inbound listener with `mx_inbound` and `stats_inbound`) in front of the app.
//! Node metadata, filter configs and the expected label sets come from the fixtures of
//! istio/proxy in ../shared/fixtures/istio-proxy. Envoy 1.40 as released cannot load
//! these Istio-only filters, so there is no differential run here.

use e2e::config::{cluster, merge};
use e2e::istio::{expected_metric, node_metadata, samples, yaml};
use e2e::proxy::{Kind, Proxy};
use e2e::upstream::{Behavior, Upstream};
use serde_json::{json, Value};
use std::collections::HashMap;

const REQUESTS: usize = 3;

/// The `services` metadata Istio puts on the clusters of `server.default`.
fn service_metadata() -> Value {
    json!({"metadata": {"filter_metadata": {"istio": {"services": [
        {"host": "server.default.svc.cluster.local", "name": "server", "namespace": "default"}]}}}})
}

/// The `stats.PluginConfig` filter wrapped in a TypedStruct, as istiod sends it.
fn stats_filter(name: &str, config: Value) -> Value {
    json!({"name": name, "typed_config": {
        "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
        "type_url": "type.googleapis.com/stats.PluginConfig", "value": config}})
}

/// The same filter as istiod up to 1.16 sent it (istio/proxy's `stats_*bound.yaml.tmpl`
/// with a Wasm runtime): the null-VM `envoy.wasm.stats` plugin, its config a JSON string
/// with the old plugin's own settings.
fn null_vm_stats_filter(name: &str, config: Value) -> Value {
    let mut settings = json!({"debug": "false", "stat_prefix": "istio", "field_separator": ";.;"});
    merge(&mut settings, config);
    json!({"name": name, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"root_id": name, "vm_config": {"vm_id": name,
            "runtime": "envoy.wasm.runtime.null",
            "code": {"local": {"inline_string": "envoy.wasm.stats"}}},
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": settings.to_string()}}}})
}

/// The null-VM metadata exchange plugin with the JSON-string config of Istio 1.16.
fn null_vm_exchange_filter() -> Value {
    json!({"name": "istio.metadata_exchange", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"vm_config": {"runtime": "envoy.wasm.runtime.null",
            "code": {"local": {"inline_string": "envoy.wasm.metadata_exchange"}}},
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": "{\"max_peer_cache_size\": 10000}"}}}})
}

/// A sidecar: `direction` listener on `port` with Istio's `filters` routing to `cluster`.
fn sidecar(
    node: &str,
    metadata: Value,
    direction: &str,
    port: u16,
    filters: Vec<Value>,
    cluster: Value,
) -> String {
    sidecar_with(node, metadata, direction, port, filters, cluster, json!({}))
}

/// [`sidecar`] with `chain_extra` merged into its filter chain (a transport socket).
fn sidecar_with(
    node: &str,
    metadata: Value,
    direction: &str,
    port: u16,
    filters: Vec<Value>,
    cluster: Value,
    chain_extra: Value,
) -> String {
    let name = cluster["name"].as_str().unwrap().to_string();
    // istio/proxy's route names (metric expressions read `xds.route_name`).
    let route = if direction == "OUTBOUND" {
        "client_route"
    } else {
        "server_route"
    };
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [
        {"name": route, "match": {"prefix": "/"}, "route": {"cluster": name, "timeout": "0s"}}]}]);
    let http = e2e::config::hcm_with_filters(
        vh,
        filters,
        json!({"stat_prefix": direction.to_lowercase()}),
    );
    let mut chain = json!({"filters": [{"name": "http", "typed_config": http}]});
    merge(&mut chain, chain_extra);
    e2e::istio::sidecar_bootstrap(
        (node, metadata),
        (direction, port),
        chain,
        json!({}),
        vec![cluster],
    )
}

fn prometheus(p: &Proxy) -> String {
    p.admin_get("/stats/prometheus").expect("admin answers").1
}

#[test]
fn basic_flow_reports_istio_metrics_with_both_workloads() {
    let no_vars = HashMap::new();
    basic_flow(
        yaml("filters/mx_native_outbound.yaml.tmpl", &no_vars)[0].clone(),
        yaml("filters/mx_native_inbound.yaml.tmpl", &no_vars)[0].clone(),
        stats_filter,
    );
}

/// Istio 1.16's forms of both filters, the null-VM Wasm plugins, report the same.
#[test]
fn the_null_vm_exchange_and_stats_plugins_report_the_same() {
    basic_flow(
        null_vm_exchange_filter(),
        null_vm_exchange_filter(),
        null_vm_stats_filter,
    );
}

/// Istio's older metadata exchange form, as the sidecar config dump holds it: the Wasm
/// filter naming the null-VM plugin, whose behaviour follows the listener direction.
#[test]
fn the_older_wasm_exchange_form_reports_the_same() {
    let dump = std::fs::read_to_string(
        e2e::fixtures().join("istio/config-dumps/sidecar-listeners.configdump.yaml"),
    )
    .unwrap();
    let at = dump.find("envoy.wasm.metadata_exchange").unwrap();
    let open = dump[..at]
        .rfind("\"@type\": \"type.googleapis.com/envoy.extensions.filters.http.wasm")
        .unwrap();
    let open = dump[..open].rfind('{').unwrap();
    let config: Value = serde_json::Deserializer::from_str(&dump[open..])
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    let filter = json!({"name": "istio.metadata_exchange", "typed_config": config});
    basic_flow(filter.clone(), filter, stats_filter);
}

/// A client sidecar in front of a server sidecar in front of an app, as the basic flow
/// sets them up, with each side's metadata exchange filter and stats filter;
/// `server_tls` / `client_tls` (merged into the server's chain and the client's cluster)
/// put mutual TLS between them.
struct Pair {
    app: Upstream,
    client: Proxy,
    server: Proxy,
    client_port: u16,
}

impl Pair {
    fn start(
        (client_mx, client_stats): (Value, Value),
        (server_mx, server_stats): (Value, Value),
        (client_tls, server_tls): (Value, Value),
    ) -> Pair {
        let app = Upstream::http("app");
        let (client_port, server_port) = (e2e::free_port(), e2e::free_port());
        let mut inbound = cluster("server-inbound-cluster", &[app.port], json!({}));
        merge(&mut inbound, service_metadata());
        let server = Proxy::start(
            Kind::Meshproxy,
            &sidecar_with(
                "server",
                node_metadata("server_node_metadata.json.tmpl"),
                "INBOUND",
                server_port,
                vec![server_mx, server_stats],
                inbound,
                server_tls,
            ),
            &[],
        );
        let mut outbound = cluster("server-outbound-cluster", &[server_port], json!({}));
        merge(&mut outbound, service_metadata());
        merge(&mut outbound, client_tls);
        let client = Proxy::start(
            Kind::Meshproxy,
            &sidecar(
                "client",
                node_metadata("client_node_metadata.json.tmpl"),
                "OUTBOUND",
                client_port,
                vec![client_mx, client_stats],
                outbound,
            ),
            &[],
        );
        Pair {
            app,
            client,
            server,
            client_port,
        }
    }
}

/// The basic flow with the given metadata exchange filters on each side, and the stats
/// filter in the form `stats` builds (from its name and config).
fn basic_flow(client_mx: Value, server_mx: Value, stats: fn(&str, Value) -> Value) {
    let no_vars = HashMap::new();
    let Pair {
        app,
        client,
        server,
        client_port,
    } = Pair::start(
        (
            client_mx,
            stats("stats_outbound", yaml("stats/client_config.yaml", &no_vars)),
        ),
        (
            server_mx,
            stats("stats_inbound", yaml("stats/server_config.yaml", &no_vars)),
        ),
        (json!({}), json!({})),
    );
    for _ in 0..REQUESTS {
        let r = e2e::curl::get(client_port, "/", &[]);
        assert_eq!(r.status, 200);
        assert!(
            r.header("x-envoy-peer-metadata").is_none()
                && r.header("x-envoy-peer-metadata-id").is_none(),
            "the client app never sees the exchange headers"
        );
    }
    let seen = app.last().expect("the app was called");
    assert!(
        seen.header("x-envoy-peer-metadata").is_none()
            && seen.header("x-envoy-peer-metadata-id").is_none(),
        "the server app never sees the exchange headers"
    );
    let count = REQUESTS.to_string();
    let vars = HashMap::from([("RequestCount", count.as_str())]);
    for (proxy, fixture) in [
        (&client, "metric/client_request_total.yaml.tmpl"),
        (&server, "metric/server_request_total.yaml.tmpl"),
    ] {
        let (name, labels, value) = expected_metric(fixture, &vars);
        let text = prometheus(proxy);
        let got = samples(&text, &name);
        assert_eq!(got, vec![(labels.clone(), value)], "{fixture}:\n{text}");
        for histogram in [
            "istio_request_duration_milliseconds_count",
            "istio_request_bytes_count",
            "istio_response_bytes_count",
        ] {
            assert_eq!(
                samples(&text, histogram),
                vec![(labels.clone(), REQUESTS as f64)],
                "{histogram} carries the same labels"
            );
        }
        let (build, build_labels, one) =
            expected_metric("metric/istio_build.yaml", &HashMap::new());
        assert_eq!(samples(&text, &build), vec![(build_labels, one)]);
    }
}

#[test]
fn endpoint_metadata_names_a_peer_that_announced_nothing() {
    // The client's upstream answers without metadata exchange (the app itself): the
    // destination comes from the endpoint's `istio.workload` metadata, as in Istio.
    let app = Upstream::http("app");
    let port = e2e::free_port();
    let mut c = cluster("server-outbound-cluster", &[app.port], json!({}));
    merge(&mut c, service_metadata());
    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"] = json!({"filter_metadata": {
        "istio": {"workload": "ratings-v1;default;ratings;version-1;server-cluster"}}});
    let client = Proxy::start(
        Kind::Meshproxy,
        &sidecar(
            "client",
            node_metadata("client_node_metadata.json.tmpl"),
            "OUTBOUND",
            port,
            vec![
                yaml("filters/mx_native_outbound.yaml.tmpl", &HashMap::new())[0].clone(),
                stats_filter("stats_outbound", json!({})),
            ],
            c,
        ),
        &[],
    );
    assert_eq!(e2e::curl::get(port, "/", &[]).status, 200);
    let got = samples(&prometheus(&client), "istio_requests_total");
    let labels: HashMap<String, String> = got[0].0.iter().cloned().collect();
    for (k, v) in [
        ("destination_workload", "ratings-v1"),
        ("destination_canonical_service", "ratings"),
        ("destination_canonical_revision", "version-1"),
        ("destination_cluster", "server-cluster"),
        ("destination_app", "unknown"),
    ] {
        assert_eq!(labels[k], v, "{k}");
    }
    assert!(
        app.last()
            .unwrap()
            .header("x-envoy-peer-metadata")
            .is_some(),
        "an outbound sidecar announces itself to its upstream"
    );
}

#[test]
fn overrides_and_rejections_follow_the_plugin_config() {
    let app = Upstream::http("app");
    let port = e2e::free_port();
    let config = |stats: Value| {
        sidecar(
            "server",
            node_metadata("server_node_metadata.json.tmpl"),
            "INBOUND",
            port,
            vec![stats_filter("stats_inbound", stats)],
            cluster("app", &[app.port], json!({})),
        )
    };
    let server = Proxy::start(
        Kind::Meshproxy,
        &config(json!({"metrics": [
            {"name": "request_bytes", "drop": true},
            {"tags_to_remove": ["response_flags"]},
            {"name": "requests_total", "dimensions": {"reporter": "'proxy'", "mesh": "'m1'"}}
        ]})),
        &[],
    );
    assert_eq!(e2e::curl::get(port, "/", &[]).status, 200);
    let text = prometheus(&server);
    let total = samples(&text, "istio_requests_total");
    let names: Vec<&str> = total[0].0.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names.first(), Some(&"reporter"));
    assert_eq!(names.last(), Some(&"mesh"), "added dimensions come last");
    assert!(!names.contains(&"response_flags"));
    assert_eq!(total[0].0[0].1, "proxy");
    assert!(
        samples(&text, "istio_request_bytes_count").is_empty(),
        "dropped"
    );
    assert_eq!(samples(&text, "istio_response_bytes_count").len(), 1);
    drop(server);
    let (code, _, err) = e2e::proxy::run_meshproxy(&[
        "--mode",
        "validate",
        "--config-yaml",
        &config(json!({"definitions": [{"name": "custom", "value": "'unterminated"}]}))
            .replace("{ADMIN}", "0"),
    ]);
    assert_ne!(code, 0, "a custom metric's value must parse");
    assert!(err.contains("definitions[0].value"), "{err}");
}

#[test]
fn tag_overrides_read_request_and_response_attributes() {
    // What Telemetry `tagOverrides` become: CEL over Envoy's attributes, with has(),
    // conditionals, comparisons and string methods.
    let app = Upstream::http("app");
    let port = e2e::free_port();
    let dimensions = json!({
        "tenant": "has(request.headers['x-tenant']) ? request.headers['x-tenant'] : 'none'",
        "status_class": "response.code >= 500 ? '5xx' : (response.code >= 400 ? '4xx' : 'ok')",
        "api": "request.url_path.startsWith('/api/') && request.method in ['GET', 'HEAD']",
        "agent": "request.useragent.matches('^curl/') ? 'curl' : 'other'",
    });
    let server = Proxy::start(
        Kind::Meshproxy,
        &sidecar(
            "server",
            node_metadata("server_node_metadata.json.tmpl"),
            "INBOUND",
            port,
            vec![stats_filter(
                "stats_inbound",
                json!({"metrics": [{"name": "requests_total", "dimensions": dimensions}]}),
            )],
            cluster("app", &[app.port], json!({})),
        ),
        &[],
    );
    assert_eq!(
        e2e::curl::get(port, "/api/items?x=1", &["-H", "x-tenant: acme"]).status,
        200
    );
    app.set(Behavior {
        status: 503,
        ..Default::default()
    });
    assert_eq!(
        e2e::curl::get(port, "/other", &["-A", "probe/1"]).status,
        503
    );
    let total = samples(&prometheus(&server), "istio_requests_total");
    let mut seen: Vec<Vec<String>> = total
        .iter()
        .map(|(labels, _)| {
            ["tenant", "status_class", "api", "agent"]
                .iter()
                .map(|k| labels.iter().find(|(n, _)| n == k).unwrap().1.clone())
                .collect()
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ["acme", "ok", "true", "curl"],
            ["none", "5xx", "false", "other"]
        ]
    );
}

/// A transport socket fixture of istio/proxy with its certificate paths pointing at the
/// fixture certificates (`client.cert`, `server.cert`, `root.cert`: SPIFFE identities
/// `spiffe://cluster.local/ns/default/sa/{client,server}`).
fn transport_socket(path: &str) -> Value {
    let certs = e2e::fixtures().join("istio-proxy/certs");
    let text = e2e::istio::fixture(path).replace("testdata/certs", &certs.display().to_string());
    let rendered = e2e::istio::render(&text, &HashMap::new());
    xds_client::json::parse_document(&rendered).expect("transport socket parses")
}

#[test]
fn mutual_tls_reports_principals_and_the_security_policy() {
    let no_vars = HashMap::new();
    // The app must outlive the requests: bind it, do not drop it with `..`.
    let Pair {
        app: _app,
        client,
        server,
        client_port,
    } = Pair::start(
        (
            yaml("filters/mx_native_outbound.yaml.tmpl", &no_vars)[0].clone(),
            stats_filter("stats_outbound", json!({})),
        ),
        (
            yaml("filters/mx_native_inbound.yaml.tmpl", &no_vars)[0].clone(),
            stats_filter("stats_inbound", json!({})),
        ),
        (
            transport_socket("transport_socket/client.yaml.tmpl"),
            transport_socket("transport_socket/server.yaml.tmpl"),
        ),
    );
    let r = e2e::curl::get(client_port, "/", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let labels = |p: &Proxy| -> HashMap<String, String> {
        let got = samples(&prometheus(p), "istio_requests_total");
        assert_eq!(got.len(), 1, "one label set");
        got[0].0.iter().cloned().collect()
    };
    let (c, s) = (labels(&client), labels(&server));
    let (client_id, server_id) = (
        "spiffe://cluster.local/ns/default/sa/client",
        "spiffe://cluster.local/ns/default/sa/server",
    );
    for l in [&c, &s] {
        assert_eq!(l["source_principal"], client_id);
        assert_eq!(l["destination_principal"], server_id);
    }
    assert_eq!(s["connection_security_policy"], "mutual_tls");
    assert_eq!(
        s["source_workload"], "productpage-v1",
        "metadata exchange over TLS"
    );
    assert_eq!(
        c["connection_security_policy"], "unknown",
        "the client side never knows"
    );
    assert_eq!(c["destination_workload"], "ratings-v1");
}

#[test]
fn grpc_calls_report_protocol_status_and_message_counts() {
    let app = Upstream::http("app");
    let frame = |n: usize| {
        let mut m = vec![0u8];
        m.extend_from_slice(&(n as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(b'x', n));
        m
    };
    app.set(e2e::upstream::Behavior {
        body: Some(String::from_utf8([frame(1), frame(2), frame(3)].concat()).unwrap()),
        headers: vec![("content-type".into(), "application/grpc".into())],
        trailers: vec![("grpc-status".into(), "0".into())],
        ..Default::default()
    });
    let request = e2e::scratch("istio-grpc").join("request.bin");
    std::fs::write(&request, [frame(4), frame(5)].concat()).unwrap();
    let port = e2e::free_port();
    let mut c = cluster("app", &[app.port], json!({}));
    merge(&mut c, e2e::config::h2_upstream());
    let grpc_stats = json!({"name": "envoy.filters.http.grpc_stats", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
        "emit_filter_state": true, "stats_for_all_methods": false}});
    let server = Proxy::start(
        Kind::Meshproxy,
        &sidecar(
            "server",
            node_metadata("server_node_metadata.json.tmpl"),
            "INBOUND",
            port,
            vec![grpc_stats, stats_filter("stats_inbound", json!({}))],
            c,
        ),
        &[],
    );
    let data = format!("@{}", request.display());
    let r = e2e::curl::get(
        port,
        "/pkg.Svc/Call",
        &[
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/grpc",
            "--data-binary",
            &data,
        ],
    );
    assert_eq!(r.status, 200);
    e2e::wait_until(5, "the call is reported", || {
        !samples(&prometheus(&server), "istio_request_messages_total").is_empty()
    });
    let text = prometheus(&server);
    let one = |metric: &str| {
        let s = samples(&text, metric);
        assert_eq!(s.len(), 1, "{metric}:\n{text}");
        let labels: HashMap<String, String> = s[0].0.iter().cloned().collect();
        (
            labels["request_protocol"].clone(),
            labels["grpc_response_status"].clone(),
            s[0].1,
        )
    };
    assert_eq!(
        one("istio_requests_total"),
        ("grpc".into(), "0".into(), 1.0)
    );
    assert_eq!(
        one("istio_request_messages_total"),
        ("grpc".into(), "0".into(), 2.0)
    );
    assert_eq!(
        one("istio_response_messages_total"),
        ("grpc".into(), "0".into(), 3.0)
    );
}

/// Generates a CA and a leaf signed by it whose URI SANs put a non-SPIFFE URI before the
/// SPIFFE id; returns (leaf cert, leaf key, CA cert) paths.
fn leaf_with_uris(dir: &std::path::Path, name: &str, uris: &[&str]) -> (String, String, String) {
    let ca = if dir.join("ca.pem").exists() {
        dir.join("ca.pem").display().to_string()
    } else {
        e2e::pki::ca(dir, "ca")
    };
    let san = uris
        .iter()
        .map(|u| format!("URI:{u}"))
        .collect::<Vec<_>>()
        .join(",");
    let (cert, key) = e2e::pki::leaf(dir, name, "ca", &san);
    (cert, key, ca)
}

#[test]
fn istio_authn_reports_the_spiffe_principals() {
    let dir = e2e::scratch("authn-certs");
    let (server_cert, server_key, ca) = leaf_with_uris(
        &dir,
        "server",
        &["urn:example:server", "spiffe://td/ns/default/sa/server"],
    );
    let (client_cert, client_key, _) = leaf_with_uris(
        &dir,
        "client",
        &["urn:example:client", "spiffe://td/ns/apps/sa/client"],
    );
    let app = Upstream::http("app");
    let tls = json!({"transport_socket": {"name": "tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": true,
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": server_cert}, "private_key": {"filename": server_key}}],
            "validation_context": {"trusted_ca": {"filename": ca}}}}}});
    let mut observed = Vec::new();
    for authn in [true, false] {
        let port = e2e::free_port();
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]);
        let http = e2e::config::hcm_with_filters(
            vh,
            vec![stats_filter("stats_inbound", json!({}))],
            json!({}),
        );
        let mut filters = vec![json!({"name": "http", "typed_config": http})];
        if authn {
            // istio_authn runs before the connection manager, as in virtualInbound.
            filters.insert(
                0,
                json!({"name": "istio_authn", "typed_config": {
                "@type": "type.googleapis.com/io.istio.network.authn.Config"}}),
            );
        }
        let mut chain = json!({"filters": filters});
        merge(&mut chain, tls.clone());
        let config = e2e::istio::sidecar_bootstrap(
            ("server", node_metadata("server_node_metadata.json.tmpl")),
            ("INBOUND", port),
            chain,
            json!({}),
            vec![cluster("app", &[app.port], json!({}))],
        );
        let server = Proxy::start(Kind::Meshproxy, &config, &[]);
        let r = e2e::curl::get_tls(
            port,
            "/",
            &["-k", "--cert", &client_cert, "--key", &client_key],
        );
        assert_eq!(r.status, 200);
        let got = samples(&prometheus(&server), "istio_requests_total");
        let labels: HashMap<String, String> = got[0].0.iter().cloned().collect();
        observed.push((
            labels["source_principal"].clone(),
            labels["destination_principal"].clone(),
            labels["source_workload_namespace"].clone(),
            labels["connection_security_policy"].clone(),
        ));
    }
    assert_eq!(
        observed,
        vec![
            (
                "spiffe://td/ns/apps/sa/client".to_string(),
                "spiffe://td/ns/default/sa/server".to_string(),
                "apps".to_string(),
                "mutual_tls".to_string()
            ),
            (
                "urn:example:client".to_string(),
                "urn:example:server".to_string(),
                "unknown".to_string(),
                "mutual_tls".to_string()
            ),
        ],
        "with istio_authn the SPIFFE ids, without it the first URI SANs"
    );
}

/// istio/proxy's customized client config: metric overrides whose dimensions are CEL
/// expressions over the node, the route, the cluster's metadata, the request and the
/// peer, a label whose expression does not parse (left out), one that cannot be
/// evaluated (`unknown`), and a metric of its own (`istio_custom`). What it yields must
/// be exactly istio/proxy's expected `client_request_total_customized` and
/// `client_custom_metric`.
#[test]
fn customized_dimensions_follow_istio_proxy() {
    let vars = HashMap::from([("N", "0")]);
    let customized = yaml("stats/client_config_customized.yaml.tmpl", &vars);
    let no_vars = HashMap::new();
    let Pair {
        app: _app,
        client,
        server: _server,
        client_port,
    } = Pair::start(
        (
            yaml("filters/mx_native_outbound.yaml.tmpl", &no_vars)[0].clone(),
            stats_filter("stats_outbound", customized),
        ),
        (
            yaml("filters/mx_native_inbound.yaml.tmpl", &no_vars)[0].clone(),
            stats_filter("stats_inbound", yaml("stats/server_config.yaml", &no_vars)),
        ),
        (json!({}), json!({})),
    );
    for _ in 0..REQUESTS {
        assert_eq!(e2e::curl::get(client_port, "/", &[]).status, 200);
    }
    let count = REQUESTS.to_string();
    let vars = HashMap::from([("RequestCount", count.as_str())]);
    let (name, labels, value) =
        expected_metric("metric/client_request_total_customized.yaml.tmpl", &vars);
    let text = prometheus(&client);
    assert_eq!(samples(&text, &name), vec![(labels, value)], "{text}");
    let (name, labels, value) = expected_metric("metric/client_custom_metric.yaml.tmpl", &vars);
    assert_eq!(samples(&text, &name), vec![(labels, value)], "{text}");
    assert!(
        samples(&text, "istio_request_duration_milliseconds_count").is_empty(),
        "dropped"
    );
    let bytes = samples(&text, "istio_request_bytes_count");
    let bytes: HashMap<String, String> = bytes[0].0.iter().cloned().collect();
    assert_eq!(
        bytes.get("configurable_metric_b").map(String::as_str),
        Some("test")
    );
    assert!(!bytes.contains_key("reporter"));
}

/// The Envoy metric lines pilot-agent's bootstrap lets through (`stats_config` of
/// `tracing_none_golden.json`: its tag regexes replace the built-in tags, its inclusion
/// list keeps `server`, `cluster_manager`, `listener_manager`, RBAC outcomes...), with
/// the values of the process gauges (memory, uptime, version, start-up time) left out.
fn pilot_agent_metric_lines(p: &Proxy) -> Vec<String> {
    let volatile = [
        "envoy_server_memory_",
        "envoy_server_uptime",
        "envoy_server_version",
        "envoy_server_stats_recent_lookups",
        "envoy_server_initialization_time_ms",
    ];
    prometheus(p)
        .lines()
        .map(|l| match volatile.iter().any(|v| l.starts_with(v)) {
            true => l.rsplit_once(' ').map_or(l, |(k, _)| k).to_string(),
            false => l.to_string(),
        })
        .collect()
}

#[test]
fn envoy_metric_lines_match_envoy_under_pilot_agent_stats_config() {
    // The same sidecar-shaped config in both (mutual TLS outbound -> inbound, istiod's
    // RBAC filters with dry-run shadow rules, a TCP chain), minus the Istio-only filters
    // Envoy cannot load, and the same traffic: the same metric lines.
    let app = Upstream::http("app");
    let echo = e2e::upstream::TcpEcho::start();
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(e2e::fixtures().join("istio/bootstrap/tracing_none_golden.json"))
            .unwrap(),
    )
    .unwrap();
    let ports = [e2e::free_port(), e2e::free_port(), e2e::free_port()];
    let (outbound, inbound, tcp) = (ports[0], ports[1], ports[2]);
    let rbac = json!({"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"policies": {"ns[default]-policy[server]-rule[0]": {
            "permissions": [{"url_path": {"path": {"prefix": "/ok"}}}],
            "principals": [{"authenticated": {"principal_name": {"exact": "spiffe://cluster.local/ns/default/sa/client"}}}]}}},
        "shadow_rules": {"action": "DENY", "policies": {"ns[default]-policy[dry]-rule[0]": {
            "permissions": [{"url_path": {"path": {"prefix": "/ok/deny"}}}],
            "principals": [{"any": true}]}}},
        "shadow_rules_stat_prefix": "istio_dry_run_allow_"}});
    let tcp_rbac = json!({"name": "envoy.filters.network.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
        "rules": {"policies": {"all": {"permissions": [{"any": true}], "principals": [{"any": true}]}}},
        "stat_prefix": "tcp.", "shadow_rules_stat_prefix": "istio_dry_run_allow_"}});
    let route = |cluster: &str| json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]);
    let listener = |name: &str, direction: &str, port: u16, chain: Value| {
        json!({"name": name, "traffic_direction": direction,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [chain]})
    };
    let mut inbound_chain = json!({"filters": [{"name": "envoy.filters.network.http_connection_manager",
        "typed_config": e2e::config::hcm_with_filters(route("inbound|8080||"), vec![rbac],
            json!({"stat_prefix": "inbound_0.0.0.0_8080"}))}]});
    merge(
        &mut inbound_chain,
        transport_socket("transport_socket/server.yaml.tmpl"),
    );
    let mut upstream = cluster(
        "outbound|8080||server.default.svc.cluster.local",
        &[inbound],
        json!({}),
    );
    merge(
        &mut upstream,
        transport_socket("transport_socket/client.yaml.tmpl"),
    );
    let config = |_port: u16| {
        e2e::config::bootstrap_with(
            vec![
                listener(
                    "0.0.0.0_8080",
                    "OUTBOUND",
                    outbound,
                    json!({"filters": [
                    {"name": "envoy.filters.network.http_connection_manager",
                     "typed_config": e2e::config::hcm(route("outbound|8080||server.default.svc.cluster.local"),
                        json!({"stat_prefix": "outbound_0.0.0.0_8080"}))}]}),
                ),
                listener("virtualInbound", "INBOUND", inbound, inbound_chain.clone()),
                listener(
                    "0.0.0.0_7070",
                    "INBOUND",
                    tcp,
                    json!({"filters": [tcp_rbac.clone(),
                    {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": "inbound|7070||", "cluster": "inbound|7070||"}}]}),
                ),
            ],
            vec![
                upstream.clone(),
                cluster("inbound|8080||", &[app.port], json!({})),
                cluster("inbound|7070||", &[echo.port], json!({})),
            ],
            json!({"node": golden["node"], "stats_config": golden["stats_config"]}),
        )
    };
    let lines = e2e::proxy::agree_with_envoy(config, |p, _| {
        let statuses: Vec<u16> = ["/ok", "/ok/deny", "/other"]
            .iter()
            .map(|path| e2e::curl::get(outbound, path, &[]).status)
            .collect();
        assert_eq!(statuses, [200, 200, 403]);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap();
        use std::io::{Read, Write};
        s.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        drop(s);
        pilot_agent_metric_lines(p)
    });
    let Some(lines) = lines else { return };
    // What the comparison covers: the RBAC outcomes with Istio's tags, and no stat the
    // inclusion list leaves out.
    for expected in [
        r#"envoy_http_inbound_0_0_0_0_8080_rbac{authz_enforce_result="allowed"} 2"#,
        r#"envoy_http_inbound_0_0_0_0_8080_rbac{authz_enforce_result="denied"} 1"#,
        r#"envoy_http_inbound_0_0_0_0_8080_rbac{authz_dry_run_action="allow",authz_dry_run_result="denied"} 1"#,
        "envoy_listener_manager_listener_create_success{} 3",
        "envoy_cluster_manager_active_clusters{} 3",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected}: {lines:#?}"
        );
    }
    assert!(
        !lines.iter().any(|l| l.contains("upstream_rq")),
        "cluster traffic stats are outside the inclusion list"
    );
}
