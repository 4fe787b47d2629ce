//! The hostile-input suite: clients and upstreams that misbehave on purpose (slowloris
//! heads, uploads to upstreams that answer early or stop reading), run side by side with
//! Envoy 1.40 on the same bootstrap. Each scenario asserts what a client observes, that
//! other clients keep being served, and that the proxy's sockets return to their
//! baseline.

use e2e::config::{bootstrap, cluster, hcm, listener};
use e2e::proxy::{same_in_both, Proxy};
use e2e::{curl, free_port, sockets};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A listener on `port` routing everything to cluster `c` (one host on `upstream`), with
/// extra HCM and route fields.
fn config(port: u16, upstream: u16, hcm_extra: Value, route_extra: Value) -> String {
    config_with(
        port,
        upstream,
        [hcm_extra, route_extra],
        json!({}),
        json!({}),
    )
}

/// [`config`] with `listener_extra` merged into the listener and `cluster_extra` into
/// the cluster.
fn config_with(
    port: u16,
    upstream: u16,
    [hcm_extra, route_extra]: [Value; 2],
    listener_extra: Value,
    cluster_extra: Value,
) -> String {
    let mut route = json!({"cluster": "c"});
    e2e::config::merge(&mut route, route_extra);
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": route}]}]);
    let mut l = listener("l", port, hcm(vh, hcm_extra), json!({}));
    e2e::config::merge(&mut l, listener_extra);
    bootstrap(vec![l], vec![cluster("c", &[upstream], cluster_extra)])
}

/// Reads one response head (and a `content-length` body) from `r`: the status line,
/// or `None` when the connection ended first.
fn read_response(r: &mut impl BufRead) -> Option<(String, String)> {
    let mut status = String::new();
    r.read_line(&mut status).ok().filter(|n| *n > 0)?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok().filter(|n| *n > 0)?;
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    Some((
        status.trim_end().to_string(),
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// The answer (status line, body) to raw `request` bytes sent on a new connection.
fn raw_answer(port: u16, request: &str) -> Option<(String, String)> {
    let raw = curl::raw(port, request.as_bytes(), 5);
    read_response(&mut BufReader::new(&raw[..]))
}

/// Whether the peer closed `s` (end of input or a reset) within `secs`, discarding
/// anything it still sends.
fn closed_within(s: &mut TcpStream, secs: u64) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// An HTTP/1.1 upstream that answers a POST with 401 at once, before reading its body
/// (then reads and discards the body, as servers that keep the connection do), and a GET
/// with 200 naming the connection it came on. It records when each connection closed.
struct EarlyAnswering {
    port: u16,
    /// Per connection (by number, from 1): whether it carried a POST, and whether the
    /// proxy closed it.
    conns: Arc<Mutex<Vec<(bool, bool)>>>,
}

impl EarlyAnswering {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let conns: Arc<Mutex<Vec<(bool, bool)>>> = Arc::default();
        let shared = conns.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let id = {
                    let mut c = shared.lock().unwrap();
                    c.push((false, false));
                    c.len()
                };
                let shared = shared.clone();
                std::thread::spawn(move || Self::serve(stream, id, &shared));
            }
        });
        EarlyAnswering { port, conns }
    }

    fn serve(stream: TcpStream, id: usize, conns: &Mutex<Vec<(bool, bool)>>) {
        let mut w = stream.try_clone().expect("clone");
        let mut r = BufReader::new(stream);
        loop {
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        conns.lock().unwrap()[id - 1].1 = true;
                        return;
                    }
                    Ok(_) if line == "\r\n" => break,
                    Ok(_) => head.push(line.to_ascii_lowercase()),
                }
            }
            let length: u64 = head
                .iter()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let answer = if head.first().is_some_and(|l| l.starts_with("post")) {
                conns.lock().unwrap()[id - 1].0 = true;
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_string()
            } else {
                let body = format!("conn {id}");
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
            };
            if w.write_all(answer.as_bytes()).is_err() {
                return;
            }
            if std::io::copy(&mut (&mut r).take(length), &mut std::io::sink()).is_err() {
                return;
            }
        }
    }

    /// The connections that carried the POST: whether each was closed.
    fn post_connections(&self) -> Vec<bool> {
        let c = self.conns.lock().unwrap();
        c.iter()
            .filter(|(post, _)| *post)
            .map(|(_, closed)| *closed)
            .collect()
    }

    /// The POST's connection number.
    fn post_connection(&self) -> Option<usize> {
        let c = self.conns.lock().unwrap();
        c.iter().position(|(post, _)| *post).map(|i| i + 1)
    }
}

