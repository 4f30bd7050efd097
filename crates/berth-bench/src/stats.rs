//! Latency percentiles.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Summarises latencies given in microseconds (sorts them in place).
pub fn latency(us: &mut [u64]) -> Latency {
    if us.is_empty() {
        return Latency::default();
    }
    us.sort_unstable();
    // Nearest-rank percentile.
    let pct = |p: f64| {
        let rank = ((p / 100.0) * us.len() as f64).ceil() as usize;
        us[rank.clamp(1, us.len()) - 1] as f64 / 1000.0
    };
    let sum: u128 = us.iter().map(|&v| v as u128).sum();
    Latency {
        p50_ms: pct(50.0),
        p99_ms: pct(99.0),
        max_ms: *us.last().unwrap() as f64 / 1000.0,
        mean_ms: sum as f64 / us.len() as f64 / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().map(|x| x * 1000).collect();
        let l = latency(&mut v);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(l.mean_ms, 50.5);
        assert_eq!(latency(&mut []).p99_ms, 0.0);
    }
}
