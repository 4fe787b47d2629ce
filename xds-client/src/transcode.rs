//! Proto3 JSON straight to protobuf bytes, driven by the descriptor pool.
//!
//! The reflective path (`json::decode_dynamic`) builds a `DynamicMessage` tree
//! and encodes it, and every `Any` payload inside it, by recomputing encoded sizes at each
//! nesting level; on a bootstrap of thousands of clusters that is most of the start-up time.
//! This walk writes each message once, in field-number order, as the reflective encoder
//! does. It is strict on purpose: anything it does not handle exactly as the reflective
//! path would (numbers as strings, bytes, timestamps, unknown enum values, a conflicting
//! oneof, ...) returns [`Fallback`], and the caller decodes through the reflective path,
//! which stays the authority on what is accepted and on every error message.

use prost::encoding::{encode_key, encode_varint, WireType};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Number, Value};

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
    let mut out = Vec::new();
    Writer {
        allow_unknown_fields,
    }
    .message(value, desc, &mut out)?;
    Ok(out)
}

struct Writer {
    allow_unknown_fields: bool,
}

impl Writer {
    /// The fields of one message (no tag, no length), well-known JSON forms included.
    fn message(&self, value: &Value, desc: &MessageDescriptor, out: &mut Vec<u8>) -> Result {
        match desc.full_name() {
            "google.protobuf.Any" => self.any(value.as_object().ok_or(Fallback)?, desc, out),
            "google.protobuf.Duration" => duration(value, out),
            "google.protobuf.Struct" => structure(value.as_object().ok_or(Fallback)?, out),
            "google.protobuf.Value" => json_value(value, out),
            "google.protobuf.ListValue" => list_value(value.as_array().ok_or(Fallback)?, out),
            "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue" => {
                let field = desc.get_field(1).ok_or(Fallback)?;
                self.field(&field, value, out)
            }
            name if name.starts_with("google.protobuf.") && name != "google.protobuf.Empty" => {
                Err(Fallback)
            }
            _ => self.fields(value.as_object().ok_or(Fallback)?, desc, false, out),
        }
    }

    /// The object's fields in field-number order; `skip_type` leaves out an `Any`'s `@type`.
    fn fields(
        &self,
        object: &Map<String, Value>,
        desc: &MessageDescriptor,
        skip_type: bool,
        out: &mut Vec<u8>,
    ) -> Result {
        let mut set: Vec<(FieldDescriptor, &Value)> = Vec::with_capacity(object.len());
        for (key, value) in object {
            if skip_type && key == "@type" {
                continue;
            }
            let field = match desc
                .get_field_by_json_name(key)
                .or_else(|| desc.get_field_by_name(key))
            {
                Some(field) => field,
                None if self.allow_unknown_fields && !key.starts_with('[') => continue,
                None => return Err(Fallback),
            };
            if value.is_null() {
                match field.kind() {
                    Kind::Message(m) if m.full_name() == "google.protobuf.Value" => {}
                    Kind::Enum(e) if e.full_name() == "google.protobuf.NullValue" => {
                        return Err(Fallback)
                    }
                    _ => continue,
                }
            }
            set.push((field, value));
        }
        set.sort_by_key(|(field, _)| field.number());
        let mut oneofs = Vec::new();
        for (i, (field, _)) in set.iter().enumerate() {
            if i > 0 && set[i - 1].0.number() == field.number() {
                return Err(Fallback);
            }
            if let Some(oneof) = field.containing_oneof() {
                if oneofs.contains(&oneof) {
                    return Err(Fallback);
                }
                oneofs.push(oneof);
            }
        }
        set.iter()
            .try_for_each(|(field, value)| self.field(field, value, out))
    }

    /// One field with its tag: a list, a map, or a single value.
    fn field(&self, field: &FieldDescriptor, value: &Value, out: &mut Vec<u8>) -> Result {
        if field.is_map() {
            return self.map(field, value.as_object().ok_or(Fallback)?, out);
        }
        if field.is_list() {
            let items = value.as_array().ok_or(Fallback)?;
            if items.iter().any(Value::is_null) {
                return Err(Fallback);
            }
            if field.is_packed() {
                if !items.is_empty() {
                    nested(field.number(), out, |out| {
                        items.iter().try_for_each(|v| scalar(&field.kind(), v, out))
                    })?;
                }
                return Ok(());
            }
            return items.iter().try_for_each(|v| self.single(field, v, out));
        }
        if !field.supports_presence() && is_default_json(&field.kind(), value) {
            return Ok(());
        }
        self.single(field, value, out)
    }

    /// One value of `field`, tagged.
    fn single(&self, field: &FieldDescriptor, value: &Value, out: &mut Vec<u8>) -> Result {
        match field.kind() {
            Kind::Message(_) if field.is_group() => Err(Fallback),
            Kind::Message(desc) => {
                nested(field.number(), out, |out| self.message(value, &desc, out))
            }
            kind => {
                encode_key(field.number(), wire_type(&kind), out);
                scalar(&kind, value, out)
            }
        }
    }

