//! Foundation behaviours not covered elsewhere, through the real binary: HTTP/2 trailers
//! end to end, `ignore_port_in_host_matching`, `runtime_fraction`, TLS version limits and
//! cipher suites, listener-filter timeouts, and upstream TCP keepalive.

use bytes::Bytes;
use e2e::config::{self, bootstrap, cluster, hcm, listener};
use e2e::proxy::{Kind, Proxy};
use e2e::{curl, fixtures, free_port};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::io::{Read, Write};

/// An h2c upstream whose responses end with trailers.
fn trailer_upstream() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(TrailerBody(0)))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
                });
            }
        });
    });
    port
}

/// A body of one data frame followed by `grpc-status: 0` trailers.
struct TrailerBody(u8);

impl http_body::Body for TrailerBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0 += 1;
        std::task::Poll::Ready(match self.0 {
            1 => Some(Ok(http_body::Frame::data(Bytes::from_static(b"payload")))),
            2 => {
                let mut t = http::HeaderMap::new();
                t.insert("grpc-status", http::HeaderValue::from_static("0"));
                Some(Ok(http_body::Frame::trailers(t)))
            }
            _ => None,
        })
    }
}

#[test]
fn http2_trailers_pass_through() {
    let up = trailer_upstream();
    let port = free_port();
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]);
    let _p = Proxy::start(
        Kind::Meshproxy,
        &bootstrap(
            vec![listener("l", port, hcm(vh, json!({})), json!({}))],
            vec![cluster("c", &[up], config::h2_upstream())],
        ),
        &[],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (body, trailers) = rt.block_on(async move {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(s),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri(format!("http://127.0.0.1:{port}/"))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    });
    assert_eq!(&body[..], b"payload");
    assert_eq!(trailers.expect("trailers").get("grpc-status").unwrap(), "0");
}

#[test]
fn host_port_matching_and_runtime_fraction() {
    let port = free_port();
    let port2 = free_port();
    let vh = json!([{"name": "ex", "domains": ["example.com"], "routes": [
        {"match": {"prefix": "/never", "runtime_fraction": {"default_value": {"numerator": 0}, "runtime_key": "k0"}}, "direct_response": {"status": 200, "body": {"inline_string": "fraction-0"}}},
        {"match": {"prefix": "/always", "runtime_fraction": {"default_value": {"numerator": 100}, "runtime_key": "k1"}}, "direct_response": {"status": 200, "body": {"inline_string": "fraction-100"}}},
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "fallback"}}}]}]);
    let mut ignoring = hcm(vh.clone(), json!({"stat_prefix": "ignoring"}));
    ignoring["route_config"]["ignore_port_in_host_matching"] = json!(true);
    let cfg = bootstrap(
        vec![
            listener("strict", port, hcm(vh, json!({})), json!({})),
            listener("ignoring", port2, ignoring, json!({})),
        ],
        vec![],
    );
    let _p = Proxy::start(Kind::Meshproxy, &cfg, &[]);
    assert_eq!(
        curl::get(port, "/", &["-H", "host: example.com:8080"]).status,
        404
    );
    assert_eq!(
        curl::get(port2, "/", &["-H", "host: example.com:8080"]).text(),
        "fallback"
    );
    for _ in 0..20 {
        assert_eq!(
            curl::get(port, "/never", &["-H", "host: example.com"]).text(),
            "fallback"
        );
        assert_eq!(
            curl::get(port, "/always", &["-H", "host: example.com"]).text(),
            "fraction-100"
        );
    }
}

fn tls_listener(port: u16, params: Value) -> Value {
    let d = fixtures().join("istio/certs");
    let mut l = listener(
        &format!("tls{port}"),
        port,
        hcm(
            json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "tls"}}}]}]),
            json!({}),
        ),
        json!({}),
    );
    l["filter_chains"][0]["transport_socket"] = json!({"name": "tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {"tls_params": params,
            "tls_certificates": [{"certificate_chain": {"filename": d.join("cert-chain.pem")}, "private_key": {"filename": d.join("key.pem")}}]}}});
    l
}

