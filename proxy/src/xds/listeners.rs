//! LDS and RDS: listeners added, replaced and removed by name; a new or changed listener
//! warms until every route configuration it names has arrived (the listener it replaces
//! keeps serving meanwhile), then takes over the same socket. RDS updates swap routes in
//! place: listeners and their connections are not touched.

use super::extensions;
use super::resource::{self, Applied};
use crate::config::listener::{self, ListenerConfig, Terminal};
use crate::config::rds::{RdsSlot, Routes};
use crate::config::route::{self, RouteConfig};
use crate::config::source::XdsSource;
use crate::listener::{ActiveListener, ListenerSockets};
use crate::server::Server;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use xds_client::ads::{Rejected, Update, LISTENER, ROUTE};
use xds_client::proto::envoy::config::listener::v3 as lproto;
use xds_client::proto::envoy::config::route::v3 as rproto;

/// A dynamic listener with what keeps it running.
pub struct Entry {
    /// The listener.
    pub listener: Arc<ActiveListener>,
    /// Its bound socket (shared with the listener that replaces it on the same address).
    socket: Option<Arc<ListenerSockets>>,
    /// The RDS slots of its HTTP connection managers.
    slots: Vec<Arc<RdsSlot>>,
    /// Its filter chains as received (then the default chain), to tell which chains an
    /// update changes.
    chains: Vec<Vec<u8>>,
    /// As received.
    pub applied: Applied,
    /// Its discovered filters (ECDS), and the listener as received to rebuild it when
    /// one of their configs changes (only kept when it has some).
    extensions: Vec<extensions::Dependency>,
    proto: Option<Box<lproto::Listener>>,
    /// A discovered filter's first config is still awaited.
    awaits_extension: bool,
}

impl Entry {
    fn warm(&self) -> bool {
        !self.awaits_extension && self.slots.iter().all(|s| s.answered()) && self.listener.warmed()
    }

    /// How long it may warm: the longest initial fetch timeout of its routes and secrets;
    /// `None` when one of them waits forever.
    pub fn fetch_timeout(&self) -> Option<std::time::Duration> {
        let config = &self.listener.config;
        let secrets = config
            .filter_chains
            .iter()
            .chain(config.default_chain.iter())
            .filter_map(|c| c.tls.as_ref())
            .flat_map(|t| t.sds.iter())
            .filter(|r| r.source.is_some())
            .map(|r| r.fetch_timeout);
        let routes = self.slots.iter().map(|s| s.fetch_timeout);
        let extensions = self
            .extensions
            .iter()
            .filter(|_| self.awaits_extension)
            .map(|d| d.fetch_timeout);
        routes
            .chain(secrets)
            .chain(extensions)
            .try_fold(std::time::Duration::ZERO, |max, t| t.map(|t| max.max(t)))
    }

    /// Drains the connections of the chains `changed` picks, over `--drain-time-s`
    /// (`listener_manager.total_filter_chains_draining` counts them meanwhile).
    fn drain_chains(&self, server: &Server, changed: impl Fn(&Vec<u8>) -> bool) {
        let time = std::time::Duration::from_secs(server.options.drain_time_s);
        for (i, chain) in self.chains.iter().enumerate() {
            if changed(chain) {
                self.listener.drain_chain(
                    i,
                    time,
                    server.options.drain_strategy,
                    &server.server_stats.chains_draining,
                );
            }
        }
    }
}

/// A listener's filter chains (then its default chain), encoded as received.
fn chain_keys(l: &lproto::Listener) -> Vec<Vec<u8>> {
    use prost::Message;
    l.filter_chains
        .iter()
        .chain(l.default_filter_chain.iter())
        .map(|c| c.encode_to_vec())
        .collect()
}

/// What LDS and RDS delivered.
#[derive(Default)]
pub struct ListenerState {
    /// Serving.
    pub active: BTreeMap<String, Entry>,
    /// Waiting for their routes (or secrets).
    pub warming: BTreeMap<String, Entry>,
    /// Route configurations by name.
    pub routes: HashMap<String, (Arc<RouteConfig>, Applied)>,
    /// Discovered filter configs (ECDS) by name.
    pub extensions: extensions::ExtensionState,
}

