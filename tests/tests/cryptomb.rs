//! The `cryptomb` private key provider through the real binary: concurrent TLS 1.3
//! handshakes signed in multi-buffer batches (listener side, with the key inline and in a
//! static secret), client-certificate signatures on upstream mTLS, and the configs Envoy
//! refuses. Every handshake checks the server's signature against its certificate.

use e2e::config::{bootstrap, bootstrap_with, cluster, hcm, listener};
use e2e::proxy::{run_meshproxy_with_env, Kind, Proxy};
use e2e::{curl, fixtures, free_port, scratch, tls_client};
use serde_json::{json, Value};
use std::time::Duration;

const CONFIG_TYPE: &str =
    "type.googleapis.com/envoy.extensions.private_key_providers.cryptomb.v3alpha.CryptoMbPrivateKeyMethodConfig";

fn cert_paths() -> (String, String, String) {
    let d = fixtures().join("istio/certs");
    let path = |f: &str| d.join(f).display().to_string();
    (
        path("cert-chain.pem"),
        path("key.pem"),
        path("root-cert.pem"),
    )
}

/// A `private_key_provider` for the fixture key.
fn provider(poll_delay: &str) -> Value {
    let (_, key, _) = cert_paths();
    json!({"provider_name": "cryptomb", "fallback": true, "typed_config": {
        "@type": CONFIG_TYPE, "private_key": {"filename": key}, "poll_delay": poll_delay}})
}

/// The fixture certificate with its key behind the provider.
fn certificate() -> Value {
    let (cert, _, _) = cert_paths();
    json!({"certificate_chain": {"filename": cert}, "private_key_provider": provider("0.02s")})
}

fn transport_socket(kind: &str, common: Value) -> Value {
    json!({"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": format!("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{kind}"),
        "common_tls_context": common}}})
}

fn direct(body: &str) -> Value {
    json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": body}}}]}])
}

/// Runs `clients` × `each` full handshakes against `port`; every one must complete with a
/// server signature that verifies.
fn all_signed(port: u16, clients: usize, each: usize) {
    let run = tls_client::handshakes(port, clients, each, Duration::from_secs(120));
    let want = (clients * each, 0);
    assert_eq!((run.completed, run.failed), want, "{:?}", run.first_error);
}

/// The provider's stat `cryptomb.<name>` (0 before it exists).
fn provider_stat(p: &Proxy, name: &str) -> i64 {
    p.stat(&format!("cryptomb.{name}")).unwrap_or(0)
}

/// Whether signatures here go through the kernel (else the provider falls back).
fn kernel() -> bool {
    cryptomb::multi_buffer_available()
}

#[test]
fn concurrent_handshakes_are_signed_in_batches() {
    let (inline_port, secret_port) = (free_port(), free_port());
    let inline = transport_socket(
        "DownstreamTlsContext",
        json!({"tls_certificates": [certificate()]}),
    );
    let from_secret = transport_socket(
        "DownstreamTlsContext",
        json!({"tls_certificate_sds_secret_configs": [{"name": "mb"}]}),
    );
    let cfg = bootstrap_with(
        vec![
            listener("inline", inline_port, hcm(direct("a"), json!({})), inline),
            listener(
                "secret",
                secret_port,
                hcm(direct("b"), json!({})),
                from_secret,
            ),
        ],
        vec![],
        json!({"static_resources": {"secrets": [{"name": "mb", "tls_certificate": certificate()}]}}),
    );
    let p = Proxy::start(Kind::Meshproxy, &cfg, &[]);
    all_signed(inline_port, 24, 10);
    all_signed(secret_port, 8, 5);
    let stat = |name: &str| provider_stat(&p, name);
    if kernel() {
        assert!(
            stat("rsa_batches") >= 1,
            "24 concurrent handshakes never formed a batch"
        );
        assert_eq!(stat("rsa_fallbacks"), 0);
    } else {
        assert_eq!(stat("rsa_fallbacks"), 280);
    }
    // curl (OpenSSL) agrees: the provider's signature verifies for another TLS stack too.
    let r = curl::get_tls(inline_port, "/", &["-k", "--tlsv1.2", "--tls-max", "1.2"]);
    assert_eq!((r.status, r.text().as_str()), (200, "a"));
}

