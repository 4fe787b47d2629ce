//! Copies the Envoy descriptor set shipped inside the `envoy-types` crate into OUT_DIR,
//! without its `source_code_info` (the protos' comments and source locations).
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
    let set = std::fs::read(&source).expect("read descriptor set");
    std::fs::write(&out, strip_source_info(&set)).expect("write descriptor set");
}

/// `FileDescriptorSet.file` is field 1, `FileDescriptorProto.source_code_info` field 9.
const SET_FILE: u64 = 1;
const FILE_SOURCE_CODE_INFO: u64 = 9;

/// The set without each file's `source_code_info`: four fifths of its bytes, which nothing
/// reads but every decoding of the pool would parse and free.
fn strip_source_info(set: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(set.len() / 4);
    for (number, field) in fields(set) {
        assert_eq!(number, SET_FILE, "a FileDescriptorSet holds only files");
        let body = field.body();
        let mut file = Vec::with_capacity(body.len());
        for (number, inner) in fields(body) {
            if number != FILE_SOURCE_CODE_INFO {
                file.extend_from_slice(inner.raw);
            }
        }
        put_varint(&mut out, SET_FILE << 3 | 2);
        put_varint(&mut out, file.len() as u64);
        out.extend_from_slice(&file);
    }
    out
}

/// One encoded field: its bytes as they appear (tag included) and where its body starts.
struct Field<'a> {
    raw: &'a [u8],
    body_start: usize,
}

impl<'a> Field<'a> {
    fn body(&self) -> &'a [u8] {
        &self.raw[self.body_start..]
    }
}

/// The fields of an encoded message (varint and length-delimited wire types, all a
/// descriptor set uses).
fn fields(mut message: &[u8]) -> Vec<(u64, Field<'_>)> {
    let mut out = Vec::new();
    while !message.is_empty() {
        let (key, key_len) = varint(message);
        let (body_start, end) = match key & 7 {
            0 => (key_len, key_len + varint(&message[key_len..]).1),
            2 => {
                let (len, len_len) = varint(&message[key_len..]);
                (key_len + len_len, key_len + len_len + len as usize)
            }
            other => panic!("unexpected wire type {other} in the descriptor set"),
        };
        out.push((
            key >> 3,
            Field {
                raw: &message[..end],
                body_start,
            },
        ));
        message = &message[end..];
    }
    out
}

fn varint(bytes: &[u8]) -> (u64, usize) {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("malformed varint in the descriptor set")
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
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
