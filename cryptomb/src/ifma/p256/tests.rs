//! The P-256 kernel against a num-bigint reference (affine arithmetic with modular
//! inverses, double-and-add): field operations, the complete addition law on its
//! exceptional inputs, fixed-base multiplication, and the nonces. Skipped on CPUs without
//! IFMA (the crate's `detection_matches_cpuinfo` test guards against skipping here).

use num_bigint::BigUint;
use proptest::prelude::*;

use super::field::{gather, scatter, Field, LIMBS};
use super::point::{add, gather_points, multiply_base, Coordinates};
use super::{curve, limbs_of, nonce_batch};
use crate::ecdsa::curve::{GX, GY, N, P};

fn big(bytes: &[u8]) -> BigUint {
    BigUint::from_bytes_be(bytes)
}

fn limbs(x: &BigUint) -> [u64; LIMBS] {
    limbs_of(&x.to_bytes_be())
}

fn value(limbs: &[u64; LIMBS]) -> BigUint {
    limbs
        .iter()
        .rev()
        .fold(BigUint::default(), |acc, &l| (acc << 52) + l)
}

fn r_mod(m: &BigUint) -> BigUint {
    (BigUint::from(1u8) << 260) % m
}

fn inverse(x: &BigUint, m: &BigUint) -> BigUint {
    x.modpow(&(m - 2u8), m)
}

/// An affine point, `None` the point at infinity.
type Affine = Option<(BigUint, BigUint)>;

fn reference_add(a: &Affine, b: &Affine) -> Affine {
    let p = big(&P);
    let (Some((x1, y1)), Some((x2, y2))) = (a, b) else {
        return a.clone().or_else(|| b.clone());
    };
    let slope = if x1 == x2 {
        if (y1 + y2) % &p == BigUint::default() {
            return None;
        }
        // (3x² - 3) / 2y
        (BigUint::from(3u8) * x1 * x1 + &p * 3u8 - 3u8) * inverse(&(y1 * 2u8), &p) % &p
    } else {
        (y2 + &p - y1) * inverse(&((x2 + &p - x1) % &p), &p) % &p
    };
    let x3 = (&slope * &slope + &p * 2u8 - x1 - x2) % &p;
    let y3 = (&slope * ((x1 + &p - &x3) % &p) + &p - y1) % &p;
    Some((x3, y3))
}

fn reference_multiply(k: &BigUint) -> Affine {
    let mut acc: Affine = None;
    let g: Affine = Some((big(&GX), big(&GY)));
    for bit in (0..k.bits()).rev() {
        acc = reference_add(&acc, &acc);
        if k.bit(bit) {
            acc = reference_add(&acc, &g);
        }
    }
    acc
}

/// A point as the kernel takes it: projective with a chosen `Z`, in Montgomery form.
fn projective(point: &Affine, z: u64) -> Coordinates {
    let p = big(&P);
    let r = r_mod(&p);
    match point {
        None => [[0; LIMBS], limbs(&r), [0; LIMBS]],
        Some((x, y)) => {
            let z = BigUint::from(z);
            [x * &z * &r % &p, y * &z * &r % &p, &z * &r % &p].map(|c| limbs(&c))
        }
    }
}

/// A kernel point back to affine (`R` cancels in `X/Z`).
fn affine(c: &Coordinates) -> Affine {
    let p = big(&P);
    let [x, y, z] = c.map(|limbs| value(&limbs));
    assert!(x < p && y < p && z < p, "coordinates are fully reduced");
    if z == BigUint::default() {
        return None;
    }
    let z_inverse = inverse(&z, &p);
    Some((x * &z_inverse % &p, y * &z_inverse % &p))
}

fn lanes_of(point: &super::point::Point) -> [Coordinates; 8] {
    // SAFETY: only called after `available()`.
    let [x, y, z] = unsafe { [scatter(&point.x), scatter(&point.y), scatter(&point.z)] };
    std::array::from_fn(|lane| [x[lane], y[lane], z[lane]])
}

