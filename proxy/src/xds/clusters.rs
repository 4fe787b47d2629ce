//! CDS and EDS: clusters added, replaced and removed by name; EDS clusters warm until
//! their first assignment; assignments cached per service name so a replaced cluster (or
//! a cluster added after its assignment) gets its endpoints at once.

use super::resource::{self, Applied};
use crate::config::cluster::{self, Assignment};
use crate::config::secrets::Secrets;
use crate::config::source::XdsSource;
use crate::server::Server;
use crate::upstream::cluster::{Cluster, Origin};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use xds_client::ads::{Rejected, Update, CLUSTER, ENDPOINT};
use xds_client::proto::envoy::config::cluster::v3 as proto;
use xds_client::proto::envoy::config::endpoint::v3::ClusterLoadAssignment;

/// What CDS and EDS delivered.
#[derive(Default)]
pub struct ClusterState {
    /// CDS clusters (active or warming) as received.
    pub applied: BTreeMap<String, Applied>,
    /// CDS clusters waiting for their first EDS assignment or their TLS secrets.
    pub warming: BTreeMap<String, Arc<Cluster>>,
    /// The last assignment of each EDS service name.
    pub assignments: HashMap<String, (Arc<Assignment>, Applied)>,
    /// EDS service names whose assignment was rejected: their clusters stop waiting for
    /// it and serve without hosts until a good one comes (Envoy lets startup go on past a
    /// bad configuration).
    pub rejected: HashSet<String>,
}

impl ClusterState {
    /// Whether no cluster, static or dynamic, still waits for its first assignment.
    pub fn warmed(&self, server: &Server) -> bool {
        self.warming.is_empty()
            && server.clusters.all().iter().all(|c| {
                c.config
                    .eds_service_name
                    .as_ref()
                    .is_none_or(|s| self.eds_answered(s))
            })
    }

    /// Whether EDS answered for `service`: with an assignment, or a rejected one.
    fn eds_answered(&self, service: &str) -> bool {
        self.assignments.contains_key(service) || self.rejected.contains(service)
    }

    /// Whether a cluster has what it waits for: its assignment (EDS) and its secrets (or
    /// their rejections).
    fn ready(&self, c: &Cluster) -> bool {
        c.config
            .eds_service_name
            .as_ref()
            .is_none_or(|s| self.eds_answered(s))
            && c.config.tls.as_ref().is_none_or(|t| t.tls.settled())
    }

    /// Shows how many clusters warm (`cluster_manager.warming_clusters`).
    fn count_warming(&self, server: &Server) {
        server
            .scope()
            .child("cluster_manager")
            .gauge("warming_clusters")
            .set(self.warming.len() as i64);
    }

    /// Activates the warming clusters that have become ready.
    pub fn promote_ready(&mut self, server: &Server) {
        let ready: Vec<String> = self
            .warming
            .iter()
            .filter(|(_, c)| self.ready(c))
            .map(|(n, _)| n.clone())
            .collect();
        let clusters = ready
            .iter()
            .filter_map(|n| self.warming.remove(n))
            .collect();
        server.clusters.update(clusters, &[]);
        self.count_warming(server);
    }

    /// Activates warming cluster `name` without its assignment, if it is still the warming
    /// `cluster` (its EDS initial fetch timeout passed).
    pub fn give_up_waiting(&mut self, server: &Server, name: &str, cluster: &Arc<Cluster>) {
        if !self
            .warming
            .get(name)
            .is_some_and(|c| Arc::ptr_eq(c, cluster))
        {
            return;
        }
        if let Some(c) = self.warming.remove(name) {
            tracing::warn!(target: "config", "cds: cluster '{name}' activated without endpoints (initial fetch timeout)");
            c.count_init_fetch_timeout();
            server.clusters.update(vec![c], &[]);
        }
        self.count_warming(server);
    }

    /// Activates the warming clusters without endpoints (initial fetch timeout).
    pub fn activate_warming(&mut self, server: &Server) {
        let warming = std::mem::take(&mut self.warming);
        server.clusters.update(warming.into_values().collect(), &[]);
        self.count_warming(server);
    }

    /// The EDS names every cluster (static, active, warming) needs, by source.
    pub fn eds_interest(&self, server: &Server) -> BTreeMap<XdsSource, BTreeSet<String>> {
        let mut out: BTreeMap<XdsSource, BTreeSet<String>> = BTreeMap::new();
        for c in server.clusters.all().iter().chain(self.warming.values()) {
            if let (Some(name), Some(source)) = (&c.config.eds_service_name, &c.config.eds_source) {
                out.entry(source.clone()).or_default().insert(name.clone());
            }
        }
        out
    }
}

