//! How fast the master notices a lost worker: one killed outright, and one silently stopped.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};
use hearth_common::proto::{DriverSpec, DriverState, WorkerState};
use nix::sys::signal::Signal;

use crate::{
    figures::Figure,
    procs::{self, Master, Proc},
    stats::{Stats, Unit},
};

/// `runs` times: a supervised driver runs on one of 2 real workers; that worker is SIGKILLed.
/// The figure is the time from the kill until the master lists the worker DEAD and has placed
/// the driver on the other worker (read from the driver's watch stream).
pub async fn worker_kill(binary: &Path, runs: usize) -> Result<Figure> {
    let mut master = Master::start(binary, &[])?;
    let client = master.client().await?;
    let mut workers: Vec<(String, Proc)> = Vec::new();
    let mut spawned = 0;
    let mut times = Vec::new();
    let mut running_again = Vec::new();
    for n in 0..runs {
        while workers.len() < 2 {
            let name = format!("kill-{spawned}");
            spawned += 1;
            workers.push((name.clone(), master.spawn_worker(&name, 2, "2g")?));
            wait_alive(&client, &name).await?;
        }
        let spec = DriverSpec {
            name: format!("supervised-{n}"),
            command: vec!["sleep".into(), "600".into()],
            cores: 1,
            memory_mb: 64,
            supervise: true,
            max_retries: 100,
            ..Default::default()
        };
        let id = client.submit(spec).await?;
        let mut watch = client.watch(&id).await?;
        let first = loop {
            let d = watch
                .message()
                .await?
                .ok_or_else(|| anyhow!("watch ended"))?;
            if d.state == DriverState::Running as i32 {
                break d;
            }
        };
        let list = client.workers().await?;
        let victim_name = list
            .iter()
            .find(|w| w.id == first.worker_id)
            .map(|w| w.name.clone())
            .ok_or_else(|| anyhow!("the driver's worker is not listed"))?;
        let at = workers
            .iter()
            .position(|(name, _)| *name == victim_name)
            .ok_or_else(|| anyhow!("the driver runs on a worker of another run"))?;
        let (_, victim) = workers.remove(at);
        let t0 = Instant::now();
        victim.signal(Signal::SIGKILL);
        let mut placed = None;
        loop {
            let d = tokio::time::timeout(Duration::from_secs(20), watch.message())
                .await
                .map_err(|_| anyhow!("the driver was not placed again within 20 s"))??
                .ok_or_else(|| anyhow!("watch ended"))?;
            let elsewhere = !d.worker_id.is_empty() && d.worker_id != first.worker_id;
            if elsewhere && placed.is_none() {
                placed = Some(t0.elapsed());
            }
            if elsewhere && d.state == DriverState::Running as i32 {
                running_again.push(t0.elapsed());
                break;
            }
        }
        let dead = client
            .workers()
            .await?
            .iter()
            .any(|w| w.id == first.worker_id && w.state == WorkerState::Dead as i32);
        anyhow::ensure!(dead, "the killed worker is DEAD once its driver is placed");
        times.push(placed.unwrap_or_default());
        drop(victim);
        client.kill(&id).await?;
    }
    let again = Stats::of_durations(&running_again).ok_or_else(|| anyhow!("no runs"))?;
    Figure::new(
        "worker SIGKILL → DEAD and its supervised driver placed elsewhere",
        Unit::Millis,
        times.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        "≤ 50 ms",
        format!(
            "RUNNING again on the other worker after median {:.1} ms",
            again.median
        ),
    )
}

async fn wait_alive(client: &hearth_common::client::Client, name: &str) -> Result<()> {
    procs::wait_workers(client, "worker ALIVE", |w| {
        procs::named_in(w, name, WorkerState::Alive)
    })
    .await
}

