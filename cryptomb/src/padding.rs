//! Signature encodings (RFC 8017): EMSA-PKCS1-v1_5 and EMSA-PSS with MGF1
//! and a salt as long as the hash, the schemes TLS 1.2 and 1.3 negotiate.
//! The multi-buffer path encodes here and exponentiates itself; the
//! single-buffer path hands the same scheme to ring.

use ring::digest;
use ring::rand::SecureRandom;
use ring::signature::RsaEncoding;

use crate::Error;

/// An RSA signature scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Padding {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Pkcs1Sha256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Pkcs1Sha384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Pkcs1Sha512,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256, 32-byte salt.
    PssSha256,
    /// RSASSA-PSS with SHA-384, MGF1-SHA-384, 48-byte salt.
    PssSha384,
    /// RSASSA-PSS with SHA-512, MGF1-SHA-512, 64-byte salt.
    PssSha512,
}

/// DER `DigestInfo` prefixes (RFC 8017 §9.2, note 1).
const SHA256_PREFIX: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const SHA384_PREFIX: &[u8] = &[
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const SHA512_PREFIX: &[u8] = &[
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

impl Padding {
    /// The scheme's hash.
    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Padding::Pkcs1Sha256 | Padding::PssSha256 => &digest::SHA256,
            Padding::Pkcs1Sha384 | Padding::PssSha384 => &digest::SHA384,
            Padding::Pkcs1Sha512 | Padding::PssSha512 => &digest::SHA512,
        }
    }

    /// ring's encoding for the same scheme (the single-buffer path).
    pub(crate) fn ring_encoding(self) -> &'static dyn RsaEncoding {
        use ring::signature as rs;
        match self {
            Padding::Pkcs1Sha256 => &rs::RSA_PKCS1_SHA256,
            Padding::Pkcs1Sha384 => &rs::RSA_PKCS1_SHA384,
            Padding::Pkcs1Sha512 => &rs::RSA_PKCS1_SHA512,
            Padding::PssSha256 => &rs::RSA_PSS_SHA256,
            Padding::PssSha384 => &rs::RSA_PSS_SHA384,
            Padding::PssSha512 => &rs::RSA_PSS_SHA512,
        }
    }

    /// The encoded message for a modulus of `modulus_bits`, as a big-endian
    /// integer of the modulus's byte length (below the modulus).
    pub(crate) fn encode(
        self,
        message: &[u8],
        modulus_bits: usize,
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, Error> {
        let hash = digest::digest(self.digest(), message);
        let len = modulus_bits.div_ceil(8);
        match self {
            Padding::Pkcs1Sha256 => pkcs1(SHA256_PREFIX, hash.as_ref(), len),
            Padding::Pkcs1Sha384 => pkcs1(SHA384_PREFIX, hash.as_ref(), len),
            Padding::Pkcs1Sha512 => pkcs1(SHA512_PREFIX, hash.as_ref(), len),
            Padding::PssSha256 | Padding::PssSha384 | Padding::PssSha512 => {
                pss(self.digest(), hash.as_ref(), modulus_bits, len, rng)
            }
        }
    }
}

/// EMSA-PKCS1-v1_5: `00 01 FF…FF 00 DigestInfo`.
fn pkcs1(prefix: &[u8], hash: &[u8], len: usize) -> Result<Vec<u8>, Error> {
    let t_len = prefix.len() + hash.len();
    if len < t_len + 11 {
        return Err(Error::Sign("modulus too short for PKCS#1 v1.5".into()));
    }
    let mut em = vec![0xff; len];
    em[0] = 0;
    em[1] = 1;
    em[len - t_len - 1] = 0;
    em[len - t_len..len - hash.len()].copy_from_slice(prefix);
    em[len - hash.len()..].copy_from_slice(hash);
    Ok(em)
}

/// EMSA-PSS (RFC 8017 §9.1.1) with `emBits = modBits - 1` and a salt as
/// long as the hash, left-padded to the modulus length.
fn pss(
    algorithm: &'static digest::Algorithm,
    m_hash: &[u8],
    modulus_bits: usize,
    len: usize,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, Error> {
    let h_len = algorithm.output_len();
    let em_bits = modulus_bits - 1;
    let em_len = em_bits.div_ceil(8);
    if em_len < 2 * h_len + 2 {
        return Err(Error::Sign("modulus too short for PSS".into()));
    }
    let mut salt = vec![0u8; h_len];
    rng.fill(&mut salt)
        .map_err(|_| Error::Sign("random salt unavailable".into()))?;
    let mut context = digest::Context::new(algorithm);
    context.update(&[0u8; 8]);
    context.update(m_hash);
    context.update(&salt);
    let h = context.finish();
    let db_len = em_len - h_len - 1;
    let mut em = vec![0u8; len];
    let start = len - em_len;
    let db = &mut em[start..start + db_len];
    db[db_len - h_len - 1] = 1;
    db[db_len - h_len..].copy_from_slice(&salt);
    for (byte, mask) in db.iter_mut().zip(mgf1(algorithm, h.as_ref(), db_len)) {
        *byte ^= mask;
    }
    db[0] &= 0xff >> (8 * em_len - em_bits);
    em[start + db_len..len - 1].copy_from_slice(h.as_ref());
    em[len - 1] = 0xbc;
    Ok(em)
}

/// MGF1: `Hash(seed ‖ counter)` for counter 0, 1, … truncated to `len`.
fn mgf1(algorithm: &'static digest::Algorithm, seed: &[u8], len: usize) -> Vec<u8> {
    let mut mask = Vec::with_capacity(len + algorithm.output_len());
    let mut counter = 0u32;
    while mask.len() < len {
        let mut context = digest::Context::new(algorithm);
        context.update(seed);
        context.update(&counter.to_be_bytes());
        mask.extend_from_slice(context.finish().as_ref());
        counter += 1;
    }
    mask.truncate(len);
    mask
}
