//! The descriptor pool of every Envoy v3 message, decoded on demand.
//!
//! Proto3 JSON needs message descriptors (field names, `Any` type URLs, enums by name);
//! prost's generated structs have none, so we keep the `FileDescriptorSet` that
//! `envoy-types` compiled its structs from. Decoded, the pool takes tens of megabytes, so it
//! is not kept for the life of the process: whoever needs it holds a [`Hold`] (config
//! loading, `/config_dump`), and when the last holder is gone the pool is freed.

use prost_reflect::{DescriptorPool, MessageDescriptor};
use std::sync::{Arc, Mutex, Weak};

static DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_types.bin"));

static CACHE: Mutex<Weak<DescriptorPool>> = Mutex::new(Weak::new());

/// Keeps the decoded pool alive while held; cheap to clone.
pub type Hold = Arc<DescriptorPool>;

/// The pool, decoded if no one holds it (tens of milliseconds), cached while held.
pub fn hold() -> Hold {
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pool) = cache.upgrade() {
        return pool;
    }
    let mut pool =
        DescriptorPool::decode(DESCRIPTOR_SET).expect("envoy-types descriptor set is valid");
    for file in crate::contrib::files()
        .into_iter()
        .chain(crate::istio::files())
    {
        pool.add_file_descriptor_proto(file)
            .expect("contrib descriptors resolve against the Envoy set");
    }
    let pool = Arc::new(pool);
    *cache = Arc::downgrade(&pool);
    pool
}

/// A pool being decoded on another thread; see [`hold_in_background`].
pub struct Pending(Option<std::thread::JoinHandle<Hold>>);

impl Pending {
    /// The pool, once decoded (decoded here if the thread could not run).
    pub fn wait(self) -> Hold {
        self.0
            .and_then(|thread| thread.join().ok())
            .unwrap_or_else(hold)
    }
}

/// Starts decoding the pool on another thread, so the decoding overlaps start-up work that
/// does not need it (reading and parsing a bootstrap's text). A caller that needs the pool
/// meanwhile waits for that decoding rather than doing it twice.
pub fn hold_in_background() -> Pending {
    Pending(
        std::thread::Builder::new()
            .name("descriptors".into())
            .spawn(hold)
            .ok(),
    )
}

/// Looks up a message by its full name (`envoy.config.bootstrap.v3.Bootstrap`). The
/// descriptor keeps what it needs of the pool alive; hold the pool for repeated lookups.
pub fn message(full_name: &str) -> Option<MessageDescriptor> {
    hold().get_message_by_name(full_name)
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
        let _held = hold();
        assert!(message("envoy.config.bootstrap.v3.Bootstrap").is_some());
        assert!(message(
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        )
        .is_some());
        assert!(message("no.such.Message").is_none());
        let cryptomb = message(crate::contrib::CRYPTOMB_CONFIG).expect("contrib message");
        assert_eq!(
            cryptomb.get_field_by_name("poll_delay").unwrap().number(),
            2
        );
    }

    #[test]
    fn pool_is_shared_while_held_and_freed_after() {
        let a = hold();
        let b = hold();
        assert!(Arc::ptr_eq(&a, &b));
        // (Freeing after the last holder is observable only process-wide; the benchmark's
        // idle RSS measures it.)
        drop((a, b));
    }

    #[test]
    fn type_url_names() {
        assert_eq!(type_name_of_url("type.googleapis.com/a.b.C"), "a.b.C");
        assert_eq!(type_name_of_url("a.b.C"), "a.b.C");
    }
}
