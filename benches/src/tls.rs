//! TLS material for the HTTPS scenario: throwaway RSA-2048 and ECDSA-P256 certificates made
//! with `openssl`, and a client that accepts any server certificate (the benchmark measures
//! handshakes, not trust).

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate and key on disk.
pub struct CertFiles {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Makes a self-signed certificate; `kind` is `rsa` (2048 bits) or `ecdsa` (P-256).
pub fn make(dir: &Path, kind: &str) -> Result<CertFiles, String> {
    let cert = dir.join(format!("{kind}.crt"));
    let key = dir.join(format!("{kind}.key"));
    let algo: &[&str] = if kind == "rsa" {
        &["-newkey", "rsa:2048"]
    } else {
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    };
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=bench.local",
            "-addext",
            "subjectAltName=DNS:bench.local",
        ])
        .args(algo)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if !status.success() {
        return Err(format!("openssl could not make the {kind} certificate"));
    }
    Ok(CertFiles { cert, key })
}

/// A TLS 1.3 client config without session resumption (every connection a full
/// handshake), offering HTTP/1.1; it checks the server's handshake signatures, not trust.
pub fn client() -> Arc<rustls::ClientConfig> {
    e2e::tls_client::client_config(&[b"http/1.1"])
}
