//! Real HTTP clients for tests: `curl` (HTTP/1.1, h2c prior knowledge, TLS, mTLS) and a
//! minimal raw HTTP/1.1 client for admin calls and hand-written malformed requests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

/// A response as a client saw it.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// Status code (0 when no response).
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// HTTP version curl reports (`1.1`, `2`).
    pub version: String,
}

impl Response {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs `curl` with `args` against `url`; extra args come first.
pub fn curl(args: &[&str], url: &str) -> Response {
    run(Command::new("curl"), args, url)
}

/// [`curl`] from inside a network namespace (an app in a "pod").
pub fn curl_in(ns: &crate::netns::Netns, args: &[&str], url: &str) -> Response {
    run(ns.cmd("curl", &[]), args, url)
}

fn run(mut curl: Command, args: &[&str], url: &str) -> Response {
    let dir = crate::scratch("curl");
    let headers = dir.join("headers");
    let body = dir.join("body");
    let out = curl
        .args(["-sS", "--max-time", "15", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl is installed");
    let written = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = written.split_whitespace();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let version = parts.next().unwrap_or("").to_string();
    let raw = std::fs::read_to_string(&headers).unwrap_or_default();
    // Keep the last header block (after any 100 Continue).
    let block = raw.trim_end().rsplit("\r\n\r\n").next().unwrap_or("");
    let headers = block
        .lines()
        .skip(1)
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let body = std::fs::read(&body).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    Response {
        status,
        headers,
        body,
        version,
    }
}

/// GET `http://127.0.0.1:<port><path>` with extra curl args.
pub fn get(port: u16, path: &str, args: &[&str]) -> Response {
    curl(args, &format!("http://127.0.0.1:{port}{path}"))
}

/// GET `https://127.0.0.1:<port><path>` with extra curl args (`-k` to skip verification).
pub fn get_tls(port: u16, path: &str, args: &[&str]) -> Response {
    curl(args, &format!("https://127.0.0.1:{port}{path}"))
}

/// Sends raw bytes, returns what came back before the server closed or `secs` passed.
pub fn raw(port: u16, request: &[u8], secs: u64) -> Vec<u8> {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(secs)));
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// A one-shot HTTP/1.1 request with `connection: close`: (status, body).
pub fn raw_http(method: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let req = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let resp = raw(port, req.as_bytes(), 10);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
