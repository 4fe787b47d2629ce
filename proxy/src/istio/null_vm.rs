//! Istio's built-in extensions in the form istiod sent them up to 1.16 (and the
//! seeds' releases still do): a Wasm filter, HTTP `envoy.filters.http.wasm` or network
//! `envoy.filters.network.wasm`, whose VM is the null runtime and whose code names a plugin
//! compiled into istio-proxy (`envoy.wasm.metadata_exchange`, `envoy.wasm.stats`), with the
//! plugin's configuration as a JSON string. They map onto our native filters of the same
//! behaviour; a real Wasm module (any other runtime) is refused, naming the field.

use super::peer_metadata::PeerMetadataConfig;
use super::stats::IstioStatsConfig;
use crate::config::error::{join, ConfigError, Result};
use prost::Message;
use xds_client::proto::envoy::config::core::v3::{async_data_source, data_source};
use xds_client::proto::envoy::extensions::wasm::v3::{plugin_config::Vm, PluginConfig};
use xds_client::proto::google::protobuf::Any;

/// The HTTP Wasm filter's protobuf type name.
pub const HTTP_TYPE_NAME: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";
/// The network Wasm filter's protobuf type name.
pub const NETWORK_TYPE_NAME: &str = "envoy.extensions.filters.network.wasm.v3.Wasm";

/// The runtime whose "modules" are linked into the proxy.
const NULL_RUNTIME: &str = "envoy.wasm.runtime.null";
/// Istio's metadata exchange plugin (HTTP only).
const METADATA_EXCHANGE: &str = "envoy.wasm.metadata_exchange";
/// Istio's standard metrics plugin (HTTP and network).
const STATS: &str = "envoy.wasm.stats";
/// A JSON string carried in an `Any`: how the plugins took their configuration.
const STRING_VALUE: &str = "google.protobuf.StringValue";

/// The native filter a null-VM plugin maps onto.
#[derive(Debug)]
pub enum NullVmPlugin {
    /// `envoy.wasm.metadata_exchange`: the direction-dependent metadata exchange.
    MetadataExchange(PeerMetadataConfig),
    /// `envoy.wasm.stats`: Istio's standard metrics.
    Stats(IstioStatsConfig),
}

/// Translates an `envoy.filters.http.wasm` config.
pub fn translate_http(bytes: &[u8], path: &str) -> Result<NullVmPlugin> {
    use xds_client::proto::envoy::extensions::filters::http::wasm::v3::Wasm;
    let w = Wasm::decode(bytes).map_err(|e| ConfigError::at(path, e.to_string()))?;
    plugin(w.config.as_ref(), &join(path, "config"))
}

/// Translates an `envoy.filters.network.wasm` config: only the stats plugin has a
/// network form (Istio's TCP metadata exchange is a native filter in every release).
pub fn translate_network(bytes: &[u8], path: &str) -> Result<IstioStatsConfig> {
    use xds_client::proto::envoy::extensions::filters::network::wasm::v3::Wasm;
    let w = Wasm::decode(bytes).map_err(|e| ConfigError::at(path, e.to_string()))?;
    let config = join(path, "config");
    match plugin(w.config.as_ref(), &config)? {
        NullVmPlugin::Stats(s) => Ok(s),
        NullVmPlugin::MetadataExchange(_) => Err(ConfigError::at(
            join(&config, "vm_config.code"),
            format!("{METADATA_EXCHANGE} is an HTTP plugin; the network form is envoy.filters.network.metadata_exchange"),
        )),
    }
}