/// Starts a POST of `total` bytes sent in `chunk`-byte slices every `gap` on a thread;
/// returns the connection's reading half.
fn slow_upload(port: u16, total: usize, chunk: usize, gap: Duration) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(
        format!("POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: {total}\r\n\r\n").as_bytes(),
    )
    .expect("head");
    let mut w = s.try_clone().expect("clone");
    std::thread::spawn(move || {
        let data = vec![b'u'; chunk];
        for _ in 0..total / chunk {
            if w.write_all(&data).is_err() {
                return;
            }
            std::thread::sleep(gap);
        }
    });
    s
}

/// Issue 23, hole 1: an upstream that answers before reading the request body must not
/// have its connection handed to the next request while the body is still being sent;
/// the connection is closed instead, and other clients' GETs through the same one-host
/// cluster are served at once.
#[test]
fn an_early_answer_closes_the_upstream_connection_and_others_are_served() {
    let observed = same_in_both(|kind| {
        let up = EarlyAnswering::start();
        let port = free_port();
        let p = Proxy::start(kind, &config(port, up.port, json!({}), json!({})), &[]);
        // 2.4 MB over about 8 s, still arriving while the GETs run.
        let upload = slow_upload(port, 2_400_000, 80_000, Duration::from_millis(270));
        let mut reader = BufReader::new(upload);
        let early = read_response(&mut reader).map(|(status, _)| status);
        let post_conn = up.post_connection();
        // Other clients, while the upload is still going: each served promptly, on
        // another connection than the POST's.
        let gets: Vec<(u16, bool)> = (0..5)
            .map(|_| {
                let r = curl::get(port, "/", &["--max-time", "3"]);
                let other = post_conn.is_some_and(|c| r.text() != format!("conn {c}"));
                (r.status, other)
            })
            .collect();
        let closed = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            up.post_connections() == [true]
        });
        drop(p);
        (early, gets, closed)
    });
    if let Some((early, gets, closed)) = observed {
        assert_eq!(early.as_deref(), Some("HTTP/1.1 401 Unauthorized"));
        assert!(gets.iter().all(|g| *g == (200, true)), "{gets:?}");
        assert!(closed, "the early-answered upstream connection is closed");
    }
}

/// The answer (status line, body) to a request head that never completes, `None` when
/// nothing came back within 8 s, and whether the connection was then closed.
type HeadAnswer = (Option<(String, String)>, bool);

/// Sends half a request head (then, with `dribble`, a byte every 300 ms) and observes.
fn half_head(port: u16, dribble: bool) -> HeadAnswer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").expect("head");
    let mut w = s.try_clone().expect("clone");
    if dribble {
        // One byte every 300 ms: activity that must not keep the head alive.
        std::thread::spawn(move || {
            for _ in 0..30 {
                std::thread::sleep(Duration::from_millis(300));
                if w.write_all(b"x").is_err() {
                    return;
                }
            }
        });
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(8)));
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let answer = read_response(&mut r);
    (answer, closed_within(&mut s, 5))
}

