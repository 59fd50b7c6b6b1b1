//! The master at ten times the cluster: a real master with 10,000 simulated workers
//! heartbeating, a state file holding 1,000,000 completed drivers, every worker running a
//! long driver, and 100,000 drivers waiting over 100 queues. Measured there: durable
//! submissions/s from 64 clients (the 100,000 going in), submit → placed for a driver that
//! fits, the overview page over HTTP, the master's CPU while only heartbeats arrive, and its
//! memory.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};
use hearth_common::proto::{DriverSpec, DriverState, DriverStatus, Register};
use hearth_master::{
    state::{DriverInfo, Effect, Limits, State},
    store::{Changes, Store},
};
use tokio::sync::mpsc;

use crate::{
    figures::Figure,
    procs::{self, Master},
    sim::{self, LONG},
    stats::{Stats, Unit},
};

/// How big the cluster and its history are.
pub struct Size {
    pub workers: usize,
    pub waiting: usize,
    pub retained: usize,
    pub probes: usize,
}

const QUEUES: usize = 100;
const CLIENTS: usize = 64;
/// 2025-01-01, so the retained drivers are older than any the master makes.
const PAST_MS: i64 = 1_735_689_600_000;

/// One completed driver, as the master writes it, for the history to be built from.
fn finished_driver() -> Result<DriverInfo> {
    let mut state = State::new("http://m".into(), PAST_MS, Limits::retaining(10));
    let mut effects: Vec<Effect> = Vec::new();
    let register = Register {
        worker_id: "worker-20250101000000-10.9.0.1-8081".into(),
        name: "w".into(),
        host: "10.9.0.1".into(),
        web_port: 8081,
        cores: 16,
        memory_mb: 65536,
        ..Default::default()
    };
    state.register_worker(
        register,
        "10.9.0.1".into(),
        1,
        tokio::time::Instant::now(),
        PAST_MS,
        &mut effects,
    );
    let id = state.submit(
        DriverSpec {
            name: "nightly-etl".into(),
            command: vec!["spark-job".into(), "--date=2025-01-01".into()],
            cores: 2,
            memory_mb: 4096,
            ..Default::default()
        },
        None,
        PAST_MS,
    )?;
    state.schedule_until_placed(PAST_MS, &mut effects);
    let status = DriverStatus {
        driver_id: id.clone(),
        attempt: 1,
        state: DriverState::Finished as i32,
        exit_code: Some(0),
        message: String::new(),
    };
    state.driver_status(
        "worker-20250101000000-10.9.0.1-8081",
        status,
        PAST_MS + 60_000,
        &mut effects,
    );
    let d = state.driver(&id)?;
    anyhow::ensure!(
        d.state == DriverState::Finished,
        "the template driver did not finish"
    );
    Ok(d.as_ref().clone())
}

/// Writes `count` completed drivers into the history of a state file in `state_dir`, as a
/// master that ran them long ago would have left it.
fn write_history(state_dir: &Path, count: usize) -> Result<()> {
    let template = finished_driver()?;
    let (store, _) = Store::open(state_dir)?;
    store.set_history_limit(u64::MAX);
    const BATCH: usize = 50_000;
    for start in (0..count).step_by(BATCH) {
        let batch: Vec<DriverInfo> = (start..(start + BATCH).min(count))
            .map(|n| {
                let mut d = template.clone();
                // Ten thousand per master start, as ids are numbered.
                d.id = hearth_common::ids::driver_id(
                    PAST_MS + (n / 10_000) as i64 * 1000,
                    (n % 10_000) as u64,
                );
                d
            })
            .collect();
        store.save(&Changes::history_of(batch.iter()))?;
    }
    anyhow::ensure!(
        store.history_len() == count as u64,
        "history holds {}",
        store.history_len()
    );
    Ok(())
}

fn queues_file(path: &Path) -> Result<()> {
    let mut yaml = String::from("queues:\n  - name: fill\n  - name: probe\n");
    for q in 0..QUEUES - 2 {
        yaml.push_str(&format!("  - name: q{q:02}\n"));
    }
    std::fs::write(path, yaml)?;
    Ok(())
}

