//! Upstream servers for tests: an HTTP/1.1 + h2c (and optionally TLS) server that records
//! every request and answers as scripted, and a TCP echo server.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::{Arc, Mutex};

/// The upstream's response body: data, then trailers if scripted.
type ResponseBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A body that yields its bytes, lets them go out, and then fails, so the server drops
/// the connection mid-body.
struct BreaksOff(Option<Bytes>, std::pin::Pin<Box<tokio::time::Sleep>>);

impl http_body::Body for BreaksOff {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        use std::future::Future;
        if let Some(data) = self.0.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
        match self.1.as_mut().poll(cx) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Some(Err(std::io::Error::other(
                "scripted close after headers",
            )))),
        }
    }
}

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Headers (lower-case names), `host`/`:authority` as `host`.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// When it arrived.
    pub received: std::time::Instant,
    /// The client's address as the upstream's socket saw it.
    pub peer: std::net::SocketAddr,
}

impl Recorded {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How the upstream answers.
#[derive(Debug, Clone)]
pub struct Behavior {
    /// Status code.
    pub status: u16,
    /// Body (default: the upstream's name).
    pub body: Option<String>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Delay before answering.
    pub delay_ms: u64,
    /// Close the connection instead of answering.
    pub reset: bool,
    /// Apply `status`/`reset` only to the next N requests, then answer 200 (0 = always).
    pub only_next: usize,
    /// Trailers after the body (gRPC status, for instance).
    pub trailers: Vec<(String, String)>,
    /// Send the headers (announcing a longer body) and the first bytes of the body, then
    /// close the connection.
    pub close_after_headers: bool,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            status: 200,
            body: None,
            headers: vec![],
            delay_ms: 0,
            reset: false,
            only_next: 0,
            trailers: vec![],
            close_after_headers: false,
        }
    }
}

/// A running upstream; stops when dropped.
pub struct Upstream {
    /// The port it listens on (127.0.0.1 unless started on a given listener).
    pub port: u16,
    /// Name (default body and `x-upstream` header).
    pub name: String,
    log: Arc<Mutex<Vec<Recorded>>>,
    behavior: Arc<Mutex<Behavior>>,
    connections: Arc<Mutex<u64>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

type Tls = Option<Arc<rustls::ServerConfig>>;

impl Upstream {
    /// A plaintext HTTP/1.1 + h2c upstream.
    pub fn http(name: &str) -> Upstream {
        Self::start(name, None, Self::loopback())
    }

    /// A plaintext HTTP/1.1 + h2c upstream serving `listener` (one bound inside a network
    /// namespace, say); `port` is the listener's.
    pub fn http_on(name: &str, listener: std::net::TcpListener) -> Upstream {
        Self::start(name, None, listener)
    }

    fn loopback() -> std::net::TcpListener {
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream")
    }

    /// A TLS upstream presenting `cert`/`key` (PEM files), ALPN h2 and http/1.1.
    pub fn tls(name: &str, cert: &std::path::Path, key: &std::path::Path) -> Upstream {
        let certs = rustls_pemfile::certs(&mut &std::fs::read(cert).expect("cert")[..])
            .collect::<Result<Vec<_>, _>>()
            .expect("certs");
        let key = rustls_pemfile::private_key(&mut &std::fs::read(key).expect("key")[..])
            .expect("key")
            .expect("key present");
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start(name, Some(Arc::new(cfg)), Self::loopback())
    }

