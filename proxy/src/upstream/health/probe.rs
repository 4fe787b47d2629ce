//! One active health check of one host: an HTTP request, a TCP exchange or a gRPC
//! `Health/Check`, over a connection kept between checks when the config reuses it.

use crate::config::health_check::{HttpProbe, Probe};
use crate::upstream::cluster::Cluster;
use crate::upstream::connect;
use crate::upstream::host::Host;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The host answered as expected.
    Pass,
    /// No answer: connect failure, reset, timeout (counts toward the threshold).
    NetworkFailure,
    /// An answer with a retriable status (counts toward the threshold).
    RetriableFailure,
    /// A wrong answer: the host is unhealthy at once.
    Failure,
}

/// A connection kept between checks.
pub enum Connection {
    /// HTTP/1.1.
    Http1(http1::SendRequest<Full<Bytes>>),
    /// HTTP/2 (HTTP checks over h2, gRPC).
    Http2(http2::SendRequest<Full<Bytes>>),
    /// A raw stream (TCP checks).
    Tcp(crate::io::BoxIo),
}

/// Runs one check of `host`; `kept` is the connection from the last check (taken, and
/// put back when it is still usable).
pub async fn check(
    cluster: &Cluster,
    host: &Host,
    probe: &Probe,
    kept: &mut Option<Connection>,
) -> Verdict {
    match probe {
        Probe::Http(p) => {
            let request = http_request(cluster, p);
            match exchange(cluster, host, p.http2, request, kept).await {
                Some((status, _)) => http_verdict(p, status),
                None => Verdict::NetworkFailure,
            }
        }
        Probe::Grpc { service, authority } => {
            let request = grpc_request(cluster, service, authority);
            match exchange(cluster, host, true, request, kept).await {
                Some((200, Some(body))) if grpc_serving(&body) => Verdict::Pass,
                Some(_) => Verdict::Failure,
                None => Verdict::NetworkFailure,
            }
        }
        Probe::Tcp { send, receive } => tcp(cluster, host, send, receive, kept).await,
    }
}

fn http_verdict(p: &HttpProbe, status: u16) -> Verdict {
    let within = |ranges: &[(u16, u16)]| ranges.iter().any(|(a, b)| (*a..*b).contains(&status));
    if within(&p.expected) {
        Verdict::Pass
    } else if within(&p.retriable) {
        Verdict::RetriableFailure
    } else {
        Verdict::Failure
    }
}

fn http_request(cluster: &Cluster, p: &HttpProbe) -> http::Request<Full<Bytes>> {
    let authority = if p.host.is_empty() {
        cluster.config.name.clone()
    } else {
        p.host.clone()
    };
    let mut request = request(p.http2, &authority, &p.path);
    *request.method_mut() = p.method.clone();
    request.headers_mut().insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("Envoy/HC"),
    );
    crate::http::headers::apply(
        request.headers_mut(),
        &p.headers,
        &crate::access_log::record::Record::new(0),
    );
    request
}

