//! Parsers behind the `tls_inspector` and `http_inspector` listener filters. They read only
//! peeked bytes, so the connection's data stays for the TLS handshake or the codec.

/// Result of inspecting a prefix of the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Inspection<T> {
    /// Decided.
    Done(T),
    /// Need at least this many bytes to decide.
    NeedMore(usize),
}

/// What a TLS ClientHello said.
#[derive(Debug, Default, PartialEq, Eq, Clone)]
pub struct ClientHello {
    /// Server name (SNI), lower case.
    pub sni: Option<String>,
    /// Offered ALPN protocols.
    pub alpn: Vec<String>,
}

/// Parses a TLS ClientHello from the start of a stream. `Done(None)` means "not TLS".
pub fn client_hello(buf: &[u8]) -> Inspection<Option<ClientHello>> {
    if buf.is_empty() {
        return Inspection::NeedMore(1);
    }
    if buf[0] != 0x16 {
        return Inspection::Done(None);
    }
    if buf.len() < 5 {
        return Inspection::NeedMore(5);
    }
    if buf[1] != 3 {
        return Inspection::Done(None);
    }
    let record_len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if buf.len() < 9 {
        return Inspection::NeedMore(9);
    }
    if buf[5] != 1 {
        return Inspection::Done(None);
    }
    let hs_len = u32::from_be_bytes([0, buf[6], buf[7], buf[8]]) as usize;
    // A ClientHello may span records; we read what the first record carries, and more
    // records only when the hello is larger (rare without post-quantum key shares).
    if hs_len + 4 > record_len {
        return multi_record_hello(buf, hs_len);
    }
    let need = 9 + hs_len;
    if buf.len() < need {
        return Inspection::NeedMore(need);
    }
    Inspection::Done(parse_hello_body(&buf[9..need]))
}

/// Reassembles a ClientHello split over several TLS records.
fn multi_record_hello(buf: &[u8], hs_len: usize) -> Inspection<Option<ClientHello>> {
    {
        let mut body = Vec::with_capacity(hs_len + 4);
        let mut pos = 0;
        while pos + 5 <= buf.len() && body.len() < hs_len + 4 {
            if buf[pos] != 0x16 {
                return Inspection::Done(None);
            }
            let len = u16::from_be_bytes([buf[pos + 3], buf[pos + 4]]) as usize;
            if pos + 5 + len > buf.len() {
                return Inspection::NeedMore(pos + 5 + len);
            }
            body.extend_from_slice(&buf[pos + 5..pos + 5 + len]);
            pos += 5 + len;
        }
        if body.len() < hs_len + 4 {
            return Inspection::NeedMore(pos + 5);
        }
        Inspection::Done(parse_hello_body(&body[4..hs_len + 4]))
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
}

fn parse_hello_body(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    r.take(2 + 32)?;
    let sid = r.u8()?;
    r.take(sid)?;
    let cs = r.u16()?;
    r.take(cs)?;
    let cm = r.u8()?;
    r.take(cm)?;
    let mut hello = ClientHello::default();
    if r.0.is_empty() {
        return Some(hello);
    }
    let ext_len = r.u16()?;
    let mut exts = Reader(r.take(ext_len)?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let len = exts.u16()?;
        let mut data = Reader(exts.take(len)?);
        match ty {
            0 => {
                let list = data.u16()?;
                let mut names = Reader(data.take(list)?);
                while !names.0.is_empty() {
                    let kind = names.u8()?;
                    let n = names.u16()?;
                    let name = names.take(n)?;
                    if kind == 0 {
                        hello.sni = Some(String::from_utf8_lossy(name).to_ascii_lowercase());
                    }
                }
            }
            16 => {
                let list = data.u16()?;
                let mut protos = Reader(data.take(list)?);
                while !protos.0.is_empty() {
                    let n = protos.u8()?;
                    hello
                        .alpn
                        .push(String::from_utf8_lossy(protos.take(n)?).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

/// The HTTP/2 connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Detects plaintext HTTP: `Done(Some("h2c"))`, `Some("http/1.1")`, `Some("http/1.0")`,
/// or `None` when it is not HTTP.
pub fn http_protocol(buf: &[u8]) -> Inspection<Option<&'static str>> {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Inspection::Done(Some("h2c"))
        } else {
            Inspection::NeedMore(H2_PREFACE.len())
        };
    }
    let line_end = match buf.windows(2).position(|w| w == b"\r\n") {
        Some(i) => i,
        None if buf.len() >= 8192 => return Inspection::Done(None),
        None => return Inspection::NeedMore(buf.len() + 1),
    };
    let line = &buf[..line_end];
    let mut parts = line.split(|b| *b == b' ');
    let method = parts.next().unwrap_or(&[]);
    let _target = parts.next();
    let version = parts.next();
    if method.is_empty() || !method.iter().all(|c| c.is_ascii_uppercase()) || parts.next().is_some()
    {
        return Inspection::Done(None);
    }
    Inspection::Done(match version {
        Some(b"HTTP/1.1") => Some("http/1.1"),
        Some(b"HTTP/1.0") => Some("http/1.0"),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
        let mut ext = Vec::new();
        let name = sni.as_bytes();
        let mut sni_ext = vec![];
        sni_ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        sni_ext.push(0);
        sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni_ext.extend_from_slice(name);
        ext.extend_from_slice(&0u16.to_be_bytes());
        ext.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
        ext.extend_from_slice(&sni_ext);
        let mut list = vec![];
        for a in alpn {
            list.push(a.len() as u8);
            list.extend_from_slice(a.as_bytes());
        }
        ext.extend_from_slice(&16u16.to_be_bytes());
        ext.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
        ext.extend_from_slice(&list);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn parses_sni_and_alpn_and_asks_for_more() {
        let h = hello("Example.COM", &["h2", "http/1.1"]);
        assert_eq!(
            client_hello(&h),
            Inspection::Done(Some(ClientHello {
                sni: Some("example.com".into()),
                alpn: vec!["h2".into(), "http/1.1".into()]
            }))
        );
        assert!(matches!(client_hello(&h[..20]), Inspection::NeedMore(n) if n == h.len()));
        assert_eq!(client_hello(b"GET / HTTP/1.1\r\n"), Inspection::Done(None));
    }

    #[test]
    fn detects_http_versions() {
        assert_eq!(
            http_protocol(b"GET /x HTTP/1.1\r\nHost: a\r\n"),
            Inspection::Done(Some("http/1.1"))
        );
        assert_eq!(
            http_protocol(b"POST / HTTP/1.0\r\n"),
            Inspection::Done(Some("http/1.0"))
        );
        assert_eq!(http_protocol(H2_PREFACE), Inspection::Done(Some("h2c")));
        assert!(matches!(
            http_protocol(b"PRI * HT"),
            Inspection::NeedMore(_)
        ));
        assert_eq!(http_protocol(b"\x16\x03\x01\r\n"), Inspection::Done(None));
        assert!(matches!(
            http_protocol(b"GET / HT"),
            Inspection::NeedMore(_)
        ));
    }
}
