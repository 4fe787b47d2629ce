//! SDS end to end: certificates delivered over a separate SDS stream (the `sds-grpc`
//! cluster pilot-agent serves) and over ADS (gateway credential names), rotation under
//! load with no failed request and established connections kept, and a bad secret
//! rejected while the old one keeps serving.

use e2e::curl;
use e2e::proxy::{Kind, Proxy};
use e2e::xds::resources::ads_bootstrap;
use e2e::xds::{ControlPlane, LISTENER, SECRET};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// (certificate chain PEM, key PEM, serial as `openssl x509 -serial` prints it).
fn cert(which: &str) -> (String, String, String) {
    let f = e2e::fixtures();
    let (c, k) = match which {
        "a" => (
            f.join("istio/certs/cert-chain.pem"),
            f.join("istio/certs/key.pem"),
        ),
        _ => (
            f.join("istio-proxy/certs/server.cert"),
            f.join("istio-proxy/certs/server-key.cert"),
        ),
    };
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&c)
        .output()
        .expect("openssl");
    let serial = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (
        std::fs::read_to_string(c).unwrap(),
        std::fs::read_to_string(k).unwrap(),
        serial,
    )
}

fn secret(name: &str, which: &str) -> Value {
    let (chain, key, _) = cert(which);
    json!({"name": name, "tls_certificate": {
        "certificate_chain": {"inline_string": chain}, "private_key": {"inline_string": key}}})
}

/// The serial of the certificate a new TLS handshake on `port` gets.
fn served_serial(port: u16) -> String {
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(s_client.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl x509");
    let _ = s_client.wait();
    let out = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A listener terminating TLS with the SDS secret `name` from `source`, answering 200.
fn tls_listener(name: &str, port: u16, secret_name: &str, source: Value) -> Value {
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {"tls_certificate_sds_secret_configs": [
                    {"name": secret_name, "sds_config": source}]}}},
            "filters": [{"name": "hcm", "typed_config": e2e::config::hcm(
                json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
                    "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]),
                json!({"stat_prefix": name}))}]
        }]
    })
}

/// The `sds-grpc` cluster and config source of pilot-agent's bootstraps, pointed at `cp`.
fn sds_grpc(cp: &ControlPlane) -> (Value, Value) {
    let cluster = e2e::xds::resources::grpc_cluster("sds-grpc", cp);
    let source = json!({"api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
        "set_node_on_first_message_only": true},
        "initial_fetch_timeout": "0s", "resource_api_version": "V3"});
    (cluster, source)
}

/// meshproxy with a TLS listener whose certificate `default` comes over SDS from `cp`
/// (certificate "a" served first): (listener port, proxy).
fn serve_default_over_sds(cp: &ControlPlane) -> (u16, Proxy) {
    let (sds_cluster, source) = sds_grpc(cp);
    let port = e2e::free_port();
    cp.set_json(SECRET, "default", secret("default", "a"));
    let bootstrap = e2e::config::bootstrap(
        vec![tls_listener("tls", port, "default", source)],
        vec![sds_cluster],
    );
    (port, Proxy::start(Kind::Meshproxy, &bootstrap, &[]))
}

/// A TLS client on one connection (openssl s_client), sending requests one at a time.
struct KeptConnection {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl KeptConnection {
    fn open(port: u16) -> KeptConnection {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-connect",
                &format!("127.0.0.1:{port}"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_client");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        KeptConnection { child, lines }
    }

    /// Sends a request and returns the status line of the answer.
    fn request(&mut self) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        stdin.flush().unwrap();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < end {
            if let Ok(l) = self
                .lines
                .recv_timeout(std::time::Duration::from_millis(100))
            {
                // The previous body has no newline: a status line may follow it directly.
                if let Some(i) = l.find("HTTP/1.1 ") {
                    return l[i..].trim().to_string();
                }
            }
        }
        String::new()
    }
}

impl Drop for KeptConnection {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sds_stream_serves_and_rotates_the_workload_certificate_under_load() {
    let cp = ControlPlane::unix(e2e::scratch("sds").join("SDS"));
    let (port, _proxy) = serve_default_over_sds(&cp);
    let (_, _, serial_a) = cert("a");
    let (_, _, serial_b) = cert("b");
    assert_eq!(served_serial(port), serial_a);
    let sds = cp.requests_of(SECRET);
    assert_eq!(sds[0].names, vec!["default".to_string()], "{sds:?}");
    assert!(sds.iter().any(|r| r.is_ack()));

    let mut kept = KeptConnection::open(port);
    assert_eq!(kept.request(), "HTTP/1.1 200 OK");

