//! Enforces the support table ([`super::support`]) over an encoded message.
//!
//! The walk reads the protobuf bytes directly (a bootstrap after JSON decoding, an xDS
//! resource as it arrives) and covers every set field, list element, map value and `Any`
//! payload. A field not in the table, or an `Any` of a type the table does not know, is an
//! error naming its path; fields accepted without effect are collected so `--mode validate`
//! can report them. Reading the wire format needs no decoded tree: checking a 5000-cluster
//! bootstrap allocates almost nothing.

use super::error::{join, ConfigError, Result};
use super::support::{self, Support};
use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
use prost_reflect::{FieldDescriptor, Kind, MapKey, MessageDescriptor};

/// A field accepted without effect, and why that is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoEffect {
    /// Path of the field.
    pub path: String,
    /// Why ignoring it cannot change traffic.
    pub reason: &'static str,
}

/// Nesting deeper than this (counting `Any` payloads) is refused as malformed, as the
/// protobuf decoders refuse it, so a hostile resource cannot exhaust the stack.
const MAX_DEPTH: usize = 100;

/// Where a value sits in the tree being checked. Built as the walk descends and rendered
/// only for an error or a note, so checking a large config formats no strings.
#[derive(Clone, Copy)]
enum At<'a> {
    /// The path the caller started from (`""` for the root).
    Start(&'a str),
    /// A field of the message at the parent.
    Field(&'a At<'a>, &'a str),
    /// An element of the list at the parent.
    Index(&'a At<'a>, usize),
    /// A value of the map at the parent.
    Key(&'a At<'a>, &'a MapKey),
}

impl At<'_> {
    /// The dotted path, as error messages and notes show it.
    fn render(&self) -> String {
        match self {
            At::Start(path) => path.to_string(),
            At::Field(parent, name) => join(&parent.render(), name),
            At::Index(parent, i) => format!("{}[{i}]", parent.render()),
            At::Key(parent, key) => format!("{}[{key:?}]", parent.render()),
        }
    }

    /// A malformed-input error here.
    fn malformed(&self, what: &str, e: impl std::fmt::Display) -> ConfigError {
        ConfigError::at(self.render(), format!("malformed {what}: {e}"))
    }
}

/// Checks an encoded message of type `type_url` (an `Any` payload, or an xDS resource):
/// its type must be in the table, and so must everything below it.
pub fn check_encoded(
    type_url: &str,
    bytes: &[u8],
    path: &str,
    notes: &mut Vec<NoEffect>,
) -> Result<()> {
    let pool = xds_client::descriptors::hold();
    Walk {
        pool: &pool,
        notes,
        seen: Vec::new(),
    }
    .any(type_url, bytes, &At::Start(path), 0)
}

/// One check: the pool it reads descriptors from and the notes it collects.
struct Walk<'a> {
    pool: &'a prost_reflect::DescriptorPool,
    notes: &'a mut Vec<NoEffect>,
    /// Per list field of each message being walked, its elements so far (see `message`).
    seen: Vec<(u32, usize)>,
}

