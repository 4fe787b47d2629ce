//! istio-iptables-compatible traffic redirection (issue 4). Nothing is implemented yet; the
//! binary says so and exits non-zero rather than pretending to set up redirection.
