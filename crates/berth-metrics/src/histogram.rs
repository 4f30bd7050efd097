//! A histogram of durations with fixed buckets, updated with atomics only.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Durations counted into explicit buckets (upper bounds in seconds). One
/// observation is a short scan of the bounds and two atomic adds; the sum is
/// kept in nanoseconds, so it is exact and needs no float atomics.
#[derive(Clone)]
pub struct Histogram(Arc<Inner>);

struct Inner {
    /// Upper bounds in seconds, ascending, as given.
    bounds: &'static [f64],
    /// The same bounds in nanoseconds, for the comparison on the hot path.
    bounds_ns: Box<[u64]>,
    /// Observations per bucket (not cumulative); the last one is +Inf.
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram").field("bounds", &self.0.bounds).finish()
    }
}

impl Histogram {
    /// A histogram with these upper bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bucket bounds must ascend");
        Histogram(Arc::new(Inner {
            bounds,
            bounds_ns: bounds.iter().map(|b| (b * 1e9) as u64).collect(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self
            .0
            .bounds_ns
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(self.0.bounds_ns.len());
        self.0.counts[i].fetch_add(1, Relaxed);
        self.0.sum_ns.fetch_add(ns, Relaxed);
    }

    /// How many observations so far.
    pub fn count(&self) -> u64 {
        self.0.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Observations per bucket (the encoder makes them cumulative), with
    /// their upper bounds, and the count.
    fn snapshot(&self) -> (Vec<(f64, u64)>, u64) {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.0.counts.len());
        for (i, c) in self.0.counts.iter().enumerate() {
            let n = c.load(Relaxed);
            total += n;
            buckets.push((self.0.bounds.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        (buckets, total)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (buckets, count) = self.snapshot();
        let sum = self.0.sum_ns.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(3));
        let (buckets, count) = h.snapshot();
        assert_eq!(buckets, vec![(0.001, 2), (0.01, 1), (f64::INFINITY, 1)]);
        assert_eq!(count, 4);
        assert_eq!(h.0.sum_ns.load(Relaxed), 3_006_500_000);
        // As text: cumulative, ending in +Inf = count.
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register("t", "test", h.clone());
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &reg).unwrap();
        for line in [
            "t_bucket{le=\"0.001\"} 2",
            "t_bucket{le=\"0.01\"} 3",
            "t_bucket{le=\"+Inf\"} 4",
            "t_count 4",
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
    }
}
