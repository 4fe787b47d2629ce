//! The stat store and its handles.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter {
    value: AtomicU64,
    used: AtomicBool,
}

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        self.used.store(true, Ordering::Relaxed);
    }

    /// Current value.
    pub fn value(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A gauge that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge {
    value: AtomicI64,
    used: AtomicBool,
}

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.add(-1);
    }

    /// Adds `n` (may be negative).
    pub fn add(&self, n: i64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        self.used.store(true, Ordering::Relaxed);
    }

    /// Sets the value.
    pub fn set(&self, n: i64) {
        self.value.store(n, Ordering::Relaxed);
        self.used.store(true, Ordering::Relaxed);
    }

    /// Current value.
    pub fn value(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }

    /// The value as the admin API shows it: Envoy's gauges are unsigned 64-bit, and an
    /// unlimited circuit breaker's `remaining_cx_pools` is 2^64-1.
    pub fn shown(&self) -> u64 {
        self.value() as u64
    }
}

/// A histogram over fixed bucket bounds ([`super::DEFAULT_BUCKETS`] unless the
/// bootstrap's `histogram_bucket_settings` give the stat its own).
#[derive(Debug)]
pub struct Histogram {
    bounds: Arc<[f64]>,
    /// One count per bound, then the overflow bucket.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_millis: AtomicU64,
}

/// The default bounds, shared by every histogram that has no bucket settings.
static DEFAULT_BOUNDS: std::sync::LazyLock<Arc<[f64]>> =
    std::sync::LazyLock::new(|| Arc::from(&super::DEFAULT_BUCKETS[..]));

impl Default for Histogram {
    fn default() -> Self {
        Histogram::with_bounds(DEFAULT_BOUNDS.clone())
    }
}

impl Histogram {
    /// A histogram over `bounds` (ascending upper bounds).
    pub fn with_bounds(bounds: Arc<[f64]>) -> Self {
        Histogram {
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            bounds,
            count: AtomicU64::new(0),
            sum_millis: AtomicU64::new(0),
        }
    }

    /// The bucket upper bounds.
    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    /// Records a value.
    pub fn record(&self, v: u64) {
        let idx = self
            .bounds
            .iter()
            .position(|b| (v as f64) <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_millis.fetch_add(v, Ordering::Relaxed);
    }

    /// Per-bucket counts (the last is the overflow bucket), total count and sum.
    pub fn snapshot(&self) -> (Vec<u64>, u64, u64) {
        (
            self.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            self.count.load(Ordering::Relaxed),
            self.sum_millis.load(Ordering::Relaxed),
        )
    }
}

/// The kind and handle of a stat.
#[derive(Debug, Clone)]
pub enum StatKind {
    /// Counter.
    Counter(Arc<Counter>),
    /// Gauge.
    Gauge(Arc<Gauge>),
    /// Histogram.
    Histogram(Arc<Histogram>),
}

/// A registered stat with its naming.
#[derive(Debug, Clone)]
pub struct StatEntry {
    /// Tag-extracted name (`cluster.upstream_rq_total`).
    pub extracted: String,
    /// Tags in extraction order (`envoy_cluster_name` = `foo`).
    pub tags: Vec<(String, String)>,
    /// Created with explicit tags (Istio's metrics): custom tag extraction leaves it be.
    pub explicit: bool,
    /// The handle.
    pub kind: StatKind,
}

impl StatEntry {
    /// Whether the stat was ever written (`/stats?usedonly`).
    pub fn used(&self) -> bool {
        match &self.kind {
            StatKind::Counter(c) => c.used.load(Ordering::Relaxed),
            StatKind::Gauge(g) => g.used.load(Ordering::Relaxed),
            StatKind::Histogram(h) => h.count.load(Ordering::Relaxed) > 0,
        }
    }
}

/// All stats of the process, by full name.
#[derive(Debug, Default)]
pub struct Store {
    stats: Mutex<BTreeMap<String, StatEntry>>,
    naming: Arc<super::naming::Naming>,
}

impl Store {
    /// A new, empty store with Envoy's default naming.
    pub fn new() -> Arc<Self> {
        Arc::new(Store::default())
    }