/// `rounds` times: 4 real workers are stopped with SIGSTOP at once (their connections stay
/// open, they just fall silent); the time until the master lists each DEAD, read every 10 ms.
/// `timeout` is the master's `--worker-timeout` (the default, 10 s, in the full run).
pub async fn worker_stop(binary: &Path, rounds: usize, timeout: Duration) -> Result<Figure> {
    let timeout_arg = format!("{}ms", timeout.as_millis());
    let mut master = Master::start(binary, &["--worker-timeout", &timeout_arg])?;
    let client = master.client().await?;
    let mut times = Vec::new();
    for round in 0..rounds {
        let mut stopped = Vec::new();
        for n in 0..4 {
            let name = format!("stop-{round}-{n}");
            let proc = master.spawn_worker(&name, 1, "1g")?;
            wait_alive(&client, &name).await?;
            stopped.push((name, proc));
        }
        // Let heartbeats settle into their rhythm, at different phases per worker.
        tokio::time::sleep(timeout / 2).await;
        let t0 = Instant::now();
        for (_, proc) in &stopped {
            proc.signal(Signal::SIGSTOP);
        }
        let mut dead: Vec<Option<Duration>> = vec![None; stopped.len()];
        let deadline = t0 + timeout * 3;
        while dead.iter().any(Option::is_none) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "stopped workers not DEAD in 3x the timeout"
            );
            let list = client.workers().await?;
            for (i, (name, _)) in stopped.iter().enumerate() {
                if procs::named_in(&list, name, WorkerState::Dead) && dead[i].is_none() {
                    dead[i] = Some(t0.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        times.extend(dead.into_iter().flatten());
    }
    let limit = timeout.as_secs_f64() * 1000.0 + 1000.0;
    Figure::new(
        "worker silently stopped (SIGSTOP) → DEAD",
        Unit::Millis,
        times.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        "≤ default timeout + 1 s",
        format!(
            "--worker-timeout {} ms, so the limit is {limit:.0} ms; 4 workers stopped together per round",
            timeout.as_millis()
        ),
    )
}

/// What `--at-most-one` costs: `rounds` times, a plain supervised driver and an `--at-most-one`
/// one run on a real worker that is then frozen (SIGSTOP); the time from the freeze until each
/// runs again on the other worker. The plain one moves once the worker is declared lost (its
/// timeout after the last heartbeat); the other waits for the lease the frozen worker's keepers
/// enforce, which ends at about the same time, plus a margin of 1 s and 1 % of the timeout.
pub async fn at_most_one_relaunch(
    binary: &Path,
    rounds: usize,
    timeout: Duration,
) -> Result<Figure> {
    let timeout_arg = format!("{}ms", timeout.as_millis());
    let mut master = Master::start(binary, &["--worker-timeout", &timeout_arg])?;
    let client = master.client().await?;
    let mut plain_times = Vec::new();
    let mut once_times = Vec::new();
    for round in 0..rounds {
        let frozen_name = format!("freeze-{round}");
        let frozen = master.spawn_worker(&frozen_name, 2, "1g")?;
        wait_alive(&client, &frozen_name).await?;
        let spec = |name: String, at_most_one: bool| DriverSpec {
            name,
            command: vec!["sleep".into(), "600".into()],
            cores: 1,
            memory_mb: 64,
            supervise: true,
            max_retries: 10,
            at_most_one,
            ..Default::default()
        };
        let plain = client.submit(spec(format!("plain-{round}"), false)).await?;
        let once = client.submit(spec(format!("once-{round}"), true)).await?;
        let mut watches = Vec::new();
        for id in [&plain, &once] {
            let mut watch = client.watch(id).await?;
            loop {
                let d = watch
                    .message()
                    .await?
                    .ok_or_else(|| anyhow!("watch ended"))?;
                if d.state == DriverState::Running as i32 {
                    break;
                }
            }
            watches.push(watch);
        }
        let spare_name = format!("spare-{round}");
        let spare = master.spawn_worker(&spare_name, 2, "1g")?;
        wait_alive(&client, &spare_name).await?;
        // Heartbeats at their rhythm, so the freeze lands at a random phase of them.
        tokio::time::sleep(timeout / 3).await;
        let t0 = Instant::now();
        frozen.signal(Signal::SIGSTOP);
        for (i, watch) in watches.iter_mut().enumerate() {
            loop {
                let d =
                    tokio::time::timeout(timeout * 4 + Duration::from_secs(10), watch.message())
                        .await
                        .map_err(|_| anyhow!("not running elsewhere in time"))??
                        .ok_or_else(|| anyhow!("watch ended"))?;
                if d.attempt >= 2 && d.state == DriverState::Running as i32 {
                    if i == 0 {
                        plain_times.push(t0.elapsed());
                    } else {
                        once_times.push(t0.elapsed());
                    }
                    break;
                }
            }
        }
        frozen.signal(Signal::SIGKILL);
        client.kill(&plain).await?;
        client.kill(&once).await?;
        drop(spare);
    }
    let plain = Stats::of_durations(&plain_times).ok_or_else(|| anyhow!("no runs"))?;
    let once = Stats::of_durations(&once_times).ok_or_else(|| anyhow!("no runs"))?;
    Figure::new(
        "--at-most-one: worker frozen (SIGSTOP) → driver running elsewhere",
        Unit::Millis,
        once_times
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect(),
        "≤ plain + 1 s + 1 % of the timeout",
        format!(
            "--worker-timeout {} ms; a plain supervised driver beside it: median {:.0} ms, so \
             --at-most-one adds median {:.0} ms",
            timeout.as_millis(),
            plain.median,
            once.median - plain.median
        ),
    )
}
