//! When the certificates in use expire, for Envoy's
//! `server.days_until_first_cert_expiring`: every certificate chain loaded (static, file
//! or SDS) is tracked while some TLS context still holds it, so a rotated-out
//! certificate stops counting once nothing uses it.

use rustls::sign::CertifiedKey;
use std::sync::{Arc, Mutex, Weak};

/// Loaded chains and their leaf's `notAfter` (Unix seconds).
static TRACKED: Mutex<Vec<(Weak<CertifiedKey>, i64)>> = Mutex::new(Vec::new());

/// Tracks `key`'s leaf certificate (a leaf that does not parse is not tracked).
pub fn track(key: &Arc<CertifiedKey>) {
    let Some(leaf) = key.cert.first() else {
        return;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return;
    };
    let not_after = cert.validity().not_after.timestamp();
    let mut tracked = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    tracked.retain(|(k, _)| k.strong_count() > 0);
    tracked.push((Arc::downgrade(key), not_after));
}

/// Whole days until the first certificate in use expires (0 once one has), or
/// `u32::MAX` when none is loaded, as Envoy reports it.
pub fn days_until_first_expiring() -> i64 {
    let mut tracked = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    tracked.retain(|(k, _)| k.strong_count() > 0);
    let Some(first) = tracked.iter().map(|(_, t)| *t).min() else {
        return i64::from(u32::MAX);
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    ((first - now) / 86_400).max(0)
}
