// Shared by several test binaries; each uses a subset of the helpers.
#![allow(dead_code)]

//! Helpers shared by the kernel tests: the namespaces of the e2e crate and the binary
//! under test.

use std::process::Command;

pub use e2e::netns::Netns;

/// The iptables-init binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_iptables-init")
}

/// Dry-run output of iptables-init with `args` (clean environment).
pub fn dry_run(args: &[&str]) -> String {
    let out = Command::new(bin())
        .env_clear()
        .args(args)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
