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

/// Joins a parent path and a child field name.
pub fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}
