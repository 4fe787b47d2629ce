//! Draining one filter chain's connections, when LDS changes or removes the chain: over
//! `--drain-time-s`, responses ask clients to go away (HTTP/1 `connection: close`, HTTP/2
//! GOAWAY) per `--drain-strategy`, and at the end every connection still open is shut down
//! gracefully. Chains an update leaves unchanged are not drained (Envoy drains the whole
//! listener, envoy#4540).

use crate::cli::DrainStrategy;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The drain state of one chain's connections.
#[derive(Debug)]
pub struct ChainDrain {
    started: OnceLock<(Instant, Duration, DrainStrategy)>,
    finished: tokio::sync::watch::Sender<bool>,
    /// The same chain in the listeners this one replaced (an update that left the chain
    /// as it was): their connections drain with this chain's.
    predecessors: std::sync::Mutex<Vec<std::sync::Weak<ChainDrain>>>,
}

impl Default for ChainDrain {
    fn default() -> Self {
        ChainDrain {
            started: OnceLock::new(),
            finished: tokio::sync::watch::channel(false).0,
            predecessors: std::sync::Mutex::default(),
        }
    }
}

impl ChainDrain {
    /// Makes `older` (the same chain in a replaced listener) drain when this one does.
    pub fn adopt(&self, older: &std::sync::Arc<ChainDrain>) {
        self.predecessors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(std::sync::Arc::downgrade(older));
    }

    /// Starts draining over `time` (once; call on a tokio runtime); `draining` counts
    /// the chain until the time is over.
    pub fn start(
        self: &std::sync::Arc<Self>,
        time: Duration,
        strategy: DrainStrategy,
        draining: &std::sync::Arc<crate::stats::Gauge>,
    ) {
        if self.started.set((Instant::now(), time, strategy)).is_err() {
            return;
        }
        let predecessors =
            std::mem::take(&mut *self.predecessors.lock().unwrap_or_else(|e| e.into_inner()));
        for older in predecessors.iter().filter_map(std::sync::Weak::upgrade) {
            older.start(time, strategy, draining);
        }
        let this = self.clone();
        let draining = draining.clone();
        draining.inc();
        tokio::spawn(async move {
            tokio::time::sleep(time).await;
            this.finished.send_replace(true);
            draining.dec();
        });
    }

    /// Whether the connection answering now should close after this response.
    pub fn should_close(&self) -> bool {
        let Some((since, time, strategy)) = self.started.get() else {
            return false;
        };
        match strategy {
            DrainStrategy::Immediate => true,
            DrainStrategy::Gradual => {
                rand::random::<f64>() < since.elapsed().as_secs_f64() / time.as_secs_f64().max(1.0)
            }
        }
    }

    /// Resolves when the drain time is over (never, if draining never starts).
    pub async fn finished(&self) {
        let mut rx = self.finished.subscribe();
        let _ = rx.wait_for(|f| *f).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_closes_connections_and_finishes_after_the_drain_time() {
        let d = std::sync::Arc::new(ChainDrain::default());
        assert!(!d.should_close(), "not draining yet");
        let gauge = std::sync::Arc::new(crate::stats::Gauge::default());
        d.start(Duration::from_secs(5), DrainStrategy::Immediate, &gauge);
        assert!(d.should_close());
        assert_eq!(gauge.value(), 1, "counted while draining");
        let finished = tokio::time::timeout(Duration::from_secs(4), d.finished()).await;
        assert!(finished.is_err(), "still draining after 4 s");
        tokio::time::timeout(Duration::from_secs(2), d.finished())
            .await
            .expect("finished after 5 s");
        tokio::task::yield_now().await;
        assert_eq!(gauge.value(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replaced_chain_drains_with_its_successor() {
        let (older, newer) = (
            std::sync::Arc::new(ChainDrain::default()),
            std::sync::Arc::new(ChainDrain::default()),
        );
        newer.adopt(&older);
        assert!(!older.should_close());
        let gauge = std::sync::Arc::new(crate::stats::Gauge::default());
        newer.start(Duration::from_secs(1), DrainStrategy::Immediate, &gauge);
        assert!(
            older.should_close(),
            "the older chain's connections drain too"
        );
        tokio::time::timeout(Duration::from_secs(2), older.finished())
            .await
            .expect("finished with it");
    }
}
