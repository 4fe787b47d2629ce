//! Per-stream timers of the connection manager: `stream_idle_timeout` (no bytes in either
//! direction for the period, overridable by the route's `idle_timeout`) and
//! `request_timeout` (the whole request must arrive in time), and `max_stream_duration`
//! (the whole stream: the connection manager's, overridden by the route's). Before the response starts a timeout answers
//! with a local reply; once it has started the stream is reset.

use super::local_reply::LocalReply;
use crate::lazy_timer::LazyTimer;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Route override states kept in [`StreamActivity`].
const NO_OVERRIDE: u64 = u64::MAX;
const DISABLED: u64 = u64::MAX - 1;

/// How a client's request body failed; Envoy answers each differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFailure {
    /// Malformed framing (a bad chunk size), or the client went away mid-body: 400.
    Malformed = 1,
    /// Trailers over the codec's limits: 431, as headers over them.
    TrailersTooLarge = 2,
}

impl BodyFailure {
    /// The failure an error of the HTTP/1 codec's body decoder stands for (its only
    /// distinction is in the message of the I/O error it wraps).
    pub fn of(e: &(dyn std::error::Error + 'static)) -> Self {
        let trailers = std::iter::successors(Some(e), |e| e.source())
            .any(|e| e.to_string().starts_with("chunk trailers"));
        match trailers {
            true => BodyFailure::TrailersTooLarge,
            false => BodyFailure::Malformed,
        }
    }
}

/// Activity of one stream, shared by its request body, the pipeline and the watchdog.
#[derive(Debug)]
pub struct StreamActivity {
    start: Instant,
    last_ms: AtomicU64,
    request_done: AtomicBool,
    /// How the request body failed, if it did: a [`BodyFailure`] as its number.
    request_failed: AtomicU8,
    idle_override_ms: AtomicU64,
    max_duration_ms: AtomicU64,
    /// Wakes the watchdog when a route override changes what applies.
    changed: tokio::sync::Notify,
    /// Wakes a router waiting for the request to complete (its route timeout starts then).
    completed: tokio::sync::Notify,
}

impl StreamActivity {
    /// A stream that started at `start` (the caller's clock reading, not read again
    /// here); `request_done` when the request has no body.
    pub fn new(request_done: bool, start: Instant) -> Self {
        StreamActivity {
            start,
            last_ms: AtomicU64::new(0),
            request_done: AtomicBool::new(request_done),
            request_failed: AtomicU8::new(0),
            idle_override_ms: AtomicU64::new(NO_OVERRIDE),
            max_duration_ms: AtomicU64::new(NO_OVERRIDE),
            changed: tokio::sync::Notify::new(),
            completed: tokio::sync::Notify::new(),
        }
    }

    /// Bytes moved: the idle clock restarts.
    pub fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The request has been fully received.
    pub fn request_complete(&self) {
        self.request_done.store(true, Ordering::Release);
        // Lock-free when nobody waits (a permit is stored for a later waiter, which then
        // checks the flag again).
        self.completed.notify_one();
    }

    /// Whether the request has been fully received.
    pub fn is_request_complete(&self) -> bool {
        self.request_done.load(Ordering::Acquire)
    }

    /// The request body ended in an error: a reset of the upstream request that follows
    /// is the client's doing.
    pub fn request_failed(&self, how: BodyFailure) {
        self.request_failed.store(how as u8, Ordering::Release);
    }

    /// How the request body failed, if it did.
    pub fn request_failure(&self) -> Option<BodyFailure> {
        match self.request_failed.load(Ordering::Acquire) {
            0 => None,
            1 => Some(BodyFailure::Malformed),
            _ => Some(BodyFailure::TrailersTooLarge),
        }
    }

    /// Resolves once the request has been fully received.
    pub async fn request_completed(&self) {
        while !self.is_request_complete() {
            self.completed.notified().await;
        }
    }

    /// The matched route's `idle_timeout` (`None` inside disables the idle timer).
    pub fn override_idle(&self, idle: Option<Duration>) {
        let v = idle.map(|d| d.as_millis() as u64).unwrap_or(DISABLED);
        if self.idle_override_ms.swap(v, Ordering::Relaxed) != v {
            self.changed.notify_one();
        }
    }

