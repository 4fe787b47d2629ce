//! The xDS side of the server: opens the ADS stream the bootstrap names, applies what it
//! delivers (CDS, EDS, LDS, RDS) to the running server, keeps the subscriptions following
//! what clusters and listeners reference, and drives the initial fetch to LIVE.

pub mod clusters;
pub mod dump;
pub mod extensions;
pub mod google;
pub mod init;
pub mod listeners;
pub mod resource;
pub mod secrets;
pub mod stats;

use crate::config::bootstrap::DynamicConfig;
use crate::config::bootstrap::Subscription;
use crate::config::source::XdsSource;
use crate::server::Server;
use crate::stats::Gauge;
use init::{Init, Phase};
use stats::SubscriptionStats;
use std::collections::HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};
use xds_client::ads::{
    self, Client, ClientTls, Handler, Interest, Rejected, Service, StreamConfig, Target, Update,
    Verdict,
};

/// Everything xDS delivered, under one lock (updates are applied one at a time).
#[derive(Default)]
pub struct State {
    /// CDS and EDS.
    pub clusters: clusters::ClusterState,
    /// LDS and RDS.
    pub listeners: listeners::ListenerState,
    /// SDS.
    pub secrets: secrets::SecretState,
    /// Initial fetch progress.
    init: Init,
    /// The last accepted version of each type (SotW `version_info`, Delta
    /// `system_version_info`).
    pub versions: HashMap<String, String>,
    /// CDS answers held while clusters warm, and the warming count they were held at.
    held_cds: Vec<tokio::sync::oneshot::Sender<()>>,
    last_warming: usize,
}

/// The xDS manager: the [`Handler`] of the ADS stream.
pub struct XdsManager {
    server: Weak<Server>,
    this: Weak<XdsManager>,
    config: DynamicConfig,
    client: Client,
    /// Streams other than ADS, by cluster and service.
    side_clients: Mutex<HashMap<(String, Service), Client>>,
    /// Files watched, by path and type.
    watched_files: Mutex<BTreeSet<(String, String)>>,
    state: Mutex<State>,
    cds: SubscriptionStats,
    lds: SubscriptionStats,
    rds: SubscriptionStats,
    eds: SubscriptionStats,
    connected: Arc<Gauge>,
    largest_message: Arc<Gauge>,
    done: tokio::sync::watch::Sender<bool>,
    /// The descriptor pool, kept while updates keep coming (decoding it costs more than
    /// applying a typical update) and dropped after a quiet minute.
    pool: Mutex<Option<(xds_client::descriptors::Hold, std::time::Instant)>>,
}

/// How long the descriptor pool outlives the last update.
const POOL_LINGER: std::time::Duration = std::time::Duration::from_secs(60);

/// How to reach a management server: a static cluster's first host with the cluster's
/// TLS, or a `google_grpc` target with its credentials.
fn stream_config(
    server: &Server,
    source: &XdsSource,
    service: Service,
    node_on_first_message_only: bool,
    max_message_bytes: usize,
) -> Result<StreamConfig, String> {
    let (target, tls, delta, name) = match source {
        XdsSource::Cluster { name, delta } => {
            let (target, tls) = cluster_target(server, name)?;
            (target, tls, *delta, name.clone())
        }
        XdsSource::Google { target, tls, delta } => (
            google::target(target)?,
            tls.as_ref().map(|t| google::tls(target, t)).transpose()?,
            *delta,
            target.clone(),
        ),
        XdsSource::Ads | XdsSource::Path(_) => return Err("not a gRPC stream source".into()),
    };
    Ok(StreamConfig {
        target,
        tls,
        service,
        delta,
        node: server.bootstrap.node_proto.clone(),
        node_on_first_message_only,
        max_message_bytes,
        name,
    })
}

/// A static cluster's first host and TLS.
fn cluster_target(
    server: &Server,
    cluster_name: &str,
) -> Result<(Target, Option<ClientTls>), String> {
    let cluster = server
        .clusters
        .get(cluster_name)
        .ok_or_else(|| format!("cluster {cluster_name} not found"))?;
    let hosts = cluster.hosts();
    let host = hosts
        .hosts
        .first()
        .ok_or_else(|| format!("cluster {cluster_name} has no endpoint"))?;
    let target = match &host.address {
        crate::upstream::host::HostAddress::Tcp(a) => Target::Tcp(*a),
        crate::upstream::host::HostAddress::Unix(p) => Target::Unix(p.clone()),
    };
    let tls = match &cluster.config.tls {
        None => None,
        Some(t) => Some(ClientTls {
            config: t.tls.current().as_ref().clone().map_err(|pending| {
                format!("cluster {cluster_name}: TLS secrets {pending:?} must be static")
            })?,
            server_name: t.sni.clone().unwrap_or_else(|| host.hostname.clone()),
        }),
    };
    Ok((target, tls))
}

