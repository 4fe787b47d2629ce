//! Reconnect delays: jittered exponential backoff (Envoy's defaults for xDS streams:
//! 500 ms base, 30 s cap), each delay drawn uniformly below the current bound.

use std::time::Duration;

const BASE: Duration = Duration::from_millis(500);
const MAX: Duration = Duration::from_secs(30);

/// The backoff state of one stream.
pub struct Backoff {
    bound: Duration,
}

impl Backoff {
    /// Starts at the base delay.
    pub fn new() -> Self {
        Backoff { bound: BASE }
    }

    /// Back to the base delay (after a stream that worked, such as one the server
    /// recycled by max connection age).
    pub fn reset(&mut self) {
        self.bound = BASE;
    }

    /// The next delay; the bound doubles up to the cap.
    pub fn next(&mut self) -> Duration {
        let ms = self.bound.as_millis().max(1) as u64;
        let delay = Duration::from_millis(rand::random::<u64>() % ms + 1);
        self.bound = (self.bound * 2).min(MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_bound_and_reset() {
        let mut b = Backoff::new();
        for bound_ms in [500u64, 1000, 2000, 4000, 8000, 16000, 30000, 30000] {
            let d = b.next();
            assert!(
                d <= Duration::from_millis(bound_ms),
                "{d:?} > {bound_ms} ms"
            );
        }
        b.reset();
        assert!(b.next() <= BASE);
    }
}