/// Runs both half-head probes (one sent at once, one dribbled a byte every 300 ms)
/// against a listener with `hcm_extra`, in Envoy and meshproxy: both must answer each
/// 408 with `body` and close the connection, count both in `stat`, and log both alike.
fn slowloris_gets_408(hcm_extra: Value, stat: &str, body: &str) {
    let observed = same_in_both(|kind| {
        let port = free_port();
        let log = e2e::scratch("slowloris").join("access.log");
        let mut hcm_extra = hcm_extra.clone();
        e2e::config::merge(
            &mut hcm_extra,
            json!({"access_log": [{"name": "f", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": log.display().to_string(),
                "log_format": {"text_format_source": {"inline_string":
                    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %PROTOCOL% %BYTES_SENT%\n"}}}}]}),
        );
        let config = config(port, free_port(), hcm_extra, json!({}));
        let p = Proxy::start(kind, &config, &["--file-flush-interval-msec", "50"]);
        let answers = vec![half_head(port, false), half_head(port, true)];
        e2e::wait_until(10, "two access log lines", || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.lines().count() >= 2)
        });
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        (answers, p.stat(stat), logged)
    });
    if let Some((answers, count, logged)) = observed {
        let answered = (
            Some(("HTTP/1.1 408 Request Timeout".to_string(), body.to_string())),
            true,
        );
        assert_eq!(answers, vec![answered; 2]);
        assert_eq!(count, Some(2));
        assert!(logged.lines().all(|l| l.starts_with("408 ")), "{logged}");
    }
}

/// Issue 23, hole 2: a half-sent head (or one dribbled a byte at a time) is answered 408
/// at the stream idle timeout, counted from its first byte, and the connection is
/// closed, as in Envoy; the connection's own `idle_timeout` does not cover a head.
#[test]
fn slowloris_heads_get_408_at_the_stream_idle_timeout() {
    slowloris_gets_408(
        json!({"stream_idle_timeout": "1s", "common_http_protocol_options": {"idle_timeout": "30s"}}),
        "http.ingress.downstream_rq_idle_timeout",
        "stream timeout",
    );
}

/// Envoy's `request_headers_timeout`: a head not complete within it of its first byte is
/// answered 408 `request header timeout` and the connection closed, however long the
/// stream idle timeout is.
#[test]
fn slowloris_heads_get_408_at_the_request_headers_timeout() {
    slowloris_gets_408(
        json!({"stream_idle_timeout": "30s", "request_headers_timeout": "1s"}),
        "http.ingress.downstream_rq_header_timeout",
        "request header timeout",
    );
}

/// A connection that sends nothing is no head: `request_headers_timeout` leaves it alone
/// and the connection `idle_timeout` closes it without a word, as it closes a kept-alive
/// connection after its request.
#[test]
fn silent_and_kept_alive_connections_end_at_the_idle_timeout_without_a_reply() {
    let up = e2e::upstream::Upstream::http("u");
    let observed = same_in_both(|kind| {
        let port = free_port();
        let hcm_extra = json!({"request_headers_timeout": "1s",
            "common_http_protocol_options": {"idle_timeout": "3s"}});
        let p = Proxy::start(kind, &config(port, up.port, hcm_extra, json!({})), &[]);
        let mut silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let mut kept = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        kept.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .expect("request");
        let mut r = BufReader::new(kept.try_clone().expect("clone"));
        let first = read_response(&mut r).map(|(status, _)| status);
        let silent_out = {
            let mut got = Vec::new();
            let _ = silent.set_read_timeout(Some(Duration::from_secs(10)));
            let closed = silent.read_to_end(&mut got).is_ok();
            (got, closed)
        };
        let kept_closed = closed_within(&mut kept, 10);
        let rest = r.buffer().to_vec();
        drop(p);
        (first, silent_out, kept_closed, rest)
    });
    if let Some((first, silent, kept_closed, rest)) = observed {
        assert_eq!(first.as_deref(), Some("HTTP/1.1 200 OK"));
        assert_eq!(silent, (Vec::new(), true), "closed, nothing sent");
        assert!(kept_closed);
        assert!(rest.is_empty());
    }
}

/// An upstream that reads a request head and then neither reads nor answers.
fn stuck_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            held.push(s);
        }
    });
    port
}

/// Issue 23, hole 3: after the route timeout answers 504 to an upload whose upstream
/// stopped reading, both the downstream and the upstream connection are released (the
/// proxy's sockets return to their baseline), as in Envoy. The buffer limits are raised
/// so that Envoy, whose route timeout starts once the request is complete, takes the
/// whole body; meshproxy is left holding a body the upstream does not take.
#[test]
fn a_timed_out_upload_releases_both_connections() {
    let observed = same_in_both(|kind| {
        let up = stuck_upstream();
        let port = free_port();
        let limit = json!({"per_connection_buffer_limit_bytes": 32 << 20});
        let timeout = json!({"timeout": "1s"});
        let config = config_with(port, up, [json!({}), timeout], limit.clone(), limit);
        let p = Proxy::start(kind, &config, &[]);
        let baseline = sockets::open_sockets(p.pid());
        let answers: Vec<Option<String>> = (0..2)
            .map(|_| {
                // 4 MB as fast as the proxy takes it.
                let upload = slow_upload(port, 4 << 20, 256 << 10, Duration::ZERO);
                let _ = upload.set_read_timeout(Some(Duration::from_secs(10)));
                read_response(&mut BufReader::new(upload)).map(|(status, _)| status)
            })
            .collect();
        let released = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            sockets::open_sockets(p.pid()) <= baseline
        });
        (answers, released)
    });
    if let Some((answers, released)) = observed {
        let timeout = Some("HTTP/1.1 504 Gateway Timeout".to_string());
        assert_eq!(answers, vec![timeout; 2]);
        assert!(released, "the proxy's sockets return to their baseline");
    }
}

