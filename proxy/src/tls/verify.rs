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

/// The CAs a peer's chain is verified against.
pub enum Trust {
    /// One bundle for every peer (`trusted_ca`).
    Bundle(RootCertStore),
    /// Envoy's SPIFFE validator (`envoy.tls.cert_validator.spiffe`): each trust domain has
    /// its own bundle, chosen by the trust domain of the peer's SPIFFE ID before the chain
    /// is checked, so no domain's CA can vouch for another domain's identities. A peer
    /// without exactly one `spiffe://` URI SAN, or of a domain not listed, is refused.
    TrustDomains(Vec<(String, RootCertStore)>),
}

/// One chain verifier per bundle of a [`Trust`], built once per TLS context.
#[derive(Debug)]
enum Chains<V: ?Sized> {
    One(Arc<V>),
    ByTrustDomain(Vec<(String, Arc<V>)>),
}

impl<V: ?Sized> Chains<V> {
    /// Builds a verifier for each bundle with `build`.
    fn new(
        trust: Trust,
        mut build: impl FnMut(RootCertStore) -> Result<Arc<V>, String>,
    ) -> Result<Self, String> {
        Ok(match trust {
            Trust::Bundle(roots) => Chains::One(build(roots)?),
            Trust::TrustDomains(domains) => Chains::ByTrustDomain(
                domains
                    .into_iter()
                    .map(|(name, roots)| Ok((name, build(roots)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }

    /// The verifier for this peer certificate.
    fn pick(&self, end_entity: &CertificateDer<'_>) -> Result<&Arc<V>, Error> {
        match self {
            Chains::One(v) => Ok(v),
            Chains::ByTrustDomain(domains) => {
                let domain = spiffe_trust_domain(end_entity).ok_or(Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))?;
                domains
                    .iter()
                    .find(|(name, _)| *name == domain)
                    .map(|(_, v)| v)
                    .ok_or(Error::InvalidCertificate(CertificateError::UnknownIssuer))
            }
        }
    }

    /// Any one of the verifiers (for what every bundle answers alike).
    fn first(&self) -> Option<&Arc<V>> {
        match self {
            Chains::One(v) => Some(v),
            Chains::ByTrustDomain(domains) => domains.first().map(|(_, v)| v),
        }
    }
}

/// The trust domain of a certificate's SPIFFE ID: its one `spiffe://` URI SAN, up to the
/// path. An X.509-SVID has exactly one URI SAN; anything else has no SPIFFE identity.
fn spiffe_trust_domain(cert: &CertificateDer<'_>) -> Option<String> {
    let uris = san::uri_sans(cert);
    let [uri] = uris.as_slice() else {
        return None;
    };
    let rest = uri.strip_prefix("spiffe://")?;
    let domain = rest.split('/').next().unwrap_or_default();
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

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
    chain: Option<Chains<rustls::client::WebPkiServerVerifier>>,
    sans: Vec<SanMatcher>,
    provider: Arc<CryptoProvider>,
}

impl UpstreamVerifier {
    /// Builds a verifier; `trust` of `None` skips chain verification (Envoy's behaviour
    /// without a validation context).
    pub fn new(
        trust: Option<Trust>,
        sans: Vec<SanMatcher>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let chain = trust
            .map(|t| {
                Chains::new(t, |roots| {
                    rustls::client::WebPkiServerVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| e.to_string())
                })
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
        if let Some(chains) = &self.chain {
            let chain = chains.pick(end_entity)?;
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
    chains: Chains<dyn ClientCertVerifier>,
    /// Checks what every bundle's verifier answers alike (whether a certificate is
    /// mandatory, handshake signatures).
    any: Arc<dyn ClientCertVerifier>,
    sans: Vec<SanMatcher>,
}

impl DownstreamVerifier {
    /// Wraps a webpki client verifier per bundle of `trust`; `mandatory` rejects
    /// handshakes without a client certificate.
    pub fn new(
        trust: Trust,
        sans: Vec<SanMatcher>,
        mandatory: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let chains = Chains::new(trust, |roots| {
            let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            );
            let builder = if mandatory {
                builder
            } else {
                builder.allow_unauthenticated()
            };
            builder
                .build()
                .map(|v| v as Arc<dyn ClientCertVerifier>)
                .map_err(|e| e.to_string())
        })?;
        let any = chains
            .first()
            .cloned()
            .ok_or("the SPIFFE validator needs at least one trust domain")?;
        Ok(DownstreamVerifier { chains, any, sans })
    }
}

impl ClientCertVerifier for DownstreamVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.any.client_auth_mandatory()
    }

    /// The CA names a client may choose its certificate by: the one bundle's; with
    /// several trust domains none (a client then sends the certificate it has).
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match &self.chains {
            Chains::One(v) => v.root_hint_subjects(),
            Chains::ByTrustDomain(_) => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.chains
            .pick(end_entity)?
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
        self.any.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.any.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.any.supported_verify_schemes()
    }
}
