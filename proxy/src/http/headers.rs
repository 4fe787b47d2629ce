//! Header handling of the connection manager and router: Envoy's append semantics for
//! configured mutations, hop-by-hop removal, request ids, and x-forwarded-for handling.

use crate::access_log::record::Record;
use crate::config::common::{AppendAction, HeaderMutations, HeaderTemplate};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Headers that describe one hop and are never forwarded.
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
];

/// Request headers that steer the router (retries, timeouts, stat names, tracing) or claim
/// the request came from inside the mesh (`x-envoy-internal`). Envoy honours them only
/// from internal clients and removes them from every other request; Envoy 1.40 treats no
/// client as internal unless `internal_address_config` says so (not supported here), so
/// meshproxy always removes them.
pub const INTERNAL_ONLY_ROUTER_HEADERS: [&str; 16] = [
    "x-envoy-internal",
    "x-envoy-upstream-stream-duration-ms",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
];

/// Request headers that name the calling service or span; Envoy removes them from
/// external requests on an edge (`use_remote_address`) connection manager only, where a
/// client could otherwise pose as a mesh service. Other `x-envoy-*` headers pass.
pub const EDGE_REMOVED_HEADERS: [&str; 3] = [
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
];

/// Whether an external request loses header `name` (lower case): the one screened pass
/// over the request's names that sanitises what a client may not send.
pub fn removed_from_external(name: &str, edge: bool) -> bool {
    name.starts_with("x-envoy-")
        && (INTERNAL_ONLY_ROUTER_HEADERS.contains(&name)
            || (edge && EDGE_REMOVED_HEADERS.contains(&name)))
}

/// Names the proxied path reads or writes on every request, parsed once: a lookup by text
/// parses the name each time.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// See [`X_REQUEST_ID`].
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// See [`X_REQUEST_ID`].
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// See [`X_REQUEST_ID`].
pub const X_ENVOY_EXTERNAL_ADDRESS: HeaderName =
    HeaderName::from_static("x-envoy-external-address");
/// See [`X_REQUEST_ID`].
pub const X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
/// See [`X_REQUEST_ID`].
pub const X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
/// See [`X_REQUEST_ID`].
pub const X_ENVOY_OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");
/// See [`X_REQUEST_ID`].
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Removes every header whose (lower-case) name `doomed` picks, such as a list of names or
/// a prefix. A request carries a handful of headers, so one pass over them is far cheaper
/// than a removal per name, each of which parses and hashes the name; on the proxied path
/// that was tens of lookups per request.
pub fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&str) -> bool) {
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|k| doomed(k.as_str()))
        .cloned()
        .collect();
    for name in present {
        headers.remove(name);
    }
}

/// The request's `:authority` as the client sent it (the absolute URI's, else `Host`),
/// what RBAC, tracing and ext_authz read.
pub fn authority<B>(req: &http::Request<B>) -> &str {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or_default()
}

/// Whether a request is gRPC (`content-type: application/grpc*`): gRPC requests get
/// gRPC-shaped local replies and their `grpc-status` read as the outcome.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Removes hop-by-hop headers, including those named in `connection`, keeping `te:
/// trailers` (gRPC needs it) and, for upgrades, `connection`/`upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over the names then spares the lookups below.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(&k.as_str())) {
        return;
    }
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    let te_trailers = headers
        .get(http::header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    let upgrade = headers.get(http::header::UPGRADE).cloned();
    remove_where(headers, |name| HOP_BY_HOP.contains(&name));
    for n in named {
        if n != "upgrade" || !keep_upgrade {
            headers.remove(n.as_str());
        }
    }
    if te_trailers {
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        if let Some(u) = upgrade {
            headers.insert(http::header::UPGRADE, u);
            headers.insert(
                http::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            );
        }
    }
}

/// Applies one level of configured mutations (removals first, then additions).
pub fn apply(headers: &mut HeaderMap, m: &HeaderMutations, record: &Record) {
    if m.is_empty() {
        return;
    }
    for name in &m.remove {
        headers.remove(name);
    }
    for add in &m.add {
        let rendered = match &add.value {
            HeaderTemplate::Literal(s) => s.clone(),
            HeaderTemplate::Formatted(f) => f.render(record),
        };
        if rendered.is_empty() && !add.keep_empty {
            continue;
        }
        let Ok(value) = HeaderValue::from_str(&rendered) else {
            continue;
        };
        set(headers, &add.name, value, add.action);
    }
}

