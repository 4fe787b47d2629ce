//! Eight independent 64-bit lanes in one AVX-512 register: the only place
//! that touches `std::arch`, so the arithmetic above it reads as plain math.
//!
//! Every function requires AVX-512F and AVX-512 IFMA; callers reach them only
//! through [`super::available`]-guarded entry points.

use core::arch::x86_64::{
    __m512i, _mm512_add_epi64, _mm512_and_si512, _mm512_cmpeq_epi64_mask, _mm512_loadu_si512,
    _mm512_madd52hi_epu64, _mm512_madd52lo_epu64, _mm512_mask_blend_epi64, _mm512_set1_epi64,
    _mm512_setzero_si512, _mm512_slli_epi64, _mm512_srai_epi64, _mm512_storeu_si512,
    _mm512_sub_epi64,
};

/// Bits per limb: IFMA multiplies the low 52 bits of each lane.
pub const LIMB_BITS: u32 = 52;

/// Mask of one limb's bits.
pub const LIMB_MASK: u64 = (1 << LIMB_BITS) - 1;

/// One limb of eight numbers, lane `i` belonging to the `i`-th batch member.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Lanes(__m512i);

impl Lanes {
    /// All lanes zero.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn zero() -> Self {
        Lanes(_mm512_setzero_si512())
    }

    /// The same value in every lane (constants such as the limb mask).
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn splat(value: u64) -> Self {
        Lanes(_mm512_set1_epi64(value as i64))
    }

    /// Lane `i` takes `values[i]`: how per-key scalars enter the batch.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn from_array(values: &[u64; 8]) -> Self {
        // SAFETY: the pointer covers exactly 64 readable bytes; the load is unaligned.
        Lanes(unsafe { _mm512_loadu_si512(values.as_ptr().cast()) })
    }

    /// The eight lanes as scalars, lane `i` at index `i`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn to_array(self) -> [u64; 8] {
        let mut out = [0u64; 8];
        // SAFETY: the pointer covers exactly 64 writable bytes; the store is unaligned.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), self.0) };
        out
    }

    /// Lane-wise wrapping addition.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn add(self, other: Self) -> Self {
        Lanes(_mm512_add_epi64(self.0, other.0))
    }

    /// Lane-wise wrapping subtraction.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn sub(self, other: Self) -> Self {
        Lanes(_mm512_sub_epi64(self.0, other.0))
    }

    /// Lane-wise doubling (a left shift by one bit).
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn double(self) -> Self {
        Lanes(_mm512_slli_epi64::<1>(self.0))
    }

    /// The low 52 bits of each lane: the limb part of an accumulator.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn low_limb(self) -> Self {
        Lanes(_mm512_and_si512(
            self.0,
            _mm512_set1_epi64(LIMB_MASK as i64),
        ))
    }

    /// Each lane shifted right by 52 bits, keeping the sign: the carry (or
    /// borrow, when negative) an accumulator passes to the next limb.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn carry(self) -> Self {
        Lanes(_mm512_srai_epi64::<{ LIMB_BITS }>(self.0))
    }

    /// `self + low52(a * b)` per lane, with `a` and `b` read as 52-bit limbs.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn madd_lo(self, a: Self, b: Self) -> Self {
        Lanes(_mm512_madd52lo_epu64(self.0, a.0, b.0))
    }

    /// `self + high52(a * b)` per lane, with `a` and `b` read as 52-bit limbs.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn madd_hi(self, a: Self, b: Self) -> Self {
        Lanes(_mm512_madd52hi_epu64(self.0, a.0, b.0))
    }

    /// Per lane: `when_set` where bit `i` of `mask` is set, else `self`.
    /// A blend reads both inputs, so the choice leaves no trace in timing.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn blend(self, mask: u8, when_set: Self) -> Self {
        Lanes(_mm512_mask_blend_epi64(mask, self.0, when_set.0))
    }

    /// Bit `i` set where lane `i` of both operands are equal.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn eq_mask(self, other: Self) -> u8 {
        _mm512_cmpeq_epi64_mask(self.0, other.0)
    }
}
