//! Montgomery arithmetic on eight numbers at once, in radix 2^52, on top of
//! the straight-line products and reductions build.rs generates.
//!
//! A number is `[Lanes; N]`: limb `j` of all eight numbers in one register,
//! least significant limb first. Inputs to the multiplications must be
//! normalized (every limb below 2^52); accumulators inside may grow past that
//! and are normalized once at the end. `R = 2^(52·N)` is at least `2^16`
//! times every modulus used here, which keeps almost-Montgomery results
//! below twice the modulus with no final subtraction, and keeps every
//! accumulator far below 2^63. Nothing branches or indexes on lane values.

use super::lanes::Lanes;

/// Eight moduli (one per lane) with their Montgomery constants.
pub struct Modulus<const N: usize> {
    /// The moduli's limbs.
    pub limbs: [Lanes; N],
    /// `-modulus⁻¹ mod 2^52` per lane.
    pub k0: Lanes,
}

/// Propagates carries (and borrows: limbs may be negative) so every limb is
/// below 2^52 again. The value must be non-negative and below `2^(52·N)`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn normalize<const N: usize>(mut x: [Lanes; N]) -> [Lanes; N] {
    let mut carry = Lanes::zero();
    for limb in x.iter_mut() {
        let sum = limb.add(carry);
        *limb = sum.low_limb();
        carry = sum.carry();
    }
    x
}

// The generated straight-line code (build.rs): `product` and `reduce` for
// every size served, and `mont_multiply` and `mont_square`, scheduled
// assembly for RSA-2048's primes and compiled products then reductions for
// the other sizes.
mod generated {
    use super::super::lanes::LIMB_MASK;
    use super::{normalize, Lanes};
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}

pub use generated::product as multiply_wide;

/// Montgomery reduction of a double-width value: `t·R⁻¹ mod m`, below `2m`
/// when `t < R·m`, normalized. `W` must be `2·N`; `t`'s limbs may be
/// unnormalized.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn reduce<const N: usize, const W: usize>(t: [Lanes; W], m: &Modulus<N>) -> [Lanes; N] {
    normalize(generated::reduce::<N, W>(&t, &m.limbs, m.k0))
}

/// Almost-Montgomery multiplication: `a·b·R⁻¹ mod m`, a normalized result
/// below `2m` for inputs below `4m`. `W` must be `2·N`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn multiply<const N: usize, const W: usize>(
    a: &[Lanes; N],
    b: &[Lanes; N],
    m: &Modulus<N>,
) -> [Lanes; N] {
    generated::mont_multiply::<N, W>(a, b, &m.limbs, m.k0)
}

/// Dedicated squaring: `a²·R⁻¹ mod m` (below `2m`), computing each cross
/// product once and doubling, so it costs about three quarters of
/// [`multiply`]. `W` must be `2·N`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn square<const N: usize, const W: usize>(a: &[Lanes; N], m: &Modulus<N>) -> [Lanes; N] {
    generated::mont_square::<N, W>(a, &m.limbs, m.k0)
}

/// `x mod m` for `x < 2m`: subtracts `m` in every lane and keeps the
/// difference where it did not borrow, by a blend rather than a branch.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn subtract_if_above<const N: usize>(x: &[Lanes; N], m: &[Lanes; N]) -> [Lanes; N] {
    let mut difference = [Lanes::zero(); N];
    let mut borrow = Lanes::zero();
    for j in 0..N {
        let limb = x[j].sub(m[j]).add(borrow);
        difference[j] = limb.low_limb();
        borrow = limb.carry();
    }
    let below = borrow.eq_mask(Lanes::splat(u64::MAX));
    let mut out = difference;
    for j in 0..N {
        out[j] = difference[j].blend(below, x[j]);
    }
    out
}

/// The lanes where `a` and `b` hold the same normalized number.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn equal_lanes<const N: usize>(a: &[Lanes; N], b: &[Lanes; N]) -> u8 {
    a.iter()
        .zip(b)
        .fold(u8::MAX, |mask, (x, y)| mask & x.eq_mask(*y))
}

/// Overwrites secret intermediates before their stack slots are reused;
/// volatile so the compiler cannot drop the stores as dead.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn wipe(values: &mut [Lanes]) {
    for value in values.iter_mut() {
        // SAFETY: `value` is a valid, aligned, exclusive reference.
        unsafe { core::ptr::write_volatile(value, Lanes::zero()) };
    }
}
