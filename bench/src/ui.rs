//! The UI overview's render time for a master holding 1,000 workers and 10,000 retained
//! drivers, built in-process through the master's own state transitions, rendered by the
//! same function the web handler calls (no network in between, so the figure is the page's
//! own cost).

use std::time::Instant;

use hearth_common::proto::{DriverSpec, DriverState, DriverStatus, Register};
use hearth_master::{
    config::UiConfig,
    state::{Effect, Limits, State},
    telemetry::Sample,
    web::{OverviewQuery, overview_html},
};

use crate::{figures::Figure, stats::Unit};

pub const NAME: &str = "UI overview render, 1,000 workers, 10,000 retained drivers";
const WORKERS: usize = 1000;
const COMPLETED: usize = 10_000;
/// Drivers left running, so the running table is not empty either.
const RUNNING: usize = 300;
const START_MS: i64 = 1_795_000_000_000;

/// A state as a busy master holds it: every worker alive, drivers run to completion, some
/// still running, an hour of utilisation samples.
pub fn busy_state() -> anyhow::Result<(State, Vec<Sample>)> {
    let mut state = State::new(
        "http://hearth-master:7077".into(),
        START_MS,
        Limits::retaining(COMPLETED),
    );
    let mut effects: Vec<Effect> = Vec::new();
    let now = tokio::time::Instant::now();
    for n in 0..WORKERS {
        let register = Register {
            worker_id: format!("worker-20261121000000-10.0.{}.{}-8081", n / 250, n % 250),
            name: format!("hearth-worker-{n:04}"),
            host: format!("10.0.{}.{}", n / 250, n % 250),
            web_port: 8081,
            cores: 8,
            memory_mb: 32 * 1024,
            labels: [("node".to_string(), format!("node-{}", n / 10))].into(),
            ..Default::default()
        };
        let host = register.host.clone();
        state.register_worker(register, host, n as u64 + 1, now, START_MS, &mut effects);
    }
    let spec = |n: usize| DriverSpec {
        name: format!("nightly-{n}"),
        command: vec!["spark-job".into(), format!("--part={n}")],
        cores: 1,
        memory_mb: 512,
        ..Default::default()
    };
    // 4,000 at a time fit the 8,000 cores, so each batch runs and finishes at once.
    for batch in (0..COMPLETED).step_by(4000) {
        let ids = (batch..(batch + 4000).min(COMPLETED))
            .map(|n| state.submit(spec(n), None, START_MS + n as i64))
            .collect::<Result<Vec<String>, _>>()?;
        state.schedule_until_placed(START_MS, &mut effects);
        finish(&mut state, &ids, &mut effects);
    }
    for n in COMPLETED..COMPLETED + RUNNING {
        state.submit(spec(n), None, START_MS + n as i64)?;
    }
    state.schedule_until_placed(START_MS, &mut effects);
    state.prune();
    let samples = (0..360)
        .map(|i| Sample {
            at_ms: START_MS + i * 10_000,
            cores_used: (i as u64 * 37) % 8000,
            cores: 8000,
            memory_used_mb: (i as u64 * 911) % (32 * 1024 * 1000),
            memory_mb: 32 * 1024 * 1000,
        })
        .collect();
    Ok((state, samples))
}

fn finish(state: &mut State, ids: &[String], effects: &mut Vec<Effect>) {
    for id in ids {
        let Some(d) = state.drivers.get(id).cloned() else {
            continue;
        };
        if let Some(worker) = &d.worker_id {
            let status = DriverStatus {
                driver_id: id.clone(),
                attempt: d.attempt,
                state: DriverState::Finished as i32,
                exit_code: Some(0),
                message: String::new(),
            };
            state.driver_status(worker, status, START_MS + 1, effects);
        }
    }
}

pub fn overview_render(runs: usize) -> anyhow::Result<Figure> {
    let (state, samples) = busy_state()?;
    anyhow::ensure!(
        state.workers.len() == WORKERS && state.completed.len() == COMPLETED,
        "the benchmark state holds {} workers and {} completed drivers",
        state.workers.len(),
        state.completed.len()
    );
    let ui = UiConfig::default();
    let query = OverviewQuery::default();
    let now_ms = START_MS + 3_600_000;
    let mut times = Vec::with_capacity(runs);
    let mut bytes = 0;
    // One run unmeasured, to warm caches and the allocator.
    overview_html(
        &state,
        &ui,
        &samples,
        now_ms,
        &query,
        Default::default(),
        None,
    )?;
    for _ in 0..runs {
        let started = Instant::now();
        let html = overview_html(
            &state,
            &ui,
            &samples,
            now_ms,
            &query,
            Default::default(),
            None,
        )?;
        times.push(started.elapsed());
        bytes = html.len();
    }
    Figure::new(
        NAME,
        Unit::Millis,
        times.iter().map(|t| t.as_secs_f64() * 1000.0).collect(),
        "≤ 20 ms p50 (UI issue: ≤ 50 ms)",
        format!(
            "page {:.0} KiB, {} running drivers, paged 100 rows per table",
            bytes as f64 / 1024.0,
            state.drivers.len() - state.completed.len()
        ),
    )
}
