//! The worker threads: each runs a current-thread runtime and accepts on every active
//! listener. Listeners reach workers as commands, so LDS can add one while they run;
//! commands sent before the workers start wait in their queues.

use super::{accept_loop, ActiveListener, BoundSocket, ListenerSockets};
use crate::server::Server;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// What a worker is told to do.
enum Command {
    /// Accept on this socket (the worker's own duplicate) for this listener until the
    /// listener is retired or drained.
    Accept(Arc<ActiveListener>, BoundSocket),
}

/// The worker set: one command queue per worker.
pub struct Workers {
    senders: Vec<UnboundedSender<Command>>,
    receivers: Mutex<Vec<UnboundedReceiver<Command>>>,
}

impl Workers {
    /// Queues for `n` workers (started later by [`Workers::start`]).
    pub fn new(n: usize) -> Self {
        let (senders, receivers) = (0..n.max(1)).map(|_| unbounded_channel()).unzip();
        Workers {
            senders,
            receivers: Mutex::new(receivers),
        }
    }

    /// Makes every worker accept on each of `sockets` for `listener` (each gets a
    /// duplicate fd).
    pub fn accept(
        &self,
        listener: &Arc<ActiveListener>,
        sockets: &ListenerSockets,
    ) -> std::io::Result<()> {
        for socket in &sockets.0 {
            for tx in &self.senders {
                let _ = tx.send(Command::Accept(listener.clone(), socket.try_clone()?));
            }
        }
        Ok(())
    }

    /// Starts the worker threads (once; later calls do nothing).
    pub fn start(&self, server: &Arc<Server>) -> std::io::Result<()> {
        let receivers =
            std::mem::take(&mut *self.receivers.lock().unwrap_or_else(|e| e.into_inner()));
        for (i, mut rx) in receivers.into_iter().enumerate() {
            let server = server.clone();
            std::thread::Builder::new().name(format!("wrk:worker_{i}")).spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(target: "main", "worker {i}: cannot start runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    while let Some(Command::Accept(l, s)) = rx.recv().await {
                        let stop = server.drain_signal(l.config.inbound);
                        tokio::spawn(accept_loop(server.clone(), l, s, stop));
                    }
                    // Keep serving accepted connections.
                    std::future::pending::<()>().await;
                });
            })?;
        }
        Ok(())
    }
}
