//! Groups sign requests into kernel batches: encode each message, group by
//! key size, run eight lanes at a time, turn limbs back into signatures.

use ring::rand::SystemRandom;

use crate::key::{KeySize, RsaParams};
use crate::{ifma, limbs, Path, SignRequest, Signed};

/// Fills `out[i]` for every request the kernel can take; leaves `None`
/// for the single-buffer path.
pub(crate) fn sign_in_lanes(requests: &[SignRequest<'_>], out: &mut [Option<Signed>]) {
    let rng = SystemRandom::new();
    for size in [KeySize::Rsa2048, KeySize::Rsa3072, KeySize::Rsa4096] {
        let mut pending: Vec<(usize, &RsaParams, Vec<u64>)> = Vec::new();
        for (index, request) in requests.iter().enumerate() {
            let Some(params) = request.key.params.as_ref().filter(|p| p.size == size) else {
                continue;
            };
            match request
                .padding
                .encode(request.message, size.modulus_bits(), &rng)
            {
                Ok(encoded) if encoded.as_slice() < params.n.as_slice() => {
                    let input = limbs::from_be_bytes(&encoded, 2 * size.prime_limbs());
                    pending.push((index, params, input));
                }
                Ok(_) => {}
                Err(error) => {
                    out[index] = Some(Signed {
                        signature: Err(error),
                        path: Path::MultiBuffer,
                    })
                }
            }
        }
        for chunk in pending.chunks(8) {
            let keys: Vec<&RsaParams> = chunk.iter().map(|(_, k, _)| *k).collect();
            let inputs: Vec<&[u64]> = chunk.iter().map(|(_, _, i)| i.as_slice()).collect();
            for ((index, _, _), result) in chunk.iter().zip(ifma::private_batch(&keys, &inputs)) {
                let request = &requests[*index];
                out[*index] = Some(match result {
                    Some(limbs) => Signed {
                        signature: Ok(limbs::to_be_bytes(&limbs, request.key.modulus_len())),
                        path: Path::MultiBuffer,
                    },
                    None => Signed {
                        signature: request.key.sign_single(request.padding, request.message),
                        path: Path::FaultRecovered,
                    },
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{sign_batch, Engine, Padding, Path, RsaKey, SignRequest};

    /// A corrupted CRT exponent (what a fault during signing produces) must
    /// be caught by the public-exponent check: the lane's result is dropped
    /// and ring signs instead, while the healthy lane beside it is released.
    #[test]
    fn faulty_results_are_withheld_and_resigned() {
        if !crate::kernel_or_report_skip("batch::faulty_results_are_withheld_and_resigned") {
            return;
        }
        let der = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-outform", "DER"])
            .output()
            .expect("openssl runs")
            .stdout;
        let healthy = RsaKey::from_der(&der).unwrap();
        let mut faulty = RsaKey::from_der(&der).unwrap();
        faulty.params.as_mut().unwrap().p.exponent[3] ^= 1 << 17;
        let requests = [&healthy, &faulty].map(|key| SignRequest {
            key,
            padding: Padding::Pkcs1Sha256,
            message: b"fault",
        });
        let signed = sign_batch(Engine::MultiBuffer, &requests);
        assert_eq!(signed[0].path, Path::MultiBuffer);
        assert_eq!(signed[1].path, Path::FaultRecovered);
        let expected = healthy.sign_single(Padding::Pkcs1Sha256, b"fault").unwrap();
        for result in signed {
            assert_eq!(result.signature.unwrap(), expected);
        }
    }
}
