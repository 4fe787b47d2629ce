//! The xDS part of `/config_dump`: dynamic clusters (active and warming), listeners (with
//! active and warming states), route configurations, discovered filter configs (ECDS) and,
//! on request, endpoint assignments, each with its version and update time, as Envoy
//! shows them.

use super::resource::Applied;
use super::XdsManager;
use xds_client::proto::envoy::admin::v3 as admin;
use xds_client::proto::google::protobuf::Timestamp;

fn timestamp(t: std::time::SystemTime) -> Option<Timestamp> {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Some(Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    })
}

fn listener_state(a: &Applied) -> admin::listeners_config_dump::DynamicListenerState {
    admin::listeners_config_dump::DynamicListenerState {
        version_info: a.version.clone(),
        listener: Some(a.body.clone()),
        last_updated: timestamp(a.last_updated),
    }
}

fn cluster(a: &Applied) -> admin::clusters_config_dump::DynamicCluster {
    admin::clusters_config_dump::DynamicCluster {
        version_info: a.version.clone(),
        cluster: Some(a.body.clone()),
        last_updated: timestamp(a.last_updated),
        ..Default::default()
    }
}

impl XdsManager {
    /// Adds what xDS delivered to the dump's sections.
    pub fn dump(
        &self,
        clusters: &mut admin::ClustersConfigDump,
        listeners: &mut admin::ListenersConfigDump,
        routes: &mut admin::RoutesConfigDump,
        ecds: &mut admin::EcdsConfigDump,
        endpoints: Option<&mut admin::EndpointsConfigDump>,
    ) {
        self.with_state(|st| {
            let version = |t: &str| st.versions.get(t).cloned().unwrap_or_default();
            clusters.version_info = version(xds_client::ads::CLUSTER);
            for (name, a) in &st.clusters.applied {
                if st.clusters.warming.contains_key(name) {
                    clusters.dynamic_warming_clusters.push(cluster(a));
                } else {
                    clusters.dynamic_active_clusters.push(cluster(a));
                }
            }
            listeners.version_info = version(xds_client::ads::LISTENER);
            let names = st
                .listeners
                .active
                .keys()
                .chain(st.listeners.warming.keys())
                .collect::<std::collections::BTreeSet<_>>();
            for name in names {
                listeners
                    .dynamic_listeners
                    .push(admin::listeners_config_dump::DynamicListener {
                        name: name.clone(),
                        active_state: st
                            .listeners
                            .active
                            .get(name)
                            .map(|e| listener_state(&e.applied)),
                        warming_state: st
                            .listeners
                            .warming
                            .get(name)
                            .map(|e| listener_state(&e.applied)),
                        ..Default::default()
                    });
            }
            let mut route_names: Vec<_> = st.listeners.routes.keys().collect();
            route_names.sort();
            for name in route_names {
                let (_, a) = &st.listeners.routes[name];
                routes
                    .dynamic_route_configs
                    .push(admin::routes_config_dump::DynamicRouteConfig {
                        version_info: a.version.clone(),
                        route_config: Some(a.body.clone()),
                        last_updated: timestamp(a.last_updated),
                        ..Default::default()
                    });
            }
            for a in st.listeners.extensions.applied() {
                ecds.ecds_filters
                    .push(admin::ecds_config_dump::EcdsFilterConfig {
                        version_info: a.version.clone(),
                        ecds_filter: Some(a.body.clone()),
                        last_updated: timestamp(a.last_updated),
                        ..Default::default()
                    });
            }
            if let Some(endpoints) = endpoints {
                let mut services: Vec<_> = st.clusters.assignments.keys().collect();
                services.sort();
                for s in services {
                    let (_, a) = &st.clusters.assignments[s];
                    endpoints.dynamic_endpoint_configs.push(
                        admin::endpoints_config_dump::DynamicEndpointConfig {
                            version_info: a.version.clone(),
                            endpoint_config: Some(a.body.clone()),
                            last_updated: timestamp(a.last_updated),
                            ..Default::default()
                        },
                    );
                }
            }
        });
    }
}
