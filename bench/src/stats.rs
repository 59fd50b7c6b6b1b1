//! Order statistics of a set of measured values.

use std::time::Duration;

/// What a figure's values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Millis,
    PerSecond,
    /// Percent of one core.
    CorePercent,
    MiB,
    Percent,
    /// Percentage points.
    Points,
    Seconds,
    /// A plain ratio.
    Ratio,
}

impl Unit {
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Millis => format!("{value:.3} ms"),
            Unit::PerSecond => format!("{value:.0}/s"),
            Unit::CorePercent => format!("{value:.2} %"),
            Unit::MiB => format!("{value:.1} MiB"),
            Unit::Percent => format!("{value:.1} %"),
            Unit::Points => format!("{value:.2} pp"),
            Unit::Seconds => format!("{value:.0} s"),
            Unit::Ratio => format!("{value:.2}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Stats {
    /// `None` for no samples.
    pub fn of(mut samples: Vec<f64>) -> Option<Self> {
        samples.sort_unstable_by(f64::total_cmp);
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

    /// Durations, in milliseconds.
    pub fn of_durations(samples: &[Duration]) -> Option<Self> {
        Self::of(samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_known_set() {
        let s = Stats::of((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!((s.min, s.max, s.runs), (1.0, 100.0, 100));
        assert_eq!(s.median, 51.0);
        assert_eq!(s.p99, 99.0);
        assert!(Stats::of(Vec::new()).is_none());
        let ms = Stats::of_durations(&[Duration::from_micros(1500)]).unwrap();
        assert_eq!(ms.median, 1.5);
    }
}
