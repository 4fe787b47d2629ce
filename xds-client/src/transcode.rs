//! Proto3 JSON straight to protobuf bytes, driven by the descriptor pool.
//!
//! The reflective path (`json::decode_dynamic`) builds a `DynamicMessage` tree and encodes
//! it, and every `Any` payload inside it, by recomputing encoded sizes at each nesting
//! level; on a bootstrap of thousands of clusters that was most of the start-up time. This
//! transcoder is a serde visitor: it reads the JSON once, from the text itself
//! ([`text_to_bytes`], no tree is built) or from a parsed value ([`to_bytes`]), and writes
//! each field as it meets it. `TypedStruct` wrappers are unwrapped on the way, as
//! `typed_struct::unwrap_typed_structs` does for the tree.
//!
//! It is strict on purpose: anything it does not handle exactly as the reflective path
//! would (numbers as strings, bytes, timestamps, unknown enum values, a conflicting oneof,
//! a field given twice, an `Any` whose `@type` is not its first key, ...) returns
//! [`Fallback`], and the caller decodes through the reflective path, which stays the
//! authority on what is accepted and on every error message.

mod scalar;
mod wkt;

use prost::encoding::{encode_key, encode_varint, WireType};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, OneofDescriptor};
use scalar::Scalar;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// The input needs the reflective path, which will accept it or name the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback;

type Result<T = ()> = std::result::Result<T, Fallback>;

/// Encodes `value`, the proto3 JSON of a `desc` message, as protobuf bytes. With
/// `allow_unknown_fields`, fields the descriptor does not know are skipped.
pub fn to_bytes(
    value: &Value,
    desc: &MessageDescriptor,
    allow_unknown_fields: bool,
) -> Result<Vec<u8>> {
    encode(value, desc, allow_unknown_fields)
}

/// Encodes the JSON text of a `desc` message as protobuf bytes without building a tree of
/// it; YAML, malformed JSON and whatever [`to_bytes`] would leave to the reflective path
/// return [`Fallback`].
pub fn text_to_bytes(
    text: &str,
    desc: &MessageDescriptor,
    allow_unknown_fields: bool,
) -> Result<Vec<u8>> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let out = encode(&mut deserializer, desc, allow_unknown_fields)?;
    deserializer.end().map_err(|_| Fallback)?;
    Ok(out)
}

fn encode<'de, D: Deserializer<'de>>(
    input: D,
    desc: &MessageDescriptor,
    allow_unknown_fields: bool,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let ctx = Ctx {
        allow_unknown_fields,
    };
    MessageBody {
        ctx: &ctx,
        desc,
        out: &mut out,
    }
    .deserialize(input)
    .map_err(|_| Fallback)?;
    Ok(out)
}

/// What holds for the whole input.
struct Ctx {
    allow_unknown_fields: bool,
}

/// The error a visitor returns to stop at [`Fallback`]; its text is never shown.
fn fallback<E: de::Error>() -> E {
    E::custom("left to the reflective path")
}

/// Turns a helper's [`Fallback`] (or a missing piece) into the visitor's error.
trait OrFallback<T> {
    fn or_fallback<E: de::Error>(self) -> std::result::Result<T, E>;
}

impl<T> OrFallback<T> for Result<T> {
    fn or_fallback<E: de::Error>(self) -> std::result::Result<T, E> {
        self.map_err(|_| fallback())
    }
}

impl<T> OrFallback<T> for Option<T> {
    fn or_fallback<E: de::Error>(self) -> std::result::Result<T, E> {
        self.ok_or_else(fallback)
    }
}

/// A JSON string, borrowed from the text when it has no escapes (object keys, type URLs).
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

/// Makes a visitor also the seed that drives it: JSON is self-describing, so the input
/// says which `visit_*` method applies.
macro_rules! self_describing_seed {
    ($visitor:ident) => {
        impl<'de> DeserializeSeed<'de> for $visitor<'_> {
            type Value = ();
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
                d.deserialize_any(self)
            }
        }
    };
}

