//! SDS: secrets named by TLS contexts arrive over ADS or over a separate SDS stream (the
//! `sds-grpc` cluster pilot-agent serves); every context using a secret is rebuilt when it
//! arrives or rotates, and the update is refused (NACK) if any context cannot use it.

use super::resource::{self, Applied};
use crate::config::secrets::Secrets;
use crate::config::source::XdsSource;
use crate::config::tls::{Prepared as Built, ServerTls, UpstreamTls};
use crate::server::Server;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use xds_client::ads::{Rejected, Update, SECRET};
use xds_client::proto::envoy::extensions::transport_sockets::tls::v3 as tls;

/// A TLS context of a listener or a cluster.
pub enum Context {
    /// Listener side.
    Server(Arc<ServerTls>),
    /// Cluster side.
    Client(Arc<UpstreamTls>),
}

impl Context {
    fn sds(&self) -> &[crate::config::tls::SdsRef] {
        match self {
            Context::Server(t) => &t.sds,
            Context::Client(t) => &t.tls.sds,
        }
    }

    fn uses(&self, name: &str) -> bool {
        match self {
            Context::Server(t) => t.uses(name),
            Context::Client(t) => t.tls.uses(name),
        }
    }

    fn reject(&self) {
        match self {
            Context::Server(t) => t.reject(),
            Context::Client(t) => t.tls.reject(),
        }
    }
}

/// A rebuilt config waiting to be installed.
enum Prepared {
    Server(Arc<ServerTls>, Built<rustls::ServerConfig>),
    Client(Arc<UpstreamTls>, Built<rustls::ClientConfig>),
}

impl Prepared {
    fn install(self) {
        match self {
            Prepared::Server(t, s) => t.install(s),
            Prepared::Client(t, s) => t.tls.install(s),
        }
    }
}

/// Secrets SDS delivered.
#[derive(Default)]
pub struct SecretState {
    /// By name, as received.
    pub applied: BTreeMap<String, (tls::Secret, Applied)>,
}

impl SecretState {
    /// The bootstrap's static secrets with the dynamic ones.
    pub fn merged(&self, server: &Server) -> Secrets {
        server
            .bootstrap
            .secrets
            .merged(self.applied.values().map(|(s, _)| s))
    }
}

/// Whether the server's own listeners or clusters (the bootstrap's) fetch secrets over
/// SDS, so the xDS side must run even without `dynamic_resources`.
pub fn bootstrap_uses_sds(server: &Server) -> bool {
    let st = super::State::default();
    contexts(server, &st)
        .iter()
        .any(|c| c.sds().iter().any(|r| r.source.is_some()))
}

/// Every TLS context in use: listeners (active and warming) and clusters (active and
/// warming).
pub fn contexts(server: &Server, st: &super::State) -> Vec<Context> {
    let mut out = Vec::new();
    let listeners = server.listeners();
    let configs = listeners.iter().map(|l| l.config.clone()).chain(
        st.listeners
            .warming
            .values()
            .map(|e| e.listener.config.clone()),
    );
    for l in configs {
        for c in l.filter_chains.iter().chain(l.default_chain.iter()) {
            if let Some(t) = &c.tls {
                out.push(Context::Server(t.clone()));
            }
        }
    }
    let clusters = server.clusters.all();
    for c in clusters.iter().chain(st.clusters.warming.values()) {
        for t in c.config.tls_contexts() {
            out.push(Context::Client(t.clone()));
        }
    }
    out
}

/// The secret names to subscribe, by source.
pub fn interest(contexts: &[Context]) -> BTreeMap<XdsSource, BTreeSet<String>> {
    let mut out: BTreeMap<XdsSource, BTreeSet<String>> = BTreeMap::new();
    for r in contexts.iter().flat_map(|c| c.sds()) {
        if let Some(source) = &r.source {
            out.entry(source.clone())
                .or_default()
                .insert(r.name.clone());
        }
    }
    out
}

/// Applies an SDS response: each secret is checked against every context using it; the
/// ones every context can use are installed, the others rejected (the old one stays).
pub fn apply_sds(server: &Server, st: &mut super::State, update: &Update) -> Vec<Rejected> {
    let mut rejected = Vec::new();
    let all = contexts(server, st);
    for (i, r) in update.resources.iter().enumerate() {
        let (name, secret) = match resource::decode::<tls::Secret>(r, SECRET, i, |s| &s.name) {
            Ok(x) => x,
            Err(e) => {
                rejected.push(e);
                continue;
            }
        };
        if st
            .secrets
            .applied
            .get(&name)
            .is_some_and(|(_, a)| a.same(&r.body))
        {
            continue;
        }
        let previous = st.secrets.applied.insert(
            name.clone(),
            (secret, Applied::new(update.version_of(r), r.body.clone())),
        );
        let merged = st.secrets.merged(server);
        let prepared: Result<Vec<Prepared>, _> = all
            .iter()
            .filter(|c| c.uses(&name))
            .map(|c| match c {
                Context::Server(t) => t.prepare(&merged).map(|s| Prepared::Server(t.clone(), s)),
                Context::Client(t) => t
                    .tls
                    .prepare(&merged)
                    .map(|s| Prepared::Client(t.clone(), s)),
            })
            .collect();
        match prepared {
            Ok(list) => {
                tracing::info!(target: "config", "sds: secret '{name}' applied to {} TLS context(s)", list.len());
                list.into_iter().for_each(Prepared::install);
            }
            Err(e) => {
                match previous {
                    Some(p) => st.secrets.applied.insert(name.clone(), p),
                    None => st.secrets.applied.remove(&name),
                };
                rejected.push(resource::rejected(&name, e));
            }
        }
    }
    // A rejected secret ends the wait of the contexts that need it.
    for r in &rejected {
        all.iter()
            .filter(|c| c.uses(&r.name))
            .for_each(Context::reject);
    }
    rejected
}
