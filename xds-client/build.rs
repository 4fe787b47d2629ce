//! Copies the Envoy descriptor set shipped inside the `envoy-types` crate into OUT_DIR.
//!
//! `envoy-types` ships `src/generated/types.bin` (a `FileDescriptorSet` of every Envoy, xDS
//! and udpa proto it compiles) but exposes no constant for it. We need it for proto3 JSON
//! (bootstrap files, `/config_dump`), so we find the crate's sources in the cargo registry.
//! `ENVOY_TYPES_DESCRIPTOR` overrides the lookup (vendored or offline builds).

use std::path::{Path, PathBuf};

const ENVOY_TYPES_DIR: &str = "envoy-types-0.7.7";

fn main() {
    println!("cargo:rerun-if-env-changed=ENVOY_TYPES_DESCRIPTOR");
    let source = std::env::var_os("ENVOY_TYPES_DESCRIPTOR")
        .map(PathBuf::from)
        .or_else(find_in_registry)
        .expect("cannot find envoy-types' src/generated/types.bin; set ENVOY_TYPES_DESCRIPTOR");
    println!("cargo:rerun-if-changed={}", source.display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("envoy_types.bin");
    std::fs::copy(&source, &out).expect("copy descriptor set");
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
}

fn find_in_registry() -> Option<PathBuf> {
    let src = cargo_home()?.join("registry").join("src");
    std::fs::read_dir(src).ok()?.flatten().find_map(|index| {
        let candidate = index
            .path()
            .join(ENVOY_TYPES_DIR)
            .join("src/generated/types.bin");
        candidate.exists().then_some(candidate)
    })
}
