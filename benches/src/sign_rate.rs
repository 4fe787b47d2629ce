//! The multi-buffer kernel against ring on one core: private-key signatures
//! per second (RSA-PSS-SHA256, TLS 1.3's scheme; ECDSA P-256 with nonces
//! from a pool and with eight-lane signing), and a
//! dudect-style timing-leak check (Welch's t-test on batch times with one
//! fixed key against keys drawn at random, same random messages).
//!
//! These compare two signers inside this process, not two proxies, so
//! they print their own table: ring single-buffer, multi-buffer, ratio.

use crate::report::Samples;
use cryptomb::{
    generate_nonces, sign_batch, EcdsaP256Key, Engine, NoncePool, Padding, RsaKey, SignRequest,
};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// A fresh PKCS#8 DER private key from `openssl genpkey -algorithm <algorithm> -pkeyopt
/// <option>`.
fn genpkey(algorithm: &str, option: &str) -> Result<Vec<u8>, String> {
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", algorithm, "-pkeyopt", option])
        .args(["-outform", "DER"])
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    if !out.status.success() {
        return Err("openssl genpkey failed".into());
    }
    Ok(out.stdout)
}

/// A fresh RSA key of `bits`.
fn generate(bits: usize) -> Result<RsaKey, String> {
    RsaKey::from_der(&genpkey("RSA", &format!("rsa_keygen_bits:{bits}"))?)
        .map_err(|e| e.to_string())
}

/// Signatures per second by `engine` over `duration`, batches of eight
/// requests over `keys` in turn.
fn rate(engine: Engine, keys: &[RsaKey], duration: Duration) -> f64 {
    let message = b"TLS 1.3, server CertificateVerify";
    let requests: Vec<SignRequest<'_>> = (0..8)
        .map(|i| SignRequest {
            key: &keys[i % keys.len()],
            padding: Padding::PssSha256,
            message,
        })
        .collect();
    let started = Instant::now();
    let mut signed = 0usize;
    while started.elapsed() < duration {
        signed += sign_batch(engine, &requests)
            .iter()
            .filter(|s| s.signature.is_ok())
            .count();
    }
    signed as f64 / started.elapsed().as_secs_f64()
}

/// One row of the kernel table.
pub struct KernelRow {
    /// What was measured.
    pub label: String,
    /// ring, one signature at a time.
    pub single: Samples,
    /// The AVX-512 IFMA kernel.
    pub multi: Samples,
}

/// Signing rates for RSA-2048, 3072 and 4096, `runs` alternations each.
pub fn run(runs: usize, duration: Duration) -> Result<Vec<KernelRow>, String> {
    if Engine::detect() != Engine::MultiBuffer {
        return Err("rsa needs the multi-buffer kernel, which cannot run here".into());
    }
    let mut rows = Vec::new();
    for bits in [2048, 3072, 4096] {
        let keys = (0..2)
            .map(|_| generate(bits))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut single, mut multi) = (Samples::default(), Samples::default());
        for _ in 0..runs {
            single.0.push(rate(Engine::Single, &keys, duration));
            multi.0.push(rate(Engine::MultiBuffer, &keys, duration));
        }
        rows.push(KernelRow {
            label: format!("RSA-{bits} PSS-SHA256 signatures/s, 1 core"),
            single,
            multi,
        });
    }
    rows.extend(ecdsa_rows(runs, duration)?);
    Ok(rows)
}

/// A fresh P-256 key.
fn generate_p256() -> Result<EcdsaP256Key, String> {
    EcdsaP256Key::from_der(&genpkey("EC", "ec_paramgen_curve:P-256")?).map_err(|e| e.to_string())
}

/// How the multi-buffer ECDSA rows use the kernel.
#[derive(Clone, Copy)]
enum EcdsaMode {
    /// ring, one signature at a time.
    Ring,
    /// Nonces from a pool that this thread refills (a batch of eight when it runs dry):
    /// what a handshake does, with the background filler's work counted on this core.
    Pool,
    /// Eight messages signed together with the eight nonces of one batch.
    EightLanes,
}

