//! A response body throttled to a byte rate (the fault filter's `response_rate_limit`):
//! at most one slice of a twentieth of the per-second rate goes out every 50 ms, the
//! first at once, as Envoy's stream rate limiter paces it.

use bytes::Bytes;
use filters::http::{Body, BoxError};
use http_body::{Frame, SizeHint};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Time between slices.
const SLICE: Duration = Duration::from_millis(50);

/// A body released one slice per 50 ms; `Guard` lives as long as the body (the fault
/// stays counted as active until the response is done).
pub struct Throttled<Guard> {
    inner: Body,
    /// Bytes per slice (at least one).
    slice: usize,
    /// Data read from `inner` and not yet released.
    pending: VecDeque<Bytes>,
    /// Trailers (or the end) seen after the pending data.
    finished: Option<Option<http::HeaderMap>>,
    /// When the next slice may go; `None`: now.
    next: Option<Pin<Box<tokio::time::Sleep>>>,
    _guard: Guard,
}

impl<Guard> Throttled<Guard> {
    /// Throttles `inner` to `bytes_per_second`.
    pub fn new(inner: Body, bytes_per_second: u64, guard: Guard) -> Self {
        Throttled {
            inner,
            slice: (bytes_per_second / 20).max(1) as usize,
            pending: VecDeque::new(),
            finished: None,
            next: None,
            _guard: guard,
        }
    }

    /// Takes up to one slice of pending data.
    fn take_slice(&mut self) -> Bytes {
        let Some(front) = self.pending.front_mut() else {
            return Bytes::new();
        };
        let n = front.len().min(self.slice);
        let out = front.split_to(n);
        if front.is_empty() {
            self.pending.pop_front();
        }
        out
    }
}

impl<Guard: Unpin> http_body::Body for Throttled<Guard> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        // Read ahead until there is a slice's worth of data or the body ends.
        while this.finished.is_none()
            && this.pending.iter().map(Bytes::len).sum::<usize>() < this.slice
        {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => this.pending.push_back(data),
                    Ok(_) => {}
                    Err(frame) => this.finished = Some(frame.into_trailers().ok()),
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.finished = Some(None),
                Poll::Pending if this.pending.is_empty() => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        if this.pending.is_empty() {
            return Poll::Ready(
                this.finished
                    .take()
                    .flatten()
                    .map(|t| Ok(Frame::trailers(t))),
            );
        }
        if let Some(next) = this.next.as_mut() {
            if next.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        this.next = Some(Box::pin(tokio::time::sleep(SLICE)));
        Poll::Ready(Some(Ok(Frame::data(this.take_slice()))))
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && matches!(self.finished, Some(None))
    }

    fn size_hint(&self) -> SizeHint {
        let pending = self.pending.iter().map(Bytes::len).sum::<usize>() as u64;
        let mut hint = self.inner.size_hint();
        hint.set_lower(hint.lower() + pending);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + pending);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn a_body_goes_out_one_slice_per_fifty_milliseconds() {
        let data = Bytes::from(vec![7u8; 1000]);
        let body: Body = http_body_util::Full::new(data.clone())
            .map_err(|e| match e {})
            .boxed();
        // 2,000 bytes per second: 100-byte slices, ten of them, the first at once.
        let started = tokio::time::Instant::now();
        let out = Throttled::new(body, 2000, ())
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(out, data);
        assert_eq!(started.elapsed(), Duration::from_millis(450));
    }
}
