//! Route selection: the virtual host by authority (exact, then longest suffix wildcard,
//! then longest prefix wildcard, then `*`), then the first route whose matcher accepts
//! the request.

use crate::config::route::{
    DomainMatch, HeaderMatch, HeaderMatchKind, PathMatch, Route, RouteConfig, RouteMatcher,
    VirtualHost,
};
use http::HeaderMap;
use rand::Rng;

/// Finds the virtual host for `host` (already lower-cased).
pub fn virtual_host<'a>(rc: &'a RouteConfig, host: &str) -> Option<&'a VirtualHost> {
    let pick = |host: &str| -> Option<&'a VirtualHost> {
        let mut best: Option<(u8, usize, &VirtualHost)> = None;
        for vh in &rc.virtual_hosts {
            for d in &vh.domains {
                let rank = match d {
                    DomainMatch::Exact(e) if e == host => Some((3, e.len())),
                    DomainMatch::Suffix(s)
                        if host.len() > s.len() && host.ends_with(s.as_str()) =>
                    {
                        Some((2, s.len()))
                    }
                    DomainMatch::Prefix(p)
                        if host.len() > p.len() && host.starts_with(p.as_str()) =>
                    {
                        Some((1, p.len()))
                    }
                    DomainMatch::Any => Some((0, 0)),
                    _ => None,
                };
                if let Some((r, len)) = rank {
                    if best.is_none_or(|(br, bl, _)| (r, len) > (br, bl)) {
                        best = Some((r, len, vh));
                    }
                }
            }
        }
        best.map(|(_, _, vh)| vh)
    };
    let stripped = if rc.ignore_port_in_host_matching {
        strip_port(host)
    } else {
        host
    };
    pick(stripped)
}

/// `host:port` -> `host` (IPv6 literals keep their brackets).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i)
            if host[i + 1..].chars().all(|c| c.is_ascii_digit()) && !host[..i].contains(':') =>
        {
            &host[..i]
        }
        _ => host,
    }
}

/// What a route matcher looks at.
#[derive(Debug)]
pub struct RequestView<'a> {
    /// Path with query.
    pub path: &'a str,
    /// Headers (`:authority`/`host` included as `host`).
    pub headers: &'a HeaderMap,
    /// Whether the request is gRPC (content-type application/grpc*).
    pub grpc: bool,
}

/// Whether the request headers satisfy one header condition (routes and the fault filter).
pub(crate) fn header_matches(m: &HeaderMatch, headers: &HeaderMap) -> bool {
    header_value_matches(m, joined_header(headers, m.name.as_str()).as_deref())
}

/// A header's value as Envoy matches it: several values comma-joined, `None` when absent.
pub(crate) fn joined_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Option<std::borrow::Cow<'a, str>> {
    use std::borrow::Cow;
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    match values.as_slice() {
        [] => None,
        [one] => Some(Cow::Borrowed(one)),
        many => Some(Cow::Owned(many.join(","))),
    }
}

