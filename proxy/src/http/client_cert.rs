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
/// `Hash` (in Envoy's order: Cert, Chain, Subject, URI, DNS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Details {
    /// `Cert="..."`: the URL-encoded PEM of the client certificate (gateways set it).
    pub cert: bool,
    /// `Chain="..."`: the URL-encoded PEM of the chain the client presented.
    pub chain: bool,
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
    /// The certificates the client presented, leaf first (DER), for `Cert` and `Chain`.
    pub presented: Vec<CertificateDer<'static>>,
}

impl PeerCertificate {
    /// Reads the chain a client presented (leaf first; `None` when empty).
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Option<Self> {
        let leaf = chain.first()?;
        Some(PeerCertificate {
            presented: chain.iter().map(|c| c.clone().into_owned()).collect(),
            ..Self::from_der(leaf)
        })
    }

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
            presented: Vec::new(),
        }
    }
}

/// A certificate as PEM (64-column base64, as OpenSSL writes it), URL-encoded the way
/// Envoy encodes it for XFCC: newline, space, `+`, `/` and `=` percent-escaped.
fn url_encoded_pem(cert: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let mut out = String::with_capacity(pem.len() * 5 / 4);
    for c in pem.chars() {
        match c {
            '\n' => out.push_str("%0A"),
            ' ' => out.push_str("%20"),
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
    out
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
    if details.cert {
        if let Some(leaf) = peer.presented.first() {
            parts.push(format!("Cert=\"{}\"", url_encoded_pem(leaf)));
        }
    }
    if details.chain && !peer.presented.is_empty() {
        let chain: String = peer.presented.iter().map(url_encoded_pem).collect();
        parts.push(format!("Chain=\"{chain}\""));
    }
    if details.subject {
        parts.push(format!("Subject=\"{}\"", peer.subject));
    }
    if details.uri {
        if peer.uris.is_empty() {
            parts.push("URI=".into());
        }
        parts.extend(peer.uris.iter().map(|u| format!("URI={u}")));
    }
    if details.dns {
        parts.extend(peer.dns.iter().map(|d| format!("DNS={d}")));
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
            presented: vec![],
        }
    }

    #[test]
    fn modes() {
        let all = Details {
            subject: true,
            dns: true,
            uri: true,
            ..Default::default()
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
    fn cert_and_chain_are_url_encoded_pem_in_envoys_order() {
        let der = CertificateDer::from(vec![0xfbu8; 100]);
        let encoded = url_encoded_pem(&der);
        assert!(
            encoded.starts_with("-----BEGIN%20CERTIFICATE-----%0A%2B%2Fv7"),
            "{encoded}"
        );
        assert!(
            encoded.ends_with("%3D%3D%0A-----END%20CERTIFICATE-----%0A"),
            "{encoded}"
        );
        assert!(
            !encoded.contains('/') && !encoded.contains('='),
            "{encoded}"
        );
        let lines: Vec<&str> = encoded.split("%0A").collect();
        assert_eq!(lines[1].replace("%2B", "+").replace("%2F", "/").len(), 64);
        let peer = PeerCertificate {
            dns: vec!["d.example".into()],
            presented: vec![der.clone(), der],
            ..peer()
        };
        let all = Details {
            cert: true,
            chain: true,
            subject: true,
            dns: true,
            uri: true,
        };
        let e = element(&peer, None, all);
        let keys: Vec<&str> = e.split(';').map(|p| p.split('=').next().unwrap()).collect();
        assert_eq!(keys, ["Hash", "Cert", "Chain", "Subject", "URI", "DNS"]);
        assert!(e.contains(&format!("Chain=\"{encoded}{encoded}\"")), "{e}");
    }

    #[test]
    fn rfc2253_escapes() {
        assert_eq!(escape("a,b"), "a\\,b");
        assert_eq!(escape(" x "), "\\ x\\ ");
    }
}