    /// A new, empty store applying the bootstrap's `stats_config`.
    pub fn with_naming(naming: Arc<super::naming::Naming>) -> Arc<Self> {
        Arc::new(Store {
            stats: Mutex::default(),
            naming,
        })
    }

    /// A histogram for the stat `name`, with the buckets the bootstrap gives it.
    fn new_histogram(&self, name: &str) -> Histogram {
        match self.naming.buckets_for(name) {
            Some(b) => Histogram::with_bounds(b),
            None => Histogram::default(),
        }
    }

    /// The tag-extracted name and tags Prometheus shows for the stat `name`.
    pub fn prometheus_tags(&self, name: &str, e: &StatEntry) -> (String, Vec<(String, String)>) {
        if e.explicit {
            return (e.extracted.clone(), e.tags.clone());
        }
        self.naming
            .extract(name)
            .unwrap_or_else(|| (e.extracted.clone(), e.tags.clone()))
    }

    /// The root scope (no prefix, no tags).
    pub fn root(self: &Arc<Self>) -> Scope {
        Scope {
            store: self.clone(),
            prefix: String::new(),
            extracted_prefix: String::new(),
            tags: Vec::new(),
        }
    }

    fn get_or_create(
        &self,
        name: String,
        extracted: String,
        tags: Vec<(String, String)>,
        explicit: bool,
        make: impl FnOnce(&str) -> StatKind,
    ) -> StatKind {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = stats.get(&name) {
            return e.kind.clone();
        }
        let kind = make(&name);
        stats.insert(
            name,
            StatEntry {
                extracted,
                tags,
                explicit,
                kind: kind.clone(),
            },
        );
        kind
    }

