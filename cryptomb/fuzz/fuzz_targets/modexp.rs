//! The kernel's modular exponentiation (the CRT half of every signature) against
//! num-bigint's, on eight lanes of fuzzer-chosen 1024-bit moduli, bases and exponents.

#![no_main]

use libfuzzer_sys::fuzz_target;
use num_bigint::BigUint;

/// Bytes per number.
const LEN: usize = 128;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 * 3 * LEN {
        return;
    }
    let lanes: [(Vec<u8>, Vec<u8>, Vec<u8>); 8] = std::array::from_fn(|i| {
        let chunk = &data[i * 3 * LEN..(i + 1) * 3 * LEN];
        let mut modulus = chunk[..LEN].to_vec();
        modulus[LEN - 1] |= 1;
        (modulus, chunk[LEN..2 * LEN].to_vec(), chunk[2 * LEN..].to_vec())
    });
    let results = cryptomb::kernel::modexp_1024(&lanes);
    for ((modulus, base, exponent), result) in lanes.iter().zip(results) {
        let Some(result) = result else { continue };
        let m = BigUint::from_bytes_be(modulus);
        if m <= BigUint::from(1u8) {
            continue;
        }
        let expected = BigUint::from_bytes_be(base)
            .modpow(&BigUint::from_bytes_be(exponent), &m);
        assert_eq!(BigUint::from_bytes_be(&result), expected);
    }
});
