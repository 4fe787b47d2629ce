//! The multi-buffer provider's stats, process-wide (keys are built while the config is
//! translated, before the server's stat store exists) and adopted into the store as
//! `cryptomb.*` when the server starts.

use crate::stats::{Counter, Histogram, Scope, StatKind};
use std::sync::{Arc, OnceLock};

/// Counters and the queue-size histogram of every multi-buffer key.
pub struct ProviderStats {
    /// Requests per processed queue (1..=8), Envoy's `rsa_queue_sizes`.
    pub rsa_queue_sizes: Arc<Histogram>,
    /// Queues signed as one multi-buffer batch.
    pub rsa_batches: Arc<Counter>,
    /// Signatures made single-buffer because their queue was too short to gain from a
    /// batch, or because the handshake was not on the handshake pool.
    pub rsa_single_buffer: Arc<Counter>,
    /// Signatures made by the software fallback: the CPU lacks AVX-512 IFMA (with
    /// `fallback: true`), or a batch result failed its check and was signed again.
    pub rsa_fallbacks: Arc<Counter>,
    /// P-256 signatures made with a nonce the kernel precomputed.
    pub ecdsa_precomputed: Arc<Counter>,
    /// P-256 signatures made by ring: the CPU lacks AVX-512 IFMA (with `fallback: true`).
    pub ecdsa_fallbacks: Arc<Counter>,
}

/// The process's provider stats.
pub fn stats() -> &'static ProviderStats {
    static STATS: OnceLock<ProviderStats> = OnceLock::new();
    STATS.get_or_init(|| ProviderStats {
        rsa_queue_sizes: Arc::default(),
        rsa_batches: Arc::default(),
        rsa_single_buffer: Arc::default(),
        rsa_fallbacks: Arc::default(),
        ecdsa_precomputed: Arc::default(),
        ecdsa_fallbacks: Arc::default(),
    })
}

/// Registers the provider stats under `<root>cryptomb.`.
pub fn register(root: &Scope) {
    let s = stats();
    let scope = root.child("cryptomb");
    scope.adopt(
        "rsa_queue_sizes",
        StatKind::Histogram(s.rsa_queue_sizes.clone()),
    );
    scope.adopt("rsa_batches", StatKind::Counter(s.rsa_batches.clone()));
    scope.adopt(
        "rsa_single_buffer",
        StatKind::Counter(s.rsa_single_buffer.clone()),
    );
    scope.adopt("rsa_fallbacks", StatKind::Counter(s.rsa_fallbacks.clone()));
    scope.adopt(
        "ecdsa_precomputed",
        StatKind::Counter(s.ecdsa_precomputed.clone()),
    );
    scope.adopt(
        "ecdsa_fallbacks",
        StatKind::Counter(s.ecdsa_fallbacks.clone()),
    );
}
