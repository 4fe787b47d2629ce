//! PEM decoding of certificate chains and private keys.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Decodes every certificate in a PEM bundle; an empty bundle is an error.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate found in PEM data".into());
    }
    Ok(certs)
}

/// Decodes the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM document.
pub fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| format!("invalid PEM private key: {e}"))?
        .ok_or_else(|| "no private key found in PEM data".to_string())
}