/// ECDSA P-256 signatures per second in `mode` over `duration`, on one thread.
fn ecdsa_rate(mode: EcdsaMode, key: &EcdsaP256Key, duration: Duration) -> Result<f64, String> {
    let message = b"TLS 1.3, server CertificateVerify";
    let pool = NoncePool::new(8);
    let started = Instant::now();
    let mut signed = 0usize;
    while started.elapsed() < duration {
        match mode {
            EcdsaMode::Ring => {
                key.sign_single(message).map_err(|e| e.to_string())?;
                signed += 1;
            }
            EcdsaMode::Pool => {
                key.sign(&pool, message).map_err(|e| e.to_string())?;
                signed += 1;
            }
            EcdsaMode::EightLanes => {
                for nonce in generate_nonces::<1>().map_err(|e| e.to_string())? {
                    signed += usize::from(
                        key.sign_with(nonce, message)
                            .map_err(|e| e.to_string())?
                            .is_some(),
                    );
                }
            }
        }
    }
    Ok(signed as f64 / started.elapsed().as_secs_f64())
}

/// The two ways of putting ECDSA P-256 on the kernel, each against ring.
fn ecdsa_rows(runs: usize, duration: Duration) -> Result<Vec<KernelRow>, String> {
    let key = generate_p256()?;
    let mut rows = Vec::new();
    for (mode, label) in [
        (
            EcdsaMode::Pool,
            "ECDSA P-256 signatures/s, 1 core, precomputed nonces (pool)",
        ),
        (
            EcdsaMode::EightLanes,
            "ECDSA P-256 signatures/s, 1 core, eight-lane signing",
        ),
    ] {
        let (mut single, mut multi) = (Samples::default(), Samples::default());
        for _ in 0..runs {
            single.0.push(ecdsa_rate(EcdsaMode::Ring, &key, duration)?);
            multi.0.push(ecdsa_rate(mode, &key, duration)?);
        }
        rows.push(KernelRow {
            label: label.into(),
            single,
            multi,
        });
    }
    Ok(rows)
}

/// A small xorshift generator: the leak checks' classes and secrets (statistical inputs,
/// not keys anyone uses).
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// dudect's fixed-vs-random test: for each of `samples` draws of the class, the inputs
/// `prepare(fixed, rng)` makes (untimed), then the time of `run(inputs)`; Welch's t
/// between the classes (cropped, see [`cropped_t`]).
fn fixed_vs_random<I>(
    samples: usize,
    mut prepare: impl FnMut(bool, &mut Xorshift) -> I,
    run: impl Fn(&I),
) -> f64 {
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let (mut fixed, mut random) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let class_fixed = rng.next() & 1 == 0;
        let inputs = prepare(class_fixed, &mut rng);
        let started = Instant::now();
        run(&inputs);
        let nanos = started.elapsed().as_nanos() as f64;
        if class_fixed {
            fixed.push(nanos)
        } else {
            random.push(nanos)
        }
    }
    cropped_t(&fixed, &random)
}

/// The timing-leak checks, each a Welch's t (|t| above 4.5 is dudect's threshold for
/// "timing depends on the secret"): the kernel's RSA exponentiation with one fixed set of
/// secret exponents against fresh random ones (modulus fixed, bases random in both
/// classes), and the P-256 nonce batch with one fixed secret scalar in every lane against
/// random ones. Inputs are made before each timed call, outside the timing.
pub fn leak_check(samples: usize) -> Result<Vec<(String, f64)>, String> {
    if Engine::detect() != Engine::MultiBuffer {
        return Err("rsa-leak needs the multi-buffer kernel, which cannot run here".into());
    }
    let mut setup = Xorshift(0x2545_f491_4f6c_dd1d);
    let mut modulus = setup.bytes(128);
    modulus[0] |= 0x80;
    modulus[127] |= 1;
    let fixed_exponent = setup.bytes(128);
    let rsa = fixed_vs_random(
        samples,
        |class_fixed, rng| -> [(Vec<u8>, Vec<u8>, Vec<u8>); 8] {
            std::array::from_fn(|_| {
                let exponent = if class_fixed {
                    fixed_exponent.clone()
                } else {
                    rng.bytes(128)
                };
                (modulus.clone(), rng.bytes(128), exponent)
            })
        },
        |lanes| {
            std::hint::black_box(cryptomb::kernel::modexp_1024(lanes));
        },
    );
    // Scalars below 2^255 are below n, as the kernel requires.
    let scalar = |rng: &mut Xorshift| -> [u8; 32] {
        let mut k: [u8; 32] = rng.bytes(32).try_into().expect("32 bytes");
        k[0] &= 0x7f;
        k
    };
    let fixed_scalar = scalar(&mut setup);
    let ecdsa = fixed_vs_random(
        samples,
        |class_fixed, rng| -> [[u8; 32]; 8] {
            std::array::from_fn(|_| {
                if class_fixed {
                    fixed_scalar
                } else {
                    scalar(rng)
                }
            })
        },
        |scalars| {
            std::hint::black_box(cryptomb::kernel::p256_nonce_batch(&[*scalars]));
        },
    );
    Ok(vec![
        (
            "RSA exponentiation, fixed vs random secret exponents".into(),
            rsa,
        ),
        (
            "P-256 nonce batch, fixed vs random secret scalars".into(),
            ecdsa,
        ),
    ])
}

