//! The sharing policy, in-process through the master's own state transitions on a simulated
//! clock: a scheduling turn across 100 queues, and a replayed mixed trace on three queues of
//! weights 1, 2 and 3 (utilisation while work waits, share error against the weights, the wait
//! of the largest jobs).

use std::{collections::HashMap, sync::Arc, time::Instant};

use anyhow::{Result, anyhow};
use hearth_common::proto::{DriverSpec, DriverState, DriverStatus, Register, master_message::Msg};
use hearth_master::{
    schedule::{Amount, Decision, QueueDef, QueueTree, place_drivers_fairly},
    state::{Effect, Limits, State},
    tenants::Tenants,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::{figures::Figure, stats::Unit};

pub(crate) const START_MS: i64 = 1_795_000_000_000;

pub(crate) fn state_with_workers(
    workers: usize,
    cores: u32,
    reserve_after_ms: Option<u64>,
) -> State {
    let limits = Limits {
        reserve_after_ms,
        // The master's default: recent use counts, with a 10-minute half-life.
        usage_half_life_ms: Some(600_000),
        ..Limits::retaining(1000)
    };
    let mut state = State::new("http://hearth-master:7077".into(), START_MS, limits);
    let mut effects = Vec::new();
    let now = tokio::time::Instant::now();
    for n in 0..workers {
        let host = format!("10.2.{}.{}", n / 250, n % 250);
        let register = Register {
            worker_id: format!("worker-20261130000000-{host}-8081"),
            name: format!("hearth-worker-{n:04}"),
            host: host.clone(),
            web_port: 8081,
            cores,
            memory_mb: u64::from(cores) * 4096,
            ..Default::default()
        };
        state.register_worker(register, host, n as u64 + 1, now, START_MS, &mut effects);
    }
    state
}

pub(crate) fn job(
    name: String,
    queue: &str,
    cores: u32,
    priority: i32,
    limit_ms: u64,
) -> DriverSpec {
    DriverSpec {
        name,
        command: vec!["job".into()],
        cores,
        memory_mb: u64::from(cores) * 4096,
        queue: queue.into(),
        priority,
        time_limit_ms: limit_ms,
        ..Default::default()
    }
}

/// A scheduling turn with 100 queues (20 teams of 4, some capped, some guaranteed), 10,000
/// drivers of 1 to 8 cores waiting, and 1,000 workers of 16 cores: about a third fits.
pub fn hundred_queues(runs: usize) -> Result<Figure> {
    let mut rng = StdRng::seed_from_u64(100);
    let mut state = state_with_workers(1000, 16, Some(120_000));
    let mut defs = Vec::new();
    let mut leaves = Vec::new();
    for team in 0..20 {
        let name = format!("team{team:02}");
        defs.push(QueueDef {
            name: name.clone(),
            weight: rng.random_range(1..4),
            guaranteed: Amount::new(if team % 3 == 0 { 400 } else { 0 }, 0),
            max: (team % 4 == 0).then(|| Amount::new(2000, u64::MAX)),
            ..QueueDef::named(&name)
        });
        for child in 0..4 {
            let leaf = format!("{name}.q{child}");
            defs.push(QueueDef {
                name: leaf.clone(),
                weight: 1,
                guaranteed: Amount::default(),
                max: None,
                ..QueueDef::named(&leaf)
            });
            leaves.push(leaf);
        }
    }
    let tree = QueueTree::new(defs).map_err(|e| anyhow!("{e}"))?;
    let queues = tree.len();
    state.set_queues(Arc::new(tree), Arc::new(Tenants::default()));
    for n in 0..10_000 {
        let queue = &leaves[rng.random_range(0..leaves.len())];
        let spec = job(
            format!("job-{n}"),
            queue,
            rng.random_range(1..9),
            rng.random_range(0..4),
            0,
        );
        state.submit(spec, None, START_MS + n as i64)?;
    }
    let offers = state.offers();
    let (asks, queued) = state.queued_asks(0);
    let usage = state.usage();
    let mut decide = Vec::with_capacity(runs);
    let mut turns = Vec::with_capacity(runs);
    let mut placed = 0;
    for _ in 0..runs {
        let (mut free, mut used) = (offers.clone(), usage.clone());
        let t0 = Instant::now();
        let out = place_drivers_fairly(
            &mut free,
            &asks,
            &queued,
            &state.queues,
            &mut used,
            &[],
            START_MS,
        );
        decide.push(t0.elapsed().as_secs_f64() * 1000.0);
        placed = out
            .decisions
            .iter()
            .filter(|d| matches!(d, Decision::Place { .. }))
            .count();

        let mut s = state.clone();
        let mut effects = Vec::new();
        let t0 = Instant::now();
        // A turn launches at most MAX_LAUNCHES_PER_TURN; the master's loop runs the next at once.
        s.schedule_until_placed(START_MS + 60_000, &mut effects);
        turns.push(t0.elapsed());
        anyhow::ensure!(
            effects.len() == placed,
            "the turn placed {} of {placed}",
            effects.len()
        );
    }
    let turn = crate::stats::Stats::of_durations(&turns).ok_or_else(|| anyhow!("no runs"))?;
    Figure::new(
        "queues: one scheduling turn, 100 queues",
        Unit::Millis,
        decide,
        "≤ 20 ms",
        format!(
            "placement decisions across {queues} queues (20 parents, 80 leaves, default; some capped, some guaranteed) for 10,000 waiting drivers of 1-8 cores on 1,000 workers of 16 cores: {placed} placed, the rest given reasons; the master's whole turns (at most {} launches each) with every record updated and the launch orders made: median {:.1} ms, p99 {:.1} ms in all",
            hearth_master::state::MAX_LAUNCHES_PER_TURN,
            turn.median,
            turn.p99
        ),
    )
}

/// One job of the trace.
struct Job {
    duration_ms: i64,
    submitted_ms: i64,
    large: bool,
    started: bool,
}

/// What the trace replay measured.
pub struct TraceResult {
    /// Cores in use over cores alive, each second something waited.
    pub utilisation: Vec<f64>,
    /// Per queue, its mean share of the cores in use, after convergence.
    pub shares: Vec<f64>,
    /// Waits (s) of the largest jobs that started after convergence.
    pub large_waits: Vec<f64>,
    pub small_waits: Vec<f64>,
    pub jobs: usize,
    pub large_never_started: usize,
}

pub const TRACE_QUEUES: [(&str, u32); 3] = [("etl", 1), ("adhoc", 2), ("ml", 3)];

/// Replays `minutes` of a mixed trace on 40 workers of 16 cores. Each queue receives 1.2
/// times the work its weight entitles it to (five minutes of it at once at the start), so all
/// three keep a backlog: 80 % small jobs (1-2
/// cores, 10-60 s), 15 % medium (4-8 cores, 1-4 min), 5 % large (16 cores, a whole worker, 5-10
/// min); each declares a time limit of 1.5 times its run. The clock advances a second a turn.
pub fn replay_trace(minutes: i64, reserve_after_ms: Option<u64>) -> Result<TraceResult> {
    let mut rng = StdRng::seed_from_u64(7);
    let workers = 40;
    let total_cores = workers as f64 * 16.0;
    let mut state = state_with_workers(workers, 16, reserve_after_ms);
    let defs = TRACE_QUEUES
        .iter()
        .map(|(name, weight)| QueueDef {
            weight: *weight,
            ..QueueDef::named(name)
        })
        .collect();
    state.set_queues(
        Arc::new(QueueTree::new(defs).map_err(|e| anyhow!("{e}"))?),
        Arc::new(Tenants::default()),
    );
    let weight_sum: u32 = TRACE_QUEUES.iter().map(|q| q.1).sum();
    // Mean core-seconds of a job of the mix, to turn a share of the cluster into arrivals.
    let mean_core_s = 0.8 * 1.5 * 35.0 + 0.15 * 6.0 * 150.0 + 0.05 * 16.0 * 450.0;
    let rates: Vec<f64> = TRACE_QUEUES
        .iter()
        .map(|(_, w)| 1.2 * total_cores * f64::from(*w) / f64::from(weight_sum) / mean_core_s)
        .collect();
    let end_ms = START_MS + minutes * 60_000;
    let converged_ms = START_MS + (minutes * 60_000) / 5;
    let mut jobs: HashMap<String, Job> = HashMap::new();
    let mut running: Vec<(i64, String, String, u32)> = Vec::new();
    let mut result = TraceResult {
        utilisation: Vec::new(),
        shares: vec![0.0; TRACE_QUEUES.len()],
        large_waits: Vec::new(),
        small_waits: Vec::new(),
        jobs: 0,
        large_never_started: 0,
    };
    let mut share_samples = 0usize;
    let mut effects = Vec::new();
    let mut now = START_MS;
    while now < end_ms {
        for (q, rate) in rates.iter().enumerate() {
            // At first, five minutes' worth at once: the cluster starts full with a backlog.
            let rate = if now == START_MS { rate * 300.0 } else { *rate };
            // Poisson arrivals, one draw a second.
            let mut arrivals = 0;
            let mut p = rng.random::<f64>();
            let threshold = (-rate).exp();
            while p > threshold && arrivals < 100_000 {
                arrivals += 1;
                p *= rng.random::<f64>();
            }
            for _ in 0..arrivals {
                let kind = rng.random::<f64>();
                let (cores, secs, large) = if kind < 0.8 {
                    (rng.random_range(1..3), rng.random_range(10..61), false)
                } else if kind < 0.95 {
                    (rng.random_range(4..9), rng.random_range(60..241), false)
                } else {
                    (16, rng.random_range(300..601), true)
                };
                let duration_ms = secs * 1000;
                let spec = job(
                    format!("job-{}", result.jobs),
                    TRACE_QUEUES[q].0,
                    cores,
                    0,
                    (duration_ms as u64) * 3 / 2,
                );
                let id = state.submit(spec, None, now)?;
                result.jobs += 1;
                jobs.insert(
                    id,
                    Job {
                        duration_ms,
                        submitted_ms: now,
                        large,
                        started: false,
                    },
                );
            }
        }
        // What ends now ends.
        running.sort_by_key(|r| std::cmp::Reverse(r.0));
        while running.last().is_some_and(|r| r.0 <= now) {
            let Some((_, driver_id, worker_id, attempt)) = running.pop() else {
                break;
            };
            state.driver_status(
                &worker_id,
                DriverStatus {
                    driver_id: driver_id.clone(),
                    attempt,
                    state: DriverState::Finished as i32,
                    exit_code: Some(0),
                    message: String::new(),
                },
                now,
                &mut effects,
            );
            jobs.remove(&driver_id);
        }
        state.decay_usage(now);
        state.schedule_until_placed(now, &mut effects);
        for effect in effects.drain(..) {
            if let Effect::Send { worker_id, message } = effect
                && let Some(Msg::LaunchDriver(launch)) = message.msg
                && let Some(job) = jobs.get_mut(&launch.driver_id)
            {
                job.started = true;
                let wait_s = (now - job.submitted_ms) as f64 / 1000.0;
                if job.submitted_ms >= converged_ms {
                    if job.large {
                        result.large_waits.push(wait_s);
                    } else {
                        result.small_waits.push(wait_s);
                    }
                }
                running.push((
                    now + job.duration_ms,
                    launch.driver_id,
                    worker_id,
                    launch.attempt,
                ));
            }
        }
        let mut backlog = [false; TRACE_QUEUES.len()];
        for d in state.waiting.iter().filter_map(|id| state.drivers.get(id)) {
            if let Some(q) = TRACE_QUEUES.iter().position(|(n, _)| *n == d.spec.queue) {
                backlog[q] = true;
            }
        }
        if now >= converged_ms && !state.waiting.is_empty() {
            let used: u64 = state.alive_workers().map(|w| u64::from(w.cores_used)).sum();
            result.utilisation.push(used as f64 / total_cores * 100.0);
        }
        // Shares are the policy's only while every queue has work waiting.
        if now >= converged_ms && backlog.iter().all(|b| *b) {
            let views = state.queue_views();
            let used: Vec<f64> = TRACE_QUEUES
                .iter()
                .map(|(name, _)| {
                    views
                        .iter()
                        .find(|v| v.name == *name)
                        .and_then(|v| v.used.as_ref())
                        .map_or(0.0, |u| u.cores as f64)
                })
                .collect();
            let all: f64 = used.iter().sum();
            if all > 0.0 {
                for (share, u) in result.shares.iter_mut().zip(&used) {
                    *share += u / all;
                }
                share_samples += 1;
            }
        }
        now += 1000;
    }
    for share in &mut result.shares {
        *share /= share_samples.max(1) as f64;
    }
    // Large jobs still waiting at the end that had been submitted in the first half.
    result.large_never_started = jobs
        .values()
        .filter(|j| j.large && !j.started && j.submitted_ms < START_MS + minutes * 30_000)
        .count();
    Ok(result)
}

/// The trace's three figures: utilisation while work waits, share error, and the p99 wait of
/// the largest jobs (with the same trace replayed without reservations, for contrast).
pub fn trace_figures(minutes: i64) -> Result<Vec<Figure>> {
    let with = replay_trace(minutes, Some(60_000))?;
    let without = replay_trace(minutes, None)?;
    let weight_sum: u32 = TRACE_QUEUES.iter().map(|q| q.1).sum();
    let errors: Vec<f64> = TRACE_QUEUES
        .iter()
        .zip(&with.shares)
        .map(|((_, w), share)| (share - f64::from(*w) / f64::from(weight_sum)).abs() * 100.0)
        .collect();
    let shares = TRACE_QUEUES
        .iter()
        .zip(&with.shares)
        .map(|((name, w), s)| format!("{name} (weight {w}) {:.1} %", s * 100.0))
        .collect::<Vec<_>>()
        .join(", ");
    let p99 = |v: &[f64]| crate::stats::Stats::of(v.to_vec()).map_or(f64::NAN, |s| s.p99);
    let mut large = with.large_waits.clone();
    large.sort_by(f64::total_cmp);
    Ok(vec![
        Figure::new(
            "queues: utilisation while work waits (trace)",
            Unit::Percent,
            with.utilisation.clone(),
            "≥ 95 %",
            format!(
                "{minutes} simulated minutes, {} jobs over 3 queues, 40 workers of 16 cores; per-second samples while anything waited",
                with.jobs
            ),
        )?,
        Figure::new(
            "queues: share error against the weights (trace)",
            Unit::Points,
            errors,
            "≤ 5 points",
            format!("mean share of cores in use after the first fifth: {shares}"),
        )?,
        Figure::new(
            "queues: wait of the largest jobs (trace)",
            Unit::Seconds,
            with.large_waits.clone(),
            "bounded (p99)",
            format!(
                "16-core jobs, submitted after the first fifth: p99 {:.0} s with reservations after 60 s; without reservations p99 {:.0} s over the {} that started at all, {} never started; small jobs p99 {:.0} s",
                p99(&with.large_waits),
                p99(&without.large_waits),
                without.large_waits.len(),
                without.large_never_started,
                p99(&with.small_waits),
            ),
        )?,
    ])
}
