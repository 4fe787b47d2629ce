use super::*;
use crate::descriptors;
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::json;
use std::path::Path;

const BOOTSTRAP: &str = "envoy.config.bootstrap.v3.Bootstrap";
const ANY: &str = "google.protobuf.Any";

/// A message's bytes as JSON with every `Any` expanded and map keys sorted, so two
/// encodings that differ only in map-entry order compare equal.
fn canonical(bytes: &[u8], desc: &MessageDescriptor) -> Value {
    let message = DynamicMessage::decode(desc.clone(), bytes).expect("valid protobuf");
    message
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .expect("serializable")
}

/// What the fast path did with `value`: `true` when it encoded it, `false` when it left it
/// to the reflective path. Either way it must not disagree with the reflective path, and
/// reading the value's JSON text must do what reading the value does.
fn agrees(value: &Value, full_name: &str) -> bool {
    let desc = descriptors::message(full_name).expect("known message");
    let reflective = crate::json::decode_dynamic(value.clone(), full_name, false);
    let from_text = text_to_bytes(&value.to_string(), &desc, false);
    let from_tree = to_bytes(value, &desc, false);
    assert_eq!(from_text.is_ok(), from_tree.is_ok(), "{value}");
    if let (Ok(text), Ok(tree)) = (&from_text, &from_tree) {
        assert_eq!(canonical(text, &desc), canonical(tree, &desc), "{value}");
    }
    match from_tree {
        Err(Fallback) => false,
        Ok(bytes) => {
            let reflective = reflective.unwrap_or_else(|e| {
                panic!("fast path accepted what the reflective path refuses ({e}): {value}")
            });
            assert_eq!(
                canonical(&bytes, &desc),
                canonical(&prost::Message::encode_to_vec(&reflective), &desc),
                "{value}"
            );
            true
        }
    }
}

fn fixture(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures")
        .join(relative)
}

