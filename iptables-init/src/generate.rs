//! From a [`Config`] to the ordered [`RuleSet`]: the same rules istio-iptables writes, in
//! the same order, each with its iptables and nftables form.
//!
//! Order of sections: excluded interfaces, virtual interfaces, invalid-packet drop, the
//! fixed nat chains, inbound capture (REDIRECT or TPROXY), the jump to ISTIO_OUTPUT,
//! outbound port exclusions, the 127.0.0.6 passthrough source, per-uid and per-gid rules,
//! owner groups, DNS capture, TPROXY marks, then outbound CIDR and port capture.

use crate::config::{split, Config, Mode};
use crate::rules::{Family, Position, RuleSet, Table};

const OUTBOUND_MARK: &str = "1338";
const DNS_PORT: &str = "15053";
const PASSTHROUGH_V4: &str = "127.0.0.6/32";
const PASSTHROUGH_V6: &str = "::6/128";
const LOOPBACK_V6: &str = "::1/128";

/// Outbound CIDRs split by family; `all` for `*`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Cidrs {
    all: bool,
    v4: Vec<String>,
    v6: Vec<String>,
}

fn cidrs(list: &str, what: &str) -> Result<Cidrs, String> {
    let mut out = Cidrs::default();
    for item in split(list) {
        if item == "*" {
            out.all = true;
            continue;
        }
        let (addr, len) = item
            .split_once('/')
            .ok_or_else(|| format!("{what}: {item:?} is not a CIDR (address/prefix)"))?;
        let ip: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("{what}: invalid address in {item:?}"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if !len.parse::<u8>().is_ok_and(|l| l <= max) {
            return Err(format!("{what}: invalid prefix length in {item:?}"));
        }
        if ip.is_ipv4() {
            out.v4.push(item)
        } else {
            out.v6.push(item)
        }
    }
    Ok(out)
}

fn is_loopback_cidr(c: &str) -> bool {
    c.split('/')
        .next()
        .and_then(|a| a.parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

fn ports(list: &str, what: &str) -> Result<Vec<String>, String> {
    split(list)
        .into_iter()
        .map(|p| {
            if p.parse::<u16>().is_ok() {
                Ok(p)
            } else {
                Err(format!("{what}: invalid port {p:?}"))
            }
        })
        .collect()
}

/// Emits a rule in both families with the v4 and v6 addresses substituted for `{}`.
struct Versioned<'a> {
    v4: &'a str,
    v6: &'a str,
}

impl Versioned<'_> {
    fn push(
        &self,
        rs: &mut RuleSet,
        table: Table,
        chain: &'static str,
        position: Position,
        iptables: &str,
        nft: &str,
    ) {
        rs.push(
            table,
            chain,
            position,
            Family::V4,
            iptables.replace("{}", self.v4),
            nft.replace("{}", self.v4).replace("{ip}", "ip"),
        );
        rs.push(
            table,
            chain,
            position,
            Family::V6,
            iptables.replace("{}", self.v6),
            nft.replace("{}", self.v6).replace("{ip}", "ip6"),
        );
    }
}

/// Builds the ruleset.
pub fn generate(c: &Config) -> Result<RuleSet, String> {
    let mut rs = RuleSet::default();
    let exclude = cidrs(&c.outbound_exclude, "-x/--istio-service-exclude-cidr")?;
    let include = cidrs(&c.outbound_include, "-i/--istio-service-cidr")?;
    let inbound_ports = c.inbound_ports.trim();
    let inbound_list = if inbound_ports == "*" {
        Vec::new()
    } else {
        ports(inbound_ports, "-b/--istio-inbound-ports")?
    };
    let local_excludes = ports(&c.local_exclude_ports, "-d/--istio-local-exclude-ports")?;
    let outbound_ports = ports(&c.outbound_ports_include, "-q/--istio-outbound-ports")?;
    let outbound_port_excludes = ports(
        &c.outbound_ports_exclude,
        "-o/--istio-local-outbound-ports-exclude",
    )?;
    let uids = split(&c.proxy_uid);
    let gids = split(&c.proxy_gid);
    let tproxy = c.mode == Mode::Tproxy;
    let (mark, tunnel) = (&c.tproxy_mark, &c.inbound_tunnel_port);
    // Without nameservers, --redirect-dns quietly does nothing (istio-iptables warns only).
    let dns = c.redirect_dns && (c.capture_all_dns || !c.dns_v4.is_empty() || !c.dns_v6.is_empty());
    let lo = Versioned {
        v4: &c.loopback_cidr_v4,
        v6: LOOPBACK_V6,
    };
    let passthrough = Versioned {
        v4: PASSTHROUGH_V4,
        v6: PASSTHROUGH_V6,
    };
    let loopback_included = include
        .v4
        .iter()
        .chain(include.v6.iter())
        .any(|c| is_loopback_cidr(c));
    use Position::Append as A;
    use Table::{Mangle, Nat};

    for iface in split(&c.exclude_interfaces) {
        let tables: &[Table] = if tproxy { &[Mangle, Nat] } else { &[Nat] };
        for t in tables {
            rs.append(
                *t,
                "PREROUTING",
                format!("-i {iface} -j RETURN"),
                format!("iifname {iface} counter return"),
            );
            rs.append(
                *t,
                "OUTPUT",
                format!("-o {iface} -j RETURN"),
                format!("oifname {iface} counter return"),
            );
        }
    }
    for iface in split(&c.virtual_interfaces) {
        rs.push(
            Nat,
            "PREROUTING",
            Position::Insert(1),
            Family::ALL,
            format!("-i {iface} -j RETURN"),
            format!("iifname {iface} counter return"),
        );
    }
    if c.drop_invalid {
        rs.append(
            Mangle,
            "PREROUTING",
            "-m conntrack --ctstate INVALID -j ISTIO_DROP",
            "meta l4proto tcp ct state invalid counter jump istio-drop",
        );
        rs.append(Mangle, "ISTIO_DROP", "-j DROP", "counter drop");
    }
    rs.append(
        Nat,
        "ISTIO_INBOUND",
        format!("-p tcp --dport {tunnel} -j RETURN"),
        format!("meta l4proto tcp tcp dport {tunnel} counter return"),
    );
    rs.append(
        Nat,
        "ISTIO_REDIRECT",
        format!("-p tcp -j REDIRECT --to-ports {}", c.proxy_port),
        format!("meta l4proto tcp counter redirect to :{}", c.proxy_port),
    );
    rs.append(
        Nat,
        "ISTIO_IN_REDIRECT",
        format!("-p tcp -j REDIRECT --to-ports {}", c.inbound_capture_port),
        format!(
            "meta l4proto tcp counter redirect to :{}",
            c.inbound_capture_port
        ),
    );

    if !inbound_ports.is_empty() {
        let capture_port = &c.inbound_capture_port;
        let table = if tproxy { Mangle } else { Nat };
        if tproxy {
            rs.append(
                Mangle,
                "ISTIO_DIVERT",
                format!("-j MARK --set-mark {mark}"),
                format!("counter meta mark set {mark}"),
            );
            rs.append(Mangle, "ISTIO_DIVERT", "-j ACCEPT", "counter accept");
            lo.push(&mut rs, Mangle, "ISTIO_TPROXY", A,
                &format!("! -d {{}} -p tcp -j TPROXY --tproxy-mark {mark}/0xffffffff --on-port {capture_port}"),
                &format!("meta l4proto tcp {{ip}} daddr != {{}} tproxy {{ip}} to :{capture_port} meta mark set {mark} counter accept"));
        }
        rs.append(
            table,
            "PREROUTING",
            "-p tcp -j ISTIO_INBOUND",
            "meta l4proto tcp counter jump istio-inbound",
        );
        if inbound_ports == "*" {
            for p in &local_excludes {
                rs.append(
                    table,
                    "ISTIO_INBOUND",
                    format!("-p tcp --dport {p} -j RETURN"),
                    format!("meta l4proto tcp tcp dport {p} counter return"),
                );
            }
            if tproxy {
                rs.append(
                    Mangle,
                    "ISTIO_INBOUND",
                    "-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT",
                    "meta l4proto tcp ct state related,established counter jump istio-divert",
                );
                rs.append(
                    Mangle,
                    "ISTIO_INBOUND",
                    "-p tcp -j ISTIO_TPROXY",
                    "meta l4proto tcp counter jump istio-tproxy",
                );
            } else {
                rs.append(
                    Nat,
                    "ISTIO_INBOUND",
                    "-p tcp -j ISTIO_IN_REDIRECT",
                    "meta l4proto tcp counter jump istio-in-redirect",
                );
            }
        } else {
            for p in &inbound_list {
                if tproxy {
                    rs.append(Mangle, "ISTIO_INBOUND", format!("-p tcp --dport {p} -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT"), format!("meta l4proto tcp ct state related,established tcp dport {p} counter jump istio-divert"));
                    rs.append(
                        Mangle,
                        "ISTIO_INBOUND",
                        format!("-p tcp --dport {p} -j ISTIO_TPROXY"),
                        format!("meta l4proto tcp tcp dport {p} counter jump istio-tproxy"),
                    );
                } else {
                    rs.append(
                        Nat,
                        "ISTIO_INBOUND",
                        format!("-p tcp --dport {p} -j ISTIO_IN_REDIRECT"),
                        format!("meta l4proto tcp tcp dport {p} counter jump istio-in-redirect"),
                    );
                }
            }
        }
    }

    rs.append(
        Nat,
        "OUTPUT",
        "-j ISTIO_OUTPUT",
        "counter jump istio-output",
    );
    for p in &outbound_port_excludes {
        rs.append(
            Nat,
            "ISTIO_OUTPUT",
            format!("-p tcp --dport {p} -j RETURN"),
            format!("meta l4proto tcp tcp dport {p} counter return"),
        );
        rs.append(
            Nat,
            "ISTIO_OUTPUT",
            format!("-p udp --dport {p} -j RETURN"),
            format!("meta l4proto udp udp dport {p} counter return"),
        );
    }
    passthrough.push(
        &mut rs,
        Nat,
        "ISTIO_OUTPUT",
        A,
        "-o lo -s {} -j RETURN",
        "oifname lo {ip} saddr {} counter return",
    );
    for (ids, owner, nft_owner) in [
        (&uids, "--uid-owner", "skuid"),
        (&gids, "--gid-owner", "skgid"),
    ] {
        for id in ids.iter() {
            // Calls from the app to its own service VIP come back in through the proxy. With
            // DNS capture, port 53 is left to the DNS rules (uids only, as istio-iptables does).
            if dns && owner == "--uid-owner" {
                lo.push(&mut rs, Nat, "ISTIO_OUTPUT", A,
                    &format!("-o lo ! -d {{}} -p tcp -m multiport ! --dports 53,{tunnel} -m owner {owner} {id} -j ISTIO_IN_REDIRECT"),
                    &format!("oifname lo meta l4proto tcp {{ip}} daddr != {{}} tcp dport != {{ 53, {tunnel} }} {nft_owner} {id} counter jump istio-in-redirect"));
            } else {
                lo.push(&mut rs, Nat, "ISTIO_OUTPUT", A,
                    &format!("-o lo ! -d {{}} -p tcp ! --dport {tunnel} -m owner {owner} {id} -j ISTIO_IN_REDIRECT"),
                    &format!("oifname lo meta l4proto tcp {{ip}} daddr != {{}} tcp dport != {tunnel} {nft_owner} {id} counter jump istio-in-redirect"));
            }
            // Loopback traffic of other users is not captured, unless loopback ranges are
            // explicitly included.
            if !loopback_included {
                if dns {
                    rs.append(Nat, "ISTIO_OUTPUT", format!("-o lo -p tcp ! --dport 53 -m owner ! {owner} {id} -j RETURN"), format!("oifname lo meta l4proto tcp tcp dport != 53 {nft_owner} != {id} counter return"));
                } else {
                    rs.append(
                        Nat,
                        "ISTIO_OUTPUT",
                        format!("-o lo -m owner ! {owner} {id} -j RETURN"),
                        format!("oifname lo {nft_owner} != {id} counter return"),
                    );
                }
            }
            // The proxy's own traffic is never captured again.
            rs.append(
                Nat,
                "ISTIO_OUTPUT",
                format!("-m owner {owner} {id} -j RETURN"),
                format!("{nft_owner} {id} counter return"),
            );
        }
    }
    owner_groups(&mut rs, c);
    if dns {
        dns_rules(&mut rs, c, &uids, &gids);
    }
    if tproxy {
        rs.append(
            Mangle,
            "PREROUTING",
            format!("-p tcp -m mark --mark {mark} -j CONNMARK --save-mark"),
            format!("meta l4proto tcp mark {mark} counter ct mark set mark"),
        );
        rs.append(
            Mangle,
            "OUTPUT",
            format!("-p tcp -o lo -m mark --mark {mark} -j RETURN"),
            format!("oifname lo meta l4proto tcp mark {mark} counter return"),
        );
        for (ids, owner, nft_owner) in [
            (&uids, "--uid-owner", "skuid"),
            (&gids, "--gid-owner", "skgid"),
        ] {
            for id in ids.iter() {
                lo.push(&mut rs, Mangle, "OUTPUT", A,
                    &format!("! -d {{}} -p tcp -o lo -m owner {owner} {id} -j MARK --set-mark {OUTBOUND_MARK}"),
                    &format!("oifname lo meta l4proto tcp {{ip}} daddr != {{}} {nft_owner} {id} counter meta mark set {OUTBOUND_MARK}"));
            }
        }
        rs.append(
            Mangle,
            "OUTPUT",
            format!("-p tcp -m connmark --mark {mark} -j CONNMARK --restore-mark"),
            format!("meta l4proto tcp ct mark {mark} counter meta mark set ct mark"),
        );
        rs.push(
            Mangle,
            "ISTIO_INBOUND",
            Position::Insert(1),
            Family::ALL,
            format!("-p tcp -m mark --mark {mark} -j RETURN"),
            format!("meta l4proto tcp mark {mark} counter return"),
        );
        passthrough.push(
            &mut rs,
            Mangle,
            "ISTIO_INBOUND",
            Position::Insert(2),
            "-p tcp -s {} -i lo -j RETURN",
            "iifname lo meta l4proto tcp {ip} saddr {} counter return",
        );
        rs.push(
            Mangle,
            "ISTIO_INBOUND",
            Position::Insert(3),
            Family::ALL,
            format!("-p tcp -i lo -m mark ! --mark {OUTBOUND_MARK} -j RETURN"),
            format!("iifname lo meta l4proto tcp mark != {OUTBOUND_MARK} counter return"),
        );
    }
    // Outbound: never localhost, then exclusions, then port and CIDR captures.
    lo.push(
        &mut rs,
        Nat,
        "ISTIO_OUTPUT",
        A,
        "-d {} -j RETURN",
        "{ip} daddr {} counter return",
    );
    for (list, fam, ip) in [
        (&exclude.v4, Family::V4, "ip"),
        (&exclude.v6, Family::V6, "ip6"),
    ] {
        for cidr in list {
            rs.push(
                Nat,
                "ISTIO_OUTPUT",
                A,
                fam,
                format!("-d {cidr} -j RETURN"),
                format!("{ip} daddr {cidr} counter return"),
            );
        }
    }
    for p in &outbound_ports {
        rs.append(
            Nat,
            "ISTIO_OUTPUT",
            format!("-p tcp --dport {p} -j ISTIO_REDIRECT"),
            format!("tcp dport {p} counter jump istio-redirect"),
        );
    }
    let virt = split(&c.virtual_interfaces);
    if include.all {
        rs.append(
            Nat,
            "ISTIO_OUTPUT",
            "-j ISTIO_REDIRECT",
            "counter jump istio-redirect",
        );
        for iface in &virt {
            rs.push(
                Nat,
                "PREROUTING",
                Position::Insert(1),
                Family::ALL,
                format!("-i {iface} -j ISTIO_REDIRECT"),
                format!("iifname {iface} counter jump istio-redirect"),
            );
        }
    } else {
        for (list, fam, ip) in [
            (&include.v4, Family::V4, "ip"),
            (&include.v6, Family::V6, "ip6"),
        ] {
            for cidr in list {
                for iface in &virt {
                    rs.push(
                        Nat,
                        "PREROUTING",
                        Position::Insert(1),
                        fam,
                        format!("-i {iface} -d {cidr} -j ISTIO_REDIRECT"),
                        format!("iifname {iface} {ip} daddr {cidr} counter jump istio-redirect"),
                    );
                }
                rs.push(
                    Nat,
                    "ISTIO_OUTPUT",
                    A,
                    fam,
                    format!("-d {cidr} -j ISTIO_REDIRECT"),
                    format!("{ip} daddr {cidr} counter jump istio-redirect"),
                );
            }
        }
    }
    Ok(rs)
}

/// `ISTIO_OUTBOUND_OWNER_GROUPS`: capture only these groups (one rule returning for all
/// others); or with the default `*`, `ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE` skips groups.
fn owner_groups(rs: &mut RuleSet, c: &Config) {
    let include = split(&c.owner_groups_include);
    if !include.is_empty() && include != ["*"] {
        let ipt: Vec<String> = include
            .iter()
            .map(|g| format!("-m owner ! --gid-owner {g}"))
            .collect();
        let nft: Vec<String> = include.iter().map(|g| format!("skgid != {g}")).collect();
        rs.append(
            Table::Nat,
            "ISTIO_OUTPUT",
            format!("{} -j RETURN", ipt.join(" ")),
            format!("{} counter return", nft.join(" ")),
        );
        return;
    }
    for g in split(&c.owner_groups_exclude) {
        rs.append(
            Table::Nat,
            "ISTIO_OUTPUT",
            format!("-m owner --gid-owner {g} -j RETURN"),
            format!("skgid {g} counter return"),
        );
    }
}

/// DNS capture: nat redirects to the agent's resolver, raw conntrack zones keep the
/// proxy's own DNS flows apart from the app's.
fn dns_rules(rs: &mut RuleSet, c: &Config, uids: &[String], gids: &[String]) {
    use Table::{Nat, Raw};
    let servers: Vec<(Family, &str, String)> = c
        .dns_v4
        .iter()
        .map(|s| (Family::V4, "ip", format!("{s}/32")))
        .chain(
            c.dns_v6
                .iter()
                .map(|s| (Family::V6, "ip6", format!("{s}/128"))),
        )
        .collect();
    let per_family = Family {
        v4: !c.dns_v4.is_empty(),
        v6: !c.dns_v6.is_empty(),
        agnostic: true,
    };
    let jump_family = if c.capture_all_dns {
        Family::ALL
    } else {
        per_family
    };
    rs.push(
        Nat,
        "ISTIO_OUTPUT",
        Position::Append,
        jump_family,
        "-j ISTIO_OUTPUT_DNS",
        "counter jump istio-output-dns",
    );
    if c.capture_all_dns {
        rs.append(
            Nat,
            "ISTIO_OUTPUT_DNS",
            format!("-p tcp --dport 53 -j REDIRECT --to-ports {DNS_PORT}"),
            format!("tcp dport 53 counter redirect to :{DNS_PORT}"),
        );
        rs.append(
            Nat,
            "ISTIO_OUTPUT_DNS",
            format!("-p udp --dport 53 -j REDIRECT --to-port {DNS_PORT}"),
            format!("udp dport 53 counter redirect to :{DNS_PORT}"),
        );
    } else {
        // TCP for every server, then UDP for every server.
        for (fam, ip, s) in &servers {
            rs.push(
                Nat,
                "ISTIO_OUTPUT_DNS",
                Position::Append,
                *fam,
                format!("-p tcp --dport 53 -d {s} -j REDIRECT --to-ports {DNS_PORT}"),
                format!("{ip} daddr {s} tcp dport 53 counter redirect to :{DNS_PORT}"),
            );
        }
        for (fam, ip, s) in &servers {
            rs.push(
                Nat,
                "ISTIO_OUTPUT_DNS",
                Position::Append,
                *fam,
                format!("-p udp --dport 53 -d {s} -j REDIRECT --to-port {DNS_PORT}"),
                format!("{ip} daddr {s} udp dport 53 counter redirect to :{DNS_PORT}"),
            );
        }
    }
    rs.append(
        Raw,
        "OUTPUT",
        "-j ISTIO_OUTPUT_DNS",
        "counter jump istio-output-dns",
    );
    for (ids, owner, nft_owner) in [
        (uids, "--uid-owner", "skuid"),
        (gids, "--gid-owner", "skgid"),
    ] {
        for id in ids {
            rs.append(
                Raw,
                "ISTIO_OUTPUT_DNS",
                format!("-p udp --dport 53 -m owner {owner} {id} -j CT --zone 1"),
                format!("udp dport 53 meta {nft_owner} {id} counter ct zone set 1"),
            );
            rs.append(
                Raw,
                "ISTIO_OUTPUT_DNS",
                format!("-p udp --sport {DNS_PORT} -m owner {owner} {id} -j CT --zone 2"),
                format!("udp sport {DNS_PORT} meta {nft_owner} {id} counter ct zone set 2"),
            );
        }
    }
    rs.push(
        Raw,
        "PREROUTING",
        Position::Append,
        jump_family,
        "-j ISTIO_INBOUND",
        "counter jump istio-inbound",
    );
    if c.capture_all_dns {
        rs.append(
            Raw,
            "ISTIO_OUTPUT_DNS",
            "-p udp --dport 53 -j CT --zone 2",
            "udp dport 53 counter ct zone set 2",
        );
        rs.append(
            Raw,
            "ISTIO_INBOUND",
            "-p udp --sport 53 -j CT --zone 1",
            "udp sport 53 counter ct zone set 1",
        );
    } else {
        for (fam, ip, s) in &servers {
            rs.push(
                Raw,
                "ISTIO_OUTPUT_DNS",
                Position::Append,
                *fam,
                format!("-p udp --dport 53 -d {s} -j CT --zone 2"),
                format!("udp dport 53 {ip} daddr {s} counter ct zone set 2"),
            );
            rs.push(
                Raw,
                "ISTIO_INBOUND",
                Position::Append,
                *fam,
                format!("-p udp --sport 53 -s {s} -j CT --zone 1"),
                format!("udp sport 53 {ip} saddr {s} counter ct zone set 1"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_lists_split_and_validate() {
        let c = cidrs("10.0.0.0/8,2001:db8::/32,,*", "x").unwrap();
        assert_eq!(
            c,
            Cidrs {
                all: true,
                v4: vec!["10.0.0.0/8".into()],
                v6: vec!["2001:db8::/32".into()]
            }
        );
        assert!(cidrs("10.0.0.0", "x").is_err());
        assert!(cidrs("10.0.0.0/33", "x").is_err());
        assert!(is_loopback_cidr("127.1.2.3/32"));
        assert!(ports("1,x", "p").is_err());
    }
}
