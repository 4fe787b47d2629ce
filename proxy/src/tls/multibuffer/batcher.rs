//! Per-key batching of RSA signatures for the multi-buffer kernel.
//!
//! A signer on the handshake pool queues its request and waits. The queue is processed
//! by whichever waiting signer sees first that it should be: eight requests are queued
//! (a full batch), or every handshake the pool is running is already waiting to sign (no
//! one else can join, so waiting longer only adds latency), or its own request has waited
//! `poll_delay`. A queue of fewer than [`MIN_BATCH`] requests is signed single-buffer,
//! which is faster than a mostly empty batch.

use super::pool::{on_pool_thread, HandshakePool};
use super::stats::stats;
use cryptomb::{sign_batch, Engine, Padding, Path, RsaKey, SignRequest};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// Lanes of one kernel batch.
const LANES: usize = 8;

/// The smallest queue worth a multi-buffer batch: one batch costs about what 2.5
/// single-buffer signatures cost (README, kernel benchmark).
pub const MIN_BATCH: usize = 3;

/// Signers waiting in any batcher (the pool's "in flight" handshakes that cannot move on).
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// Every live batcher, so a pool thread finishing a job can wake their waiters to
/// re-check whether they are now the last ones running.
static REGISTRY: Mutex<Vec<Weak<Batcher>>> = Mutex::new(Vec::new());

/// Wakes every batcher's waiters to re-check their flush condition.
pub fn recheck_all() {
    if WAITING.load(Ordering::SeqCst) == 0 {
        return;
    }
    let registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    for batcher in registry.iter().filter_map(Weak::upgrade) {
        batcher.changed.notify_all();
    }
}

/// One queued signature.
struct Request {
    id: u64,
    padding: Padding,
    message: Vec<u8>,
}

/// The queue and the finished results not yet collected.
#[derive(Default)]
struct Queue {
    pending: Vec<Request>,
    done: HashMap<u64, Result<Vec<u8>, String>>,
    next_id: u64,
}

/// The batching signer of one private key.
pub struct Batcher {
    key: RsaKey,
    poll_delay: Duration,
    engine: Engine,
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Batcher {
    /// A batcher for `key` signing with `engine` (single-buffer when the provider fell
    /// back to software).
    pub fn new(key: RsaKey, poll_delay: Duration, engine: Engine) -> Arc<Self> {
        let batcher = Arc::new(Batcher {
            key,
            poll_delay,
            engine,
            queue: Mutex::default(),
            changed: Condvar::new(),
        });
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        registry.retain(|b| b.strong_count() > 0);
        registry.push(Arc::downgrade(&batcher));
        batcher
    }

    /// The key's public half, as DER `RSAPublicKey`.
    pub fn public_key_der(&self) -> &[u8] {
        self.key.public_key_der()
    }

    /// Signs `message`, batched with other handshakes' signatures where possible.
    pub fn sign(&self, padding: Padding, message: &[u8]) -> Result<Vec<u8>, String> {
        if self.engine == Engine::Single {
            stats().rsa_fallbacks.inc();
            return self
                .key
                .sign_single(padding, message)
                .map_err(|e| e.to_string());
        }
        if !on_pool_thread() {
            // Waiting here would park whatever thread called us: sign at once.
            stats().rsa_single_buffer.inc();
            return self
                .key
                .sign_single(padding, message)
                .map_err(|e| e.to_string());
        }
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let id = queue.next_id;
        queue.next_id += 1;
        queue.pending.push(Request {
            id,
            padding,
            message: message.to_vec(),
        });
        WAITING.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + self.poll_delay;
        loop {
            if let Some(result) = queue.done.remove(&id) {
                WAITING.fetch_sub(1, Ordering::SeqCst);
                return result;
            }
            let now = Instant::now();
            let queued = queue.pending.iter().any(|r| r.id == id);
            let nobody_else = HandshakePool::global().running() <= WAITING.load(Ordering::SeqCst);
            if queued && (queue.pending.len() >= LANES || nobody_else || now >= deadline) {
                let take = queue.pending.len().min(LANES);
                let batch: Vec<Request> = queue.pending.drain(..take).collect();
                drop(queue);
                let results = self.process(batch);
                queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                queue.done.extend(results);
                self.changed.notify_all();
                continue;
            }
            // Already taken by another signer's batch: wait for its result, however long.
            let wait = if queued {
                deadline.saturating_duration_since(now)
            } else {
                Duration::from_millis(100)
            };
            queue = self
                .changed
                .wait_timeout(queue, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Signs one queue's worth of requests.
    fn process(&self, batch: Vec<Request>) -> Vec<(u64, Result<Vec<u8>, String>)> {
        let s = stats();
        s.rsa_queue_sizes.record(batch.len() as u64);
        let engine = if batch.len() >= MIN_BATCH {
            s.rsa_batches.inc();
            Engine::MultiBuffer
        } else {
            s.rsa_single_buffer.add(batch.len() as u64);
            Engine::Single
        };
        let requests: Vec<SignRequest<'_>> = batch
            .iter()
            .map(|r| SignRequest {
                key: &self.key,
                padding: r.padding,
                message: &r.message,
            })
            .collect();
        let signed = sign_batch(engine, &requests);
        batch
            .iter()
            .zip(signed)
            .map(|(request, signed)| {
                if signed.path == Path::FaultRecovered {
                    s.rsa_fallbacks.inc();
                }
                (request.id, signed.signature.map_err(|e| e.to_string()))
            })
            .collect()
    }
}
