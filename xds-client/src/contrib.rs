//! Envoy contrib messages that `envoy-types` does not compile, defined here from their
//! published field numbers: the descriptors join the pool (so proto3 JSON and the config
//! checker know them) and the prost structs decode them.

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};

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

/// A singular message field of a descriptor.
fn message_field(name: &str, json: &str, number: i32, type_name: &str) -> FieldDescriptorProto {
    FieldDescriptorProto {
        name: Some(name.into()),
        json_name: Some(json.into()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(Type::Message as i32),
        type_name: Some(type_name.into()),
        ..Default::default()
    }
}

/// The contrib files to add to the descriptor pool.
pub fn files() -> Vec<FileDescriptorProto> {
    vec![FileDescriptorProto {
        name: Some("envoy/extensions/private_key_providers/cryptomb/v3alpha/cryptomb.proto".into()),
        package: Some("envoy.extensions.private_key_providers.cryptomb.v3alpha".into()),
        dependency: vec![
            "envoy/config/core/v3/base.proto".into(),
            "google/protobuf/duration.proto".into(),
        ],
        message_type: vec![DescriptorProto {
            name: Some("CryptoMbPrivateKeyMethodConfig".into()),
            field: vec![
                message_field(
                    "private_key",
                    "privateKey",
                    1,
                    ".envoy.config.core.v3.DataSource",
                ),
                message_field("poll_delay", "pollDelay", 2, ".google.protobuf.Duration"),
            ],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    }]
}