/// The handler of a stream other than ADS (an `api_config_source` of a type, or SDS):
/// updates go to the manager; `control_plane.connected_state` follows ADS only.
struct SideStream(Weak<XdsManager>);

impl Handler for SideStream {
    fn apply(&self, update: Update) -> Verdict {
        match self.0.upgrade() {
            Some(m) => m.apply(update),
            None => Verdict::default(),
        }
    }

    fn connected(&self, _up: bool) {}

    fn failed(&self, type_url: &str) {
        if let Some(m) = self.0.upgrade() {
            m.failed(type_url);
        }
    }

    fn unreadable(&self, type_url: &str) {
        if let Some(m) = self.0.upgrade() {
            m.unreadable(type_url);
        }
    }
}

impl XdsManager {
    /// Opens the ADS stream of the bootstrap's `dynamic_resources` and starts the initial
    /// fetch. Call on the main runtime after the static clusters are initialized.
    pub fn start(server: &Arc<Server>) -> Result<Arc<XdsManager>, String> {
        let config = server.bootstrap.dynamic.clone().unwrap_or(DynamicConfig {
            ads: None,
            lds: None,
            cds: None,
        });
        let stream = config
            .ads
            .as_ref()
            .map(|a| {
                stream_config(
                    server,
                    &a.source,
                    Service::Aggregated,
                    a.node_on_first_message_only,
                    a.max_message_bytes,
                )
            })
            .transpose()
            .map_err(|e| format!("ads_config: {e}"))?;
        let scope = server.scope();
        let manager = Arc::new_cyclic(|this| XdsManager {
            server: Arc::downgrade(server),
            this: this.clone(),
            client: Client::new(),
            side_clients: Mutex::new(HashMap::new()),
            watched_files: Mutex::new(BTreeSet::new()),
            state: Mutex::new(State::default()),
            cds: SubscriptionStats::new(&scope.child("cluster_manager").child("cds")),
            lds: SubscriptionStats::new(&scope.child("listener_manager").child("lds")),
            rds: SubscriptionStats::new(&scope.child("rds")),
            eds: SubscriptionStats::new(&scope.child("eds")),
            connected: scope.child("control_plane").gauge("connected_state"),
            largest_message: scope.child("control_plane").gauge("largest_message_bytes"),
            done: tokio::sync::watch::channel(false).0,
            pool: Mutex::new(None),
            config,
        });
        manager.spawn_pool_reaper();
        if let Some(stream) = stream {
            tracing::info!(target: "config", "ADS: {} stream to {} ({})", if stream.delta { "Delta" } else { "state-of-the-world" }, stream.target, stream.name);
            manager.client.start(stream, manager.clone());
        }
        let mut st = manager.lock();
        if let Some(sub) = &manager.config.cds {
            manager.wildcard(server, sub, ads::CLUSTER);
            manager.arm_timeout(Phase::Clusters, sub.initial_fetch_timeout);
        }
        manager.refresh_interest(server, &st);
        manager.advance(server, &mut st);
        drop(st);
        Ok(manager)
    }

    /// The descriptor pool for an update, kept for the next ones.
    fn pool(&self) -> xds_client::descriptors::Hold {
        let mut slot = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let hold = match slot.take() {
            Some((h, _)) => h,
            None => xds_client::descriptors::hold(),
        };
        *slot = Some((hold.clone(), std::time::Instant::now()));
        hold
    }

