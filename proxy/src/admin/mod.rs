//! The admin API on the bootstrap's admin address, with Envoy's endpoints, formats and
//! method rules (mutating endpoints require POST). It runs on the main runtime, never on a
//! worker, so a slow scrape cannot delay traffic.

mod config_dump;
mod handlers;
mod redact;

use crate::config::common::Address;
use crate::server::Server;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::Arc;

/// An admin response.
pub type AdminResponse = Response<Full<Bytes>>;

/// Builds a response with a content type.
pub fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> AdminResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(
        "cache-control",
        http::HeaderValue::from_static("no-cache, max-age=0"),
    );
    r.headers_mut().insert(
        "x-content-type-options",
        http::HeaderValue::from_static("nosniff"),
    );
    r
}

/// Parses a query string into a map; flags without `=` map to the empty string.
pub fn query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..(i + 3).min(b.len())])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const POST_ONLY: &[&str] = &[
    "/logging",
    "/healthcheck/fail",
    "/healthcheck/ok",
    "/drain_listeners",
    "/quitquitquit",
];

async fn route(server: Arc<Server>, req: Request<hyper::body::Incoming>) -> AdminResponse {
    let path = req.uri().path().to_string();
    let q = query(req.uri().query());
    let post = req.method() == Method::POST;
    if POST_ONLY.contains(&path.as_str()) && !post && !(path == "/logging" && q.is_empty()) {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=UTF-8",
            "This endpoint requires POST\n",
        );
    }
    handlers::handle(&server, &path, &q).await
}

/// Binds the admin address (at start-up, so a busy port is reported at once).
pub fn bind(address: &Address) -> std::io::Result<crate::listener::BoundSocket> {
    crate::listener::bind(address, false, false).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot bind admin address {address}: {e}"),
        )
    })
}

/// Serves the admin API until the process exits.
pub async fn serve(
    server: Arc<Server>,
    socket: crate::listener::BoundSocket,
) -> std::io::Result<()> {
    enum L {
        Tcp(tokio::net::TcpListener),
        Unix(tokio::net::UnixListener),
    }
    let l = match socket {
        crate::listener::BoundSocket::Tcp(t) => L::Tcp(tokio::net::TcpListener::from_std(t)?),
        crate::listener::BoundSocket::Unix(u) => L::Unix(tokio::net::UnixListener::from_std(u)?),
    };
    loop {
        let io: crate::io::BoxIo = match &l {
            L::Tcp(t) => match t.accept().await {
                Ok((s, _)) => Box::new(s),
                Err(_) => continue,
            },
            L::Unix(u) => match u.accept().await {
                Ok((s, _)) => Box::new(s),
                Err(_) => continue,
            },
        };
        let server = server.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, std::convert::Infallible>(route(server, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_parsing() {
        let q = super::query(Some("usedonly&filter=%5Ecluster%5C.&level=debug"));
        assert_eq!(q["usedonly"], "");
        assert_eq!(q["filter"], "^cluster\\.");
        assert_eq!(q["level"], "debug");
    }
}