/// The plugin a `PluginConfig` names, with its configuration.
fn plugin(config: Option<&PluginConfig>, path: &str) -> Result<NullVmPlugin> {
    let vm_path = join(path, "vm_config");
    let Some(Vm::VmConfig(vm)) = config.and_then(|c| c.vm.as_ref()) else {
        return Err(ConfigError::at(&vm_path, "vm_config is required"));
    };
    if vm.runtime != NULL_RUNTIME {
        return Err(ConfigError::at(
            join(&vm_path, "runtime"),
            format!(
                "Wasm modules ({}) are not supported yet; only Istio's null-VM plugins \
                 {METADATA_EXCHANGE} and {STATS} ({NULL_RUNTIME}) are",
                if vm.runtime.is_empty() {
                    "default runtime"
                } else {
                    &vm.runtime
                }
            ),
        ));
    }
    let code = vm
        .code
        .as_ref()
        .and_then(|c| match c.specifier.as_ref()? {
            async_data_source::Specifier::Local(d) => match d.specifier.as_ref()? {
                data_source::Specifier::InlineString(s) => Some(s.as_str()),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_default();
    let configuration = config.and_then(|c| c.configuration.as_ref());
    let config_path = join(path, "configuration");
    match code {
        METADATA_EXCHANGE => {
            metadata_exchange_settings(configuration, &config_path)?;
            Ok(NullVmPlugin::MetadataExchange(PeerMetadataConfig::by_direction()))
        }
        STATS => Ok(NullVmPlugin::Stats(stats_settings(configuration, &config_path)?)),
        other => Err(ConfigError::at(
            join(&vm_path, "code"),
            format!("unknown null-VM plugin {other:?}; only {METADATA_EXCHANGE} and {STATS} are built in"),
        )),
    }
}

/// The JSON object a `StringValue` configuration holds (`{}` when empty).
fn json_object(any: &Any, path: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    let text = xds_client::proto::google::protobuf::StringValue::decode(any.value.as_slice())
        .map_err(|e| ConfigError::at(path, e.to_string()))?
        .value;
    if text.trim().is_empty() {
        return Ok(Default::default());
    }
    match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(o)) => Ok(o),
        Ok(_) => Err(ConfigError::at(
            path,
            "the plugin configuration must be a JSON object",
        )),
        Err(e) => Err(ConfigError::at(
            path,
            format!("the plugin configuration is not JSON: {e}"),
        )),
    }
}

/// The metadata exchange plugin's settings: a JSON string whose one setting,
/// `max_peer_cache_size`, only sizes a cache, or the TCP exchange's message that newer
/// istiods put there (whose fields the HTTP form ignores, as Istio's did).
fn metadata_exchange_settings(configuration: Option<&Any>, path: &str) -> Result<()> {
    let Some(any) = configuration else {
        return Ok(());
    };
    match xds_client::descriptors::type_name_of_url(&any.type_url) {
        STRING_VALUE => {
            let value = join(path, "value");
            match json_object(any, &value)?
                .keys()
                .find(|k| *k != "max_peer_cache_size")
            {
                Some(k) => Err(ConfigError::at(
                    join(&value, k),
                    "unknown setting of the metadata exchange plugin",
                )),
                None => Ok(()),
            }
        }
        super::tcp_exchange::TYPE_NAME => Ok(()),
        other => Err(ConfigError::at(
            path,
            format!("unsupported configuration type {other} for {METADATA_EXCHANGE}"),
        )),
    }
}

/// Settings of the old stats plugin that the native filter has no field for, with the
/// only values they may take: each other value would change the names of the metrics.
/// `debug` (logging) and `max_peer_cache_size` (a cache's size) take any value.
const LEGACY_STATS_SETTINGS: [(&str, Option<&str>); 5] = [
    ("debug", None),
    ("max_peer_cache_size", None),
    ("stat_prefix", Some("istio")),
    ("field_separator", Some(";.;")),
    ("value_separator", Some("=.=")),
];

/// The stats plugin's settings: `stats.PluginConfig` in proto3 JSON, inside a JSON string,
/// plus the old plugin's own settings ([`LEGACY_STATS_SETTINGS`]).
fn stats_settings(configuration: Option<&Any>, path: &str) -> Result<IstioStatsConfig> {
    let Some(any) = configuration else {
        return super::stats::translate(&[], path);
    };
    match xds_client::descriptors::type_name_of_url(&any.type_url) {
        STRING_VALUE => {}
        super::stats::TYPE_NAME => return super::stats::translate(&any.value, path),
        other => {
            return Err(ConfigError::at(
                path,
                format!("unsupported configuration type {other} for {STATS}"),
            ))
        }
    }
    let value = join(path, "value");
    let mut settings = json_object(any, &value)?;
    for (key, only) in LEGACY_STATS_SETTINGS {
        let Some(v) = settings.remove(key) else {
            continue;
        };
        if let Some(only) = only {
            if v.as_str().is_some_and(|s| s != only && !s.is_empty()) {
                return Err(ConfigError::at(
                    join(&value, key),
                    format!("only {only:?} is supported: another value renames Istio's metrics"),
                ));
            }
        }
    }
    let bytes = xds_client::json::to_bytes(
        serde_json::Value::Object(settings),
        super::stats::TYPE_NAME,
        false,
    )
    .map_err(|e| ConfigError::at(join(&value, &e.path), e.message))?;
    super::stats::translate(&bytes, &value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn http(config: serde_json::Value) -> Result<NullVmPlugin> {
        let w: xds_client::proto::envoy::extensions::filters::http::wasm::v3::Wasm =
            xds_client::json::decode(json!({ "config": config }), HTTP_TYPE_NAME, false).unwrap();
        translate_http(&w.encode_to_vec(), "f")
    }

    fn null_vm(code: &str, configuration: &str) -> serde_json::Value {
        json!({"root_id": "stats_outbound", "vm_config": {"vm_id": "v",
            "runtime": NULL_RUNTIME, "code": {"local": {"inline_string": code}}},
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": configuration}})
    }

    #[test]
    fn the_built_in_plugins_map_onto_native_filters() {
        assert!(matches!(
            http(null_vm(METADATA_EXCHANGE, "{}\n")).unwrap(),
            NullVmPlugin::MetadataExchange(c) if c.by_direction
        ));
        let NullVmPlugin::Stats(s) = http(null_vm(
            STATS,
            r#"{"debug": "false", "stat_prefix": "istio", "disable_host_header_fallback": true,
                "tcp_reporting_duration": "2s"}"#,
        ))
        .unwrap() else {
            panic!("stats")
        };
        assert!(s.disable_host_header_fallback);
        assert_eq!(s.tcp_reporting_period, std::time::Duration::from_secs(2));
    }

    #[test]
    fn real_wasm_and_unknown_settings_are_refused_by_field() {
        let mut v8 = null_vm(STATS, "{}");
        v8["vm_config"]["runtime"] = json!("envoy.wasm.runtime.v8");
        let e = http(v8).unwrap_err().to_string();
        assert!(
            e.contains("f.config.vm_config.runtime") && e.contains("v8"),
            "{e}"
        );
        let e = http(null_vm("envoy.wasm.attributegen", "{}")).unwrap_err();
        assert!(e.to_string().contains("f.config.vm_config.code"), "{e}");
        let e = http(null_vm(STATS, r#"{"stat_prefix": "mine"}"#)).unwrap_err();
        assert!(
            e.to_string()
                .contains("f.config.configuration.value.stat_prefix"),
            "{e}"
        );
        let e = http(null_vm(STATS, r#"{"bogus": 1}"#)).unwrap_err();
        assert!(
            e.to_string().contains("f.config.configuration.value"),
            "{e}"
        );
        let e = http(null_vm(STATS, "not json")).unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
        let e = http(null_vm(METADATA_EXCHANGE, r#"{"x": 1}"#)).unwrap_err();
        assert!(
            e.to_string().contains("f.config.configuration.value.x"),
            "{e}"
        );
    }

    #[test]
    fn the_network_form_carries_stats_only() {
        let w: xds_client::proto::envoy::extensions::filters::network::wasm::v3::Wasm =
            xds_client::json::decode(
                json!({"config": null_vm(STATS, r#"{"tcp_reporting_duration": "1s"}"#)}),
                NETWORK_TYPE_NAME,
                false,
            )
            .unwrap();
        assert!(translate_network(&w.encode_to_vec(), "n").is_ok());
        let w: xds_client::proto::envoy::extensions::filters::network::wasm::v3::Wasm =
            xds_client::json::decode(
                json!({"config": null_vm(METADATA_EXCHANGE, "{}")}),
                NETWORK_TYPE_NAME,
                false,
            )
            .unwrap();
        let e = translate_network(&w.encode_to_vec(), "n").unwrap_err();
        assert!(e.to_string().contains("n.config.vm_config.code"), "{e}");
    }
}
