//! The bootstraps both proxies run: an HTTP listener routed to the upstream, a TCP proxy
//! listener, and the Istio-sidecar-shaped scale configs (N clusters of 3 endpoints, one
//! virtual host per cluster).

use serde_json::{json, Value};

fn cluster(name: &str, ports: &[u16], h2: bool) -> Value {
    let endpoints: Vec<Value> = ports.iter().map(|p| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}})).collect();
    let mut c = json!({"name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
        "circuit_breakers": {"thresholds": [{"max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000}]}});
    if h2 {
        c["typed_extension_protocol_options"] = json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {"max_concurrent_streams": 1000}}}});
    }
    c
}

fn hcm(stat_prefix: &str, virtual_hosts: Value) -> Value {
    json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix, "codec_type": "AUTO",
        "http2_protocol_options": {"max_concurrent_streams": 1000},
        "route_config": {"name": "local", "virtual_hosts": virtual_hosts},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]})
}

fn listener(name: &str, port: u16, filter: Value) -> Value {
    json!({"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "terminal", "typed_config": filter}]}]})
}

/// The traffic bootstrap: HTTP on `http_port` (h1 upstream), HTTP with an h2 upstream on
/// `h2_port`, TCP on `tcp_port`.
pub fn traffic(
    admin: u16,
    http_port: u16,
    h2_port: u16,
    tcp_port: u16,
    upstream: u16,
    sink: u16,
) -> String {
    let vh = |c: &str| json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": c}}]}]);
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                listener("http", http_port, hcm("http", vh("upstream"))),
                listener("http2", h2_port, hcm("http2", vh("upstream_h2"))),
                listener("tcp", tcp_port, json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": "tcp", "cluster": "sink"})),
            ],
            "clusters": [cluster("upstream", &[upstream], false), cluster("upstream_h2", &[upstream], true), cluster("sink", &[sink], false)]
        }
    })
    .to_string()
}

/// The HTTPS bootstrap: TLS 1.3 termination on `rsa_port` (RSA-2048) and `ecdsa_port`
/// (ECDSA-P256), routed to the plaintext upstream; the same keys again on the last two
/// ports, behind the cryptomb provider when `provider` is given (meshproxy: with its
/// software fallback where the kernel cannot run), else plain (Envoy, which lacks it).
pub fn https(
    admin: u16,
    [rsa_port, ecdsa_port, multi_buffer_port, ecdsa_multi_buffer_port]: [u16; 4],
    upstream: u16,
    rsa: &crate::tls::CertFiles,
    ecdsa: &crate::tls::CertFiles,
    provider: Option<crate::multi_buffer::MultiBuffer>,
) -> String {
    let vh = json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]);
    let key = |c: &crate::tls::CertFiles| json!({"filename": c.key.display().to_string()});
    let tls_listener = |name: &str, port: u16, c: &crate::tls::CertFiles, key: Value| {
        let mut certificate =
            json!({"certificate_chain": {"filename": c.cert.display().to_string()}});
        certificate
            .as_object_mut()
            .unwrap()
            .extend(key.as_object().unwrap().clone());
        let mut l = listener(name, port, hcm(name, vh.clone()));
        l["filter_chains"][0]["transport_socket"] = json!({"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {"alpn_protocols": ["http/1.1"], "tls_params": {"tls_minimum_protocol_version": "TLSv1_3"},
                "tls_certificates": [certificate]}}});
        l
    };
    let multi_buffer_key = |c: &crate::tls::CertFiles| match provider {
        Some(multi_buffer) => {
            json!({"private_key_provider": {"provider_name": "cryptomb",
                "fallback": !multi_buffer.available(), "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.private_key_providers.cryptomb.v3alpha.CryptoMbPrivateKeyMethodConfig",
                "private_key": key(c), "poll_delay": "0.002s"}}})
        }
        None => json!({"private_key": key(c)}),
    };
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [
                tls_listener("https_rsa", rsa_port, rsa, json!({"private_key": key(rsa)})),
                tls_listener("https_ecdsa", ecdsa_port, ecdsa, json!({"private_key": key(ecdsa)})),
                tls_listener("https_rsa_mb", multi_buffer_port, rsa, multi_buffer_key(rsa)),
                tls_listener("https_ecdsa_mb", ecdsa_multi_buffer_port, ecdsa, multi_buffer_key(ecdsa))],
            "clusters": [cluster("upstream", &[upstream], false)]}
    })
    .to_string()
}

/// The idle-policy bootstrap: HTTP/1.1 on `plain_port` with a bare route, and on
/// `policy_port` with Istio's default retry policy on the route and a fault filter whose
/// delay and abort apply to 0% of requests.
pub fn idle_policy(admin: u16, plain_port: u16, policy_port: u16, upstream: u16) -> String {
    let vh = |route: Value| json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": route}]}]);
    let retry = json!({"retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2, "retriable_status_codes": [503], "host_selection_retry_max_attempts": "5",
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}]});
    let mut with_policy = hcm(
        "policy",
        vh(json!({"cluster": "upstream", "retry_policy": retry})),
    );
    let zero = json!({"numerator": 0});
    with_policy["http_filters"] = json!([
        {"name": "envoy.filters.http.fault", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "delay": {"fixed_delay": "1s", "percentage": zero}, "abort": {"http_status": 503, "percentage": zero}}},
        with_policy["http_filters"][0].clone()
    ]);
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [listener("plain", plain_port, hcm("plain", vh(json!({"cluster": "upstream"})))), listener("policy", policy_port, with_policy)],
            "clusters": [cluster("upstream", &[upstream], false)]
        }
    })
    .to_string()
}

/// The scale bootstrap: `n` clusters of 3 endpoints, one virtual host per cluster.
pub fn scale(admin: u16, port: u16, n: usize) -> String {
    let clusters: Vec<Value> = (0..n)
        .map(|i| {
            cluster(
                &format!("outbound|80||svc-{i}.ns.svc.cluster.local"),
                &[10000 + (i % 50000) as u16, 20000, 30000],
                false,
            )
        })
        .collect();
    let vhosts: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("svc-{i}.ns.svc.cluster.local:80"), "domains": [format!("svc-{i}.ns.svc.cluster.local"), format!("svc-{i}.ns"), format!("svc-{i}")],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": format!("outbound|80||svc-{i}.ns.svc.cluster.local"), "timeout": "0s"}}]}))
        .collect();
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [listener("0.0.0.0_80", port, hcm("outbound_0.0.0.0_80", Value::Array(vhosts)))], "clusters": clusters}
    })
    .to_string()
}