/// Applies a CDS response; `secrets` are the static and SDS secrets known now.
pub fn apply_cds(
    server: &Server,
    st: &mut ClusterState,
    update: &Update,
    secrets: &Secrets,
) -> Vec<Rejected> {
    let mut rejected = Vec::new();
    let mut seen = HashSet::new();
    let mut upserts = Vec::new();
    for (i, r) in update.resources.iter().enumerate() {
        let (name, proto) = match resource::decode::<proto::Cluster>(r, CLUSTER, i, |c| &c.name) {
            Ok(x) => x,
            Err(e) => {
                seen.insert(e.name.clone());
                rejected.push(e);
                continue;
            }
        };
        seen.insert(name.clone());
        if server.clusters.is_static(&name) {
            rejected.push(Rejected {
                name,
                error: "a static cluster of that name exists and cannot be updated by CDS".into(),
            });
            continue;
        }
        if st.applied.get(&name).is_some_and(|a| a.same(&r.body)) {
            continue;
        }
        let config = match cluster::translate(&proto, secrets, "") {
            Ok(c) => Arc::new(c),
            Err(e) => {
                rejected.push(resource::rejected(&name, e));
                continue;
            }
        };
        let version = update.version_of(r);
        st.applied
            .insert(name.clone(), Applied::new(version, r.body.clone()));
        let c = server.clusters.make(config, Origin::Cds);
        st.warming.remove(&name);
        if let Some((assignment, _)) = c
            .config
            .eds_service_name
            .as_ref()
            .and_then(|s| st.assignments.get(s))
        {
            c.set_endpoints(assignment);
        }
        // A cluster waits for its assignment (EDS) and its TLS secrets (SDS).
        if st.ready(&c) {
            upserts.push(c);
        } else {
            st.warming.insert(name, c);
        }
    }
    let removals: Vec<String> = if update.state_of_the_world {
        st.applied
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect()
    } else {
        update.removed.clone()
    };
    for name in &removals {
        st.applied.remove(name);
        st.warming.remove(name);
    }
    let removals: Vec<String> = removals
        .into_iter()
        .filter(|n| !server.clusters.is_static(n))
        .collect();
    for c in &upserts {
        let c = c.clone();
        tokio::spawn(async move { crate::upstream::manager::start_tasks(&c, false).await });
    }
    server.clusters.update(upserts, &removals);
    st.count_warming(server);
    rejected
}

/// The clusters (active and warming) that use assignment `service`.
fn users<'a>(
    active: &'a HashMap<String, Vec<Arc<Cluster>>>,
    warming: &'a BTreeMap<String, Arc<Cluster>>,
    service: &'a str,
) -> impl Iterator<Item = &'a Arc<Cluster>> {
    active.get(service).into_iter().flatten().chain(
        warming
            .values()
            .filter(move |c| c.config.eds_service_name.as_deref() == Some(service)),
    )
}

/// Applies an EDS response: cached, given to every cluster of the service, and warming
/// clusters of the service become active. Assignments are never removed while a cluster
/// of the service exists (Envoy keeps a cluster's endpoints when its assignment is
/// omitted).
pub fn apply_eds(server: &Server, st: &mut ClusterState, update: &Update) -> Vec<Rejected> {
    let mut rejected = Vec::new();
    let mut by_service: HashMap<String, Vec<Arc<Cluster>>> = HashMap::new();
    for c in server.clusters.all() {
        if let Some(s) = &c.config.eds_service_name {
            by_service.entry(s.clone()).or_default().push(c);
        }
    }
    for (i, r) in update.resources.iter().enumerate() {
        let translated = resource::translate::<ClusterLoadAssignment, _>(
            r,
            ENDPOINT,
            i,
            |c| &c.cluster_name,
            |la| cluster::load_assignment(la, ""),
        );
        let (name, endpoints) = match translated {
            Ok((name, e)) => (name, Arc::new(e)),
            Err(e) => {
                for c in users(&by_service, &st.warming, &e.name) {
                    c.count_eds_update(false);
                }
                st.rejected.insert(e.name.clone());
                rejected.push(e);
                continue;
            }
        };
        for c in users(&by_service, &st.warming, &name) {
            c.set_endpoints(&endpoints);
            c.count_eds_update(true);
        }
        let version = update.version_of(r);
        st.assignments
            .insert(name, (endpoints, Applied::new(version, r.body.clone())));
    }
    st.promote_ready(server);
    rejected
}
