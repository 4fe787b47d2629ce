//! The well-known types whose JSON form is not an object of their fields: `Duration` (a
//! string) and the JSON-shaped `Struct`, `Value` and `ListValue`.

use super::{nested, Fallback, Result};
use prost::encoding::{encode_key, encode_varint, WireType};
use serde_json::{Map, Value};

/// `google.protobuf.Duration` from its JSON string (`"1.5s"`, `"-0.000000001s"`).
pub fn duration(text: &str, out: &mut Vec<u8>) -> Result {
    let text = text.strip_suffix('s').ok_or(Fallback)?;
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
pub fn structure(object: &Map<String, Value>, out: &mut Vec<u8>) -> Result {
    for (key, value) in object {
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
pub fn json_value(value: &Value, out: &mut Vec<u8>) -> Result {
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
pub fn list_value(items: &[Value], out: &mut Vec<u8>) -> Result {
    items
        .iter()
        .try_for_each(|item| nested(1, out, |out| json_value(item, out)))
}
