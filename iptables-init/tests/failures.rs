//! Failure handling through the real binary: missing kernel support is named and nothing is
//! applied; `--run-validation` exits 126 when redirection does not work.

mod common;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// A PATH whose iptables tools behave like a kernel without the nat table.
fn broken_path() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ipt-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("applied");
    let scripts = [
        ("iptables", "#!/bin/sh\necho 'iptables v1.8.9 (nf_tables)'\n".to_string()),
        ("iptables-save", "#!/bin/sh\nexit 0\n".to_string()),
        (
            "iptables-restore",
            format!("#!/bin/sh\ncase \"$*\" in *--test*) echo \"iptables-restore: unable to initialize table 'nat': Table does not exist (do you need to insmod?)\" >&2; exit 2;; esac\ncat > {}\n", log.display()),
        ),
    ];
    for (name, text) in scripts {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

#[test]
fn missing_nat_table_is_named_and_nothing_is_applied() {
    let dir = broken_path();
    let out = Command::new(common::bin())
        .env_clear()
        .env("PATH", &dir)
        .args(["-u", "1337", "-g", "1337", "-i", "*", "--ipv6", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("iptable_nat") && err.contains("nothing was applied"),
        "{err}"
    );
    assert!(
        !dir.join("applied").exists(),
        "no rules may be applied after a failed check"
    );
}

#[test]
fn run_validation_reports_126_without_redirection_and_0_with_it() {
    let Some(ns) = common::Netns::create("ipt-valid") else {
        return;
    };
    ns.sh("ip link add v0 type veth peer name v1 && ip addr add 10.88.0.1/24 dev v0 && ip link set v0 up && ip link set v1 up && ip route add default dev v0");
    let run = |extra: &str| {
        ns.try_sh(&format!(
            "{} -u 1337 -g 1337 -i '*' --ipv6 off --run-validation --probe-timeout=2s {extra}",
            common::bin()
        ))
        .status
        .code()
    };
    assert_eq!(
        run("--skip-rule-apply"),
        Some(126),
        "without rules nothing is redirected"
    );
    assert_eq!(
        run(""),
        Some(0),
        "with rules the probe connection is redirected"
    );
}