/// Issue 23, item 4: the route timeout starts once the request is complete, as Envoy's:
/// a steady upload longer than the timeout is answered by the upstream, not cut at 504.
#[test]
fn the_route_timeout_starts_when_the_upload_is_complete() {
    let up = e2e::upstream::Upstream::http("u");
    let observed = same_in_both(|kind| {
        let port = free_port();
        let timeout = json!({"timeout": "1s"});
        let p = Proxy::start(kind, &config(port, up.port, json!({}), timeout), &[]);
        // 200 kB over about 2 s.
        let upload = slow_upload(port, 200_000, 20_000, Duration::from_millis(200));
        let _ = upload.set_read_timeout(Some(Duration::from_secs(10)));
        let status = read_response(&mut BufReader::new(upload)).map(|(status, _)| status);
        drop(p);
        (status, up.last().map(|r| r.body.len()))
    });
    if let Some((status, body)) = observed {
        assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
        assert_eq!(body, Some(200_000));
    }
}

/// An upstream that accepts any upgrade and then echoes.
fn upgrading_echo() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = s.try_clone().expect("clone");
                let mut r = BufReader::new(s);
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let switched = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";
                if w.write_all(switched.as_bytes()).is_ok() {
                    let _ = std::io::copy(&mut r, &mut w);
                }
            });
        }
    });
    port
}

/// The head deadline ends with the head: an upgraded (WebSocket) connection that stays
/// busy outlives the stream idle timeout, its bytes never taken for a new head.
#[test]
fn an_upgraded_connection_is_not_taken_for_a_slow_head() {
    let up = upgrading_echo();
    let observed = same_in_both(|kind| {
        let port = free_port();
        let hcm_extra = json!({"stream_idle_timeout": "1s",
            "upgrade_configs": [{"upgrade_type": "websocket"}]});
        let p = Proxy::start(kind, &config(port, up, hcm_extra, json!({})), &[]);
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(
            b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        )
        .expect("upgrade");
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let switched = read_response(&mut r).map(|(status, _)| status);
        // A frame every 300 ms for 3 s: three stream idle timeouts of steady traffic.
        let echoed = (0..10).all(|i| {
            std::thread::sleep(Duration::from_millis(300));
            let frame = format!("frame {i}\n");
            let mut back = String::new();
            s.write_all(frame.as_bytes()).is_ok() && r.read_line(&mut back).is_ok() && back == frame
        });
        drop(p);
        (switched, echoed)
    });
    if let Some((switched, echoed)) = observed {
        assert_eq!(
            switched.as_deref(),
            Some("HTTP/1.1 101 Switching Protocols")
        );
        assert!(echoed, "every frame echoed");
    }
}

/// The other side of the early-answer rule: uploads the upstream reads before answering
/// keep reusing one pooled connection, as in Envoy.
#[test]
fn answered_uploads_keep_reusing_one_upstream_connection() {
    let observed = same_in_both(|kind| {
        let up = e2e::upstream::Upstream::http("u");
        let port = free_port();
        let p = Proxy::start(kind, &config(port, up.port, json!({}), json!({})), &[]);
        let body = "b".repeat(100_000);
        let statuses: Vec<u16> = (0..5)
            .map(|_| curl::get(port, "/", &["--data-binary", &body]).status)
            .collect();
        drop(p);
        (statuses, up.connections())
    });
    if let Some((statuses, connections)) = observed {
        assert_eq!(statuses, vec![200; 5]);
        assert_eq!(connections, 1);
    }
}

