//! The rustls side of a multi-buffer key: a `SigningKey` offering the RSA schemes in
//! rustls's own preference order, whose signers hand the message to the key's batcher.

use super::batcher::Batcher;
use cryptomb::Padding;
use rustls::pki_types::{alg_id, SubjectPublicKeyInfoDer};
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use std::sync::Arc;

/// Schemes offered, most preferred first (PSS before PKCS#1, longer hashes first).
const SCHEMES: [(SignatureScheme, Padding); 6] = [
    (SignatureScheme::RSA_PSS_SHA512, Padding::PssSha512),
    (SignatureScheme::RSA_PSS_SHA384, Padding::PssSha384),
    (SignatureScheme::RSA_PSS_SHA256, Padding::PssSha256),
    (SignatureScheme::RSA_PKCS1_SHA512, Padding::Pkcs1Sha512),
    (SignatureScheme::RSA_PKCS1_SHA384, Padding::Pkcs1Sha384),
    (SignatureScheme::RSA_PKCS1_SHA256, Padding::Pkcs1Sha256),
];

/// An RSA private key signed through the multi-buffer provider.
pub struct MultiBufferKey {
    batcher: Arc<Batcher>,
}

impl MultiBufferKey {
    /// Wraps a key's batcher.
    pub fn new(batcher: Arc<Batcher>) -> Self {
        MultiBufferKey { batcher }
    }
}

impl std::fmt::Debug for MultiBufferKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MultiBufferKey")
    }
}

impl SigningKey for MultiBufferKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        SCHEMES
            .iter()
            .find(|(scheme, _)| offered.contains(scheme))
            .map(|&(scheme, padding)| {
                Box::new(MultiBufferSigner {
                    batcher: self.batcher.clone(),
                    scheme,
                    padding,
                }) as Box<dyn Signer>
            })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(rustls::sign::public_key_to_spki(
            &alg_id::RSA_ENCRYPTION,
            self.batcher.public_key_der(),
        ))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::RSA
    }
}

/// One handshake's signer: a scheme bound to the key's batcher.
struct MultiBufferSigner {
    batcher: Arc<Batcher>,
    scheme: SignatureScheme,
    padding: Padding,
}

impl std::fmt::Debug for MultiBufferSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MultiBufferSigner({:?})", self.scheme)
    }
}

impl Signer for MultiBufferSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.batcher
            .sign(self.padding, message)
            .map_err(rustls::Error::General)
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}
