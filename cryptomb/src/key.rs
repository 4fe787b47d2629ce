//! Per-key precomputation for the multi-buffer kernel: the primes, CRT
//! exponents and Montgomery constants in the kernel's limb layout, computed
//! once when a key is loaded and wiped when it is dropped.

use zeroize::Zeroize;

use crate::der::RsaComponents;
use crate::limbs::{
    bit_length, from_be_bytes, montgomery_k0, montgomery_r, shift_mod, words_from_be_bytes,
    LIMB_BITS,
};

/// The RSA sizes the kernel serves; each fixes the limb count, so keys of
/// one size share code paths and can share a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeySize {
    /// 2048-bit modulus: 20-limb primes.
    Rsa2048,
    /// 3072-bit modulus: 30-limb primes.
    Rsa3072,
    /// 4096-bit modulus: 40-limb primes.
    Rsa4096,
}

impl KeySize {
    /// The size for a modulus of `bits` bits, if the kernel serves it.
    fn from_modulus_bits(bits: usize) -> Option<Self> {
        match bits {
            2048 => Some(KeySize::Rsa2048),
            3072 => Some(KeySize::Rsa3072),
            4096 => Some(KeySize::Rsa4096),
            _ => None,
        }
    }

    /// Modulus bits.
    pub fn modulus_bits(self) -> usize {
        match self {
            KeySize::Rsa2048 => 2048,
            KeySize::Rsa3072 => 3072,
            KeySize::Rsa4096 => 4096,
        }
    }

    /// Limbs of a prime (and of the CRT halves).
    pub fn prime_limbs(self) -> usize {
        (self.modulus_bits() / 2).div_ceil(LIMB_BITS)
    }
}

/// One CRT half: a prime with its exponent and Montgomery constants.
pub struct PrimeParams {
    /// The prime, `prime_limbs` limbs.
    pub modulus: Vec<u64>,
    /// `-prime⁻¹ mod 2^52`.
    pub k0: u64,
    /// `R mod prime`: one in Montgomery form.
    pub one: Vec<u64>,
    /// `R³ mod prime`: turns a reduced input into Montgomery form.
    pub r3: Vec<u64>,
    /// `d mod (prime-1)` as 64-bit words, one spare word for the windows.
    pub exponent: Vec<u64>,
}

impl PrimeParams {
    /// Precomputes a prime's half, or `None` when it does not fit the size.
    pub(crate) fn new(prime: &[u8], exponent: &[u8], size: KeySize) -> Option<Self> {
        let limbs = size.prime_limbs();
        let bits = bit_length(prime);
        if bits > size.modulus_bits() / 2 || bits < 2 || prime.last()? & 1 == 0 {
            return None;
        }
        if bit_length(exponent) > size.modulus_bits() / 2 {
            return None;
        }
        let modulus = from_be_bytes(prime, limbs);
        let one = montgomery_r(&modulus, bits);
        let mut r3 = one.clone();
        shift_mod(&mut r3, &modulus, 2 * LIMB_BITS * limbs);
        Some(PrimeParams {
            k0: montgomery_k0(modulus[0]),
            one,
            r3,
            exponent: words_from_be_bytes(exponent, size.modulus_bits() / 128 + 1),
            modulus,
        })
    }
}

impl Drop for PrimeParams {
    fn drop(&mut self) {
        self.modulus.zeroize();
        self.k0.zeroize();
        self.one.zeroize();
        self.r3.zeroize();
        self.exponent.zeroize();
    }
}

/// The public modulus in Montgomery form, for checking each signature
/// with `e` before it leaves (the fault countermeasure).
pub struct PublicParams {
    /// `n`, `2·prime_limbs` limbs.
    pub modulus: Vec<u64>,
    /// `-n⁻¹ mod 2^52`.
    pub k0: u64,
    /// `R mod n`.
    pub one: Vec<u64>,
    /// `R² mod n`.
    pub r2: Vec<u64>,
    /// The public exponent.
    pub e: u64,
}

/// Everything the kernel needs about one private key.
pub struct RsaParams {
    /// The key's size class.
    pub size: KeySize,
    /// The modulus, big-endian, for range checks on inputs.
    pub n: Vec<u8>,
    /// The first prime's half.
    pub p: PrimeParams,
    /// The second prime's half.
    pub q: PrimeParams,
    /// `q⁻¹·R mod p`: the CRT coefficient in Montgomery form.
    pub qinv: Vec<u64>,
    /// The public half.
    pub public: PublicParams,
}

impl RsaParams {
    /// Precomputes a key, or `None` when the kernel does not serve its
    /// shape (another modulus size, unbalanced primes, `e` beyond 64 bits);
    /// such keys stay on the single-buffer path.
    pub fn new(key: &RsaComponents<'_>) -> Option<Self> {
        let size = KeySize::from_modulus_bits(bit_length(key.n))?;
        if key.e.len() > 8 || bit_length(key.qinv) > bit_length(key.p) {
            return None;
        }
        let p = PrimeParams::new(key.p, key.dp, size)?;
        let q = PrimeParams::new(key.q, key.dq, size)?;
        let mut qinv = from_be_bytes(key.qinv, size.prime_limbs());
        shift_mod(&mut qinv, &p.modulus, LIMB_BITS * size.prime_limbs());
        let wide = 2 * size.prime_limbs();
        let modulus = from_be_bytes(key.n, wide);
        let one = montgomery_r(&modulus, size.modulus_bits());
        let mut r2 = one.clone();
        shift_mod(&mut r2, &modulus, LIMB_BITS * wide);
        let public = PublicParams {
            k0: montgomery_k0(modulus[0]),
            one,
            r2,
            e: key.e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
            modulus,
        };
        Some(RsaParams {
            size,
            n: key.n.to_vec(),
            p,
            q,
            qinv,
            public,
        })
    }
}

impl Drop for RsaParams {
    fn drop(&mut self) {
        self.qinv.zeroize();
    }
}
