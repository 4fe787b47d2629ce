//! Subject alternative names of a certificate, and Envoy's SAN matchers over them.

use crate::config::common::StringMatch;
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The SAN kinds Envoy's `SubjectAltNameMatcher.san_type` distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanType {
    /// rfc822Name.
    Email,
    /// dNSName.
    Dns,
    /// uniformResourceIdentifier (SPIFFE ids live here).
    Uri,
    /// iPAddress.
    IpAddress,
}

/// One configured SAN matcher; `san_type: None` is the legacy `match_subject_alt_names`
/// which matches a SAN of any type.
#[derive(Debug, Clone)]
pub struct SanMatcher {
    /// Which SANs the matcher looks at.
    pub san_type: Option<SanType>,
    /// The value condition.
    pub matcher: StringMatch,
}

/// Every SAN of a DER certificate, with its type. Unparseable certificates have none.
pub fn subject_alt_names(cert: &CertificateDer<'_>) -> Vec<(SanType, String)> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(ext)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::RFC822Name(s) => Some((SanType::Email, s.to_string())),
            GeneralName::DNSName(s) => Some((SanType::Dns, s.to_string())),
            GeneralName::URI(s) => Some((SanType::Uri, s.to_string())),
            GeneralName::IPAddress(b) => ip_string(b).map(|s| (SanType::IpAddress, s)),
            _ => None,
        })
        .collect()
}

fn ip_string(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

/// Envoy accepts a certificate when any matcher matches any SAN of its type. DNS SANs
/// with a leading `*.` wildcard also match exact matchers for a single label.
pub fn any_matches(matchers: &[SanMatcher], sans: &[(SanType, String)]) -> bool {
    matchers.iter().any(|m| {
        sans.iter().any(|(t, v)| {
            m.san_type.is_none_or(|want| want == *t)
                && (m.matcher.matches(v)
                    || (*t == SanType::Dns && dns_wildcard_matches(&m.matcher, v)))
        })
    })
}

fn dns_wildcard_matches(m: &StringMatch, san: &str) -> bool {
    let (StringMatch::Exact(want, _), Some(suffix)) = (m, san.strip_prefix('*')) else {
        return false;
    };
    want.ends_with(suffix)
        && !want[..want.len() - suffix.len()].contains('.')
        && want.len() > suffix.len()
}

/// The first `spiffe://` identity among URI SANs (what Istio's `istio_authn` takes as a
/// principal).
pub fn first_spiffe(uris: &[String]) -> Option<String> {
    uris.iter().find(|u| u.starts_with("spiffe://")).cloned()
}

/// The URI SANs of a certificate, in order.
pub fn uri_sans(cert: &CertificateDer<'_>) -> Vec<String> {
    subject_alt_names(cert)
        .into_iter()
        .filter(|(t, _)| *t == SanType::Uri)
        .map(|(_, v)| v)
        .collect()
}

/// The first URI SAN of a certificate (Envoy's `%DOWNSTREAM_PEER_URI_SAN%`).
pub fn first_uri(cert: &CertificateDer<'_>) -> Option<String> {
    uri_sans(cert).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_by_type_and_wildcard() {
        let sans = vec![
            (SanType::Uri, "spiffe://cluster.local/ns/a/sa/b".to_string()),
            (SanType::Dns, "*.example.com".to_string()),
        ];
        let uri = SanMatcher {
            san_type: Some(SanType::Uri),
            matcher: StringMatch::Prefix("spiffe://cluster.local/".into(), false),
        };
        let dns_as_uri = SanMatcher {
            san_type: Some(SanType::Uri),
            matcher: StringMatch::Exact("a.example.com".into(), false),
        };
        let any = SanMatcher {
            san_type: None,
            matcher: StringMatch::Exact("a.example.com".into(), false),
        };
        let deep = SanMatcher {
            san_type: None,
            matcher: StringMatch::Exact("a.b.example.com".into(), false),
        };
        assert!(any_matches(&[uri], &sans));
        assert!(!any_matches(&[dns_as_uri], &sans));
        assert!(any_matches(&[any], &sans));
        assert!(!any_matches(&[deep], &sans));
    }

    #[test]
    fn reads_spiffe_uri_from_fixture_certificate() {
        let pem = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/istio/certs/cert-chain.pem"
        ))
        .unwrap();
        let certs = crate::tls::pem::certificates(&pem).unwrap();
        assert_eq!(
            first_uri(&certs[0]).as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/default")
        );
    }
}