/// Submits `count` drivers from 64 clients; `spec(n)` makes the n-th. Returns the times
/// (from the start) at which each was acknowledged.
async fn submit_all(
    master: &Master,
    count: usize,
    spec: impl Fn(usize) -> DriverSpec + Send + Sync + 'static,
) -> Result<Vec<Duration>> {
    let spec = Arc::new(spec);
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let client = master.client().await?;
        let spec = spec.clone();
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for n in (c..count).step_by(CLIENTS) {
                client.submit(spec(n)).await?;
                acked.push(t0.elapsed());
            }
            anyhow::Ok(acked)
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// Acknowledgements per second, over each whole second.
fn per_second(acked: &[Duration]) -> Vec<f64> {
    let seconds = acked.iter().map(|d| d.as_secs()).max().unwrap_or(0) as usize;
    let mut counts = vec![0.0; seconds.max(1)];
    for d in acked {
        if let Some(c) = counts.get_mut(d.as_secs() as usize) {
            *c += 1.0;
        }
    }
    counts
}

pub async fn at_scale(binary: &Path, size: Size, label: &str) -> Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    write_history(&dir.path().join("state"), size.retained)?;
    let history_s = t.elapsed().as_secs_f64();
    let file_mib = std::fs::metadata(
        dir.path()
            .join("state")
            .join(hearth_master::store::FILE_NAME),
    )?
    .len() as f64
        / (1024.0 * 1024.0);
    let queues = dir.path().join("queues.yaml");
    queues_file(&queues)?;
    let master = Master::start_in(
        dir,
        binary,
        &[
            "--queues",
            &queues.display().to_string(),
            "--max-waiting",
            "1000000",
            "--retained-history",
            &(size.retained * 2).to_string(),
        ],
    )?;
    let stop = hearth_common::Shutdown::new();
    let (tell, mut launched) = mpsc::unbounded_channel();
    let mut sims = sim::start_simulated(&master, size.workers, &stop, Some(tell)).await?;

    // Every worker runs a long driver of 8 of its 16 cores, so 8 stay free on each.
    submit_all(&master, size.workers, |n| DriverSpec {
        name: format!("long-{n}"),
        command: vec![LONG.into()],
        cores: 8,
        memory_mb: 1024,
        queue: "fill".into(),
        ..Default::default()
    })
    .await?;
    let web = master.web.clone();
    procs::poll(
        "the long drivers RUNNING",
        Duration::from_millis(100),
        Duration::from_secs(300),
        || {
            let web = web.clone();
            let wanted = size.workers as f64;
            async move {
                let text = procs::http_get(&web, "/metrics").ok()?;
                (procs::metric(&text, "hearth_drivers{state=\"RUNNING\"}") >= wanted).then_some(())
            }
        },
    )
    .await?;
    while launched.try_recv().is_ok() {}

    // 100,000 drivers of 16 cores wait over the other queues: none fits a worker's 8 free.
    let acked = submit_all(&master, size.waiting, |n| DriverSpec {
        name: format!("wide-{n}"),
        command: vec!["job".into()],
        cores: 16,
        memory_mb: 2048,
        queue: format!("q{:02}", n % (QUEUES - 2)),
        ..Default::default()
    })
    .await?;
    let total_s = acked
        .iter()
        .max()
        .copied()
        .unwrap_or_default()
        .as_secs_f64();
    let rates = if total_s < 2.0 {
        vec![size.waiting as f64 / total_s.max(1e-9)]
    } else {
        per_second(&acked)
    };
    let waiting = procs::metric(&master.metrics()?, "hearth_drivers{state=\"SUBMITTED\"}");

    // Submit → placed: one driver at a time that fits, until its worker is told to launch it.
    let client = master.client().await?;
    let mut placed = Vec::with_capacity(size.probes);
    for n in 0..size.probes {
        let t0 = Instant::now();
        let id = client
            .submit(DriverSpec {
                name: format!("probe-{n}"),
                command: vec!["probe".into()],
                cores: 1,
                memory_mb: 256,
                queue: "probe".into(),
                ..Default::default()
            })
            .await?;
        loop {
            let (launched_id, at) = tokio::time::timeout(Duration::from_secs(10), launched.recv())
                .await
                .map_err(|_| anyhow!("probe {id} not launched within 10 s"))?
                .ok_or_else(|| anyhow!("the simulated workers stopped"))?;
            if launched_id == id {
                placed.push(at - t0);
                break;
            }
        }
    }

    // The overview page over HTTP, first page of every table.
    let mut overview = Vec::new();
    let mut page_kib = 0.0;
    for _ in 0..20 {
        let t0 = Instant::now();
        let body = procs::http_get(&master.web, "/")?;
        overview.push(t0.elapsed());
        page_kib = body.len() as f64 / 1024.0;
    }
    // A page deep in the history, read from the file.
    let deep = size.retained / 100 / 2;
    let t0 = Instant::now();
    procs::http_get(&master.web, &format!("/?completed_page={deep}"))?;
    let deep_ms = t0.elapsed().as_secs_f64() * 1000.0;

    // Only heartbeats now: the master's CPU over 5 s, and its memory.
    let pid = master.proc.pid();
    let before = procs::cpu_time(pid)?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu = procs::cpu_time(pid)?.saturating_sub(before).as_secs_f64()
        / t0.elapsed().as_secs_f64()
        * 100.0;
    let (rss, peak) = procs::rss_mib(pid)?;
    if let Some(done) = sims.try_join_next() {
        done??;
        anyhow::bail!("a simulated worker stopped early");
    }
    let alive = sim::alive_count(&master)?;
    anyhow::ensure!(
        alive == size.workers,
        "only {alive} of {} workers ALIVE",
        size.workers
    );
    stop.cancel();
    while let Some(done) = sims.join_next().await {
        done??;
    }

    let scene = format!(
        "{} simulated workers, each running an 8-core driver; {waiting:.0} drivers of 16 cores waiting over {} queues; {} completed drivers in the state file's history ({file_mib:.0} MiB, written in {history_s:.0} s)",
        size.workers,
        QUEUES - 2,
        size.retained
    );
    let placed_stats = Stats::of_durations(&placed).ok_or_else(|| anyhow!("no probes"))?;
    let overview_stats = Stats::of_durations(&overview).ok_or_else(|| anyhow!("no pages"))?;
    Ok(vec![
        Figure::new(
            format!("{label}: durable submissions/s, 64 clients"),
            Unit::PerSecond,
            rates,
            "≥ 6,000/s",
            format!(
                "{} drivers submitted in {total_s:.1} s ({:.0}/s overall), per whole second; {scene}",
                size.waiting,
                size.waiting as f64 / total_s.max(1e-9)
            ),
        )?,
        Figure::new(
            format!(
                "{label}: submit → placed, {} waiting, {} retained",
                size.waiting, size.retained
            ),
            Unit::Millis,
            placed.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
            "p99 ≤ 10 ms",
            format!(
                "one 1-core driver at a time in its own queue, until its simulated worker is told to launch it (median {:.2} ms, p99 {:.2} ms)",
                placed_stats.median, placed_stats.p99
            ),
        )?,
        Figure::new(
            format!("{label}: UI overview over HTTP"),
            Unit::Millis,
            overview.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
            "≤ 20 ms",
            format!(
                "GET / with the first page of every table ({page_kib:.0} KiB, median {:.2} ms); completed-drivers page {deep} (read from the history) {deep_ms:.1} ms",
                overview_stats.median
            ),
        )?,
        Figure::new(
            format!("{label}: master CPU and memory with all that, heartbeats only"),
            Unit::CorePercent,
            vec![cpu],
            "≤ 5 % of a core; RSS ≤ 256 MiB",
            format!("VmRSS {rss:.0} MiB, peak {peak:.0} MiB, over 5 s after the rest"),
        )?,
    ])
}