/// A field's payload as it appears on the wire.
enum Payload<'b> {
    Varint(u64),
    Fixed(&'b [u8]),
    Delimited(&'b [u8]),
}

impl Walk<'_> {
    /// An `Any`'s payload, named by its type URL.
    fn any(&mut self, type_url: &str, bytes: &[u8], at: &At<'_>, depth: usize) -> Result<()> {
        let type_name = xds_client::descriptors::type_name_of_url(type_url);
        // Well-known types stand in an `Any` too (a null-VM plugin's JSON configuration is
        // a `StringValue`); the translator of the field decides whether it takes them.
        if support::find(type_name).is_none() && !support::OPAQUE.contains(&type_name) {
            return Err(ConfigError::at(
                at.render(),
                format!("unsupported typed_config {type_url}"),
            ));
        }
        let descriptor = self
            .pool
            .get_message_by_name(type_name)
            .ok_or_else(|| ConfigError::at(at.render(), format!("unknown type {type_url}")))?;
        self.message(&descriptor, bytes, at, depth)
    }

    /// A message of type `desc` encoded as `bytes`.
    fn message(
        &mut self,
        desc: &MessageDescriptor,
        mut bytes: &[u8],
        at: &At<'_>,
        depth: usize,
    ) -> Result<()> {
        let name = desc.full_name();
        if depth > MAX_DEPTH {
            return Err(at.malformed(name, "nesting too deep"));
        }
        if name == "google.protobuf.Any" {
            return self.any_message(bytes, at, depth);
        }
        if support::OPAQUE.contains(&name) {
            return Ok(());
        }
        let entry = support::find(name).ok_or_else(|| {
            ConfigError::at(at.render(), format!("unsupported message type {name}"))
        })?;
        // How many elements each list field of this message has had so far (paths index
        // them): the entries from `base` on, in a stack shared by the whole walk.
        let base = self.seen.len();
        while !bytes.is_empty() {
            let (number, wire_type) = decode_key(&mut bytes).map_err(|e| at.malformed(name, e))?;
            let Some(field) = desc.get_field(number) else {
                // Unknown fields are kept by decoders and never read.
                skip_field(wire_type, number, &mut bytes, DecodeContext::default())
                    .map_err(|e| at.malformed(name, e))?;
                continue;
            };
            let payload = read_payload(wire_type, &mut bytes).map_err(|e| at.malformed(name, e))?;
            expect_wire_type(&field, wire_type).map_err(|e| at.malformed(name, e))?;
            if is_unset(&field, &payload) {
                continue;
            }
            let field_at = At::Field(at, field.name());
            let index = match self.seen[base..].iter_mut().find(|(n, _)| *n == number) {
                Some((_, count)) => {
                    *count += 1;
                    *count - 1
                }
                None => {
                    self.seen.push((number, 1));
                    self.supported(entry, name, &field, &field_at)?;
                    0
                }
            };
            let Payload::Delimited(inner) = payload else {
                continue;
            };
            match field.kind() {
                Kind::Message(entry_desc) if field.is_map() => {
                    self.map_entry(&entry_desc, inner, &field_at, depth)?
                }
                Kind::Message(child) if field.is_list() => {
                    self.message(&child, inner, &At::Index(&field_at, index), depth + 1)?
                }
                Kind::Message(child) => self.message(&child, inner, &field_at, depth + 1)?,
                Kind::String => {
                    std::str::from_utf8(inner).map_err(|e| field_at.malformed(name, e))?;
                }
                _ => {}
            }
        }
        self.seen.truncate(base);
        Ok(())
    }

    /// The support-table verdict on a set field: an error, a note, or nothing.
    fn supported(
        &mut self,
        entry: &support::MessageSupport,
        name: &str,
        field: &FieldDescriptor,
        at: &At<'_>,
    ) -> Result<()> {
        match entry.fields.iter().find(|(f, _)| *f == field.name()) {
            None => Err(ConfigError::at(
                at.render(),
                format!(
                    "field {} of {name} is not supported by meshproxy",
                    field.name()
                ),
            )),
            Some((_, Support::NoEffect(reason))) => {
                self.notes.push(NoEffect {
                    path: at.render(),
                    reason,
                });
                Ok(())
            }
            Some((_, Support::Honoured)) => Ok(()),
        }
    }

    /// One map entry: its value is checked when it is a message, under its key.
    fn map_entry(
        &mut self,
        entry: &MessageDescriptor,
        mut bytes: &[u8],
        at: &At<'_>,
        depth: usize,
    ) -> Result<()> {
        let name = entry.full_name();
        let (Some(key_field), Some(value_field)) = (entry.get_field(1), entry.get_field(2)) else {
            return Ok(());
        };
        let Kind::Message(value_desc) = value_field.kind() else {
            return Ok(());
        };
        let mut key = MapKey::default_value(&key_field.kind());
        let mut value: &[u8] = &[];
        while !bytes.is_empty() {
            let (number, wire_type) = decode_key(&mut bytes).map_err(|e| at.malformed(name, e))?;
            match (number, read_payload(wire_type, &mut bytes)) {
                (1, Ok(payload)) => {
                    key = map_key(&key_field.kind(), &payload).map_err(|e| at.malformed(name, e))?
                }
                (2, Ok(Payload::Delimited(inner))) => value = inner,
                (_, Ok(_)) => {}
                (_, Err(e)) => return Err(at.malformed(name, e)),
            }
        }
        self.message(&value_desc, value, &At::Key(at, &key), depth + 1)
    }

    /// An `Any` message: the payload is checked as the type its URL names.
    fn any_message(&mut self, mut bytes: &[u8], at: &At<'_>, depth: usize) -> Result<()> {
        let (mut type_url, mut value): (&[u8], &[u8]) = (&[], &[]);
        while !bytes.is_empty() {
            let (number, wire_type) =
                decode_key(&mut bytes).map_err(|e| at.malformed("google.protobuf.Any", e))?;
            match read_payload(wire_type, &mut bytes) {
                Ok(Payload::Delimited(inner)) if number == 1 => type_url = inner,
                Ok(Payload::Delimited(inner)) if number == 2 => value = inner,
                Ok(_) => {}
                Err(e) => return Err(at.malformed("google.protobuf.Any", e)),
            }
        }
        let type_url =
            std::str::from_utf8(type_url).map_err(|e| at.malformed("google.protobuf.Any", e))?;
        self.any(type_url, value, at, depth + 1)
    }
}

