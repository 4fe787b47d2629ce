//! Where an HTTP connection manager gets its routes: inline (`route_config`) or from RDS
//! (`rds`), in which case a slot holds the latest RouteConfiguration and the xDS client
//! swaps it without touching the listener.

use super::route::RouteConfig;
use arc_swap::ArcSwapOption;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The route configuration an HCM with `rds` uses; empty until RDS delivers it.
#[derive(Debug)]
pub struct RdsSlot {
    /// `route_config_name`.
    pub name: String,
    /// Where RDS delivers it from.
    pub source: super::source::XdsSource,
    /// How long a listener waits for it before serving without it
    /// (`initial_fetch_timeout`; `None`: until it arrives).
    pub fetch_timeout: Option<std::time::Duration>,
    current: ArcSwapOption<RouteConfig>,
    /// RDS answered with a configuration that was rejected: as in Envoy, a listener does
    /// not wait for a bad configuration to be fixed (it routes with none meanwhile).
    rejected: AtomicBool,
}

impl RdsSlot {
    /// An empty slot for `name`, fetched from `source`.
    pub fn new(
        name: String,
        source: super::source::XdsSource,
        fetch_timeout: Option<std::time::Duration>,
    ) -> Self {
        RdsSlot {
            name,
            source,
            fetch_timeout,
            current: ArcSwapOption::empty(),
            rejected: AtomicBool::new(false),
        }
    }

    /// Installs a new version (requests already routed keep the one they had).
    pub fn set(&self, routes: Arc<RouteConfig>) {
        self.current.store(Some(routes));
    }

    /// Records that RDS answered with a configuration for this slot that was rejected.
    pub fn reject(&self) {
        self.rejected.store(true, Ordering::Relaxed);
    }

    /// Whether RDS has answered for this slot: with routes, or with a rejected
    /// configuration (either ends a listener's wait, as Envoy's RDS init target is ready
    /// after a rejection).
    pub fn answered(&self) -> bool {
        self.current.load().is_some() || self.rejected.load(Ordering::Relaxed)
    }
}

/// An HCM's route source.
#[derive(Debug, Clone)]
pub enum Routes {
    /// Inline `route_config`.
    Static(Arc<RouteConfig>),
    /// `rds`.
    Rds(Arc<RdsSlot>),
}

impl Routes {
    /// The routes to use now; `None` while RDS has not answered (Envoy then routes with
    /// an empty configuration: 404 `NR`).
    pub fn current(&self) -> Option<Arc<RouteConfig>> {
        match self {
            Routes::Static(r) => Some(r.clone()),
            Routes::Rds(slot) => slot.current.load_full(),
        }
    }

    /// The inline routes, if any.
    pub fn inline(&self) -> Option<&Arc<RouteConfig>> {
        match self {
            Routes::Static(r) => Some(r),
            Routes::Rds(_) => None,
        }
    }
}