    fn start(name: &str, tls: Tls, std_listener: std::net::TcpListener) -> Upstream {
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let behavior = Arc::new(Mutex::new(Behavior::default()));
        let connections = Arc::new(Mutex::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (l2, b2, c2, n2) = (
            log.clone(),
            behavior.clone(),
            connections.clone(),
            name.to_string(),
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((s, peer)) = listener.accept().await else {
                            continue;
                        };
                        *c2.lock().unwrap() += 1;
                        let (log, behavior, name, tls) =
                            (l2.clone(), b2.clone(), n2.clone(), tls.clone());
                        tokio::spawn(async move {
                            match tls {
                                Some(cfg) => {
                                    if let Ok(t) =
                                        tokio_rustls::TlsAcceptor::from(cfg).accept(s).await
                                    {
                                        serve(TokioIo::new(t), peer, log, behavior, name).await
                                    }
                                }
                                None => serve(TokioIo::new(s), peer, log, behavior, name).await,
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Upstream {
            port,
            name: name.to_string(),
            log,
            behavior,
            connections,
            stop: Some(stop),
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// The last request.
    pub fn last(&self) -> Option<Recorded> {
        self.log.lock().unwrap().last().cloned()
    }

    /// Number of requests received.
    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Number of TCP connections accepted.
    pub fn connections(&self) -> u64 {
        *self.connections.lock().unwrap()
    }

    /// Changes how the upstream answers.
    pub fn set(&self, b: Behavior) {
        *self.behavior.lock().unwrap() = b;
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn serve<I>(
    io: I,
    peer: std::net::SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    behavior: Arc<Mutex<Behavior>>,
    name: String,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (log, behavior, name) = (log.clone(), behavior.clone(), name.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            let mut headers: Vec<(String, String)> = parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            if let Some(a) = parts.uri.authority() {
                if !headers.iter().any(|(k, _)| k == "host") {
                    headers.push(("host".into(), a.to_string()));
                }
            }
            log.lock().unwrap().push(Recorded {
                method: parts.method.to_string(),
                path: parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                version: format!("{:?}", parts.version),
                headers,
                body,
                received: std::time::Instant::now(),
                peer,
            });
            let b = {
                let mut current = behavior.lock().unwrap();
                let b = current.clone();
                if current.only_next > 0 {
                    current.only_next -= 1;
                    if current.only_next == 0 {
                        *current = Behavior::default();
                    }
                }
                b
            };
            if b.delay_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(b.delay_ms)).await;
            }
            if b.reset {
                return Err::<http::Response<ResponseBody>, std::io::Error>(std::io::Error::other(
                    "scripted reset",
                ));
            }
            let data = Full::new(Bytes::from(b.body.unwrap_or_else(|| name.clone())))
                .map_err(|e| match e {});
            let body = if b.close_after_headers {
                BreaksOff(
                    Some(Bytes::from_static(b"abc")),
                    Box::pin(tokio::time::sleep(std::time::Duration::from_millis(100))),
                )
                .boxed()
            } else if b.trailers.is_empty() {
                data.boxed()
            } else {
                let mut trailers = http::HeaderMap::new();
                for (k, v) in &b.trailers {
                    trailers.append(
                        http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        http::HeaderValue::from_str(v).unwrap(),
                    );
                }
                data.with_trailers(async move { Some(Ok(trailers)) })
                    .boxed()
            };
            let mut r = http::Response::new(body);
            *r.status_mut() = http::StatusCode::from_u16(b.status).unwrap_or(http::StatusCode::OK);
            if b.close_after_headers {
                r.headers_mut().insert(
                    http::header::CONTENT_LENGTH,
                    http::HeaderValue::from_static("100"),
                );
            }
            r.headers_mut()
                .insert("x-upstream", http::HeaderValue::from_str(&name).unwrap());
            for (k, v) in b.headers {
                r.headers_mut().append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(&v).unwrap(),
                );
            }
            Ok(r)
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(io, svc)
        .await;
}

/// A TCP server that echoes every byte back; records who connected.
pub struct TcpEcho {
    /// The port it listens on (127.0.0.1 unless started on a given listener).
    pub port: u16,
    peers: Arc<Mutex<Vec<std::net::SocketAddr>>>,
}

impl TcpEcho {
    /// Starts the echo server (threads; lives until the test process ends).
    pub fn start() -> TcpEcho {
        Self::start_on(std::net::TcpListener::bind("127.0.0.1:0").expect("bind echo"))
    }

    /// The echo server on `l` (one bound inside a network namespace, say).
    pub fn start_on(l: std::net::TcpListener) -> TcpEcho {
        let port = l.local_addr().expect("addr").port();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = peers.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                if let Ok(peer) = s.peer_addr() {
                    seen.lock().unwrap().push(peer);
                }
                std::thread::spawn(move || {
                    // A plain read/write loop: every chunk goes back as soon as it
                    // arrives (std::io::copy may splice through a pipe and hold bytes).
                    use std::io::{Read, Write};
                    let mut s = s;
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        TcpEcho { port, peers }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.peers.lock().unwrap().len() as u64
    }

    /// The source address of every connection accepted so far, in order.
    pub fn peers(&self) -> Vec<std::net::SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}
