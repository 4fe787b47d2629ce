//! `iptables-init`: a drop-in for `istio-iptables` (same flags and environment), with
//! iptables and native nftables backends. `-n` prints exactly what would be applied.

use clap::Parser;
use iptables_init::config::{Config, Flags, Mode};
use iptables_init::detect::{self, Host};
use iptables_init::{generate, iptables, nftables};
use std::process::ExitCode;

/// Exit code istio-iptables uses when validation fails.
const VALIDATION_FAILED: u8 = 126;

fn main() -> ExitCode {
    let flags = Flags::parse();
    let config = match Config::resolve(&flags, &|k| std::env::var(k).ok(), &Host) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("iptables-init: {e}");
            return ExitCode::from(1);
        }
    };
    match run(&config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("iptables-init: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(c: &Config) -> Result<ExitCode, String> {
    let rules = generate::generate(c)?;
    if c.dry_run {
        if c.native_nftables {
            print!("{}", nftables::transaction(&rules, c.ipv6));
        } else {
            print!("{}", iptables::dry_run(&rules, c.ipv6));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(ns) = &c.network_namespace {
        enter_namespace(ns)?;
    }
    if c.native_nftables {
        preflight_nft()?;
        if c.cleanup_only {
            return nftables::run(
                &nftables::cleanup_transaction(&nftables::existing_tables()?),
                false,
            )
            .map(|_| ExitCode::SUCCESS);
        }
        if !c.skip_rule_apply {
            nftables::run(&nftables::transaction(&rules, c.ipv6), false)?;
        }
    } else {
        let flavour = iptables_flavour(c)?;
        let families: Vec<iptables::Ip> = if c.ipv6 {
            vec![iptables::Ip::V4, iptables::Ip::V6]
        } else {
            vec![iptables::Ip::V4]
        };
        if c.cleanup_only {
            for ip in &families {
                iptables::cleanup(*ip, &flavour)?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        if !c.skip_rule_apply {
            // Check every family before changing any, so a missing module never leaves
            // a half-applied ruleset.
            for ip in &families {
                let input = iptables::restore_input(&rules, *ip);
                if !input.is_empty() {
                    iptables::test(*ip, &flavour, &input).map_err(|e| explain_kernel(&e, c))?;
                }
            }
            for ip in &families {
                iptables::apply(&rules, *ip, &flavour)?;
            }
        }
    }
    if c.mode == Mode::Tproxy {
        tproxy_routes(c)?;
    }
    if c.run_validation && !iptables_init::validate::redirect_works(c) {
        eprintln!(
            "iptables-init: validation failed: connections are not redirected to the probe port {}",
            c.probe_port
        );
        return Ok(ExitCode::from(VALIDATION_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

fn enter_namespace(path: &str) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("--network-namespace {path}: {e}"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("--network-namespace {path}: setns: {e}"))
}

fn preflight_nft() -> Result<(), String> {
    if !detect::runs("nft", &["--version"]) {
        return Err("nft is not installed (needed by --native-nftables)".into());
    }
    nftables::run(
        "add table inet istio-proxy-probe\ndelete table inet istio-proxy-probe\n",
        false,
    )
    .map_err(|e| format!("the kernel rejected an nftables table; is nf_tables loaded? ({e})"))
}

/// The iptables flavour to use: forced with `--force-iptables-binary`, or detected.
fn iptables_flavour(c: &Config) -> Result<String, String> {
    match &c.force_iptables_binary {
        Some(forced) => {
            if !detect::runs(forced, &["--version"]) {
                return Err(format!("--force-iptables-binary {forced}: not found"));
            }
            Ok(forced.trim_start_matches("iptables").to_string())
        }
        None => detect::iptables_flavour(),
    }
}

/// Names the missing kernel support behind a failed `iptables-restore --test`.
fn explain_kernel(err: &str, c: &Config) -> String {
    let mut missing = Vec::new();
    let e = err.to_ascii_lowercase();
    if e.contains("table does not exist") || e.contains("can't initialize") {
        missing.push(if c.mode == Mode::Tproxy {
            "iptable_nat / iptable_mangle"
        } else {
            "iptable_nat"
        });
    }
    if e.contains("redirect") {
        missing.push("xt_REDIRECT");
    }
    if e.contains("owner") {
        missing.push("xt_owner");
    }
    if e.contains("tproxy") {
        missing.push("xt_TPROXY");
    }
    if e.contains("conntrack") || e.contains(" ct ") {
        missing.push("xt_conntrack / xt_CT");
    }
    if missing.is_empty() {
        format!("the kernel rejected the rules, nothing was applied: {err}")
    } else {
        format!(
            "missing kernel support ({}), nothing was applied: {err}",
            missing.join(", ")
        )
    }
}

/// TPROXY needs marked packets routed locally: `ip rule add fwmark M lookup T` and a local
/// default route in table T, per family; existing entries are kept.
fn tproxy_routes(c: &Config) -> Result<(), String> {
    let mut fams = vec!["-4"];
    if c.ipv6 {
        fams.push("-6");
    }
    for f in fams {
        let rule_exists = std::process::Command::new("ip")
            .args([f, "rule", "show", "fwmark", &c.tproxy_mark])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty());
        if !rule_exists
            && !detect::runs(
                "ip",
                &[
                    f,
                    "rule",
                    "add",
                    "fwmark",
                    &c.tproxy_mark,
                    "lookup",
                    &c.tproxy_table,
                ],
            )
        {
            return Err(format!(
                "ip {f} rule add fwmark {} lookup {} failed",
                c.tproxy_mark, c.tproxy_table
            ));
        }
        let _ = detect::runs(
            "ip",
            &[
                f,
                "route",
                "replace",
                "local",
                "default",
                "dev",
                "lo",
                "table",
                &c.tproxy_table,
            ],
        );
    }
    Ok(())
}
