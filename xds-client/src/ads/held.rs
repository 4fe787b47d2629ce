//! Answers (ACK/NACK) the handler asked to hold back: Envoy keeps the CDS ACK back while
//! clusters it added are warming, so a management server that waits for the ACK knows
//! the clusters are usable. Held answers of a type go out in order.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use tokio::sync::oneshot;

/// The held answers of a stream.
pub struct Held<R> {
    entries: Vec<(String, oneshot::Receiver<()>, R)>,
}

impl<R> Default for Held<R> {
    fn default() -> Self {
        Held {
            entries: Vec::new(),
        }
    }
}

impl<R> Held<R> {
    /// Holds `answer` until `release` fires (or its sender is dropped).
    pub fn hold(&mut self, type_url: &str, release: oneshot::Receiver<()>, answer: R) {
        self.entries.push((type_url.to_string(), release, answer));
    }

    /// Queues `answer` behind the held answers of its type; `Some(answer)` back when none
    /// is held and it can go at once.
    pub fn queue(&mut self, type_url: &str, answer: R) -> Option<R> {
        if !self.entries.iter().any(|(t, _, _)| t == type_url) {
            return Some(answer);
        }
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(());
        self.hold(type_url, rx, answer);
        None
    }

    /// Resolves with the next answer that may go: the first held answer of a type, once
    /// released; pending while none is.
    pub async fn released(&mut self) -> R {
        let ready = std::future::poll_fn(|cx| {
            let mut seen: Vec<&str> = Vec::new();
            for (i, (t, rx, _)) in self.entries.iter_mut().enumerate() {
                if seen.contains(&t.as_str()) {
                    continue;
                }
                seen.push(t.as_str());
                if Pin::new(rx).poll(cx).is_ready() {
                    return Poll::Ready(i);
                }
            }
            Poll::Pending
        })
        .await;
        self.entries.remove(ready).2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn held_answers_go_in_order_when_released() {
        let mut held: Held<u32> = Held::default();
        assert_eq!(held.queue("cds", 1), Some(1));
        let (tx, rx) = oneshot::channel();
        held.hold("cds", rx, 2);
        assert_eq!(held.queue("cds", 3), None, "queued behind the held one");
        assert_eq!(held.queue("lds", 4), Some(4), "other types are not held");
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(20), held.released()).await;
        assert!(pending.is_err(), "nothing released yet");
        tx.send(()).unwrap();
        assert_eq!(held.released().await, 2);
        assert_eq!(held.released().await, 3);
    }
}
