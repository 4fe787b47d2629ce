//! Proto3 JSON (and YAML) for Envoy messages, through the descriptor pool.
//!
//! Decoding goes JSON -> `DynamicMessage` (which knows field names, enums by name and `Any`
//! with `@type`) -> protobuf bytes -> the prost struct from `envoy-types`. Errors carry the
//! JSON path of the offending field so a user sees `static_resources.listeners[0].address:
//! ...` rather than a line number in a file they did not write.

use crate::descriptors;
use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, SerializeOptions};
use serde_json::Value;
use std::fmt;

/// A JSON or YAML document that could not be turned into the message it should describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Dotted path of the field at fault (`static_resources.clusters[2].type`), empty for the root.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for JsonError {}

fn root_error(message: impl Into<String>) -> JsonError {
    JsonError {
        path: String::new(),
        message: message.into(),
    }
}

/// Parses a JSON or YAML text (YAML 1.2 is a superset of JSON) into a JSON value.
pub fn parse_document(text: &str) -> Result<Value, JsonError> {
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return Ok(value);
    }
    let value: Value = serde_yaml::from_str(text).map_err(|e| root_error(e.to_string()))?;
    Ok(value)
}

/// Merges `overlay` into `base` the way protobuf `MergeFrom` merges messages, which is how
/// Envoy applies `--config-yaml` over `--config-path`: nested messages merge field by field,
/// repeated fields are appended, scalars and `Any` values are replaced.
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base_map), Value::Object(overlay_map))
            if !base_map.contains_key("@type") =>
        {
            for (key, value) in overlay_map {
                match base_map.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base_map.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(base_items), Value::Array(overlay_items)) => base_items.extend(overlay_items),
        (slot, value) => *slot = value,
    }
}

/// Decodes a proto3 JSON value into the prost message `M` whose full protobuf name is
/// `full_name`. With `allow_unknown_fields`, fields the descriptor does not know are skipped
/// (Envoy's `--allow-unknown-static-fields`); otherwise they are errors.
pub fn decode<M: Message + Default>(
    value: Value,
    full_name: &str,
    allow_unknown_fields: bool,
) -> Result<M, JsonError> {
    decode_bytes(
        &to_bytes(value, full_name, allow_unknown_fields)?,
        full_name,
    )
}

/// Encodes a proto3 JSON value (TypedStructs unwrapped) as the protobuf bytes of
/// `full_name`. The direct transcoder ([`crate::transcode`]) handles what configs are made
/// of in one linear pass; whatever it leaves goes through the reflective path, which also
/// names every error by its JSON path.
pub fn to_bytes(
    value: Value,
    full_name: &str,
    allow_unknown_fields: bool,
) -> Result<Vec<u8>, JsonError> {
    let descriptor = descriptors::message(full_name)
        .ok_or_else(|| root_error(format!("unknown message type {full_name}")))?;
    if let Ok(bytes) = crate::transcode::to_bytes(&value, &descriptor, allow_unknown_fields) {
        return Ok(bytes);
    }
    Ok(decode_dynamic(value, full_name, allow_unknown_fields)?.encode_to_vec())
}

/// Encodes a JSON text of `full_name` (TypedStructs unwrapped) as protobuf bytes in one
/// pass over the text, with no tree built, when the direct transcoder handles all of it.
/// `None` when it does not (YAML, malformed JSON, a construct left to the reflective
/// path): then [`parse_document`] and [`to_bytes`] encode the text or name its error.
pub fn text_to_bytes(text: &str, full_name: &str, allow_unknown_fields: bool) -> Option<Vec<u8>> {
    let descriptor = descriptors::message(full_name)?;
    crate::transcode::text_to_bytes(text, &descriptor, allow_unknown_fields).ok()
}