    /// The stream's maximum duration, counted from its start: the connection manager's
    /// when the stream begins, then the matched route's (`None`: no limit).
    pub fn set_max_duration(&self, max: Option<Duration>) {
        let ms = max.map_or(NO_OVERRIDE, |d| d.as_millis() as u64);
        // Only a change wakes the watchdog: most streams set "no limit" over "no limit".
        if self.max_duration_ms.swap(ms, Ordering::Relaxed) != ms {
            self.changed.notify_one();
        }
    }

    /// When the stream's maximum duration ends, if one applies.
    pub fn max_duration_deadline(&self) -> Option<tokio::time::Instant> {
        self.max_duration_ms().map(|d| self.start + d)
    }

    /// The idle timeout in force.
    pub fn idle_timeout(&self, hcm: Option<Duration>) -> Option<Duration> {
        match self.idle_override_ms.load(Ordering::Relaxed) {
            NO_OVERRIDE => hcm,
            DISABLED => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    fn max_duration_ms(&self) -> Option<Duration> {
        match self.max_duration_ms.load(Ordering::Relaxed) {
            NO_OVERRIDE => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Resolves when a timeout fires, with the local reply to send.
    pub async fn watchdog(
        &self,
        hcm_idle: Option<Duration>,
        request_timeout: Option<Duration>,
    ) -> LocalReply {
        // One timer for the stream's life, armed on the first wait and moved with each
        // re-evaluation (later for free).
        let mut timer = LazyTimer::at(self.start);
        loop {
            let now = self.start.elapsed();
            let mut next: Option<Duration> = None;
            if let Some(idle) = self.idle_timeout(hcm_idle) {
                let deadline = Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle;
                if now >= deadline {
                    return LocalReply::stream_idle_timeout(
                        self.request_done.load(Ordering::Relaxed),
                    );
                }
                next = Some(deadline);
            }
            if let Some(max) = self.max_duration_ms() {
                if now >= max {
                    return LocalReply::max_duration_timeout();
                }
                next = Some(next.map_or(max, |n| n.min(max)));
            }
            if let Some(r) = request_timeout {
                if !self.request_done.load(Ordering::Relaxed) {
                    if now >= r {
                        return LocalReply::request_timeout();
                    }
                    next = Some(next.map_or(r, |n| n.min(r)));
                }
            }
            // Re-evaluate at the next deadline, when a route override arrives, or
            // periodically (the end of the request body may change what applies).
            let wait = next
                .map_or(Duration::from_secs(1), |n| n.saturating_sub(now))
                .min(Duration::from_secs(1));
            timer.restart(self.start + now + wait.max(Duration::from_millis(1)));
            // Woken by a change or by the deadline: either way, evaluate again.
            let _ = timer.limit(self.changed.notified()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_and_request_timeouts_fire_and_overrides_apply() {
        let a = StreamActivity::new(false, Instant::now());
        let r = a
            .watchdog(Some(Duration::from_secs(5)), Some(Duration::from_secs(2)))
            .await;
        assert_eq!(r.details, "request_overall_timeout");
        let a = StreamActivity::new(true, Instant::now());
        let r = a
            .watchdog(Some(Duration::from_secs(5)), Some(Duration::from_secs(2)))
            .await;
        assert_eq!(
            (r.details.as_ref(), r.status.as_u16()),
            ("stream_idle_timeout", 504)
        );
        let a = StreamActivity::new(true, Instant::now());
        a.override_idle(None);
        assert!(tokio::time::timeout(
            Duration::from_secs(60),
            a.watchdog(Some(Duration::from_secs(5)), None)
        )
        .await
        .is_err());
        assert_eq!(a.idle_timeout(Some(Duration::from_secs(5))), None);
        let a = StreamActivity::new(true, Instant::now());
        a.set_max_duration(Some(Duration::from_secs(1)));
        // A route lifting the connection manager's limit leaves no timer at all.
        a.set_max_duration(None);
        assert_eq!(a.max_duration_deadline(), None);
        a.set_max_duration(Some(Duration::from_secs(3)));
        let r = a.watchdog(None, None).await;
        assert_eq!(
            (r.details.as_ref(), r.status.as_u16()),
            ("max_duration_timeout", 504)
        );
    }
}
