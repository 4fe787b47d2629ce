//! What the machine says: IPv6 presence (the way istio-iptables decides it), nameservers
//! from /etc/resolv.conf, user ids, and which packet-filter backends and kernel features
//! are usable.

use std::net::IpAddr;
use std::process::Command;

/// Facts the configuration needs from the machine (a trait so tests can pin them).
pub trait Machine {
    /// Whether IPv6 rules are needed: the first non-loopback, non-link-local address is
    /// IPv6 (any address with `dual_stack`). No such address at all is an error.
    fn ipv6(&self, dual_stack: bool) -> Result<bool, String>;
    /// Nameservers from /etc/resolv.conf, canonically formatted, in file order.
    fn nameservers(&self) -> Vec<String>;
    /// The uid of a user name.
    fn uid_of(&self, user: &str) -> Option<u32>;
}

/// The real machine.
#[derive(Debug, Default)]
pub struct Host;

fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
        IpAddr::V6(v6) => !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

impl Machine for Host {
    fn ipv6(&self, dual_stack: bool) -> Result<bool, String> {
        let addrs: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
            .map_err(|e| format!("cannot list interface addresses: {e}"))?
            .filter_map(|a| a.address)
            .filter_map(|a| {
                if let Some(v4) = a.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .filter(usable)
            .collect();
        let first = addrs.first().ok_or("no non-loopback address found on any interface; cannot decide IPv4 vs IPv6 (use --ipv6 on|off)")?;
        Ok(if dual_stack {
            addrs.iter().any(IpAddr::is_ipv6)
        } else {
            first.is_ipv6()
        })
    }

    fn nameservers(&self) -> Vec<String> {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        parse_resolv_conf(&text)
    }

    fn uid_of(&self, user: &str) -> Option<u32> {
        nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    }
}

/// `nameserver` lines of a resolv.conf, each address re-formatted canonically.
pub fn parse_resolv_conf(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some("nameserver"))
                .then(|| parts.next())
                .flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| ip.to_string())
        .collect()
}

/// Whether a program runs and exits 0.
pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Rules (`-A` lines) a flavour's `iptables-save` shows; `None` when the tool is missing.
fn rule_count(save_tool: &str) -> Option<usize> {
    let out = Command::new(save_tool).output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("-A "))
            .count()
    })
}

/// Picks the iptables flavour (`-legacy`, `-nft`, or "" for the distribution default):
/// the one that already holds rules (kubelet's and the CNI's live there), preferring
/// nft-backed iptables when both or neither do. Errors name what is missing.
pub fn iptables_flavour() -> Result<String, String> {
    let legacy = rule_count("iptables-legacy-save");
    let nft = rule_count("iptables-nft-save");
    Ok(match (legacy, nft) {
        (Some(l), Some(0)) if l > 0 => "-legacy".into(),
        (Some(l), None) if l > 0 => "-legacy".into(),
        (_, Some(_)) => "-nft".into(),
        (Some(_), None) => "-legacy".into(),
        (None, None) if runs("iptables", &["--version"]) => String::new(),
        (None, None) => {
            return Err(
                "iptables is not installed (neither iptables-nft nor iptables-legacy found)".into(),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_is_parsed_and_canonicalised() {
        let t = "# c\nsearch x\nnameserver 127.0.0.53\nnameserver ::127.0.0.53\nnameserver fe80::1%eth0\noptions ndots:5\n";
        assert_eq!(
            parse_resolv_conf(t),
            vec!["127.0.0.53", "::7f00:35", "fe80::1"]
        );
    }
}
