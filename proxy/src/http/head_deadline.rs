//! The deadline of an HTTP/1 request head, against slowloris clients: Envoy's
//! `request_headers_timeout` and the stream idle timeout cover a head from its first byte
//! (Envoy's stream exists from then on), so a client that sends half a head, or one byte
//! every few seconds, is answered 408 and closed at the earlier of the two instead of
//! holding its connection for good. A connection that sent nothing is left to the
//! connection's `idle_timeout`, as in Envoy.
//!
//! The codec (hyper) does not say when a head starts, so the deadline lives in the
//! connection's I/O: bytes read while no stream is active belong to a head, and the head
//! is over once the codec hands it on (the watcher then reports a stream active). The
//! clock is read and the timer armed only when the reader is about to wait in the middle
//! of a head; a head that arrives in one read costs nothing.
//!
//! Not covered: a partial head pipelined behind a complete request in one read (it is
//! buffered by the codec, never read here while no stream is active).

use crate::lazy_timer::LazyTimer;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Which timeout ended a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadTimeout {
    /// `request_headers_timeout`.
    RequestHeaders,
    /// `stream_idle_timeout`.
    StreamIdle,
}

/// The head limits of a connection manager: `None` when neither timeout is set.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimit {
    period: Duration,
    kind: HeadTimeout,
}

impl HeadLimit {
    /// The earlier of the two timeouts (`request_headers_timeout` on a tie).
    pub fn new(request_headers: Option<Duration>, stream_idle: Option<Duration>) -> Option<Self> {
        let headers = request_headers.map(|period| HeadLimit {
            period,
            kind: HeadTimeout::RequestHeaders,
        });
        let idle = stream_idle.map(|period| HeadLimit {
            period,
            kind: HeadTimeout::StreamIdle,
        });
        match (headers, idle) {
            (Some(h), Some(i)) if i.period < h.period => Some(i),
            (h, i) => h.or(i),
        }
    }
}

/// What the deadline needs to know of the connection, and what it reports.
pub trait HeadWatch {
    /// No stream is active: bytes read now belong to the next request head.
    fn awaiting_head(&self) -> bool;
    /// The head ran out of time after `waited`: count it and give the response to send
    /// (a complete HTTP/1.1 response that closes the connection).
    fn timed_out(&self, kind: HeadTimeout, waited: Duration) -> Vec<u8>;
}

/// How long a timed-out connection keeps reading (and discarding) after its answer, so
/// that closing it with unread input (a reset) does not destroy the answer on its way
/// (Envoy's `delayed_close_timeout`, 1 s by default).
const LINGER: Duration = Duration::from_secs(1);

enum Phase {
    /// No head has started since the last stream did.
    Between,
    /// Bytes of a head arrived; `armed` once the deadline was set.
    Head { armed: bool },
    /// The deadline ran out: the answer, and how much of it is written.
    Answering { reply: Vec<u8>, written: usize },
    /// Answered: input is discarded until the peer closes or [`LINGER`] ends.
    Lingering,
    /// The codec is told the connection ended.
    Closed,
    /// Not HTTP/1 (the HTTP/2 preface came first): nothing to watch.
    Off,
}

/// A connection's I/O with the head deadline applied to what it reads.
pub struct HeadDeadline<T, W> {
    inner: T,
    watch: W,
    /// `None`: nothing to watch (phase `Off`).
    limit: Option<HeadLimit>,
    phase: Phase,
    /// How many of the connection's first bytes matched the HTTP/2 preface so far, while
    /// they all did (`None` once one did not): a connection that sends the whole
    /// preface, in as many reads as it likes, is HTTP/2 and not watched.
    preface: Option<usize>,
    /// The deadline's timer, made on the first head that waits and reused.
    timer: Option<LazyTimer>,
}

impl<T, W> HeadDeadline<T, W> {
    /// Watches `inner`'s request heads; with no `limit` (neither timeout set, or an
    /// HTTP/2 connection) it only passes the I/O through.
    pub fn new(inner: T, watch: W, limit: Option<HeadLimit>) -> Self {
        HeadDeadline {
            inner,
            watch,
            phase: match limit {
                Some(_) => Phase::Between,
                None => Phase::Off,
            },
            limit,
            preface: Some(0),
            timer: None,
        }
    }

    /// Whether the timer (set to `at` if it is not armed yet) has run out, arming it to
    /// wake the task otherwise.
    fn expired(&mut self, arm_at: Option<tokio::time::Instant>, cx: &mut Context<'_>) -> bool {
        if let Some(at) = arm_at {
            match &mut self.timer {
                Some(t) => t.restart(at),
                None => self.timer = Some(LazyTimer::at(at)),
            }
        }
        self.timer
            .as_mut()
            .is_some_and(|t| t.poll_expired(cx).is_ready())
    }
}

