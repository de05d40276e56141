//! Statistics with Python Veltix's definitions (`veltix/benchmark/stats.py`), plus the clock
//! shared by the bench's processes.

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process of this machine, so a
/// timestamp taken in the server process can be subtracted from one taken by the clients.
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

/// Percentile by linear interpolation between closest ranks, `rank = p/100 · (n−1)` (numpy's
/// default, Python Veltix's `stats.percentile`). `sorted` must be sorted; empty gives 0.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Arithmetic mean (0 for no samples).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Sample standard deviation (`statistics.stdev`; 0 below two samples).
pub fn stdev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    let ss: f64 = v.iter().map(|x| (x - m) * (x - m)).sum();
    (ss / (v.len() - 1) as f64).sqrt()
}

/// Median (`statistics.median`: mean of the two middle values for an even count).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Python's latency jitter: sample stdev of |x[i] − x[i−1]| over consecutive samples (in the
/// order they were taken).
pub fn jitter(v: &[f64]) -> f64 {
    let d: Vec<f64> = v.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    stdev(&d)
}

/// Latency summary of samples in milliseconds (in the order taken), with the field names of
/// Python Veltix's latency result plus p90 and p99.9.
pub fn latency_summary(samples_ms: &[f64], out: &mut super::Metrics) {
    let mut s = samples_ms.to_vec();
    s.sort_by(f64::total_cmp);
    out.push("avg_ms", mean(&s));
    out.push("p50_ms", percentile(&s, 50.0));
    out.push("p90_ms", percentile(&s, 90.0));
    out.push("p95_ms", percentile(&s, 95.0));
    out.push("p99_ms", percentile(&s, 99.0));
    out.push("p999_ms", percentile(&s, 99.9));
    out.push("min_ms", s.first().copied().unwrap_or(0.0));
    out.push("max_ms", s.last().copied().unwrap_or(0.0));
    out.push("stdev_ms", stdev(&s));
    out.push("jitter_ms", jitter(samples_ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_linear_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert!((percentile(&v, 50.0) - 2.5).abs() < 1e-12);
        assert!((percentile(&v, 90.0) - 3.7).abs() < 1e-12);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn median_stdev_jitter() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!((stdev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) - 2.138089935).abs() < 1e-6);
        assert_eq!(jitter(&[1.0, 2.0, 3.0]), 0.0);
    }
}
