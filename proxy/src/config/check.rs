//! Enforces the support table ([`super::support`]) over a decoded message tree.
//!
//! The walk covers every set field, list element, map value and `Any` payload. A field not
//! in the table, or an `Any` of a type the table does not know, is an error naming its path;
//! fields accepted without effect are collected so `--mode validate` can report them.

use super::error::{join, ConfigError, Result};
use super::support::{self, Support};
use prost_reflect::{DynamicMessage, ReflectMessage, Value};

/// A field accepted without effect, and why that is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoEffect {
    /// Path of the field.
    pub path: String,
    /// Why ignoring it cannot change traffic.
    pub reason: &'static str,
}

/// Checks `message` (found at `path`) and everything below it against the support table.
pub fn check(message: &DynamicMessage, path: &str, notes: &mut Vec<NoEffect>) -> Result<()> {
    let descriptor = message.descriptor();
    let name = descriptor.full_name();
    if name == "google.protobuf.Any" {
        return check_any(message, path, notes);
    }
    if support::OPAQUE.contains(&name) {
        return Ok(());
    }
    let entry = support::find(name)
        .ok_or_else(|| ConfigError::at(path, format!("unsupported message type {name}")))?;
    for (field, value) in message.fields() {
        let field_path = join(path, field.name());
        match entry.fields.iter().find(|(f, _)| *f == field.name()) {
            None => {
                return Err(ConfigError::at(
                    field_path,
                    format!(
                        "field {} of {name} is not supported by meshproxy",
                        field.name()
                    ),
                ))
            }
            Some((_, Support::NoEffect(reason))) => notes.push(NoEffect {
                path: field_path.clone(),
                reason,
            }),
            Some((_, Support::Honoured)) => {}
        }
        check_value(value, &field_path, notes)?;
    }
    Ok(())
}

fn check_value(value: &Value, path: &str, notes: &mut Vec<NoEffect>) -> Result<()> {
    match value {
        Value::Message(m) => check(m, path, notes),
        Value::List(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_value(v, &format!("{path}[{i}]"), notes)),
        Value::Map(entries) => entries
            .iter()
            .try_for_each(|(k, v)| check_value(v, &format!("{path}[{k:?}]"), notes)),
        _ => Ok(()),
    }
}

fn check_any(any: &DynamicMessage, path: &str, notes: &mut Vec<NoEffect>) -> Result<()> {
    let type_url = match any.get_field_by_name("type_url").as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let bytes = match any.get_field_by_name("value").as_deref() {
        Some(Value::Bytes(b)) => b.clone(),
        _ => Default::default(),
    };
    check_encoded(&type_url, &bytes, path, notes)
}

/// Checks an encoded message of type `type_url` (an `Any` payload, or an xDS resource):
/// its type must be in the table, and so must everything below it.
pub fn check_encoded(
    type_url: &str,
    bytes: &[u8],
    path: &str,
    notes: &mut Vec<NoEffect>,
) -> Result<()> {
    let type_name = xds_client::descriptors::type_name_of_url(type_url);
    if support::find(type_name).is_none() {
        return Err(ConfigError::at(
            path,
            format!("unsupported typed_config {type_url}"),
        ));
    }
    let descriptor = xds_client::descriptors::message(type_name)
        .ok_or_else(|| ConfigError::at(path, format!("unknown type {type_url}")))?;
    let inner = DynamicMessage::decode(descriptor, bytes)
        .map_err(|e| ConfigError::at(path, format!("malformed {type_url}: {e}")))?;
    check(&inner, path, notes)
}

/// Decodes a prost message into its dynamic form and checks it.
pub fn check_proto<M: prost::Message>(
    message: &M,
    full_name: &str,
    path: &str,
    notes: &mut Vec<NoEffect>,
) -> Result<()> {
    let descriptor = xds_client::descriptors::message(full_name)
        .ok_or_else(|| ConfigError::at(path, format!("unknown message type {full_name}")))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|e| ConfigError::at(path, e.to_string()))?;
    check(&dynamic, path, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use xds_client::proto::envoy::config::bootstrap::v3::Bootstrap;

    const BOOTSTRAP: &str = "envoy.config.bootstrap.v3.Bootstrap";

    fn run(v: serde_json::Value) -> (Result<()>, Vec<NoEffect>) {
        let b: Bootstrap = xds_client::json::decode(v, BOOTSTRAP, false).unwrap();
        let mut notes = vec![];
        (check_proto(&b, BOOTSTRAP, "", &mut notes), notes)
    }

    #[test]
    fn unsupported_field_is_named_by_path() {
        let (r, _) = run(json!({"static_resources": {"clusters": [{"name": "a"},
            {"name": "b", "dns_jitter": "1s"}]}}));
        let e = r.unwrap_err();
        assert_eq!(e.path, "static_resources.clusters[1].dns_jitter");
    }

    #[test]
    fn unsupported_extension_is_named_by_path() {
        let (r, _) = run(json!({"static_resources": {"listeners": [{"name": "l",
            "filter_chains": [{"filters": [{"name": "x", "typed_config": {
              "@type": "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"}}]}]}]}}));
        let e = r.unwrap_err();
        assert_eq!(
            e.path,
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
        );
        assert!(e.message.contains("RedisProxy"), "{e}");
    }

    #[test]
    fn original_src_mark_is_honoured_and_bind_port_refused() {
        let listener = |src: serde_json::Value| {
            json!({"static_resources": {"listeners": [{"name": "l", "transparent": true,
                "listener_filters": [{"name": "src", "typed_config": src}],
                "filter_chains": []}]}})
        };
        let t = "type.googleapis.com/envoy.extensions.filters.listener.original_src.v3.OriginalSrc";
        run(listener(json!({"@type": t, "mark": 1337}))).0.unwrap();
        let e = run(listener(json!({"@type": t, "bind_port": true})))
            .0
            .unwrap_err();
        assert_eq!(
            e.path,
            "static_resources.listeners[0].listener_filters[0].typed_config.bind_port"
        );
    }

    #[test]
    fn fields_inside_any_are_checked_and_notes_collected() {
        let (r, notes) = run(json!({"stats_flush_interval": "5s",
            "static_resources": {"listeners": [{"name": "l",
            "filter_chains": [{"filters": [{"name": "x", "typed_config": {
              "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
              "stat_prefix": "s", "generate_request_id": true, "represent_ipv4_remote_address_as_ipv4_mapped_ipv6": true}}]}]}]}}));
        let e = r.unwrap_err();
        assert!(
            e.path
                .ends_with("typed_config.represent_ipv4_remote_address_as_ipv4_mapped_ipv6"),
            "{e}"
        );
        assert!(notes.is_empty());
        let (r, notes) = run(json!({"stats_flush_interval": "5s"}));
        r.unwrap();
        assert_eq!(notes[0].path, "stats_flush_interval");
    }
}
