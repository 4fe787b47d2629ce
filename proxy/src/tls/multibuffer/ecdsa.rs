//! The rustls side of a P-256 key under the `cryptomb` provider: signatures whose nonce
//! (`k⁻¹`, `r`) was precomputed eight at a time by the kernel, from one process-wide pool
//! a background thread keeps stocked. A handshake only computes `s`, so it neither waits
//! for other handshakes (as an RSA batch does) nor needs the handshake pool.

use super::stats::stats;
use cryptomb::{EcdsaP256Key, Engine, NoncePool};
use rustls::pki_types::{alg_id, SubjectPublicKeyInfoDer};
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use std::sync::{Arc, OnceLock};

/// Nonces kept in stock: a burst of this many handshakes signs without computing any.
const STOCK: usize = 64;

/// The process's nonce pool, its filler started on first use (a thread as nice as the
/// handshake pool's, so refilling yields to the data path).
fn nonces() -> &'static NoncePool {
    static POOL: OnceLock<Arc<NoncePool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool = NoncePool::new(STOCK);
        let fill = pool.filler();
        let started = std::thread::Builder::new()
            .name("cryptomb-nonces".into())
            .spawn(move || {
                super::pool::yield_to_data_path();
                fill()
            });
        if let Err(error) = started {
            tracing::warn!("cryptomb: no nonce filler thread ({error}); nonces are made on demand");
        }
        pool
    })
}

/// A P-256 private key signed through the multi-buffer provider.
pub struct MultiBufferEcdsaKey {
    key: Arc<EcdsaP256Key>,
    engine: Engine,
}

impl MultiBufferEcdsaKey {
    /// Wraps a key; `engine` says whether the kernel signs (else ring, the fallback).
    pub fn new(key: EcdsaP256Key, engine: Engine) -> Self {
        if engine == Engine::MultiBuffer {
            nonces();
        }
        MultiBufferEcdsaKey {
            key: Arc::new(key),
            engine,
        }
    }
}

impl std::fmt::Debug for MultiBufferEcdsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MultiBufferEcdsaKey")
    }
}

impl SigningKey for MultiBufferEcdsaKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| {
                Box::new(EcdsaSigner {
                    key: self.key.clone(),
                    engine: self.engine,
                }) as Box<dyn Signer>
            })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(rustls::sign::public_key_to_spki(
            &alg_id::ECDSA_P256,
            self.key.public_key(),
        ))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

/// One handshake's signer.
struct EcdsaSigner {
    key: Arc<EcdsaP256Key>,
    engine: Engine,
}

impl std::fmt::Debug for EcdsaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EcdsaSigner(ECDSA_NISTP256_SHA256)")
    }
}

impl Signer for EcdsaSigner {
    /// With the kernel, a pooled nonce; ring when the provider falls back (or, should the
    /// kernel refuse, for this signature).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        if self.engine == Engine::MultiBuffer {
            if let Ok(signature) = self.key.sign(nonces(), message) {
                stats().ecdsa_precomputed.inc();
                return Ok(signature);
            }
        }
        stats().ecdsa_fallbacks.inc();
        self.key
            .sign_single(message)
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}