    /// A map field: one entry message per key, key and scalar values left out when zero,
    /// as the reflective encoder writes them.
    fn map(
        &self,
        field: &FieldDescriptor,
        object: &Map<String, Value>,
        out: &mut Vec<u8>,
    ) -> Result {
        let Kind::Message(entry) = field.kind() else {
            return Err(Fallback);
        };
        let key_field = entry.get_field(1).ok_or(Fallback)?;
        let value_field = entry.get_field(2).ok_or(Fallback)?;
        let mut keys: Vec<(&String, &Value)> = object.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        for (key, value) in keys {
            if value.is_null() {
                return Err(Fallback);
            }
            let key = map_key(&key_field.kind(), key)?;
            nested(field.number(), out, |out| {
                self.field(&key_field, &key, out)?;
                self.field(&value_field, value, out)
            })?;
        }
        Ok(())
    }

    /// An `Any`: `@type` names the payload, whose fields are the object's other keys.
    fn any(
        &self,
        object: &Map<String, Value>,
        desc: &MessageDescriptor,
        out: &mut Vec<u8>,
    ) -> Result {
        let type_url = object
            .get("@type")
            .and_then(Value::as_str)
            .filter(|url| url.contains('/'))
            .ok_or(Fallback)?;
        let payload = desc
            .parent_pool()
            .get_message_by_name(crate::descriptors::type_name_of_url(type_url))
            .ok_or(Fallback)?;
        if payload.full_name().starts_with("google.protobuf.") {
            return Err(Fallback);
        }
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(type_url.len() as u64, out);
        out.extend_from_slice(type_url.as_bytes());
        let start = out.len();
        nested(2, out, |out| self.fields(object, &payload, true, out))?;
        if out.len() == start + 2 {
            // An empty payload is the bytes field's default, which is not written.
            out.truncate(start);
        }
        Ok(())
    }
}

/// Writes `number`'s tag and a length-delimited body produced by `body`.
fn nested(number: u32, out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>) -> Result) -> Result {
    encode_key(number, WireType::LengthDelimited, out);
    let start = out.len();
    body(out)?;
    let len = out.len() - start;
    let mut prefix = Vec::with_capacity(10);
    encode_varint(len as u64, &mut prefix);
    out.extend_from_slice(&prefix);
    out[start..].rotate_right(prefix.len());
    Ok(())
}

fn wire_type(kind: &Kind) -> WireType {
    match kind {
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => WireType::SixtyFourBit,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => WireType::ThirtyTwoBit,
        Kind::String | Kind::Bytes | Kind::Message(_) => WireType::LengthDelimited,
        _ => WireType::Varint,
    }
}

/// Whether a JSON value is the proto3 default of `kind` (not written without presence).
/// A value of the wrong JSON type is not a default: [`scalar`] then refuses it.
fn is_default_json(kind: &Kind, value: &Value) -> bool {
    let integer_zero = |n: &Number| n.as_i64() == Some(0) || n.as_u64() == Some(0);
    match (kind, value) {
        (Kind::Bool, Value::Bool(b)) => !b,
        (Kind::String | Kind::Bytes, Value::String(s)) => s.is_empty(),
        (Kind::Enum(e), Value::String(name)) => {
            e.get_value_by_name(name).is_some_and(|v| v.number() == 0)
        }
        (Kind::Double | Kind::Float, Value::Number(n)) => n.as_f64() == Some(0.0),
        (Kind::Message(_) | Kind::Bool | Kind::String | Kind::Bytes, _) => false,
        (_, Value::Number(n)) => integer_zero(n),
        _ => false,
    }
}

/// The JSON form of a map key as the JSON value its key field takes.
fn map_key(kind: &Kind, key: &str) -> Result<Value> {
    match kind {
        Kind::String => Ok(Value::String(key.to_string())),
        Kind::Bool => match key {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(Fallback),
        },
        _ => {
            let digits = key.strip_prefix('-').unwrap_or(key);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Fallback);
            }
            let number: Number = key.parse().map_err(|_| Fallback)?;
            Ok(Value::Number(number))
        }
    }
}

