//! `x-forwarded-client-cert` in Envoy 1.40 and meshproxy: a mutual-TLS listener with each
//! `forward_client_cert_details` mode (and Istio's `set_current_client_cert_details`:
//! subject, DNS, URI) and a plaintext one; the upstream records the header it gets for a
//! request that arrives with an XFCC of its own and one that does not.

use e2e::config::{bootstrap, cluster, hcm, listener};
use e2e::proxy::agree_with_envoy;
use e2e::upstream::{Behavior, Upstream};
use serde_json::{json, Value};

fn cert(name: &str) -> String {
    e2e::fixtures()
        .join("istio-proxy/certs")
        .join(name)
        .display()
        .to_string()
}

fn mtls() -> Value {
    json!({"transport_socket": {"name": "tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": true,
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": cert("server.cert")},
                                  "private_key": {"filename": cert("server-key.cert")}}],
            "validation_context": {"trusted_ca": {"filename": cert("root.cert")}}}}}})
}

#[test]
fn xfcc_modes_match_envoy() {
    let up = Upstream::http("app");
    let modes = [
        "SANITIZE",
        "FORWARD_ONLY",
        "APPEND_FORWARD",
        "SANITIZE_SET",
        "ALWAYS_FORWARD_ONLY",
    ];
    let cfg = |port: u16| {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]);
        let details = json!({"subject": true, "dns": true, "uri": true});
        let mut listeners: Vec<Value> = modes
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let extra = json!({"forward_client_cert_details": m,
                    "set_current_client_cert_details": details});
                listener(
                    &format!("l{i}"),
                    port + 1 + i as u16,
                    hcm(vh.clone(), extra),
                    mtls(),
                )
            })
            .collect();
        listeners.push(listener(
            "plain",
            port,
            hcm(
                vh.clone(),
                json!({"forward_client_cert_details": "APPEND_FORWARD"}),
            ),
            json!({}),
        ));
        bootstrap(listeners, vec![cluster("app", &[up.port], json!({}))])
    };
    // Consecutive ports: the plain listener's and one per mode after it.
    let base = loop {
        let p = e2e::free_port();
        if (1..=modes.len() as u16)
            .all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok())
        {
            break p;
        }
    };
    let (client_cert, client_key, root) = (
        cert("client.cert"),
        cert("client-key.cert"),
        cert("root.cert"),
    );
    let got = agree_with_envoy(
        |_| cfg(base),
        |_, _| {
            up.set(Behavior::default());
            let mut seen = Vec::new();
            for incoming in [None, Some("By=spiffe://upstream;Hash=00")] {
                let header = incoming.map(|v| format!("x-forwarded-client-cert: {v}"));
                let mut args = vec![
                    "-k",
                    "--cert",
                    &client_cert,
                    "--key",
                    &client_key,
                    "--cacert",
                    &root,
                ];
                if let Some(h) = &header {
                    args.extend(["-H", h.as_str()]);
                }
                for i in 0..modes.len() {
                    let r = e2e::curl::get_tls(base + 1 + i as u16, "/", &args);
                    seen.push((
                        r.status,
                        up.last()
                            .and_then(|x| x.header("x-forwarded-client-cert").map(str::to_string)),
                    ));
                }
                let plain_args: Vec<&str> =
                    header.iter().flat_map(|h| ["-H", h.as_str()]).collect();
                let r = e2e::curl::get(base, "/", &plain_args);
                seen.push((
                    r.status,
                    up.last()
                        .and_then(|x| x.header("x-forwarded-client-cert").map(str::to_string)),
                ));
            }
            seen
        },
    )
    .expect("Envoy 1.40 is required");
    eprintln!("{got:#?}");
    assert!(
        got.iter().any(|(_, x)| x
            .as_deref()
            .is_some_and(|v| v.contains("Subject=\"O=Internet Widgits Pty Ltd,ST=CA,C=US\""))),
        "the subject reaches the upstream"
    );
}

/// Gateways ask for the client certificate itself (`cert`) and its chain: the URL-encoded
/// PEM in `Cert="..."` and `Chain="..."`, in Envoy's order with the other details.
#[test]
fn xfcc_cert_and_chain_match_envoy() {
    let up = Upstream::http("app");
    let cfg = |port: u16| {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]);
        let extra = json!({"forward_client_cert_details": "SANITIZE_SET",
            "set_current_client_cert_details": {
                "cert": true, "chain": true, "subject": true, "dns": true, "uri": true}});
        bootstrap(
            vec![listener("gw", port, hcm(vh, extra), mtls())],
            vec![cluster("app", &[up.port], json!({}))],
        )
    };
    let (client_cert, client_key) = (cert("client.cert"), cert("client-key.cert"));
    let got = agree_with_envoy(cfg, |_, port| {
        up.set(Behavior::default());
        let args = ["-k", "--cert", &client_cert, "--key", &client_key];
        let r = e2e::curl::get_tls(port, "/", &args);
        (
            r.status,
            up.last()
                .and_then(|x| x.header("x-forwarded-client-cert").map(str::to_string)),
        )
    })
    .expect("Envoy 1.40 is required");
    let xfcc = got.1.expect("the upstream got an XFCC");
    assert!(
        xfcc.contains(";Cert=\"-----BEGIN%20CERTIFICATE-----%0A"),
        "{xfcc}"
    );
}
