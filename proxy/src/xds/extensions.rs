//! ECDS: listener, network and HTTP filters whose config a listener takes by name
//! (`config_discovery`), from `TypedExtensionConfig` resources over ADS. A listener with such filters is translated
//! with the configs known now substituted (else the filter's `default_config`, else a
//! filter answering 500 `NFCF`, or for a network filter closing connections, as Envoy's
//! missing-config filters do); it warms until
//! each has arrived (unless its default applies without warming, or the initial fetch
//! timeout passes). A new config rebuilds the listeners that use it on their socket;
//! their filter chains are unchanged, so no connection is drained: new connections get
//! the new config.

use super::resource::{self, Applied};
use crate::config::error::{join, ConfigError, Result};
use crate::config::source::XdsSource;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use xds_client::ads::{Rejected, Update, EXTENSION_CONFIG};
use xds_client::proto::envoy::config::core::v3::TypedExtensionConfig;
use xds_client::proto::envoy::config::listener::v3 as lproto;
use xds_client::proto::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use xds_client::proto::google::protobuf::Any;

const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// Where a discovered filter sits, which names its stats
/// (`extension_config_discovery.<kind>.<name>.`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    /// An HTTP filter of a connection manager (`http_filter`).
    Http,
    /// A network filter of a filter chain (`network_filter`).
    Network,
    /// A listener filter (`tcp_listener_filter`).
    Listener,
}

impl FilterKind {
    fn stat_prefix(self) -> &'static str {
        match self {
            FilterKind::Http => "http_filter",
            FilterKind::Network => "network_filter",
            FilterKind::Listener => "tcp_listener_filter",
        }
    }
}

/// One discovered filter of a listener.
#[derive(Debug, Clone)]
pub struct Dependency {
    /// The `TypedExtensionConfig` name.
    pub name: String,
    /// HTTP or network filter.
    pub kind: FilterKind,
    /// The config types the filter accepts (`type_urls`; empty: any).
    pub type_urls: Vec<String>,
    /// A `default_config` serves while none has arrived.
    pub has_default: bool,
    /// The default serves without warming (`apply_default_config_without_warming`).
    pub without_warming: bool,
    /// How long the listener warms for it (`None`: until it arrives).
    pub fetch_timeout: Option<std::time::Duration>,
}

impl Dependency {
    /// Whether a config of `type_url` may serve this filter.
    fn accepts(&self, type_url: &str) -> bool {
        self.type_urls.is_empty() || self.type_urls.iter().any(|t| t == type_url)
    }
}

/// The ECDS configs received, by name: the filter's typed config and the resource.
#[derive(Default)]
pub struct ExtensionState {
    configs: BTreeMap<String, (Any, Applied)>,
}

impl ExtensionState {
    /// Whether the config `name` has arrived.
    pub fn has(&self, name: &str) -> bool {
        self.configs.contains_key(name)
    }

    /// The received resources, for `/config_dump`.
    pub fn applied(&self) -> impl Iterator<Item = &Applied> {
        self.configs.values().map(|(_, a)| a)
    }
}

/// A listener's filter chains (by reference or mutable reference) with their paths.
fn with_paths<C>(
    chains: impl IntoIterator<Item = C>,
    default: Option<C>,
) -> impl Iterator<Item = (String, C)> {
    chains
        .into_iter()
        .enumerate()
        .map(|(i, c)| (format!("filter_chains[{i}]"), c))
        .chain(default.map(|c| ("default_filter_chain".to_string(), c)))
}

/// Runs `f` on every filter chain of `l` with its path.
fn each_chain(
    l: &mut lproto::Listener,
    mut f: impl FnMut(&mut lproto::FilterChain, &str) -> Result<()>,
) -> Result<()> {
    for (path, chain) in with_paths(&mut l.filter_chains, l.default_filter_chain.as_mut()) {
        f(chain, &path)?;
    }
    Ok(())
}

/// Runs `f` on every HTTP connection manager of `l`'s chains (decoded, then encoded back
/// when `f` changed it).
fn each_hcm(
    l: &mut lproto::Listener,
    mut f: impl FnMut(&mut hcm::HttpConnectionManager, &str) -> Result<bool>,
) -> Result<()> {
    each_chain(l, |chain, path| {
        for (i, filter) in chain.filters.iter_mut().enumerate() {
            let Some(lproto::filter::ConfigType::TypedConfig(any)) = &mut filter.config_type else {
                continue;
            };
            if xds_client::descriptors::type_name_of_url(&any.type_url) != HCM {
                continue;
            }
            let p = format!("{path}.filters[{i}].typed_config");
            let mut m = hcm::HttpConnectionManager::decode(any.value.as_slice())
                .map_err(|e| ConfigError::at(&p, e.to_string()))?;
            if f(&mut m, &p)? {
                any.value = m.encode_to_vec();
            }
        }
        Ok(())
    })
}

