//! TLS building blocks: PEM loading, SAN extraction and matching, and the certificate
//! verifiers with Envoy's semantics (chain verified against the trusted CA, no hostname
//! check, SAN matchers applied when configured).

pub mod expiry;
pub mod multibuffer;
pub mod pem;
pub mod san;
pub mod verify;
