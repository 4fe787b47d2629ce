//! Arithmetic modulo P-256's field prime `p` and group order `n`, eight lanes at once, on
//! the kernel's 5-limb Montgomery multiplication.
//!
//! Every value leaving these functions is fully reduced (below the modulus), so the
//! point formulas may add and subtract freely: one masked subtraction after each
//! operation replaces the bounds bookkeeping an almost-Montgomery chain would need.
//! `R = 2^260` is sixteen times either modulus, which keeps the multiplication's
//! result below `2m` for inputs below `4m` (see [`super::super::mont`]).

use super::super::lanes::Lanes;
use super::super::mont::{multiply, normalize, subtract_if_above, Modulus};

/// Limbs of a P-256 number.
pub const LIMBS: usize = 5;

/// One number per lane, fully reduced.
pub type Element = [Lanes; LIMBS];

/// A prime modulus of 256 bits with its Montgomery constant.
pub struct Field {
    modulus: Modulus<LIMBS>,
}

impl Field {
    /// The field of `limbs` (the same modulus in every lane) with `k0 = -m⁻¹ mod 2^52`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn new(limbs: &[u64; LIMBS], k0: u64) -> Self {
        Field {
            modulus: Modulus {
                limbs: splat(limbs),
                k0: Lanes::splat(k0),
            },
        }
    }

    /// The modulus, for the exponentiation that inverts.
    pub fn modulus(&self) -> &Modulus<LIMBS> {
        &self.modulus
    }

    /// `a·b·R⁻¹ mod m`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn mul(&self, a: &Element, b: &Element) -> Element {
        self.reduce_once(&multiply::<LIMBS, { 2 * LIMBS }>(a, b, &self.modulus))
    }

    /// `a + b mod m`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn add(&self, a: &Element, b: &Element) -> Element {
        self.reduce_once(&normalize(std::array::from_fn(|j| a[j].add(b[j]))))
    }

    /// `a - b mod m`, computed as `a + m - b` (never negative, below `2m`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn sub(&self, a: &Element, b: &Element) -> Element {
        let lifted = std::array::from_fn(|j| a[j].add(self.modulus.limbs[j]).sub(b[j]));
        self.reduce_once(&normalize(lifted))
    }

    /// `x mod m` for `x < 2m`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn reduce_once(&self, x: &Element) -> Element {
        subtract_if_above(x, &self.modulus.limbs)
    }
}

/// The same number in every lane.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn splat(limbs: &[u64; LIMBS]) -> Element {
    std::array::from_fn(|j| Lanes::splat(limbs[j]))
}

/// Lane `i` holds `values[i]`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn gather(values: &[[u64; LIMBS]; 8]) -> Element {
    std::array::from_fn(|j| Lanes::from_array(&std::array::from_fn(|lane| values[lane][j])))
}

/// The eight numbers, lane `i` at index `i`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn scatter(x: &Element) -> [[u64; LIMBS]; 8] {
    let columns = x.map(|limb| limb.to_array());
    std::array::from_fn(|lane| std::array::from_fn(|j| columns[j][lane]))
}
