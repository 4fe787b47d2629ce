//! istio-iptables' command line and environment. Every flag but `-p` can be set from the
//! environment (read before the flags, so an explicit flag wins); a few settings exist only
//! in the environment.

use clap::Parser;

/// The raw command line. Values stay strings so an environment default can be told apart
/// from "not given" and from an explicit empty value (`-b ''`).
#[derive(Debug, Parser, Default)]
#[command(
    name = "iptables-init",
    about = "Set up istio-iptables-compatible traffic redirection to meshproxy (iptables or native nftables)."
)]
pub struct Flags {
    /// Outbound capture port.
    #[arg(short = 'p', long = "envoy-port")]
    pub envoy_port: Option<String>,
    /// Inbound capture port.
    #[arg(short = 'z', long = "inbound-capture-port")]
    pub inbound_capture_port: Option<String>,
    /// Inbound tunnel (HBONE) port, never captured.
    #[arg(short = 'e', long = "inbound-tunnel-port")]
    pub inbound_tunnel_port: Option<String>,
    /// UIDs whose traffic is not captured (comma-separated).
    #[arg(short = 'u', long = "proxy-uid")]
    pub proxy_uid: Option<String>,
    /// GIDs whose traffic is not captured (comma-separated).
    #[arg(short = 'g', long = "proxy-gid")]
    pub proxy_gid: Option<String>,
    /// Inbound interception mode: REDIRECT or TPROXY.
    #[arg(short = 'm', long = "istio-inbound-interception-mode")]
    pub interception_mode: Option<String>,
    /// Inbound ports to capture (`*` for all).
    #[arg(short = 'b', long = "istio-inbound-ports")]
    pub inbound_ports: Option<String>,
    /// Inbound ports to exclude (with `-b '*'`).
    #[arg(short = 'd', long = "istio-local-exclude-ports")]
    pub local_exclude_ports: Option<String>,
    /// Interfaces whose traffic is never captured.
    #[arg(short = 'c', long = "istio-exclude-interfaces")]
    pub exclude_interfaces: Option<String>,
    /// Outbound CIDRs to capture (`*` for all).
    #[arg(short = 'i', long = "istio-service-cidr")]
    pub service_cidr: Option<String>,
    /// Outbound CIDRs to exclude.
    #[arg(short = 'x', long = "istio-service-exclude-cidr")]
    pub service_exclude_cidr: Option<String>,
    /// Outbound ports to capture regardless of destination.
    #[arg(short = 'q', long = "istio-outbound-ports")]
    pub outbound_ports: Option<String>,
    /// Outbound ports to exclude.
    #[arg(short = 'o', long = "istio-local-outbound-ports-exclude")]
    pub outbound_ports_exclude: Option<String>,
    /// Virtual interfaces whose inbound traffic is treated as outbound.
    #[arg(short = 'k', long = "kube-virt-interfaces")]
    pub kube_virt_interfaces: Option<String>,
    /// TPROXY packet mark.
    #[arg(short = 't', long = "istio-inbound-tproxy-mark")]
    pub tproxy_mark: Option<String>,
    /// TPROXY routing table.
    #[arg(short = 'r', long = "istio-inbound-tproxy-route-table")]
    pub tproxy_route_table: Option<String>,
    /// Print the rules instead of applying them.
    #[arg(short = 'n', long = "dry-run", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub dry_run: Option<String>,
    /// Capture DNS to the agent's resolver (port 15053).
    #[arg(long = "redirect-dns", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub redirect_dns: Option<String>,
    /// Capture DNS to any address, not only the configured nameservers.
    #[arg(long = "capture-all-dns", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub capture_all_dns: Option<String>,
    /// Drop packets conntrack considers invalid.
    #[arg(long = "drop-invalid", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub drop_invalid: Option<String>,
    /// IPv6 is on when any (not only the first) address is IPv6.
    #[arg(long = "dual-stack", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub dual_stack: Option<String>,
    /// Use native nftables instead of iptables.
    #[arg(long = "native-nftables", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub native_nftables: Option<String>,
    /// Remove the rules and exit.
    #[arg(long = "cleanup-only", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub cleanup_only: Option<String>,
    /// Repair an existing ruleset that differs from the expected one.
    #[arg(long = "reconcile", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub reconcile: Option<String>,
    /// Apply even when rules are already present.
    #[arg(long = "force-apply", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub force_apply: Option<String>,
    /// Run in the CNI plugin (no behaviour change here).
    #[arg(long = "cni-mode", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub cni_mode: Option<String>,
    /// Network namespace to enter (a path such as /var/run/netns/x).
    #[arg(long = "network-namespace")]
    pub network_namespace: Option<String>,
    /// Force an iptables binary (iptables-legacy or iptables-nft).
    #[arg(long = "force-iptables-binary")]
    pub force_iptables_binary: Option<String>,
    /// Port the validation probe listens on.
    #[arg(long = "iptables-probe-port")]
    pub probe_port: Option<String>,
    /// Timeout of the validation probe (e.g. 5s).
    #[arg(long = "probe-timeout")]
    pub probe_timeout: Option<String>,
    /// Skip applying rules (only set up what is around them).
    #[arg(long = "skip-rule-apply", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub skip_rule_apply: Option<String>,
    /// Validate that redirection works (exit 126 when it does not).
    #[arg(long = "run-validation", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub run_validation: Option<String>,
    /// IPv6 on, off, or auto-detected from the interfaces (meshproxy addition).
    #[arg(long = "ipv6", default_value = "auto")]
    pub ipv6: String,
    /// Use these nameservers instead of /etc/resolv.conf (meshproxy addition; empty = none).
    #[arg(long = "dns-servers")]
    pub dns_servers: Option<String>,
}

