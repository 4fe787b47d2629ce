//! Envoy's access-log format strings (config istiod writes from a user's Telemetry).

use meshproxy::access_log::format::Format;
use meshproxy::access_log::record::Record;

/// A text format: compiled, then rendered for a request; a format without operators
/// renders as itself.
pub fn format(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(format) = Format::text(&text) else {
        return;
    };
    let mut record = Record::new(1);
    record.method = Some(http::Method::POST);
    record.path = Some("/a/ü?x=%41".into());
    record.authority = Some("example.com".into());
    record.response_code = 503;
    record
        .request_headers
        .insert("user-agent", http::HeaderValue::from_static("curl/8"));
    record.upstream_host = Some("10.0.0.1:80".into());
    let line = format.render(&record);
    if !text.contains('%') {
        assert_eq!(line, text);
    }
}
