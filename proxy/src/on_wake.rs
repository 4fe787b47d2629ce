//! Polling a rarely ready future only after it was woken. A task that drives a busy future
//! (a connection) beside rare ones (an idle timer, a shutdown signal) with `select!` polls
//! every branch each time anything wakes the task: a few times per proxied request, at a
//! couple of hundred instructions per timer poll. [`OnWake`] hands the wrapped future a
//! waker of its own, which marks it woken before waking the task, and skips the poll
//! otherwise.

use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Whether the wrapped future was woken since its last poll, and the task to wake then.
struct WakeMark {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WakeMark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

pin_project_lite::pin_project! {
    /// `future`, polled only on its first poll and after its own waker fired. Its output
    /// and readiness are the wrapped future's; only wasted polls are saved.
    pub struct OnWake<F> {
        #[pin]
        future: F,
        mark: Arc<WakeMark>,
        waker: Waker,
    }
}

impl<F: Future> OnWake<F> {
    /// Wraps `future` (one allocation: the shared wake mark).
    pub fn new(future: F) -> Self {
        let mark = Arc::new(WakeMark {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(mark.clone());
        OnWake {
            future,
            mark,
            waker,
        }
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Registered before the mark is read, so a wake in between is never lost.
        this.mark.task.register(cx.waker());
        if !this.mark.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.future.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set, waking the stored waker on `fire`.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.ready.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn polls_the_inner_future_only_after_its_own_wake() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let inner_waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let mut gated = Box::pin(OnWake::new(Probe {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: inner_waker.clone(),
        }));
        let task_woken = Arc::new(WakeCount::default());
        let task_waker = Waker::from(task_woken.clone());
        let mut cx = Context::from_waker(&task_waker);

        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "the first poll reaches it");
        for _ in 0..5 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "unwoken polls are skipped");

        ready.store(true, Ordering::SeqCst);
        inner_waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(
            task_woken.0.load(Ordering::SeqCst),
            1,
            "its wake wakes the task"
        );
        assert!(gated.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[derive(Default)]
    struct WakeCount(AtomicUsize);

    impl Wake for WakeCount {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_gated_timer_still_fires() {
        let started = tokio::time::Instant::now();
        OnWake::new(tokio::time::sleep(std::time::Duration::from_secs(3))).await;
        assert!(started.elapsed() >= std::time::Duration::from_secs(3));
    }
}
