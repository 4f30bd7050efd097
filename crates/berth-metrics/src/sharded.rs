//! Metric families whose values are split into per-CPU shards.
//!
//! A counter that every request adds to is one cache line written by every
//! core: each add takes the line away from the core that wrote it last, and
//! with a dozen such adds per request (requests, a latency bucket and sum,
//! bytes, the in-flight gauge, the storage operations under it) the line
//! transfers cost the request path more than the counting itself. Here each
//! CPU adds to its own block of cells (cache-line aligned, so no two CPUs
//! share a line) and a scrape sums the blocks. The cells of a family's series
//! sit next to each other in its block, so a family costs a few lines per
//! shard, not a padded line per series.
//!
//! Shards are picked by the CPU a thread is running on rather than by thread:
//! the number of threads is not bounded (tokio's blocking pool grows and
//! shrinks), the number of CPUs is. A thread that moves between reading its
//! CPU and adding still adds atomically, to a line another CPU may hold for a
//! moment: a slower add, never a lost one. Adds wrap, so a gauge whose
//! increment and decrement land on different shards still sums exactly.

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Cells per line: 128 bytes, since x86 fetches lines in adjacent pairs.
const LINE_CELLS: usize = 16;

#[repr(C, align(128))]
struct Line([AtomicU64; LINE_CELLS]);

/// At most this many shards: past it CPUs share shards (still exact), and
/// a large machine does not pay hundreds of copies of every family.
const MAX_SHARDS: usize = 16;

/// Which shard the calling thread should add to now: its CPU (any number;
/// [`Cells`] reduce it to one of their shards).
#[inline]
pub fn shard() -> usize {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sched_getcpu takes no arguments and touches no memory of ours.
        // glibc answers it from the thread's rseq area or the vDSO: no system call.
        let cpu = unsafe { libc::sched_getcpu() };
        if cpu >= 0 {
            return cpu as usize;
        }
    }
    thread_index()
}

/// A fallback shard per thread, given out in turn as threads first count.
fn thread_index() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static INDEX: usize = NEXT.fetch_add(1, Relaxed));
    INDEX.with(|i| *i)
}

fn shard_count() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .next_power_of_two()
        .min(MAX_SHARDS)
}

/// `len` u64 cells, one copy per shard; the value of a cell is the wrapping
/// sum of its copies.
struct Cells {
    len: usize,
    lines_per_shard: usize,
    /// Shard count - 1 (a power of two).
    mask: usize,
    lines: Box<[Line]>,
}

impl Cells {
    fn new(len: usize) -> Cells {
        let shards = shard_count();
        let lines_per_shard = len.div_ceil(LINE_CELLS).max(1);
        Cells {
            len,
            lines_per_shard,
            mask: shards - 1,
            lines: (0..shards * lines_per_shard)
                .map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    #[inline]
    fn cell(&self, shard: usize, i: usize) -> &AtomicU64 {
        assert!(i < self.len, "cell {i} of {}", self.len);
        let line = (shard & self.mask) * self.lines_per_shard + i / LINE_CELLS;
        &self.lines[line].0[i % LINE_CELLS]
    }

    #[inline]
    fn add(&self, shard: usize, i: usize, v: u64) {
        self.cell(shard, i).fetch_add(v, Relaxed);
    }

    fn sum(&self, i: usize) -> u64 {
        (0..=self.mask).fold(0u64, |acc, s| acc.wrapping_add(self.cell(s, i).load(Relaxed)))
    }
}

/// Counters, one per label set, all created up front and found by index.
#[derive(Clone)]
pub struct CounterFamily<L>(Arc<Family<L>>);

struct Family<L> {
    labels: Vec<L>,
    cells: Cells,
}

impl<L> CounterFamily<L> {
    /// One counter per label set, in this order (also the order of the output).
    pub fn new(labels: Vec<L>) -> CounterFamily<L> {
        let cells = Cells::new(labels.len());
        CounterFamily(Arc::new(Family { labels, cells }))
    }

    /// Adds `v` to counter `i`, in `shard` (see [`shard`]).
    #[inline]
    pub fn inc_by(&self, shard: usize, i: usize, v: u64) {
        self.0.cells.add(shard, i, v);
    }

    pub fn get(&self, i: usize) -> u64 {
        self.0.cells.sum(i)
    }
}

impl<L> std::fmt::Debug for CounterFamily<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterFamily")
            .field("series", &self.0.labels.len())
            .finish()
    }
}

impl<L> TypedMetric for CounterFamily<L> {
    const TYPE: MetricType = MetricType::Counter;
}