#[test]
fn upstream_client_certificates_sign_through_the_provider() {
    let (_, _, root) = cert_paths();
    let (front, back) = (free_port(), free_port());
    let (cert, key, _) = cert_paths();
    let server_tls = transport_socket(
        "DownstreamTlsContext",
        json!({"tls_certificates": [{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}],
            "validation_context": {"trusted_ca": {"filename": root}}}),
    );
    let mut server_tls_required = server_tls.clone();
    server_tls_required["transport_socket"]["typed_config"]["require_client_certificate"] =
        json!(true);
    let client_tls = transport_socket(
        "UpstreamTlsContext",
        json!({"tls_certificates": [certificate()], "validation_context": {"trusted_ca": {"filename": root}}}),
    );
    let route = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "mtls"}}]}]);
    let cfg = bootstrap(
        vec![
            listener("front", front, hcm(route, json!({})), json!({})),
            listener(
                "back",
                back,
                hcm(direct("mutual"), json!({})),
                server_tls_required,
            ),
        ],
        vec![cluster("mtls", &[back], client_tls)],
    );
    let p = Proxy::start(Kind::Meshproxy, &cfg, &[]);
    let requests: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || curl::get(front, "/", &["-H", "connection: close"])))
        .collect();
    for r in requests {
        let r = r.join().unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "mutual"));
    }
    let signed =
        ["rsa_batches", "rsa_single_buffer", "rsa_fallbacks"].map(|n| provider_stat(&p, n));
    assert!(
        signed.iter().sum::<i64>() >= 1,
        "no client signature went through the provider"
    );
    assert!(p.stat("cluster.mtls.upstream_cx_total").unwrap() >= 1);
}

/// Makes the CPU count as lacking AVX-512 IFMA.
const NO_KERNEL: (&str, &str) = ("MESHPROXY_CRYPTOMB_DISABLE", "1");

/// `--mode validate` on a bootstrap whose certificate is `entry`: (exit code, stderr).
fn validate(entry: Value) -> (i32, String) {
    validate_with_env(entry, &[])
}

fn validate_with_env(entry: Value, env: &[(&str, &str)]) -> (i32, String) {
    let cfg = bootstrap(
        vec![listener(
            "l",
            free_port(),
            hcm(direct("x"), json!({})),
            transport_socket("DownstreamTlsContext", json!({"tls_certificates": [entry]})),
        )],
        vec![],
    );
    let path = scratch("cryptomb-validate").join("bootstrap.json");
    std::fs::write(&path, cfg.replace("{ADMIN}", "0")).unwrap();
    let (code, _, stderr) =
        run_meshproxy_with_env(&["--mode", "validate", "-c", path.to_str().unwrap()], env);
    (code, stderr)
}

