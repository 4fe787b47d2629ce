//! The iptables backend: `iptables-restore --noflush` input per address family (tables in
//! alphabetical order, `-N` for our chains, the rules, `COMMIT`), the dry-run transcript
//! with istio-iptables' `iptables-save` marker lines, and applying/cleaning up.

use crate::rules::{is_builtin, Family, Position, Rule, RuleSet, Table, OWN_CHAINS};
use std::io::Write;
use std::process::{Command, Stdio};

/// An address family of the iptables backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ip {
    /// iptables.
    V4,
    /// ip6tables.
    V6,
}

impl Ip {
    fn wants(self, f: Family) -> bool {
        match self {
            Ip::V4 => f.v4,
            Ip::V6 => f.v6,
        }
    }

    /// The `*-save` program name (also the dry-run marker line).
    pub fn save(self) -> &'static str {
        match self {
            Ip::V4 => "iptables-save",
            Ip::V6 => "ip6tables-save",
        }
    }

    /// The main program name.
    pub fn program(self) -> &'static str {
        match self {
            Ip::V4 => "iptables",
            Ip::V6 => "ip6tables",
        }
    }
}

fn jump_target(args: &str) -> Option<&str> {
    let mut it = args.split_whitespace().rev();
    let last = it.next()?;
    (it.next() == Some("-j")).then_some(last)
}

/// The restore input for one family ("" when it has no rules).
pub fn restore_input(rs: &RuleSet, ip: Ip) -> String {
    let mut out = String::new();
    for table in [Table::Mangle, Table::Nat, Table::Raw] {
        let rules: Vec<&Rule> = rs
            .rules
            .iter()
            .filter(|r| r.table == table && ip.wants(r.family))
            .collect();
        if rules.is_empty() {
            continue;
        }
        out.push_str(&format!("* {}\n", table.name()));
        let mut chains: Vec<&str> = Vec::new();
        for r in &rules {
            if !is_builtin(r.chain) && !chains.contains(&r.chain) {
                chains.push(r.chain);
            }
        }
        for r in &rules {
            if let Some(t) = jump_target(&r.iptables) {
                if !is_builtin(t) && !chains.contains(&t) && t.starts_with("ISTIO_") {
                    chains.push(t);
                }
            }
        }
        for c in chains {
            out.push_str(&format!("-N {c}\n"));
        }
        for r in rules {
            match r.position {
                Position::Append => out.push_str(&format!("-A {} {}\n", r.chain, r.iptables)),
                Position::Insert(n) => {
                    out.push_str(&format!("-I {} {n} {}\n", r.chain, r.iptables))
                }
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// The dry-run transcript, line for line what istio-iptables' recorder writes: the state
/// checks of both families, the restore input(s), then the final dump(s).
pub fn dry_run(rs: &RuleSet, ipv6: bool) -> String {
    let mut out = String::from("iptables-save\nip6tables-save\n");
    out.push_str(&restore_input(rs, Ip::V4));
    if ipv6 {
        out.push_str(&restore_input(rs, Ip::V6));
    }
    out.push_str("iptables-save\n");
    if ipv6 {
        out.push_str("ip6tables-save\n");
    }
    out
}

/// The commands that remove everything we create in one family: jumps from built-in
/// chains into our chains, our rules in built-in chains, then our chains.
pub fn cleanup_input(current_save: &str) -> String {
    let mut out = String::new();
    let mut table = None;
    let mut deletes: Vec<String> = Vec::new();
    let mut chains: Vec<String> = Vec::new();
    let flush = |out: &mut String,
                 table: &Option<String>,
                 deletes: &mut Vec<String>,
                 chains: &mut Vec<String>| {
        if let Some(t) = table {
            if !deletes.is_empty() || !chains.is_empty() {
                out.push_str(&format!("*{t}\n"));
                for d in deletes.drain(..) {
                    out.push_str(&d);
                    out.push('\n');
                }
                for c in chains.iter() {
                    out.push_str(&format!("-F {c}\n"));
                }
                for c in chains.drain(..) {
                    out.push_str(&format!("-X {c}\n"));
                }
                out.push_str("COMMIT\n");
            }
        }
    };
    for line in current_save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            flush(&mut out, &table, &mut deletes, &mut chains);
            table = Some(t.to_string());
        } else if let Some(chain) = line.strip_prefix(':') {
            let name = chain.split_whitespace().next().unwrap_or("");
            if OWN_CHAINS.contains(&name) {
                chains.push(name.to_string());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap_or("");
            if is_builtin(chain) && ours(rule) {
                deletes.push(format!("-D {rule}"));
            }
        }
    }
    flush(&mut out, &table, &mut deletes, &mut chains);
    out
}

/// Whether a rule in a built-in chain is one of ours (it jumps to our chains, or is one of
/// the built-in-chain rules we add).
fn ours(rule: &str) -> bool {
    OWN_CHAINS.iter().any(|c| rule.contains(&format!("-j {c}")))
        || rule.contains("--set-mark 1338")
        || rule.contains("CONNMARK --save-mark")
        || rule.contains("CONNMARK --restore-mark")
        || (rule.contains("-o lo") && rule.contains("--mark") && rule.ends_with("-j RETURN"))
}

fn run_with_input(program: &str, args: &[&str], input: &str) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    // A tool that fails early may close its input: its exit status and message tell why.
    let _ = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes());
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A tool of a family and flavour: `tool(V6, "-legacy", "-save")` is
/// `ip6tables-legacy-save`; an empty flavour is the distribution's default.
pub fn tool(ip: Ip, flavour: &str, suffix: &str) -> String {
    format!("{}{flavour}{suffix}", ip.program())
}

/// Current ruleset of a family (`iptables-save`).
pub fn save(ip: Ip, flavour: &str) -> Result<String, String> {
    let program = tool(ip, flavour, "-save");
    let out = Command::new(&program)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes our chains and jumps from one family (no-op when there are none).
pub fn cleanup(ip: Ip, prefix: &str) -> Result<(), String> {
    let input = cleanup_input(&save(ip, prefix)?);
    if input.is_empty() {
        return Ok(());
    }
    run_with_input(&tool(ip, prefix, "-restore"), &["--noflush"], &input).map(|_| ())
}

/// Checks a restore input against the kernel without applying it.
pub fn test(ip: Ip, prefix: &str, input: &str) -> Result<(), String> {
    run_with_input(
        &tool(ip, prefix, "-restore"),
        &["--test", "--noflush"],
        input,
    )
    .map(|_| ())
}

/// Applies the ruleset to one family: previous rules are removed first, so applying twice
/// leaves one copy and a half-applied state is repaired.
pub fn apply(rs: &RuleSet, ip: Ip, prefix: &str) -> Result<(), String> {
    cleanup(ip, prefix)?;
    let input = restore_input(rs, ip);
    if input.is_empty() {
        return Ok(());
    }
    run_with_input(&tool(ip, prefix, "-restore"), &["--noflush"], &input).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_removes_only_ours() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:ISTIO_OUTPUT - [0:0]\n:KEEP - [0:0]\n-A OUTPUT -j ISTIO_OUTPUT\n-A OUTPUT -j KEEP\n-A ISTIO_OUTPUT -j RETURN\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
        assert_eq!(
            cleanup_input(save),
            "*nat\n-D OUTPUT -j ISTIO_OUTPUT\n-F ISTIO_OUTPUT\n-X ISTIO_OUTPUT\nCOMMIT\n"
        );
        assert_eq!(cleanup_input("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"), "");
    }
}
