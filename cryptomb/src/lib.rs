//! Multi-buffer RSA and ECDSA P-256 private-key operations, the pure-Rust
//! counterpart of Envoy's contrib `cryptomb` private key provider.
//!
//! A TLS handshake's cost is dominated by one private-key signature. On CPUs
//! with AVX-512 IFMA, [`sign_batch`] computes up to eight RSA signatures
//! (2048, 3072 or 4096 bits; lanes may belong to different keys) in one pass
//! of 52-bit-limb Montgomery arithmetic, checks each with the public
//! exponent, and releases only those that check out. Elsewhere — or for key
//! shapes the kernel does not serve, or a result that fails its check — the
//! same signature comes from ring's single-buffer code, so callers always
//! get a correct signature and learn which path made it.
//!
//! For P-256, [`EcdsaP256Key::sign`] takes a nonce precomputed eight at a
//! time by the kernel from a [`NoncePool`] (the nonce does not depend on the
//! key or the message), so a handshake never waits for a batch to fill.

mod der;
mod ecdsa;
#[cfg(target_arch = "x86_64")]
mod ifma;
mod key;
mod limbs;
mod padding;

use ring::rand::SystemRandom;
use ring::signature::RsaKeyPair;

pub use ecdsa::{generate_nonces, EcdsaP256Key, Nonce, NoncePool};
pub use key::KeySize;
pub use padding::Padding;

/// Why a key or a signature was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The private key could not be read or is not a valid key of its kind.
    #[error("invalid private key: {0}")]
    Key(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// An RSA private key usable on both paths.
pub struct RsaKey {
    ring: RsaKeyPair,
    params: Option<key::RsaParams>,
}

impl RsaKey {
    /// Loads a PKCS#8 or PKCS#1 DER private key. ring validates it (a key
    /// ring refuses is refused here); the multi-buffer precomputation is
    /// done once, now.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let ring = RsaKeyPair::from_pkcs8(der)
            .or_else(|_| RsaKeyPair::from_der(der))
            .map_err(|e| Error::Key(e.to_string()))?;
        let params = key::RsaParams::new(&der::rsa_components(der)?);
        Ok(RsaKey { ring, params })
    }

    /// Signature length in bytes.
    pub fn modulus_len(&self) -> usize {
        self.ring.public().modulus_len()
    }

    /// The DER `RSAPublicKey`, for verifying what this key signs.
    pub fn public_key_der(&self) -> &[u8] {
        self.ring.public().as_ref()
    }

    /// The size class the kernel batches this key in, or `None` when only
    /// the single-buffer path serves it.
    pub fn batch_size_class(&self) -> Option<KeySize> {
        self.params.as_ref().map(|p| p.size)
    }

    /// One signature by ring's single-buffer code.
    pub fn sign_single(&self, padding: Padding, message: &[u8]) -> Result<Vec<u8>, Error> {
        let mut signature = vec![0u8; self.modulus_len()];
        self.ring
            .sign(
                padding.ring_encoding(),
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|e| Error::Sign(e.to_string()))?;
        Ok(signature)
    }
}

/// Which code computes private-key operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Eight lanes of AVX-512 IFMA.
    MultiBuffer,
    /// ring, one signature at a time.
    Single,
}

impl Engine {
    /// The multi-buffer engine where the CPU supports it, else single.
    pub fn detect() -> Self {
        if multi_buffer_available() {
            Engine::MultiBuffer
        } else {
            Engine::Single
        }
    }
}

/// Whether the multi-buffer kernel runs here: the CPU has AVX-512F and AVX-512 IFMA,
/// and `MESHPROXY_CRYPTOMB_DISABLE=1` does not switch it off.
pub fn multi_buffer_available() -> bool {
    multi_buffer_unavailable_reason().is_none()
}

/// Why the multi-buffer kernel cannot run here (for messages, reports and skipped
/// tests), or `None` when it can.
pub fn multi_buffer_unavailable_reason() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        ifma::unavailable_reason()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Some("the kernel is x86-64 only")
    }
}

/// For tests that exercise the kernel itself: whether it runs here. Where it does not,
/// says so for `test` on the terminal, once per test, written past the test harness's
/// output capture so that a test that could not run shows in every log as skipped,
/// never as a silent pass.
pub fn kernel_or_report_skip(test: &str) -> bool {
    let Some(reason) = multi_buffer_unavailable_reason() else {
        return true;
    };
    static REPORTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
    if !reported.iter().any(|t| t == test) {
        reported.push(test.to_owned());
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIPPED {test}: the multi-buffer kernel cannot run here ({reason})"
        );
    }
    false
}

/// One signature to compute.
pub struct SignRequest<'a> {
    /// The signing key.
    pub key: &'a RsaKey,
    /// The scheme.
    pub padding: Padding,
    /// The message (hashed by the scheme).
    pub message: &'a [u8],
}

/// How a signature was computed, for the provider's stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// In a multi-buffer batch.
    MultiBuffer,
    /// By ring: the engine is single, or the key's shape is not batched.
    Single,
    /// By ring after the multi-buffer result failed its public-exponent
    /// check (a fault; the faulty result was discarded).
    FaultRecovered,
}

/// A computed signature and the path that made it.
pub struct Signed {
    /// The signature, or why it failed.
    pub signature: Result<Vec<u8>, Error>,
    /// Which path produced it.
    pub path: Path,
}

/// Signs every request. With [`Engine::MultiBuffer`], requests whose keys
/// the kernel serves go through it in batches of up to eight per key size;
/// the rest, and any lane whose result fails verification, go to ring.
/// Results come back in request order.
pub fn sign_batch(engine: Engine, requests: &[SignRequest<'_>]) -> Vec<Signed> {
    let mut out: Vec<Option<Signed>> = requests.iter().map(|_| None).collect();
    #[cfg(target_arch = "x86_64")]
    if engine == Engine::MultiBuffer && ifma::available() {
        batch::sign_in_lanes(requests, &mut out);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = engine;
    requests
        .iter()
        .zip(out)
        .map(|(request, done)| {
            done.unwrap_or_else(|| Signed {
                signature: request.key.sign_single(request.padding, request.message),
                path: Path::Single,
            })
        })
        .collect()
}

#[cfg(target_arch = "x86_64")]
mod batch;

/// The kernel's modular exponentiation and P-256 nonce batch on their own (feature
/// `kernel-access`), for the fuzz target in `cryptomb/fuzz` and the benchmark's
/// timing-leak checks.
#[cfg(all(feature = "kernel-access", target_arch = "x86_64"))]
#[doc(hidden)]
pub mod kernel {
    pub use crate::ifma::modexp_1024;
    pub use crate::ifma::p256::nonce_batch as p256_nonce_batch;
}
