//! The P-256 half of the kernel: ECDSA nonces eight at a time, and the one multiply-add a
//! signature still needs once its nonce is known.
//!
//! An ECDSA signature is `r = x(k·G) mod n`, `s = k⁻¹·(e + r·d) mod n`. Everything but
//! the last step depends only on the random `k`, not on the key or the message, so
//! [`nonce_batch`] computes `(k⁻¹, r)` for eight nonces per register set in one pass
//! (fixed-base multiplication, then both inversions by Fermat's little theorem on the same
//! constant-time exponentiation RSA uses, shared between the sets by Montgomery's
//! batch-inversion trick), and [`signature_s`] finishes a signature with two
//! multiplications.

mod field;
mod point;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use super::exp::pow_secret;
use super::lanes::Lanes;
use crate::ecdsa::curve::{B, GX, GY, N, P};
use crate::limbs::{from_be_bytes, montgomery_k0, montgomery_r, shift_mod, words_from_be_bytes};
use field::{gather, scatter, splat, Element, Field, LIMBS};
use point::{Window, WINDOWS};

/// Limbs as a fixed array (`from_be_bytes` of a 256-bit number into [`LIMBS`]).
fn limbs_of(bytes: &[u8]) -> [u64; LIMBS] {
    from_be_bytes(bytes, LIMBS)
        .try_into()
        .expect("LIMBS limbs requested")
}

/// `x·R mod m` for `x < m`.
fn to_montgomery(x: &[u8], m: &[u64; LIMBS]) -> [u64; LIMBS] {
    crate::limbs::to_montgomery(x, m)
        .try_into()
        .expect("LIMBS limbs requested")
}

/// `x - 2` for a big-endian `x ≥ 2`: the exponent that inverts modulo the prime `x`.
fn minus_two(x: &[u8; 32]) -> [u8; 32] {
    let mut out = *x;
    let mut borrow = 2u16;
    for byte in out.iter_mut().rev() {
        let (value, under) = byte.overflowing_sub(borrow as u8);
        *byte = value;
        borrow = u16::from(under);
    }
    out
}

/// One of the two moduli with its constants.
struct Modulus {
    limbs: [u64; LIMBS],
    k0: u64,
    /// `R mod m`: one in Montgomery form.
    one: [u64; LIMBS],
    /// `m - 2` as little-endian words plus a spare zero word, for the inversion.
    inverse_exponent: Vec<u64>,
}

impl Modulus {
    fn new(bytes: &[u8; 32]) -> Self {
        let limbs = limbs_of(bytes);
        Modulus {
            k0: montgomery_k0(limbs[0]),
            one: montgomery_r(&limbs, 256).try_into().expect("LIMBS limbs"),
            inverse_exponent: words_from_be_bytes(&minus_two(bytes), 5),
            limbs,
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn field(&self) -> Field {
        Field::new(&self.limbs, self.k0)
    }

    /// `x⁻¹·R` for `x` in Montgomery form (`x·R`), fully reduced; zero stays zero.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn invert(&self, f: &Field, x: &Element) -> Element {
        let exponents = [self.inverse_exponent.as_slice(); 8];
        f.reduce_once(&pow_secret::<LIMBS, { 2 * LIMBS }>(
            x,
            exponents,
            256,
            &splat(&self.one),
            f.modulus(),
        ))
    }

    /// Every `xs[i]⁻¹·R` (Montgomery form in and out, no `x` zero) for the price of one
    /// inversion and `3·(S-1)` multiplications: the running products' inverse, unwound.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn invert_all<const S: usize>(&self, f: &Field, xs: &[Element; S]) -> [Element; S] {
        let mut prefix = *xs;
        for i in 1..S {
            prefix[i] = f.mul(&prefix[i - 1], &xs[i]);
        }
        let mut inverse = self.invert(f, &prefix[S - 1]);
        let mut out = [[Lanes::zero(); LIMBS]; S];
        for i in (1..S).rev() {
            out[i] = f.mul(&inverse, &prefix[i - 1]);
            inverse = f.mul(&inverse, &xs[i]);
        }
        out[0] = inverse;
        for secret in prefix.iter_mut().chain([&mut inverse]) {
            super::mont::wipe(secret);
        }
        out
    }
}

/// The curve's constants and its base-point table, built on first use.
struct Curve {
    p: Modulus,
    n: Modulus,
    /// `R² mod n`: turns a scalar into Montgomery form.
    n_r2: [u64; LIMBS],
    /// The curve's `b` in Montgomery form.
    b: [u64; LIMBS],
    table: Box<[Window; WINDOWS]>,
}

/// The curve, once. Callers have checked [`super::available`].
fn curve() -> &'static Curve {
    static CURVE: OnceLock<Curve> = OnceLock::new();
    CURVE.get_or_init(|| {
        let p = Modulus::new(&P);
        let n = Modulus::new(&N);
        let mut n_r2 = n.one;
        shift_mod(&mut n_r2, &n.limbs, crate::limbs::LIMB_BITS * LIMBS);
        let b = to_montgomery(&B, &p.limbs);
        let g = [
            to_montgomery(&GX, &p.limbs),
            to_montgomery(&GY, &p.limbs),
            p.one,
        ];
        // SAFETY: only reached from entry points guarded by `super::available()`.
        let table = unsafe { point::base_table(&p.field(), &splat(&b), &p.one, &g) };
        Curve {
            p,
            n,
            n_r2,
            b,
            table,
        }
    })
}

