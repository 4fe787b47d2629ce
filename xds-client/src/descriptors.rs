//! The descriptor pool of every Envoy v3 message, loaded once per process.
//!
//! Proto3 JSON needs message descriptors (field names, `Any` type URLs, enums by name);
//! prost's generated structs have none, so we keep the `FileDescriptorSet` that
//! `envoy-types` compiled its structs from and decode it lazily on first use.

use prost_reflect::{DescriptorPool, MessageDescriptor};
use std::sync::OnceLock;

static DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_types.bin"));

/// The shared descriptor pool. Decoding takes tens of milliseconds, so it happens once.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTOR_SET).expect("envoy-types descriptor set is valid")
    })
}

/// Looks up a message by its full name (`envoy.config.bootstrap.v3.Bootstrap`).
pub fn message(full_name: &str) -> Option<MessageDescriptor> {
    pool().get_message_by_name(full_name)
}

/// The full message name a type URL designates (`type.googleapis.com/a.b.C` -> `a.b.C`).
pub fn type_name_of_url(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_knows_the_bootstrap_and_its_extensions() {
        assert!(message("envoy.config.bootstrap.v3.Bootstrap").is_some());
        assert!(message(
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        )
        .is_some());
        assert!(message("no.such.Message").is_none());
    }

    #[test]
    fn type_url_names() {
        assert_eq!(type_name_of_url("type.googleapis.com/a.b.C"), "a.b.C");
        assert_eq!(type_name_of_url("a.b.C"), "a.b.C");
    }
}