/// Inbound interception mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// nat REDIRECT to the inbound capture port.
    Redirect,
    /// mangle TPROXY with a mark and a routing table.
    Tproxy,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `-p`.
    pub proxy_port: String,
    /// `-z`.
    pub inbound_capture_port: String,
    /// `-e`.
    pub inbound_tunnel_port: String,
    /// `-u` (comma-separated).
    pub proxy_uid: String,
    /// `-g` (comma-separated).
    pub proxy_gid: String,
    /// `-m`.
    pub mode: Mode,
    /// `-b`.
    pub inbound_ports: String,
    /// `-d`.
    pub local_exclude_ports: String,
    /// `-c`.
    pub exclude_interfaces: String,
    /// `-i`.
    pub outbound_include: String,
    /// `-x`.
    pub outbound_exclude: String,
    /// `-q`.
    pub outbound_ports_include: String,
    /// `-o`.
    pub outbound_ports_exclude: String,
    /// `-k`.
    pub virtual_interfaces: String,
    /// `-t`.
    pub tproxy_mark: String,
    /// `-r`.
    pub tproxy_table: String,
    /// `-n`.
    pub dry_run: bool,
    /// `--redirect-dns`.
    pub redirect_dns: bool,
    /// `--capture-all-dns`.
    pub capture_all_dns: bool,
    /// `--drop-invalid`.
    pub drop_invalid: bool,
    /// `--dual-stack`.
    pub dual_stack: bool,
    /// `--native-nftables`.
    pub native_nftables: bool,
    /// `--cleanup-only`.
    pub cleanup_only: bool,
    /// `--reconcile`.
    pub reconcile: bool,
    /// `--force-apply`.
    pub force_apply: bool,
    /// `--network-namespace`.
    pub network_namespace: Option<String>,
    /// `--force-iptables-binary`.
    pub force_iptables_binary: Option<String>,
    /// `--iptables-probe-port`.
    pub probe_port: u16,
    /// `--probe-timeout`.
    pub probe_timeout: std::time::Duration,
    /// `--skip-rule-apply`.
    pub skip_rule_apply: bool,
    /// `--run-validation`.
    pub run_validation: bool,
    /// `ISTIO_OUTBOUND_OWNER_GROUPS`.
    pub owner_groups_include: String,
    /// `ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE`.
    pub owner_groups_exclude: String,
    /// `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`.
    pub loopback_cidr_v4: String,
    /// IPv6 rules are generated.
    pub ipv6: bool,
    /// IPv4 nameservers (verbatim text).
    pub dns_v4: Vec<String>,
    /// IPv6 nameservers (verbatim text).
    pub dns_v6: Vec<String>,
}