/// Issue 23, item 8: `x-envoy-*` headers an external client sends to steer the router or
/// to pass for internal never reach the upstream; on an edge (`use_remote_address`)
/// neither do those naming the calling service, while other `x-envoy-*` headers pass,
/// as in Envoy.
#[test]
fn client_sent_internal_envoy_headers_do_not_reach_the_upstream() {
    const SENT: [&str; 7] = [
        "x-envoy-internal",
        "x-envoy-decorator-operation",
        "x-envoy-upstream-stream-duration-ms",
        "x-envoy-downstream-service-cluster",
        "x-envoy-downstream-service-node",
        "x-envoy-max-retries",
        "x-envoy-custom",
    ];
    let up = e2e::upstream::Upstream::http("u");
    let observed = same_in_both(|kind| {
        [json!({}), json!({"use_remote_address": true})].map(|hcm_extra| {
            let port = free_port();
            let p = Proxy::start(kind, &config(port, up.port, hcm_extra, json!({})), &[]);
            let args: Vec<String> = SENT.iter().map(|h| format!("{h}: 1")).collect();
            let args: Vec<&str> = args.iter().flat_map(|h| ["-H", h.as_str()]).collect();
            let status = curl::get(port, "/", &args).status;
            drop(p);
            let arrived: Vec<&str> = up
                .last()
                .map(|r| SENT.into_iter().filter(|h| r.header(h).is_some()).collect())
                .unwrap_or_default();
            (status, arrived)
        })
    });
    if let Some([plain, edge]) = observed {
        assert_eq!(plain.0, 200);
        assert!(!plain.1.contains(&"x-envoy-internal"), "{plain:?}");
        assert!(
            !plain.1.contains(&"x-envoy-upstream-stream-duration-ms"),
            "{plain:?}"
        );
        assert_eq!(edge, (200, vec!["x-envoy-custom"]));
    }
}

/// Issue 23, item 6: an HTTP/1.1 client's offer to switch to HTTP/2 (`curl --http2` over
/// plain HTTP sends `Upgrade: h2c`) is ignored, not refused: the request is served as
/// HTTP/1.1 and the offer (`upgrade`, `http2-settings`) does not reach the upstream, as
/// in Envoy.
#[test]
fn an_h2c_upgrade_offer_is_ignored_and_served_as_http_1_1() {
    let observed = same_in_both(|kind| {
        let up = e2e::upstream::Upstream::http("u");
        let port = free_port();
        let p = Proxy::start(kind, &config(port, up.port, json!({}), json!({})), &[]);
        let r = curl::get(port, "/", &["--http2"]);
        drop(p);
        let offer = up.last().map(|r| {
            ["upgrade", "http2-settings"]
                .into_iter()
                .filter(|h| r.header(h).is_some())
                .collect::<Vec<_>>()
        });
        (r.status, r.text(), r.version, offer)
    });
    if let Some(observed) = observed {
        assert_eq!(
            observed,
            (200, "u".to_string(), "1.1".to_string(), Some(vec![]))
        );
    }
}

/// Issue 23, item 5: a malformed request body (a chunk size that is no number, 100 kB of
/// trailers) is the client's fault: it is answered 400 (431 for the trailers) and blames
/// nobody upstream, so three of them in a row neither count as upstream 5xx nor eject the cluster's only host under
/// `consecutive_5xx: 3`, as in Envoy (meshproxy answered 503 and ejected it).
#[test]
fn a_malformed_client_body_gets_400_and_blames_no_upstream_host() {
    let up = e2e::upstream::Upstream::http("u");
    let observed = same_in_both(|kind| {
        let port = free_port();
        let outlier = json!({"outlier_detection": {"consecutive_5xx": 3, "interval": "30s"}});
        let config = config_with(port, up.port, [json!({}), json!({})], json!({}), outlier);
        let p = Proxy::start(kind, &config, &[]);
        let head = "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
        let bad_chunk = format!("{head}zz\r\nabc\r\n0\r\n\r\n");
        let trailer = format!("x-t: {}\r\n", "t".repeat(1000));
        let big_trailers = format!("{head}0\r\n{}\r\n", trailer.repeat(100));
        let answers: Vec<Option<(String, String)>> = [&bad_chunk, &bad_chunk, &big_trailers]
            .map(|bad| raw_answer(port, bad))
            .into();
        let good = curl::get(port, "/", &[]).status;
        let blamed = [
            "upstream_rq_5xx",
            "outlier_detection.ejections_enforced_total",
        ]
        .map(|s| p.stat(&format!("cluster.c.{s}")).unwrap_or(0));
        (answers, good, blamed, p.health_flags("c", up.port))
    });
    if let Some((answers, good, blamed, flags)) = observed {
        let statuses: Vec<&str> = answers.iter().flatten().map(|a| &a.0[..12]).collect();
        assert_eq!(statuses, ["HTTP/1.1 400", "HTTP/1.1 400", "HTTP/1.1 431"]);
        assert_eq!((good, blamed, flags.as_str()), (200, [0, 0], "healthy"));
    }
}

