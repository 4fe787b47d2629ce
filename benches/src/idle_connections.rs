//! Memory per idle keep-alive connection (issue 23): a proxy's anonymous RSS before and
//! after `n` client connections that have each completed one HTTP/1.1 request through it
//! and then sit idle, divided by `n`. What a fleet of idle clients (or a slow, patient
//! attacker) costs each proxy; the upstream side is one pooled connection either way.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Opens `n` connections to `addr`, each with one completed GET; they stay open as long
/// as the returned streams live.
fn idle_clients(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>, String> {
    (0..n)
        .map(|i| {
            let stream = TcpStream::connect(addr).map_err(|e| format!("connection {i}: {e}"))?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            (&stream)
                .write_all(b"GET /idle HTTP/1.1\r\nhost: bench\r\n\r\n")
                .map_err(|e| format!("connection {i}: {e}"))?;
            read_response(&stream).map_err(|e| format!("connection {i}: {e}"))?;
            Ok(stream)
        })
        .collect()
}

/// Reads one response with a `content-length` body; an error unless it is a 200.
fn read_response(stream: &TcpStream) -> Result<(), String> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(format!("answered {line:?}"));
    }
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().map_err(|_| "bad content-length")?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|e| e.to_string())
}

/// Bytes of anonymous RSS each of `n` idle connections adds to the proxy `running`
/// serving `addr`.
pub fn bytes_per_connection(
    running: &crate::proxies::Running,
    addr: SocketAddr,
    n: usize,
) -> Result<f64, String> {
    // One request first, so the upstream connection and the worker's lazily made state
    // are in the baseline, not charged to the idle connections.
    drop(idle_clients(addr, 1)?);
    std::thread::sleep(Duration::from_millis(300));
    let before = running.anonymous_rss() as f64;
    let clients = idle_clients(addr, n)?;
    std::thread::sleep(Duration::from_millis(500));
    let after = running.anonymous_rss() as f64;
    drop(clients);
    Ok((after - before) / n as f64)
}
