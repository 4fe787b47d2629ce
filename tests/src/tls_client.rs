//! A TLS 1.3 client for handshake tests and benchmarks: many concurrent full handshakes
//! (no resumption, so every one makes the server sign), each checking the server's
//! CertificateVerify signature against its certificate. The chain itself is not checked
//! (test certificates carry SPIFFE identities, not host names): what these tests prove
//! is that the signatures the server computes are right.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Accepts any chain, verifies every handshake signature.
#[derive(Debug)]
struct SignatureOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for SignatureOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The outcome of a handshake run.
#[derive(Debug, Default)]
pub struct HandshakeRun {
    /// Handshakes that completed with a valid server signature.
    pub completed: usize,
    /// Handshakes that failed, with the first error seen.
    pub failed: usize,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Each completed handshake's duration, connect included.
    pub latencies: Vec<Duration>,
}

/// Runs `concurrency` clients, each doing full handshakes against 127.0.0.1:`port` until
/// `per_client` are done or `deadline` passes.
pub fn handshakes(
    port: u16,
    concurrency: usize,
    per_client: usize,
    deadline: Duration,
) -> HandshakeRun {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(port, concurrency, per_client, deadline))
}

/// A TLS 1.3 client config offering `alpn`, without session resumption (every connection
/// a full handshake), that checks handshake signatures but not the chain.
pub fn client_config(alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SignatureOnly(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(config)
}

/// The async form of [`handshakes`], for callers already on a runtime.
pub async fn run(
    port: u16,
    concurrency: usize,
    per_client: usize,
    deadline: Duration,
) -> HandshakeRun {
    let connector = tokio_rustls::TlsConnector::from(client_config(&[]));
    let until = Instant::now() + deadline;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let connector = connector.clone();
            tokio::spawn(async move {
                let mut run = HandshakeRun::default();
                for _ in 0..per_client {
                    if Instant::now() > until {
                        break;
                    }
                    let started = Instant::now();
                    let result = async {
                        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                        let name = ServerName::try_from("localhost").expect("name");
                        connector.connect(name, tcp).await
                    };
                    match tokio::time::timeout(Duration::from_secs(10), result).await {
                        Ok(Ok(_stream)) => {
                            run.completed += 1;
                            run.latencies.push(started.elapsed());
                        }
                        Ok(Err(e)) => note_failure(&mut run, e.to_string()),
                        Err(_) => note_failure(&mut run, "handshake timed out".into()),
                    }
                }
                run
            })
        })
        .collect();
    let mut total = HandshakeRun::default();
    for task in tasks {
        let run = task.await.expect("client task");
        total.completed += run.completed;
        total.failed += run.failed;
        total.first_error = total.first_error.or(run.first_error);
        total.latencies.extend(run.latencies);
    }
    total
}

fn note_failure(run: &mut HandshakeRun, error: String) {
    run.failed += 1;
    run.first_error.get_or_insert(error);
}
