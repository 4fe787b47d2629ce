//! Scalar values of proto3 JSON (booleans, numbers, strings) and their protobuf encoding.

use super::{Fallback, Result};
use prost::encoding::{encode_varint, WireType};
use prost_reflect::Kind;
use serde_json::{Number, Value};

/// One JSON scalar as the transcoder meets it: borrowed from the text where it can be.
#[derive(Debug, Clone)]
pub enum Scalar<'s> {
    /// `true` or `false`.
    Bool(bool),
    /// A JSON number, kept as serde_json reads it (integer or float).
    Number(Number),
    /// A JSON string.
    Str(&'s str),
}

impl Scalar<'_> {
    /// The scalar as a JSON value, for the well-known types that are written from a tree.
    pub fn into_value(self) -> Value {
        match self {
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Number(n) => Value::Number(n),
            Scalar::Str(s) => Value::String(s.to_string()),
        }
    }
}

/// The wire type a value of `kind` is written with.
pub fn wire_type(kind: &Kind) -> WireType {
    match kind {
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => WireType::SixtyFourBit,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => WireType::ThirtyTwoBit,
        Kind::String | Kind::Bytes | Kind::Message(_) => WireType::LengthDelimited,
        _ => WireType::Varint,
    }
}

/// Whether a scalar is the proto3 default of `kind` (not written without presence).
/// A value of the wrong JSON type is not a default: [`encode`] then refuses it.
pub fn is_default(kind: &Kind, value: &Scalar<'_>) -> bool {
    let integer_zero = |n: &Number| n.as_i64() == Some(0) || n.as_u64() == Some(0);
    match (kind, value) {
        (Kind::Bool, Scalar::Bool(b)) => !b,
        (Kind::String | Kind::Bytes, Scalar::Str(s)) => s.is_empty(),
        (Kind::Enum(e), Scalar::Str(name)) => {
            e.get_value_by_name(name).is_some_and(|v| v.number() == 0)
        }
        (Kind::Double | Kind::Float, Scalar::Number(n)) => n.as_f64() == Some(0.0),
        (Kind::Message(_) | Kind::Bool | Kind::String | Kind::Bytes, _) => false,
        (_, Scalar::Number(n)) => integer_zero(n),
        _ => false,
    }
}

/// A map key (always a JSON string) as the scalar its key field takes.
pub fn map_key<'s>(kind: &Kind, key: &'s str) -> Result<Scalar<'s>> {
    match kind {
        Kind::String => Ok(Scalar::Str(key)),
        Kind::Bool => match key {
            "true" => Ok(Scalar::Bool(true)),
            "false" => Ok(Scalar::Bool(false)),
            _ => Err(Fallback),
        },
        _ => {
            let digits = key.strip_prefix('-').unwrap_or(key);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Fallback);
            }
            Ok(Scalar::Number(key.parse().map_err(|_| Fallback)?))
        }
    }
}

/// One scalar field `number` of `kind`, tagged; left out when `omit_default` (a field
/// without presence) and the value is its kind's default, as the reflective encoder does.
pub fn write_field(
    number: u32,
    kind: &Kind,
    value: &Scalar<'_>,
    omit_default: bool,
    out: &mut Vec<u8>,
) -> Result {
    if omit_default && is_default(kind, value) {
        return Ok(());
    }
    prost::encoding::encode_key(number, wire_type(kind), out);
    encode(kind, value, out)
}

/// The payload of one scalar of `kind` (no tag): what a packed list repeats.
pub fn encode(kind: &Kind, value: &Scalar<'_>, out: &mut Vec<u8>) -> Result {
    match (kind, value) {
        (Kind::Bool, Scalar::Bool(b)) => encode_varint(u64::from(*b), out),
        (Kind::String, Scalar::Str(s)) => {
            encode_varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        (Kind::Enum(e), Scalar::Str(name)) => {
            let number = e.get_value_by_name(name).ok_or(Fallback)?.number();
            encode_varint(number as i64 as u64, out);
        }
        (Kind::Enum(e), Scalar::Number(n)) => {
            let number = i32::try_from(n.as_i64().ok_or(Fallback)?).map_err(|_| Fallback)?;
            e.get_value(number).ok_or(Fallback)?;
            encode_varint(number as i64 as u64, out);
        }
        (Kind::Double, Scalar::Number(n)) => {
            out.extend_from_slice(&n.as_f64().ok_or(Fallback)?.to_le_bytes())
        }
        (Kind::Float, Scalar::Number(n)) => {
            let v = n.as_f64().ok_or(Fallback)?;
            if v.abs() > f64::from(f32::MAX) {
                return Err(Fallback);
            }
            out.extend_from_slice(&(v as f32).to_le_bytes());
        }
        (Kind::Int32 | Kind::Sint32 | Kind::Sfixed32, Scalar::Number(n)) => {
            let v = i32::try_from(n.as_i64().ok_or(Fallback)?).map_err(|_| Fallback)?;
            match kind {
                Kind::Int32 => encode_varint(v as i64 as u64, out),
                Kind::Sint32 => encode_varint(((v << 1) ^ (v >> 31)) as u32 as u64, out),
                _ => out.extend_from_slice(&v.to_le_bytes()),
            }
        }
        (Kind::Int64 | Kind::Sint64 | Kind::Sfixed64, Scalar::Number(n)) => {
            let v = n.as_i64().ok_or(Fallback)?;
            match kind {
                Kind::Int64 => encode_varint(v as u64, out),
                Kind::Sint64 => encode_varint(((v << 1) ^ (v >> 63)) as u64, out),
                _ => out.extend_from_slice(&v.to_le_bytes()),
            }
        }
        (Kind::Uint32 | Kind::Fixed32, Scalar::Number(n)) => {
            let v = u32::try_from(n.as_u64().ok_or(Fallback)?).map_err(|_| Fallback)?;
            match kind {
                Kind::Uint32 => encode_varint(u64::from(v), out),
                _ => out.extend_from_slice(&v.to_le_bytes()),
            }
        }
        (Kind::Uint64 | Kind::Fixed64, Scalar::Number(n)) => {
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