/// The HTTP/2 connection preface's first line.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl<T, W> HeadDeadline<T, W> {
    /// Follows the connection's first bytes through the HTTP/2 preface: whether `read`
    /// completed it.
    fn preface_complete(&mut self, read: &[u8]) -> bool {
        let Some(matched) = self.preface else {
            return false;
        };
        let rest = &H2_PREFACE[matched..];
        let n = rest.len().min(read.len());
        self.preface = (read[..n] == rest[..n]).then_some(matched + n);
        self.preface == Some(H2_PREFACE.len())
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin, W: HeadWatch + Unpin> HeadDeadline<T, W> {
    /// Writes the answer, then discards input until the peer closes or the linger ends;
    /// ready (with nothing read: the end of input for the codec) once done.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.phase {
                Phase::Answering { reply, written } => {
                    if *written < reply.len() {
                        match ready!(Pin::new(&mut self.inner).poll_write(cx, &reply[*written..])) {
                            Ok(n) if n > 0 => *written += n,
                            _ => self.phase = Phase::Closed,
                        }
                        continue;
                    }
                    let _ = ready!(Pin::new(&mut self.inner).poll_flush(cx));
                    let at = tokio::time::Instant::now() + LINGER;
                    self.phase = Phase::Lingering;
                    self.expired(Some(at), cx);
                }
                Phase::Lingering => {
                    let mut scratch = [0u8; 2048];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                        Poll::Ready(_) => self.phase = Phase::Closed,
                        Poll::Pending if self.expired(None, cx) => self.phase = Phase::Closed,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                _ => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin, W: HeadWatch + Unpin> AsyncRead for HeadDeadline<T, W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.phase {
            Phase::Off => return Pin::new(&mut this.inner).poll_read(cx, buf),
            Phase::Answering { .. } | Phase::Lingering | Phase::Closed => {
                return this.poll_answer(cx)
            }
            Phase::Between | Phase::Head { .. } => {}
        }
        if !this.watch.awaiting_head() {
            this.phase = Phase::Between;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                if this.preface_complete(&buf.filled()[before..]) {
                    this.phase = Phase::Off;
                } else if matches!(this.phase, Phase::Between) {
                    this.phase = Phase::Head { armed: false };
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let (Phase::Head { armed }, Some(limit)) = (&this.phase, this.limit) else {
                    return Poll::Pending;
                };
                // The head started when its first bytes came, which was just before
                // this first wait (the codec reads again at once when a head is short).
                let arm_at = (!armed).then(|| tokio::time::Instant::now() + limit.period);
                this.phase = Phase::Head { armed: true };
                if !this.expired(arm_at, cx) {
                    return Poll::Pending;
                }
                this.phase = Phase::Answering {
                    reply: this.watch.timed_out(limit.kind, limit.period),
                    written: 0,
                };
                this.poll_answer(cx)
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin, W: Unpin> AsyncWrite for HeadDeadline<T, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Watch(Arc<AtomicBool>);

    impl HeadWatch for Watch {
        fn awaiting_head(&self) -> bool {
            !self.0.load(Ordering::Relaxed)
        }
        fn timed_out(&self, kind: HeadTimeout, _: Duration) -> Vec<u8> {
            format!("{kind:?}").into_bytes()
        }
    }

    fn limit() -> Option<HeadLimit> {
        HeadLimit::new(Some(Duration::from_secs(3)), Some(Duration::from_secs(2)))
    }

    #[test]
    fn the_earlier_timeout_applies() {
        assert_eq!(limit().unwrap().kind, HeadTimeout::StreamIdle);
        let h = HeadLimit::new(Some(Duration::from_secs(1)), Some(Duration::from_secs(2)));
        assert_eq!(h.unwrap().kind, HeadTimeout::RequestHeaders);
        assert!(HeadLimit::new(None, None).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_sent_head_is_answered_at_the_deadline_from_its_first_byte() {
        let (client, server) = tokio::io::duplex(4096);
        let mut io = HeadDeadline::new(server, Watch(Arc::default()), limit());
        let (mut client_rx, mut client_tx) = tokio::io::split(client);
        client_tx.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let start = tokio::time::Instant::now();
        let answered = tokio::spawn(async move {
            let mut answer = vec![0u8; 10];
            client_rx.read_exact(&mut answer).await.unwrap();
            (answer, tokio::time::Instant::now())
        });
        let mut buf = [0u8; 64];
        assert_eq!(io.read(&mut buf).await.unwrap(), 16);
        // A byte a second does not move the deadline.
        let dribble = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = client_tx.write_all(b"x").await;
            }
            client_tx
        });
        while io.read(&mut buf).await.unwrap() > 0 {}
        let (answer, at) = answered.await.unwrap();
        assert_eq!(answer, b"StreamIdle");
        assert_eq!(at - start, Duration::from_secs(2));
        // The codec is told the input ended once the linger is over.
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        drop(dribble);
    }

    #[tokio::test(start_paused = true)]
    async fn no_deadline_while_a_stream_is_active_nor_on_a_silent_connection() {
        let (mut client, server) = tokio::io::duplex(4096);
        let active = Arc::new(AtomicBool::new(false));
        let mut io = HeadDeadline::new(server, Watch(active.clone()), limit());
        let mut buf = [0u8; 64];
        // Silent: nothing happens however long it waits.
        assert!(
            tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf))
                .await
                .is_err()
        );
        // A head, then a stream: a slow body is none of the head deadline's business.
        client.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        active.store(true, Ordering::Relaxed);
        assert!(
            tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf))
                .await
                .is_err()
        );
        client.write_all(b"body").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_is_not_watched_even_with_its_preface_split() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        for split in [preface.len(), 3] {
            let (mut client, server) = tokio::io::duplex(4096);
            let mut io = HeadDeadline::new(server, Watch(Arc::default()), limit());
            let mut buf = [0u8; 64];
            client.write_all(&preface[..split]).await.unwrap();
            assert_eq!(io.read(&mut buf).await.unwrap(), split);
            // A wait in the middle of the preface (the deadline is armed then).
            let wait = tokio::time::timeout(Duration::from_secs(1), io.read(&mut buf)).await;
            assert!(wait.is_err() || split == preface.len());
            client.write_all(&preface[split..]).await.unwrap();
            if split < preface.len() {
                assert_eq!(io.read(&mut buf).await.unwrap(), preface.len() - split);
            }
            // Silence far past the deadline: no answer, no end.
            let read = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await;
            assert!(read.is_err(), "split at {split}");
        }
    }
}
