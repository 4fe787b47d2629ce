//! Translates a `TlsCertificate.private_key_provider` into a rustls signing key: Envoy's
//! contrib `cryptomb` provider (`CryptoMbPrivateKeyMethodConfig`), served by the
//! `cryptomb` crate's AVX-512 IFMA kernel.
//!
//! As in Envoy: `poll_delay` is required and positive; on a CPU without the kernel's
//! features the config is refused unless the provider's `fallback` is true, in which case
//! keys sign in software. An RSA key batches; a P-256 key signs with nonces the kernel
//! precomputes eight at a time; other ECDSA keys (which the provider also accepts) sign
//! single-buffer through ring. `MESHPROXY_CRYPTOMB_DISABLE=1` makes the
//! CPU count as lacking the features (the `cryptomb` crate decides, for every user of the
//! kernel alike), so the fallback behaviour can be exercised (and the kernel switched
//! off) anywhere.

use super::batcher::Batcher;
use super::ecdsa::MultiBufferEcdsaKey;
use super::signer::MultiBufferKey;
use crate::config::common;
use crate::config::error::{join, ConfigError, Result};
use crate::tls::pem;
use cryptomb::{EcdsaP256Key, Engine, RsaKey};
use prost::Message;
use rustls::sign::SigningKey;
use std::sync::Arc;
use xds_client::contrib::{CryptoMbPrivateKeyMethodConfig, CRYPTOMB_CONFIG};
use xds_client::proto::envoy::extensions::transport_sockets::tls::v3 as tls;

/// The provider name Envoy registers the extension under.
pub const CRYPTOMB: &str = "cryptomb";

/// The signing key a provider made, and whether it batches.
pub struct ProviderKey {
    /// The rustls signing key.
    pub key: Arc<dyn SigningKey>,
    /// Whether its signer waits for other handshakes to fill a batch (an RSA key on the
    /// kernel): handshakes using it must run on the handshake pool.
    pub batching: bool,
}

/// The signing key a `private_key_provider` describes.
pub fn signing_key(provider: &tls::PrivateKeyProvider, path: &str) -> Result<ProviderKey> {
    if provider.provider_name != CRYPTOMB {
        return Err(ConfigError::at(
            join(path, "provider_name"),
            format!(
                "unsupported private key provider {:?} (meshproxy provides {CRYPTOMB})",
                provider.provider_name
            ),
        ));
    }
    let typed_path = join(path, "typed_config");
    use tls::private_key_provider::ConfigType;
    let Some(ConfigType::TypedConfig(any)) = &provider.config_type else {
        return Err(ConfigError::at(&typed_path, "typed_config is required"));
    };
    if xds_client::descriptors::type_name_of_url(&any.type_url) != CRYPTOMB_CONFIG {
        return Err(ConfigError::at(
            &typed_path,
            format!("expected {CRYPTOMB_CONFIG}, got {}", any.type_url),
        ));
    }
    let config = CryptoMbPrivateKeyMethodConfig::decode(any.value.as_slice())
        .map_err(|e| ConfigError::at(&typed_path, format!("malformed {CRYPTOMB_CONFIG}: {e}")))?;
    let delay_path = join(&typed_path, "poll_delay");
    let poll_delay = config
        .poll_delay
        .as_ref()
        .ok_or_else(|| ConfigError::at(&delay_path, "poll_delay is required"))
        .and_then(|d| common::duration(d, &delay_path))?;
    if poll_delay.is_zero() {
        return Err(ConfigError::at(&delay_path, "poll_delay must be positive"));
    }
    let key_path = join(&typed_path, "private_key");
    let source = config
        .private_key
        .as_ref()
        .ok_or_else(|| ConfigError::at(&key_path, "private_key is required"))?;
    let der = pem::private_key(&common::data_source(source, &key_path)?)
        .map_err(|e| ConfigError::at(&key_path, e))?;
    let engine = match cryptomb::multi_buffer_unavailable_reason() {
        None => Engine::MultiBuffer,
        Some(reason) if provider.fallback => {
            tracing::warn!("{path}: {reason}: cryptomb signs in software (fallback)");
            Engine::Single
        }
        Some(reason) => {
            return Err(ConfigError::at(
                path,
                format!("the cryptomb provider needs AVX-512 IFMA: {reason} (set fallback: true to sign in software)"),
            ))
        }
    };
    let unbatched = |key: Arc<dyn SigningKey>| ProviderKey {
        key,
        batching: false,
    };
    match RsaKey::from_der(der.secret_der()) {
        Ok(key) => Ok(ProviderKey {
            key: Arc::new(MultiBufferKey::new(Batcher::new(key, poll_delay, engine))),
            batching: engine == Engine::MultiBuffer,
        }),
        Err(rsa_error) => match EcdsaP256Key::from_der(der.secret_der()) {
            Ok(key) => Ok(unbatched(Arc::new(MultiBufferEcdsaKey::new(key, engine)))),
            Err(_) => rustls::crypto::ring::sign::any_supported_type(&der)
                .map(unbatched)
                .map_err(|e| {
                    ConfigError::at(
                        &key_path,
                        format!(
                            "neither a usable RSA key ({rsa_error}) nor another supported key: {e}"
                        ),
                    )
                }),
        },
    }
}