/// Reads one field's payload (groups are not used by Envoy's API and are refused).
fn read_payload<'b>(
    wire_type: WireType,
    bytes: &mut &'b [u8],
) -> std::result::Result<Payload<'b>, String> {
    let take = |bytes: &mut &'b [u8], n: usize| {
        if bytes.len() < n {
            return Err("buffer underflow".to_string());
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    };
    match wire_type {
        WireType::Varint => decode_varint(bytes)
            .map(Payload::Varint)
            .map_err(|e| e.to_string()),
        WireType::SixtyFourBit => take(bytes, 8).map(Payload::Fixed),
        WireType::ThirtyTwoBit => take(bytes, 4).map(Payload::Fixed),
        WireType::LengthDelimited => {
            let len = decode_varint(bytes).map_err(|e| e.to_string())?;
            let len = usize::try_from(len).map_err(|_| "length overflow".to_string())?;
            take(bytes, len).map(Payload::Delimited)
        }
        WireType::StartGroup | WireType::EndGroup => Err("groups are not supported".into()),
    }
}

/// Refuses a payload whose wire type cannot carry the field's kind, as decoders do.
fn expect_wire_type(
    field: &FieldDescriptor,
    wire_type: WireType,
) -> std::result::Result<(), String> {
    let expected = match field.kind() {
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => WireType::SixtyFourBit,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => WireType::ThirtyTwoBit,
        Kind::String | Kind::Bytes | Kind::Message(_) => WireType::LengthDelimited,
        _ => WireType::Varint,
    };
    let packed = field.is_list() && wire_type == WireType::LengthDelimited;
    if wire_type == expected || packed {
        Ok(())
    } else {
        Err(format!(
            "field {} has wire type {wire_type:?}, expected {expected:?}",
            field.name()
        ))
    }
}

/// A field without presence holding its default is not set (decoders drop it).
fn is_unset(field: &FieldDescriptor, payload: &Payload<'_>) -> bool {
    if field.is_list() {
        // An empty packed run adds no element; an empty message element is an element.
        let message = matches!(field.kind(), Kind::Message(_));
        return !message && matches!(payload, Payload::Delimited(b) if b.is_empty());
    }
    if field.supports_presence() || field.is_map() {
        return false;
    }
    match payload {
        Payload::Varint(v) => *v == 0,
        Payload::Fixed(b) => match field.kind() {
            Kind::Float => f32::from_le_bytes(b[..4].try_into().unwrap_or_default()) == 0.0,
            Kind::Double => f64::from_le_bytes(b[..8].try_into().unwrap_or_default()) == 0.0,
            _ => b.iter().all(|&x| x == 0),
        },
        Payload::Delimited(b) => b.is_empty(),
    }
}

