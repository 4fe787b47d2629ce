//! The command line and bootstrap loading, through the real binary.

use e2e::proxy::{run_meshproxy, Kind, Proxy};
use e2e::{config, curl, fixtures, free_port, scratch};
use serde_json::json;

#[test]
fn version_flag_prints_envoy_shaped_version() {
    let (code, out, _) = run_meshproxy(&["--version"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("version: ") && out.contains("/1.40.0/"),
        "{out}"
    );
}

#[test]
fn unknown_flag_prints_usage_and_fails() {
    let (code, _, err) = run_meshproxy(&["--no-such-flag"]);
    assert_ne!(code, 0);
    assert!(err.contains("Usage"), "{err}");
}

#[test]
fn all_pilot_agent_bootstraps_validate_like_envoy() {
    let dir = fixtures().join("istio/bootstrap");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 30);
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let path = f.display().to_string();
        let mut args = vec!["-c", path.as_str(), "--mode", "validate"];
        args.extend_from_slice(e2e::proxy::PILOT_AGENT_FLAGS);
        let (code, out, err) = run_meshproxy(&args);
        match name.as_str() {
            "ambient_golden.json" => {
                assert_eq!(code, 1, "{name} must be rejected");
                assert!(
                    err.contains("bootstrap_extensions[0].typed_config")
                        && err.contains("istio.workload.BootstrapExtension"),
                    "{err}"
                );
            }
            "tracing_lightstep_golden.json" => {
                assert_eq!(code, 1, "{name} must be rejected");
                assert!(
                    err.contains("tracing.http.typed_config") && err.contains("LightstepConfig"),
                    "{err}"
                );
            }
            _ => {
                assert_eq!(code, 0, "{name}: {err}");
                assert!(out.contains(&format!("configuration '{path}' OK")), "{out}");
            }
        }
    }
}

fn validate_error(bootstrap: serde_json::Value) -> String {
    let dir = scratch("bad");
    let p = dir.join("b.json");
    std::fs::write(&p, bootstrap.to_string()).unwrap();
    let (code, _, err) = run_meshproxy(&["-c", p.to_str().unwrap(), "--mode", "validate"]);
    assert_eq!(code, 1, "must fail: {err}");
    err
}

/// A bootstrap with one listener whose HCM serves `virtual_hosts`, with `extra` merged into
/// the HCM's config.
fn one_hcm_bootstrap(
    virtual_hosts: serde_json::Value,
    extra: serde_json::Value,
) -> serde_json::Value {
    let text = config::bootstrap(
        vec![config::listener(
            "l",
            1,
            config::hcm(virtual_hosts, extra),
            json!({}),
        )],
        vec![],
    );
    serde_json::from_str(&text.replace("{ADMIN}", "0")).unwrap()
}

#[test]
fn malformed_bootstraps_name_the_field() {
    let err = validate_error(
        json!({"static_resources": {"clusters": [{"name": "a", "connect_timeout": "soon"}]}}),
    );
    assert!(
        err.contains("static_resources.clusters[0].connect_timeout"),
        "{err}"
    );
    let err = validate_error(
        json!({"static_resources": {"clusters": [{"name": "a", "bogus_field": 1}]}}),
    );
    assert!(
        err.contains("static_resources.clusters[0]") && err.contains("bogus_field"),
        "{err}"
    );
    let err = validate_error(
        json!({"static_resources": {"clusters": [{"name": "a", "type": "STATIC", "dns_jitter": "1s",
        "load_assignment": {"cluster_name": "a", "endpoints": []}}]}}),
    );
    assert!(
        err.contains("static_resources.clusters[0].dns_jitter") && err.contains("not supported"),
        "{err}"
    );
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "missing"}}]}]);
    let err = validate_error(one_hcm_bootstrap(vh, json!({})));
    assert!(
        err.contains("static_resources.listeners[0]") && err.contains("unknown cluster 'missing'"),
        "{err}"
    );
    let err = validate_error(json!({"static_resources": {"clusters": [
        {"name": "a", "load_assignment": {"cluster_name": "a"}}, {"name": "a", "load_assignment": {"cluster_name": "a"}}]}}));
    assert!(
        err.contains("static_resources.clusters[1].name") && err.contains("duplicate cluster"),
        "{err}"
    );
    let err = validate_error(json!({"static_resources": {"listeners": [{"name": "l",
        "address": {"socket_address": {"address": "not-an-ip", "port_value": 1}},
        "filter_chains": [{"filters": []}]}]}}));
    assert!(
        err.contains("static_resources.listeners[0].address.socket_address.address"),
        "{err}"
    );
    // Header values the HCM adds to every response are checked once, at load.
    for field in ["server_name", "via"] {
        let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]);
        let err = validate_error(one_hcm_bootstrap(vh, json!({ field: "two\nlines" })));
        assert!(
            err.contains(field) && err.contains("not a valid header value"),
            "{field}: {err}"
        );
    }
    let (code, _, err) = run_meshproxy(&["-c", "/nonexistent/bootstrap.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/bootstrap.yaml"), "{err}");
}

