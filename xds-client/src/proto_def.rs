//! A small vocabulary for writing protobuf descriptors by hand: messages that
//! `envoy-types` does not compile (Envoy contrib, Istio's own filters) are declared from
//! their published field numbers, and their descriptors join the pool so proto3 JSON and
//! the config checker know them.

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
    FileDescriptorProto, MessageOptions, OneofDescriptorProto,
};

/// The type of a field.
#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    /// `string`.
    String,
    /// `bool`.
    Bool,
    /// A message, by its full name with a leading dot (`.google.protobuf.Duration`).
    Message(&'a str),
    /// An enum, by its full name with a leading dot.
    Enum(&'a str),
}

/// proto3 JSON's field name: lower camel case of the snake-case name.
fn json_name(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn make(name: &str, number: i32, kind: Kind, label: Label) -> FieldDescriptorProto {
    let (ty, type_name) = match kind {
        Kind::String => (Type::String, None),
        Kind::Bool => (Type::Bool, None),
        Kind::Message(t) => (Type::Message, Some(t.to_string())),
        Kind::Enum(t) => (Type::Enum, Some(t.to_string())),
    };
    FieldDescriptorProto {
        name: Some(name.into()),
        json_name: Some(json_name(name)),
        number: Some(number),
        label: Some(label as i32),
        r#type: Some(ty as i32),
        type_name,
        ..Default::default()
    }
}

/// A singular field.
pub fn field(name: &str, number: i32, kind: Kind) -> FieldDescriptorProto {
    make(name, number, kind, Label::Optional)
}

/// A repeated field.
pub fn repeated(name: &str, number: i32, kind: Kind) -> FieldDescriptorProto {
    make(name, number, kind, Label::Repeated)
}

/// A member of the message's oneof number `oneof` (see [`message_with_oneof`]).
pub fn one_of(name: &str, number: i32, kind: Kind, oneof: i32) -> FieldDescriptorProto {
    FieldDescriptorProto {
        oneof_index: Some(oneof),
        ..field(name, number, kind)
    }
}

/// A message with its fields and nested messages.
pub fn message(
    name: &str,
    fields: Vec<FieldDescriptorProto>,
    nested: Vec<DescriptorProto>,
) -> DescriptorProto {
    DescriptorProto {
        name: Some(name.into()),
        field: fields,
        nested_type: nested,
        ..Default::default()
    }
}

/// A message whose fields marked with [`one_of`] belong to the named oneofs.
pub fn message_with_oneof(
    name: &str,
    fields: Vec<FieldDescriptorProto>,
    oneofs: &[&str],
) -> DescriptorProto {
    DescriptorProto {
        oneof_decl: oneofs
            .iter()
            .map(|n| OneofDescriptorProto {
                name: Some(n.to_string()),
                ..Default::default()
            })
            .collect(),
        ..message(name, fields, vec![])
    }
}

/// The entry message of a `map<string, string>` field (`<Field>Entry`).
pub fn string_map_entry(name: &str) -> DescriptorProto {
    DescriptorProto {
        options: Some(MessageOptions {
            map_entry: Some(true),
            ..Default::default()
        }),
        ..message(
            name,
            vec![
                field("key", 1, Kind::String),
                field("value", 2, Kind::String),
            ],
            vec![],
        )
    }
}

/// An enum with its values in number order from 0.
pub fn enumeration(name: &str, values: &[&str]) -> EnumDescriptorProto {
    EnumDescriptorProto {
        name: Some(name.into()),
        value: values
            .iter()
            .enumerate()
            .map(|(i, v)| EnumValueDescriptorProto {
                name: Some(v.to_string()),
                number: Some(i as i32),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A proto3 file.
pub fn file(
    path: &str,
    package: &str,
    dependencies: &[&str],
    messages: Vec<DescriptorProto>,
    enums: Vec<EnumDescriptorProto>,
) -> FileDescriptorProto {
    FileDescriptorProto {
        name: Some(path.into()),
        package: Some(package.into()),
        dependency: dependencies.iter().map(|d| d.to_string()).collect(),
        message_type: messages,
        enum_type: enums,
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_are_lower_camel_case() {
        assert_eq!(
            json_name("disable_host_header_fallback"),
            "disableHostHeaderFallback"
        );
        assert_eq!(json_name("name"), "name");
    }
}
