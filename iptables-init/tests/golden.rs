//! Golden tests: every case of ../shared/fixtures/istio/iptables-cases.md (sections 4, 5
//! and 6), run through the real binary's dry run with that row's flags, environment, IPv6
//! setting and nameservers, compared with Istio's golden output.

use std::path::PathBuf;
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/istio")
}

/// A row of a case table.
#[derive(Debug)]
struct Case {
    golden: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    ipv6: bool,
    nameservers: Vec<String>,
}

/// Splits a POSIX shell command line (single quotes only, as the table uses).
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for ch in s.chars() {
        match ch {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Parses the case table of a section ("## 4.", "## 5.", "## 6.").
fn cases(section: &str) -> Vec<Case> {
    let doc = std::fs::read_to_string(fixtures().join("iptables-cases.md")).expect("cases file");
    let start = doc.find(section).expect("section");
    let body = &doc[start..];
    let end = body[3..].find("\n## ").map(|i| i + 3).unwrap_or(body.len());
    body[..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split(" | ").collect();
            let golden = backticked(cols[0]).first()?.clone();
            let flags = backticked(cols[1]).first()?.clone();
            let extra = cols[2];
            let ipv6 = extra.contains("IPv6 **on**");
            let env: Vec<(String, String)> = backticked(extra)
                .into_iter()
                .filter_map(|w| {
                    w.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .filter(|(k, _)| {
                    k.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                })
                .collect();
            let nameservers = match extra.split_once("nameservers:") {
                Some((_, rest)) => backticked(rest.split(';').next().unwrap_or("")),
                None => vec![],
            };
            Some(Case {
                golden,
                args: shell_words(&flags),
                env,
                ipv6,
                nameservers,
            })
        })
        .collect()
}

fn run(case: &Case) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_iptables-init"))
        .env_clear()
        .envs(case.env.iter().cloned())
        .args(&case.args)
        .arg("--ipv6")
        .arg(if case.ipv6 { "on" } else { "off" })
        .arg(format!("--dns-servers={}", case.nameservers.join(",")))
        .output()
        .expect("run iptables-init");
    assert!(
        out.status.success(),
        "{}: {}",
        case.golden,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn without_markers(s: &str) -> String {
    s.lines()
        .filter(|l| *l != "iptables-save" && *l != "ip6tables-save")
        .map(|l| format!("{l}\n"))
        .collect()
}

fn check(section: &str, dir: &str, expected_cases: usize, compare: impl Fn(&str, &str) -> bool) {
    let cases = cases(section);
    assert_eq!(cases.len(), expected_cases, "cases parsed from {section}");
    let mut failures = Vec::new();
    for case in &cases {
        let golden =
            std::fs::read_to_string(fixtures().join(dir).join(&case.golden)).expect("golden");
        let got = run(case);
        if !compare(&got, &golden) {
            failures.push(format!("--- {}\n{}", case.golden, diff(&golden, &got)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn diff(want: &str, got: &str) -> String {
    let w: Vec<&str> = want.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    let first = w
        .iter()
        .zip(g.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(w.len().min(g.len()));
    format!(
        "first difference at line {}:\n  want: {:?}\n  got:  {:?}",
        first + 1,
        w.get(first),
        g.get(first)
    )
}

#[test]
fn iptables_goldens() {
    // Byte for byte, including the iptables-save / ip6tables-save marker lines.
    check("## 4. iptables backend", "iptables", 27, |got, golden| {
        got == golden
    });
}

#[test]
fn iptables_goldens_without_markers() {
    check("## 4. iptables backend", "iptables", 27, |got, golden| {
        without_markers(got) == without_markers(golden)
    });
}

#[test]
fn nftables_goldens() {
    check("## 5. nftables backend", "nftables", 28, |got, golden| {
        got.trim() == golden.trim()
    });
}

/// CNI goldens are per-table blocks (marker lines dropped), keyed and sorted by table.
fn tables(s: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for block in without_markers(s).split_inclusive("COMMIT\n") {
        if let Some(name) = block.lines().next().and_then(|l| l.strip_prefix("* ")) {
            out.insert(name.to_string(), block.to_string());
        }
    }
    out
}

#[test]
fn cni_goldens() {
    let cases: Vec<Case> = cases("## 6. CNI plugin")
        .into_iter()
        .filter(|c| c.golden != "status-ports.txt.golden")
        .collect();
    assert_eq!(cases.len(), 8);
    let mut failures = Vec::new();
    for case in &cases {
        let golden =
            std::fs::read_to_string(fixtures().join("cni").join(&case.golden)).expect("golden");
        let got = run(case);
        if tables(&got) != tables(&golden) {
            failures.push(format!(
                "--- {}\n{}",
                case.golden,
                diff(&golden, &without_markers(&got))
            ));
        }
        let sorted: String = tables(&got).into_values().collect();
        assert_eq!(
            sorted, golden,
            "{}: byte for byte after sorting tables",
            case.golden
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shell_words_handle_quotes() {
    assert_eq!(
        shell_words("-b '' -i '*' -d '6000,7000,'"),
        vec!["-b", "", "-i", "*", "-d", "6000,7000,"]
    );
}
