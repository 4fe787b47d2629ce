//! The native nftables backend: one `nft -f` transaction of `inet` tables (nat, mangle,
//! raw), each added and flushed so applying twice leaves one copy, with chains declared in a
//! fixed order and IPv4/IPv6 rules interleaved as they are generated.

use crate::rules::{Position, Rule, RuleSet, Table};
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// The nft table of a netfilter table.
pub fn table_name(t: Table) -> &'static str {
    match t {
        Table::Nat => "istio-proxy-nat",
        Table::Mangle => "istio-proxy-mangle",
        Table::Raw => "istio-proxy-raw",
    }
}

/// Chains in declaration order, with base-chain specs.
fn chains(t: Table) -> &'static [(&'static str, Option<&'static str>)] {
    match t {
        Table::Nat => &[
            (
                "prerouting",
                Some("{ type nat hook prerouting priority -100 ; }"),
            ),
            ("output", Some("{ type nat hook output priority -100 ; }")),
            ("istio-inbound", None),
            ("istio-redirect", None),
            ("istio-in-redirect", None),
            ("istio-output", None),
            ("istio-output-dns", None),
        ],
        Table::Mangle => &[
            (
                "prerouting",
                Some("{ type filter hook prerouting priority -150 ; }"),
            ),
            ("output", Some("{ type route hook output priority -150 ; }")),
            ("istio-divert", None),
            ("istio-tproxy", None),
            ("istio-inbound", None),
            ("istio-drop", None),
        ],
        Table::Raw => &[
            (
                "prerouting",
                Some("{ type filter hook prerouting priority -300 ; }"),
            ),
            (
                "output",
                Some("{ type filter hook output priority -300 ; }"),
            ),
            ("istio-inbound", None),
            ("istio-output-dns", None),
        ],
    }
}

/// `ISTIO_OUTPUT_DNS` -> `istio-output-dns`.
pub fn chain_name(iptables: &str) -> String {
    iptables.to_ascii_lowercase().replace('_', "-")
}

fn included(r: &Rule, ipv6: bool) -> bool {
    r.family.v4 || (r.family.v6 && ipv6)
}

/// The transaction text.
pub fn transaction(rs: &RuleSet, ipv6: bool) -> String {
    let mut out = String::new();
    for table in [Table::Nat, Table::Mangle, Table::Raw] {
        let rules: Vec<&Rule> = rs
            .rules
            .iter()
            .filter(|r| r.table == table && included(r, ipv6))
            .collect();
        if rules.is_empty() {
            continue;
        }
        let t = table_name(table);
        out.push_str(&format!("add table inet {t}\nflush table inet {t}\n"));
        for (name, spec) in chains(table) {
            if rules.iter().any(|r| chain_name(r.chain) == *name) {
                match spec {
                    Some(s) => out.push_str(&format!("add chain inet {t} {name} {s}\n")),
                    None => out.push_str(&format!("add chain inet {t} {name}\n")),
                }
            }
        }
        let mut counts: HashMap<String, u32> = HashMap::new();
        for r in rules {
            let chain = chain_name(r.chain);
            let count = counts.entry(chain.clone()).or_default();
            match r.position {
                Position::Insert(n) if n - 1 < *count => out.push_str(&format!(
                    "insert rule inet {t} {chain} index {} {}\n",
                    n - 1,
                    r.nft
                )),
                _ => out.push_str(&format!("add rule inet {t} {chain} {}\n", r.nft)),
            }
            *count += 1;
        }
    }
    out
}

/// The transaction that removes our tables (`delete` of a missing table fails, so only
/// existing ones are named).
pub fn cleanup_transaction(existing: &[String]) -> String {
    [Table::Nat, Table::Mangle, Table::Raw]
        .iter()
        .map(|t| table_name(*t))
        .filter(|t| existing.iter().any(|e| e == t))
        .map(|t| format!("delete table inet {t}\n"))
        .collect()
}

/// Our tables present in the kernel.
pub fn existing_tables() -> Result<Vec<String>, String> {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft list tables failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("table inet ").map(str::to_string))
        .filter(|t| t.starts_with("istio-proxy-"))
        .collect())
}

/// Runs `nft -f -` (with `-c` to only check) on a transaction.
pub fn run(transaction: &str, check_only: bool) -> Result<(), String> {
    if transaction.is_empty() {
        return Ok(());
    }
    let args: &[&str] = if check_only {
        &["-c", "-f", "-"]
    } else {
        &["-f", "-"]
    };
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    // A tool that fails early may close its input: its exit status and message tell why.
    let _ = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(transaction.as_bytes());
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft -f failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}
