//! Real traffic through the applied rules: an "app" namespace and a "peer" namespace on a
//! veth pair; the rules are applied in the app namespace; a stub proxy (netprobe) as uid 1337
//! listens on 15001/15006 (and UDP 15053) and answers with the original destination it read
//! (SO_ORIGINAL_DST, or the local address under TPROXY). Both backends, IPv4 and IPv6.

mod common;
use common::Netns;

/// The test helper binary (iptables-init/examples/netprobe.rs), built once on demand (a
/// filtered `cargo test --test ...` does not build examples).
fn netprobe() -> String {
    static BUILT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let ok = std::process::Command::new(cargo)
                .args([
                    "build",
                    "-q",
                    "-p",
                    "iptables-init",
                    "--example",
                    "netprobe",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "building the netprobe example failed");
            let exe = std::path::PathBuf::from(common::bin());
            exe.parent()
                .expect("target dir")
                .join("examples/netprobe")
                .display()
                .to_string()
        })
        .clone()
}

struct Pods {
    app: Netns,
    peer: Netns,
}

fn pods() -> Option<Pods> {
    let mut app = Netns::create("ipt-app")?;
    let mut peer = Netns::create("ipt-peer")?;
    let (a, p) = (
        format!("va{}", std::process::id() % 100000),
        format!("vp{}", std::process::id() % 100000),
    );
    app.sh(&format!(
        "ip link add {a} type veth peer name {p} && ip link set {p} netns {}",
        peer.name
    ));
    app.sh(&format!("ip addr add 10.77.0.1/24 dev {a} && ip -6 addr add fd77::1/64 dev {a} nodad && ip link set {a} up"));
    peer.sh(&format!("ip addr add 10.77.0.2/24 dev {p} && ip addr add 10.77.0.3/24 dev {p} && ip -6 addr add fd77::2/64 dev {p} nodad && ip link set {p} up"));
    let np = netprobe();
    // Like the proxy in TPROXY mode, the stub keeps CAP_NET_ADMIN (for IP_TRANSPARENT).
    app.spawn_sh(&format!("exec setpriv --reuid 1337 --regid 1337 --clear-groups --inh-caps +net_admin --ambient-caps +net_admin {np} stub"));
    app.spawn_sh(&format!(
        "exec {np} server app 10.77.0.1:8000 10.77.0.1:8001 [fd77::1]:8000"
    ));
    peer.spawn_sh(&format!(
        "exec {np} server peer 10.77.0.2:8080 10.77.0.2:9090 10.77.0.3:8080 [fd77::2]:8080"
    ));
    let pods = Pods { app, peer };
    // Wait for the servers (before any rule exists, so connections go straight through).
    for _ in 0..100 {
        if pods.call(&pods.app, "", "10.77.0.2:8080", "") == "peer 8080"
            && pods.call(&pods.peer, "", "10.77.0.1:8000", "") == "app 8000"
        {
            return Some(pods);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("test servers did not come up");
}

impl Pods {
    /// Connects from `ns` (as `who`: "", "uid" or "gid" 1337) and returns the first line.
    fn call(&self, ns: &Netns, who: &str, target: &str, extra: &str) -> String {
        let prefix = match who {
            "uid" => "setpriv --reuid 1337 --regid 0 --clear-groups ",
            "gid" => "setpriv --reuid 4242 --regid 1337 --clear-groups ",
            _ => "",
        };
        let out = ns.try_sh(&format!("{prefix}{} client {target} {extra}", netprobe()));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn apply(&self, args: &str) {
        let line = format!("{} --ipv6 on {args}", common::bin());
        let out = self.app.try_sh(&line);
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn check_redirect_mode(backend: &str) {
    let Some(p) = pods() else { return };
    let flags = format!("{backend} -u 1337 -g 1337 -b '*' -d 8001 -i '*' -x 10.77.0.3/32 -o 9090 --redirect-dns --dns-servers=10.77.0.2");
    p.apply(&flags);
    // Outbound capture, with the original destination visible to the proxy.
    assert_eq!(
        p.call(&p.app, "", "10.77.0.2:8080", ""),
        "15001 10.77.0.2:8080"
    );
    assert_eq!(
        p.call(&p.app, "", "[fd77::2]:8080", ""),
        "15001 [fd77::2]:8080"
    );
    // The proxy's own traffic (uid 1337, or gid 1337) goes straight out.
    assert_eq!(p.call(&p.app, "uid", "10.77.0.2:8080", ""), "peer 8080");
    assert_eq!(p.call(&p.app, "gid", "10.77.0.2:8080", ""), "peer 8080");
    // Excluded outbound port and CIDR bypass the proxy.
    assert_eq!(p.call(&p.app, "", "10.77.0.2:9090", ""), "peer 9090");
    assert_eq!(p.call(&p.app, "", "10.77.0.3:8080", ""), "peer 8080");
    // Inbound capture, and the excluded inbound port.
    assert_eq!(
        p.call(&p.peer, "", "10.77.0.1:8000", ""),
        "15006 10.77.0.1:8000"
    );
    assert_eq!(
        p.call(&p.peer, "", "[fd77::1]:8000", ""),
        "15006 [fd77::1]:8000"
    );
    assert_eq!(p.call(&p.peer, "", "10.77.0.1:8001", ""), "app 8001");
    // 127.0.0.6 is the inbound passthrough source: not captured.
    assert_eq!(
        p.call(&p.app, "", "10.77.0.1:8000", "127.0.0.6"),
        "app 8000"
    );
    // Hairpin: the app calling its own pod IP is not captured; the proxy (uid 1337) calling
    // the pod IP goes back through the inbound capture.
    assert_eq!(p.call(&p.app, "", "10.77.0.1:8000", ""), "app 8000");
    assert_eq!(
        p.call(&p.app, "uid", "10.77.0.1:8000", ""),
        "15006 10.77.0.1:8000"
    );
    // DNS to the configured nameserver is captured by the agent port; the proxy's own is not.
    assert_eq!(p.call(&p.app, "", "10.77.0.2:53", "udp"), "dns-captured");
    assert_eq!(p.call(&p.app, "uid", "10.77.0.2:53", "udp"), "peer-dns");
}

#[test]
fn redirect_mode_with_iptables() {
    check_redirect_mode("");
}

#[test]
fn redirect_mode_with_nftables() {
    check_redirect_mode("--native-nftables");
}

fn check_tproxy(backend: &str) {
    let Some(p) = pods() else { return };
    p.apply(&format!(
        "{backend} -u 1337 -g 1337 -m TPROXY -b 8000 -i '*'"
    ));
    assert_eq!(
        p.call(&p.peer, "", "10.77.0.1:8000", ""),
        "15006 10.77.0.1:8000"
    );
    assert_eq!(
        p.call(&p.peer, "", "10.77.0.1:8001", ""),
        "app 8001",
        "ports outside -b are not captured"
    );
    assert_eq!(
        p.call(&p.app, "", "10.77.0.2:8080", ""),
        "15001 10.77.0.2:8080"
    );
    let rules = String::from_utf8_lossy(&p.app.try_sh("ip rule show").stdout).to_string();
    assert!(rules.contains("fwmark 0x539 lookup 133"), "{rules}");
}

#[test]
fn tproxy_mode_with_iptables() {
    check_tproxy("");
}

#[test]
fn tproxy_mode_with_nftables() {
    check_tproxy("--native-nftables");
}

#[test]
fn network_namespace_flag_applies_inside_the_namespace() {
    let Some(p) = pods() else { return };
    let path = format!("/var/run/netns/{}", p.app.name);
    let out = std::process::Command::new(common::bin())
        .args([
            "--network-namespace",
            &path,
            "--ipv6",
            "off",
            "-u",
            "1337",
            "-g",
            "1337",
            "-i",
            "*",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        p.call(&p.app, "", "10.77.0.2:8080", ""),
        "15001 10.77.0.2:8080",
        "rules were applied in the app namespace"
    );
    let host = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&host.stdout).contains("ISTIO_OUTPUT"),
        "and not in the test's own namespace"
    );
}

#[test]
fn applying_twice_keeps_one_copy_and_cleanup_removes_only_ours() {
    let Some(p) = pods() else { return };
    // Someone else's rules must survive our cleanup.
    p.app.sh(
        "iptables -t nat -N KEEP && iptables -t nat -A OUTPUT -j KEEP && nft add table inet keep",
    );
    for backend in ["", "--native-nftables"] {
        p.apply(&format!("{backend} -u 1337 -g 1337 -b '*' -i '*'"));
        p.apply(&format!("{backend} -u 1337 -g 1337 -b '*' -i '*'"));
    }
    let save = p.app.sh("iptables-save -t nat");
    assert_eq!(
        save.matches("-A OUTPUT -j ISTIO_OUTPUT").count(),
        1,
        "{save}"
    );
    assert_eq!(
        save.matches("-A PREROUTING -p tcp -j ISTIO_INBOUND")
            .count(),
        1,
        "{save}"
    );
    let tables = p.app.sh("nft list tables");
    assert_eq!(
        tables.matches("table inet istio-proxy-nat").count(),
        1,
        "{tables}"
    );
    assert_eq!(
        p.app
            .sh("nft list table inet istio-proxy-nat")
            .matches("jump istio-output")
            .count(),
        1
    );
    // A half-applied state (our chain present, the jump missing) is repaired by the next run.
    p.app.sh("iptables -t nat -D OUTPUT -j ISTIO_OUTPUT");
    p.apply("-u 1337 -g 1337 -b '*' -i '*'");
    assert_eq!(
        p.app
            .sh("iptables-save -t nat")
            .matches("-A OUTPUT -j ISTIO_OUTPUT")
            .count(),
        1
    );
    for backend in ["", "--native-nftables"] {
        p.apply(&format!("{backend} --cleanup-only"));
    }
    let save = p.app.sh("iptables-save -t nat; ip6tables-save -t nat");
    assert!(!save.contains("ISTIO_"), "{save}");
    assert!(save.contains("-A OUTPUT -j KEEP"), "{save}");
    let tables = p.app.sh("nft list tables");
    assert!(!tables.contains("istio-proxy"), "{tables}");
    assert!(tables.contains("table inet keep"), "{tables}");
    assert_eq!(
        p.call(&p.app, "", "10.77.0.2:8080", ""),
        "peer 8080",
        "traffic flows directly again"
    );
}
