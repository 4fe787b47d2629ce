//! The kernel's arithmetic against num-bigint, lane by lane, on random
//! moduli and operands (proptest). Skipped on CPUs without IFMA; the
//! `detection_matches_cpuinfo` test makes sure that is not this one when
//! /proc/cpuinfo lists the feature.

use num_bigint::BigUint;
use proptest::prelude::*;

use super::exp::{pow_public, pow_secret};
use super::lanes::Lanes;
use super::mont::{multiply, multiply_wide, normalize, reduce, square, subtract_if_above, Modulus};
use crate::limbs::{self, LIMB_BITS};

/// Limbs of the 2048-bit class's primes.
const N: usize = 20;
const W: usize = 2 * N;

fn to_lanes<const L: usize>(values: &[BigUint; 8]) -> [Lanes; L] {
    let rows: Vec<Vec<u64>> = values
        .iter()
        .map(|v| limbs::from_be_bytes(&v.to_bytes_be(), L))
        .collect();
    // SAFETY: only called after `super::available()`.
    unsafe {
        core::array::from_fn(|j| Lanes::from_array(&core::array::from_fn(|lane| rows[lane][j])))
    }
}

fn from_lanes<const L: usize>(x: &[Lanes; L]) -> Vec<BigUint> {
    // SAFETY: only called after `super::available()`.
    let columns: Vec<[u64; 8]> = x.iter().map(|l| unsafe { l.to_array() }).collect();
    (0..8)
        .map(|lane| {
            columns
                .iter()
                .rev()
                .fold(BigUint::default(), |acc, c| (acc << LIMB_BITS) + c[lane])
        })
        .collect()
}

fn modulus(values: &[BigUint; 8]) -> Modulus<N> {
    let k0 = values
        .clone()
        .map(|v| limbs::montgomery_k0(limbs::from_be_bytes(&v.to_bytes_be(), N)[0]));
    // SAFETY: only called after `super::available()`.
    Modulus {
        limbs: to_lanes(values),
        k0: unsafe { Lanes::from_array(&k0) },
    }
}

/// Eight odd 1024-bit moduli and, per lane, a value below `4m` and one below `m`.
fn operands() -> impl Strategy<Value = ([BigUint; 8], [BigUint; 8], [BigUint; 8])> {
    let number = |bytes: usize| proptest::collection::vec(any::<u8>(), bytes);
    proptest::collection::vec((number(128), number(130), number(128)), 8).prop_map(|rows| {
        let mut ms = Vec::new();
        let mut big = Vec::new();
        let mut small = Vec::new();
        for (mut m, a, b) in rows {
            m[0] |= 0x80;
            m[127] |= 1;
            let m = BigUint::from_bytes_be(&m);
            big.push(BigUint::from_bytes_be(&a) % (&m * 4u8));
            small.push(BigUint::from_bytes_be(&b) % &m);
            ms.push(m);
        }
        let array = |v: Vec<BigUint>| -> [BigUint; 8] { v.try_into().unwrap() };
        (array(ms), array(big), array(small))
    })
}

/// Whether every limb is below 2^52, as the next multiplication needs.
fn normalized<const L: usize>(x: &[Lanes; L]) -> bool {
    // SAFETY: only called after `super::available()`.
    x.iter().all(|limb| {
        unsafe { limb.to_array() }
            .iter()
            .all(|&v| v < 1 << LIMB_BITS)
    })
}