impl ListenerState {
    /// The ECDS names the listeners (active and warming) need.
    pub fn ecds_interest(&self) -> BTreeMap<XdsSource, BTreeSet<String>> {
        extensions::interest(
            self.active
                .values()
                .chain(self.warming.values())
                .flat_map(|e| e.extensions.iter()),
        )
    }

    /// The RDS names the listeners (active and warming) need, by source.
    pub fn rds_interest(&self) -> BTreeMap<XdsSource, BTreeSet<String>> {
        let mut out: BTreeMap<XdsSource, BTreeSet<String>> = BTreeMap::new();
        for s in self
            .active
            .values()
            .chain(self.warming.values())
            .flat_map(|e| e.slots.iter())
        {
            out.entry(s.source.clone())
                .or_default()
                .insert(s.name.clone());
        }
        out
    }

    /// Moves warm listeners (all of them when `force`) to active and publishes the set.
    pub fn promote(&mut self, server: &Server, force: bool) {
        self.promote_matching(server, |e| force || e.warm());
    }

    /// Activates warming listener `name` without what it still waits for, if it is still
    /// the warming `listener` (its initial fetch timeout passed).
    pub fn give_up_waiting(&mut self, server: &Server, name: &str, listener: &Arc<ActiveListener>) {
        let target = self
            .warming
            .get(name)
            .is_some_and(|e| Arc::ptr_eq(&e.listener, listener));
        if target {
            tracing::warn!(target: "config", "lds: listener '{name}' activated before its routes or secrets arrived (initial fetch timeout)");
            self.promote_matching(server, |e| Arc::ptr_eq(&e.listener, listener));
        }
    }

    fn promote_matching(&mut self, server: &Server, pick: impl Fn(&Entry) -> bool) {
        let ready: Vec<String> = self
            .warming
            .iter()
            .filter(|(_, e)| pick(e))
            .map(|(n, _)| n.clone())
            .collect();
        if ready.is_empty() {
            return;
        }
        for name in ready {
            let Some(entry) = self.warming.remove(&name) else {
                continue;
            };
            if let Some(socket) = &entry.socket {
                if let Err(e) = server.workers.accept(&entry.listener, socket) {
                    tracing::error!(target: "config", "listener {name}: cannot start accepting: {e}");
                }
            }
            tracing::info!(target: "config", "lds: listener '{name}' active on {}", entry.listener.config.address);
            let kept = entry.chains.clone();
            let address = entry.listener.config.address.clone();
            server.listeners_created(1);
            match self.active.insert(name.clone(), entry) {
                Some(old) => {
                    if let Some(new) = self.active.get(&name) {
                        new.listener.carry_over(&old.listener, |i| {
                            old.chains.iter().position(|c| *c == new.chains[i])
                        });
                    }
                    old.listener.retire();
                    old.drain_chains(server, |chain| !kept.contains(chain));
                    manager_stat(server, "listener_modified");
                    // Same address: the socket is kept and only chains change.
                    if old.listener.config.address == address {
                        manager_stat(server, "listener_in_place_updated");
                    }
                }
                None => manager_stat(server, "listener_added"),
            }
        }
        self.publish(server);
    }

    /// Puts static plus active dynamic listeners into the server's set.
    fn publish(&self, server: &Server) {
        let statics = server
            .listeners()
            .iter()
            .filter(|l| is_static(server, &l.config.name))
            .cloned()
            .collect::<Vec<_>>();
        let mut all = statics;
        all.extend(self.active.values().map(|e| e.listener.clone()));
        server.set_listeners(all);
        server
            .scope()
            .child("listener_manager")
            .gauge("total_listeners_warming")
            .set(self.warming.len() as i64);
    }
}

/// Counts one more in `gauge` for `time` (a removed listener draining).
fn draining_while(gauge: &std::sync::Arc<crate::stats::Gauge>, time: std::time::Duration) {
    gauge.inc();
    let gauge = gauge.clone();
    tokio::spawn(async move {
        tokio::time::sleep(time).await;
        gauge.dec();
    });
}

/// Counts a `listener_manager.<name>` event.
fn manager_stat(server: &Server, name: &str) {
    server.scope().child("listener_manager").counter(name).inc();
}

fn is_static(server: &Server, name: &str) -> bool {
    server.bootstrap.listeners.iter().any(|l| l.name == name)
}

