//! Bootstrap builders for tests, as JSON values (valid YAML for both proxies). `{ADMIN}` is
//! replaced by the admin port when a proxy starts.

use serde_json::{json, Value};

/// A STATIC cluster on 127.0.0.1 ports, with extra fields merged in.
pub fn cluster(name: &str, ports: &[u16], extra: Value) -> Value {
    let endpoints: Vec<Value> = ports
        .iter()
        .map(|p| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}))
        .collect();
    let mut c = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]}
    });
    merge(&mut c, extra);
    c
}

/// An HTTP/2 (h2c) upstream protocol option for a cluster.
pub fn h2_upstream() -> Value {
    json!({"typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}}})
}

/// The router filter list.
pub fn router() -> Value {
    json!([{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}])
}

/// An HCM typed config with `virtual_hosts` and extra HCM fields.
pub fn hcm(virtual_hosts: Value, extra: Value) -> Value {
    let mut h = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": {"name": "local", "virtual_hosts": virtual_hosts},
        "http_filters": router()
    });
    merge(&mut h, extra);
    h
}

/// An HCM typed config whose HTTP filters are `filters` followed by the router.
pub fn hcm_with_filters(virtual_hosts: Value, filters: Vec<Value>, extra: Value) -> Value {
    let mut all = filters;
    all.extend(router().as_array().into_iter().flatten().cloned());
    let mut h = hcm(virtual_hosts, json!({"http_filters": all}));
    merge(&mut h, extra);
    h
}

/// A listener on 127.0.0.1:`port` with one filter chain holding `filter` (a typed config).
pub fn listener(name: &str, port: u16, filter: Value, chain_extra: Value) -> Value {
    let mut chain = json!({"filters": [{"name": "terminal", "typed_config": filter}]});
    merge(&mut chain, chain_extra);
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [chain]
    })
}

/// A bootstrap with an admin on `{ADMIN}`.
pub fn bootstrap(listeners: Vec<Value>, clusters: Vec<Value>) -> String {
    bootstrap_with(listeners, clusters, json!({}))
}

/// A bootstrap with extra top-level sections (overload manager, ...).
pub fn bootstrap_with(listeners: Vec<Value>, clusters: Vec<Value>, extra: Value) -> String {
    let mut b = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": "{ADMIN}"}}},
        "static_resources": {"listeners": listeners, "clusters": clusters}
    });
    merge(&mut b, extra);
    b.to_string().replace("\"{ADMIN}\"", "{ADMIN}")
}

/// A typical single-route HTTP setup: listener on `port` routing `/` to `cluster`.
pub fn simple_http(port: u16, cluster_name: &str, upstream_ports: &[u16]) -> String {
    let vh = json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster_name}}]}]);
    bootstrap(
        vec![listener("http", port, hcm(vh, json!({})), json!({}))],
        vec![cluster(cluster_name, upstream_ports, json!({}))],
    )
}

/// Recursive object merge (the overlay wins).
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}
