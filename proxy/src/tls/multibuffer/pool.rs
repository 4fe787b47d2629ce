//! The handshake thread pool: where TLS handshakes that may sign with a multi-buffer key
//! make their CPU-bound progress.
//!
//! rustls signs synchronously, inside the call that processes the peer's flight, and a
//! multi-buffer signer waits (up to its `poll_delay`) for other handshakes to fill a
//! batch. That wait must never park a tokio worker, so such handshakes are polled here:
//! [`OnPool`] hands each poll of the handshake future to a pool thread and back. The pool
//! is bounded (its threads are all the signers that can wait at once) and counts the
//! handshakes it is polling, which the batcher reads to flush at once when nobody else
//! could join a batch.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

/// Pool threads: enough blocked signers to fill a batch of eight twice over.
const THREADS: usize = 16;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running queued jobs.
pub struct HandshakePool {
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
    /// Jobs being run by a thread (a blocked signer included).
    running: AtomicUsize,
}

thread_local! {
    static ON_POOL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is a pool thread (where a signer may wait).
pub fn on_pool_thread() -> bool {
    ON_POOL.with(|c| c.get())
}

impl HandshakePool {
    /// The process's pool, started on first use.
    pub fn global() -> &'static HandshakePool {
        static POOL: OnceLock<&'static HandshakePool> = OnceLock::new();
        POOL.get_or_init(|| {
            let pool: &'static HandshakePool = Box::leak(Box::new(HandshakePool {
                queue: Mutex::new(VecDeque::new()),
                ready: Condvar::new(),
                running: AtomicUsize::new(0),
            }));
            for i in 0..THREADS {
                let spawned = std::thread::Builder::new()
                    .name(format!("handshake-{i}"))
                    .spawn(move || pool.run());
                if let Err(e) = spawned {
                    tracing::error!("cannot start handshake thread: {e}");
                }
            }
            pool
        })
    }

    /// Handshakes a pool thread is polling right now. Queued ones cannot join a batch
    /// until a thread frees up, so only these count as "in flight" for the batcher.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    fn spawn(&self, job: Job) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(job);
        self.ready.notify_one();
    }

    fn run(&self) {
        ON_POOL.with(|c| c.set(true));
        yield_to_data_path();
        loop {
            let job = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    match queue.pop_front() {
                        Some(job) => {
                            self.running.fetch_add(1, Ordering::SeqCst);
                            break job;
                        }
                        None => queue = self.ready.wait(queue).unwrap_or_else(|e| e.into_inner()),
                    }
                }
            };
            // A panicking handshake must not take the thread with it; its future is
            // dropped and its OnPool sees the channel close.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            self.running.fetch_sub(1, Ordering::SeqCst);
            super::batcher::recheck_all();
        }
    }
}

/// Makes the calling thread yield to the data path: handshake and nonce work runs as nice
/// as the workers plus 5 (on Linux, niceness is per thread).
pub fn yield_to_data_path() {
    // SAFETY: setpriority on the calling thread (who = 0) has no memory effects.
    #[cfg(target_os = "linux")]
    unsafe {
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, current + 5);
    }
}

/// The waker a pool thread polls with: it remembers that a wake happened (one that may
/// arrive while the poll is still on its way back) and passes it on to the task.
struct Relay {
    woken: AtomicBool,
    task: Mutex<Waker>,
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .wake_by_ref();
    }
}

/// A handshake future whose every poll runs on the [`HandshakePool`].
pub struct OnPool<F: Future> {
    state: State<F>,
    relay: Arc<Relay>,
}

enum State<F: Future> {
    Idle(F),
    Polling(tokio::sync::oneshot::Receiver<(F, Poll<F::Output>)>),
    Done,
}

impl<F: Future> OnPool<F> {
    /// Wraps `future`; nothing runs until it is polled.
    pub fn new(future: F) -> Self {
        OnPool {
            state: State::Idle(future),
            relay: Arc::new(Relay {
                woken: AtomicBool::new(false),
                task: Mutex::new(Waker::noop().clone()),
            }),
        }
    }
}

impl<F, T> Future for OnPool<F>
where
    F: Future<Output = std::io::Result<T>> + Send + Unpin + 'static,
    T: Send + 'static,
{
    type Output = std::io::Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Idle(mut future) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    self.relay.woken.store(false, Ordering::SeqCst);
                    *self.relay.task.lock().unwrap_or_else(|e| e.into_inner()) = cx.waker().clone();
                    let waker = Waker::from(self.relay.clone());
                    HandshakePool::global().spawn(Box::new(move || {
                        let poll = Pin::new(&mut future).poll(&mut Context::from_waker(&waker));
                        let _ = tx.send((future, poll));
                    }));
                    self.state = State::Polling(rx);
                }
                State::Polling(mut rx) => {
                    return match Pin::new(&mut rx).poll(cx) {
                        Poll::Pending => {
                            self.state = State::Polling(rx);
                            Poll::Pending
                        }
                        Poll::Ready(Ok((_, Poll::Ready(out)))) => Poll::Ready(out),
                        // Woken while that poll was out: poll again at once.
                        Poll::Ready(Ok((future, Poll::Pending)))
                            if self.relay.woken.swap(false, Ordering::SeqCst) =>
                        {
                            self.state = State::Idle(future);
                            continue;
                        }
                        // The relay is registered with whatever the future waits on.
                        Poll::Ready(Ok((future, Poll::Pending))) => {
                            self.state = State::Idle(future);
                            Poll::Pending
                        }
                        Poll::Ready(Err(_)) => Poll::Ready(Err(std::io::Error::other(
                            "TLS handshake failed on the handshake pool",
                        ))),
                    };
                }
                State::Done => {
                    return Poll::Ready(Err(std::io::Error::other(
                        "TLS handshake polled after completion",
                    )))
                }
            }
        }
    }
}
