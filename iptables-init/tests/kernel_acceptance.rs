//! The generated rules load in a real kernel: every golden case's iptables input passes
//! `iptables-restore --test --noflush` / `ip6tables-restore --test --noflush`, and every
//! nftables transaction passes `nft -c -f -`, inside a throwaway network namespace.

mod common;

const CASES: &[&str] = &[
    "-u 1337 -g 1337",
    "-u 3,4 -g 1,2 -x 1.1.0.0/16 -i 9.9.0.0/16 --redirect-dns --dns-servers=127.0.0.53",
    "-u 1337 -g 1337 -m TPROXY -b * -x 1.1.0.0/16 -i 9.9.0.0/16 --redirect-dns -c not-istio-nic --dns-servers=127.0.0.53",
    "-u 1337 -g 1337 -b 4000,5000 -d 6000,7000 -k eth0,eth1 -x 2001:db8::/32 -i 2001:db8::/32",
    "-u 1337 -g 1337 -b * -d 15020,15021,15090 -o 15020 -i *",
    "-u 1337 -g 1337 -b 32000,31000 -m TPROXY",
    "-u 1337 -g 1337 -q 32000,31000 --drop-invalid",
    "-u 3,4 -g 1,2 --redirect-dns --capture-all-dns -b *",
    "-u 1337 -g 1337 -k eth1,eth2 -i 10.0.0.0/8",
];

fn args(case: &str, ipv6: bool, nft: bool) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-n".into(),
        "--ipv6".into(),
        if ipv6 { "on" } else { "off" }.into(),
    ];
    a.extend(case.split_whitespace().map(str::to_string));
    if !case.contains("--dns-servers") {
        a.push("--dns-servers=".into());
    }
    if nft {
        a.push("--native-nftables".into());
    }
    a
}

fn strip(s: &str) -> String {
    s.lines()
        .filter(|l| *l != "iptables-save" && *l != "ip6tables-save")
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn generated_rules_load_in_the_kernel() {
    let Some(ns) = common::Netns::create("ipt-accept") else {
        return;
    };
    for case in CASES {
        let v4 = strip(&common::dry_run(
            &args(case, false, false)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        ));
        let both = strip(&common::dry_run(
            &args(case, true, false)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        ));
        let v6 = both
            .strip_prefix(&v4)
            .expect("the IPv4 part does not depend on IPv6")
            .to_string();
        for (tool, input) in [("iptables-restore", &v4), ("ip6tables-restore", &v6)] {
            let out = ns.with_input(tool, &["--test", "--noflush"], input);
            assert!(
                out.status.success(),
                "{tool} rejected case `{case}`: {}\n{input}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let nft = common::dry_run(
            &args(case, true, true)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        let out = ns.with_input("nft", &["-c", "-f", "-"], &nft);
        assert!(
            out.status.success(),
            "nft rejected case `{case}`: {}\n{nft}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
