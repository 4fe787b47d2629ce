//! gRPC framing as the proxy reads it from clients and upstreams: the message prefix
//! scanned for `grpc_stats`, the health-check response body, and the `grpc-timeout`
//! header.

use meshproxy::config::route::parse_grpc_timeout;
use meshproxy::http::grpc_stats::FrameScanner;
use meshproxy::upstream::health::probe::grpc_serving;
use std::time::Duration;

/// How many messages start in `stream`, by walking it prefix to prefix.
fn messages_started(stream: &[u8]) -> u64 {
    let (mut at, mut started) = (0usize, 0);
    while let Some(prefix) = stream.get(at..at + 5) {
        started += 1;
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        at = at.saturating_add(5 + len);
    }
    started
}

/// A stream of gRPC messages: the scanner counts what a walk over the whole stream
/// counts, however the stream is split (the first byte chooses the split points). The
/// same bytes as a health-check response body do not panic.
pub fn frames(data: &[u8]) {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 16) + 1;
    let mut scanner = FrameScanner::default();
    let counted: u64 = stream.chunks(step).map(|c| scanner.scan(c)).sum();
    assert_eq!(
        counted,
        messages_started(stream),
        "split every {step} bytes"
    );
    let _ = grpc_serving(stream);
}

/// `grpc-timeout`: 1 to 8 ASCII digits and a unit (gRPC over HTTP/2, "Timeout"); every
/// other value is refused.
fn timeout_model(value: &str) -> Option<Duration> {
    let (&unit, digits) = value.as_bytes().split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    let per_unit = match unit {
        b'H' => Duration::from_secs(3600),
        b'M' => Duration::from_secs(60),
        b'S' => Duration::from_secs(1),
        b'm' => Duration::from_millis(1),
        b'u' => Duration::from_micros(1),
        b'n' => Duration::from_nanos(1),
        _ => return None,
    };
    per_unit.checked_mul(n)
}

/// The `grpc-timeout` header value, against the protocol's grammar.
pub fn timeout(data: &[u8]) {
    let value = String::from_utf8_lossy(data);
    assert_eq!(
        parse_grpc_timeout(&value),
        timeout_model(&value),
        "{value:?}"
    );
}
