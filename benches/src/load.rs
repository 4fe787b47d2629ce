//! The load generators. Max-throughput mode keeps every connection (or stream) busy for the
//! duration. Fixed-rate mode sends on a schedule and measures each latency from the
//! request's *intended* send time, so a stalled server is charged for the requests it
//! delayed (the correction for coordinated omission that wrk2 and fortio make).

use crate::histogram::Latencies;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a load run observed.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Successful requests (or connections, or bytes for throughput runs).
    pub completed: u64,
    /// Failed requests.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latencies (fixed-rate runs).
    pub latencies: Latencies,
}

impl Outcome {
    /// Completions per second.
    pub fn rate(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds a later measurement of the same target: the counts, the latencies and the
    /// time, so [`Outcome::rate`] is the rate over both.
    pub fn append(&mut self, o: Outcome) {
        self.elapsed += o.elapsed;
        self.merge(o);
    }

    fn merge(&mut self, o: Outcome) {
        self.completed += o.completed;
        self.errors += o.errors;
        self.latencies.merge(o.latencies);
    }
}

fn request(host: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nhost: {host}\r\nuser-agent: meshproxy-bench\r\n\r\n").into_bytes()
}

/// Reads one HTTP/1.1 response (content-length framed); returns its status.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head =
                std::str::from_utf8(&buf[..end]).map_err(|_| std::io::Error::other("bad head"))?;
            let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.trim().parse().ok())
                })
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                let mut chunk = [0u8; 16384];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(status);
        }
        let mut chunk = [0u8; 16384];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// HTTP/1.1 keep-alive, `connections` busy connections, for `duration`.
pub async fn http1_max(
    addr: SocketAddr,
    host: &str,
    connections: usize,
    duration: Duration,
) -> Outcome {
    keepalive_max(addr, host, connections, duration, None).await
}

/// HTTP/1.1 keep-alive over TLS (the client trusts any certificate).
pub async fn https_max(
    addr: SocketAddr,
    host: &str,
    connections: usize,
    duration: Duration,
    tls: Arc<rustls::ClientConfig>,
) -> Outcome {
    keepalive_max(addr, host, connections, duration, Some(tls)).await
}

async fn keepalive_max(
    addr: SocketAddr,
    host: &str,
    connections: usize,
    duration: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Outcome {
    let req = request(host);
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let req = req.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => match connect(addr).await {
                        Ok(s) => busy_loop(s, &req, deadline).await,
                        Err(_) => Outcome {
                            errors: 1,
                            ..Default::default()
                        },
                    },
                    Some(cfg) => match connect_tls(addr, cfg).await {
                        Some(s) => busy_loop(s, &req, deadline).await,
                        None => Outcome {
                            errors: 1,
                            ..Default::default()
                        },
                    },
                }
            })
        })
        .collect();
    collect(tasks, start).await
}

async fn busy_loop<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    req: &[u8],
    deadline: Instant,
) -> Outcome {
    let mut o = Outcome::default();
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < deadline {
        if s.write_all(req).await.is_err() {
            o.errors += 1;
            break;
        }
        match read_response(&mut s, &mut buf).await {
            Ok(200) => o.completed += 1,
            _ => o.errors += 1,
        }
    }
    o
}

async fn connect_tls(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let s = connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("bench.local").ok()?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, s)
        .await
        .ok()
}

/// New TLS handshakes per second: connect, complete a TLS 1.3 handshake, close; with
/// `concurrency` loops in parallel. Each handshake's time (connect included) is recorded,
/// so the same run gives the latency a client sees at that load.
pub async fn tls_handshake_rate(
    addr: SocketAddr,
    concurrency: usize,
    duration: Duration,
    tls: Arc<rustls::ClientConfig>,
) -> Outcome {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let tls = tls.clone();
            tokio::spawn(async move {
                let mut o = Outcome::default();
                while Instant::now() < deadline {
                    let started = Instant::now();
                    if connect_tls(addr, tls.clone()).await.is_some() {
                        o.completed += 1;
                        o.latencies.record(started.elapsed());
                    } else {
                        o.errors += 1
                    }
                }
                o
            })
        })
        .collect();
    collect(tasks, start).await
}

