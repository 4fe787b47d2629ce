//! `/config_dump` in Envoy's `envoy.admin.v3.ConfigDump` shape (proto3 JSON with `@type`),
//! so `istioctl proxy-config` and other tooling can read it.

use crate::server::Server;
use prost::Message;
use xds_client::proto::envoy::admin::v3 as admin;
use xds_client::proto::google::protobuf::{Any, Timestamp};

fn any<M: Message>(type_name: &str, m: &M) -> Any {
    Any {
        type_url: format!("type.googleapis.com/{type_name}"),
        value: m.encode_to_vec(),
    }
}

fn timestamp(t: std::time::SystemTime) -> Timestamp {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Builds the config dump: every section, as Envoy's default (`resource` and `mask` are
/// not supported); endpoint assignments only with `include_eds`, as in Envoy.
pub fn render(server: &Server, include_eds: bool) -> Result<serde_json::Value, String> {
    let _pool = xds_client::descriptors::hold();
    let b = &server.bootstrap.dump.decode().map_err(|e| e.to_string())?;
    let updated = Some(timestamp(server.started));
    let statics = b.static_resources.clone().unwrap_or_default();
    let bootstrap = admin::BootstrapConfigDump {
        bootstrap: Some(b.clone()),
        last_updated: updated,
    };
    let mut clusters = admin::ClustersConfigDump {
        static_clusters: statics
            .clusters
            .iter()
            .map(|c| admin::clusters_config_dump::StaticCluster {
                cluster: Some(any("envoy.config.cluster.v3.Cluster", c)),
                last_updated: updated,
            })
            .collect(),
        ..Default::default()
    };
    let mut listeners = admin::ListenersConfigDump {
        static_listeners: statics
            .listeners
            .iter()
            .map(|l| admin::listeners_config_dump::StaticListener {
                listener: Some(any("envoy.config.listener.v3.Listener", l)),
                last_updated: updated,
            })
            .collect(),
        ..Default::default()
    };
    let secrets = admin::SecretsConfigDump {
        static_secrets: statics
            .secrets
            .iter()
            .map(|s| admin::secrets_config_dump::StaticSecret {
                name: s.name.clone(),
                last_updated: updated,
                secret: Some(any("envoy.extensions.transport_sockets.tls.v3.Secret", s)),
            })
            .collect(),
        ..Default::default()
    };
    let mut routes = admin::RoutesConfigDump::default();
    let mut endpoints = admin::EndpointsConfigDump::default();
    let mut ecds = admin::EcdsConfigDump::default();
    if let Some(xds) = server.xds.get() {
        xds.dump(
            &mut clusters,
            &mut listeners,
            &mut routes,
            &mut ecds,
            include_eds.then_some(&mut endpoints),
        );
    }
    let mut configs = vec![
        any("envoy.admin.v3.BootstrapConfigDump", &bootstrap),
        any("envoy.admin.v3.ClustersConfigDump", &clusters),
    ];
    if include_eds {
        configs.push(any("envoy.admin.v3.EndpointsConfigDump", &endpoints));
    }
    if !ecds.ecds_filters.is_empty() {
        configs.push(any("envoy.admin.v3.EcdsConfigDump", &ecds));
    }
    configs.extend([
        any("envoy.admin.v3.ListenersConfigDump", &listeners),
        // Scoped routes are rejected, so the section is always empty, as Envoy shows it.
        any(
            "envoy.admin.v3.ScopedRoutesConfigDump",
            &admin::ScopedRoutesConfigDump::default(),
        ),
        any("envoy.admin.v3.RoutesConfigDump", &routes),
        any("envoy.admin.v3.SecretsConfigDump", &secrets),
    ]);
    let dump = admin::ConfigDump { configs };
    let mut json =
        xds_client::json::encode(&dump, "envoy.admin.v3.ConfigDump").map_err(|e| e.to_string())?;
    super::redact::sensitive(&mut json);
    Ok(json)
}
