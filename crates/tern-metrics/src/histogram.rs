//! A histogram of fixed buckets kept in atomics.
//!
//! `prometheus-client`'s own `Histogram` takes a mutex on every observation; this one
//! does one `fetch_add` on the bucket and one compare-and-swap loop on the sum, so the
//! SMTP session and the spool's commit path can observe without a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// A histogram over fixed upper bounds (seconds, for every histogram in Tern), plus the
/// implicit `+Inf` bucket. Cloning shares the counts.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Upper bounds, increasing.
    bounds: &'static [f64],
    /// One count per bound, then the `+Inf` bucket. Not cumulative.
    counts: Box<[AtomicU64]>,
    /// The sum of every observation, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds (increasing; a bound that does not increase
    /// is ignored when bucketing, as it can never be the first that fits).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram(Arc::new(Inner {
            bounds,
            counts,
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    /// Counts one observation of `v`. NaN and negative values count in the first bucket
    /// with 0 added to the sum (a clock that went backwards is not an error to show).
    pub fn observe(&self, v: f64) {
        let v = if v.is_finite() && v > 0.0 {
            v
        } else if v == f64::INFINITY {
            f64::MAX
        } else {
            0.0
        };
        let i = self
            .0
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.0.bounds.len());
        if let Some(c) = self.0.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if v > 0.0 {
            let _ = self
                .0
                .sum
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                    Some((f64::from_bits(bits) + v).to_bits())
                });
        }
    }

    /// Counts one observation of `d`, in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .fold(0u64, u64::saturating_add)
    }

    /// The sum of the observations so far.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.0.sum.load(Ordering::Relaxed))
    }

    /// `(upper bound, count in this bucket)` pairs, not cumulative, the last `+Inf`.
    fn buckets(&self) -> Vec<(f64, u64)> {
        self.0
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = self.buckets();
        // The count from the same loads as the buckets, so `_count` equals the `+Inf`
        // bucket even while observations arrive.
        let count = buckets
            .iter()
            .map(|(_, c)| *c)
            .fold(0u64, u64::saturating_add);
        encoder.encode_histogram::<NoLabelSet>(self.sum(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static BOUNDS: [f64; 3] = [0.1, 1.0, 10.0];

    #[test]
    fn observations_land_in_the_first_bucket_that_fits() {
        let h = Histogram::new(&BOUNDS);
        for v in [0.05, 0.1, 0.5, 5.0, 50.0, -1.0, f64::NAN] {
            h.observe(v);
        }
        let counts: Vec<u64> = h.buckets().iter().map(|(_, c)| *c).collect();
        assert_eq!(counts, vec![4, 1, 1, 1]);
        assert_eq!(h.count(), 7);
        assert!((h.sum() - 55.65).abs() < 1e-9, "{}", h.sum());
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let h = Histogram::new(&BOUNDS);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let h = h.clone();
                s.spawn(move || {
                    for _ in 0..1000 {
                        h.observe(0.5);
                    }
                });
            }
        });
        assert_eq!(h.count(), 4000);
        assert!((h.sum() - 2000.0).abs() < 1e-6);
    }
}