/// HTTP/1.1 at a fixed total `rate`, spread over `connections` (send `i` on connection
/// `i % connections`); latencies from intended send times.
pub async fn http1_fixed(
    addr: SocketAddr,
    host: &str,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> Outcome {
    let req = request(host);
    let start = Instant::now();
    let total = (rate * duration.as_secs_f64()) as usize;
    let tasks: Vec<_> = crate::pacer::start(start, rate, total, connections)
        .into_iter()
        .map(|mut due| {
            let req = req.clone();
            tokio::spawn(async move {
                let mut o = Outcome::default();
                let mut buf = Vec::with_capacity(4096);
                let Ok(mut s) = connect(addr).await else {
                    o.errors += 1;
                    return o;
                };
                while let Some(intended) = due.recv().await {
                    if s.write_all(&req).await.is_err() {
                        o.errors += 1;
                        break;
                    }
                    match read_response(&mut s, &mut buf).await {
                        Ok(200) => {
                            o.completed += 1;
                            o.latencies.record(intended.elapsed());
                        }
                        _ => o.errors += 1,
                    }
                }
                o
            })
        })
        .collect();
    collect(tasks, start).await
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Outcome>>, start: Instant) -> Outcome {
    let mut total = Outcome::default();
    for t in tasks {
        if let Ok(o) = t.await {
            total.merge(o);
        }
    }
    total.elapsed = start.elapsed();
    total
}

async fn h2_sender(
    addr: SocketAddr,
) -> Option<hyper::client::conn::http2::SendRequest<Empty<Bytes>>> {
    let s = connect(addr).await.ok()?;
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// An h2 GET whose `:authority` is `host`.
fn h2_request(host: &str) -> http::Request<Empty<Bytes>> {
    let mut r = http::Request::new(Empty::new());
    *r.uri_mut() = format!("http://{host}/").parse().expect("uri");
    r
}

async fn h2_once(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    host: &str,
) -> bool {
    match sender.send_request(h2_request(host)).await {
        Ok(resp) => resp.status() == 200 && resp.into_body().collect().await.is_ok(),
        Err(_) => false,
    }
}

/// HTTP/2 (h2c): `connections` connections with `streams` concurrent streams each.
pub async fn http2_max(
    addr: SocketAddr,
    host: &str,
    connections: usize,
    streams: usize,
    duration: Duration,
) -> Outcome {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let Some(sender) = h2_sender(addr).await else {
            return Outcome {
                errors: 1,
                elapsed: start.elapsed(),
                ..Default::default()
            };
        };
        for _ in 0..streams {
            let mut sender = sender.clone();
            let host = host.to_string();
            tasks.push(tokio::spawn(async move {
                let mut o = Outcome::default();
                while Instant::now() < deadline {
                    if h2_once(&mut sender, &host).await {
                        o.completed += 1
                    } else {
                        o.errors += 1
                    }
                }
                o
            }));
        }
    }
    collect(tasks, start).await
}

/// HTTP/2 at a fixed rate, open loop: each request starts at its intended time on its own
/// stream, so latencies are free of coordinated omission by construction.
pub async fn http2_fixed(
    addr: SocketAddr,
    host: &str,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> Outcome {
    let mut senders = Vec::new();
    for _ in 0..connections {
        match h2_sender(addr).await {
            Some(s) => senders.push(s),
            None => {
                return Outcome {
                    errors: 1,
                    ..Default::default()
                }
            }
        }
    }
    let start = Instant::now();
    let total = (rate * duration.as_secs_f64()) as usize;
    let mut tasks = Vec::with_capacity(total);
    let mut due = crate::pacer::start(start, rate, total, 1).remove(0);
    let mut i = 0;
    while let Some(intended) = due.recv().await {
        let mut sender = senders[i % senders.len()].clone();
        i += 1;
        let host = host.to_string();
        tasks.push(tokio::spawn(async move {
            let mut o = Outcome::default();
            if h2_once(&mut sender, &host).await {
                o.completed = 1;
                o.latencies.record(intended.elapsed());
            } else {
                o.errors = 1;
            }
            o
        }));
    }
    collect(tasks, start).await
}

/// TCP throughput: `connections` streams each writing 64 KiB blocks for `duration`;
/// `completed` counts bytes accepted.
pub async fn tcp_throughput(addr: SocketAddr, connections: usize, duration: Duration) -> Outcome {
    let start = Instant::now();
    let deadline = start + duration;
    let block = vec![0x5au8; 64 * 1024];
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let block = block.clone();
            tokio::spawn(async move {
                let mut o = Outcome::default();
                let Ok(mut s) = connect(addr).await else {
                    o.errors += 1;
                    return o;
                };
                let mut hello = [0u8; 1];
                if s.read_exact(&mut hello).await.is_err() {
                    o.errors += 1;
                    return o;
                }
                while Instant::now() < deadline {
                    match s.write_all(&block).await {
                        Ok(()) => o.completed += block.len() as u64,
                        Err(_) => {
                            o.errors += 1;
                            break;
                        }
                    }
                }
                o
            })
        })
        .collect();
    collect(tasks, start).await
}

/// TCP connection setup rate: connect, receive the upstream's first byte, close; with
/// `concurrency` loops in parallel.
pub async fn tcp_connect_rate(addr: SocketAddr, concurrency: usize, duration: Duration) -> Outcome {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            tokio::spawn(async move {
                let mut o = Outcome::default();
                while Instant::now() < deadline {
                    let ok = async {
                        let mut s = connect(addr).await.ok()?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b).await.ok()?;
                        Some(())
                    }
                    .await;
                    if ok.is_some() {
                        o.completed += 1
                    } else {
                        o.errors += 1
                    }
                }
                o
            })
        })
        .collect();
    collect(tasks, start).await
}
