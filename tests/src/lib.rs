//! Helpers for end-to-end tests: build and start the real `meshproxy` binary (and the real
//! Envoy 1.40 for differential tests), recording upstream servers, free ports, and a `curl`
//! wrapper (a real client with HTTP/1.1, h2c, TLS and mTLS).

pub mod config;
pub mod curl;
pub mod istio;
pub mod netns;
pub mod pki;
pub mod proxy;
pub mod sockets;
pub mod tls_client;
pub mod upstream;
pub mod xds;

use std::net::TcpListener;
use std::path::PathBuf;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The shared fixtures folder (`../shared/fixtures` beside the workspace).
pub fn fixtures() -> PathBuf {
    workspace().join("../shared/fixtures")
}

/// A port that was free a moment ago on 127.0.0.1, never the same one twice in a test
/// process (the kernel may hand a just-released port out again, and two proxies of one
/// test would then collide on it).
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "meshproxy-e2e-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Waits until `cond` holds (polling), panicking with `what` after `secs` seconds.
pub fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}
