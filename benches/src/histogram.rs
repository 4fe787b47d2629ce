//! Latency samples and their percentiles (exact: every sample is kept; runs are bounded).

/// Latencies in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    /// Records one latency.
    pub fn record(&mut self, d: std::time::Duration) {
        self.0.push(d.as_micros().min(u32::MAX as u128) as u32);
    }

    /// Merges another set.
    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// The q-quantile in milliseconds (0 when empty).
    pub fn percentile_ms(&mut self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_unstable();
        let idx = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len()) - 1;
        f64::from(self.0[idx]) / 1000.0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles() {
        let mut l = super::Latencies::default();
        for i in 1..=1000 {
            l.record(std::time::Duration::from_micros(i));
        }
        assert_eq!(l.percentile_ms(0.5), 0.5);
        assert_eq!(l.percentile_ms(0.99), 0.99);
        assert_eq!(l.percentile_ms(1.0), 1.0);
    }
}