/// Adds one header value as `action` says (route header mutations, ext_authz answers).
pub fn set(headers: &mut HeaderMap, name: &HeaderName, value: HeaderValue, action: AppendAction) {
    let present = headers.contains_key(name);
    match action {
        AppendAction::AppendIfExistsOrAdd => {
            headers.append(name.clone(), value);
        }
        AppendAction::AddIfAbsent if !present => {
            headers.insert(name.clone(), value);
        }
        AppendAction::OverwriteIfExistsOrAdd => {
            headers.insert(name.clone(), value);
        }
        AppendAction::OverwriteIfExists if present => {
            headers.insert(name.clone(), value);
        }
        _ => {}
    }
}

/// A random (version 4) UUID, as Envoy's default request-id extension generates, written
/// without intermediate allocations.
pub fn uuid_v4() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [0u8; 36];
    let mut i = 0;
    for (n, byte) in b.iter().enumerate() {
        if matches!(n, 4 | 6 | 8 | 10) {
            out[i] = b'-';
            i += 1;
        }
        out[i] = HEX[(byte >> 4) as usize];
        out[i + 1] = HEX[(byte & 0x0f) as usize];
        i += 2;
    }
    HeaderValue::from_bytes(&out).expect("hex digits and dashes are valid header bytes")
}

/// The client address as the HCM determines it: the peer with `use_remote_address`,
/// otherwise the `xff_num_trusted_hops`+1-th address from the right of x-forwarded-for.
pub fn downstream_address(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    use_remote: bool,
    trusted_hops: u32,
) -> Option<IpAddr> {
    let xff: Vec<IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .filter_map(|s| s.parse().ok())
        .collect();
    if use_remote {
        if trusted_hops == 0 {
            return peer;
        }
        return xff
            .iter()
            .rev()
            .nth(trusted_hops as usize - 1)
            .copied()
            .or(peer);
    }
    xff.iter()
        .rev()
        .nth(trusted_hops as usize)
        .copied()
        .or(if xff.is_empty() { peer } else { None })
}

/// Appends `ip` to x-forwarded-for.
pub fn append_xff(headers: &mut HeaderMap, ip: IpAddr) {
    let new = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing},{ip}"),
        _ => ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&new) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// Entries in each thread's cache of decimal header values.
const DECIMAL_CACHE_SLOTS: usize = 64;

/// A header value holding `n` in decimal, as the router's `x-envoy-*-ms` and attempt-count
/// headers carry it. The values repeat (a route's timeout, service times of a few
/// milliseconds), so a small per-thread cache, indexed by `n` modulo its size, hands out
/// shared copies instead of formatting into a new allocation per request.
pub fn decimal_value(n: u64) -> HeaderValue {
    thread_local! {
        static CACHE: std::cell::RefCell<[Option<(u64, HeaderValue)>; DECIMAL_CACHE_SLOTS]> =
            const { std::cell::RefCell::new([const { None }; DECIMAL_CACHE_SLOTS]) };
    }
    CACHE.with_borrow_mut(|cache| {
        let slot = &mut cache[(n % DECIMAL_CACHE_SLOTS as u64) as usize];
        match slot {
            Some((cached, value)) if *cached == n => value.clone(),
            _ => slot.insert((n, HeaderValue::from(n))).1.clone(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_only_router_headers_share_the_prefix_their_removal_screens_for() {
        // The connection manager looks the list up only for names with this prefix.
        for name in INTERNAL_ONLY_ROUTER_HEADERS
            .iter()
            .chain(&EDGE_REMOVED_HEADERS)
        {
            assert!(name.starts_with("x-envoy-"), "{name}");
        }
    }

    #[test]
    fn decimal_values_are_right_whether_cached_or_not() {
        // 15000 and 15064 share a cache slot; each must still read as itself.
        for n in [0, 7, 15000, 15064, 15000, 7, u64::MAX] {
            assert_eq!(decimal_value(n).to_str().unwrap(), n.to_string());
        }
    }

    #[test]
    fn xff_trust() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.1.1.1, 2.2.2.2".parse().unwrap());
        let peer = Some("9.9.9.9".parse().unwrap());
        assert_eq!(downstream_address(&h, peer, true, 0), peer);
        assert_eq!(
            downstream_address(&h, peer, true, 1),
            Some("2.2.2.2".parse().unwrap())
        );
        assert_eq!(
            downstream_address(&h, peer, false, 0),
            Some("2.2.2.2".parse().unwrap())
        );
        assert_eq!(
            downstream_address(&h, peer, false, 1),
            Some("1.1.1.1".parse().unwrap())
        );
        append_xff(&mut h, "3.3.3.3".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2,3.3.3.3");
    }

    #[test]
    fn hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-foo".parse().unwrap());
        h.insert("x-foo", "1".parse().unwrap());
        h.insert("te", "trailers, gzip".parse().unwrap());
        h.insert("keep-alive", "5".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn uuid_shape() {
        let u = uuid_v4();
        let u = u.to_str().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_eq!(u.matches('-').count(), 4);
        assert_ne!(uuid_v4(), uuid_v4());
    }
}
