//! Certificate verifiers with Envoy's semantics.
//!
//! Envoy verifies the peer chain against `trusted_ca` but never checks the hostname against
//! SNI; identity is checked only through the configured SAN matchers. Without a validation
//! context an upstream certificate is not verified at all, and a client certificate is
//! requested only when `require_client_certificate` or a validation context asks for it.

use super::san::{self, SanMatcher};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};
use std::sync::Arc;

fn san_check(matchers: &[SanMatcher], cert: &CertificateDer<'_>) -> Result<(), Error> {
    if matchers.is_empty() || san::any_matches(matchers, &san::subject_alt_names(cert)) {
        Ok(())
    } else {
        Err(Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }
}

/// Verifies upstream (server) certificates: optional chain check, no hostname check,
/// optional SAN matchers.
#[derive(Debug)]
pub struct UpstreamVerifier {
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    sans: Vec<SanMatcher>,
    provider: Arc<CryptoProvider>,
}

impl UpstreamVerifier {
    /// Builds a verifier; `roots` of `None` skips chain verification (Envoy's behaviour
    /// without a validation context).
    pub fn new(
        roots: Option<RootCertStore>,
        sans: Vec<SanMatcher>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let chain = roots
            .map(|r| {
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(r),
                    provider.clone(),
                )
                .build()
                .map_err(|e| e.to_string())
            })
            .transpose()?;
        Ok(UpstreamVerifier {
            chain,
            sans,
            provider,
        })
    }
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if let Some(chain) = &self.chain {
            match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
                Ok(_) => {}
                Err(Error::InvalidCertificate(CertificateError::NotValidForName))
                | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                    ..
                })) => {}
                Err(e) => return Err(e),
            }
        }
        san_check(&self.sans, end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies downstream client certificates against the trusted CA and SAN matchers.
#[derive(Debug)]
pub struct DownstreamVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<SanMatcher>,
}

impl DownstreamVerifier {
    /// Wraps a webpki client verifier built from `roots`; `mandatory` rejects handshakes
    /// without a client certificate.
    pub fn new(
        roots: RootCertStore,
        sans: Vec<SanMatcher>,
        mandatory: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let builder =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let builder = if mandatory {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        let inner = builder.build().map_err(|e| e.to_string())?;
        Ok(DownstreamVerifier { inner, sans })
    }
}

impl ClientCertVerifier for DownstreamVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        san_check(&self.sans, end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
