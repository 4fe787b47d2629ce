//! `x-forwarded-client-cert` (XFCC): what the HTTP connection manager tells the upstream
//! about the client certificate of a mutual-TLS downstream (`forward_client_cert_details`
//! with `set_current_client_cert_details`). Istio's inbound listeners use APPEND_FORWARD
//! with the subject, URI and DNS SANs, so the app learns the calling workload's identity.

use crate::tls::san::{subject_alt_names, SanType};
use http::{HeaderMap, HeaderValue};
use rustls::pki_types::CertificateDer;

/// The header.
pub const XFCC: http::HeaderName = http::HeaderName::from_static("x-forwarded-client-cert");

/// `forward_client_cert_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardMode {
    /// Remove the header (the default).
    #[default]
    Sanitize,
    /// Pass it on as received, over mutual TLS only.
    ForwardOnly,
    /// Over mutual TLS, append this hop's element; otherwise remove it.
    AppendForward,
    /// Over mutual TLS, replace it with this hop's element; otherwise remove it.
    SanitizeSet,
    /// Pass it on as received, always.
    AlwaysForwardOnly,
}

/// `set_current_client_cert_details`: what this hop's element carries besides `By` and
/// `Hash` (in Envoy's order: Subject, DNS, URI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Details {
    /// `Subject="..."` (RFC 2253 form).
    pub subject: bool,
    /// `DNS=...` for each DNS SAN.
    pub dns: bool,
    /// `URI=...` for each URI SAN (`URI=` when there is none).
    pub uri: bool,
}

/// What XFCC needs of a mutual-TLS downstream connection, computed at the handshake.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate {
    /// Lower-case hex SHA-256 of the certificate's DER.
    pub hash: String,
    /// Subject in RFC 2253 form.
    pub subject: String,
    /// URI SANs.
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
}

impl PeerCertificate {
    /// Reads a peer certificate.
    pub fn from_der(cert: &CertificateDer<'_>) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
        let hash = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let sans = subject_alt_names(cert);
        let of = |t: SanType| -> Vec<String> {
            sans.iter()
                .filter(|(k, _)| *k == t)
                .map(|(_, v)| v.clone())
                .collect()
        };
        PeerCertificate {
            hash,
            subject: subject_rfc2253(cert).unwrap_or_default(),
            uris: of(SanType::Uri),
            dns: of(SanType::Dns),
        }
    }
}

/// The attribute names RFC 2253 output uses (OpenSSL's short names), by OID; others
/// print as the dotted OID.
const SHORT_NAMES: [(&str, &str); 14] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.4", "SN"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "street"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.12", "title"),
    ("2.5.4.42", "GN"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
];

/// The subject as RFC 2253 prints it: RDNs last to first, `,`-separated, with the
/// special characters escaped.
fn subject_rfc2253(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let rdns: Vec<String> = parsed
        .subject()
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|a| {
                    let oid = a.attr_type().to_id_string();
                    let key = SHORT_NAMES
                        .iter()
                        .find(|(o, _)| *o == oid)
                        .map_or(oid.clone(), |(_, n)| n.to_string());
                    let value = a.as_str().map(escape).unwrap_or_default();
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    Some(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == v.chars().count() && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// This hop's XFCC element for a connection with `peer`, our certificate's `local_uri`.
fn element(peer: &PeerCertificate, local_uri: Option<&str>, details: Details) -> String {
    let mut parts = Vec::new();
    if let Some(by) = local_uri {
        parts.push(format!("By={by}"));
    }
    parts.push(format!("Hash={}", peer.hash));
    if details.subject {
        parts.push(format!("Subject=\"{}\"", peer.subject));
    }
    if details.dns {
        parts.extend(peer.dns.iter().map(|d| format!("DNS={d}")));
    }
    if details.uri {
        if peer.uris.is_empty() {
            parts.push("URI=".into());
        }
        parts.extend(peer.uris.iter().map(|u| format!("URI={u}")));
    }
    parts.join(";")
}

/// Applies `mode` to a request's headers; `peer` is the client certificate of a
/// mutual-TLS connection (`None` otherwise).
pub fn apply(
    headers: &mut HeaderMap,
    mode: ForwardMode,
    details: Details,
    peer: Option<&PeerCertificate>,
    local_uri: Option<&str>,
) {
    let Some(peer) = peer else {
        if mode != ForwardMode::AlwaysForwardOnly {
            headers.remove(XFCC);
        }
        return;
    };
    let current = || HeaderValue::from_str(&element(peer, local_uri, details)).ok();
    match mode {
        ForwardMode::ForwardOnly | ForwardMode::AlwaysForwardOnly => {}
        ForwardMode::Sanitize => {
            headers.remove(XFCC);
        }
        ForwardMode::SanitizeSet => {
            headers.remove(XFCC);
            if let Some(v) = current() {
                headers.insert(XFCC, v);
            }
        }
        ForwardMode::AppendForward => {
            let Some(v) = current() else { return };
            let joined = headers
                .get_all(XFCC)
                .iter()
                .filter_map(|h| h.to_str().ok())
                .chain(v.to_str().ok())
                .collect::<Vec<_>>()
                .join(",");
            if let Ok(j) = HeaderValue::from_str(&joined) {
                headers.insert(XFCC, j);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerCertificate {
        PeerCertificate {
            hash: "ab".into(),
            subject: "O=x,C=US".into(),
            uris: vec!["spiffe://td/ns/a/sa/b".into()],
            dns: vec![],
        }
    }

    #[test]
    fn modes() {
        let all = Details {
            subject: true,
            dns: true,
            uri: true,
        };
        let mut h = HeaderMap::new();
        h.insert(XFCC, HeaderValue::from_static("By=old"));
        apply(
            &mut h,
            ForwardMode::AppendForward,
            all,
            Some(&peer()),
            Some("spiffe://td/ns/a/sa/me"),
        );
        assert_eq!(
            h[XFCC],
            "By=old,By=spiffe://td/ns/a/sa/me;Hash=ab;Subject=\"O=x,C=US\";URI=spiffe://td/ns/a/sa/b"
        );
        apply(
            &mut h,
            ForwardMode::SanitizeSet,
            Details::default(),
            Some(&peer()),
            None,
        );
        assert_eq!(h[XFCC], "Hash=ab");
        apply(&mut h, ForwardMode::ForwardOnly, all, None, None);
        assert!(h.get(XFCC).is_none(), "not mutual TLS: removed");
        h.insert(XFCC, HeaderValue::from_static("x"));
        apply(&mut h, ForwardMode::AlwaysForwardOnly, all, None, None);
        assert_eq!(h[XFCC], "x");
    }

    #[test]
    fn rfc2253_escapes() {
        assert_eq!(escape("a,b"), "a\\,b");
        assert_eq!(escape(" x "), "\\ x\\ ");
    }
}