/// The RDS slots of a listener's HTTP connection managers.
fn slots(config: &ListenerConfig) -> Vec<Arc<RdsSlot>> {
    config
        .filter_chains
        .iter()
        .chain(config.default_chain.iter())
        .filter_map(|c| match &c.terminal {
            Terminal::Http(h) => match &h.routes {
                Routes::Rds(slot) => Some(slot.clone()),
                Routes::Static(_) => None,
            },
            Terminal::Tcp(_) => None,
        })
        .collect()
}

/// Another listener (static, active or warming, of another name) already holding one of
/// `config`'s addresses on a bound port.
fn address_taken(server: &Server, st: &ListenerState, name: &str, config: &ListenerConfig) -> bool {
    let same = |c: &ListenerConfig| {
        c.name != name
            && c.bind_to_port
            && c.addresses().any(|a| config.addresses().any(|b| a == b))
    };
    server.bootstrap.listeners.iter().any(|c| same(c))
        || st
            .active
            .values()
            .chain(st.warming.values())
            .any(|e| same(&e.listener.config))
}

/// The socket for a listener: the one its predecessor of the same name holds when the
/// address is unchanged, else a new bind.
fn socket_for(
    st: &ListenerState,
    config: &ListenerConfig,
) -> std::io::Result<Option<Arc<ListenerSockets>>> {
    if !config.bind_to_port {
        return Ok(None);
    }
    let previous = st
        .warming
        .get(&config.name)
        .or_else(|| st.active.get(&config.name))
        .filter(|e| {
            e.listener.config.addresses().eq(config.addresses())
                && e.listener.config.ipv6_only == config.ipv6_only
                && e.listener.config.transparent == config.transparent
        })
        .and_then(|e| e.socket.clone());
    if let Some(s) = previous {
        return Ok(Some(s));
    }
    crate::listener::bind_listener(config).map(|s| Some(Arc::new(s)))
}

/// Applies an LDS response (`secrets`: the static and SDS secrets known now); returns the
/// rejections.
pub fn apply_lds(
    server: &Server,
    st: &mut ListenerState,
    update: &Update,
    secrets: &crate::config::secrets::Secrets,
) -> Vec<Rejected> {
    let mut rejected = Vec::new();
    let mut seen = HashSet::new();
    for (i, r) in update.resources.iter().enumerate() {
        let decoded = resource::decode::<lproto::Listener>(r, LISTENER, i, |l| &l.name);
        let (name, proto) = match decoded {
            Ok(x) => x,
            Err(e) => {
                seen.insert(e.name.clone());
                rejected.push(e);
                continue;
            }
        };
        seen.insert(name.clone());
        let mut reject = |error: String| {
            rejected.push(Rejected {
                name: name.clone(),
                error,
            })
        };
        if is_static(server, &name) {
            reject("a static listener of that name exists and cannot be updated by LDS".into());
            continue;
        }
        let current = st.warming.get(&name).or_else(|| st.active.get(&name));
        if current.is_some_and(|e| e.applied.same(&r.body)) {
            continue;
        }
        let applied = Applied::new(update.version_of(r), r.body.clone());
        if let Err(e) = stage(server, st, &name, proto, applied, secrets) {
            reject(e);
        }
    }
    let removals: Vec<String> = if update.state_of_the_world {
        st.active
            .keys()
            .chain(st.warming.keys())
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect()
    } else {
        update.removed.clone()
    };
    let mut removed_active = false;
    for name in removals {
        st.warming.remove(&name);
        if let Some(e) = st.active.remove(&name) {
            tracing::info!(target: "config", "lds: listener '{name}' removed");
            e.listener.retire();
            e.drain_chains(server, |_| true);
            draining_while(
                &server.server_stats.listeners_draining,
                std::time::Duration::from_secs(server.options.drain_time_s),
            );
            manager_stat(server, "listener_removed");
            removed_active = true;
        }
    }
    if removed_active {
        st.publish(server);
    }
    st.promote(server, false);
    rejected
}

