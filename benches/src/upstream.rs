//! Upstreams for benchmarks, kept minimal so they are not the bottleneck: a hand-written
//! HTTP/1.1 keep-alive responder, an HTTP/2 (h2c) responder on hyper, and TCP sink/source
//! servers. Each runs on its own thread with its own runtime.

use bytes::Bytes;
use http_body_util::Full;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";

fn spawn_runtime<F: std::future::Future<Output = ()> + Send + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f());
    });
}

fn bind() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let a = l.local_addr().expect("addr");
    (l, a)
}

/// HTTP/1.1 and h2c on one port: h2c by preface, HTTP/1.1 otherwise (answered by hand).
pub fn http() -> SocketAddr {
    let (l, addr) = bind();
    spawn_runtime(move || async move {
        let l = tokio::net::TcpListener::from_std(l).expect("listener");
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(serve(s));
        }
    });
    addr
}

async fn serve(mut s: tokio::net::TcpStream) {
    let mut peek = [0u8; 3];
    if s.peek(&mut peek).await.is_ok() && &peek == b"PRI" {
        let svc = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(
                b"ok",
            ))))
        });
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .max_concurrent_streams(1000)
            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
            .await;
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    loop {
        match s.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        // Answer every complete request head in the buffer (GETs without bodies).
        let mut start = 0;
        let mut out = Vec::new();
        while let Some(end) = buf[start..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            out.extend_from_slice(RESPONSE);
            start += end + 4;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if !out.is_empty() && s.write_all(&out).await.is_err() {
            return;
        }
        if filled == buf.len() {
            return;
        }
    }
}

/// A TCP server that discards what it reads and counts nothing (throughput sink), and
/// answers one byte first so connection-rate tests see the connection through.
pub fn tcp_sink() -> SocketAddr {
    let (l, addr) = bind();
    spawn_runtime(move || async move {
        let l = tokio::net::TcpListener::from_std(l).expect("listener");
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if s.write_all(b"!").await.is_err() {
                    return;
                }
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}
