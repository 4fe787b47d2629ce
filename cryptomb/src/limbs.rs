//! Scalar big-number helpers for per-key precomputation and for moving
//! numbers between big-endian bytes and the radix-2^52 limbs of the kernel.
//!
//! The modular doubling runs in constant time (masks, no branches on the
//! value), since it derives Montgomery constants from the secret primes.

/// Bits per limb, as in the vector kernel.
pub const LIMB_BITS: usize = 52;

/// Mask of one limb's bits.
pub const LIMB_MASK: u64 = (1 << LIMB_BITS) - 1;

/// A big-endian unsigned integer as `count` little-endian 52-bit limbs.
/// The value must fit.
pub fn from_be_bytes(bytes: &[u8], count: usize) -> Vec<u64> {
    let mut limbs = vec![0u64; count];
    for (index, &byte) in bytes.iter().rev().enumerate() {
        let bit = index * 8;
        let (limb, shift) = (bit / LIMB_BITS, bit % LIMB_BITS);
        limbs[limb] |= (u64::from(byte) << shift) & LIMB_MASK;
        if shift > LIMB_BITS - 8 {
            limbs[limb + 1] |= u64::from(byte) >> (LIMB_BITS - shift);
        }
    }
    limbs
}

/// Normalized limbs as a big-endian integer of exactly `len` bytes
/// (higher bits, which must be zero, are dropped).
pub fn to_be_bytes(limbs: &[u64], len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    for (index, byte) in bytes.iter_mut().rev().enumerate() {
        let bit = index * 8;
        let (limb, shift) = (bit / LIMB_BITS, bit % LIMB_BITS);
        let mut value = limbs.get(limb).copied().unwrap_or(0) >> shift;
        if shift > LIMB_BITS - 8 {
            value |= limbs.get(limb + 1).copied().unwrap_or(0) << (LIMB_BITS - shift);
        }
        *byte = value as u8;
    }
    bytes
}

/// A big-endian unsigned integer as little-endian 64-bit words, `count`
/// words long: the layout the exponent windows read.
pub fn words_from_be_bytes(bytes: &[u8], count: usize) -> Vec<u64> {
    let mut words = vec![0u64; count];
    for (index, &byte) in bytes.iter().rev().enumerate() {
        words[index / 8] |= u64::from(byte) << (8 * (index % 8));
    }
    words
}

/// The number of significant bits of a big-endian integer.
pub fn bit_length(bytes: &[u8]) -> usize {
    match bytes.iter().position(|&b| b != 0) {
        Some(first) => (bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize,
        None => 0,
    }
}

/// `x·2^count mod m` for `x < m`, one constant-time doubling at a time.
pub fn shift_mod(x: &mut [u64], m: &[u64], count: usize) {
    for _ in 0..count {
        double_mod(x, m);
    }
}

/// `x = 2x mod m` for `x < m`: doubles, subtracts `m`, and keeps the
/// difference unless it borrowed, chosen by mask.
fn double_mod(x: &mut [u64], m: &[u64]) {
    let mut carry = 0u64;
    for limb in x.iter_mut() {
        let doubled = (*limb << 1) | carry;
        *limb = doubled & LIMB_MASK;
        carry = doubled >> LIMB_BITS;
    }
    let mut borrow = 0i64;
    let mut difference = vec![0u64; x.len()];
    for ((d, &limb), &modulus) in difference.iter_mut().zip(x.iter()).zip(m) {
        let value = limb as i64 - modulus as i64 + borrow;
        *d = value as u64 & LIMB_MASK;
        borrow = value >> LIMB_BITS;
    }
    // With the doubling's carry out of the top limb, 0 when 2x ≥ m (keep the
    // difference), all ones otherwise (keep 2x).
    let keep = (borrow + carry as i64) as u64;
    for (limb, d) in x.iter_mut().zip(&difference) {
        *limb = (*limb & keep) | (*d & !keep);
    }
}

/// `x·R mod m` (`R = 2^(LIMB_BITS·m.len())`) for a big-endian `x < m`: a number's
/// Montgomery form, by constant-time doublings.
pub fn to_montgomery(x: &[u8], m: &[u64]) -> Vec<u64> {
    let mut limbs = from_be_bytes(x, m.len());
    shift_mod(&mut limbs, m, LIMB_BITS * m.len());
    limbs
}

/// `2^(LIMB_BITS·count) mod m`, the Montgomery `R` for a modulus of
/// `count` limbs, `m` odd with `bits` significant bits.
pub fn montgomery_r(m: &[u64], bits: usize) -> Vec<u64> {
    let mut x = vec![0u64; m.len()];
    x[(bits - 1) / LIMB_BITS] = 1 << ((bits - 1) % LIMB_BITS);
    shift_mod(&mut x, m, LIMB_BITS * m.len() - bits + 1);
    x
}

/// `-m⁻¹ mod 2^52` for odd `m0` (the lowest limb): Newton's iteration
/// doubles the correct low bits each step, 1 → 64 in six steps.
pub fn montgomery_k0(m0: u64) -> u64 {
    let mut inverse = 1u64;
    for _ in 0..6 {
        inverse = inverse.wrapping_mul(2u64.wrapping_sub(m0.wrapping_mul(inverse)));
    }
    inverse.wrapping_neg() & LIMB_MASK
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_bigint::BigUint;
    use proptest::prelude::*;

    fn big(limbs: &[u64]) -> BigUint {
        limbs
            .iter()
            .rev()
            .fold(BigUint::default(), |acc, &l| (acc << LIMB_BITS) + l)
    }

    proptest! {
        #[test]
        fn bytes_round_trip_through_limbs(bytes in proptest::collection::vec(any::<u8>(), 1..300)) {
            let count = (bytes.len() * 8).div_ceil(LIMB_BITS);
            let limbs = from_be_bytes(&bytes, count);
            prop_assert!(limbs.iter().all(|&l| l <= LIMB_MASK));
            prop_assert_eq!(big(&limbs), BigUint::from_bytes_be(&bytes));
            prop_assert_eq!(to_be_bytes(&limbs, bytes.len()), bytes);
        }

        #[test]
        fn montgomery_constants_match_the_definition(
            mut bytes in proptest::collection::vec(any::<u8>(), 8..130),
            shift in 0usize..200,
        ) {
            bytes[0] |= 0x80;
            *bytes.last_mut().unwrap() |= 1;
            let bits = bit_length(&bytes);
            let count = bits.div_ceil(LIMB_BITS) + 1;
            let m = from_be_bytes(&bytes, count);
            let modulus = BigUint::from_bytes_be(&bytes);
            let r = montgomery_r(&m, bits);
            prop_assert_eq!(big(&r), (BigUint::from(1u8) << (LIMB_BITS * count)) % &modulus);
            let mut shifted = r.clone();
            shift_mod(&mut shifted, &m, shift);
            prop_assert_eq!(big(&shifted), (big(&r) << shift) % &modulus);
            let k0 = montgomery_k0(m[0]);
            prop_assert_eq!((u128::from(k0) * u128::from(m[0]) + 1) % (1u128 << LIMB_BITS), 0);
        }
    }
}