/// The listener `proto` as it serves now: its discovered filters' configs put in, then
/// translated.
fn translate_now(
    st: &ListenerState,
    proto: &lproto::Listener,
    deps: &[extensions::Dependency],
    secrets: &crate::config::secrets::Secrets,
) -> Result<Arc<ListenerConfig>, String> {
    let resolved;
    let proto = if deps.is_empty() {
        proto
    } else {
        resolved = extensions::resolve(proto, &st.extensions).map_err(|e| e.to_string())?;
        &resolved
    };
    listener::translate(proto, secrets, "")
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Builds listener `name` from `proto` and puts it to warm (it replaces the active one of
/// that name once warm); the error rejects it and changes nothing.
fn stage(
    server: &Server,
    st: &mut ListenerState,
    name: &str,
    proto: lproto::Listener,
    applied: Applied,
    secrets: &crate::config::secrets::Secrets,
) -> Result<(), String> {
    let deps = extensions::dependencies(&proto).map_err(|e| e.to_string())?;
    let config = translate_now(st, &proto, &deps, secrets)?;
    if config.bind_to_port && address_taken(server, st, name, &config) {
        return Err(format!(
            "error adding listener '{}': has duplicate address '{}' as existing listener",
            name, config.address
        ));
    }
    let socket = socket_for(st, &config).map_err(|e| {
        manager_stat(server, "listener_create_failure");
        format!("cannot bind '{}': {e}", config.address)
    })?;
    let flush = std::time::Duration::from_millis(server.options.file_flush_interval_msec.max(1));
    let active = ActiveListener::new(
        config.clone(),
        &server.scope(),
        flush,
        &server.bootstrap.node_proto,
    )
    .map_err(|e| format!("cannot create listener: {e}"))?;
    let slots = slots(&config);
    for s in &slots {
        if let Some((routes, _)) = st.routes.get(&s.name) {
            s.set(routes.clone());
        }
    }
    let awaits_extension = extensions::waits(&deps, &st.extensions);
    st.warming.insert(
        name.to_string(),
        Entry {
            listener: active,
            socket,
            slots,
            chains: chain_keys(&proto),
            applied,
            awaits_extension,
            proto: (!deps.is_empty()).then(|| Box::new(proto)),
            extensions: deps,
        },
    );
    Ok(())
}

/// Applies an ECDS response: each config is checked against the filters that use it
/// and against every listener it would rebuild (a listener it cannot serve rejects it,
/// and the previous config stays); then those listeners are rebuilt on their sockets.
pub fn apply_ecds(
    server: &Server,
    st: &mut ListenerState,
    update: &Update,
    secrets: &crate::config::secrets::Secrets,
) -> Vec<Rejected> {
    let uses: Vec<extensions::Dependency> = st
        .active
        .values()
        .chain(st.warming.values())
        .flat_map(|e| e.extensions.iter().cloned())
        .collect();
    let (set, mut rejected) = extensions::decode_update(update, &uses);
    let mut changed = Vec::new();
    let mut seen = HashSet::new();
    for (name, any, applied) in set {
        seen.insert(name.clone());
        let previous = st.extensions.insert(name.clone(), any, applied);
        if let Err(error) = rebuildable(st, &name, secrets) {
            st.extensions.restore(&name, previous);
            rejected.push(Rejected { name, error });
            continue;
        }
        extensions::count(server, &uses, &name, "config_reload");
        changed.push(name);
    }
    for r in &rejected {
        extensions::count(server, &uses, &r.name, "config_fail");
    }
    let removals: Vec<String> = if update.state_of_the_world {
        st.extensions
            .names()
            .into_iter()
            .filter(|n| !seen.contains(n) && !rejected.iter().any(|r| &r.name == n))
            .collect()
    } else {
        update.removed.clone()
    };
    for name in removals {
        if st.extensions.remove(&name) {
            changed.push(name);
        }
    }
    rebuild_users(server, st, &changed, secrets);
    // As Envoy's init target is ready after a rejection, a listener stops waiting for a
    // config that was rejected (its filter serves without one, or with its default).
    let failed: HashSet<&str> = rejected.iter().map(|r| r.name.as_str()).collect();
    for e in st.warming.values_mut().filter(|e| e.awaits_extension) {
        let pending = e
            .extensions
            .iter()
            .filter(|d| !failed.contains(d.name.as_str()));
        e.awaits_extension = extensions::waits(pending, &st.extensions);
    }
    st.promote(server, false);
    rejected
}

/// The listeners (warming ones first, as they are the newest) that use config `name`.
fn users(st: &ListenerState, name: &str) -> Vec<User> {
    let mut out: Vec<User> = Vec::new();
    for (n, e) in st.warming.iter().chain(st.active.iter()) {
        if out.iter().any(|u| &u.name == n) {
            continue;
        }
        if let Some(proto) = e
            .proto
            .as_ref()
            .filter(|_| e.extensions.iter().any(|d| d.name == name))
        {
            out.push(User {
                name: n.clone(),
                proto: (**proto).clone(),
                applied: e.applied.clone(),
                deps: e.extensions.clone(),
            });
        }
    }
    out
}

/// A listener that uses a discovered config: its name, its LDS proto and version, and the
/// discovered filters it depends on.
struct User {
    name: String,
    proto: lproto::Listener,
    applied: Applied,
    deps: Vec<extensions::Dependency>,
}

/// Whether every listener using config `name` translates with the configs held now.
fn rebuildable(
    st: &ListenerState,
    name: &str,
    secrets: &crate::config::secrets::Secrets,
) -> Result<(), String> {
    for user in users(st, name) {
        translate_now(st, &user.proto, &user.deps, secrets)
            .map_err(|e| format!("listener {}: {e}", user.name))?;
    }
    Ok(())
}

/// Rebuilds, once each, the listeners using any of the configs `names` with the configs held now.
fn rebuild_users(
    server: &Server,
    st: &mut ListenerState,
    names: &[String],
    secrets: &crate::config::secrets::Secrets,
) {
    let mut rebuilt = HashSet::new();
    for name in names {
        for user in users(st, name) {
            if !rebuilt.insert(user.name.clone()) {
                continue;
            }
            if let Err(e) = stage(server, st, &user.name, user.proto, user.applied, secrets) {
                tracing::warn!(target: "config", "ecds: listener '{}' not rebuilt: {e}", user.name);
            }
        }
    }
}

/// Counts an RDS response for route configuration `name` under every connection manager
/// that uses it (`http.<stat_prefix>.rds.<name>.update_*`, Envoy's names).
fn count_rds_update(server: &Server, st: &ListenerState, name: &str, accepted: bool) {
    let mut prefixes = BTreeSet::new();
    for entry in st.active.values().chain(st.warming.values()) {
        let config = &entry.listener.config;
        for chain in config
            .filter_chains
            .iter()
            .chain(config.default_chain.iter())
        {
            if let Terminal::Http(h) = &chain.terminal {
                if matches!(&h.routes, Routes::Rds(slot) if slot.name == name) {
                    prefixes.insert(h.stat_prefix.clone());
                }
            }
        }
    }
    let outcome = if accepted {
        "update_success"
    } else {
        "update_rejected"
    };
    for prefix in prefixes {
        let scope = server
            .scope()
            .tagged("http", "envoy_http_conn_manager_prefix", &prefix)
            .child("rds")
            .child(name);
        scope.counter("update_attempt").inc();
        scope.counter(outcome).inc();
    }
}

/// Applies an RDS response: routes swap in every slot of that name.
pub fn apply_rds(server: &Server, st: &mut ListenerState, update: &Update) -> Vec<Rejected> {
    let mut rejected = Vec::new();
    for (i, r) in update.resources.iter().enumerate() {
        let translated = resource::translate::<rproto::RouteConfiguration, _>(
            r,
            ROUTE,
            i,
            |c| &c.name,
            |rc| route::translate(rc, ""),
        );
        let (name, routes) = match translated {
            Ok((name, routes)) => (name, Arc::new(routes)),
            Err(e) => {
                count_rds_update(server, st, &e.name, false);
                for entry in st.active.values().chain(st.warming.values()) {
                    for s in entry.slots.iter().filter(|s| s.name == e.name) {
                        s.reject();
                    }
                }
                rejected.push(e);
                continue;
            }
        };
        count_rds_update(server, st, &name, true);
        for entry in st.active.values().chain(st.warming.values()) {
            for s in entry.slots.iter().filter(|s| s.name == name) {
                s.set(routes.clone());
            }
        }
        let version = update.version_of(r);
        st.routes
            .insert(name, (routes, Applied::new(version, r.body.clone())));
    }
    st.promote(server, false);
    rejected
}
