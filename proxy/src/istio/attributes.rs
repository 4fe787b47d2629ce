//! Envoy's standard attributes of a finished stream or connection, as CEL expressions in
//! Istio's metric dimensions read them: `request.*`, `response.*`, `source.*`,
//! `destination.*`, `upstream.*` and `connection.*`, built from the access-log record.

use crate::access_log::record::Record;
use serde_json::{json, Map, Value};

/// A header map as CEL sees it: lowercase names, repeated headers joined by commas.
fn headers(h: &http::HeaderMap) -> Value {
    let mut m = Map::new();
    for (k, v) in h {
        let v = String::from_utf8_lossy(v.as_bytes());
        match m.get_mut(k.as_str()) {
            Some(Value::String(s)) => {
                s.push(',');
                s.push_str(&v);
            }
            _ => {
                m.insert(k.as_str().to_string(), Value::String(v.into_owned()));
            }
        }
    }
    Value::Object(m)
}

fn address(a: Option<std::net::SocketAddr>) -> Value {
    a.map_or(
        json!({}),
        |a| json!({"address": a.to_string(), "port": a.port()}),
    )
}

fn header(h: &http::HeaderMap, name: &str) -> Value {
    h.get(name).map_or(Value::Null, |v| {
        json!(String::from_utf8_lossy(v.as_bytes()))
    })
}

/// The attributes of `r` (`http`: a request stream, else a TCP connection), merged into
/// `into` (an object).
pub fn add(into: &mut Map<String, Value>, r: &Record, http: bool) {
    if http {
        let path = r.path.as_deref().unwrap_or_default();
        let (url_path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut request = json!({
            "path": path, "url_path": url_path, "query": query,
            "host": r.authority.as_deref().unwrap_or_default(),
            "scheme": r.scheme.unwrap_or_default(),
            "method": r.method.as_ref().map(|m| m.to_string()).unwrap_or_default(),
            "headers": headers(&r.request_headers),
            "protocol": r.protocol,
            "size": r.bytes_received,
            "total_size": r.request_headers_bytes() + r.bytes_received,
            "duration": r.duration.as_secs_f64(),
        });
        for (attribute, name) in [
            ("id", "x-request-id"),
            ("referer", "referer"),
            ("useragent", "user-agent"),
        ] {
            let v = header(&r.request_headers, name);
            if !v.is_null() {
                request[attribute] = v;
            }
        }
        into.insert("request".into(), request);
        let mut response = json!({
            "code": r.response_code,
            "code_details": r.response_code_details,
            "flags": r.flags.to_string(),
            "headers": headers(&r.response_headers),
            "trailers": headers(&r.response_trailers),
            "size": r.bytes_sent,
            "total_size": r.response_headers_bytes() + r.bytes_sent,
        });
        if let Some(s) = r.grpc_status() {
            response["grpc_status"] = json!(s);
        }
        into.insert("response".into(), response);
    } else {
        into.insert("request".into(), json!({}));
        into.insert("response".into(), json!({"code": r.response_code}));
    }
    into.insert("source".into(), address(r.downstream_remote));
    into.insert("destination".into(), address(r.downstream_local));
    let upstream = match &r.upstream_host {
        Some(h) => match h.parse() {
            Ok(a) => address(Some(a)),
            Err(_) => json!({"address": &**h}),
        },
        None => json!({}),
    };
    into.insert("upstream".into(), upstream);
    // The record keeps the client certificate's URI SAN: every mesh certificate has one.
    let mut connection = json!({"id": r.connection_id, "mtls": r.peer_uri_san.is_some()});
    if let Some(sni) = &r.requested_server_name {
        connection["requested_server_name"] = json!(sni);
    }
    into.insert("connection".into(), connection);
}