    /// Drops the pool once no update came for [`POOL_LINGER`], and gives its memory back.
    fn spawn_pool_reaper(&self) {
        let this = self.this.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(POOL_LINGER / 4).await;
                let Some(me) = this.upgrade() else { return };
                let mut slot = me.pool.lock().unwrap_or_else(|e| e.into_inner());
                if slot
                    .as_ref()
                    .is_some_and(|(_, used)| used.elapsed() >= POOL_LINGER)
                {
                    *slot = None;
                    drop(slot);
                    crate::memory::release_free_memory();
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves when the initial fetch is done.
    pub async fn initialized(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Runs `f` on the applied state (for `/config_dump`).
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// EDS follows the clusters, RDS the listeners, SDS the TLS contexts of both; each
    /// name goes to the stream its config source names.
    fn refresh_interest(&self, server: &Server, st: &State) {
        self.subscribe(server, ads::ENDPOINT, st.clusters.eds_interest(server));
        self.subscribe(server, ads::ROUTE, st.listeners.rds_interest());
        self.subscribe(server, ads::EXTENSION_CONFIG, st.listeners.ecds_interest());
        let contexts = secrets::contexts(server, st);
        self.subscribe(server, ads::SECRET, secrets::interest(&contexts));
    }

    /// Sets the names of `type_url` on every stream that carries it (an empty set on the
    /// streams no name needs any more).
    fn subscribe(
        &self,
        server: &Server,
        type_url: &str,
        wanted: BTreeMap<XdsSource, BTreeSet<String>>,
    ) {
        let service = Service::for_type(type_url).unwrap_or(Service::Aggregated);
        let mut sources: Vec<XdsSource> = self
            .side_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|(_, s)| *s == service)
            .map(|(name, _)| XdsSource::Cluster {
                name: name.clone(),
                delta: false,
            })
            .collect();
        sources.push(XdsSource::Ads);
        for (source, names) in &wanted {
            self.set_names(server, source, type_url, names.clone());
        }
        for source in sources {
            let covered = wanted.keys().any(|w| same_stream(w, &source));
            if !covered {
                self.set_names(server, &source, type_url, BTreeSet::new());
            }
        }
    }

    fn set_names(
        &self,
        server: &Server,
        source: &XdsSource,
        type_url: &str,
        names: BTreeSet<String>,
    ) {
        match self.client_for(server, source, type_url) {
            Ok(c) => c.set_interest(type_url, Interest::Names(names)),
            Err(e) => tracing::error!(target: "config", "{type_url}: {e}"),
        }
    }

    /// Subscribes a bootstrap wildcard type (CDS, LDS) on its stream.
    fn wildcard(&self, server: &Server, sub: &Subscription, type_url: &str) {
        match self.client_for(server, &sub.source, type_url) {
            Ok(c) => c.set_interest(type_url, Interest::Wildcard),
            Err(e) => tracing::error!(target: "config", "{type_url}: {e}"),
        }
    }

    /// The stream for `type_url` from `source`: ADS, or its own stream to the source's
    /// cluster, opened on first use. A file source is watched from its first use and
    /// gets a client that never opens (a file holds what it holds: no subscriptions).
    fn client_for(
        &self,
        server: &Server,
        source: &XdsSource,
        type_url: &str,
    ) -> Result<Client, String> {
        let name = match source {
            XdsSource::Ads => return Ok(self.client.clone()),
            XdsSource::Path(path) => {
                self.watch_file(path, type_url);
                return Ok(Client::new());
            }
            XdsSource::Cluster { name, .. } => name,
            XdsSource::Google { target, .. } => target,
        };
        let service =
            Service::for_type(type_url).ok_or_else(|| format!("no service for {type_url}"))?;
        let mut clients = self.side_clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&(name.clone(), service)) {
            return Ok(c.clone());
        }
        let config = stream_config(server, source, service, true, 100 << 20)?;
        tracing::info!(target: "config", "{service:?}: stream to {} ({name})", config.target);
        let client = Client::new();
        client.start(config, Arc::new(SideStream(self.this.clone())));
        clients.insert((name.clone(), service), client.clone());
        Ok(client)
    }

    /// Starts watching `path` for `type_url` resources (once per file and type).
    fn watch_file(&self, path: &str, type_url: &str) {
        let mut watched = self.watched_files.lock().unwrap_or_else(|e| e.into_inner());
        if watched.insert((path.to_string(), type_url.to_string())) {
            tracing::info!(target: "config", "watching {path} for {type_url}");
            ads::file::watch(
                path.into(),
                type_url.to_string(),
                Arc::new(SideStream(self.this.clone())),
            );
        }
    }

    /// Starts the initial fetch timers of what this update put to warm (a cluster waiting
    /// for EDS, a listener waiting for RDS or SDS).
    fn arm_fetch_timeouts(&self, st: &State, before: &WarmingSnapshot) {
        let is_new = |seen: &[(String, usize)], name: &str, ptr: usize| {
            !seen.iter().any(|(n, p)| n == name && *p == ptr)
        };
        for (name, c) in &st.clusters.warming {
            if is_new(&before.0, name, Arc::as_ptr(c) as usize) {
                self.on_timeout(
                    c.config.eds_fetch_timeout,
                    name,
                    c,
                    |st, server, name, c| st.clusters.give_up_waiting(server, name, c),
                );
            }
        }
        for (name, e) in &st.listeners.warming {
            if is_new(&before.1, name, Arc::as_ptr(&e.listener) as usize) {
                self.on_timeout(
                    e.fetch_timeout(),
                    name,
                    &e.listener,
                    |st, server, name, l| st.listeners.give_up_waiting(server, name, l),
                );
            }
        }
    }

    /// After `timeout`, runs `give_up` on resource `name` (this version of it, `object`)
    /// and settles the state.
    fn on_timeout<T: Send + Sync + 'static>(
        &self,
        timeout: Option<std::time::Duration>,
        name: &str,
        object: &Arc<T>,
        give_up: fn(&mut State, &Server, &str, &Arc<T>),
    ) {
        let Some(timeout) = timeout else { return };
        let (this, name, object) = (self.this.clone(), name.to_string(), Arc::downgrade(object));
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let (Some(me), Some(object)) = (this.upgrade(), object.upgrade()) else {
                return;
            };
            let Some(server) = me.server.upgrade() else {
                return;
            };
            let mut st = me.lock();
            give_up(&mut st, &server, &name, &object);
            me.settle(&server, &mut st);
        });
    }

    /// After a timer changed what warms: held CDS answers, the warming gauge, the initial
    /// fetch.
    fn settle(&self, server: &Server, st: &mut State) {
        hold_cds_answer(st, "");
        server
            .scope()
            .child("cluster_manager")
            .gauge("warming_clusters")
            .set(st.clusters.warming.len() as i64);
        self.advance(server, st);
    }

    /// Gives up waiting on the phase's warming resources after `timeout`.
    fn arm_timeout(&self, phase: Phase, timeout: Option<std::time::Duration>) {
        let Some(timeout) = timeout else { return };
        let this = self.this.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let Some(me) = this.upgrade() else { return };
            let Some(server) = me.server.upgrade() else {
                return;
            };
            let mut st = me.lock();
            if st.init.phase != phase {
                return;
            }
            tracing::warn!(target: "config", "initial fetch timeout ({phase:?}): continuing without the resources still warming");
            match phase {
                Phase::Clusters => me.cds.init_fetch_timeout.inc(),
                _ => me.lds.init_fetch_timeout.inc(),
            }
            st.init.forced = true;
            me.settle(&server, &mut st);
        });
    }

    /// Moves the initial fetch on as far as what has arrived allows.
    fn advance(&self, server: &Server, st: &mut State) {
        loop {
            match st.init.phase {
                Phase::Clusters => {
                    let cds_done = self.config.cds.is_none() || st.init.cds_answered;
                    let ready = cds_done && st.clusters.warmed(server);
                    if !(st.init.forced || ready) {
                        return;
                    }
                    if st.init.forced {
                        st.clusters.activate_warming(server);
                    }
                    st.init.enter(Phase::Listeners);
                    if let Some(sub) = &self.config.lds {
                        self.wildcard(server, sub, ads::LISTENER);
                        self.arm_timeout(Phase::Listeners, sub.initial_fetch_timeout);
                    }
                }
                Phase::Listeners => {
                    let lds_done = self.config.lds.is_none() || st.init.lds_answered;
                    // Static listeners with SDS secrets warm too, as in Envoy's init.
                    let static_warm = server.listeners().iter().all(|l| l.warmed());
                    let ready = lds_done && st.listeners.warming.is_empty() && static_warm;
                    if !(st.init.forced || ready) {
                        return;
                    }
                    if st.init.forced {
                        st.listeners.promote(server, true);
                    }
                    st.init.enter(Phase::Done);
                    tracing::info!(target: "config", "all dependencies initialized; starting workers");
                    self.done.send_replace(true);
                }
                Phase::Done => return,
            }
        }
    }

    fn stats_of(&self, type_url: &str) -> Option<&SubscriptionStats> {
        match type_url {
            ads::CLUSTER => Some(&self.cds),
            ads::LISTENER => Some(&self.lds),
            ads::ROUTE => Some(&self.rds),
            ads::ENDPOINT => Some(&self.eds),
            _ => None,
        }
    }
}

