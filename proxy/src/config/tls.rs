//! TLS transport sockets: DownstreamTlsContext and UpstreamTlsContext into rustls configs.
//!
//! Certificates come from files, inline bytes, or secrets referenced by SDS name: static
//! ones from the bootstrap, dynamic ones from SDS. A context keeps its recipe and is
//! rebuilt when a secret it names arrives or rotates; handshakes take whatever config is
//! current, so a rotation applies to the next handshake and never touches established
//! connections. While a named secret is missing the context is pending, and the listener
//! or cluster using it warms, as Envoy's would.

use super::common::{self, string_matcher};
use super::error::{item, join, ConfigError, Result};
use super::secrets::Secrets;
use crate::tls::san::{SanMatcher, SanType};
use crate::tls::{pem, verify};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use std::sync::Arc;
use xds_client::proto::envoy::config::core::v3 as core;
use xds_client::proto::envoy::extensions::transport_sockets::tls::v3 as tls;

const DOWNSTREAM: &str = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const RAW_BUFFER: &str = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";

/// A built TLS config, or the SDS secrets it still waits for.
pub type TlsState<T> = std::result::Result<Arc<T>, Vec<String>>;

/// A built state with what is known of the certificate it presents.
pub type Prepared<T> = (TlsState<T>, Presented);

/// What a context's certificate brings besides the rustls config.
#[derive(Default)]
pub struct Presented {
    /// The URI SANs of the leaf (Istio reports them as the local principal; rustls does
    /// not tell which certificate a handshake used).
    uri_sans: Vec<String>,
    /// Whether its key signs in multi-buffer batches, where a signer waits for other
    /// handshakes: such handshakes must run on the handshake pool.
    batching: bool,
}

/// Where an SDS secret comes from.
pub use super::source::XdsSource as SdsSource;

/// A secret a context references by name, and where it comes from when not static.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsRef {
    /// The secret name.
    pub name: String,
    /// Its config source (`None`: it must be a static secret).
    pub source: Option<SdsSource>,
    /// How long a listener waits for it before serving without it
    /// (`initial_fetch_timeout`; `None`: until it arrives).
    pub fetch_timeout: Option<std::time::Duration>,
}

/// A TLS context (listener or cluster side) whose config follows its secrets.
pub struct Tls<T> {
    /// The secrets it references by name.
    pub sds: Vec<SdsRef>,
    socket: core::TransportSocket,
    path: String,
    build: fn(&core::TransportSocket, &Secrets, &str) -> Result<Prepared<T>>,
    state: arc_swap::ArcSwap<TlsState<T>>,
    presented: arc_swap::ArcSwap<Presented>,
    /// A secret it needs was rejected: as Envoy's SDS init target is ready after a
    /// rejection, its listener or cluster stops waiting (handshakes fail until a good
    /// secret comes).
    rejected: std::sync::atomic::AtomicBool,
}

impl<T> std::fmt::Debug for Tls<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("sds", &self.sds).finish()
    }
}

impl<T> Tls<T> {
    /// The config in force (or the secrets still missing).
    pub fn current(&self) -> Arc<TlsState<T>> {
        self.state.load_full()
    }

    /// Whether the config is built (no secret missing).
    pub fn ready(&self) -> bool {
        self.state.load().is_ok()
    }