fn r_inverse(m: &BigUint) -> BigUint {
    let r = BigUint::from(1u8) << (LIMB_BITS * N);
    (r % m).modinv(m).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn multiply_and_square_are_almost_montgomery((ms, a, b) in operands()) {
        if !crate::kernel_or_report_skip("ifma::multiply_and_square_are_almost_montgomery") { return Ok(()); }
        let m = modulus(&ms);
        // SAFETY: the features were just confirmed.
        let (product, squared) = unsafe {
            (multiply::<N, W>(&to_lanes(&a), &to_lanes(&b), &m), square::<N, W>(&to_lanes(&a), &m))
        };
        prop_assert!(normalized(&product) && normalized(&squared));
        for lane in 0..8 {
            let rinv = r_inverse(&ms[lane]);
            let got = &from_lanes(&product)[lane];
            prop_assert!(got < &(&ms[lane] * 2u8));
            prop_assert_eq!(got % &ms[lane], (&a[lane] * &b[lane] * &rinv) % &ms[lane]);
            let got = &from_lanes(&squared)[lane];
            prop_assert!(got < &(&ms[lane] * 2u8));
            prop_assert_eq!(got % &ms[lane], (&a[lane] * &a[lane] * &rinv) % &ms[lane]);
        }
    }

    #[test]
    fn wide_product_reduction_and_subtraction((ms, a, b) in operands()) {
        if !crate::kernel_or_report_skip("ifma::wide_product_reduction_and_subtraction") { return Ok(()); }
        let m = modulus(&ms);
        let small: [BigUint; 8] = core::array::from_fn(|i| &a[i] % &ms[i]);
        // SAFETY: the features were just confirmed.
        let (wide, reduced, subtracted) = unsafe {
            let wide = normalize(multiply_wide::<N, W>(&to_lanes(&small), &to_lanes(&b)));
            let reduced = reduce::<N, W>(wide, &m);
            let below_two_m: [BigUint; 8] = core::array::from_fn(|i| &a[i] % (&ms[i] * 2u8));
            (wide, reduced, subtract_if_above(&to_lanes(&below_two_m), &m.limbs))
        };
        for lane in 0..8 {
            let product = &small[lane] * &b[lane];
            prop_assert_eq!(&from_lanes(&wide)[lane], &product);
            let got = &from_lanes(&reduced)[lane];
            prop_assert!(got < &(&ms[lane] * 2u8));
            prop_assert_eq!(got % &ms[lane], (&product * r_inverse(&ms[lane])) % &ms[lane]);
            prop_assert_eq!(&from_lanes(&subtracted)[lane], &(&a[lane] % &ms[lane]));
        }
    }

    #[test]
    fn exponentiation_matches_modpow(
        (ms, a, _) in operands(),
        exponents in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 128), 8),
        public in proptest::collection::vec(1u64..1 << 20, 8),
    ) {
        if !crate::kernel_or_report_skip("ifma::exponentiation_matches_modpow") { return Ok(()); }
        let m = modulus(&ms);
        let r = |m: &BigUint| (BigUint::from(1u8) << (LIMB_BITS * N)) % m;
        let base: [BigUint; 8] = core::array::from_fn(|i| (&a[i] % &ms[i]) * r(&ms[i]) % &ms[i]);
        let one: [BigUint; 8] = core::array::from_fn(|i| r(&ms[i]));
        let words: Vec<Vec<u64>> = exponents.iter().map(|e| limbs::words_from_be_bytes(e, 17)).collect();
        let public: [u64; 8] = public.try_into().unwrap();
        // SAFETY: the features were just confirmed.
        let (secret, open) = unsafe {
            let rows: [&[u64]; 8] = core::array::from_fn(|i| words[i].as_slice());
            (
                pow_secret::<N, W>(&to_lanes(&base), rows, 1024, &to_lanes(&one), &m),
                pow_public::<N, W>(&to_lanes(&base), &public, &to_lanes(&one), &m),
            )
        };
        for lane in 0..8 {
            let (modulus, plain) = (&ms[lane], &a[lane] % &ms[lane]);
            let expected = plain.modpow(&BigUint::from_bytes_be(&exponents[lane]), modulus) * r(modulus) % modulus;
            prop_assert_eq!(&from_lanes(&secret)[lane] % modulus, expected);
            let expected = plain.modpow(&BigUint::from(public[lane]), modulus) * r(modulus) % modulus;
            prop_assert_eq!(&from_lanes(&open)[lane] % modulus, expected);
        }
    }
}

/// The largest 1024-bit moduli with both factors at `4m − 1`: every limb
/// and accumulator at its bound, where a carry lost anywhere would show.
#[test]
fn extreme_operands_stay_in_bounds() {
    if !crate::kernel_or_report_skip("ifma::extreme_operands_stay_in_bounds") {
        return;
    }
    let ms: [BigUint; 8] =
        core::array::from_fn(|i| (BigUint::from(1u8) << 1024) - 1u8 - BigUint::from(2 * i as u32));
    let top: [BigUint; 8] = core::array::from_fn(|i| &ms[i] * 4u8 - 1u8);
    let m = modulus(&ms);
    // SAFETY: the features were just confirmed.
    let (product, squared) = unsafe {
        let x = to_lanes(&top);
        (multiply::<N, W>(&x, &x, &m), square::<N, W>(&x, &m))
    };
    assert!(normalized(&product) && normalized(&squared));
    for lane in 0..8 {
        let expected = (&top[lane] * &top[lane] * r_inverse(&ms[lane])) % &ms[lane];
        for got in [&from_lanes(&product)[lane], &from_lanes(&squared)[lane]] {
            assert!(got < &(&ms[lane] * 2u8));
            assert_eq!(got % &ms[lane], expected);
        }
    }
}

#[test]
fn detection_matches_cpuinfo() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let listed = |flag: &str| cpuinfo.split_whitespace().any(|word| word == flag);
    let on_cpu = listed("avx512f") && listed("avx512ifma");
    assert_eq!(super::cpu_supported(), on_cpu);
    // The switch only ever takes the kernel away.
    let switched_off = std::env::var("MESHPROXY_CRYPTOMB_DISABLE").is_ok_and(|v| v == "1");
    assert_eq!(super::available(), on_cpu && !switched_off);
    assert_eq!(super::unavailable_reason().is_none(), super::available());
}
