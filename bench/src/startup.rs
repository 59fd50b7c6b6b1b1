//! How fast workers join, and what an idle master holds.

use std::time::{Duration, Instant};

use anyhow::Result;
use hearth_common::proto::WorkerState;

use crate::{
    figures::Figure,
    procs::{self, Master},
    stats::Unit,
};

const TOGETHER: usize = 4;

/// `rounds` times: 4 `hearth worker` processes started together; the time from each one's
/// spawn until the master lists it ALIVE (polled every millisecond over gRPC). The figure is
/// the time until all four are ALIVE.
pub async fn worker_start(binary: &std::path::Path, rounds: usize) -> Result<Figure> {
    let mut master = Master::start(binary, &[])?;
    let client = master.client().await?;
    let mut all = Vec::new();
    let mut each = Vec::new();
    for round in 0..rounds {
        let mut procs = Vec::new();
        let mut started = Vec::new();
        for n in 0..TOGETHER {
            let name = format!("start-{round}-{n}");
            started.push((name.clone(), Instant::now()));
            procs.push(master.spawn_worker(&name, 1, "1g")?);
        }
        let first = started[0].1;
        let mut alive: Vec<Option<Duration>> = vec![None; TOGETHER];
        let deadline = Instant::now() + Duration::from_secs(20);
        while alive.iter().any(Option::is_none) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "4 workers ALIVE: not within 20 s"
            );
            let workers = client.workers().await?;
            let now = Instant::now();
            for (i, (name, at)) in started.iter().enumerate() {
                if procs::named_in(&workers, name, WorkerState::Alive) && alive[i].is_none() {
                    alive[i] = Some(now - *at);
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let until_all = started
            .iter()
            .zip(&alive)
            .filter_map(|((_, at), up)| up.map(|up| *at - first + up))
            .max()
            .unwrap_or_default();
        all.push(until_all);
        each.extend(alive.into_iter().flatten());
        drop(procs);
        // The next round starts once these are DEAD, so it measures joining alone.
        procs::wait_workers(&client, "workers DEAD", |w| procs::alive(w) == 0).await?;
    }
    let each = crate::stats::Stats::of_durations(&each)
        .ok_or_else(|| anyhow::anyhow!("no worker started"))?;
    Figure::new(
        "worker process start → ALIVE, 4 workers started together",
        Unit::Millis,
        all.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        "≤ 50 ms",
        format!(
            "until the 4th is ALIVE; each worker alone: median {:.1} ms, max {:.1} ms",
            each.median, each.max
        ),
    )
}

/// `runs` fresh masters, each left idle for a second after it answers: its resident memory.
pub async fn idle_rss(binary: &std::path::Path, runs: usize) -> Result<Figure> {
    let mut values = Vec::new();
    let mut peak: f64 = 0.0;
    for _ in 0..runs {
        let master = Master::start(binary, &[])?;
        master.client().await?.workers().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (rss, hwm) = procs::rss_mib(master.proc.pid())?;
        values.push(rss);
        peak = peak.max(hwm);
    }
    Figure::new(
        "master idle RSS",
        Unit::MiB,
        values,
        "≤ 15 MiB",
        format!("VmRSS 1 s after the first answer; peak (VmHWM) {peak:.1} MiB"),
    )
}