    /// Records that a secret it needs was rejected.
    pub fn reject(&self) {
        self.rejected
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether its listener or cluster may stop waiting for it: built, or a secret it
    /// needs was rejected.
    pub fn settled(&self) -> bool {
        self.ready() || self.rejected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Builds the config again with `secrets`, without installing it (so an update can
    /// be checked against every context before any changes).
    pub fn prepare(&self, secrets: &Secrets) -> Result<Prepared<T>> {
        (self.build)(&self.socket, secrets, &self.path)
    }

    /// Installs a config made by [`Tls::prepare`]: the next handshake uses it.
    pub fn install(&self, (state, presented): Prepared<T>) {
        self.state.store(Arc::new(state));
        self.presented.store(Arc::new(presented));
    }

    /// The first URI SAN of the certificate this context presents, if any.
    pub fn local_uri_san(&self) -> Option<String> {
        self.presented.load().uri_sans.first().cloned()
    }

    /// Whether handshakes with the current config must run on the handshake pool (its
    /// key batches signatures).
    pub fn batching(&self) -> bool {
        self.presented.load().batching
    }

    /// The first `spiffe://` URI SAN of the certificate this context presents, if any.
    pub fn local_spiffe_id(&self) -> Option<String> {
        crate::tls::san::first_spiffe(&self.presented.load().uri_sans)
    }

    fn new(
        socket: &core::TransportSocket,
        path: &str,
        build: fn(&core::TransportSocket, &Secrets, &str) -> Result<Prepared<T>>,
        (state, presented): Prepared<T>,
        sds: Vec<SdsRef>,
    ) -> Self {
        Tls {
            sds,
            socket: socket.clone(),
            path: path.to_string(),
            build,
            state: arc_swap::ArcSwap::from_pointee(state),
            presented: arc_swap::ArcSwap::from_pointee(presented),
            rejected: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether it references secret `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.sds.iter().any(|r| r.name == name)
    }
}

/// A listener-side TLS context.
pub type ServerTls = Tls<rustls::ServerConfig>;

/// A cluster-side TLS context.
#[derive(Debug)]
pub struct UpstreamTls {
    /// The rustls config and its secrets.
    pub tls: Tls<rustls::ClientConfig>,
    /// SNI to send.
    pub sni: Option<String>,
    /// Configured ALPN (empty means: chosen by the upstream protocol).
    pub alpn: Vec<Vec<u8>>,
}

/// A certificate's private key: key material to load, or a signing key a private key
/// provider made.
enum Key {
    Der(PrivateKeyDer<'static>),
    Provider(crate::tls::multibuffer::provider::ProviderKey),
}

struct Material {
    certs: Option<(Vec<CertificateDer<'static>>, Key)>,
    trust: Option<verify::Trust>,
    sans: Vec<SanMatcher>,
    pending: Vec<String>,
    sds: Vec<SdsRef>,
}

fn typed_config(
    ts: &core::TransportSocket,
    path: &str,
) -> Result<Option<xds_client::proto::google::protobuf::Any>> {
    match &ts.config_type {
        Some(core::transport_socket::ConfigType::TypedConfig(a)) => {
            if xds_client::descriptors::type_name_of_url(&a.type_url) == RAW_BUFFER {
                Ok(None)
            } else {
                Ok(Some(a.clone()))
            }
        }
        None => Err(ConfigError::at(
            join(path, "typed_config"),
            "typed_config is required",
        )),
    }
}

/// Translates a listener's `transport_socket` (None for raw buffer).
pub fn downstream_transport_socket(
    ts: &core::TransportSocket,
    secrets: &Secrets,
    path: &str,
) -> Result<Option<Arc<ServerTls>>> {
    if typed_config(ts, path)?.is_none() {
        return Ok(None);
    }
    let (prepared, sds) = server_state(ts, secrets, path)?;
    Ok(Some(Arc::new(Tls::new(
        ts,
        path,
        build_server,
        prepared,
        sds,
    ))))
}

fn build_server(
    ts: &core::TransportSocket,
    secrets: &Secrets,
    path: &str,
) -> Result<Prepared<rustls::ServerConfig>> {
    server_state(ts, secrets, path).map(|(state, _)| state)
}

/// A listener TLS context's state with the secrets it references (its keys are loaded
/// once, here).
fn server_state(
    ts: &core::TransportSocket,
    secrets: &Secrets,
    path: &str,
) -> Result<(Prepared<rustls::ServerConfig>, Vec<SdsRef>)> {
    let any = typed_config(ts, path)?.unwrap_or_default();
    let p = join(path, "typed_config");
    let ctx: tls::DownstreamTlsContext = common::decode_any(&any, DOWNSTREAM, &p)?;
    let common = ctx.common_tls_context.clone().unwrap_or_default();
    let mut m = material(&common, secrets, &join(&p, "common_tls_context"))?;
    let sds = std::mem::take(&mut m.sds);
    if !m.pending.is_empty() {
        return Ok(((Err(m.pending), Presented::default()), sds));
    }
    let provider = provider(&common, &join(&p, "common_tls_context.tls_params"))?;
    let versions = versions(&common, &join(&p, "common_tls_context.tls_params"))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| ConfigError::at(&p, e.to_string()))?;
    let require = ctx
        .require_client_certificate
        .as_ref()
        .map(|b| b.value)
        .unwrap_or(false);
    let builder = match m.trust {
        Some(trust) => {
            let v = verify::DownstreamVerifier::new(trust, m.sans, require, provider.clone())
                .map_err(|e| ConfigError::at(join(&p, "common_tls_context"), e))?;
            builder.with_client_cert_verifier(Arc::new(v))
        }
        None if require => {
            return Err(ConfigError::at(
                join(&p, "require_client_certificate"),
                "requires a validation context with trusted_ca",
            ))
        }
        None => builder.with_no_client_auth(),
    };
    let presented = presented(&m.certs);
    let (chain, key) = m.certs.ok_or_else(|| {
        ConfigError::at(
            join(&p, "common_tls_context"),
            "a server TLS context needs a certificate",
        )
    })?;
    let certified = certified(chain, key, &provider, &join(&p, "common_tls_context"))?;
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = common
        .alpn_protocols
        .iter()
        .map(|a| a.as_bytes().to_vec())
        .collect();
    Ok(((Ok(Arc::new(config)), presented), sds))
}

/// What the certificate chain and key a context presents bring: the leaf's URI SANs, and
/// whether the key batches.
fn presented(certs: &Option<(Vec<CertificateDer<'static>>, Key)>) -> Presented {
    Presented {
        uri_sans: certs
            .as_ref()
            .and_then(|(chain, _)| chain.first())
            .map(crate::tls::san::uri_sans)
            .unwrap_or_default(),
        batching: matches!(certs, Some((_, Key::Provider(key))) if key.batching),
    }
}

/// Translates a cluster's `transport_socket` (None for raw buffer).
pub fn upstream_transport_socket(
    ts: &core::TransportSocket,
    secrets: &Secrets,
    path: &str,
) -> Result<Option<Arc<UpstreamTls>>> {
    let Some(any) = typed_config(ts, path)? else {
        return Ok(None);
    };
    let p = join(path, "typed_config");
    let ctx: tls::UpstreamTlsContext = common::decode_any(&any, UPSTREAM, &p)?;
    let common = ctx.common_tls_context.clone().unwrap_or_default();
    let alpn = common
        .alpn_protocols
        .iter()
        .map(|a| a.as_bytes().to_vec())
        .collect();
    let sni = (!ctx.sni.is_empty()).then(|| ctx.sni.clone());
    let (prepared, sds) = client_state(ts, secrets, path)?;
    Ok(Some(Arc::new(UpstreamTls {
        tls: Tls::new(ts, path, build_client, prepared, sds),
        sni,
        alpn,
    })))
}

fn build_client(
    ts: &core::TransportSocket,
    secrets: &Secrets,
    path: &str,
) -> Result<Prepared<rustls::ClientConfig>> {
    client_state(ts, secrets, path).map(|(state, _)| state)
}

/// A cluster TLS context's state with the secrets it references (its keys are loaded
/// once, here).
fn client_state(
    ts: &core::TransportSocket,
    secrets: &Secrets,
    path: &str,
) -> Result<(Prepared<rustls::ClientConfig>, Vec<SdsRef>)> {
    let any = typed_config(ts, path)?.unwrap_or_default();
    let p = join(path, "typed_config");
    let ctx: tls::UpstreamTlsContext = common::decode_any(&any, UPSTREAM, &p)?;
    let common = ctx.common_tls_context.clone().unwrap_or_default();
    let mut m = material(&common, secrets, &join(&p, "common_tls_context"))?;
    let sds = std::mem::take(&mut m.sds);
    if !m.pending.is_empty() {
        return Ok(((Err(m.pending), Presented::default()), sds));
    }
    let provider = provider(&common, &join(&p, "common_tls_context.tls_params"))?;
    let versions = versions(&common, &join(&p, "common_tls_context.tls_params"))?;
    let verifier = verify::UpstreamVerifier::new(m.trust, m.sans, provider.clone())
        .map_err(|e| ConfigError::at(join(&p, "common_tls_context"), e))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| ConfigError::at(&p, e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let presented = presented(&m.certs);
    let mut config = match m.certs {
        Some((chain, key)) => {
            let certified = certified(chain, key, &provider, &join(&p, "common_tls_context"))?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
        }
        None => builder.with_no_client_auth(),
    };
    config.enable_sni = !ctx.sni.is_empty();
    // Connections outside the HTTP pools (TCP proxy, health checks) offer the context's
    // ALPN as is; the pools set their own.
    config.alpn_protocols = common
        .alpn_protocols
        .iter()
        .map(|a| a.as_bytes().to_vec())
        .collect();
    config.resumption = rustls::client::Resumption::in_memory_sessions(256);
    Ok(((Ok(Arc::new(config)), presented), sds))
}

/// A secret reference: its name, and where and how long it is fetched (no `sds_config`:
/// it must be a static secret).
fn sds_ref(sds: &tls::SdsSecretConfig, path: &str) -> Result<SdsRef> {
    let p = join(path, "sds_config");
    let cs = sds.sds_config.as_ref();
    Ok(SdsRef {
        name: sds.name.clone(),
        source: cs
            .map(|cs| super::source::xds_source(Some(cs), &p))
            .transpose()?,
        fetch_timeout: match cs {
            Some(cs) => super::source::fetch_timeout(Some(cs), &p)?,
            None => None,
        },
    })
}

fn material(common: &tls::CommonTlsContext, secrets: &Secrets, path: &str) -> Result<Material> {
    let mut m = Material {
        certs: None,
        trust: None,
        sans: Vec::new(),
        pending: Vec::new(),
        sds: Vec::new(),
    };
    if common.tls_certificates.len() + common.tls_certificate_sds_secret_configs.len() > 1 {
        return Err(ConfigError::at(
            path,
            "only one TLS certificate per context is supported",
        ));
    }
    if let Some(c) = common.tls_certificates.first() {
        m.certs = Some(certificate(
            c,
            &format!("{}[0]", join(path, "tls_certificates")),
        )?);
    }
    if let Some(sds) = common.tls_certificate_sds_secret_configs.first() {
        let p = format!("{}[0]", join(path, "tls_certificate_sds_secret_configs"));
        m.sds.push(sds_ref(sds, &p)?);
        match secrets.get(&sds.name).and_then(|s| s.r#type.as_ref()) {
            Some(tls::secret::Type::TlsCertificate(c)) => m.certs = Some(certificate(c, &p)?),
            Some(_) => {
                return Err(ConfigError::at(
                    &p,
                    format!("secret {} is not a tls_certificate", sds.name),
                ))
            }
            None if sds.sds_config.is_some() => m.pending.push(sds.name.clone()),
            None => {
                return Err(ConfigError::at(
                    join(&p, "name"),
                    format!("unknown static secret {}", sds.name),
                ))
            }
        }
    }
    use tls::common_tls_context::ValidationContextType as V;
    match &common.validation_context_type {
        Some(V::ValidationContext(v)) => validation(v, &mut m, &join(path, "validation_context"))?,
        Some(V::ValidationContextSdsSecretConfig(sds)) => sds_validation(
            sds,
            secrets,
            &mut m,
            &join(path, "validation_context_sds_secret_config"),
        )?,
        Some(V::CombinedValidationContext(c)) => {
            let p = join(path, "combined_validation_context");
            if let Some(d) = &c.default_validation_context {
                validation(d, &mut m, &join(&p, "default_validation_context"))?;
            }
            if let Some(sds) = &c.validation_context_sds_secret_config {
                sds_validation(
                    sds,
                    secrets,
                    &mut m,
                    &join(&p, "validation_context_sds_secret_config"),
                )?;
            }
        }
        Some(_) => {
            return Err(ConfigError::at(
                path,
                "certificate provider validation contexts are not supported",
            ))
        }
        None => {}
    }
    Ok(m)
}

fn sds_validation(
    sds: &tls::SdsSecretConfig,
    secrets: &Secrets,
    m: &mut Material,
    path: &str,
) -> Result<()> {
    m.sds.push(sds_ref(sds, path)?);
    match secrets.get(&sds.name).and_then(|s| s.r#type.as_ref()) {
        Some(tls::secret::Type::ValidationContext(v)) => validation(v, m, path),
        Some(_) => Err(ConfigError::at(
            path,
            format!("secret {} is not a validation_context", sds.name),
        )),
        None if sds.sds_config.is_some() => {
            m.pending.push(sds.name.clone());
            Ok(())
        }
        None => Err(ConfigError::at(
            join(path, "name"),
            format!("unknown static secret {}", sds.name),
        )),
    }
}

/// A certificate chain with its key, checked to belong together.
fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: Key,
    provider: &CryptoProvider,
    path: &str,
) -> Result<Arc<CertifiedKey>> {
    let path = join(path, "tls_certificates");
    let certified = match key {
        Key::Der(der) => CertifiedKey::from_der(chain, der, provider)
            .map_err(|e| ConfigError::at(&path, e.to_string()))?,
        Key::Provider(key) => {
            let certified = CertifiedKey::new(chain, key.key);
            certified
                .keys_match()
                .map_err(|e| ConfigError::at(&path, format!("private_key_provider: {e}")))?;
            certified
        }
    };
    let certified = Arc::new(certified);
    crate::tls::expiry::track(&certified);
    Ok(certified)
}

fn certificate(c: &tls::TlsCertificate, path: &str) -> Result<(Vec<CertificateDer<'static>>, Key)> {
    let chain_path = join(path, "certificate_chain");
    let key_path = join(path, "private_key");
    let chain = c
        .certificate_chain
        .as_ref()
        .ok_or_else(|| ConfigError::at(&chain_path, "certificate_chain is required"))?;
    let chain = pem::certificates(&common::data_source(chain, &chain_path)?)
        .map_err(|e| ConfigError::at(&chain_path, e))?;
    let key = match (&c.private_key, &c.private_key_provider) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::at(
                join(path, "private_key_provider"),
                "private_key and private_key_provider are exclusive",
            ))
        }
        (Some(key), None) => Key::Der(
            pem::private_key(&common::data_source(key, &key_path)?)
                .map_err(|e| ConfigError::at(&key_path, e))?,
        ),
        (None, Some(provider)) => Key::Provider(crate::tls::multibuffer::provider::signing_key(
            provider,
            &join(path, "private_key_provider"),
        )?),
        (None, None) => {
            return Err(ConfigError::at(
                &key_path,
                "private_key or private_key_provider is required",
            ))
        }
    };
    Ok((chain, key))
}

fn validation(v: &tls::CertificateValidationContext, m: &mut Material, path: &str) -> Result<()> {
    match (&v.custom_validator_config, &v.trusted_ca) {
        (Some(validator), ca) => {
            match ca {
                // Envoy's proto validation requires a data source to say where it reads.
                Some(ca) if ca.specifier.is_none() => {
                    return Err(ConfigError::at(
                        join(path, "trusted_ca"),
                        "a data source needs one of filename, inline_bytes, inline_string",
                    ))
                }
                // As in Envoy, the SPIFFE validator takes its CAs from its trust domains.
                Some(_) => {
                    tracing::warn!("{path}.trusted_ca: no effect beside the SPIFFE validator")
                }
                None => {}
            }
            m.trust = Some(super::spiffe::trust(
                validator,
                &join(path, "custom_validator_config"),
            )?);
        }
        (None, Some(ca)) => {
            let roots = super::spiffe::roots(ca, &join(path, "trusted_ca"))?;
            m.trust = Some(verify::Trust::Bundle(roots));
        }
        (None, None) => {}
    }
    for (i, s) in v.match_typed_subject_alt_names.iter().enumerate() {
        let p = item(path, "match_typed_subject_alt_names", i);
        let san_type = match s.san_type {
            1 => SanType::Email,
            2 => SanType::Dns,
            3 => SanType::Uri,
            4 => SanType::IpAddress,
            n => {
                return Err(ConfigError::at(
                    join(&p, "san_type"),
                    format!("unsupported san_type {n}"),
                ))
            }
        };
        let matcher = s
            .matcher
            .as_ref()
            .ok_or_else(|| ConfigError::at(join(&p, "matcher"), "matcher is required"))?;
        m.sans.push(SanMatcher {
            san_type: Some(san_type),
            matcher: string_matcher(matcher, &join(&p, "matcher"))?,
        });
    }
    for (i, s) in v.match_subject_alt_names.iter().enumerate() {
        let p = item(path, "match_subject_alt_names", i);
        m.sans.push(SanMatcher {
            san_type: None,
            matcher: string_matcher(s, &p)?,
        });
    }
    Ok(())
}

fn versions(
    common: &tls::CommonTlsContext,
    path: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>> {
    let (min, max) = common
        .tls_params
        .as_ref()
        .map(|p| {
            (
                p.tls_minimum_protocol_version,
                p.tls_maximum_protocol_version,
            )
        })
        .unwrap_or((0, 0));
    // TLS_AUTO = 0, TLSv1_0..TLSv1_3 = 1..4. Envoy's defaults: min 1.2, max 1.3.
    let min = if min == 0 { 3 } else { min };
    let max = if max == 0 { 4 } else { max };
    let mut out = Vec::new();
    if min <= 3 && max >= 3 {
        out.push(&rustls::version::TLS12);
    }
    if max >= 4 {
        out.push(&rustls::version::TLS13);
    }
    if out.is_empty() || min > max {
        return Err(ConfigError::at(
            path,
            "TLS versions below 1.2 are not supported",
        ));
    }
    Ok(out)
}

fn provider(common: &tls::CommonTlsContext, path: &str) -> Result<Arc<CryptoProvider>> {
    let mut provider = rustls::crypto::ring::default_provider();
    let Some(params) = &common.tls_params else {
        return Ok(Arc::new(provider));
    };
    if !params.cipher_suites.is_empty() {
        let mut suites: Vec<rustls::SupportedCipherSuite> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        for (i, name) in params.cipher_suites.iter().enumerate() {
            let names = name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split('|');
            for n in names {
                if let Some(&known) = NEVER_NEGOTIATED.iter().find(|k| **k == n) {
                    warn_never_negotiated(known, &item(path, "cipher_suites", i));
                    continue;
                }
                let suite = tls12_suite(n).ok_or_else(|| {
                    ConfigError::at(
                        item(path, "cipher_suites", i),
                        format!("unsupported cipher suite {n}"),
                    )
                })?;
                if !suites.contains(&suite) {
                    suites.push(suite);
                }
            }
        }
        provider.cipher_suites = suites;
    }
    if !params.ecdh_curves.is_empty() {
        use rustls::crypto::ring::kx_group;
        let mut groups = Vec::new();
        for (i, c) in params.ecdh_curves.iter().enumerate() {
            groups.push(match c.as_str() {
                "X25519" => kx_group::X25519,
                "P-256" => kx_group::SECP256R1,
                "P-384" => kx_group::SECP384R1,
                other => {
                    return Err(ConfigError::at(
                        item(path, "ecdh_curves", i),
                        format!("unsupported curve {other}"),
                    ))
                }
            });
        }
        provider.kx_groups = groups;
    }
    Ok(Arc::new(provider))
}

/// TLS 1.2 suites Envoy knows and rustls does not implement: static RSA key exchange
/// and CBC modes. Istio lists two of them by default after its ECDHE suites; a list
/// naming them still restricts what is negotiated, and these are left out, so a
/// handshake uses one of the list's other suites or TLS 1.3.
const NEVER_NEGOTIATED: &[&str] = &[
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
];

/// Says once per process per suite that a listed suite is left out (every TLS context
/// of an Istio sidecar lists the same ones, again at each certificate rotation).
fn warn_never_negotiated(suite: &'static str, path: &str) {
    static WARNED: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if !warned.contains(&suite) {
        warned.push(suite);
        tracing::warn!(
            "{path}: cipher suite {suite} is never negotiated (static RSA key exchange or CBC); the other suites listed are offered"
        );
    }
}

fn tls12_suite(name: &str) -> Option<rustls::SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as cs;
    Some(match name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES256-GCM-SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-CHACHA20-POLY1305" => cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-CHACHA20-POLY1305" => cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use xds_client::contrib::{CryptoMbPrivateKeyMethodConfig, CRYPTOMB_CONFIG};
    use xds_client::proto::google::protobuf as pb;

    fn fixture(name: &str) -> core::DataSource {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/istio/certs")
            .join(name);
        core::DataSource {
            specifier: Some(core::data_source::Specifier::Filename(
                path.display().to_string(),
            )),
            ..Default::default()
        }
    }

    /// A listener's TLS transport socket presenting the fixture certificate, its key
    /// given inline or behind the cryptomb provider.
    fn server_socket(provider: bool) -> core::TransportSocket {
        let mut certificate = tls::TlsCertificate {
            certificate_chain: Some(fixture("cert-chain.pem")),
            ..Default::default()
        };
        if provider {
            let config = CryptoMbPrivateKeyMethodConfig {
                private_key: Some(fixture("key.pem")),
                poll_delay: Some(pb::Duration {
                    seconds: 0,
                    nanos: 2_000_000,
                }),
            };
            certificate.private_key_provider = Some(tls::PrivateKeyProvider {
                provider_name: "cryptomb".into(),
                fallback: true,
                config_type: Some(tls::private_key_provider::ConfigType::TypedConfig(
                    pb::Any {
                        type_url: format!("type.googleapis.com/{CRYPTOMB_CONFIG}"),
                        value: config.encode_to_vec(),
                    },
                )),
            });
        } else {
            certificate.private_key = Some(fixture("key.pem"));
        }
        let context = tls::DownstreamTlsContext {
            common_tls_context: Some(tls::CommonTlsContext {
                tls_certificates: vec![certificate],
                ..Default::default()
            }),
            ..Default::default()
        };
        core::TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(core::transport_socket::ConfigType::TypedConfig(pb::Any {
                type_url: format!("type.googleapis.com/{DOWNSTREAM}"),
                value: context.encode_to_vec(),
            })),
        }
    }

    #[test]
    fn only_contexts_whose_key_batches_send_handshakes_to_the_pool() {
        let secrets = Secrets::default();
        let plain = downstream_transport_socket(&server_socket(false), &secrets, "ts")
            .unwrap()
            .unwrap();
        assert!(
            !plain.batching(),
            "a key signed inline never waits for a batch"
        );
        let batched = downstream_transport_socket(&server_socket(true), &secrets, "ts")
            .unwrap()
            .unwrap();
        // The fixture key is RSA-2048: it batches wherever the kernel runs; with the
        // software fallback it signs at once.
        assert_eq!(batched.batching(), cryptomb::multi_buffer_available());
        assert!(batched
            .local_uri_san()
            .is_some_and(|s| s.starts_with("spiffe://")));
    }
}
