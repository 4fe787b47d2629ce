//! The listener filters' parsers: PROXY protocol, TLS ClientHello, HTTP inspector. They
//! read the first bytes a client sends, before anything is known about it.

use meshproxy::listener::inspect::{self, Inspection};
use meshproxy::listener::proxy_protocol::{self, Header, Parse};

/// What a parser of a stream prefix must hold to: asking for more means more than it
/// has, and a decision taken on a prefix stands whatever follows it.
fn prefix_decision<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    parse: impl Fn(&[u8]) -> Inspection<T>,
    decided_by_prefix: bool,
) {
    match parse(data) {
        Inspection::NeedMore(n) => {
            assert!(n > data.len(), "NeedMore({n}) with {} bytes", data.len())
        }
        Inspection::Done(first) if decided_by_prefix => {
            let mut longer = data.to_vec();
            longer.extend_from_slice(b"\r\n\x16\x03\x01\0\0PROXY ");
            assert_eq!(
                parse(&longer),
                Inspection::Done(first),
                "decision changed by later bytes"
            );
        }
        Inspection::Done(_) => {}
    }
}

/// PROXY protocol v1/v2: a header is no longer than the input, and its bytes alone parse
/// to the same header.
pub fn proxy_protocol(data: &[u8]) {
    let len = match proxy_protocol::parse(data) {
        Parse::NeedMore(n) => {
            return assert!(n > data.len(), "NeedMore({n}) with {} bytes", data.len())
        }
        Parse::NotProxy | Parse::Invalid(_) => return,
        Parse::Header(Header::Proxied { len, .. } | Header::Local { len }) => len,
    };
    assert!(len <= data.len(), "header of {len} bytes in {}", data.len());
    assert_eq!(
        proxy_protocol::parse(&data[..len]),
        proxy_protocol::parse(data)
    );
}

/// The TLS inspector's ClientHello parser.
pub fn tls_client_hello(data: &[u8]) {
    prefix_decision(data, inspect::client_hello, true);
}

/// The HTTP inspector. Without a line end within its 8 KiB window it decides "not HTTP",
/// a decision later bytes may not be held to.
pub fn http_inspector(data: &[u8]) {
    let by_prefix = data.len() < 8192 || data.windows(2).any(|w| w == b"\r\n");
    prefix_decision(data, inspect::http_protocol, by_prefix);
}