/// dudect's outlier handling: Welch's t over all samples and over those below the 50th
/// and 90th percentiles of both classes together (interrupts and migrations only ever add
/// time); the largest in magnitude counts.
fn cropped_t(a: &[f64], b: &[f64]) -> f64 {
    let mut all: Vec<f64> = a.iter().chain(b).copied().collect();
    all.sort_by(f64::total_cmp);
    [1.0, 0.9, 0.5]
        .into_iter()
        .map(|q| {
            let limit = all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
            let keep = |x: &[f64]| {
                x.iter()
                    .copied()
                    .filter(|v| *v <= limit)
                    .collect::<Vec<_>>()
            };
            welch_t(&keep(a), &keep(b))
        })
        .fold(
            0.0,
            |worst: f64, t| if t.abs() > worst.abs() { t } else { worst },
        )
}

/// Welch's t statistic of two samples.
fn welch_t(a: &[f64], b: &[f64]) -> f64 {
    let stats = |x: &[f64]| {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (n, mean, var)
    };
    let ((na, ma, va), (nb, mb, vb)) = (stats(a), stats(b));
    (ma - mb) / (va / na + vb / nb).sqrt()
}

/// The Markdown table of the kernel rows and the leak check.
pub fn table(rows: &[KernelRow], leaks: &[(String, f64)]) -> String {
    let mut out = String::from(
        "| kernel | ring single-buffer | multi-buffer (AVX-512 IFMA) | multi/ring |\n|---|---|---|---|\n",
    );
    for r in rows {
        let ((s, smin, smax), (m, mmin, mmax)) = (r.single.summary(), r.multi.summary());
        out.push_str(&format!(
            "| {} | {s:.0} ({smin:.0}–{smax:.0}) | {m:.0} ({mmin:.0}–{mmax:.0}) | {:.2} |\n",
            r.label,
            m / s
        ));
    }
    for (what, t) in leaks {
        out.push_str(&format!(
            "\ntiming-leak check ({what}, Welch's t): {t:.2} ({})\n",
            if t.abs() < 4.5 {
                "|t| < 4.5: no leak detected"
            } else {
                "|t| >= 4.5: LEAK"
            }
        ));
    }
    out
}

/// The rows as JSON.
pub fn json(rows: &[KernelRow], leaks: &[(String, f64)]) -> Value {
    let s = |x: &Samples| {
        let (med, min, max) = x.summary();
        json!({"median": med, "min": min, "max": max, "runs": x.0})
    };
    json!({
        "rows": rows.iter().map(|r| json!({
            "metric": r.label, "ring_single_buffer": s(&r.single), "multi_buffer": s(&r.multi),
            "ratio_multi_over_single": r.multi.summary().0 / r.single.summary().0,
        })).collect::<Vec<_>>(),
        "timing_leak_welch_t": leaks.iter().map(|(what, t)| json!({"check": what, "t": t})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::welch_t;

    #[test]
    fn welch_t_separates_shifted_samples_only() {
        let a: Vec<f64> = (0..100).map(|i| (i % 10) as f64).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 5.0).collect();
        assert!(welch_t(&a, &a).abs() < 1e-9);
        assert!(welch_t(&a, &b) < -10.0);
        // One huge outlier in one class hides nothing once cropped away.
        let mut noisy = a.clone();
        noisy.push(1e9);
        assert!(super::cropped_t(&a, &noisy).abs() < 1.5);
        assert!(super::cropped_t(&a, &b) < -10.0);
    }
}