/// A map entry's key, for the path of an error under it.
fn map_key(kind: &Kind, payload: &Payload<'_>) -> std::result::Result<MapKey, String> {
    let fixed = |b: &[u8]| {
        let mut le = [0u8; 8];
        le[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(le)
    };
    let zigzag = |v: u64| ((v >> 1) as i64) ^ -((v & 1) as i64);
    Ok(match (kind, payload) {
        (Kind::String, Payload::Delimited(b)) => {
            MapKey::String(String::from_utf8(b.to_vec()).map_err(|e| e.to_string())?)
        }
        (Kind::Bool, Payload::Varint(v)) => MapKey::Bool(*v != 0),
        (Kind::Int32, Payload::Varint(v)) => MapKey::I32(*v as i32),
        (Kind::Sint32, Payload::Varint(v)) => MapKey::I32(zigzag(*v) as i32),
        (Kind::Sfixed32, Payload::Fixed(b)) => MapKey::I32(fixed(b) as u32 as i32),
        (Kind::Int64, Payload::Varint(v)) => MapKey::I64(*v as i64),
        (Kind::Sint64, Payload::Varint(v)) => MapKey::I64(zigzag(*v)),
        (Kind::Sfixed64, Payload::Fixed(b)) => MapKey::I64(fixed(b) as i64),
        (Kind::Uint32, Payload::Varint(v)) => MapKey::U32(*v as u32),
        (Kind::Fixed32, Payload::Fixed(b)) => MapKey::U32(fixed(b) as u32),
        (Kind::Uint64, Payload::Varint(v)) => MapKey::U64(*v),
        (Kind::Fixed64, Payload::Fixed(b)) => MapKey::U64(fixed(b)),
        _ => return Err("map key of the wrong wire type".into()),
    })
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
        let bytes = prost::Message::encode_to_vec(&b);
        (check_encoded(BOOTSTRAP, &bytes, "", &mut notes), notes)
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

    #[test]
    fn list_elements_and_map_values_are_named_by_index_and_key() {
        let (r, _) = run(
            json!({"static_resources": {"clusters": [{"name": "a"}, {"name": "b",
            "typed_extension_protocol_options": {"k": {
              "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
              "explicit_http_config": {"http2_protocol_options": {"allow_metadata": true}}}}}]}}),
        );
        let e = r.unwrap_err();
        assert_eq!(
            e.path,
            "static_resources.clusters[1].typed_extension_protocol_options[String(\"k\")]\
             .explicit_http_config.http2_protocol_options.allow_metadata"
        );
    }

    #[test]
    fn malformed_bytes_are_an_error_not_a_panic() {
        let b: Bootstrap = xds_client::json::decode(
            json!({"static_resources": {"clusters": [{"name": "a", "connect_timeout": "1s"}]}}),
            BOOTSTRAP,
            false,
        )
        .unwrap();
        let bytes = prost::Message::encode_to_vec(&b);
        for cut in 1..bytes.len() {
            let e = check_encoded(BOOTSTRAP, &bytes[..cut], "", &mut vec![]).unwrap_err();
            assert!(e.message.contains("malformed"), "{e}");
        }
        // A string field carried as a varint.
        let e = check_encoded(BOOTSTRAP, &[0x0a, 0x02, 0x08, 0x01], "", &mut vec![]).unwrap_err();
        assert!(e.message.contains("wire type"), "{e}");
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused_without_exhausting_the_stack() {
        use xds_client::proto::envoy::config::rbac::v3::{permission, Permission};
        let mut p = Permission {
            rule: Some(permission::Rule::Any(true)),
        };
        for _ in 0..=MAX_DEPTH {
            p = Permission {
                rule: Some(permission::Rule::NotRule(Box::new(p))),
            };
        }
        let bytes = prost::Message::encode_to_vec(&p);
        let e =
            check_encoded("envoy.config.rbac.v3.Permission", &bytes, "", &mut vec![]).unwrap_err();
        assert!(e.message.contains("nesting too deep"), "{e}");
    }
}