    // Load during rotations: every request on a new connection succeeds.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(curl::get_tls(port, "/", &["-k"]).status);
            }
            statuses
        })
    };
    for (i, which) in ["b", "a", "b"].iter().enumerate() {
        cp.set_json(SECRET, "default", secret("default", which));
        cp.push(SECRET);
        cp.wait_answers(SECRET, 2 + i, 20);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = load.join().unwrap();
    assert!(statuses.len() >= 5, "load ran: {}", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "failed requests during rotation: {statuses:?}"
    );
    assert_eq!(
        served_serial(port),
        serial_b,
        "new handshakes get the rotated certificate"
    );
    assert_eq!(
        kept.request(),
        "HTTP/1.1 200 OK",
        "an established connection survives rotation"
    );
}

#[test]
fn bad_secret_is_rejected_and_the_old_one_keeps_serving() {
    let cp = ControlPlane::unix(e2e::scratch("sds-bad").join("SDS"));
    let (port, _proxy) = serve_default_over_sds(&cp);
    let mut broken = secret("default", "b");
    broken["tls_certificate"]["private_key"]["inline_string"] = json!("not a key");
    cp.set_json(SECRET, "default", broken);
    cp.push(SECRET);
    let answers = cp.wait_answers(SECRET, 2, 20);
    let error = answers[1].error.clone().expect("NACK");
    assert!(
        error.contains("default") && error.contains("private_key"),
        "{error}"
    );
    assert_eq!(served_serial(port), cert("a").2);
}

#[test]
fn listener_warms_until_its_ads_secret_arrives() {
    let cp = ControlPlane::unix(e2e::scratch("sds-ads").join("XDS"));
    let port = e2e::free_port();
    let ads = json!({"ads": {}, "resource_api_version": "V3"});
    cp.set_json(
        LISTENER,
        "gw",
        tls_listener("gw", port, "kubernetes://gw-cred", ads),
    );
    let proxy = Proxy::spawn(Kind::Meshproxy, &ads_bootstrap(&cp, true, vec![]), &[]);
    let sub = cp.wait_for(30, "the secret subscription over ADS", |r| {
        r.type_url == SECRET && r.names.contains(&"kubernetes://gw-cred".to_string())
    });
    assert!(sub.delta);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        proxy.admin_get("/ready").unwrap().0,
        503,
        "warming until the secret arrives"
    );
    assert_eq!(
        curl::get_tls(port, "/", &["-k"]).status,
        0,
        "not listening yet"
    );
    cp.set_json(
        SECRET,
        "kubernetes://gw-cred",
        secret("kubernetes://gw-cred", "b"),
    );
    cp.push(SECRET);
    proxy.wait_live();
    assert_eq!(curl::get_tls(port, "/", &["-k"]).status, 200);
    assert_eq!(served_serial(port), cert("b").2);
}

/// Istio's outbound mTLS shape: the client certificate `default` and the root `ROOTCA`
/// (a combined validation context with a SPIFFE SAN match) both over SDS. A wrong root
/// fails the upstream handshake; rotating `ROOTCA` to the right one fixes the next
/// connection.
#[test]
fn upstream_mtls_takes_certificate_and_root_from_sds() {
    let f = e2e::fixtures();
    let up = e2e::upstream::Upstream::tls(
        "mesh-up",
        &f.join("istio/certs/cert-chain.pem"),
        &f.join("istio/certs/key.pem"),
    );
    let cp = ControlPlane::unix(e2e::scratch("sds-up").join("SDS"));
    let (sds_cluster, source) = sds_grpc(&cp);
    let root = |path: &str| {
        json!({"name": "ROOTCA", "validation_context": {"trusted_ca": {
            "inline_string": std::fs::read_to_string(f.join(path)).unwrap()}}})
    };
    cp.set_json(SECRET, "default", secret("default", "a"));
    cp.set_json(SECRET, "ROOTCA", root("istio-proxy/certs/root.cert"));
    let tls = json!({"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": "outbound_.80_._.svc.cluster.local",
        "common_tls_context": {
            "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": source}],
            "combined_validation_context": {
                "default_validation_context": {"match_subject_alt_names": [
                    {"exact": "spiffe://cluster.local/ns/default/sa/default"}]},
                "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": source}}}}}});
    let port = e2e::free_port();
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "mesh"}}]}]);
    let bootstrap = e2e::config::bootstrap(
        vec![e2e::config::listener(
            "out",
            port,
            e2e::config::hcm(vh, json!({})),
            json!({}),
        )],
        vec![sds_cluster, e2e::config::cluster("mesh", &[up.port], tls)],
    );
    let _proxy = Proxy::start(Kind::Meshproxy, &bootstrap, &[]);
    e2e::wait_until(20, "both secrets requested", || {
        let asked: std::collections::BTreeSet<String> = cp
            .requests_of(SECRET)
            .into_iter()
            .flat_map(|r| r.names)
            .collect();
        asked.contains("default") && asked.contains("ROOTCA")
    });
    e2e::wait_until(20, "the secrets applied", || !cp.answers(SECRET).is_empty());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        curl::get(port, "/", &[]).status,
        503,
        "the wrong root fails the handshake"
    );
    assert_eq!(up.count(), 0);
    cp.set_json(SECRET, "ROOTCA", root("istio/certs/root-cert.pem"));
    cp.push(SECRET);
    e2e::wait_until(20, "the rotated root to apply", || {
        curl::get(port, "/", &[]).status == 200
    });
    assert_eq!(up.last().unwrap().path, "/");
}

