//! Acknowledged submissions per second: every acknowledgement is on disk (fsync'd) first.

use std::{
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};
use hearth_common::proto::DriverSpec;

use crate::{
    figures::Figure,
    procs::Master,
    stats::{Stats, Unit},
};

const CLIENTS: usize = 16;

/// `runs` windows of `window` each: 16 clients, each on its own connection, submit drivers
/// back to back (no workers, so they wait); the figure is acknowledged submissions per second.
pub async fn submissions(binary: &Path, runs: usize, window: Duration) -> Result<Figure> {
    let master = Master::start(binary, &["--max-waiting", "1000000"])?;
    let fsync = fsync_cost(&master.dir.path().join("fsync-probe"), 200)?;
    let mut rates = Vec::new();
    let mut latencies = Vec::new();
    for run in 0..runs {
        let mut tasks = tokio::task::JoinSet::new();
        let t0 = Instant::now();
        let end = t0 + window;
        for c in 0..CLIENTS {
            let client = master.client().await?;
            tasks.spawn(async move {
                let mut done = 0usize;
                let mut times = Vec::new();
                while Instant::now() < end {
                    let spec = DriverSpec {
                        name: format!("durable-{run}-{c}-{done}"),
                        command: vec!["true".into()],
                        cores: 1,
                        memory_mb: 16,
                        ..Default::default()
                    };
                    let at = Instant::now();
                    client.submit(spec).await?;
                    times.push(at.elapsed());
                    done += 1;
                }
                anyhow::Ok(times)
            });
        }
        let mut acked = 0;
        while let Some(done) = tasks.join_next().await {
            let times = done??;
            acked += times.len();
            latencies.extend(times);
        }
        rates.push(acked as f64 / t0.elapsed().as_secs_f64());
    }
    let latency = Stats::of_durations(&latencies).ok_or_else(|| anyhow!("no submissions"))?;
    Figure::new(
        "durable submissions/s (acknowledged after fsync), 16 concurrent clients",
        Unit::PerSecond,
        rates,
        "≥ 5,000/s",
        format!(
            "{:.1} s windows; each call median {:.2} ms, p99 {:.2} ms; one 4 KiB write + fsync on this disk: median {:.2} ms",
            window.as_secs_f64(),
            latency.median,
            latency.p99,
            fsync.median
        ),
    )
}

/// What one small write and `fsync` cost on the disk holding `path`.
fn fsync_cost(path: &Path, runs: usize) -> Result<Stats> {
    let mut file = std::fs::File::create(path)?;
    let block = [7u8; 4096];
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        file.write_all(&block)?;
        file.sync_all()?;
        times.push(t0.elapsed());
    }
    std::fs::remove_file(path)?;
    Stats::of_durations(&times).ok_or_else(|| anyhow!("no fsync measured"))
}