/// Decodes a proto3 JSON value into a reflective message (TypedStructs unwrapped): the
/// path for what [`crate::transcode`] leaves, and the one that names errors by JSON path.
/// Public so the transcoder's fuzz target can hold the two paths to agreement.
pub fn decode_dynamic(
    mut value: Value,
    full_name: &str,
    allow_unknown_fields: bool,
) -> Result<DynamicMessage, JsonError> {
    crate::typed_struct::unwrap_typed_structs(&mut value);
    let descriptor = descriptors::message(full_name)
        .ok_or_else(|| root_error(format!("unknown message type {full_name}")))?;
    let options = DeserializeOptions::new().deny_unknown_fields(!allow_unknown_fields);
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(value, &mut track);
    DynamicMessage::deserialize_with_options(descriptor, tracked, &options).map_err(|e| JsonError {
        path: track
            .path()
            .to_string()
            .trim_start_matches('.')
            .replace('?', ""),
        message: e.to_string(),
    })
}

/// Decodes the protobuf bytes of an `Any` payload into `M`, naming the type on failure.
pub fn decode_bytes<M: Message + Default>(bytes: &[u8], full_name: &str) -> Result<M, JsonError> {
    M::decode(bytes).map_err(|e| root_error(format!("malformed {full_name}: {e}")))
}

/// Encodes a prost message as proto3 JSON with Envoy's conventions for `/config_dump`:
/// snake_case field names, `Any` with `@type`, enums by name, default values omitted.
pub fn encode<M: Message>(message: &M, full_name: &str) -> Result<Value, JsonError> {
    let descriptor = descriptors::message(full_name)
        .ok_or_else(|| root_error(format!("unknown message type {full_name}")))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|e| root_error(e.to_string()))?;
    let options = SerializeOptions::new().use_proto_field_name(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| root_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::envoy::config::bootstrap::v3::Bootstrap;
    use serde_json::json;

    const BOOTSTRAP: &str = "envoy.config.bootstrap.v3.Bootstrap";

    #[test]
    fn decodes_any_and_enums_by_name() {
        let v = json!({"static_resources": {"clusters": [{"name": "c", "type": "STRICT_DNS",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
              "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
              "explicit_http_config": {"http2_protocol_options": {}}}}}]}});
        let b: Bootstrap = decode(v, BOOTSTRAP, false).unwrap();
        let c = &b.static_resources.unwrap().clusters[0];
        assert_eq!(c.name, "c");
        assert_eq!(c.typed_extension_protocol_options.len(), 1);
    }

    #[test]
    fn unknown_field_names_its_path_unless_allowed() {
        let v = json!({"static_resources": {"clusters": [{"name": "c", "bogus": 1}]}});
        let err = decode::<Bootstrap>(v.clone(), BOOTSTRAP, false).unwrap_err();
        assert_eq!(err.path, "static_resources.clusters[0]", "{err}");
        assert!(err.message.contains("bogus"), "{err}");
        assert!(decode::<Bootstrap>(v, BOOTSTRAP, true).is_ok());
    }

    #[test]
    fn wrong_type_names_its_path() {
        let v = json!({"admin": {"address": {"socket_address": {"port_value": "x"}}}});
        let err = decode::<Bootstrap>(v, BOOTSTRAP, false).unwrap_err();
        assert_eq!(err.path, "admin.address.socket_address.port_value", "{err}");
    }

    #[test]
    fn merge_follows_merge_from() {
        let mut base = json!({"a": {"b": 1, "c": [1]}, "d": "x"});
        merge(&mut base, json!({"a": {"c": [2], "e": true}, "d": "y"}));
        assert_eq!(
            base,
            json!({"a": {"b": 1, "c": [1, 2], "e": true}, "d": "y"})
        );
    }

    #[test]
    fn yaml_and_json_parse_alike() {
        assert_eq!(
            parse_document("a: 1\nb: [x]").unwrap(),
            json!({"a": 1, "b": ["x"]})
        );
        assert_eq!(parse_document("{\"a\": 1}").unwrap(), json!({"a": 1}));
        assert!(parse_document("a: [").is_err());
    }

    #[test]
    fn encode_round_trips_through_json() {
        let v = json!({"node": {"id": "n1", "cluster": "c1"}});
        let b: Bootstrap = decode(v.clone(), BOOTSTRAP, false).unwrap();
        assert_eq!(encode(&b, BOOTSTRAP).unwrap(), v);
    }
}