    /// A copy of every stat the `stats_matcher` admits, sorted by full name (for
    /// rendering; a rejected stat still counts, unseen, as Envoy's null stats do).
    pub fn snapshot(&self) -> Vec<(String, StatEntry)> {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats
            .iter()
            .filter(|(k, _)| self.naming.admits(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A naming scope: `cluster.<name>.` with tag `envoy_cluster_name=<name>`.
#[derive(Debug, Clone)]
pub struct Scope {
    store: Arc<Store>,
    prefix: String,
    extracted_prefix: String,
    tags: Vec<(String, String)>,
}

impl Scope {
    /// A child scope `<prefix><segment>.` without a tag.
    pub fn child(&self, segment: &str) -> Scope {
        Scope {
            store: self.store.clone(),
            prefix: format!("{}{segment}.", self.prefix),
            extracted_prefix: format!("{}{segment}.", self.extracted_prefix),
            tags: self.tags.clone(),
        }
    }

    /// A child scope `<prefix><segment>.<value>.` whose value is extracted as tag `tag`.
    pub fn tagged(&self, segment: &str, tag: &str, value: &str) -> Scope {
        // Sized exactly: a cluster's scope lives as long as the cluster.
        let mut tags = Vec::with_capacity(self.tags.len() + 1);
        tags.extend(self.tags.iter().cloned());
        tags.push((tag.to_string(), value.to_string()));
        Scope {
            store: self.store.clone(),
            prefix: format!("{}{segment}.{value}.", self.prefix),
            extracted_prefix: format!("{}{segment}.", self.extracted_prefix),
            tags,
        }
    }

    fn names(&self, name: &str) -> (String, String) {
        (
            format!("{}{name}", self.prefix),
            format!("{}{name}", self.extracted_prefix),
        )
    }

    /// The counter `<prefix><name>`.
    pub fn counter(&self, name: &str) -> Arc<Counter> {
        let (full, extracted) = self.names(name);
        match self
            .store
            .get_or_create(full, extracted, self.tags.clone(), false, |_| {
                StatKind::Counter(Default::default())
            }) {
            StatKind::Counter(c) => c,
            _ => Arc::default(),
        }
    }

    /// The counter `<prefix><name>` with an extra tag and its own extracted name
    /// (`downstream_rq_2xx` -> `downstream_rq_xx{envoy_response_code_class="2"}`).
    pub fn counter_tagged(&self, name: &str, extracted: &str, tag: (&str, &str)) -> Arc<Counter> {
        let mut tags = self.tags.clone();
        tags.push((tag.0.to_string(), tag.1.to_string()));
        let full = format!("{}{name}", self.prefix);
        let ex = format!("{}{extracted}", self.extracted_prefix);
        match self.store.get_or_create(full, ex, tags, false, |_| {
            StatKind::Counter(Default::default())
        }) {
            StatKind::Counter(c) => c,
            _ => Arc::default(),
        }
    }

    /// The gauge `<prefix><name>`.
    pub fn gauge(&self, name: &str) -> Arc<Gauge> {
        let (full, extracted) = self.names(name);
        match self
            .store
            .get_or_create(full, extracted, self.tags.clone(), false, |_| {
                StatKind::Gauge(Default::default())
            }) {
            StatKind::Gauge(g) => g,
            _ => Arc::default(),
        }
    }

    /// Registers an existing stat as `<prefix><name>` (for process-wide components whose
    /// stats exist before the store does); an already registered name keeps its stat.
    pub fn adopt(&self, name: &str, kind: StatKind) {
        let (full, extracted) = self.names(name);
        self.store
            .get_or_create(full, extracted, self.tags.clone(), false, |_| kind);
    }

    /// The stat `<prefix><name>` labelled with `tags` after its name: Envoy names a stat
    /// created with tags (rather than extracted from its name) `<name>.<tag>.<value>...`
    /// and its tag-extracted name is `<name>`.
    fn with_tags(
        &self,
        name: &str,
        tags: &[(&str, &str)],
        make: impl FnOnce(&str) -> StatKind,
    ) -> StatKind {
        let (mut full, extracted) = self.names(name);
        let mut all = self.tags.clone();
        for (k, v) in tags {
            full.push_str(&format!(".{k}.{v}"));
            all.push((k.to_string(), v.to_string()));
        }
        self.store.get_or_create(full, extracted, all, true, make)
    }

    /// The counter `<prefix><name>` with `tags` (see [`Scope::with_tags`]).
    pub fn counter_with_tags(&self, name: &str, tags: &[(&str, &str)]) -> Arc<Counter> {
        match self.with_tags(name, tags, |_| StatKind::Counter(Default::default())) {
            StatKind::Counter(c) => c,
            _ => Arc::default(),
        }
    }

    /// The gauge `<prefix><name>` with `tags` (see [`Scope::with_tags`]).
    pub fn gauge_with_tags(&self, name: &str, tags: &[(&str, &str)]) -> Arc<Gauge> {
        match self.with_tags(name, tags, |_| StatKind::Gauge(Default::default())) {
            StatKind::Gauge(g) => g,
            _ => Arc::default(),
        }
    }

    /// The histogram `<prefix><name>` with `tags` (see [`Scope::with_tags`]).
    pub fn histogram_with_tags(&self, name: &str, tags: &[(&str, &str)]) -> Arc<Histogram> {
        match self.with_tags(name, tags, |full| {
            StatKind::Histogram(Arc::new(self.store.new_histogram(full)))
        }) {
            StatKind::Histogram(h) => h,
            _ => Arc::default(),
        }
    }

    /// The histogram `<prefix><name>`.
    pub fn histogram(&self, name: &str) -> Arc<Histogram> {
        let (full, extracted) = self.names(name);
        match self
            .store
            .get_or_create(full, extracted, self.tags.clone(), false, |full| {
                StatKind::Histogram(Arc::new(self.store.new_histogram(full)))
            }) {
            StatKind::Histogram(h) => h,
            _ => Arc::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_name_and_tag_stats() {
        let store = Store::new();
        let c = store
            .root()
            .tagged("cluster", "envoy_cluster_name", "web")
            .counter("upstream_rq_total");
        c.inc();
        let again = store
            .root()
            .tagged("cluster", "envoy_cluster_name", "web")
            .counter("upstream_rq_total");
        again.inc();
        let snap = store.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].0, "cluster.web.upstream_rq_total");
        assert_eq!(snap[0].1.extracted, "cluster.upstream_rq_total");
        assert_eq!(
            snap[0].1.tags,
            vec![("envoy_cluster_name".to_string(), "web".to_string())]
        );
        assert_eq!(c.value(), 2);
    }

    #[test]
    fn unused_until_written() {
        let store = Store::new();
        let g = store.root().gauge("server.live");
        assert!(!store.snapshot()[0].1.used());
        g.set(0);
        assert!(store.snapshot()[0].1.used());
    }
}