/// Go's strconv.ParseBool, which istio-iptables uses for boolean flags and variables.
pub fn parse_bool(name: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean value {v:?} for {name}")),
    }
}

/// Reads the first set variable among `names`.
fn env_of(env: &dyn Fn(&str) -> Option<String>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| env(n))
}

/// Splits a comma-separated list, dropping empty items.
pub fn split(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl Config {
    /// Resolves flags over environment over defaults. `env` reads a variable; `detect`
    /// supplies what the machine says when the knobs leave it open.
    pub fn resolve(
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
        detect: &dyn crate::detect::Machine,
    ) -> Result<Config, String> {
        let s = |flag: &Option<String>, names: &[&str], default: &str| -> String {
            flag.clone()
                .or_else(|| env_of(env, names))
                .unwrap_or_else(|| default.to_string())
        };
        let b = |flag: &Option<String>, names: &[&str], label: &str| -> Result<bool, String> {
            match flag.clone().or_else(|| env_of(env, names)) {
                Some(v) => parse_bool(label, &v),
                None => Ok(false),
            }
        };
        let mut proxy_uid = s(&flags.proxy_uid, &["PROXY_UID"], "");
        if proxy_uid.is_empty() {
            let user = env("ENVOY_USER").unwrap_or_else(|| "istio-proxy".into());
            proxy_uid = detect
                .uid_of(&user)
                .map(|u| u.to_string())
                .unwrap_or_else(|| "1337".into());
        }
        let mut proxy_gid = s(&flags.proxy_gid, &["PROXY_GID"], "");
        if proxy_gid.is_empty() {
            proxy_gid = proxy_uid.clone();
        }
        let mode = if s(
            &flags.interception_mode,
            &["ISTIO_INBOUND_INTERCEPTION_MODE"],
            "",
        ) == "TPROXY"
        {
            Mode::Tproxy
        } else {
            Mode::Redirect
        };
        let dual_stack = b(
            &flags.dual_stack,
            &["DUAL_STACK", "ISTIO_DUAL_STACK"],
            "--dual-stack",
        )?;
        let ipv6 = match flags.ipv6.as_str() {
            "on" => true,
            "off" => false,
            "auto" => detect.ipv6(dual_stack)?,
            other => return Err(format!("--ipv6 must be on, off or auto, not {other:?}")),
        };
        let redirect_dns = b(
            &flags.redirect_dns,
            &["REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE"],
            "--redirect-dns",
        )?;
        let capture_all_dns = b(
            &flags.capture_all_dns,
            &["CAPTURE_ALL_DNS"],
            "--capture-all-dns",
        )?;
        // Nameservers matter only for DNS capture of specific servers.
        let servers = if redirect_dns && !capture_all_dns {
            match &flags.dns_servers {
                Some(list) => split(list),
                None => detect.nameservers(),
            }
        } else {
            Vec::new()
        };
        let (dns_v6, dns_v4): (Vec<String>, Vec<String>) =
            servers.into_iter().partition(|s| s.contains(':'));
        let port = |v: String, what: &str| -> Result<String, String> {
            v.parse::<u16>()
                .map(|_| v.clone())
                .map_err(|_| format!("invalid {what} {v:?}"))
        };
        let probe_timeout = s(&flags.probe_timeout, &["PROBE_TIMEOUT"], "5s");
        Ok(Config {
            proxy_port: port(
                flags.envoy_port.clone().unwrap_or_else(|| "15001".into()),
                "--envoy-port",
            )?,
            inbound_capture_port: port(
                s(
                    &flags.inbound_capture_port,
                    &["INBOUND_CAPTURE_PORT"],
                    "15006",
                ),
                "--inbound-capture-port",
            )?,
            inbound_tunnel_port: port(
                s(
                    &flags.inbound_tunnel_port,
                    &["INBOUND_TUNNEL_PORT"],
                    "15008",
                ),
                "--inbound-tunnel-port",
            )?,
            proxy_uid,
            proxy_gid,
            mode,
            inbound_ports: s(&flags.inbound_ports, &["ISTIO_INBOUND_PORTS"], ""),
            local_exclude_ports: s(
                &flags.local_exclude_ports,
                &["ISTIO_LOCAL_EXCLUDE_PORTS"],
                "",
            ),
            exclude_interfaces: s(&flags.exclude_interfaces, &["ISTIO_EXCLUDE_INTERFACES"], ""),
            outbound_include: s(&flags.service_cidr, &["ISTIO_SERVICE_CIDR"], ""),
            outbound_exclude: s(
                &flags.service_exclude_cidr,
                &["ISTIO_SERVICE_EXCLUDE_CIDR"],
                "",
            ),
            outbound_ports_include: s(&flags.outbound_ports, &["ISTIO_OUTBOUND_PORTS"], ""),
            outbound_ports_exclude: s(
                &flags.outbound_ports_exclude,
                &["ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE"],
                "",
            ),
            virtual_interfaces: s(&flags.kube_virt_interfaces, &["KUBE_VIRT_INTERFACES"], ""),
            tproxy_mark: s(&flags.tproxy_mark, &["ISTIO_INBOUND_TPROXY_MARK"], "1337"),
            tproxy_table: s(
                &flags.tproxy_route_table,
                &["ISTIO_INBOUND_TPROXY_ROUTE_TABLE"],
                "133",
            ),
            dry_run: b(&flags.dry_run, &["DRY_RUN"], "--dry-run")?,
            redirect_dns,
            capture_all_dns,
            drop_invalid: b(
                &flags.drop_invalid,
                &["DROP_INVALID", "INVALID_DROP"],
                "--drop-invalid",
            )?,
            dual_stack,
            native_nftables: b(
                &flags.native_nftables,
                &["NATIVE_NFTABLES"],
                "--native-nftables",
            )?,
            cleanup_only: b(&flags.cleanup_only, &["CLEANUP_ONLY"], "--cleanup-only")?,
            reconcile: b(&flags.reconcile, &["RECONCILE"], "--reconcile")?,
            force_apply: b(&flags.force_apply, &["FORCE_APPLY"], "--force-apply")?,
            network_namespace: flags
                .network_namespace
                .clone()
                .or_else(|| env("NETWORK_NAMESPACE"))
                .filter(|s| !s.is_empty()),
            force_iptables_binary: flags
                .force_iptables_binary
                .clone()
                .or_else(|| env("FORCE_IPTABLES_BINARY"))
                .filter(|s| !s.is_empty()),
            probe_port: s(&flags.probe_port, &["IPTABLES_PROBE_PORT"], "15002")
                .parse()
                .map_err(|_| "invalid --iptables-probe-port".to_string())?,
            probe_timeout: parse_duration(&probe_timeout)?,
            skip_rule_apply: b(
                &flags.skip_rule_apply,
                &["SKIP_RULE_APPLY"],
                "--skip-rule-apply",
            )?,
            run_validation: b(
                &flags.run_validation,
                &["RUN_VALIDATION"],
                "--run-validation",
            )?,
            owner_groups_include: env("ISTIO_OUTBOUND_OWNER_GROUPS").unwrap_or_else(|| "*".into()),
            owner_groups_exclude: env("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE").unwrap_or_default(),
            loopback_cidr_v4: env("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR")
                .unwrap_or_else(|| "127.0.0.1/32".into()),
            ipv6,
            dns_v4,
            dns_v6,
        })
    }
}

/// Go-style durations as the probe timeout uses them (`5s`, `500ms`, `1m`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration {s:?}")),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl crate::detect::Machine for Fixed {
        fn ipv6(&self, dual_stack: bool) -> Result<bool, String> {
            Ok(dual_stack)
        }
        fn nameservers(&self) -> Vec<String> {
            vec!["10.0.0.10".into(), "fd00::10".into()]
        }
        fn uid_of(&self, user: &str) -> Option<u32> {
            (user == "envoy").then_some(101)
        }
    }

    fn resolve(args: &[&str], env: &[(&str, &str)]) -> Config {
        let mut argv = vec!["iptables-init"];
        argv.extend_from_slice(args);
        let flags = Flags::try_parse_from(argv).unwrap();
        let env: std::collections::HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::resolve(&flags, &|k| env.get(k).cloned(), &Fixed).unwrap()
    }

    #[test]
    fn environment_sets_defaults_and_flags_win() {
        let c = resolve(
            &[],
            &[
                ("ISTIO_INBOUND_PORTS", "80"),
                ("INBOUND_CAPTURE_PORT", "16006"),
                ("INVALID_DROP", "true"),
            ],
        );
        assert_eq!(
            (
                c.inbound_ports.as_str(),
                c.inbound_capture_port.as_str(),
                c.drop_invalid
            ),
            ("80", "16006", true)
        );
        let c = resolve(
            &["-b", "443", "-z", "17006", "--drop-invalid=false"],
            &[
                ("ISTIO_INBOUND_PORTS", "80"),
                ("INBOUND_CAPTURE_PORT", "16006"),
                ("INVALID_DROP", "true"),
            ],
        );
        assert_eq!(
            (
                c.inbound_ports.as_str(),
                c.inbound_capture_port.as_str(),
                c.drop_invalid
            ),
            ("443", "17006", false)
        );
    }

    #[test]
    fn uid_defaults_follow_envoy_user_and_gid_follows_uid() {
        assert_eq!(resolve(&[], &[]).proxy_uid, "1337");
        let c = resolve(&[], &[("ENVOY_USER", "envoy")]);
        assert_eq!((c.proxy_uid.as_str(), c.proxy_gid.as_str()), ("101", "101"));
        assert_eq!(resolve(&["-u", "5"], &[("PROXY_UID", "7")]).proxy_uid, "5");
    }

    #[test]
    fn dns_servers_come_from_the_machine_only_when_needed() {
        let c = resolve(&["--redirect-dns"], &[]);
        assert_eq!(
            (c.dns_v4.clone(), c.dns_v6.clone()),
            (vec!["10.0.0.10".to_string()], vec!["fd00::10".to_string()])
        );
        assert!(resolve(&["--redirect-dns", "--capture-all-dns"], &[])
            .dns_v4
            .is_empty());
        assert!(resolve(&["--redirect-dns", "--dns-servers="], &[])
            .dns_v4
            .is_empty());
        assert!(resolve(&[], &[("ISTIO_META_DNS_CAPTURE", "true")]).redirect_dns);
    }

    #[test]
    fn ipv6_knob_and_detection() {
        assert!(!resolve(&[], &[]).ipv6);
        assert!(resolve(&["--dual-stack"], &[]).ipv6);
        assert!(resolve(&["--ipv6", "on"], &[]).ipv6);
        assert!(!resolve(&["--ipv6", "off", "--dual-stack"], &[]).ipv6);
    }

    #[test]
    fn bad_values_are_errors() {
        let flags = Flags::try_parse_from(["x", "-z", "notaport"]).unwrap();
        assert!(Config::resolve(&flags, &|_| None, &Fixed).is_err());
        let flags = Flags::try_parse_from(["x"]).unwrap();
        assert!(Config::resolve(
            &flags,
            &|k| (k == "DRY_RUN").then(|| "maybe".to_string()),
            &Fixed
        )
        .is_err());
        assert!(Flags::try_parse_from(["x", "--bogus"]).is_err());
    }
}