/// The visitor methods for JSON scalars, each handing a [`Scalar`] to the visitor's own
/// `scalar` method: the visitors differ only in what they do with one.
macro_rules! scalar_visits {
    () => {
        fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<(), E> {
            self.scalar(Scalar::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<(), E> {
            self.scalar(Scalar::Number(v.into()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<(), E> {
            self.scalar(Scalar::Number(v.into()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<(), E> {
            self.scalar(Scalar::Number(
                serde_json::Number::from_f64(v).or_fallback()?,
            ))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<(), E> {
            self.scalar(Scalar::Str(v))
        }
    };
}

/// The fields of one message (no tag, no length) from its JSON form: an object of fields,
/// or the special form of a well-known type.
struct MessageBody<'a> {
    ctx: &'a Ctx,
    desc: &'a MessageDescriptor,
    out: &'a mut Vec<u8>,
}

/// Wrapper types, whose JSON form is the bare value of their field 1.
const WRAPPERS: [&str; 8] = [
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
];

impl MessageBody<'_> {
    /// A well-known type written from a JSON tree (`Value`, `Struct`, `ListValue`).
    fn write_tree<E: de::Error>(self, mut value: Value) -> std::result::Result<(), E> {
        crate::typed_struct::unwrap_typed_structs(&mut value);
        match (self.desc.full_name(), &value) {
            ("google.protobuf.Value", _) => wkt::json_value(&value, self.out),
            ("google.protobuf.Struct", Value::Object(object)) => wkt::structure(object, self.out),
            ("google.protobuf.ListValue", Value::Array(items)) => wkt::list_value(items, self.out),
            _ => Err(Fallback),
        }
        .or_fallback()
    }

    /// A message written from a JSON scalar: a wrapper, a `Duration` or a `Value`.
    fn scalar<E: de::Error>(self, value: Scalar<'_>) -> std::result::Result<(), E> {
        let name = self.desc.full_name();
        if WRAPPERS.contains(&name) {
            let field = self.desc.get_field(1).or_fallback()?;
            let omit_default = !field.supports_presence();
            return scalar::write_field(
                field.number(),
                &field.kind(),
                &value,
                omit_default,
                self.out,
            )
            .or_fallback();
        }
        match (name, &value) {
            ("google.protobuf.Duration", Scalar::Str(text)) => {
                wkt::duration(text, self.out).or_fallback()
            }
            ("google.protobuf.Value", _) => self.write_tree(value.into_value()),
            _ => Err(fallback()),
        }
    }

    /// Whether the message's JSON form is an object of its fields (`Empty` included).
    fn is_plain(name: &str) -> bool {
        !name.starts_with("google.protobuf.") || name == "google.protobuf.Empty"
    }
}

self_describing_seed!(MessageBody);

impl<'de> Visitor<'de> for MessageBody<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "the JSON form of {}", self.desc.full_name())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        match self.desc.full_name() {
            "google.protobuf.Any" => any(self.ctx, self.desc, &mut map, self.out),
            "google.protobuf.Struct" | "google.protobuf.Value" => {
                let value = Value::deserialize(MapAccessDeserializer::new(map))?;
                self.write_tree(value)
            }
            name if Self::is_plain(name) => fields(self.ctx, self.desc, &mut map, self.out),
            _ => Err(fallback()),
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<(), A::Error> {
        match self.desc.full_name() {
            "google.protobuf.ListValue" | "google.protobuf.Value" => {
                let value = Value::deserialize(SeqAccessDeserializer::new(seq))?;
                self.write_tree(value)
            }
            _ => Err(fallback()),
        }
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<(), E> {
        match self.desc.full_name() {
            "google.protobuf.Value" => self.write_tree(Value::Null),
            _ => Err(fallback()),
        }
    }
    scalar_visits!();
}

/// The fields of an object, in the order given, until the map ends. A field given twice
/// (under either of its names), two members of one oneof, and `@type` outside an `Any`'s
/// first key are left to the reflective path.
fn fields<'de, A: MapAccess<'de>>(
    ctx: &Ctx,
    desc: &MessageDescriptor,
    map: &mut A,
    out: &mut Vec<u8>,
) -> std::result::Result<(), A::Error> {
    let mut mentioned: Vec<u32> = Vec::new();
    let mut oneofs: Vec<OneofDescriptor> = Vec::new();
    while let Some(Text(key)) = map.next_key()? {
        // Configs mostly use the proto names (snake_case), so those are tried first;
        // protoc forbids a JSON name that collides with another field's name.
        let field = match desc
            .get_field_by_name(&key)
            .or_else(|| desc.get_field_by_json_name(&key))
        {
            Some(field) => field,
            None if ctx.allow_unknown_fields && !key.starts_with(['[', '@']) => {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            None => return Err(fallback()),
        };
        if mentioned.contains(&field.number()) {
            return Err(fallback());
        }
        mentioned.push(field.number());
        let mut set = false;
        map.next_value_seed(FieldValue {
            ctx,
            field: &field,
            kind: &field.kind(),
            role: Role::Field,
            set: &mut set,
            out,
        })?;
        if let Some(oneof) = field.containing_oneof().filter(|_| set) {
            if oneofs.contains(&oneof) {
                return Err(fallback());
            }
            oneofs.push(oneof);
        }
    }
    Ok(())
}

/// An `Any`: `@type` (its first key) names the payload, whose fields are the other keys.
fn any<'de, A: MapAccess<'de>>(
    ctx: &Ctx,
    desc: &MessageDescriptor,
    map: &mut A,
    out: &mut Vec<u8>,
) -> std::result::Result<(), A::Error> {
    match map.next_key::<Text>()? {
        Some(Text(key)) if key == "@type" => {}
        _ => return Err(fallback()),
    }
    let Text(type_url) = map.next_value()?;
    if !type_url.contains('/') {
        return Err(fallback());
    }
    let name = crate::descriptors::type_name_of_url(&type_url);
    if crate::typed_struct::is_typed_struct(name) {
        return typed_struct(ctx, desc, map, out);
    }
    let payload = payload_type(desc, name).or_fallback()?;
    write_type_url(&type_url, out);
    nested_unless_empty(2, out, |out| fields(ctx, &payload, map, out))
}

/// A `TypedStruct` `Any` written as the `Any` it stands for: `type_url` (a bare message
/// name gets the `type.googleapis.com/` prefix, as Envoy reads it) and then `value`, the
/// payload's fields; any other layout is left to the reflective path.
fn typed_struct<'de, A: MapAccess<'de>>(
    ctx: &Ctx,
    desc: &MessageDescriptor,
    map: &mut A,
    out: &mut Vec<u8>,
) -> std::result::Result<(), A::Error> {
    match map.next_key::<Text>()? {
        Some(Text(key)) if key == "type_url" || key == "typeUrl" => {}
        _ => return Err(fallback()),
    }
    let Text(inner) = map.next_value()?;
    let inner = crate::typed_struct::inner_type_url(&inner);
    let payload = payload_type(desc, crate::descriptors::type_name_of_url(&inner)).or_fallback()?;
    write_type_url(&inner, out);
    match map.next_key::<Text>()? {
        None => Ok(()),
        Some(Text(key)) if key == "value" => {
            nested_unless_empty(2, out, |out| {
                map.next_value_seed(PayloadObject {
                    ctx,
                    desc: &payload,
                    out,
                })
            })?;
            match map.next_key::<Text>()? {
                None => Ok(()),
                Some(_) => Err(fallback()),
            }
        }
        Some(_) => Err(fallback()),
    }
}

/// The message type an `Any` names; well-known types (whose `Any` JSON form differs) are
/// left to the reflective path.
fn payload_type(any: &MessageDescriptor, name: &str) -> Option<MessageDescriptor> {
    any.parent_pool()
        .get_message_by_name(name)
        .filter(|m| !m.full_name().starts_with("google.protobuf."))
}

fn write_type_url(type_url: &str, out: &mut Vec<u8>) {
    encode_key(1, WireType::LengthDelimited, out);
    encode_varint(type_url.len() as u64, out);
    out.extend_from_slice(type_url.as_bytes());
}

/// Like [`nested`], but nothing at all is written when `body` writes nothing: an empty
/// `Any` payload (the bytes field's default) or an empty packed list.
fn nested_unless_empty<E>(
    number: u32,
    out: &mut Vec<u8>,
    body: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let start = out.len();
    nested(number, out, body)?;
    if out.len() == start + prost::encoding::key_len(number) + 1 {
        out.truncate(start);
    }
    Ok(())
}

/// A `TypedStruct`'s `value`: an object of the payload's fields.
struct PayloadObject<'a> {
    ctx: &'a Ctx,
    desc: &'a MessageDescriptor,
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for PayloadObject<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PayloadObject<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        fields(self.ctx, self.desc, &mut map, self.out)
    }
}

/// Where a value of a field stands, which decides how null and defaults are treated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The value of a field of a message: null leaves it unset, and a field without
    /// presence is not written at its default.
    Field,
    /// The value of a map entry: never null; not written at its default without presence.
    MapValue,
    /// An element of a list: never null, always written.
    Element,
}

/// One value of `field` in its `role`, tagged; `set` records that it was not null.
struct FieldValue<'a> {
    ctx: &'a Ctx,
    field: &'a FieldDescriptor,
    kind: &'a Kind,
    role: Role,
    set: &'a mut bool,
    out: &'a mut Vec<u8>,
}

impl FieldValue<'_> {
    /// Whether the field holds a list or a map here (not one element of it).
    fn repeated(&self) -> bool {
        self.role == Role::Field && (self.field.is_list() || self.field.is_map())
    }

    /// A message value: tag, length, and the body `write` produces.
    fn message<E>(
        self,
        write: impl FnOnce(MessageBody<'_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E>
    where
        E: de::Error,
    {
        let Kind::Message(desc) = self.kind else {
            return Err(fallback());
        };
        if self.field.is_group() {
            return Err(fallback());
        }
        *self.set = true;
        let ctx = self.ctx;
        nested(self.field.number(), self.out, |out| {
            write(MessageBody { ctx, desc, out })
        })
    }

    fn scalar<E: de::Error>(self, value: Scalar<'_>) -> std::result::Result<(), E> {
        if self.repeated() {
            return Err(fallback());
        }
        if let Kind::Message(_) = self.kind {
            return self.message(|body| body.scalar(value));
        }
        *self.set = true;
        let omit_default = self.role != Role::Element && !self.field.supports_presence();
        scalar::write_field(
            self.field.number(),
            self.kind,
            &value,
            omit_default,
            self.out,
        )
        .or_fallback()
    }

    /// A map field: one entry message per key; the key and a scalar value are left out
    /// when zero, as the reflective encoder writes them.
    fn map_entries<'de, A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let Kind::Message(entry) = self.kind else {
            return Err(fallback());
        };
        let key_field = entry.get_field(1).or_fallback()?;
        let value_field = entry.get_field(2).or_fallback()?;
        let (key_kind, value_kind) = (key_field.kind(), value_field.kind());
        *self.set = true;
        while let Some(Text(key)) = map.next_key()? {
            let key = scalar::map_key(&key_kind, &key).or_fallback()?;
            nested(self.field.number(), self.out, |out| {
                scalar::write_field(1, &key_kind, &key, true, out).or_fallback()?;
                map.next_value_seed(FieldValue {
                    ctx: self.ctx,
                    field: &value_field,
                    kind: &value_kind,
                    role: Role::MapValue,
                    set: &mut false,
                    out,
                })
            })?;
        }
        Ok(())
    }

    /// A list field: packed scalars in one length-delimited run, anything else element by
    /// element.
    fn elements<'de, A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        *self.set = true;
        if self.field.is_packed() {
            return nested_unless_empty(self.field.number(), self.out, |out| {
                while seq
                    .next_element_seed(Packed {
                        kind: self.kind,
                        out: &mut *out,
                    })?
                    .is_some()
                {}
                Ok(())
            });
        }
        while seq
            .next_element_seed(FieldValue {
                ctx: self.ctx,
                field: self.field,
                kind: self.kind,
                role: Role::Element,
                set: &mut false,
                out: &mut *self.out,
            })?
            .is_some()
        {}
        Ok(())
    }

    /// Whether a null leaves this field unset; otherwise the reflective path decides,
    /// except for a `google.protobuf.Value`, whose null is a value.
    fn null_is_unset(&self) -> bool {
        self.role == Role::Field
            && !matches!(self.kind, Kind::Enum(e) if e.full_name() == "google.protobuf.NullValue")
            && (self.repeated() || !is_json_value(self.kind))
    }
}

fn is_json_value(kind: &Kind) -> bool {
    matches!(kind, Kind::Message(m) if m.full_name() == "google.protobuf.Value")
}

self_describing_seed!(FieldValue);

impl<'de> Visitor<'de> for FieldValue<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a value of {}", self.field.full_name())
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<(), E> {
        if self.null_is_unset() {
            return Ok(());
        }
        if self.repeated() || !is_json_value(self.kind) {
            return Err(fallback());
        }
        self.message(|body| body.visit_unit())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<(), A::Error> {
        if self.role == Role::Field && self.field.is_map() {
            return self.map_entries(map);
        }
        if self.repeated() {
            return Err(fallback());
        }
        self.message(|body| body.visit_map(map))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<(), A::Error> {
        if self.role == Role::Field && self.field.is_list() {
            return self.elements(seq);
        }
        if self.repeated() {
            return Err(fallback());
        }
        self.message(|body| body.visit_seq(seq))
    }
    scalar_visits!();
}

/// One element of a packed list: the scalar's payload, untagged.
struct Packed<'a> {
    kind: &'a Kind,
    out: &'a mut Vec<u8>,
}

impl Packed<'_> {
    fn scalar<E: de::Error>(self, value: Scalar<'_>) -> std::result::Result<(), E> {
        scalar::encode(self.kind, &value, self.out).or_fallback()
    }
}

self_describing_seed!(Packed);

impl<'de> Visitor<'de> for Packed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar")
    }
    scalar_visits!();
}

/// Writes `number`'s tag and a length-delimited body produced by `body`.
fn nested<E>(
    number: u32,
    out: &mut Vec<u8>,
    body: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    encode_key(number, WireType::LengthDelimited, out);
    // One byte is reserved for the length, enough below 128 bytes (most messages of a
    // config); a longer body is shifted once to make room for the rest of its varint.
    let at = out.len();
    out.push(0);
    body(out)?;
    let len = out.len() - at - 1;
    let width = prost::encoding::encoded_len_varint(len as u64);
    if width > 1 {
        out.splice(at + 1..at + 1, std::iter::repeat_n(0, width - 1));
    }
    let mut prefix = &mut out[at..at + width];
    encode_varint(len as u64, &mut prefix);
    Ok(())
}

#[cfg(test)]
mod tests;
