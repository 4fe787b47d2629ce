//! The built-in demo upstream used by the embedded default configuration: a tiny HTTP
//! server that answers every request with what it received, so `curl 127.0.0.1:10000/`
//! shows at once what meshproxy added on the way (x-request-id, x-forwarded-proto, ...).

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// The embedded default bootstrap: admin on 127.0.0.1:15000, a listener on
/// 127.0.0.1:10000 routing everything to the demo upstream on 127.0.0.1:10001, with an
/// access log on stdout.
pub const DEFAULT_BOOTSTRAP: &str = r#"
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 15000}}
static_resources:
  listeners:
  - name: demo_listener
    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: demo
          access_log:
          - name: envoy.access_loggers.stdout
            typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog}
          route_config:
            virtual_hosts:
            - name: demo
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: demo_upstream}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: demo_upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: demo_upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 10001}}}
"#;

/// Where the demo upstream listens.
pub const DEMO_UPSTREAM: &str = "127.0.0.1:10001";

fn answer(req: &http::Request<hyper::body::Incoming>) -> String {
    let mut s = format!(
        "Hello from meshproxy's demo upstream!\n\nIt received: {} {} {:?}\n",
        req.method(),
        req.uri(),
        req.version()
    );
    for (k, v) in req.headers() {
        s.push_str(&format!(
            "  {k}: {}\n",
            String::from_utf8_lossy(v.as_bytes())
        ));
    }
    s.push_str("\nNext: curl 127.0.0.1:15000/stats?filter=demo  or run meshproxy -c <your Envoy bootstrap>\n");
    s
}

/// Starts the demo upstream on the current runtime.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req| async move {
                    let body = answer(&req);
                    let mut r = http::Response::new(Full::new(Bytes::from(body)));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain"),
                    );
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(())
}