impl<L: EncodeLabelSet + Send + Sync + 'static> EncodeMetric for CounterFamily<L> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (i, labels) in self.0.labels.iter().enumerate() {
            encoder
                .encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(&self.get(i), None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// A gauge without labels (requests in flight): increments and decrements
/// may land on different shards; the wrapping sum is exact.
#[derive(Clone)]
pub struct Gauge(Arc<Cells>);

impl Gauge {
    pub fn new() -> Gauge {
        Gauge(Arc::new(Cells::new(1)))
    }

    #[inline]
    pub fn inc(&self, shard: usize) {
        self.0.add(shard, 0, 1);
    }

    #[inline]
    pub fn dec(&self, shard: usize) {
        self.0.add(shard, 0, u64::MAX); // -1, wrapping
    }

    pub fn get(&self) -> i64 {
        self.0.sum(0) as i64
    }
}

impl Default for Gauge {
    fn default() -> Gauge {
        Gauge::new()
    }
}

impl std::fmt::Debug for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Gauge").field(&self.get()).finish()
    }
}

impl TypedMetric for Gauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for Gauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// Histograms of durations, one per label set, with the same explicit
/// buckets (upper bounds in seconds). A series is its bucket counts (not
/// cumulative; the last is +Inf) and its sum in nanoseconds, side by side.
#[derive(Clone)]
pub struct HistogramFamily<L>(Arc<Histograms<L>>);

struct Histograms<L> {
    labels: Vec<L>,
    bounds: &'static [f64],
    bounds_ns: Box<[u64]>,
    cells: Cells,
}

impl<L> HistogramFamily<L> {
    pub fn new(bounds: &'static [f64], labels: Vec<L>) -> HistogramFamily<L> {
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bucket bounds must ascend");
        let cells = Cells::new(labels.len() * (bounds.len() + 2));
        HistogramFamily(Arc::new(Histograms {
            labels,
            bounds,
            bounds_ns: bounds.iter().map(|b| (b * 1e9) as u64).collect(),
            cells,
        }))
    }

    /// Cells per series: the buckets, +Inf, the sum.
    fn stride(&self) -> usize {
        self.0.bounds.len() + 2
    }

    /// Counts `d` in histogram `i`, in `shard` (see [`shard`]).
    #[inline]
    pub fn observe(&self, shard: usize, i: usize, d: Duration) {
        let h = &self.0;
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let bucket = h.bounds_ns.iter().position(|b| ns <= *b).unwrap_or(h.bounds_ns.len());
        let base = i * self.stride();
        h.cells.add(shard, base + bucket, 1);
        h.cells.add(shard, base + h.bounds.len() + 1, ns);
    }

    /// Histogram `i`: per bucket (not cumulative) with its upper bound, the
    /// count, and the sum in nanoseconds.
    fn snapshot(&self, i: usize) -> (Vec<(f64, u64)>, u64, u64) {
        let h = &self.0;
        let base = i * self.stride();
        let mut count = 0u64;
        let buckets = (0..=h.bounds.len())
            .map(|b| {
                let n = h.cells.sum(base + b);
                count = count.wrapping_add(n);
                (h.bounds.get(b).copied().unwrap_or(f64::INFINITY), n)
            })
            .collect();
        (buckets, count, h.cells.sum(base + h.bounds.len() + 1))
    }

    /// Observations so far in histogram `i`.
    pub fn count(&self, i: usize) -> u64 {
        self.snapshot(i).1
    }
}

impl<L> std::fmt::Debug for HistogramFamily<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistogramFamily")
            .field("bounds", &self.0.bounds)
            .field("series", &self.0.labels.len())
            .finish()
    }
}

impl<L> TypedMetric for HistogramFamily<L> {
    const TYPE: MetricType = MetricType::Histogram;
}

