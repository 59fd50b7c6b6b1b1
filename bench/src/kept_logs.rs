//! The master's kept logs at a large cluster's size: the time to write what one driver's end
//! ships (its stdout and stderr) with many streams already kept, in-process through the
//! master's own `KeptLogs` on a real file.

use std::time::Instant;

use anyhow::Result;
use hearth_common::proto::{LogStream, LogTail};
use hearth_master::kept_logs::{DEFAULT_LIMIT_BYTES, KeptLogs};

use crate::{
    figures::Figure,
    stats::{Stats, Unit},
};

/// A driver's last output, as its worker ships it when it ends.
fn ended(n: usize, stream: LogStream) -> (String, LogTail) {
    let data = format!("driver {n} done\n").into_bytes();
    (
        "worker-20261121000000-10.0.0.1-8081".into(),
        LogTail {
            process: format!("driver-20261121000000-{n:07}"),
            attempt: 1,
            stream: stream as i32,
            offset: 0,
            size: data.len() as u64,
            data,
            ended: true,
            keep: 0,
        },
    )
}

/// `streams` streams kept (two per driver, written a thousand at a time), then `runs` times
/// one more driver's end: the time of that one write, unsynced as the master's writer makes
/// all but one a second.
pub async fn ended_driver_at(streams: usize, runs: usize) -> Result<Figure> {
    let dir = tempfile::tempdir()?;
    let kept = KeptLogs::open(dir.path(), DEFAULT_LIMIT_BYTES)?;
    let drivers = streams / 2;
    let filled = Instant::now();
    for first in (0..drivers).step_by(500) {
        let batch = (first..(first + 500).min(drivers))
            .flat_map(|n| [ended(n, LogStream::Stdout), ended(n, LogStream::Stderr)])
            .collect();
        kept.apply_unsynced_now(batch)?;
    }
    kept.sync()?;
    let filled = filled.elapsed();
    let mut each = Vec::with_capacity(runs);
    for n in drivers..drivers + runs {
        let batch = vec![ended(n, LogStream::Stdout), ended(n, LogStream::Stderr)];
        let t0 = Instant::now();
        kept.apply_unsynced_now(batch)?;
        each.push(t0.elapsed());
    }
    let usage = kept.usage();
    anyhow::ensure!(
        usage.streams as usize == streams + 2 * runs,
        "{} streams kept, {} expected",
        usage.streams,
        streams + 2 * runs
    );
    let stats = Stats::of_durations(&each).ok_or_else(|| anyhow::anyhow!("no runs"))?;
    Figure::new(
        format!("kept logs: one driver's end written, {streams} streams kept"),
        Unit::Millis,
        each.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        "flat in the streams kept",
        format!(
            "KeptLogs on a real file, stdout and stderr in one unsynced transaction as the master's writer makes them; filling {streams} streams took {:.1} s; p99 {:.3} ms",
            filled.as_secs_f64(),
            stats.p99
        ),
    )
}