#[test]
fn tls_versions_and_cipher_suites() {
    let (a, b) = (free_port(), free_port());
    let cfg = bootstrap(
        vec![
            tls_listener(a, json!({"tls_minimum_protocol_version": "TLSv1_3"})),
            // Istio's default list ends with two suites rustls lacks (static RSA key
            // exchange): accepted, never negotiated.
            tls_listener(
                b,
                json!({"tls_maximum_protocol_version": "TLSv1_2", "cipher_suites": [
                    "ECDHE-RSA-AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-GCM-SHA256"]}),
            ),
        ],
        vec![],
    );
    let _p = Proxy::start(Kind::Meshproxy, &cfg, &[]);
    assert_eq!(
        curl::curl(&["-k"], &format!("https://127.0.0.1:{a}/")).text(),
        "tls"
    );
    assert_eq!(
        curl::curl(
            &["-k", "--tls-max", "1.2"],
            &format!("https://127.0.0.1:{a}/")
        )
        .status,
        0,
        "TLS 1.2 refused by a 1.3-minimum listener"
    );
    assert_eq!(
        curl::curl(
            &[
                "-k",
                "--tls-max",
                "1.2",
                "--ciphers",
                "ECDHE-RSA-AES128-GCM-SHA256"
            ],
            &format!("https://127.0.0.1:{b}/")
        )
        .text(),
        "tls"
    );
    assert_eq!(
        curl::curl(
            &[
                "-k",
                "--tls-max",
                "1.2",
                "--ciphers",
                "ECDHE-RSA-AES256-GCM-SHA384"
            ],
            &format!("https://127.0.0.1:{b}/")
        )
        .status,
        0,
        "a cipher outside the list is refused"
    );
    assert_eq!(
        curl::curl(
            &["-k", "--tls-max", "1.2", "--ciphers", "AES256-GCM-SHA384"],
            &format!("https://127.0.0.1:{b}/")
        )
        .status,
        0,
        "a listed suite meshproxy cannot offer is never negotiated"
    );
    let dir = e2e::scratch("cipher");
    let bad = dir.join("b.json");
    std::fs::write(
        &bad,
        bootstrap(
            vec![tls_listener(a, json!({"cipher_suites": ["NOT-A-CIPHER"]}))],
            vec![],
        )
        .replace("{ADMIN}", "0"),
    )
    .unwrap();
    let (code, _, err) =
        e2e::proxy::run_meshproxy(&["-c", bad.to_str().unwrap(), "--mode", "validate"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cipher_suites[0]") && err.contains("NOT-A-CIPHER"),
        "{err}"
    );
}

#[test]
fn listener_filter_timeout_closes_or_continues() {
    let (closing, continuing) = (free_port(), free_port());
    let inspect = |port: u16, cont: bool| {
        let mut l = listener(
            "l",
            port,
            hcm(
                json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "late"}}}]}]),
                json!({"stat_prefix": format!("p{port}")}),
            ),
            json!({}),
        );
        l["name"] = json!(format!("l{port}"));
        l["listener_filters"] = json!([{"name": "tls", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}]);
        l["listener_filters_timeout"] = json!("0.3s");
        l["continue_on_listener_filters_timeout"] = json!(cont);
        l
    };
    let p = Proxy::start(
        Kind::Meshproxy,
        &bootstrap(
            vec![inspect(closing, false), inspect(continuing, true)],
            vec![],
        ),
        &[],
    );
    let silent_then_request = |port: u16| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(600));
        let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert_eq!(
        silent_then_request(closing),
        "",
        "closed when the inspector timed out"
    );
    assert!(
        silent_then_request(continuing).ends_with("late"),
        "continues to the filter chain after the timeout"
    );
    assert_eq!(
        p.stat(&format!(
            "listener.127.0.0.1_{closing}.downstream_pre_cx_timeout"
        )),
        Some(1)
    );
}

#[test]
fn upstream_tcp_keepalive_is_set() {
    let echo = e2e::upstream::TcpEcho::start();
    let port = free_port();
    let t = json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": "ka", "cluster": "c"});
    let c = cluster(
        "c",
        &[echo.port],
        json!({"upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 77, "keepalive_interval": 5, "keepalive_probes": 3}}}),
    );
    let _p = Proxy::start(
        Kind::Meshproxy,
        &bootstrap(vec![listener("l", port, t, json!({}))], vec![c]),
        &[],
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    let out = std::process::Command::new("ss")
        .args([
            "-tno",
            "state",
            "established",
            &format!("( dport = :{} )", echo.port),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("timer:(keepalive,1min1") || text.contains("timer:(keepalive,1min"),
        "{text}"
    );
}