fn grpc_request(cluster: &Cluster, service: &str, authority: &str) -> http::Request<Full<Bytes>> {
    let authority = if authority.is_empty() {
        cluster.config.name.as_str()
    } else {
        authority
    };
    // HealthCheckRequest { service = 1 } in a gRPC frame (uncompressed, length-prefixed).
    let mut message = Vec::with_capacity(service.len() + 2);
    if !service.is_empty() {
        message.push(0x0a);
        push_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let mut request = request(true, authority, "/grpc.health.v1.Health/Check");
    *request.method_mut() = http::Method::POST;
    *request.body_mut() = Full::new(Bytes::from(frame));
    let h = request.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    h.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    request
}

/// A bodiless request for `path`, addressed the way the codec needs: `Host` for
/// HTTP/1.1, an absolute URI for HTTP/2.
fn request(http2: bool, authority: &str, path: &str) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::new(Full::new(Bytes::new()));
    let uri = if http2 {
        format!("http://{authority}{path}")
    } else {
        path.to_string()
    };
    *request.uri_mut() = uri.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
    if !http2 {
        if let Ok(v) = http::HeaderValue::from_str(authority) {
            request.headers_mut().insert(http::header::HOST, v);
        }
    }
    request
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Whether a gRPC response body (one length-prefixed frame) carries
/// `HealthCheckResponse { status: SERVING }` (field 1, value 1). Public for the fuzz
/// targets: the body is the upstream's.
pub fn grpc_serving(body: &[u8]) -> bool {
    let Some(mut message) = body.get(5..) else {
        return false;
    };
    let mut status = 0;
    while let Some((key, rest)) = read_varint(message) {
        let (field, wire) = (key >> 3, key & 7);
        message = match wire {
            0 => {
                let Some((value, rest)) = read_varint(rest) else {
                    return false;
                };
                if field == 1 {
                    status = value;
                }
                rest
            }
            2 => {
                let Some((len, rest)) = read_varint(rest) else {
                    return false;
                };
                match rest.get(len as usize..) {
                    Some(rest) => rest,
                    None => return false,
                }
            }
            _ => return false,
        };
    }
    status == 1
}

fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Sends `request` on the kept connection or a new one; returns the status and, for
/// successful gRPC exchanges (grpc-status 0), the body.
async fn exchange(
    cluster: &Cluster,
    host: &Host,
    http2: bool,
    request: http::Request<Full<Bytes>>,
    kept: &mut Option<Connection>,
) -> Option<(u16, Option<Bytes>)> {
    let mut connection = match kept.take() {
        Some(c @ (Connection::Http1(_) | Connection::Http2(_))) => c,
        _ => open_http(cluster, host, http2).await?,
    };
    let response = match &mut connection {
        Connection::Http1(s) => {
            s.ready().await.ok()?;
            s.send_request(request).await.ok()?
        }
        Connection::Http2(s) => {
            s.ready().await.ok()?;
            s.send_request(request).await.ok()?
        }
        Connection::Tcp(_) => return None,
    };
    let status = response.status().as_u16();
    let collected = response.into_body().collect().await.ok()?;
    let ok_grpc = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .is_some_and(|v| v == "0");
    *kept = Some(connection);
    Some((status, ok_grpc.then(|| collected.to_bytes())))
}

async fn open_http(cluster: &Cluster, host: &Host, http2: bool) -> Option<Connection> {
    let connected = connect::connect(cluster, host, cluster.client_tls(host), None)
        .await
        .ok()?;
    let io = TokioIo::new(connected.io);
    if http2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .ok()?;
        tokio::spawn(conn);
        Some(Connection::Http2(sender))
    } else {
        let (sender, conn) = http1::handshake(io).await.ok()?;
        tokio::spawn(conn);
        Some(Connection::Http1(sender))
    }
}

/// Connects (or reuses the stream), writes `send`, and reads until every `receive` block
/// has been seen in order (not necessarily adjacent).
async fn tcp(
    cluster: &Cluster,
    host: &Host,
    send: &[u8],
    receive: &[Vec<u8>],
    kept: &mut Option<Connection>,
) -> Verdict {
    let mut io = match kept.take() {
        Some(Connection::Tcp(io)) => io,
        _ => match connect::connect(cluster, host, cluster.client_tls(host), None).await {
            Ok(c) => c.io,
            Err(_) => return Verdict::NetworkFailure,
        },
    };
    if !send.is_empty() && io.write_all(send).await.is_err() {
        return Verdict::NetworkFailure;
    }
    let mut seen = BytesMut::new();
    while !blocks_in_order(&seen, receive) {
        match io.read_buf(&mut seen).await {
            Ok(0) | Err(_) => return Verdict::NetworkFailure,
            Ok(_) => {}
        }
    }
    *kept = Some(Connection::Tcp(io));
    Verdict::Pass
}

fn blocks_in_order(seen: &[u8], blocks: &[Vec<u8>]) -> bool {
    let mut rest = seen;
    for block in blocks {
        match rest
            .windows(block.len().max(1))
            .position(|w| w == block.as_slice())
        {
            Some(at) => rest = &rest[at + block.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_blocks_match_in_order_not_adjacent() {
        let blocks = vec![b"PO".to_vec(), b"NG".to_vec()];
        assert!(blocks_in_order(b"xxPOyyNGzz", &blocks));
        assert!(!blocks_in_order(b"NGPO", &blocks));
        assert!(!blocks_in_order(b"PO", &blocks));
        assert!(blocks_in_order(b"", &[]));
    }

    #[test]
    fn serving_is_status_one() {
        assert!(grpc_serving(&[0, 0, 0, 0, 2, 0x08, 0x01]));
        assert!(!grpc_serving(&[0, 0, 0, 0, 2, 0x08, 0x02]));
        assert!(!grpc_serving(&[0, 0, 0, 0, 0]));
    }
}
