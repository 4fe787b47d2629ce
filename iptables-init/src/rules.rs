//! The generated ruleset: an ordered list of rules, each with its iptables arguments and
//! its nftables expression, the table and chain it goes to, and the address families it
//! applies to. The two backends render the same list, so their order cannot diverge.

/// A netfilter table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// mangle (TPROXY, drop-invalid).
    Mangle,
    /// nat (REDIRECT).
    Nat,
    /// raw (DNS conntrack zones).
    Raw,
}

impl Table {
    /// iptables name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Mangle => "mangle",
            Table::Nat => "nat",
            Table::Raw => "raw",
        }
    }
}

/// Which address families a rule is for, and whether its text is the same for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// Emitted for IPv4.
    pub v4: bool,
    /// Emitted for IPv6 (when IPv6 is on).
    pub v6: bool,
    /// The text has no addresses: nftables writes it once for both families.
    pub agnostic: bool,
}

impl Family {
    /// Both families, same text.
    pub const ALL: Family = Family {
        v4: true,
        v6: true,
        agnostic: true,
    };
    /// IPv4 text.
    pub const V4: Family = Family {
        v4: true,
        v6: false,
        agnostic: false,
    };
    /// IPv6 text.
    pub const V6: Family = Family {
        v4: false,
        v6: true,
        agnostic: false,
    };
}

/// How a rule is added to its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Appended (`-A`).
    Append,
    /// Inserted at a 1-based position (`-I chain N`).
    Insert(u32),
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Table.
    pub table: Table,
    /// iptables chain name (`ISTIO_OUTPUT`, `PREROUTING`).
    pub chain: &'static str,
    /// Append or insert.
    pub position: Position,
    /// Families.
    pub family: Family,
    /// iptables arguments after the chain (`-p tcp -j RETURN`).
    pub iptables: String,
    /// nftables expression after the chain (`meta l4proto tcp counter return`).
    pub nft: String,
}

/// The ordered rules.
#[derive(Debug, Default, Clone)]
pub struct RuleSet {
    /// Rules in generation order.
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// Adds a rule.
    pub fn push(
        &mut self,
        table: Table,
        chain: &'static str,
        position: Position,
        family: Family,
        iptables: impl Into<String>,
        nft: impl Into<String>,
    ) {
        self.rules.push(Rule {
            table,
            chain,
            position,
            family,
            iptables: iptables.into(),
            nft: nft.into(),
        });
    }

    /// Appends a family-agnostic rule.
    pub fn append(
        &mut self,
        table: Table,
        chain: &'static str,
        iptables: impl Into<String>,
        nft: impl Into<String>,
    ) {
        self.push(table, chain, Position::Append, Family::ALL, iptables, nft);
    }
}

/// The chains istio-iptables creates (everything else is a built-in chain).
pub const OWN_CHAINS: [&str; 8] = [
    "ISTIO_INBOUND",
    "ISTIO_REDIRECT",
    "ISTIO_IN_REDIRECT",
    "ISTIO_OUTPUT",
    "ISTIO_OUTPUT_DNS",
    "ISTIO_DIVERT",
    "ISTIO_TPROXY",
    "ISTIO_DROP",
];

/// Whether a chain name is a built-in chain or terminal target.
pub fn is_builtin(chain: &str) -> bool {
    matches!(
        chain,
        "INPUT"
            | "OUTPUT"
            | "FORWARD"
            | "PREROUTING"
            | "POSTROUTING"
            | "ACCEPT"
            | "RETURN"
            | "DROP"
    )
}
