//! Static secrets (`static_resources.secrets`) that TLS contexts reference by SDS name.

use super::error::{item, ConfigError, Result};
use std::collections::HashMap;
use xds_client::proto::envoy::extensions::transport_sockets::tls::v3 as tls;

/// Secrets by name, as configured in the bootstrap.
#[derive(Debug, Default, Clone)]
pub struct Secrets {
    by_name: HashMap<String, tls::Secret>,
}

impl Secrets {
    /// Indexes the bootstrap's static secrets; names must be unique.
    pub fn new(list: &[tls::Secret], path: &str) -> Result<Self> {
        let mut by_name = HashMap::new();
        for (i, s) in list.iter().enumerate() {
            if by_name.insert(s.name.clone(), s.clone()).is_some() {
                return Err(ConfigError::at(
                    item(path, "name", i),
                    format!("duplicate secret {}", s.name),
                ));
            }
        }
        Ok(Secrets { by_name })
    }

    /// The secret named `name`, if configured statically.
    pub fn get(&self, name: &str) -> Option<&tls::Secret> {
        self.by_name.get(name)
    }
}

impl Secrets {
    /// These secrets with `dynamic` ones (from SDS) added; a dynamic secret of the same
    /// name wins.
    pub fn merged<'a>(&self, dynamic: impl IntoIterator<Item = &'a tls::Secret>) -> Secrets {
        let mut by_name = self.by_name.clone();
        for s in dynamic {
            by_name.insert(s.name.clone(), s.clone());
        }
        Secrets { by_name }
    }
}