/// Issue 23, item 7: paths a backend may read otherwise than the routes and RBAC did.
/// With `normalize_path`, a dot segment with parameters (`..;`, `..;a`, `.;`) is a dot
/// segment, so `/x/..;/b` is routed, authorised and forwarded as `/b`, and an escaped
/// NUL is answered 400; without it both go as sent. Each path's status and the path the
/// upstream received are Envoy's.
#[test]
fn dot_dot_semicolon_segments_and_nul_escapes_in_paths_are_treated_as_envoy_does() {
    const PATHS: [&str; 6] = [
        "/x/..;/b",
        "/x/..;a/b",
        "/x/.;/b",
        "/x/a;b/./c",
        "/x/%00/b",
        "/x/b%00",
    ];
    let observed = same_in_both(|kind| {
        let up = e2e::upstream::Upstream::http("u");
        [
            json!({"normalize_path": true}),
            json!({"normalize_path": false}),
        ]
        .map(|hcm_extra| {
            let port = free_port();
            let p = Proxy::start(kind, &config(port, up.port, hcm_extra, json!({})), &[]);
            let seen: Vec<(u16, Option<String>)> = PATHS
                .iter()
                .map(|path| {
                    let before = up.count();
                    let r = curl::get(port, path, &["--path-as-is"]);
                    let forwarded = (up.count() > before).then(|| up.last()).flatten();
                    (r.status, forwarded.map(|f| f.path))
                })
                .collect();
            drop(p);
            seen
        })
    });
    if let Some([normalized, _]) = observed {
        let forwarded = |path: &str| (200, Some(path.to_string()));
        assert_eq!(
            normalized,
            [
                forwarded("/b"),
                forwarded("/b"),
                forwarded("/x/b"),
                forwarded("/x/a;b/c"),
                (400, None),
                (400, None)
            ]
        );
    }
}

/// An upstream that answers anything with bytes that are no HTTP response.
fn garbage_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"this is no http\r\n\r\n");
        }
    });
    port
}

/// Issue 23, item 9: requests Envoy refuses before routing, and an upstream that answers
/// garbage, get Envoy's answers: a CONNECT matches no route (404); HTTP/1.1 without
/// `Host`, or with a space in it, is refused 400 (userinfo is an authority's and passes);
/// bytes that are no HTTP response from the upstream are a protocol error, 502.
#[test]
fn malformed_heads_and_garbage_upstreams_get_envoys_answers() {
    let heads = [
        "CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: a b\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: user@x\r\n\r\n",
    ];
    let observed = same_in_both(|kind| {
        let up = e2e::upstream::Upstream::http("u");
        let port = free_port();
        let p = Proxy::start(kind, &config(port, up.port, json!({}), json!({})), &[]);
        let answers: Vec<Option<String>> = heads
            .iter()
            .map(|h| raw_answer(port, h).map(|(s, _)| s))
            .collect();
        drop(p);
        let port = free_port();
        let p = Proxy::start(
            kind,
            &config(port, garbage_upstream(), json!({}), json!({})),
            &[],
        );
        let garbage = curl::get(port, "/", &[]);
        drop(p);
        (answers, up.count(), garbage.status, garbage.text())
    });
    if let Some((answers, forwarded, status, body)) = observed {
        let lines: Vec<&str> = answers.iter().flatten().map(|s| &s[..12]).collect();
        assert_eq!(
            lines,
            [
                "HTTP/1.1 404",
                "HTTP/1.1 400",
                "HTTP/1.1 400",
                "HTTP/1.1 200"
            ]
        );
        assert_eq!(forwarded, 1, "only the request with userinfo is forwarded");
        assert_eq!(status, 502);
        assert!(body.ends_with("protocol error"), "{body}");
    }
}

