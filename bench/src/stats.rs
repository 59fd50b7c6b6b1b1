//! Order statistics of a set of measured durations.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: Duration,
    pub p99: Duration,
    pub min: Duration,
    pub max: Duration,
    pub runs: usize,
}

impl Stats {
    /// `None` for no samples.
    pub fn of(mut samples: Vec<Duration>) -> Option<Self> {
        samples.sort_unstable();
        let n = samples.len();
        let at = |q: f64| samples[((n as f64 - 1.0) * q).round() as usize];
        (n > 0).then(|| Self {
            median: at(0.5),
            p99: at(0.99),
            min: samples[0],
            max: samples[n - 1],
            runs: n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_known_set() {
        let ms = |n: u64| Duration::from_millis(n);
        let s = Stats::of((1..=100).map(ms).collect()).unwrap();
        assert_eq!((s.min, s.max, s.runs), (ms(1), ms(100), 100));
        assert_eq!(s.median, ms(51));
        assert_eq!(s.p99, ms(99));
        assert!(Stats::of(Vec::new()).is_none());
    }
}
