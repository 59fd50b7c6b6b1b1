//! What the master measures about itself: latency histograms for `/metrics`, and the
//! utilisation samples the UI's chart is drawn from.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::state::State;

/// Upper bounds of the latency buckets, in seconds: 50 µs to 10 s.
pub const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    10.0,
];

/// Most distinct RPC names tracked; anything past it is counted as `other`, so a client
/// calling made-up methods cannot grow the master's memory.
const MAX_RPC_NAMES: usize = 64;

/// A cumulative latency histogram, updated without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Count per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram's figures at one moment, cumulative as Prometheus wants them.
#[derive(Debug, Clone)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations at or below it)` per bucket, then `+Inf`.
    pub cumulative: Vec<(Option<f64>, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let mut cumulative = Vec::with_capacity(BUCKETS.len() + 1);
        for (i, count) in self.counts.iter().enumerate() {
            total += count.load(Ordering::Relaxed);
            cumulative.push((BUCKETS.get(i).copied(), total));
        }
        HistogramSnapshot {
            cumulative,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: total,
        }
    }
}

/// Cluster use at one moment, as the chart plots it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at_ms: i64,
    pub cores_used: u64,
    pub cores: u64,
    pub memory_used_mb: u64,
    pub memory_mb: u64,
}

impl Sample {
    /// Alive workers' offer and use, as the overview counts them.
    pub fn of(state: &State, at_ms: i64) -> Self {
        let mut s = Self {
            at_ms,
            cores_used: 0,
            cores: 0,
            memory_used_mb: 0,
            memory_mb: 0,
        };
        for w in state.alive_workers() {
            s.cores += u64::from(w.cores);
            s.cores_used += u64::from(w.cores_used);
            s.memory_mb += w.memory_mb;
            s.memory_used_mb += w.memory_used_mb;
        }
        s
    }
}

/// The master's own measurements, shared by the actor, the gRPC side and the web side.
#[derive(Debug)]
pub struct Telemetry {
    /// One scheduling pass of the actor.
    pub schedule: Histogram,
    /// One write of the state file (a turn's changes, fsync'd).
    pub store_write: Histogram,
    /// Writes of the state file that failed (a full or read-only volume).
    pub store_failures: std::sync::atomic::AtomicU64,
    rpcs: Mutex<BTreeMap<String, Histogram>>,
    samples: Mutex<VecDeque<Sample>>,
    sample_capacity: usize,
}

impl Telemetry {
    /// Keeps the last `sample_capacity` utilisation samples.
    pub fn new(sample_capacity: usize) -> Self {
        Self {
            schedule: Histogram::default(),
            store_write: Histogram::default(),
            store_failures: Default::default(),
            rpcs: Mutex::new(BTreeMap::new()),
            samples: Mutex::new(VecDeque::with_capacity(sample_capacity)),
            sample_capacity: sample_capacity.max(1),
        }
    }

    /// Records one call of the gRPC method at `path` (`/package.Service/Method`).
    pub fn observe_rpc(&self, path: &str, elapsed: Duration) {
        let name = rpc_name(path);
        let mut rpcs = lock(&self.rpcs);
        if let Some(h) = rpcs.get(name) {
            h.observe(elapsed);
            return;
        }
        let name = if rpcs.len() < MAX_RPC_NAMES {
            name
        } else {
            "other"
        };
        rpcs.entry(name.to_string()).or_default().observe(elapsed);
    }

    /// Each RPC's name and histogram, by name.
    pub fn rpc_snapshots(&self) -> Vec<(String, HistogramSnapshot)> {
        lock(&self.rpcs)
            .iter()
            .map(|(name, h)| (name.clone(), h.snapshot()))
            .collect()
    }

    pub fn push_sample(&self, sample: Sample) {
        let mut samples = lock(&self.samples);
        if samples.len() == self.sample_capacity {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Samples taken at or after `since_ms`, oldest first.
    pub fn samples_since(&self, since_ms: i64) -> Vec<Sample> {
        lock(&self.samples)
            .iter()
            .filter(|s| s.at_ms >= since_ms)
            .copied()
            .collect()
    }
}

/// `Service/Method` of a gRPC path; anything else is `other`.
fn rpc_name(path: &str) -> &str {
    let name = path.strip_prefix("/hearth.v1.").unwrap_or("");
    let ok = !name.is_empty()
        && name.len() <= 80
        && name.split('/').count() == 2
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'/');
    if ok { name } else { "other" }
}

/// Metrics stay usable if a thread panicked while holding the lock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_count_everything() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(30));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative.first(), Some(&(Some(0.000_05), 1)));
        assert_eq!(s.cumulative.last(), Some(&(None, 3)));
        let at_1ms = s.cumulative.iter().find(|(b, _)| *b == Some(0.001));
        assert_eq!(at_1ms.map(|(_, n)| *n), Some(2));
        assert!((s.sum_seconds - 30.000_71).abs() < 1e-6);
    }

    #[test]
    fn rpc_names_are_bounded() {
        let t = Telemetry::new(4);
        t.observe_rpc("/hearth.v1.ClientService/SubmitDriver", Duration::ZERO);
        t.observe_rpc("/grpc.health.v1.Health/Check", Duration::ZERO);
        t.observe_rpc("/hearth.v1.ClientService/../../x", Duration::ZERO);
        for i in 0..100 {
            t.observe_rpc(&format!("/hearth.v1.ClientService/M{i}"), Duration::ZERO);
        }
        let names: Vec<String> = t.rpc_snapshots().into_iter().map(|(n, _)| n).collect();
        assert!(names.len() <= MAX_RPC_NAMES + 1);
        assert!(names.contains(&"ClientService/SubmitDriver".to_string()));
        assert!(names.contains(&"other".to_string()));
    }

    #[test]
    fn samples_keep_the_newest() {
        let t = Telemetry::new(3);
        for at_ms in 0..5 {
            t.push_sample(Sample {
                at_ms,
                cores_used: 0,
                cores: 1,
                memory_used_mb: 0,
                memory_mb: 1,
            });
        }
        let at: Vec<i64> = t.samples_since(0).iter().map(|s| s.at_ms).collect();
        assert_eq!(at, vec![2, 3, 4]);
        assert_eq!(t.samples_since(4).len(), 1);
    }
}