/// The listener side of a validation context over SDS: client certificates are checked
/// against the root `ROOTCA` the SDS stream delivers.
#[test]
fn listener_checks_client_certificates_against_an_sds_root() {
    let f = e2e::fixtures();
    let cp = ControlPlane::unix(e2e::scratch("sds-mtls").join("SDS"));
    let (sds_cluster, source) = sds_grpc(&cp);
    cp.set_json(SECRET, "default", secret("default", "a"));
    cp.set_json(
        SECRET,
        "ROOTCA",
        json!({"name": "ROOTCA", "validation_context": {"trusted_ca": {
        "inline_string": std::fs::read_to_string(f.join("istio/certs/root-cert.pem")).unwrap()}}}),
    );
    let port = e2e::free_port();
    let mut listener = tls_listener("mtls", port, "default", source.clone());
    let ctx = &mut listener["filter_chains"][0]["transport_socket"]["typed_config"];
    ctx["require_client_certificate"] = json!(true);
    ctx["common_tls_context"]["validation_context_sds_secret_config"] =
        json!({"name": "ROOTCA", "sds_config": source});
    let bootstrap = e2e::config::bootstrap(vec![listener], vec![sds_cluster]);
    let _proxy = Proxy::start(Kind::Meshproxy, &bootstrap, &[]);
    let cert = f.join("istio/certs/cert-chain.pem").display().to_string();
    let key = f.join("istio/certs/key.pem").display().to_string();
    assert_eq!(
        curl::get_tls(port, "/", &["-k", "--cert", &cert, "--key", &key]).status,
        200,
        "a client certificate from the SDS root is accepted"
    );
    assert_eq!(
        curl::get_tls(port, "/", &["-k"]).status,
        0,
        "no client certificate: refused"
    );
}

#[test]
fn sds_secret_with_the_cryptomb_provider_serves_and_bad_ones_are_nacked() {
    let cp = ControlPlane::unix(e2e::scratch("sds-cryptomb").join("SDS"));
    let (port, proxy) = serve_default_over_sds(&cp);
    let (_, key, _) = cert("b");
    let provider = |poll_delay: &str| {
        let mut s = secret("default", "b");
        let tls = s["tls_certificate"].as_object_mut().unwrap();
        tls.remove("private_key");
        tls.insert("private_key_provider".into(), json!({"provider_name": "cryptomb",
            "fallback": true, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.private_key_providers.cryptomb.v3alpha.CryptoMbPrivateKeyMethodConfig",
            "private_key": {"inline_string": key}, "poll_delay": poll_delay}}));
        s
    };
    cp.set_json(SECRET, "default", provider("0s"));
    cp.push(SECRET);
    let answers = cp.wait_answers(SECRET, 2, 20);
    let error = answers[1].error.clone().expect("NACK");
    assert!(error.contains("poll_delay"), "{error}");
    assert_eq!(
        served_serial(port),
        cert("a").2,
        "the old secret keeps serving"
    );
    cp.set_json(SECRET, "default", provider("0.01s"));
    cp.push(SECRET);
    let answers = cp.wait_answers(SECRET, 3, 20);
    assert!(answers[2].error.is_none(), "{:?}", answers[2].error);
    assert_eq!(served_serial(port), cert("b").2);
    let run = e2e::tls_client::handshakes(port, 16, 4, std::time::Duration::from_secs(60));
    assert_eq!(
        (run.completed, run.failed),
        (64, 0),
        "{:?}",
        run.first_error
    );
    let signed: i64 = ["rsa_batches", "rsa_single_buffer", "rsa_fallbacks"]
        .iter()
        .map(|n| proxy.stat(&format!("cryptomb.{n}")).unwrap_or(0))
        .sum();
    assert!(signed >= 1, "no handshake signed through the provider");
}