#[test]
fn pilot_agent_command_line_serves_a_static_bootstrap() {
    let up = e2e::upstream::Upstream::http("u");
    let port = free_port();
    let cfg = config::simple_http(port, "c", &[up.port]);
    let p = Proxy::start(Kind::Meshproxy, &cfg, e2e::proxy::PILOT_AGENT_FLAGS);
    let r = curl::get(port, "/x", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "u");
    assert_eq!(p.stat("server.concurrency"), Some(2));
}

#[test]
fn dynamic_resources_without_control_plane_stay_initializing() {
    let golden = fixtures().join("istio/bootstrap/default_golden.json");
    let mut b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
    // Move admin to a free port and drop listeners bound to fixed ports.
    b["static_resources"]["listeners"] = json!([]);
    let dir = scratch("dyn");
    let path = dir.join("b.json");
    let admin = free_port();
    b["admin"]["address"]["socket_address"]["port_value"] = json!(admin);
    std::fs::write(&path, b.to_string()).unwrap();
    let mut child = std::process::Command::new(e2e::proxy::meshproxy_bin())
        .args([
            "-c",
            path.to_str().unwrap(),
            "--allow-unknown-static-fields",
            "-l",
            "error",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    e2e::wait_until(10, "admin", || {
        curl::raw_http("GET", admin, "/ready").is_some()
    });
    let (status, body) = curl::raw_http("GET", admin, "/ready").unwrap();
    assert_eq!((status, body.trim()), (503, "INITIALIZING"));
    let (_, stats) = curl::raw_http("GET", admin, "/stats?filter=^server.state$").unwrap();
    assert_eq!(stats.trim(), "server.state: 3");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn config_yaml_merges_over_the_file() {
    let up = e2e::upstream::Upstream::http("merged");
    let port = free_port();
    // The file has the listener routing to cluster "c" but no clusters; --config-yaml adds it.
    let vh = json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]);
    let file = config::bootstrap(
        vec![config::listener(
            "l",
            port,
            config::hcm(vh, json!({})),
            json!({}),
        )],
        vec![],
    );
    let overlay =
        json!({"static_resources": {"clusters": [config::cluster("c", &[up.port], json!({}))]}})
            .to_string();
    let _p = Proxy::start(Kind::Meshproxy, &file, &["--config-yaml", &overlay]);
    assert_eq!(curl::get(port, "/", &[]).text(), "merged");
}

#[test]
fn bind_conflict_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut p = Proxy::spawn(Kind::Meshproxy, &config::simple_http(port, "c", &[1]), &[]);
    assert_eq!(p.wait_exit(10), Some(1));
    let err = std::fs::read_to_string(p.dir.join("stderr")).unwrap();
    assert!(err.contains("cannot bind listener http"), "{err}");
}

#[test]
fn log_format_and_levels_follow_envoy() {
    let port = free_port();
    let mut p = Proxy::spawn(
        Kind::Meshproxy,
        &config::simple_http(port, "c", &[1]),
        &["-l", "info", "--log-format", "[%l][%n] %v"],
    );
    p.wait_live();
    let err = std::fs::read_to_string(p.dir.join("stderr")).unwrap();
    assert!(
        err.lines()
            .any(|l| l.starts_with("[info][main] listener 'http' serving on")),
        "{err}"
    );
    assert!(p.running());
}
