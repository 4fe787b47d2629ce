//! Unwrapping of `udpa.type.v1.TypedStruct` and `xds.type.v3.TypedStruct`.
//!
//! Istio wraps some typed configs in a TypedStruct: `{"@type": ".../TypedStruct",
//! "type_url": "<real type>", "value": {<proto3 JSON of the real message>}}`. Envoy converts
//! the struct to the real message through JSON; we do the same before decoding, which also
//! means `/config_dump` shows the real message rather than the wrapper.
//!
//! Over xDS the wrapper arrives encoded, anywhere inside a resource (istiod sends
//! `istio_authn`, metadata exchange and stats configs this way): [`unwrap_encoded`]
//! rewrites those `Any`s in the encoded resource the same way.

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage};
use serde_json::{Map, Value};

const TYPED_STRUCT_URLS: [&str; 2] = ["udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"];

/// Whether `type_name` (a message name, no URL prefix) is one of the TypedStruct wrappers.
pub(crate) fn is_typed_struct(type_name: &str) -> bool {
    TYPED_STRUCT_URLS.contains(&type_name)
}

/// The `Any` type URL a TypedStruct's `type_url` stands for. Envoy reads the message name
/// after the last '/', so a bare name is accepted too (istio/proxy's own test configs use
/// one); `Any` needs the prefix.
pub(crate) fn inner_type_url(type_url: &str) -> std::borrow::Cow<'_, str> {
    if type_url.contains('/') {
        std::borrow::Cow::Borrowed(type_url)
    } else {
        std::borrow::Cow::Owned(format!("type.googleapis.com/{type_url}"))
    }
}

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
    if !is_typed_struct(crate::descriptors::type_name_of_url(type_url)) {
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
    inner.insert(
        "@type".into(),
        Value::String(inner_type_url(inner_url).into_owned()),
    );
    Some(inner)
}

/// A TypedStruct as encoded (both kinds share the layout): the real type and, still
/// encoded, its `google.protobuf.Struct` of proto3 JSON fields.
#[derive(Clone, PartialEq, Message)]
struct EncodedTypedStruct {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// Rewrites every TypedStruct `Any` inside the encoded message `bytes` of type
/// `full_name` into the `Any` it stands for. `Ok(None)` when there is none, the common
/// case, decided without decoding: the wrapper's type URL would appear verbatim.
pub fn unwrap_encoded(full_name: &str, bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
    if !mentions_typed_struct(bytes) {
        return Ok(None);
    }
    let pool = crate::descriptors::hold();
    let descriptor = pool
        .get_message_by_name(full_name)
        .ok_or_else(|| format!("unknown message type {full_name}"))?;
    let mut message = DynamicMessage::decode(descriptor, bytes).map_err(|e| e.to_string())?;
    Ok(unwrap_message(&pool, &mut message)?.then(|| message.encode_to_vec()))
}

fn mentions_typed_struct(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"TypedStruct")
}

/// Unwraps inside `message`; whether anything changed.
fn unwrap_message(pool: &DescriptorPool, message: &mut DynamicMessage) -> Result<bool, String> {
    if message.descriptor().full_name() == "google.protobuf.Any" {
        return unwrap_any(pool, message);
    }
    let mut changed = false;
    for (_, value) in message.fields_mut() {
        changed |= unwrap_value(pool, value)?;
    }
    Ok(changed)
}

fn unwrap_value(pool: &DescriptorPool, value: &mut prost_reflect::Value) -> Result<bool, String> {
    use prost_reflect::Value as V;
    let mut changed = false;
    match value {
        V::Message(m) => changed = unwrap_message(pool, m)?,
        V::List(items) => {
            for item in items {
                changed |= unwrap_value(pool, item)?;
            }
        }
        V::Map(entries) => {
            for item in entries.values_mut() {
                changed |= unwrap_value(pool, item)?;
            }
        }
        _ => {}
    }
    Ok(changed)
}