#[test]
fn invalid_provider_configs_are_refused_with_the_field() {
    let (cert, key, _) = cert_paths();
    let with_provider = |provider: Value| json!({"certificate_chain": {"filename": cert}, "private_key_provider": provider});
    let mut unknown = provider("0.02s");
    unknown["provider_name"] = json!("qat");
    let mut no_delay = provider("0.02s");
    no_delay["typed_config"]
        .as_object_mut()
        .unwrap()
        .remove("poll_delay");
    let mut unreadable = provider("0.02s");
    unreadable["typed_config"]["private_key"] = json!({"inline_string": "not a key"});
    let mut both = certificate();
    both["private_key"] = json!({"filename": key});
    let cases = [
        (with_provider(unknown), "private_key_provider.provider_name"),
        (with_provider(no_delay), "poll_delay is required"),
        (with_provider(provider("0s")), "poll_delay must be positive"),
        (with_provider(unreadable), "typed_config.private_key"),
        (both, "exclusive"),
    ];
    for (entry, expected) in cases {
        let (code, stderr) = validate(entry);
        assert_ne!(code, 0, "{expected}: accepted");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    let (code, stderr) = validate(certificate());
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn config_dump_redacts_the_provider_key() {
    let port = free_port();
    let (_, key, _) = cert_paths();
    let mut entry = certificate();
    let pem = std::fs::read_to_string(&key).unwrap();
    entry["private_key_provider"]["typed_config"]["private_key"] = json!({"inline_string": pem});
    let cfg = bootstrap_with(
        vec![listener(
            "l",
            port,
            hcm(direct("x"), json!({})),
            transport_socket(
                "DownstreamTlsContext",
                json!({"tls_certificate_sds_secret_configs": [{"name": "mb"}]}),
            ),
        )],
        vec![],
        json!({"static_resources": {"secrets": [{"name": "mb", "tls_certificate": entry}]}}),
    );
    let p = Proxy::start(Kind::Meshproxy, &cfg, &[]);
    let (_, dump) = p.admin_get("/config_dump").unwrap();
    assert!(
        !dump.contains("PRIVATE KEY"),
        "the provider's key leaked into /config_dump"
    );
    assert!(dump.contains("cryptomb"));
}

#[test]
fn without_the_kernel_only_fallback_configs_serve() {
    let mut strict = certificate();
    strict["private_key_provider"]["fallback"] = json!(false);
    let (code, stderr) = validate_with_env(strict.clone(), &[NO_KERNEL]);
    assert_ne!(
        code, 0,
        "a CPU without AVX-512 IFMA must refuse fallback: false"
    );
    assert!(
        stderr.contains("private_key_provider") && stderr.contains("AVX-512"),
        "{stderr}"
    );
    if kernel() {
        assert_eq!(
            validate(strict).0,
            0,
            "this CPU has the kernel: fallback is not needed"
        );
    }
    let port = free_port();
    let tls = transport_socket(
        "DownstreamTlsContext",
        json!({"tls_certificates": [certificate()]}),
    );
    let cfg = bootstrap(
        vec![listener("l", port, hcm(direct("soft"), json!({})), tls)],
        vec![],
    );
    let p = Proxy::start_with_env(Kind::Meshproxy, &cfg, &[], &[NO_KERNEL]);
    all_signed(port, 8, 4);
    assert_eq!(p.stat("cryptomb.rsa_fallbacks"), Some(32));
    assert_eq!(p.stat("cryptomb.rsa_batches").unwrap_or(0), 0);
}

/// A self-signed P-256 certificate from openssl: (certificate, PKCS#8 key, SEC 1 key).
fn p256_certificate() -> (String, String, String) {
    let dir = scratch("cryptomb-p256");
    let path = |f: &str| dir.join(f).display().to_string();
    let (cert, pkcs8, sec1) = (path("cert.pem"), path("key.pem"), path("sec1.pem"));
    e2e::pki::req_new_p256(
        &dir,
        &pkcs8,
        &["-x509", "-subj", "/CN=p256", "-days", "1", "-out", &cert],
    );
    e2e::pki::openssl(&dir, &["ec", "-in", &pkcs8, "-out", &sec1]);
    (cert, pkcs8, sec1)
}

/// A listener whose P-256 certificate's key (file `key`) is behind the provider.
fn p256_listener(name: &str, port: u16, cert: &str, key: &str) -> Value {
    let entry = json!({"certificate_chain": {"filename": cert}, "private_key_provider": {
        "provider_name": "cryptomb", "fallback": true, "typed_config": {
            "@type": CONFIG_TYPE, "private_key": {"filename": key}, "poll_delay": "0.02s"}}});
    listener(
        name,
        port,
        hcm(direct(name), json!({})),
        transport_socket("DownstreamTlsContext", json!({"tls_certificates": [entry]})),
    )
}

#[test]
fn p256_handshakes_sign_with_precomputed_nonces() {
    let (cert, pkcs8, sec1) = p256_certificate();
    let (pkcs8_port, sec1_port) = (free_port(), free_port());
    let cfg = bootstrap(
        vec![
            p256_listener("pkcs8", pkcs8_port, &cert, &pkcs8),
            p256_listener("sec1", sec1_port, &cert, &sec1),
        ],
        vec![],
    );
    let p = Proxy::start(Kind::Meshproxy, &cfg, &[]);
    all_signed(pkcs8_port, 16, 10);
    all_signed(sec1_port, 4, 10);
    let stat = |name: &str| provider_stat(&p, name);
    if kernel() {
        assert_eq!(
            (stat("ecdsa_precomputed"), stat("ecdsa_fallbacks")),
            (200, 0)
        );
    } else {
        assert_eq!(
            (stat("ecdsa_precomputed"), stat("ecdsa_fallbacks")),
            (0, 200)
        );
    }
    assert_eq!(stat("rsa_batches") + stat("rsa_fallbacks"), 0);
    // OpenSSL verifies the kernel's signatures too, on TLS 1.3 and 1.2.
    for version in ["1.2", "1.3"] {
        let r = curl::get_tls(pkcs8_port, "/", &["-k", "--tls-max", version]);
        assert_eq!((r.status, r.text().as_str()), (200, "pkcs8"));
    }

    let port = free_port();
    let cfg = bootstrap(vec![p256_listener("soft", port, &cert, &pkcs8)], vec![]);
    let p = Proxy::start_with_env(Kind::Meshproxy, &cfg, &[], &[NO_KERNEL]);
    all_signed(port, 4, 4);
    assert_eq!(p.stat("cryptomb.ecdsa_fallbacks"), Some(16));
    assert_eq!(p.stat("cryptomb.ecdsa_precomputed"), Some(0));
}