/// Whether a header's value (`None`: absent; several values already comma-joined)
/// satisfies one header condition (also RBAC's, which reads pseudo-headers too).
pub(crate) fn header_value_matches(m: &HeaderMatch, value: Option<&str>) -> bool {
    let value = match value {
        None if m.missing_as_empty => Some(""),
        v => v,
    };
    let result = match (&m.kind, value) {
        (HeaderMatchKind::Present(want), v) => v.is_some() == *want,
        (_, None) => false,
        (HeaderMatchKind::String(s), Some(v)) => s.matches(v),
        (HeaderMatchKind::Range(start, end), Some(v)) => {
            v.parse::<i64>().is_ok_and(|n| n >= *start && n < *end)
        }
    };
    result != m.invert
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// Whether a route's matcher accepts the request.
pub fn matches(m: &RouteMatcher, req: &RequestView<'_>) -> bool {
    let (path, query) = req.path.split_once('?').unwrap_or((req.path, ""));
    let folded;
    let p = if m.case_sensitive {
        path
    } else {
        folded = path.to_ascii_lowercase();
        folded.as_str()
    };
    let path_ok = match &m.path {
        PathMatch::Prefix(pre) => p.starts_with(pre.as_str()),
        PathMatch::Path(exact) => p == exact,
        PathMatch::Regex(re) => re.is_match(path),
        PathMatch::SeparatedPrefix(pre) => {
            p == pre || (p.starts_with(pre.as_str()) && p.as_bytes().get(pre.len()) == Some(&b'/'))
        }
    };
    if !path_ok || (m.grpc && !req.grpc) {
        return false;
    }
    if !m.headers.iter().all(|h| header_matches(h, req.headers)) {
        return false;
    }
    for q in &m.query {
        let v = query_param(query, &q.name);
        let ok = match (&q.value, v) {
            (None, v) => v.is_some() == q.present,
            (Some(_), None) => false,
            (Some(s), Some(v)) => s.matches(v),
        };
        if !ok {
            return false;
        }
    }
    match m.fraction {
        Some((num, den)) => rand::thread_rng().gen_range(0..den) < num,
        None => true,
    }
}

/// The first matching route of a virtual host.
pub fn route<'a>(vh: &'a VirtualHost, req: &RequestView<'_>) -> Option<&'a Route> {
    vh.routes.iter().find(|r| matches(&r.matcher, req))
}

/// Whether `b` may appear in a request's authority (RFC 3986's unreserved and sub-delims
/// characters, `:`, `@`, `[`, `]` and `%`), the set Envoy's codec accepts; a `Host` with
/// anything else (a space, a slash, a control character) is answered 400.
pub fn is_authority_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@[]%".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rc(v: serde_json::Value) -> RouteConfig {
        let proto =
            xds_client::json::decode(v, "envoy.config.route.v3.RouteConfiguration", false).unwrap();
        crate::config::route::translate(&proto, "").unwrap()
    }

    #[test]
    fn domain_precedence() {
        let rc = rc(json!({"virtual_hosts": [
            {"name": "any", "domains": ["*"]},
            {"name": "prefix", "domains": ["foo.*"]},
            {"name": "suffix", "domains": ["*.example.com"]},
            {"name": "longer", "domains": ["*.api.example.com"]},
            {"name": "exact", "domains": ["www.example.com", "www.example.com:8080"]}]}));
        let vh = |h: &str| virtual_host(&rc, h).unwrap().name.clone();
        assert_eq!(vh("www.example.com"), "exact");
        assert_eq!(vh("www.example.com:8080"), "exact");
        assert_eq!(vh("a.api.example.com"), "longer");
        assert_eq!(vh("b.example.com"), "suffix");
        assert_eq!(vh("foo.bar"), "prefix");
        assert_eq!(vh("other"), "any");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("a:80"), "a");
    }

    #[test]
    fn route_matchers() {
        let rc = rc(
            json!({"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"name": "hdr", "match": {"prefix": "/", "headers": [{"name": "x-canary", "string_match": {"exact": "1"}}]}, "direct_response": {"status": 200}},
                {"name": "inv", "match": {"prefix": "/inv", "headers": [{"name": "x-a", "present_match": true, "invert_match": true}]}, "direct_response": {"status": 200}},
                {"name": "q", "match": {"prefix": "/q", "query_parameters": [{"name": "debug", "string_match": {"exact": "1"}}]}, "direct_response": {"status": 200}},
                {"name": "exact", "match": {"path": "/Exact", "case_sensitive": false}, "direct_response": {"status": 200}},
                {"name": "sep", "match": {"path_separated_prefix": "/api"}, "direct_response": {"status": 200}},
                {"name": "re", "match": {"safe_regex": {"regex": "/re/[0-9]+"}}, "direct_response": {"status": 200}},
                {"name": "range", "match": {"prefix": "/r", "headers": [{"name": "x-n", "range_match": {"start": 1, "end": 10}}]}, "direct_response": {"status": 200}}
            ]}]}),
        );
        let vh = &rc.virtual_hosts[0];
        let name = |path: &str, hdrs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in hdrs {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            route(
                vh,
                &RequestView {
                    path,
                    headers: &h,
                    grpc: false,
                },
            )
            .map(|r| r.name.clone())
        };
        assert_eq!(name("/x", &[("x-canary", "1")]).as_deref(), Some("hdr"));
        assert_eq!(name("/inv", &[]).as_deref(), Some("inv"));
        assert_eq!(name("/inv", &[("x-a", "1")]), None);
        assert_eq!(name("/q?a=b&debug=1", &[]).as_deref(), Some("q"));
        assert_eq!(name("/q?debug=2", &[]), None);
        assert_eq!(name("/exact", &[]).as_deref(), Some("exact"));
        assert_eq!(name("/api/v1", &[]).as_deref(), Some("sep"));
        assert_eq!(name("/api", &[]).as_deref(), Some("sep"));
        assert_eq!(name("/apix", &[]), None);
        assert_eq!(name("/re/123", &[]).as_deref(), Some("re"));
        assert_eq!(name("/re/12a", &[]), None);
        assert_eq!(name("/r", &[("x-n", "5")]).as_deref(), Some("range"));
        assert_eq!(name("/r", &[("x-n", "10")]), None);
    }
}
