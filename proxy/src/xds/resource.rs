//! Decoding and checking one xDS resource, and what is kept of it for `/config_dump`.

use crate::config::check;
use crate::config::ConfigError;
use prost::Message;
use xds_client::ads::{Rejected, Resource};
use xds_client::proto::google::protobuf::Any;

/// An applied resource as `/config_dump` shows it.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The version it came with (Delta: the resource's; SotW: the response's).
    pub version: String,
    /// When it was applied.
    pub last_updated: std::time::SystemTime,
    /// The resource as received.
    pub body: Any,
}

impl Applied {
    /// Records `body` applied now at `version`.
    pub fn new(version: &str, body: Any) -> Self {
        Applied {
            version: version.to_string(),
            last_updated: std::time::SystemTime::now(),
            body,
        }
    }

    /// Whether `body` is byte-for-byte what is applied (then the update is a no-op).
    pub fn same(&self, body: &Any) -> bool {
        self.body.value == body.value
    }
}

/// Decodes `resource` as `M` (expected type `type_url`), checks it against the support
/// table, and returns it with its name (`name_of` reads it from the message).
pub fn decode<M: Message + Default>(
    resource: &Resource,
    type_url: &str,
    index: usize,
    name_of: fn(&M) -> &str,
) -> Result<(String, M), Rejected> {
    let fallback = || {
        if resource.name.is_empty() {
            format!("resource[{index}]")
        } else {
            resource.name.clone()
        }
    };
    if resource.body.type_url != type_url {
        return Err(Rejected {
            name: fallback(),
            error: format!(
                "resource type {} in a {type_url} response",
                resource.body.type_url
            ),
        });
    }
    // istiod wraps some typed configs in TypedStructs: from here on they are the real
    // messages, as Envoy converts them.
    let full_name = xds_client::descriptors::type_name_of_url(type_url);
    let unwrapped = xds_client::typed_struct::unwrap_encoded(full_name, &resource.body.value)
        .map_err(|error| Rejected {
            name: fallback(),
            error,
        })?;
    let bytes = unwrapped.as_deref().unwrap_or(&resource.body.value);
    let message = M::decode(bytes).map_err(|e| Rejected {
        name: fallback(),
        error: format!("malformed resource: {e}"),
    })?;
    let name = name_of(&message).to_string();
    let name = if name.is_empty() { fallback() } else { name };
    let mut notes = Vec::new();
    check::check_encoded(type_url, bytes, "", &mut notes).map_err(|e| rejected(&name, e))?;
    Ok((name, message))
}

/// [`decode`], then `translate`: the resource's name and its translated form, or a
/// rejection naming it.
pub fn translate<M: Message + Default, T>(
    resource: &Resource,
    type_url: &str,
    index: usize,
    name_of: fn(&M) -> &str,
    translate: impl FnOnce(&M) -> crate::config::error::Result<T>,
) -> Result<(String, T), Rejected> {
    let (name, message) = decode(resource, type_url, index, name_of)?;
    let translated = translate(&message).map_err(|e| rejected(&name, e))?;
    Ok((name, translated))
}

/// A rejection naming the resource and the field.
pub fn rejected(name: &str, e: ConfigError) -> Rejected {
    Rejected {
        name: name.to_string(),
        error: e.to_string(),
    }
}
