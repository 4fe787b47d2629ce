//! Envoy's `cryptomb` private key provider: RSA signatures of concurrent TLS handshakes
//! batched eight at a time through the `cryptomb` crate's AVX-512 IFMA kernel, and P-256
//! signatures from nonces that kernel precomputes eight at a time ([`ecdsa`]).
//!
//! [`provider`] turns the config into a rustls signing key whose signer queues on a
//! per-key [`batcher`]; handshakes run their CPU-bound steps on the [`pool`] so that a
//! signer waiting for its batch never parks a tokio worker; [`stats`] counts queues,
//! batches and fallbacks.

pub mod batcher;
pub mod ecdsa;
pub mod pool;
pub mod provider;
pub mod signer;
pub mod stats;

use std::future::Future;

/// Drives a TLS handshake: on the handshake pool when its context's key `batching` (its
/// signer may wait for a batch), inline on the worker otherwise.
pub async fn handshake<F, T>(batching: bool, future: F) -> std::io::Result<T>
where
    F: Future<Output = std::io::Result<T>> + Send + Unpin + 'static,
    T: Send + 'static,
{
    if batching {
        pool::OnPool::new(future).await
    } else {
        future.await
    }
}
