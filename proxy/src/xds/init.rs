//! The initial fetch, in Envoy's order: CDS and the EDS of its clusters first, then LDS
//! and the RDS of its listeners; the server turns LIVE when both are done (or their
//! `initial_fetch_timeout` gave up waiting).

/// Where the initial fetch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for CDS and the clusters' first EDS assignments.
    Clusters,
    /// Waiting for LDS and the listeners' routes.
    Listeners,
    /// Done: the server is LIVE.
    Done,
}

/// Progress of the initial fetch.
#[derive(Debug)]
pub struct Init {
    /// The current phase.
    pub phase: Phase,
    /// A CDS response arrived (applied or rejected).
    pub cds_answered: bool,
    /// An LDS response arrived (applied or rejected).
    pub lds_answered: bool,
    /// The phase's initial fetch timeout fired: stop waiting for warming resources.
    pub forced: bool,
}

impl Default for Init {
    /// The fetch starts in the clusters phase.
    fn default() -> Self {
        Init {
            phase: Phase::Clusters,
            cds_answered: false,
            lds_answered: false,
            forced: false,
        }
    }
}

impl Init {
    /// Moves to `phase`; the timeout of the previous one no longer applies.
    pub fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.forced = false;
    }
}
