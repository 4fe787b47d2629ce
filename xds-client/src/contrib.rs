//! Envoy contrib messages that `envoy-types` does not compile, defined here from their
//! published field numbers: the descriptors join the pool (so proto3 JSON and the config
//! checker know them) and the prost structs decode them.

use crate::proto_def::{field, file, message, Kind};
use prost_types::FileDescriptorProto;

/// Full name of the cryptomb private key provider's config
/// (`envoy/extensions/private_key_providers/cryptomb/v3alpha/cryptomb.proto`).
pub const CRYPTOMB_CONFIG: &str =
    "envoy.extensions.private_key_providers.cryptomb.v3alpha.CryptoMbPrivateKeyMethodConfig";

/// `CryptoMbPrivateKeyMethodConfig`: the private key the multi-buffer provider signs with,
/// and how long a partly filled batch may wait for more requests.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CryptoMbPrivateKeyMethodConfig {
    /// The private key (PEM).
    #[prost(message, optional, tag = "1")]
    pub private_key: Option<crate::proto::envoy::config::core::v3::DataSource>,
    /// Longest wait before a partly filled batch is processed (required, positive).
    #[prost(message, optional, tag = "2")]
    pub poll_delay: Option<crate::proto::google::protobuf::Duration>,
}

/// The contrib files to add to the descriptor pool.
pub fn files() -> Vec<FileDescriptorProto> {
    vec![file(
        "envoy/extensions/private_key_providers/cryptomb/v3alpha/cryptomb.proto",
        "envoy.extensions.private_key_providers.cryptomb.v3alpha",
        &[
            "envoy/config/core/v3/base.proto",
            "google/protobuf/duration.proto",
        ],
        vec![message(
            "CryptoMbPrivateKeyMethodConfig",
            vec![
                field(
                    "private_key",
                    1,
                    Kind::Message(".envoy.config.core.v3.DataSource"),
                ),
                field("poll_delay", 2, Kind::Message(".google.protobuf.Duration")),
            ],
            vec![],
        )],
        vec![],
    )]
}
