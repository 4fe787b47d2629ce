//! Montgomery arithmetic on eight numbers at once, in radix 2^52.
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

/// Almost-Montgomery multiplication: `a·b·R⁻¹ mod m`, a result below `2m`
/// for inputs below `4m`. The accumulator stays in `N` registers: each step
/// adds the low halves of `a·b[i]` and `q·m`, drops the (now zero) lowest
/// limb, then adds the high halves one limb further down.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn multiply<const N: usize>(a: &[Lanes; N], b: &[Lanes; N], m: &Modulus<N>) -> [Lanes; N] {
    let mut acc = [Lanes::zero(); N];
    for &digit in b.iter() {
        for j in 0..N {
            acc[j] = acc[j].madd_lo(a[j], digit);
        }
        let q = Lanes::zero().madd_lo(acc[0], m.k0);
        for j in 0..N {
            acc[j] = acc[j].madd_lo(m.limbs[j], q);
        }
        let carry = acc[0].carry();
        acc.copy_within(1.., 0);
        acc[N - 1] = Lanes::zero();
        acc[0] = acc[0].add(carry);
        for j in 0..N {
            acc[j] = acc[j].madd_hi(a[j], digit).madd_hi(m.limbs[j], q);
        }
    }
    normalize(acc)
}

/// Dedicated squaring: `a²·R⁻¹ mod m` (below `2m`), computing each cross
/// product once and doubling, so it costs about three quarters of
/// [`multiply`]. `W` must be `2·N`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn square<const N: usize, const W: usize>(a: &[Lanes; N], m: &Modulus<N>) -> [Lanes; N] {
    let mut t = [Lanes::zero(); W];
    for i in 0..N {
        for j in i + 1..N {
            t[i + j] = t[i + j].madd_lo(a[i], a[j]);
            t[i + j + 1] = t[i + j + 1].madd_hi(a[i], a[j]);
        }
    }
    for limb in t.iter_mut() {
        *limb = limb.double();
    }
    for i in 0..N {
        t[2 * i] = t[2 * i].madd_lo(a[i], a[i]);
        t[2 * i + 1] = t[2 * i + 1].madd_hi(a[i], a[i]);
    }
    reduce(t, m)
}

/// Montgomery reduction of a double-width value: `t·R⁻¹ mod m`, below `2m`
/// when `t < R·m`. `W` must be `2·N`; `t`'s limbs may be unnormalized.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn reduce<const N: usize, const W: usize>(mut t: [Lanes; W], m: &Modulus<N>) -> [Lanes; N] {
    for i in 0..N {
        let q = Lanes::zero().madd_lo(t[i], m.k0);
        for j in 0..N {
            t[i + j] = t[i + j].madd_lo(m.limbs[j], q);
            t[i + j + 1] = t[i + j + 1].madd_hi(m.limbs[j], q);
        }
        t[i + 1] = t[i + 1].add(t[i].carry());
    }
    let mut out = [Lanes::zero(); N];
    out.copy_from_slice(&t[N..]);
    normalize(out)
}

/// The plain double-width product `a·b`, limbs unnormalized. `W` must be `2·N`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn multiply_wide<const N: usize, const W: usize>(a: &[Lanes; N], b: &[Lanes; N]) -> [Lanes; W] {
    let mut t = [Lanes::zero(); W];
    for i in 0..N {
        for j in 0..N {
            t[i + j] = t[i + j].madd_lo(a[i], b[j]);
            t[i + j + 1] = t[i + j + 1].madd_hi(a[i], b[j]);
        }
    }
    t
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
    a.iter().zip(b).fold(u8::MAX, |mask, (x, y)| mask & x.eq_mask(*y))
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
