//! Unwrapping of `udpa.type.v1.TypedStruct` and `xds.type.v3.TypedStruct`.
//!
//! Istio wraps some typed configs in a TypedStruct: `{"@type": ".../TypedStruct",
//! "type_url": "<real type>", "value": {<proto3 JSON of the real message>}}`. Envoy converts
//! the struct to the real message through JSON; we do the same before decoding, which also
//! means `/config_dump` shows the real message rather than the wrapper.

use serde_json::{Map, Value};

const TYPED_STRUCT_URLS: [&str; 2] = ["udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"];

/// Rewrites, everywhere in `value`, each TypedStruct `Any` into the `Any` it stands for.
pub fn unwrap_typed_structs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(unwrapped) = unwrap_one(map) {
                *map = unwrapped;
            }
            map.values_mut().for_each(unwrap_typed_structs);
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_typed_structs),
        _ => {}
    }
}

fn unwrap_one(map: &Map<String, Value>) -> Option<Map<String, Value>> {
    let type_url = map.get("@type")?.as_str()?;
    if !TYPED_STRUCT_URLS.contains(&crate::descriptors::type_name_of_url(type_url)) {
        return None;
    }
    let inner_url = map
        .get("type_url")
        .or_else(|| map.get("typeUrl"))?
        .as_str()?;
    let mut inner = match map.get("value") {
        Some(Value::Object(fields)) => fields.clone(),
        _ => Map::new(),
    };
    // Envoy reads the message name after the last '/', so a bare name is accepted too
    // (istio/proxy's own test configs use one); `Any` needs the prefix.
    let inner_url = if inner_url.contains('/') {
        inner_url.to_string()
    } else {
        format!("type.googleapis.com/{inner_url}")
    };
    inner.insert("@type".into(), Value::String(inner_url));
    Some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unwraps_nested_typed_structs_of_both_kinds() {
        let mut v = json!({"a": [{"typed_config": {
            "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": "type.googleapis.com/x.Y",
            "value": {"k": {"@type": "type.googleapis.com/xds.type.v3.TypedStruct",
                            "type_url": "type.googleapis.com/x.Z", "value": {"n": 1}}}}}]});
        unwrap_typed_structs(&mut v);
        assert_eq!(
            v,
            json!({"a": [{"typed_config": {"@type": "type.googleapis.com/x.Y",
                "k": {"@type": "type.googleapis.com/x.Z", "n": 1}}}]})
        );
    }

    #[test]
    fn bare_inner_type_names_get_the_any_prefix() {
        let mut v = json!({"@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": "x.Y", "value": {}});
        unwrap_typed_structs(&mut v);
        assert_eq!(v, json!({"@type": "type.googleapis.com/x.Y"}));
    }

    #[test]
    fn leaves_other_any_alone() {
        let mut v = json!({"@type": "type.googleapis.com/x.Y", "type_url": "z"});
        let before = v.clone();
        unwrap_typed_structs(&mut v);
        assert_eq!(v, before);
    }
}
