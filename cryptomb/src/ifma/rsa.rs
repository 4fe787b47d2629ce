//! The RSA CRT private operation on eight inputs at once, each result
//! checked with the public exponent before it is released.

use super::exp::{pow_public, pow_secret};
use super::lanes::Lanes;
use super::mont::{
    equal_lanes, multiply, multiply_wide, normalize, reduce, subtract_if_above, wipe, Modulus,
};
use crate::key::{PrimeParams, RsaParams};

/// Limb `j` of eight numbers, lane `i` from `rows[i]`: per-key scalars
/// transposed into the kernel's layout.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) fn gather<const N: usize>(rows: [&[u64]; 8]) -> [Lanes; N] {
    let mut out = [Lanes::zero(); N];
    for (j, limb) in out.iter_mut().enumerate() {
        *limb = Lanes::from_array(&rows.map(|row| row[j]));
    }
    out
}

/// The number 1 in every lane (not in Montgomery form): multiplying by it
/// leaves the Montgomery domain.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn unit<const N: usize>() -> [Lanes; N] {
    let mut out = [Lanes::zero(); N];
    out[0] = Lanes::splat(1);
    out
}

/// A modulus per lane with its constant.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn modulus<const N: usize>(limbs: [&[u64]; 8], k0: [u64; 8]) -> Modulus<N> {
    Modulus {
        limbs: gather(limbs),
        k0: Lanes::from_array(&k0),
    }
}

/// One CRT half: `input^(d mod (p-1)) mod p`, fully reduced, for a
/// double-width input below `p·R`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) fn crt_half<const N: usize, const W: usize>(
    input: &[Lanes; W],
    primes: [&PrimeParams; 8],
    bits: usize,
) -> ([Lanes; N], Modulus<N>) {
    let m = modulus::<N>(primes.map(|p| &p.modulus[..]), primes.map(|p| p.k0));
    let base = multiply::<N, W>(
        &reduce::<N, W>(*input, &m),
        &gather(primes.map(|p| &p.r3[..])),
        &m,
    );
    let one = gather(primes.map(|p| &p.one[..]));
    let mut power = pow_secret::<N, W>(&base, primes.map(|p| &p.exponent[..]), bits, &one, &m);
    let result = subtract_if_above(&multiply::<N, W>(&power, &unit(), &m), &m.limbs);
    wipe(&mut power);
    (result, m)
}

/// The private operation on eight inputs (`2N`-limb integers below their
/// keys' moduli). `W = 2N`, `V = 2W`. Returns each lane's `2N`-limb result
/// and the mask of lanes whose result survived the public-exponent check;
/// the others must not be released.
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn private_batch<const N: usize, const W: usize, const V: usize>(
    keys: [&RsaParams; 8],
    inputs: [&[u64]; 8],
) -> (Vec<Vec<u64>>, u8) {
    let bits = keys[0].size.modulus_bits() / 2;
    let c = gather::<W>(inputs);
    let (mut m1, p) = crt_half::<N, W>(&c, keys.map(|k| &k.p), bits);
    let (mut m2, q) = crt_half::<N, W>(&c, keys.map(|k| &k.q), bits);

    // h = (m1 - m2)·q⁻¹ mod p, with 2p added so the difference stays positive.
    let mut difference = [Lanes::zero(); N];
    for j in 0..N {
        difference[j] = m1[j].add(p.limbs[j].double()).sub(m2[j]);
    }
    let mut difference = normalize(difference);
    let qinv = gather(keys.map(|k| &k.qinv[..]));
    let mut h = subtract_if_above(&multiply::<N, W>(&difference, &qinv, &p), &p.limbs);

    // s = m2 + h·q.
    let mut wide = multiply_wide::<N, W>(&h, &q.limbs);
    for j in 0..N {
        wide[j] = wide[j].add(m2[j]);
    }
    let signature = normalize(wide);
    wipe(&mut m1);
    wipe(&mut m2);
    wipe(&mut difference);
    wipe(&mut h);

    // Fault countermeasure: signature^e must give back the input.
    let n = modulus::<W>(
        keys.map(|k| &k.public.modulus[..]),
        keys.map(|k| k.public.k0),
    );
    let mont = multiply::<W, V>(&signature, &gather(keys.map(|k| &k.public.r2[..])), &n);
    let one = gather(keys.map(|k| &k.public.one[..]));
    let power = pow_public::<W, V>(&mont, &keys.map(|k| k.public.e), &one, &n);
    let recovered = subtract_if_above(&multiply::<W, V>(&power, &unit(), &n), &n.limbs);
    let verified = equal_lanes(&recovered, &c);

    let mut rows = vec![vec![0u64; W]; 8];
    for (j, limb) in signature.iter().enumerate() {
        for (row, value) in rows.iter_mut().zip(limb.to_array()) {
            row[j] = value;
        }
    }
    (rows, verified)
}