impl<L: EncodeLabelSet + Send + Sync + 'static> EncodeMetric for HistogramFamily<L> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (i, labels) in self.0.labels.iter().enumerate() {
            let (buckets, count, sum_ns) = self.snapshot(i);
            encoder.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                sum_ns as f64 / 1e9,
                count,
                &buckets,
                None,
            )?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn render(reg: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, reg).unwrap();
        out
    }

    #[test]
    fn shards_sum_up_and_series_are_separate() {
        let c = CounterFamily::new(vec![[("k", "a")], [("k", "b")]]);
        // Every shard a CPU number can map to, and beyond.
        for shard in 0..40 {
            c.inc_by(shard, 0, 2);
        }
        c.inc_by(shard(), 1, 5);
        assert_eq!((c.get(0), c.get(1)), (80, 5));
        let mut reg = Registry::default();
        reg.register("t", "test", c.clone());
        let out = render(&reg);
        assert!(out.contains("# TYPE t_total counter"), "{out}");
        assert!(out.contains("t_total{k=\"a\"} 80\n"), "{out}");
        assert!(out.contains("t_total{k=\"b\"} 5\n"), "{out}");
    }

    #[test]
    fn a_gauge_moved_between_shards_stays_exact() {
        let g = Gauge::new();
        g.inc(0);
        g.inc(0);
        g.dec(1);
        assert_eq!(g.get(), 1);
        g.dec(3);
        g.dec(2);
        assert_eq!(g.get(), -1);
        let mut reg = Registry::default();
        reg.register("g", "test", g.clone());
        assert!(render(&reg).contains("g -1\n"));
    }

    #[test]
    fn counting_from_many_threads_loses_nothing() {
        let c = CounterFamily::new(vec![[("k", "a")]]);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| (0..10_000).for_each(|_| c.inc_by(shard(), 0, 1)));
            }
        });
        assert_eq!(c.get(0), 80_000);
    }

    #[test]
    fn histograms_are_cumulative_and_bounds_inclusive() {
        let h = HistogramFamily::new(&[0.001, 0.01], vec![[("k", "a")], [("k", "b")]]);
        h.observe(0, 1, Duration::from_micros(500));
        h.observe(1, 1, Duration::from_millis(1));
        h.observe(2, 1, Duration::from_millis(5));
        h.observe(3, 1, Duration::from_secs(3));
        let (buckets, count, sum_ns) = h.snapshot(1);
        assert_eq!(buckets, vec![(0.001, 2), (0.01, 1), (f64::INFINITY, 1)]);
        assert_eq!((count, sum_ns), (4, 3_006_500_000));
        assert_eq!(h.count(0), 0, "series do not share cells");
        let mut reg = Registry::default();
        reg.register("t", "test", h.clone());
        let out = render(&reg);
        for line in [
            "# TYPE t histogram",
            "t_sum{k=\"b\"} 3.0065\n",
            "t_count{k=\"b\"} 4\n",
            "t_bucket{k=\"b\",le=\"0.001\"} 2\n",
            "t_bucket{k=\"b\",le=\"0.01\"} 3\n",
            "t_bucket{k=\"b\",le=\"+Inf\"} 4\n",
            "t_count{k=\"a\"} 0\n",
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
    }

    /// The output is the same, line for line, as prometheus-client's own
    /// families of counters, gauges and histograms with the same values.
    #[test]
    fn encoded_as_prometheus_client_families_are() {
        use prometheus_client::metrics::counter::Counter;
        use prometheus_client::metrics::family::Family;
        type L = [(&'static str, &'static str); 2];
        let labels: Vec<L> = vec![
            [("route", "blob"), ("method", "GET")],
            [("route", "tags"), ("method", "PUT")],
        ];
        let (ours, theirs) = (&mut Registry::with_prefix("berth"), &mut Registry::with_prefix("berth"));

        let c = CounterFamily::new(labels.clone());
        let f = Family::<L, Counter>::default();
        for (i, l) in labels.iter().enumerate() {
            c.inc_by(i, i, 7 + i as u64);
            f.get_or_create(l).inc_by(7 + i as u64);
        }
        ours.register("requests", "Requests", c);
        theirs.register("requests", "Requests", f);

        let g = Gauge::new();
        let pg = prometheus_client::metrics::gauge::Gauge::<i64>::default();
        g.inc(1);
        g.inc(2);
        g.dec(3);
        pg.set(1);
        ours.register("in_flight", "In flight", g);
        theirs.register("in_flight", "In flight", pg);

        const B: &[f64] = &[0.0005, 0.25, 10.0];
        let h = HistogramFamily::new(B, labels.clone());
        let fh = Family::<L, crate::Histogram, _>::new_with_constructor(|| crate::Histogram::new(B));
        for (i, l) in labels.iter().enumerate() {
            for d in [
                Duration::from_micros(300),
                Duration::from_millis(300 * i as u64),
                Duration::from_secs(20),
            ] {
                h.observe(i + 5, i, d);
                fh.get_or_create(l).observe(d);
            }
        }
        let unit = prometheus_client::registry::Unit::Seconds;
        ours.register_with_unit("duration", "Time", unit.clone(), h);
        theirs.register_with_unit("duration", "Time", unit, fh);

        // A Family's series come in hash order; ours in index order.
        let sorted = |r: &Registry| {
            let mut lines: Vec<String> = render(r).lines().map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted(ours), sorted(theirs));
        assert!(render(ours).contains("berth_duration_seconds_sum{route=\"tags\",method=\"PUT\"} 20.3003\n"));
    }
}
