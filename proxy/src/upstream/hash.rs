//! Request hashing for RING_HASH and MAGLEV: Envoy combines the hash of each hash policy by
//! rotating the running hash left by one and XOR-ing the next (xxHash64, seed 0).

use xxhash_rust::xxh64::xxh64;

/// xxHash64 with seed 0, the hash Envoy uses for keys and ring entries.
pub fn hash_key(bytes: &[u8]) -> u64 {
    xxh64(bytes, 0)
}

/// Folds another policy's hash into the running one.
pub fn combine(running: Option<u64>, next: u64) -> u64 {
    match running {
        None => next,
        Some(h) => h.rotate_left(1) ^ next,
    }
}