/// The payload of one scalar (no tag): what a packed list repeats.
fn scalar(kind: &Kind, value: &Value, out: &mut Vec<u8>) -> Result {
    match (kind, value) {
        (Kind::Bool, Value::Bool(b)) => encode_varint(u64::from(*b), out),
        (Kind::String, Value::String(s)) => {
            encode_varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        (Kind::Enum(e), Value::String(name)) => {
            let number = e.get_value_by_name(name).ok_or(Fallback)?.number();
            encode_varint(number as i64 as u64, out);
        }
        (Kind::Enum(e), Value::Number(n)) => {
            let number = i32::try_from(n.as_i64().ok_or(Fallback)?).map_err(|_| Fallback)?;
            e.get_value(number).ok_or(Fallback)?;
            encode_varint(number as i64 as u64, out);
        }
        (Kind::Double, Value::Number(n)) => {
            out.extend_from_slice(&n.as_f64().ok_or(Fallback)?.to_le_bytes())
        }
        (Kind::Float, Value::Number(n)) => {
            let v = n.as_f64().ok_or(Fallback)?;
            if v.abs() > f64::from(f32::MAX) {
                return Err(Fallback);
            }
            out.extend_from_slice(&(v as f32).to_le_bytes());
        }
        (Kind::Int32 | Kind::Sint32 | Kind::Sfixed32, Value::Number(n)) => {
            let v = i32::try_from(n.as_i64().ok_or(Fallback)?).map_err(|_| Fallback)?;
            match kind {
                Kind::Int32 => encode_varint(v as i64 as u64, out),
                Kind::Sint32 => encode_varint(((v << 1) ^ (v >> 31)) as u32 as u64, out),
                _ => out.extend_from_slice(&v.to_le_bytes()),
            }
        }
        (Kind::Int64 | Kind::Sint64 | Kind::Sfixed64, Value::Number(n)) => {
            let v = n.as_i64().ok_or(Fallback)?;
            match kind {
                Kind::Int64 => encode_varint(v as u64, out),
                Kind::Sint64 => encode_varint(((v << 1) ^ (v >> 63)) as u64, out),
                _ => out.extend_from_slice(&v.to_le_bytes()),
            }
        }
        (Kind::Uint32 | Kind::Fixed32, Value::Number(n)) => {
            let v = u32::try_from(n.as_u64().ok_or(Fallback)?).map_err(|_| Fallback)?;
            match kind {
                Kind::Uint32 => encode_varint(u64::from(v), out),
                _ => out.extend_from_slice(&v.to_le_bytes()),
            }
        }
        (Kind::Uint64 | Kind::Fixed64, Value::Number(n)) => {
            let v = n.as_u64().ok_or(Fallback)?;
            match kind {
                Kind::Uint64 => encode_varint(v, out),
                _ => out.extend_from_slice(&v.to_le_bytes()),
            }
        }
        _ => return Err(Fallback),
    }
    Ok(())
}

/// `google.protobuf.Duration` from its JSON string (`"1.5s"`, `"-0.000000001s"`).
fn duration(value: &Value, out: &mut Vec<u8>) -> Result {
    let text = value
        .as_str()
        .and_then(|s| s.strip_suffix('s'))
        .ok_or(Fallback)?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (text.contains('.') && !digits(fraction)) || fraction.len() > 9 {
        return Err(Fallback);
    }
    let seconds: i64 = whole.parse().map_err(|_| Fallback)?;
    if seconds > 315_576_000_000 {
        return Err(Fallback);
    }
    let nanos: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().map_err(|_| Fallback)?
    };
    let sign = if negative { -1 } else { 1 };
    if seconds != 0 {
        encode_key(1, WireType::Varint, out);
        encode_varint((sign * seconds) as u64, out);
    }
    if nanos != 0 {
        encode_key(2, WireType::Varint, out);
        encode_varint((sign * nanos) as u64, out);
    }
    Ok(())
}

/// `google.protobuf.Struct`: map<string, Value> `fields` = 1.
fn structure(object: &Map<String, Value>, out: &mut Vec<u8>) -> Result {
    let mut keys: Vec<(&String, &Value)> = object.iter().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    for (key, value) in keys {
        nested(1, out, |out| {
            if !key.is_empty() {
                encode_key(1, WireType::LengthDelimited, out);
                encode_varint(key.len() as u64, out);
                out.extend_from_slice(key.as_bytes());
            }
            nested(2, out, |out| json_value(value, out))
        })?;
    }
    Ok(())
}

/// `google.protobuf.Value`: a oneof of null (1), number (2), string (3), bool (4),
/// struct (5) and list (6); a oneof member is written even when zero.
fn json_value(value: &Value, out: &mut Vec<u8>) -> Result {
    match value {
        Value::Null => {
            encode_key(1, WireType::Varint, out);
            encode_varint(0, out);
        }
        Value::Number(n) => {
            encode_key(2, WireType::SixtyFourBit, out);
            out.extend_from_slice(&n.as_f64().ok_or(Fallback)?.to_le_bytes());
        }
        Value::String(s) => {
            encode_key(3, WireType::LengthDelimited, out);
            encode_varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bool(b) => {
            encode_key(4, WireType::Varint, out);
            encode_varint(u64::from(*b), out);
        }
        Value::Object(object) => nested(5, out, |out| structure(object, out))?,
        Value::Array(items) => nested(6, out, |out| list_value(items, out))?,
    }
    Ok(())
}

/// `google.protobuf.ListValue`: repeated Value `values` = 1.
fn list_value(items: &[Value], out: &mut Vec<u8>) -> Result {
    items
        .iter()
        .try_for_each(|item| nested(1, out, |out| json_value(item, out)))
}

#[cfg(test)]
mod tests;
