//! istio-iptables-compatible traffic redirection: the rules that send a pod's (or VM's)
//! traffic through meshproxy, for the iptables (`iptables-restore`) and native nftables
//! (`nft -f`) backends.
//!
//! [`config`] reads istio-iptables' flags and environment, [`generate`] turns the config
//! into one ordered rule list (each rule carrying its iptables and nft forms and the
//! address families it applies to), [`iptables`] and [`nftables`] render and apply it,
//! [`detect`] answers what the machine has (IPv6, nameservers, backends, kernel support).

pub mod config;
pub mod detect;
pub mod generate;
pub mod iptables;
pub mod nftables;
pub mod rules;
pub mod validate;