/// A TypedStruct `Any` becomes the real message; any other `Any` of a known type is
/// searched in turn.
fn unwrap_any(pool: &DescriptorPool, any: &mut DynamicMessage) -> Result<bool, String> {
    use prost_reflect::Value as V;
    let type_url = match any.get_field_by_name("type_url").as_deref() {
        Some(V::String(s)) => s.clone(),
        _ => return Ok(false),
    };
    let bytes = match any.get_field_by_name("value").as_deref() {
        Some(V::Bytes(b)) => b.clone(),
        _ => Default::default(),
    };
    if !mentions_typed_struct(&bytes) && !type_url.ends_with("TypedStruct") {
        return Ok(false);
    }
    let type_name = crate::descriptors::type_name_of_url(&type_url);
    let (url, encoded) = if is_typed_struct(type_name) {
        let wrapper = EncodedTypedStruct::decode(bytes.as_ref())
            .map_err(|e| format!("malformed {type_url}: {e}"))?;
        let fields = pool
            .get_message_by_name("google.protobuf.Struct")
            .ok_or("google.protobuf.Struct is not in the pool")?;
        let fields = DynamicMessage::decode(fields, wrapper.value.as_slice())
            .map_err(|e| format!("malformed {type_url}: {e}"))?;
        let fields = serde_json::to_value(&fields).map_err(|e| e.to_string())?;
        let mut json = Value::Object(Map::from_iter([
            ("@type".to_string(), Value::String(type_url.clone())),
            ("type_url".to_string(), Value::String(wrapper.type_url)),
            ("value".to_string(), fields),
        ]));
        unwrap_typed_structs(&mut json);
        let url = match json.as_object_mut().and_then(|o| o.remove("@type")) {
            Some(Value::String(url)) => url,
            _ => return Err(format!("malformed {type_url}")),
        };
        let inner = crate::json::to_bytes(json, crate::descriptors::type_name_of_url(&url), false)
            .map_err(|e| format!("TypedStruct of {url}: {e}"))?;
        (url, inner)
    } else {
        let Some(descriptor) = pool.get_message_by_name(type_name) else {
            return Ok(false);
        };
        let mut inner =
            DynamicMessage::decode(descriptor, bytes.as_ref()).map_err(|e| e.to_string())?;
        if !unwrap_message(pool, &mut inner)? {
            return Ok(false);
        }
        (type_url, inner.encode_to_vec())
    };
    any.set_field_by_name("type_url", V::String(url));
    any.set_field_by_name("value", V::Bytes(encoded.into()));
    Ok(true)
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

    /// A listener whose one filter's config is an encoded TypedStruct of `fields`
    /// standing for a TcpProxy.
    fn listener_with_wrapped_tcp_proxy(fields: &[(&str, &str)]) -> Vec<u8> {
        use crate::proto::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
        let fields = prost_types::Struct {
            fields: fields
                .iter()
                .map(|(k, v)| {
                    let v = prost_types::value::Kind::StringValue(v.to_string());
                    (k.to_string(), prost_types::Value { kind: Some(v) })
                })
                .collect(),
        };
        let wrapper = EncodedTypedStruct {
            type_url: "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
                .into(),
            value: fields.encode_to_vec(),
        };
        let any = crate::proto::google::protobuf::Any {
            type_url: "type.googleapis.com/udpa.type.v1.TypedStruct".into(),
            value: wrapper.encode_to_vec(),
        };
        Listener {
            name: "l".into(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "tcp".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(any)),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn unwraps_encoded_typed_structs_inside_a_resource() {
        use crate::proto::envoy::config::listener::v3::{filter, Listener};
        use crate::proto::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
        let bytes = listener_with_wrapped_tcp_proxy(&[("stat_prefix", "s"), ("cluster", "c")]);
        let full = "envoy.config.listener.v3.Listener";
        let out = unwrap_encoded(full, &bytes).unwrap().expect("rewritten");
        let listener = Listener::decode(out.as_slice()).unwrap();
        let Some(filter::ConfigType::TypedConfig(any)) =
            &listener.filter_chains[0].filters[0].config_type
        else {
            panic!("typed config");
        };
        assert!(any.type_url.ends_with("tcp_proxy.v3.TcpProxy"));
        let proxy = TcpProxy::decode(any.value.as_slice()).unwrap();
        assert_eq!(proxy.stat_prefix, "s");
        assert!(matches!(
            proxy.cluster_specifier,
            Some(crate::proto::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier::Cluster(ref c)) if c == "c"
        ));
        assert_eq!(unwrap_encoded(full, &out).unwrap(), None, "nothing left");
    }

    #[test]
    fn an_unknown_field_inside_a_typed_struct_is_an_error_naming_it() {
        let bytes = listener_with_wrapped_tcp_proxy(&[("clutser", "c")]);
        let e = unwrap_encoded("envoy.config.listener.v3.Listener", &bytes).unwrap_err();
        assert!(e.contains("clutser"), "{e}");
    }

    #[test]
    fn leaves_other_any_alone() {
        let mut v = json!({"@type": "type.googleapis.com/x.Y", "type_url": "z"});
        let before = v.clone();
        unwrap_typed_structs(&mut v);
        assert_eq!(v, before);
    }
}
