//! Signatures from the multi-buffer engine against ring: PKCS#1 v1.5 byte
//! for byte (it is deterministic), PSS verified by ring, on keys generated
//! by openssl, with batches of every fill level and mixed keys and sizes.

use std::process::Command;
use std::sync::OnceLock;

use cryptomb::{sign_batch, Engine, KeySize, Padding, Path, RsaKey, SignRequest, Signed};
use ring::signature::{self, UnparsedPublicKey};

/// A fresh RSA private key of `bits` from openssl, as DER (`format` is the
/// openssl output: PKCS#8 by default, PKCS#1 with `-traditional`).
fn generate(bits: usize, traditional: bool) -> Vec<u8> {
    let pkcs8 = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
        .arg(format!("rsa_keygen_bits:{bits}"))
        .args(["-outform", "DER"])
        .output()
        .expect("openssl runs");
    assert!(pkcs8.status.success(), "openssl genpkey failed");
    if !traditional {
        return pkcs8.stdout;
    }
    let mut child = Command::new("openssl")
        .args(["rsa", "-inform", "DER", "-outform", "DER", "-traditional"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&pkcs8.stdout)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl rsa -traditional failed");
    out.stdout
}

/// Ten 2048-bit keys, two of 3072 and one of 4096, generated once.
fn keys() -> &'static [RsaKey] {
    static KEYS: OnceLock<Vec<RsaKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let sizes = [2048; 10].into_iter().chain([3072, 3072, 4096]);
        sizes
            .map(|bits| RsaKey::from_der(&generate(bits, false)).unwrap())
            .collect()
    })
}

/// A deterministic message per index, different lengths.
fn message(index: usize) -> Vec<u8> {
    (0..index * 37 % 500)
        .map(|i| (i * 7 + index) as u8)
        .collect()
}

/// The path a batchable key's signature must take here.
fn expected_path() -> Path {
    match Engine::detect() {
        Engine::MultiBuffer => Path::MultiBuffer,
        Engine::Single => Path::Single,
    }
}

fn sign_all(engine: Engine, requests: &[SignRequest<'_>]) -> Vec<Signed> {
    let signed = sign_batch(engine, requests);
    assert_eq!(signed.len(), requests.len());
    signed
}

#[test]
fn pkcs1_signatures_are_byte_for_byte_ring_signatures() {
    let keys = keys();
    let messages: Vec<Vec<u8>> = (0..40).map(message).collect();
    for padding in [
        Padding::Pkcs1Sha256,
        Padding::Pkcs1Sha384,
        Padding::Pkcs1Sha512,
    ] {
        let requests: Vec<SignRequest<'_>> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| SignRequest {
                key: &keys[i * 7 % keys.len()],
                padding,
                message: m,
            })
            .collect();
        for (request, signed) in requests.iter().zip(sign_all(Engine::detect(), &requests)) {
            assert_eq!(signed.path, expected_path());
            let expected = request.key.sign_single(padding, request.message).unwrap();
            assert_eq!(signed.signature.unwrap(), expected, "{padding:?}");
        }
    }
}

#[test]
fn pss_signatures_verify_with_ring() {
    let keys = keys();
    let schemes = [
        (Padding::PssSha256, &signature::RSA_PSS_2048_8192_SHA256),
        (Padding::PssSha384, &signature::RSA_PSS_2048_8192_SHA384),
        (Padding::PssSha512, &signature::RSA_PSS_2048_8192_SHA512),
    ];
    for (padding, verification) in schemes {
        let messages: Vec<Vec<u8>> = (0..keys.len()).map(message).collect();
        let requests: Vec<SignRequest<'_>> = keys
            .iter()
            .zip(&messages)
            .map(|(key, m)| SignRequest {
                key,
                padding,
                message: m,
            })
            .collect();
        for (request, signed) in requests.iter().zip(sign_all(Engine::detect(), &requests)) {
            assert_eq!(signed.path, expected_path());
            let sig = signed.signature.unwrap();
            let public = UnparsedPublicKey::new(verification, request.key.public_key_der());
            public
                .verify(request.message, &sig)
                .expect("ring verifies the PSS signature");
            let mut tampered = request.message.to_vec();
            tampered.push(1);
            assert!(public.verify(&tampered, &sig).is_err());
        }
    }
}

#[test]
fn batches_of_every_fill_level_and_size_mix() {
    let keys = keys();
    for count in 1..=17 {
        let messages: Vec<Vec<u8>> = (0..count).map(|i| message(i + count)).collect();
        let requests: Vec<SignRequest<'_>> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| SignRequest {
                key: &keys[(i + count) % keys.len()],
                padding: Padding::Pkcs1Sha256,
                message: m,
            })
            .collect();
        for (request, signed) in requests.iter().zip(sign_all(Engine::detect(), &requests)) {
            let expected = request
                .key
                .sign_single(request.padding, request.message)
                .unwrap();
            assert_eq!(signed.signature.unwrap(), expected, "batch of {count}");
        }
    }
}

#[test]
fn single_engine_signs_with_ring_and_agrees() {
    let keys = keys();
    assert_eq!(keys[0].batch_size_class(), Some(KeySize::Rsa2048));
    assert_eq!(keys[10].batch_size_class(), Some(KeySize::Rsa3072));
    assert_eq!(keys[12].batch_size_class(), Some(KeySize::Rsa4096));
    let m = message(3);
    let requests: Vec<SignRequest<'_>> = [0, 10, 12]
        .map(|i| SignRequest {
            key: &keys[i],
            padding: Padding::Pkcs1Sha512,
            message: &m,
        })
        .into();
    let batched = sign_all(Engine::detect(), &requests);
    let single = sign_all(Engine::Single, &requests);
    for (a, b) in batched.into_iter().zip(single) {
        assert_eq!(a.path, expected_path());
        assert_eq!(b.path, Path::Single);
        assert_eq!(a.signature.unwrap(), b.signature.unwrap());
    }
}

#[test]
fn pkcs1_der_keys_sign_like_their_pkcs8_form() {
    let der = generate(2048, true);
    assert_ne!(der[..], generate(2048, false)[..]);
    let key = RsaKey::from_der(&der).unwrap();
    assert_eq!(key.batch_size_class(), Some(KeySize::Rsa2048));
    let m = message(9);
    let request = [SignRequest {
        key: &key,
        padding: Padding::Pkcs1Sha384,
        message: &m,
    }];
    let signed = sign_all(Engine::detect(), &request).remove(0);
    assert_eq!(signed.path, expected_path());
    assert_eq!(
        signed.signature.unwrap(),
        key.sign_single(Padding::Pkcs1Sha384, &m).unwrap()
    );
}

#[test]
fn malformed_keys_are_refused() {
    let der = generate(2048, false);
    for bad in [
        &der[..0],
        &der[..40],
        &der[..der.len() - 1],
        b"not a key at all".as_slice(),
    ] {
        assert!(RsaKey::from_der(bad).is_err());
    }
}
