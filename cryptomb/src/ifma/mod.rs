//! The AVX-512 IFMA kernel: eight RSA private operations per call.

mod exp;
mod lanes;
mod mont;
mod rsa;
#[cfg(test)]
mod tests;

use crate::key::{KeySize, RsaParams};

/// Whether this CPU runs the kernel (AVX-512F and AVX-512 IFMA).
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512ifma")
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
