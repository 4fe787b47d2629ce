//! `iptables-init`: not implemented yet (issue 4). Exits 2 with a message so an init
//! container using it fails loudly instead of leaving a pod without interception.

fn main() {
    eprintln!("iptables-init: not implemented yet; traffic redirection comes with its own issue");
    std::process::exit(2);
}