#[test]
fn every_istio_bootstrap_takes_the_fast_path_and_decodes_alike() {
    let _pool = descriptors::hold();
    let dir = fixture("istio/bootstrap");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("bootstrap fixtures") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut value = crate::json::parse_document(&text).unwrap();
        let desc = descriptors::message(BOOTSTRAP).unwrap();
        // The text as pilot-agent wrote it, TypedStructs included, in one pass.
        let raw = text_to_bytes(&text, &desc, false);
        crate::typed_struct::unwrap_typed_structs(&mut value);
        if crate::json::decode_dynamic(value.clone(), BOOTSTRAP, false).is_err() {
            // Refused by the reflective path too (a type Envoy 1.40 does not know).
            assert!(to_bytes(&value, &desc, false).is_err());
            assert!(raw.is_err());
            continue;
        }
        assert!(agrees(&value, BOOTSTRAP), "{} fell back", path.display());
        let raw = raw.unwrap_or_else(|_| panic!("{} text fell back", path.display()));
        assert_eq!(
            canonical(&raw, &desc),
            canonical(&to_bytes(&value, &desc, false).unwrap(), &desc),
            "{}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 20, "only {seen} bootstraps");
}

/// Every typed resource inside the istiod config dumps (listeners, clusters, routes,
/// filters), transcoded as an `Any`.
#[test]
fn resources_of_istiod_config_dumps_decode_alike() {
    fn collect<'a>(value: &'a Value, found: &mut Vec<&'a Value>) {
        match value {
            Value::Object(map) => {
                let url = map.get("@type").and_then(Value::as_str).unwrap_or("");
                if url.contains("/envoy.config.") || url.contains("/envoy.extensions.") {
                    found.push(value);
                }
                map.values().for_each(|v| collect(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, found)),
            _ => {}
        }
    }
    let _pool = descriptors::hold();
    let (mut fast, mut total) = (0, 0);
    for entry in std::fs::read_dir(fixture("istio/config-dumps")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut dump = crate::json::parse_document(&text).unwrap();
        crate::typed_struct::unwrap_typed_structs(&mut dump);
        let mut found = Vec::new();
        collect(&dump, &mut found);
        for resource in found {
            if crate::json::decode_dynamic(resource.clone(), ANY, false).is_err() {
                continue;
            }
            total += 1;
            fast += usize::from(agrees(resource, ANY));
        }
    }
    assert!(total > 100, "only {total} resources");
    assert!(fast * 10 >= total * 9, "fast path took {fast} of {total}");
}

/// Inputs at the edges of proto3 JSON: each is either encoded exactly as the reflective
/// path would, or left to it; `expect_fast` says which the fast path must do.
#[test]
fn edge_cases_are_encoded_alike_or_left_to_the_reflective_path() {
    let _pool = descriptors::hold();
    let cluster = |c: Value| json!({"static_resources": {"clusters": [c]}});
    let cases: Vec<(Value, bool)> = vec![
        // Defaults are not written; presence-carrying wrappers are.
        (
            cluster(json!({"name": "", "type": "STATIC", "per_connection_buffer_limit_bytes": 0})),
            true,
        ),
        (
            cluster(json!({"name": "c", "type": 0, "connect_timeout": "0s"})),
            true,
        ),
        // Enums by number, known and unknown.
        (cluster(json!({"name": "c", "type": 1})), true),
        (cluster(json!({"name": "c", "type": 77})), false),
        (cluster(json!({"name": "c", "type": "NO_SUCH"})), false),
        // Durations.
        (
            cluster(json!({"name": "c", "connect_timeout": "1.5s"})),
            true,
        ),
        (
            cluster(json!({"name": "c", "connect_timeout": "-0.000000001s"})),
            true,
        ),
        (
            cluster(json!({"name": "c", "connect_timeout": "1.s"})),
            false,
        ),
        (
            cluster(json!({"name": "c", "connect_timeout": "1.0000000001s"})),
            false,
        ),
        (cluster(json!({"name": "c", "connect_timeout": 5})), false),
        // Numbers: strings, floats, ranges, negative varints.
        (
            cluster(json!({"name": "c", "per_connection_buffer_limit_bytes": "7"})),
            false,
        ),
        (
            cluster(json!({"name": "c", "per_connection_buffer_limit_bytes": 7.5})),
            false,
        ),
        (
            cluster(json!({"name": "c", "per_connection_buffer_limit_bytes": 4294967296u64})),
            false,
        ),
        (
            cluster(json!({"name": "c", "per_connection_buffer_limit_bytes": 4294967295u64})),
            true,
        ),
        (
            cluster(json!({"name": "c", "lb_subset_config": {"fallback_policy": "ANY_ENDPOINT"}})),
            true,
        ),
        (
            json!({"stats_config": {"histogram_bucket_settings": [{"match": {"exact": "x"}, "buckets": [0.5, 1, 2e3]}]}}),
            true,
        ),
        (
            json!({"watchdogs": {"main_thread_watchdog": {"miss_timeout": "1s", "multikill_threshold": {"value": 0.5}}}}),
            true,
        ),
        // Wrong JSON types.
        (cluster(json!({"name": false})), false),
        (cluster(json!({"name": 5})), false),
        (
            cluster(json!({"name": "c", "respect_dns_ttl": "true"})),
            false,
        ),
        (cluster(json!({"name": "c", "load_assignment": []})), false),
        // Nulls: unset, except in a list.
        (
            cluster(json!({"name": "c", "connect_timeout": null, "health_checks": null})),
            true,
        ),
        (
            cluster(json!({"name": "c", "health_checks": [null]})),
            false,
        ),
        // Field names in both spellings, and both at once.
        (cluster(json!({"name": "c", "connectTimeout": "2s"})), true),
        (
            cluster(json!({"name": "c", "connectTimeout": "2s", "connect_timeout": "3s"})),
            false,
        ),
        (cluster(json!({"name": "c", "no_such_field": 1})), false),
        // A oneof with two members set, one of them not adjacent in field numbers.
        (
            cluster(json!({"name": "c", "type": "STATIC", "cluster_type": {"name": "x"}})),
            false,
        ),
        // Wrappers, Struct and Value in metadata, packed and unpacked lists.
        (
            cluster(
                json!({"name": "c", "max_requests_per_connection": 0, "respect_dns_ttl": true,
            "metadata": {"filter_metadata": {"istio": {"a": null, "b": [1, "x", true, {"c": {}}], "": 0}}},
            "circuit_breakers": {"thresholds": [{"priority": "HIGH", "max_retries": 3}]}}),
            ),
            true,
        ),
        (
            json!({"node": {"metadata": {"LABELS": {"app": "x"}, "n": 1.25, "list": []}}}),
            true,
        ),
        // Any: known payloads, an unknown type, a type URL without a slash, well-known payloads.
        (
            json!({"bootstrap_extensions": [{"name": "x", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}),
            true,
        ),
        (
            json!({"bootstrap_extensions": [{"name": "x", "typed_config": {"@type": "type.googleapis.com/no.Such"}}]}),
            false,
        ),
        (
            json!({"bootstrap_extensions": [{"name": "x", "typed_config": {"@type": "envoy.extensions.filters.http.router.v3.Router"}}]}),
            false,
        ),
        (
            json!({"bootstrap_extensions": [{"name": "x", "typed_config": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "1s"}}]}),
            false,
        ),
        // Maps with string keys, and map values that are messages.
        (
            cluster(json!({"name": "c", "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}})),
            true,
        ),
    ];
    for (value, expect_fast) in cases {
        assert_eq!(agrees(&value, BOOTSTRAP), expect_fast, "{value}");
    }
}

#[test]
fn unknown_fields_are_skipped_only_when_allowed() {
    let desc = descriptors::message(BOOTSTRAP).unwrap();
    let value = json!({"node": {"id": "a", "bogus": 1}});
    assert_eq!(to_bytes(&value, &desc, false), Err(Fallback));
    let bytes = to_bytes(&value, &desc, true).expect("skipped");
    assert_eq!(canonical(&bytes, &desc), json!({"node": {"id": "a"}}));
}

/// What only a text can hold, or hold in another order than a parsed tree: each is left
/// to the reflective path (which reads the text through a tree), and a well-formed
/// counterpart is encoded, so the refusal is about the one construct.
#[test]
fn text_only_constructs_are_left_to_the_reflective_path() {
    let desc = descriptors::message(BOOTSTRAP).unwrap();
    let fast = |text: &str| text_to_bytes(text, &desc, false);
    let any = |body: &str| {
        format!(r#"{{"bootstrap_extensions": [{{"name": "x", "typed_config": {body}}}]}}"#)
    };
    let cases = [
        // A key given twice: a tree keeps the last, the text shows both.
        (
            r#"{"node": {"id": "a", "id": "b"}}"#,
            r#"{"node": {"id": "b"}}"#.to_string(),
        ),
        // One field under its JSON name and its proto name.
        (
            r#"{"stats_flush_interval": "1s", "statsFlushInterval": "2s"}"#,
            r#"{"statsFlushInterval": "2s"}"#.to_string(),
        ),
        // `@type` after the payload's fields.
        (
            &any(
                r#"{"cluster": "c", "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"}"#,
            ),
            any(
                r#"{"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "cluster": "c"}"#,
            ),
        ),
        // A TypedStruct whose `value` comes before its `type_url`.
        (
            &any(
                r#"{"@type": "type.googleapis.com/udpa.type.v1.TypedStruct", "value": {"cluster": "c"}, "type_url": "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"}"#,
            ),
            any(
                r#"{"@type": "type.googleapis.com/udpa.type.v1.TypedStruct", "type_url": "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "value": {"cluster": "c"}}"#,
            ),
        ),
        // Trailing text after the document, and YAML.
        (
            r#"{"node": {"id": "a"}} x"#,
            r#"{"node": {"id": "a"}}"#.to_string(),
        ),
        ("node:\n  id: a\n", r#"{"node": {"id": "a"}}"#.to_string()),
    ];
    for (refused, accepted) in cases {
        assert_eq!(fast(refused), Err(Fallback), "{refused}");
        assert!(fast(&accepted).is_ok(), "{accepted}");
    }
}

/// A TypedStruct in a text is written as the `Any` it stands for, as the tree's
/// unwrapping does, bare type names included.
#[test]
fn typed_structs_in_a_text_are_unwrapped() {
    let desc = descriptors::message(BOOTSTRAP).unwrap();
    let text = r#"{"bootstrap_extensions": [{"name": "x", "typed_config": {
        "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
        "type_url": "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "value": {"stat_prefix": "s", "cluster": "c"}}}]}"#;
    let bytes = text_to_bytes(text, &desc, false).expect("fast path");
    assert_eq!(
        canonical(&bytes, &desc),
        json!({"bootstrapExtensions": [{"name": "x", "typedConfig": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "statPrefix": "s", "cluster": "c"}}]})
    );
}