/// The discovered filters of `l`. Only ADS sources are supported.
pub fn dependencies(l: &lproto::Listener) -> Result<Vec<Dependency>> {
    let mut out = Vec::new();
    for (i, f) in l.listener_filters.iter().enumerate() {
        if let Some(lproto::listener_filter::ConfigType::ConfigDiscovery(d)) = &f.config_type {
            let p = format!("listener_filters[{i}].config_discovery");
            out.push(dependency(f.name.clone(), FilterKind::Listener, d, &p)?);
        }
    }
    // Read in place: this runs for every listener of every LDS update.
    for (path, chain) in with_paths(&l.filter_chains, l.default_filter_chain.as_ref()) {
        let last = chain.filters.len().saturating_sub(1);
        for (i, f) in chain.filters.iter().enumerate() {
            match &f.config_type {
                Some(lproto::filter::ConfigType::ConfigDiscovery(d)) => {
                    let p = format!("{path}.filters[{i}].config_discovery");
                    if i == last {
                        return Err(ConfigError::at(
                            p,
                            "the terminal network filter cannot take its config from ECDS",
                        ));
                    }
                    out.push(dependency(f.name.clone(), FilterKind::Network, d, &p)?);
                }
                Some(lproto::filter::ConfigType::TypedConfig(any))
                    if xds_client::descriptors::type_name_of_url(&any.type_url) == HCM =>
                {
                    let p = format!("{path}.filters[{i}].typed_config");
                    let m = hcm::HttpConnectionManager::decode(any.value.as_slice())
                        .map_err(|e| ConfigError::at(&p, e.to_string()))?;
                    for (k, h) in m.http_filters.iter().enumerate() {
                        if let Some(hcm::http_filter::ConfigType::ConfigDiscovery(d)) =
                            &h.config_type
                        {
                            let hp = format!("{p}.http_filters[{k}].config_discovery");
                            out.push(dependency(h.name.clone(), FilterKind::Http, d, &hp)?);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// A discovered filter's needs, from its `ExtensionConfigSource` at `p`.
fn dependency(
    name: String,
    kind: FilterKind,
    d: &xds_client::proto::envoy::config::core::v3::ExtensionConfigSource,
    p: &str,
) -> Result<Dependency> {
    let source = join(p, "config_source");
    if crate::config::source::xds_source(d.config_source.as_ref(), &source)? != XdsSource::Ads {
        return Err(ConfigError::at(
            source,
            "discovered filter configs are fetched over ADS only",
        ));
    }
    Ok(Dependency {
        name,
        kind,
        type_urls: d.type_urls.clone(),
        has_default: d.default_config.is_some(),
        without_warming: d.apply_default_config_without_warming,
        fetch_timeout: crate::config::source::fetch_timeout(d.config_source.as_ref(), &source)?,
    })
}

/// `l` with each discovered filter's config put in as its `typed_config`: the one
/// received, else its `default_config`; a filter with neither keeps `config_discovery`
/// (translated into the missing-config filter).
pub fn resolve(l: &lproto::Listener, st: &ExtensionState) -> Result<lproto::Listener> {
    let mut l = l.clone();
    for (i, f) in l.listener_filters.iter_mut().enumerate() {
        let Some(lproto::listener_filter::ConfigType::ConfigDiscovery(d)) = &f.config_type else {
            continue;
        };
        let p = format!("listener_filters[{i}].config_discovery.type_urls");
        if let Some(any) = chosen(st, &f.name, d, &p)? {
            f.config_type = Some(lproto::listener_filter::ConfigType::TypedConfig(any));
        }
    }
    each_hcm(&mut l, |m, path| {
        let mut changed = false;
        for (i, f) in m.http_filters.iter_mut().enumerate() {
            let Some(hcm::http_filter::ConfigType::ConfigDiscovery(d)) = &f.config_type else {
                continue;
            };
            let p = format!("{path}.http_filters[{i}].config_discovery.type_urls");
            if let Some(any) = chosen(st, &f.name, d, &p)? {
                f.config_type = Some(hcm::http_filter::ConfigType::TypedConfig(any));
                changed = true;
            }
        }
        Ok(changed)
    })?;
    each_chain(&mut l, |chain, path| {
        for (i, f) in chain.filters.iter_mut().enumerate() {
            let Some(lproto::filter::ConfigType::ConfigDiscovery(d)) = &f.config_type else {
                continue;
            };
            let p = format!("{path}.filters[{i}].config_discovery.type_urls");
            if let Some(any) = chosen(st, &f.name, d, &p)? {
                f.config_type = Some(lproto::filter::ConfigType::TypedConfig(any));
            }
        }
        Ok(())
    })?;
    Ok(l)
}

/// The config a discovered filter `name` serves with now: the one received (of a type
/// it accepts), else its default, else none.
fn chosen(
    st: &ExtensionState,
    name: &str,
    d: &xds_client::proto::envoy::config::core::v3::ExtensionConfigSource,
    type_urls_path: &str,
) -> Result<Option<Any>> {
    match st.configs.get(name) {
        Some((any, _)) => {
            if !d.type_urls.is_empty() && !d.type_urls.contains(&any.type_url) {
                return Err(ConfigError::at(
                    type_urls_path,
                    format!(
                        "the config of {name} is a {}, which this filter does not accept",
                        any.type_url
                    ),
                ));
            }
            Ok(Some(any.clone()))
        }
        None => Ok(d.default_config.clone()),
    }
}

/// Counts `event` (`config_reload`, `config_fail`) of discovered filter `name` (an HTTP
/// one unless `uses` says otherwise), under Envoy's
/// `extension_config_discovery.<kind>.<name>.` names.
pub fn count(server: &crate::server::Server, uses: &[Dependency], name: &str, event: &str) {
    let kind = uses
        .iter()
        .find(|d| d.name == name)
        .map_or(FilterKind::Http, |d| d.kind);
    server
        .scope()
        .child("extension_config_discovery")
        .child(kind.stat_prefix())
        .child(name)
        .counter(event)
        .inc();
}

/// Whether a listener with `deps` must still wait for one of them.
pub fn waits<'a>(deps: impl IntoIterator<Item = &'a Dependency>, st: &ExtensionState) -> bool {
    deps.into_iter()
        .any(|d| !(st.has(&d.name) || d.has_default && d.without_warming))
}

/// The ECDS names the listeners need (all over ADS).
pub fn interest<'a>(
    deps: impl Iterator<Item = &'a Dependency>,
) -> BTreeMap<XdsSource, BTreeSet<String>> {
    let names: BTreeSet<String> = deps.map(|d| d.name.clone()).collect();
    if names.is_empty() {
        return BTreeMap::new();
    }
    BTreeMap::from([(XdsSource::Ads, names)])
}

/// An ECDS response decoded and checked: the configs it sets (each checked against the
/// types the filters that use it accept, `uses`) and its rejections.
pub fn decode_update(
    update: &Update,
    uses: &[Dependency],
) -> (Vec<(String, Any, Applied)>, Vec<Rejected>) {
    let mut set = Vec::new();
    let mut rejected = Vec::new();
    for (i, r) in update.resources.iter().enumerate() {
        let decoded = resource::decode::<TypedExtensionConfig>(r, EXTENSION_CONFIG, i, |t| &t.name);
        let (name, config) = match decoded {
            Ok(x) => x,
            Err(e) => {
                rejected.push(e);
                continue;
            }
        };
        let Some(any) = config.typed_config else {
            rejected.push(Rejected {
                name,
                error: "typed_config: a filter config is required".into(),
            });
            continue;
        };
        if let Some(d) = uses
            .iter()
            .find(|d| d.name == name && !d.accepts(&any.type_url))
        {
            rejected.push(Rejected {
                name: name.clone(),
                error: format!(
                    "typed_config: {} is not one of the types filter {} accepts ({})",
                    any.type_url,
                    d.name,
                    d.type_urls.join(", ")
                ),
            });
            continue;
        }
        let version = update.version_of(r);
        set.push((name, any, Applied::new(version, r.body.clone())));
    }
    (set, rejected)
}

impl ExtensionState {
    /// Stores `name`'s config, returning what it replaces.
    pub fn insert(&mut self, name: String, any: Any, applied: Applied) -> Option<(Any, Applied)> {
        self.configs.insert(name, (any, applied))
    }

    /// Restores `name` to `previous` (a config that failed to apply).
    pub fn restore(&mut self, name: &str, previous: Option<(Any, Applied)>) {
        match previous {
            Some(p) => {
                self.configs.insert(name.to_string(), p);
            }
            None => {
                self.configs.remove(name);
            }
        }
    }

    /// Removes `name`'s config; whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        self.configs.remove(name).is_some()
    }

    /// The names received, for SotW omission.
    pub fn names(&self) -> Vec<String> {
        self.configs.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(filters: serde_json::Value) -> lproto::Listener {
        xds_client::json::decode(
            serde_json::json!({"name": "l", "filter_chains": [{"filters": filters}]}),
            "envoy.config.listener.v3.Listener",
            false,
        )
        .unwrap()
    }

    #[test]
    fn network_filters_resolve_and_a_terminal_one_is_refused() {
        let discovered = serde_json::json!({"name": "rbac", "config_discovery": {
            "config_source": {"ads": {}}, "type_urls": ["type.googleapis.com/x.Y"]}});
        let terminal = listener(serde_json::json!([discovered.clone()]));
        let e = dependencies(&terminal).unwrap_err();
        assert_eq!(e.path, "filter_chains[0].filters[0].config_discovery");
        let l = listener(
            serde_json::json!([discovered, {"name": "echo", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo"}}]),
        );
        let deps = dependencies(&l).unwrap();
        assert_eq!(
            (deps[0].name.as_str(), deps[0].kind),
            ("rbac", FilterKind::Network)
        );
        let mut st = ExtensionState::default();
        assert!(waits(&deps, &st));
        let config = Any {
            type_url: "type.googleapis.com/x.Y".into(),
            value: vec![],
        };
        st.insert("rbac".into(), config.clone(), Applied::new("1", config));
        assert!(!waits(&deps, &st));
        let resolved = resolve(&l, &st).unwrap();
        assert!(matches!(
            &resolved.filter_chains[0].filters[0].config_type,
            Some(lproto::filter::ConfigType::TypedConfig(a)) if a.type_url == "type.googleapis.com/x.Y"
        ));
    }
}