fn scalar() -> impl Strategy<Value = BigUint> {
    proptest::collection::vec(any::<u8>(), 32).prop_map(|b| big(&b) % big(&N))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn field_operations_are_reduced_and_match_bigint(
        values in proptest::collection::vec((scalar(), scalar()), 8),
        order in any::<bool>(),
    ) {
        if !crate::kernel_or_report_skip("ifma::p256::field_operations_are_reduced_and_match_bigint") { return Ok(()); }
        let m = if order { big(&N) } else { big(&P) };
        let a: [[u64; LIMBS]; 8] = std::array::from_fn(|i| limbs(&(&values[i].0 % &m)));
        let b: [[u64; LIMBS]; 8] = std::array::from_fn(|i| limbs(&(&values[i].1 % &m)));
        let m_limbs = limbs(&m);
        let k0 = crate::limbs::montgomery_k0(m_limbs[0]);
        // SAFETY: the features were just confirmed.
        let (product, sum, difference) = unsafe {
            let f = Field::new(&m_limbs, k0);
            let (a, b) = (gather(&a), gather(&b));
            (scatter(&f.mul(&a, &b)), scatter(&f.add(&a, &b)), scatter(&f.sub(&a, &b)))
        };
        let r_inverse = inverse(&r_mod(&m), &m);
        for lane in 0..8 {
            let (x, y) = (value(&a[lane]), value(&b[lane]));
            prop_assert_eq!(value(&product[lane]), &x * &y * &r_inverse % &m);
            prop_assert_eq!(value(&sum[lane]), (&x + &y) % &m);
            prop_assert_eq!(value(&difference[lane]), (&x + &m - &y) % &m);
        }
    }

    #[test]
    fn base_multiplication_matches_double_and_add(
        mut scalars in proptest::collection::vec(scalar(), 8),
    ) {
        if !crate::kernel_or_report_skip("ifma::p256::base_multiplication_matches_double_and_add") { return Ok(()); }
        scalars[0] = BigUint::from(1u8);
        scalars[1] = big(&N) - 1u8;
        let words: [[u64; 4]; 8] = std::array::from_fn(|i| {
            let mut w = scalars[i].to_u64_digits();
            w.resize(4, 0);
            w.try_into().unwrap()
        });
        let c = curve();
        // SAFETY: the features were just confirmed.
        let point = unsafe {
            multiply_base(&c.p.field(), &super::field::splat(&c.b), &c.p.one, &c.table, &words)
        };
        for (lane, coordinates) in lanes_of(&point).iter().enumerate() {
            prop_assert_eq!(affine(coordinates), reference_multiply(&scalars[lane]));
        }
    }
}

#[test]
fn addition_is_complete_on_doubling_identity_and_inverses() {
    if !crate::kernel_or_report_skip(
        "ifma::p256::addition_is_complete_on_doubling_identity_and_inverses",
    ) {
        return;
    }
    let p = big(&P);
    let q1 = reference_multiply(&BigUint::from(7u8));
    let q2 = reference_multiply(&BigUint::from(123456789u64));
    let minus_q1 = q1.clone().map(|(x, y)| (x, &p - y));
    let pairs: [(Affine, Affine); 8] = [
        (q1.clone(), q2.clone()),
        (q1.clone(), q1.clone()),
        (q1.clone(), minus_q1),
        (q1.clone(), None),
        (None, q2.clone()),
        (None, None),
        (q2.clone(), q2.clone()),
        (q2.clone(), q1.clone()),
    ];
    let left = std::array::from_fn(|i| projective(&pairs[i].0, 3 + i as u64));
    let right = std::array::from_fn(|i| projective(&pairs[i].1, 1000 + i as u64));
    let c = curve();
    // SAFETY: the features were just confirmed.
    let sum = unsafe {
        add(
            &c.p.field(),
            &super::field::splat(&c.b),
            &gather_points(&left),
            &gather_points(&right),
        )
    };
    for (lane, coordinates) in lanes_of(&sum).iter().enumerate() {
        let (a, b) = &pairs[lane];
        assert_eq!(affine(coordinates), reference_add(a, b), "lane {lane}");
    }
}

#[test]
fn nonces_hold_the_inverse_and_the_x_coordinate() {
    if !crate::kernel_or_report_skip("ifma::p256::nonces_hold_the_inverse_and_the_x_coordinate") {
        return;
    }
    let n = big(&N);
    let scalars: [BigUint; 24] =
        std::array::from_fn(|i| (BigUint::from(0x9e3779b97f4a7c15u64).pow(4 + i as u32) + i) % &n);
    let bytes: [[[u8; 32]; 8]; 3] = std::array::from_fn(|set| {
        std::array::from_fn(|lane| {
            let mut out = [0u8; 32];
            let digits = scalars[8 * set + lane].to_bytes_be();
            out[32 - digits.len()..].copy_from_slice(&digits);
            out
        })
    });
    // Three sets: the batch inversion's first, middle and last positions.
    let nonces = nonce_batch(&bytes);
    for (i, (k_inverse, r)) in nonces.as_flattened().iter().enumerate() {
        let k = &scalars[i];
        assert_eq!(value(k_inverse) * k % &n, r_mod(&n), "k⁻¹·R·k = R");
        let (x, _) = reference_multiply(k).unwrap();
        assert_eq!(value(r), x % &n);
    }
}