/// A nonce's two halves: `k⁻¹·R mod n` (Montgomery form) and `r`.
pub type NonceHalves = ([u64; LIMBS], [u64; LIMBS]);

/// For `S` sets of eight secret scalars `1 ≤ k < n` (big-endian): `(k⁻¹·R mod n,
/// x(k·G) mod n)` each. More sets share the two inversions among more nonces (the pool
/// uses four); one set is what a batch of eight signers would compute.
///
/// # Panics
/// When the CPU lacks the kernel's features: callers check [`super::available`] first.
pub fn nonce_batch<const S: usize>(scalars: &[[[u8; 32]; 8]; S]) -> [[NonceHalves; 8]; S] {
    assert!(
        super::available(),
        "AVX-512 IFMA kernel called on a CPU without it"
    );
    let curve = curve();
    // SAFETY: `available()` confirmed the target features.
    unsafe { nonce_lanes(curve, scalars) }
}

/// The kernel half of [`nonce_batch`].
#[target_feature(enable = "avx512f,avx512ifma")]
fn nonce_lanes<const S: usize>(
    curve: &Curve,
    scalars: &[[[u8; 32]; 8]; S],
) -> [[NonceHalves; 8]; S] {
    let fp = curve.p.field();
    let fnn = curve.n.field();
    let b = splat(&curve.b);
    let mut points = scalars.map(|set| {
        let mut words: [[u64; 4]; 8] = set.map(|k| {
            let mut w = [0u64; 4];
            for (i, chunk) in k.rchunks(8).enumerate() {
                w[i] = u64::from_be_bytes(chunk.try_into().expect("8-byte chunks"));
            }
            w
        });
        let point = point::multiply_base(&fp, &b, &curve.p.one, &curve.table, &words);
        zeroize::Zeroize::zeroize(&mut words);
        point
    });
    let z_inverses = curve.p.invert_all(&fp, &points.map(|p| p.z));
    let mut k_montgomery = scalars.map(|set| {
        let mut k = gather(&set.map(|s| limbs_of(&s)));
        let montgomery = fnn.mul(&k, &splat(&curve.n_r2));
        super::mont::wipe(&mut k);
        montgomery
    });
    let mut k_inverses = curve.n.invert_all(&fnn, &k_montgomery);
    let out = std::array::from_fn(|set| {
        let x = fp.mul(
            &fp.mul(&points[set].x, &z_inverses[set]),
            &splat(&[1, 0, 0, 0, 0]),
        );
        // x < p < 2n: one subtraction reduces it modulo n.
        let rs = scatter(&fnn.reduce_once(&x));
        let halves = scatter(&k_inverses[set]);
        std::array::from_fn(|lane| (halves[lane], rs[lane]))
    });
    for point in points.iter_mut() {
        for secret in [&mut point.x, &mut point.y, &mut point.z] {
            super::mont::wipe(secret);
        }
    }
    for secret in k_montgomery.iter_mut().chain(k_inverses.iter_mut()) {
        super::mont::wipe(secret);
    }
    out
}

/// `s = k⁻¹·(e + r·d) mod n` for one signature: `d_montgomery = d·R mod n`, `digest`
/// the message hash (reduced here), `r` and `k_inverse` from [`nonce_batch`].
///
/// # Panics
/// When the CPU lacks the kernel's features: callers check [`super::available`] first.
pub fn signature_s(
    d_montgomery: &[u64; LIMBS],
    digest: &[u8; 32],
    r: &[u64; LIMBS],
    k_inverse: &[u64; LIMBS],
) -> [u64; LIMBS] {
    assert!(
        super::available(),
        "AVX-512 IFMA kernel called on a CPU without it"
    );
    let curve = curve();
    // SAFETY: `available()` confirmed the target features.
    unsafe { s_lanes(curve, d_montgomery, digest, r, k_inverse) }
}

/// The kernel half of [`signature_s`] (every lane computes the same signature).
#[target_feature(enable = "avx512f,avx512ifma")]
fn s_lanes(
    curve: &Curve,
    d_montgomery: &[u64; LIMBS],
    digest: &[u8; 32],
    r: &[u64; LIMBS],
    k_inverse: &[u64; LIMBS],
) -> [u64; LIMBS] {
    let f = curve.n.field();
    // The digest is below 2^256 < 2n: one subtraction reduces it.
    let e = f.reduce_once(&splat(&limbs_of(digest)));
    let mut d = splat(d_montgomery);
    let mut sum = f.add(&e, &f.mul(&splat(r), &d));
    let mut s = f.mul(&sum, &splat(k_inverse));
    let out = scatter(&s)[0];
    for secret in [&mut d, &mut sum, &mut s] {
        super::mont::wipe(secret);
    }
    out
}
