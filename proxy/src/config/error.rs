//! The error every translation step returns: what is wrong, and where in the config.

use std::fmt;

/// A config that cannot be served, with the dotted path of the field at fault
/// (`static_resources.listeners[0].filter_chains[2].filters[0].typed_config`). It becomes a
/// CLI error with a non-zero exit, or (with xDS) the `error_detail` of a NACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is; empty for the document as a whole.
    pub path: String,
    /// What the problem is.
    pub message: String,
}

impl ConfigError {
    /// An error at `path`.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error for a value found at `parent`: its path becomes relative to it. Lets
    /// a hot loop translate with paths built only when something fails.
    pub fn under(self, parent: &str) -> Self {
        let path = if self.path.is_empty() {
            parent.to_string()
        } else {
            join(parent, &self.path)
        };
        ConfigError {
            path,
            message: self.message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<xds_client::json::JsonError> for ConfigError {
    fn from(e: xds_client::json::JsonError) -> Self {
        ConfigError::at(e.path, e.message)
    }
}

/// Shorthand for translation results.
pub type Result<T> = std::result::Result<T, ConfigError>;

/// Joins a parent path and a child field name. Translation builds a path for every list
/// element of a config (tens of thousands for a large sidecar), so this appends rather than
/// formats.
pub fn join(parent: &str, child: &str) -> String {
    let mut path = String::with_capacity(parent.len() + 1 + child.len() + 8);
    if !parent.is_empty() {
        path.push_str(parent);
        path.push('.');
    }
    path.push_str(child);
    path
}

/// The path of element `index` of the list field `field` under `parent`
/// (`parent.field[index]`).
pub fn item(parent: &str, field: &str, index: usize) -> String {
    use std::fmt::Write;
    let mut path = join(parent, field);
    let _ = write!(path, "[{index}]");
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_and_index_like_envoy_field_paths() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a.b", "c"), "a.b.c");
        assert_eq!(item("", "clusters", 0), "clusters[0]");
        assert_eq!(
            item("static_resources", "clusters", 4071),
            "static_resources.clusters[4071]"
        );
        assert_eq!(item("x", "y", usize::MAX), format!("x.y[{}]", usize::MAX));
        let relative = ConfigError::at("socket_address.port_value", "port out of range");
        assert_eq!(
            relative.under("a[0]").path,
            "a[0].socket_address.port_value"
        );
        assert_eq!(ConfigError::at("", "required").under("a[0]").path, "a[0]");
    }
}
