//! PROXY protocol v1 and v2 headers (the `proxy_protocol` listener filter).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A parsed header.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// Addresses of the original connection, and the header length to consume.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
        len: usize,
    },
    /// LOCAL / UNKNOWN: keep the socket's addresses.
    Local { len: usize },
}

/// The outcome of parsing a stream prefix.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// A complete header.
    Header(Header),
    /// Not a PROXY header.
    NotProxy,
    /// A malformed header.
    Invalid(&'static str),
    /// Need at least this many bytes.
    NeedMore(usize),
}

/// Parses a PROXY protocol header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parse {
    if buf.is_empty() {
        return Parse::NeedMore(1);
    }
    if buf[0] == b'P' {
        return parse_v1(buf);
    }
    if buf[0] == b'\r' {
        return parse_v2(buf);
    }
    Parse::NotProxy
}

fn parse_v1(buf: &[u8]) -> Parse {
    let n = buf.len().min(6);
    if buf[..n] != b"PROXY "[..n] {
        return Parse::NotProxy;
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= 107 {
            Parse::Invalid("v1 header too long")
        } else {
            Parse::NeedMore(buf.len() + 1)
        };
    };
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return Parse::Invalid("v1 header is not ASCII");
    };
    let parts: Vec<&str> = line.split(' ').collect();
    let len = end + 2;
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Parse::Header(Header::Local { len }),
        ["PROXY", proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let (Ok(s), Ok(d), Ok(sp), Ok(dp)) = (
                src.parse::<IpAddr>(),
                dst.parse::<IpAddr>(),
                sport.parse::<u16>(),
                dport.parse::<u16>(),
            ) else {
                return Parse::Invalid("malformed v1 addresses");
            };
            if (*proto == "TCP4") != s.is_ipv4() || s.is_ipv4() != d.is_ipv4() {
                return Parse::Invalid("v1 address family mismatch");
            }
            Parse::Header(Header::Proxied {
                source: SocketAddr::new(s, sp),
                destination: SocketAddr::new(d, dp),
                len,
            })
        }
        _ => Parse::Invalid("malformed v1 header"),
    }
}

fn parse_v2(buf: &[u8]) -> Parse {
    let n = buf.len().min(12);
    if buf[..n] != V2_SIGNATURE[..n] {
        return Parse::NotProxy;
    }
    if buf.len() < 16 {
        return Parse::NeedMore(16);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Parse::Invalid("unsupported v2 version");
    }
    let fam = buf[13];
    let addr_len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = 16 + addr_len;
    if buf.len() < len {
        return Parse::NeedMore(len);
    }
    if ver_cmd & 0x0f == 0 {
        return Parse::Header(Header::Local { len });
    }
    let a = &buf[16..len];
    match fam >> 4 {
        1 if a.len() >= 12 => {
            let s = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let d = Ipv4Addr::new(a[4], a[5], a[6], a[7]);
            let sp = u16::from_be_bytes([a[8], a[9]]);
            let dp = u16::from_be_bytes([a[10], a[11]]);
            Parse::Header(Header::Proxied {
                source: SocketAddr::new(s.into(), sp),
                destination: SocketAddr::new(d.into(), dp),
                len,
            })
        }
        2 if a.len() >= 36 => {
            let s = Ipv6Addr::from(<[u8; 16]>::try_from(&a[0..16]).expect("16 bytes"));
            let d = Ipv6Addr::from(<[u8; 16]>::try_from(&a[16..32]).expect("16 bytes"));
            let sp = u16::from_be_bytes([a[32], a[33]]);
            let dp = u16::from_be_bytes([a[34], a[35]]);
            Parse::Header(Header::Proxied {
                source: SocketAddr::new(s.into(), sp),
                destination: SocketAddr::new(d.into(), dp),
                len,
            })
        }
        0 | 3 => Parse::Header(Header::Local { len }),
        _ => Parse::Invalid("truncated v2 addresses"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1() {
        let h = b"PROXY TCP4 1.2.3.4 5.6.7.8 1000 80\r\nGET /";
        assert_eq!(
            parse(h),
            Parse::Header(Header::Proxied {
                source: "1.2.3.4:1000".parse().unwrap(),
                destination: "5.6.7.8:80".parse().unwrap(),
                len: 36
            })
        );
        assert!(matches!(parse(b"PROXY TCP4 1.2"), Parse::NeedMore(_)));
        assert_eq!(
            parse(b"PROXY TCP4 x y 1 2\r\n"),
            Parse::Invalid("malformed v1 addresses")
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parse::NotProxy);
    }

    #[test]
    fn v2() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[
            0x21, 0x11, 0, 12, 10, 0, 0, 1, 10, 0, 0, 2, 0x1f, 0x90, 0, 80,
        ]);
        assert_eq!(
            parse(&h),
            Parse::Header(Header::Proxied {
                source: "10.0.0.1:8080".parse().unwrap(),
                destination: "10.0.0.2:80".parse().unwrap(),
                len: 28
            })
        );
        assert!(matches!(parse(&h[..20]), Parse::NeedMore(28)));
    }
}
