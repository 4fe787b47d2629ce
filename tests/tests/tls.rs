//! TLS and mutual TLS, downstream and upstream, through the real binary with curl and a
//! TLS upstream, using Istio's fixture workload certificate (SPIFFE URI SAN).

use e2e::config::{self, bootstrap, cluster, hcm, listener};
use e2e::curl;
use e2e::proxy::{Kind, Proxy};
use e2e::upstream::Upstream;
use e2e::{fixtures, free_port};
use serde_json::{json, Value};

fn certs() -> (String, String, String) {
    let d = fixtures().join("istio/certs");
    (
        d.join("cert-chain.pem").display().to_string(),
        d.join("key.pem").display().to_string(),
        d.join("root-cert.pem").display().to_string(),
    )
}

fn downstream_tls(require_client: bool, san_prefix: Option<&str>, alpn: &[&str]) -> Value {
    let (cert, key, root) = certs();
    let mut common = json!({
        "tls_certificates": [{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}],
        "alpn_protocols": alpn,
    });
    if require_client {
        let mut vc = json!({"trusted_ca": {"filename": root}});
        if let Some(p) = san_prefix {
            vc["match_typed_subject_alt_names"] =
                json!([{"san_type": "URI", "matcher": {"prefix": p}}]);
        }
        common["validation_context"] = vc;
    }
    json!({"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": require_client, "common_tls_context": common}}})
}

fn direct(body: &str) -> Value {
    json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}]}])
}

#[test]
fn downstream_tls_with_alpn_h2_and_http11() {
    let port = free_port();
    let cfg = bootstrap(
        vec![listener(
            "tls",
            port,
            hcm(direct("secure"), json!({})),
            downstream_tls(false, None, &["h2", "http/1.1"]),
        )],
        vec![],
    );
    let _p = Proxy::start(Kind::Meshproxy, &cfg, &[]);
    let url = format!("https://127.0.0.1:{port}/");
    let r = curl::curl(&["-k", "--http1.1"], &url);
    assert_eq!(
        (r.status, r.text().as_str(), r.version.as_str()),
        (200, "secure", "1.1")
    );
    let r = curl::curl(&["-k", "--http2"], &url);
    assert_eq!((r.status, r.version.as_str()), (200, "2"));
    // Plaintext to a TLS listener gets no HTTP response.
    assert_eq!(curl::get(port, "/", &[]).status, 0);
}

#[test]
fn mutual_tls_requires_a_trusted_client_certificate_with_matching_san() {
    let (cert, key, _) = certs();
    let port = free_port();
    let port_bad_san = free_port();
    let cfg = bootstrap(
        vec![
            listener(
                "mtls",
                port,
                hcm(direct("mutual"), json!({})),
                downstream_tls(true, Some("spiffe://cluster.local/"), &[]),
            ),
            listener(
                "mtls-other",
                port_bad_san,
                hcm(direct("never"), json!({})),
                downstream_tls(true, Some("spiffe://other.domain/"), &[]),
            ),
        ],
        vec![],
    );
    let _p = Proxy::start(Kind::Meshproxy, &cfg, &[]);
    let url = format!("https://127.0.0.1:{port}/");
    assert_eq!(
        curl::curl(&["-k"], &url).status,
        0,
        "no client certificate must fail"
    );
    let r = curl::curl(&["-k", "--cert", &cert, "--key", &key], &url);
    assert_eq!((r.status, r.text().as_str()), (200, "mutual"));
    let r = curl::curl(
        &["-k", "--cert", &cert, "--key", &key],
        &format!("https://127.0.0.1:{port_bad_san}/"),
    );
    assert_eq!(r.status, 0, "a SAN outside the allowed prefix must fail");
}

fn upstream_tls(san: &str, sni: &str) -> Value {
    let (_, _, root) = certs();
    json!({"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": sni,
        "common_tls_context": {"validation_context": {"trusted_ca": {"filename": root},
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": san}}]}}}}})
}

#[test]
fn upstream_tls_verifies_chain_and_san() {
    let (cert, key, _) = certs();
    let up = Upstream::tls(
        "tls-up",
        std::path::Path::new(&cert),
        std::path::Path::new(&key),
    );
    let port = free_port();
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/good"}, "route": {"cluster": "good"}},
        {"match": {"prefix": "/bad"}, "route": {"cluster": "bad"}},
        {"match": {"prefix": "/h2"}, "route": {"cluster": "good_h2"}}]}]);
    let mut h2 = upstream_tls(
        "spiffe://cluster.local/ns/default/sa/default",
        "outbound_.80_._.svc.cluster.local",
    );
    config::merge(&mut h2, config::h2_upstream());
    let cfg = bootstrap(
        vec![listener("l", port, hcm(vh, json!({})), json!({}))],
        vec![
            cluster(
                "good",
                &[up.port],
                upstream_tls(
                    "spiffe://cluster.local/ns/default/sa/default",
                    "outbound_.80_._.svc.cluster.local",
                ),
            ),
            cluster(
                "bad",
                &[up.port],
                upstream_tls("spiffe://cluster.local/ns/other/sa/x", ""),
            ),
            cluster("good_h2", &[up.port], h2),
        ],
    );
    let p = Proxy::start(Kind::Meshproxy, &cfg, &[]);
    let r = curl::get(port, "/good", &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "tls-up"));
    assert_eq!(up.last().unwrap().version, "HTTP/1.1");
    let r = curl::get(port, "/h2", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        up.last().unwrap().version,
        "HTTP/2.0",
        "ALPN h2 to an HTTP/2 cluster"
    );
    let before = up.count();
    let r = curl::get(port, "/bad", &[]);
    assert_eq!(r.status, 503);
    assert!(
        r.text().contains("remote connection failure"),
        "{}",
        r.text()
    );
    assert_eq!(
        up.count(),
        before,
        "a SAN mismatch must never send the request"
    );
    assert!(p.stat("cluster.bad.upstream_cx_connect_fail").unwrap() >= 1);
}

#[test]
fn sni_selects_the_filter_chain() {
    let (cert, key, _) = certs();
    let port = free_port();
    let tls = |names: &[&str], body: &str| {
        let mut chain = downstream_tls(false, None, &[]);
        chain["filter_chain_match"] = json!({"server_names": names});
        let mut c = json!({"filters": [{"name": "hcm", "typed_config": hcm(direct(body), json!({"stat_prefix": body}))}]});
        config::merge(&mut c, chain);
        c
    };
    let l = json!({"name": "sni", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
        "filter_chains": [tls(&["api.example.com"], "exact"), tls(&["*.example.com"], "wildcard"), tls(&[], "fallback")]});
    let _p = Proxy::start(Kind::Meshproxy, &bootstrap(vec![l], vec![]), &[]);
    let _ = (cert, key);
    let get = |host: &str| {
        let resolve = format!("{host}:{port}:127.0.0.1");
        curl::curl(
            &["-k", "--resolve", &resolve],
            &format!("https://{host}:{port}/"),
        )
        .text()
    };
    assert_eq!(get("api.example.com"), "exact");
    assert_eq!(get("www.example.com"), "wildcard");
    assert_eq!(get("other.test"), "fallback");
}
