//! A deadline whose tokio timer is armed only when something waits on it, and which moves
//! later without touching the timer. Response bodies carry up to two deadlines each (the
//! route timeout, an idle timeout restarted by every frame), yet most bodies end without
//! ever waiting. An armed tokio timer costs an allocation and a timer-wheel insert and
//! removal, and a reset re-inserts it: per request, that was more than the deadlines were
//! worth.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

/// A deadline, armed on the first [`LazyTimer::poll_expired`] that finds it in the future.
pub struct LazyTimer {
    at: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl LazyTimer {
    /// A deadline at `at`, not yet armed.
    pub fn at(at: Instant) -> Self {
        LazyTimer { at, sleep: None }
    }

    /// Moves the deadline. Moving it later (an idle timer restarted by activity) only
    /// records it: an armed timer that fires early is re-armed then.
    pub fn restart(&mut self, at: Instant) {
        self.at = at;
    }

    /// Whether the deadline has passed. With `now` (a caller that just made progress and
    /// is not about to wait), only the clock is compared; without it (a caller about to
    /// wait), [`LazyTimer::poll_expired`] arms the timer to wake the task.
    pub fn expired(&mut self, now: Option<Instant>, cx: &mut Context<'_>) -> bool {
        match now {
            Some(now) => now >= self.at,
            None => self.poll_expired(cx).is_ready(),
        }
    }

    /// Ready once the deadline has passed; otherwise arms the timer (or keeps it armed)
    /// to wake the task then.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let at = self.at;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() > at {
            sleep.as_mut().reset(at);
        }
        loop {
            std::task::ready!(sleep.as_mut().poll(cx));
            if sleep.deadline() >= self.at {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(self.at);
        }
    }

    /// An idle deadline, `period` after the last activity. With `now` (activity just
    /// happened) it restarts from `now` and has not run out; without it (the caller is
    /// about to wait) it reports whether the period ran out, arming the timer otherwise.
    pub fn idle_expired(
        &mut self,
        period: std::time::Duration,
        now: Option<Instant>,
        cx: &mut Context<'_>,
    ) -> bool {
        match now {
            Some(now) => {
                self.restart(now + period);
                false
            }
            None => self.poll_expired(cx).is_ready(),
        }
    }

    /// `future`'s output, or `None` once the deadline passed first. The timer stays with
    /// `self`, so a caller can wait on it again (the route timeout covers the response
    /// head, then the body) without arming a second one.
    pub async fn limit<T>(&mut self, future: impl Future<Output = T>) -> Option<T> {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            self.poll_expired(cx).map(|()| None)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn expiry(timer: &mut LazyTimer) {
        std::future::poll_fn(|cx| timer.poll_expired(cx)).await
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_its_deadline() {
        let start = Instant::now();
        let mut timer = LazyTimer::at(start + Duration::from_secs(2));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(!timer.expired(Some(start), &mut cx));
        expiry(&mut timer).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert!(timer.expired(Some(Instant::now()), &mut cx));
    }

    /// Arms a timer for `first` seconds, moves it to `then` seconds and waits: it must
    /// fire at `then`, whichever way it moved.
    async fn armed_then_restarted(first: u64, then: u64) {
        let start = Instant::now();
        let mut timer = LazyTimer::at(start + Duration::from_secs(first));
        assert!(
            std::future::poll_fn(|cx| Poll::Ready(timer.poll_expired(cx)))
                .await
                .is_pending()
        );
        timer.restart(start + Duration::from_secs(then));
        expiry(&mut timer).await;
        assert_eq!(start.elapsed(), Duration::from_secs(then));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_restart_after_arming_still_waits_for_the_new_deadline() {
        // Firing at the first deadline must not end the wait.
        armed_then_restarted(1, 5).await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_deadline_runs_from_the_last_activity() {
        let start = Instant::now();
        let period = Duration::from_secs(2);
        let mut timer = LazyTimer::at(start + period);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!timer.idle_expired(period, Some(Instant::now()), &mut cx));
        // Activity at 1 s: still running at 2.5 s, run out at 3 s.
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(!timer.idle_expired(period, None, &mut cx));
        expiry(&mut timer).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn limit_returns_the_output_in_time_and_none_after_the_deadline() {
        let start = Instant::now();
        let mut timer = LazyTimer::at(start + Duration::from_secs(2));
        let fast = tokio::time::sleep(Duration::from_secs(1));
        assert_eq!(
            timer
                .limit(async {
                    fast.await;
                    7
                })
                .await,
            Some(7)
        );
        // The same timer, already armed, still ends a wait that outlasts it.
        let slow = tokio::time::sleep(Duration::from_secs(10));
        assert_eq!(timer.limit(slow).await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_restart_re_arms_the_timer() {
        armed_then_restarted(10, 3).await;
    }
}