/// What warms now, by name and object identity (so a timer armed for one version of a
/// resource never fires on the next): clusters, then listeners.
struct WarmingSnapshot(Vec<(String, usize)>, Vec<(String, usize)>);

fn warming_snapshot(st: &State) -> WarmingSnapshot {
    WarmingSnapshot(
        st.clusters
            .warming
            .iter()
            .map(|(n, c)| (n.clone(), Arc::as_ptr(c) as usize))
            .collect(),
        st.listeners
            .warming
            .iter()
            .map(|(n, e)| (n.clone(), Arc::as_ptr(&e.listener) as usize))
            .collect(),
    )
}

/// Envoy holds CDS answers back while clusters are warming (once the initial fetch is
/// past the clusters), so a management server waiting for the ACK knows they are usable:
/// answers are held while any cluster warms and go when the warming count drops.
fn hold_cds_answer(st: &mut State, type_url: &str) -> Option<tokio::sync::oneshot::Receiver<()>> {
    let warming = st.clusters.warming.len();
    if warming < st.last_warming || warming == 0 {
        for tx in st.held_cds.drain(..) {
            let _ = tx.send(());
        }
    }
    st.last_warming = warming;
    if type_url != ads::CLUSTER || warming == 0 || st.init.phase == Phase::Clusters {
        return None;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    st.held_cds.push(tx);
    Some(rx)
}

/// Whether two sources are the same stream (the cluster decides; Delta or not is the
/// stream's own setting).
fn same_stream(a: &XdsSource, b: &XdsSource) -> bool {
    match (a, b) {
        (XdsSource::Ads, XdsSource::Ads) => true,
        (XdsSource::Cluster { name: x, .. }, XdsSource::Cluster { name: y, .. }) => x == y,
        (XdsSource::Path(x), XdsSource::Path(y)) => x == y,
        (XdsSource::Google { target: x, .. }, XdsSource::Google { target: y, .. }) => x == y,
        _ => false,
    }
}

impl Handler for XdsManager {
    fn apply(&self, update: Update) -> Verdict {
        let Some(server) = self.server.upgrade() else {
            return Verdict::default();
        };
        let _pool = self.pool();
        let mut st = self.lock();
        let known = st.secrets.merged(&server);
        let warming_before = warming_snapshot(&st);
        let rejected = match update.type_url.as_str() {
            ads::CLUSTER => {
                st.init.cds_answered = true;
                clusters::apply_cds(&server, &mut st.clusters, &update, &known)
            }
            ads::ENDPOINT => clusters::apply_eds(&server, &mut st.clusters, &update),
            ads::LISTENER => {
                st.init.lds_answered = true;
                listeners::apply_lds(&server, &mut st.listeners, &update, &known)
            }
            ads::SECRET => {
                let rejected = secrets::apply_sds(&server, &mut st, &update);
                st.listeners.promote(&server, false);
                st.clusters.promote_ready(&server);
                rejected
            }
            ads::ROUTE => listeners::apply_rds(&server, &mut st.listeners, &update),
            ads::EXTENSION_CONFIG => {
                listeners::apply_ecds(&server, &mut st.listeners, &update, &known)
            }
            other => vec![Rejected {
                name: String::new(),
                error: format!("resource type {other} is not supported"),
            }],
        };
        if let Some(stats) = self.stats_of(&update.type_url) {
            let empty = update.state_of_the_world && update.resources.is_empty();
            stats.record(&update.version, rejected.is_empty(), empty);
        }
        if rejected.is_empty() {
            st.versions
                .insert(update.type_url.clone(), update.version.clone());
        }
        self.arm_fetch_timeouts(&st, &warming_before);
        self.refresh_interest(&server, &st);
        let hold_until = hold_cds_answer(&mut st, &update.type_url);
        self.advance(&server, &mut st);
        Verdict {
            rejected,
            hold_until,
        }
    }

    fn connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }

    fn failed(&self, type_url: &str) {
        if let Some(stats) = self.stats_of(type_url) {
            stats.record_failure();
        }
    }

    fn unreadable(&self, type_url: &str) {
        if let Some(stats) = self.stats_of(type_url) {
            stats.record("", false, false);
        }
    }

    fn message_size(&self, bytes: usize) {
        if bytes as i64 > self.largest_message.value() {
            self.largest_message.set(bytes as i64);
        }
    }
}
