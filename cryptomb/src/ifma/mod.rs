//! The AVX-512 IFMA kernel: eight RSA private operations, or eight P-256 nonces, per call.

mod exp;
mod lanes;
mod mont;
pub mod p256;
mod rsa;
#[cfg(test)]
mod tests;

use crate::key::{KeySize, RsaParams};

/// The environment variable that makes the kernel count as absent on any CPU, so the
/// software paths (and a machine without AVX-512 IFMA) can be exercised anywhere.
const DISABLE_VAR: &str = "MESHPROXY_CRYPTOMB_DISABLE";

/// Whether this CPU has the kernel's features (AVX-512F and AVX-512 IFMA).
pub fn cpu_supported() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512ifma")
}

/// Why the kernel cannot run in this process, or `None` when it can. Decided once: the
/// CPU does not change, and every guard in front of the kernel must agree with the first.
pub fn unavailable_reason() -> Option<&'static str> {
    static REASON: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    *REASON.get_or_init(|| {
        if !cpu_supported() {
            Some("this CPU lacks AVX-512F or AVX-512 IFMA")
        } else if std::env::var(DISABLE_VAR).is_ok_and(|v| v == "1") {
            Some("switched off by MESHPROXY_CRYPTOMB_DISABLE=1")
        } else {
            None
        }
    })
}

/// Whether the kernel runs here: the CPU has its features and it is not switched off.
pub fn available() -> bool {
    unavailable_reason().is_none()
}

/// The private operation on up to eight inputs of keys of one size, each
/// input the key's modulus length in limbs (`2·prime_limbs`). Returns
/// `Some(limbs)` per input, `None` where the result failed its check.
/// Unused lanes repeat the last input.
///
/// # Panics
/// When the CPU lacks the kernel's features, or the batch is empty, larger
/// than eight, or mixes sizes: callers check all of these first.
pub fn private_batch(keys: &[&RsaParams], inputs: &[&[u64]]) -> Vec<Option<Vec<u64>>> {
    assert!(
        available(),
        "AVX-512 IFMA kernel called on a CPU without it"
    );
    assert!(!keys.is_empty() && keys.len() <= 8 && keys.len() == inputs.len());
    let size = keys[0].size;
    assert!(
        keys.iter().all(|k| k.size == size),
        "one key size per batch"
    );
    let lane_keys: [&RsaParams; 8] = std::array::from_fn(|i| keys[i.min(keys.len() - 1)]);
    let lane_inputs: [&[u64]; 8] = std::array::from_fn(|i| inputs[i.min(inputs.len() - 1)]);
    // SAFETY: `available()` confirmed the target features the kernel uses.
    let (rows, verified) = unsafe {
        match size {
            KeySize::Rsa2048 => rsa::private_batch::<20, 40, 80>(lane_keys, lane_inputs),
            KeySize::Rsa3072 => rsa::private_batch::<30, 60, 120>(lane_keys, lane_inputs),
            KeySize::Rsa4096 => rsa::private_batch::<40, 80, 160>(lane_keys, lane_inputs),
        }
    };
    rows.into_iter()
        .take(keys.len())
        .enumerate()
        .map(|(lane, row)| (verified >> lane & 1 == 1).then_some(row))
        .collect()
}

/// `base^exponent mod modulus` for eight lanes of 1024-bit odd moduli, through the same
/// CRT-half code the signatures use: the fuzz target's window into the kernel. Inputs
/// (and the timing-leak check's) are big-endian; a lane the kernel cannot take (even modulus, over 1024 bits) is
/// `None`, as is every lane on a CPU without the features.
#[cfg(feature = "kernel-access")]
pub fn modexp_1024(lanes: &[(Vec<u8>, Vec<u8>, Vec<u8>); 8]) -> [Option<Vec<u8>>; 8] {
    use crate::key::PrimeParams;
    let params: Vec<Option<PrimeParams>> = lanes
        .iter()
        .map(|(m, _, e)| PrimeParams::new(m, e, KeySize::Rsa2048))
        .collect();
    if !available() || params.iter().any(Option::is_none) {
        return Default::default();
    }
    let params: Vec<PrimeParams> = params.into_iter().flatten().collect();
    let bases: Vec<Vec<u64>> = lanes
        .iter()
        .map(|(_, b, _)| crate::limbs::from_be_bytes(b, 40))
        .collect();
    // SAFETY: `available()` confirmed the target features.
    let rows = unsafe { fuzz_lanes(&params, &bases) };
    rows.map(|row| Some(crate::limbs::to_be_bytes(&row, 128)))
}

/// The kernel half of [`modexp_1024`].
#[cfg(feature = "kernel-access")]
#[target_feature(enable = "avx512f,avx512ifma")]
fn fuzz_lanes(params: &[crate::key::PrimeParams], bases: &[Vec<u64>]) -> [Vec<u64>; 8] {
    let input = rsa::gather::<40>(std::array::from_fn(|i| bases[i].as_slice()));
    let (power, _) = rsa::crt_half::<20, 40>(&input, std::array::from_fn(|i| &params[i]), 1024);
    std::array::from_fn(|lane| power.iter().map(|limb| limb.to_array()[lane]).collect())
}