/// Runs `--mode validate` on `config` in Envoy (at `envoy`) and meshproxy: whether
/// Envoy accepted it, and meshproxy's exit code and standard error.
fn validate_in_both(envoy: &std::path::Path, config: &str) -> (bool, i32, String) {
    let args = ["--mode", "validate", "--config-yaml", config];
    let envoy_ok = std::process::Command::new(envoy)
        .args(args)
        .output()
        .expect("envoy runs")
        .status
        .success();
    let (code, _, err) = e2e::proxy::run_meshproxy(&args);
    (envoy_ok, code, err)
}

/// Issue 23, item 9: a configured header value with CR or LF (which would smuggle a
/// header, or end the head, on the wire) is refused by `--mode validate`, as by Envoy,
/// with an error naming the field.
#[test]
fn header_values_with_cr_or_lf_are_refused_by_validate() {
    let Some(envoy) = e2e::proxy::envoy_bin() else {
        return;
    };
    for value in ["a\r\nx-injected: 1", "a\nb"] {
        let route = json!({"request_headers_to_add": [{"header": {"key": "x-a", "value": value}}]});
        let config = config(free_port(), free_port(), json!({}), json!({}));
        let mut parsed: Value =
            serde_json::from_str(&config.replace("{ADMIN}", "0")).expect("json");
        let vh = &mut parsed["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0];
        e2e::config::merge(vh, route);
        let config = parsed.to_string();
        let (envoy_ok, code, err) = validate_in_both(&envoy, &config);
        assert_eq!((envoy_ok, code), (false, 1), "{value:?}: {err}");
        assert!(
            err.contains("request_headers_to_add[0].header.value"),
            "{err}"
        );
    }
}

/// Issue 23, item 9: a cluster's `connect_timeout: 0s` (every connection would fail at
/// once) is refused by `--mode validate`, as by Envoy's proto validation, naming the field;
/// the smallest positive timeout still loads in both.
#[test]
fn a_zero_connect_timeout_is_refused_by_validate() {
    let envoy = e2e::proxy::envoy_bin().expect("Envoy");
    let answers: Vec<(bool, i32, String)> = ["0s", "0.001s"]
        .into_iter()
        .map(|timeout| {
            let config = config(free_port(), free_port(), json!({}), json!({}));
            let mut parsed: Value =
                serde_json::from_str(&config.replace("{ADMIN}", "0")).expect("json");
            parsed["static_resources"]["clusters"][0]["connect_timeout"] = json!(timeout);
            validate_in_both(&envoy, &parsed.to_string())
        })
        .collect();
    let outcomes: Vec<(bool, i32)> = answers.iter().map(|a| (a.0, a.1)).collect();
    assert_eq!(outcomes, [(false, 1), (true, 0)], "{answers:?}");
    assert!(
        answers[0].2.contains("clusters[0].connect_timeout"),
        "{}",
        answers[0].2
    );
}

/// Issue 23, item 9: two listeners on the same address are refused by `--mode validate`,
/// as by Envoy, naming the second, even when it does not bind (`bind_to_port: false`).
#[test]
fn two_listeners_binding_one_address_are_refused_by_validate() {
    let Some(envoy) = e2e::proxy::envoy_bin() else {
        return;
    };
    let (port, up) = (free_port(), free_port());
    let answers: Vec<(bool, i32, String)> = [json!({}), json!({"bind_to_port": false})]
        .into_iter()
        .map(|second| {
            let config = config(port, up, json!({}), json!({}));
            let mut parsed: Value =
                serde_json::from_str(&config.replace("{ADMIN}", "0")).expect("json");
            let listeners = &mut parsed["static_resources"]["listeners"];
            let mut other = listeners[0].clone();
            other["name"] = json!("l2");
            e2e::config::merge(&mut other, second);
            listeners.as_array_mut().expect("listeners").push(other);
            validate_in_both(&envoy, &parsed.to_string())
        })
        .collect();
    let outcomes: Vec<(bool, i32)> = answers.iter().map(|a| (a.0, a.1)).collect();
    assert_eq!(outcomes, [(false, 1), (false, 1)], "{answers:?}");
    for (_, _, err) in &answers {
        assert!(
            err.contains("static_resources.listeners[1].address"),
            "{err}"
        );
    }
}
