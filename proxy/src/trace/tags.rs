//! The tags of a request's span, as Envoy's connection manager writes them, plus the
//! configured custom tags.

use super::{CustomTag, TracingConfig};
use crate::access_log::record::Record;

/// Envoy's standard HTTP span tags for `record`, then `config`'s custom tags.
pub fn of(record: &Record, config: &TracingConfig) -> Vec<(String, String)> {
    let header = |name: &str| {
        record
            .request_headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut url = format!(
        "{}://{}{}",
        record.scheme.unwrap_or("http"),
        header("host")
            .or_else(|| record.authority.as_deref().map(str::to_string))
            .unwrap_or_default(),
        record.path.as_deref().unwrap_or("/")
    );
    if url.len() > config.max_path_tag_length {
        let mut end = config.max_path_tag_length;
        while !url.is_char_boundary(end) {
            end -= 1;
        }
        url.truncate(end);
    }
    let cluster = record.upstream_cluster.as_deref().map(str::to_string);
    let mut tags = vec![
        ("component", "proxy".to_string()),
        ("node_id", crate::istio::local_node().0.to_string()),
        (
            "guid:x-request-id",
            header("x-request-id").unwrap_or_default(),
        ),
        ("http.url", url),
        (
            "http.method",
            record
                .method
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        ),
        (
            "downstream_cluster",
            header("x-envoy-downstream-service-cluster").unwrap_or_else(|| "-".into()),
        ),
        (
            "user_agent",
            header("user-agent").unwrap_or_else(|| "-".into()),
        ),
        ("http.protocol", record.protocol.to_string()),
        (
            "peer.address",
            record
                .downstream_remote
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
        ),
        ("request_size", record.bytes_received.to_string()),
        ("response_size", record.bytes_sent.to_string()),
        ("http.status_code", record.response_code.to_string()),
        ("response_flags", record.flags.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect::<Vec<_>>();
    if let Some(c) = cluster {
        tags.push(("upstream_cluster".into(), c.clone()));
        tags.push(("upstream_cluster.name".into(), c));
    }
    if record.response_code == 0 || record.response_code >= 500 {
        tags.push(("error".into(), "true".into()));
    }
    for t in &config.custom_tags {
        match t {
            CustomTag::Literal(name, value) => tags.push((name.clone(), value.clone())),
            CustomTag::Metadata(name, filter, key, default) => {
                let value = record.metadata.get(filter, key).map(str::to_string);
                if let Some(v) = value.or_else(|| default.clone()) {
                    tags.push((name.clone(), v));
                }
            }
            CustomTag::RequestHeader(name, h, default) => {
                let value = record
                    .request_headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| default.clone());
                if let Some(v) = value {
                    tags.push((name.clone(), v));
                }
            }
        }
    }
    tags
}
