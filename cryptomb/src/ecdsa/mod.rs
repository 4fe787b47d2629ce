//! ECDSA P-256 signatures (SHA-256, ASN.1 DER encoded, as TLS carries them) from
//! precomputed nonces: the key-independent half of a signature — `k·G` and `k⁻¹` — is made
//! eight at a time by the AVX-512 IFMA kernel ahead of need ([`NoncePool`]), leaving
//! `s = k⁻¹·(e + r·d)` for the handshake. ring signs single-buffer where the kernel
//! cannot run.

pub(crate) mod curve;
mod nonces;

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use zeroize::Zeroize;

use crate::der::ec_p256_components;
use crate::Error;
pub use nonces::{generate as generate_nonces, Nonce, NoncePool};

/// A P-256 private key usable on both paths.
pub struct EcdsaP256Key {
    ring: EcdsaKeyPair,
    /// `d·R mod n`, the private scalar in the kernel's Montgomery form.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    d_montgomery: nonces::Limbs,
}

impl Drop for EcdsaP256Key {
    fn drop(&mut self) {
        self.d_montgomery.zeroize();
    }
}

impl EcdsaP256Key {
    /// Loads a PKCS#8 or SEC 1 DER P-256 private key. ring validates it (the scalar's
    /// range and, where the key carries one, its public point); a SEC 1 key must carry its
    /// public point, as ring needs it.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let mut parts = ec_p256_components(der)?;
        let rng = SystemRandom::new();
        let alg = &ECDSA_P256_SHA256_ASN1_SIGNING;
        let ring = if parts.pkcs8 {
            EcdsaKeyPair::from_pkcs8(alg, der, &rng)
        } else {
            let public = parts
                .public
                .ok_or_else(|| Error::Key("SEC 1 EC key without its public key".into()))?;
            EcdsaKeyPair::from_private_key_and_public_key(alg, &parts.scalar, public, &rng)
        }
        .map_err(|e| Error::Key(e.to_string()))?;
        let d_montgomery = montgomery_scalar(&parts.scalar);
        parts.scalar.zeroize();
        Ok(EcdsaP256Key { ring, d_montgomery })
    }

    /// The public key as an uncompressed point (`04 || x || y`).
    pub fn public_key(&self) -> &[u8] {
        self.ring.public_key().as_ref()
    }

    /// One signature by ring's single-buffer code.
    pub fn sign_single(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.ring
            .sign(&SystemRandom::new(), message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|e| Error::Sign(e.to_string()))
    }

    /// One signature with a nonce from `nonces` (the kernel's path); an error where the
    /// kernel cannot run (the pool cannot make nonces there). `r` or `s` of zero
    /// (probability about 2^-256 each) takes the next nonce, as FIPS 186-4 prescribes.
    pub fn sign(&self, nonces: &NoncePool, message: &[u8]) -> Result<Vec<u8>, Error> {
        loop {
            if let Some(signature) = self.sign_with(nonces.take()?, message)? {
                return Ok(signature);
            }
        }
    }

    /// One signature with the given nonce (consumed): `None` in the negligible case that
    /// `r` or `s` is zero, when the caller must take another nonce. An error where the
    /// kernel cannot run. [`EcdsaP256Key::sign`] is this with nonces from a pool; signing
    /// eight messages with the nonces of one `generate_nonces::<1>()` is the "eight-lane
    /// signing" the benchmark compares it with.
    pub fn sign_with(&self, nonce: Nonce, message: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        #[cfg(target_arch = "x86_64")]
        if crate::ifma::available() {
            let digest = ring::digest::digest(&ring::digest::SHA256, message);
            let digest: &[u8; 32] = digest
                .as_ref()
                .try_into()
                .expect("SHA-256 digests are 32 bytes");
            let s = crate::ifma::p256::signature_s(
                &self.d_montgomery,
                digest,
                &nonce.r,
                &nonce.k_inverse,
            );
            let usable = nonce.r.iter().any(|&l| l != 0) && s.iter().any(|&l| l != 0);
            return Ok(usable.then(|| {
                der_signature(
                    &crate::limbs::to_be_bytes(&nonce.r, 32),
                    &crate::limbs::to_be_bytes(&s, 32),
                )
            }));
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (nonce, message);
        Err(kernel_unavailable())
    }
}

/// Why the kernel's path refused.
pub(crate) fn kernel_unavailable() -> Error {
    Error::Sign("the multi-buffer kernel is not available on this CPU".into())
}

/// `d·R mod n` for the key's scalar (scalar code, constant time, any CPU).
fn montgomery_scalar(d: &[u8; 32]) -> nonces::Limbs {
    use crate::limbs::{from_be_bytes, to_montgomery};
    let mut limbs = to_montgomery(d, &from_be_bytes(&curve::N, 5));
    let out = limbs.as_slice().try_into().expect("five limbs");
    limbs.zeroize();
    out
}

/// `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` (RFC 3279 §2.2.3) in DER.
fn der_signature(r: &[u8], s: &[u8]) -> Vec<u8> {
    let (r, s) = (der_integer(r), der_integer(s));
    let mut out = vec![0x30, (r.len() + s.len()) as u8];
    out.extend(r);
    out.extend(s);
    out
}

/// A non-negative big-endian integer as a minimal DER INTEGER (at most 33 content bytes,
/// so the short length form always applies).
fn der_integer(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(magnitude.len() - 1);
    let digits = &magnitude[start..];
    let pad = digits[0] & 0x80 != 0;
    let mut out = vec![0x02, (digits.len() + usize::from(pad)) as u8];
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(der_integer(&[0, 0, 0x7f]), [0x02, 1, 0x7f]);
        assert_eq!(der_integer(&[0, 0x80, 1]), [0x02, 3, 0, 0x80, 1]);
        assert_eq!(der_integer(&[0, 0]), [0x02, 1, 0]);
        let r = [0xffu8; 32];
        let signature = der_signature(&r, &[1]);
        assert_eq!(signature[..4], [0x30, 33 + 2 + 3, 0x02, 33]);
        assert_eq!(signature[signature.len() - 3..], [0x02, 1, 1]);
    }

    #[test]
    fn the_montgomery_scalar_is_d_times_r_mod_n() {
        use num_bigint::BigUint;
        let n = BigUint::from_bytes_be(&curve::N);
        let d = BigUint::from_bytes_be(&[0x5a; 32]) % &n;
        let limbs = montgomery_scalar(&d.to_bytes_be().try_into().unwrap());
        let got = limbs
            .iter()
            .rev()
            .fold(BigUint::default(), |acc, &l| (acc << 52) + l);
        assert_eq!(got, (d << 260) % n);
    }
}
