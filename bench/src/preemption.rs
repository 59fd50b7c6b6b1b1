//! Preemption, in-process through the master's own state transitions on a simulated clock: the
//! decision with 1,000 workers and 10,000 running items, and a replayed trace where a queue
//! owed a guarantee takes it back from batch work (drivers and gangs) that fills the cluster.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use anyhow::{Result, anyhow};
use hearth_common::proto::{
    ApplicationSpec, DriverState, DriverStatus, ExecutorState, ExecutorStatus, master_message::Msg,
};
use hearth_master::{
    schedule::{Amount, QueueDef, QueueTree, preemption::Preempt},
    state::{Effect, State},
    tenants::Tenants,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::{
    fairness::{START_MS, job, state_with_workers},
    figures::Figure,
    stats::Unit,
};

fn reclaiming(name: &str, guaranteed_cores: u64) -> QueueDef {
    QueueDef {
        guaranteed: Amount::new(guaranteed_cores, 0),
        preempt: Preempt {
            reclaim: true,
            ..Preempt::default()
        },
        ..QueueDef::named(name)
    }
}

fn gang(name: String, queue: &str, members: u32, cores: u32) -> ApplicationSpec {
    ApplicationSpec {
        name,
        command: vec!["member".into()],
        executor_cores: cores,
        executor_memory_mb: u64::from(cores) * 4096,
        executors: members,
        gang: true,
        queue: queue.into(),
        ..Default::default()
    }
}

/// One decision: 1,000 workers of 16 cores full with 10,000 running items (6,000 drivers of
/// 2 cores and 4,000 executors of 1 core in 10 applications) in 10 batch queues, and five
/// queues below their guarantees each with a driver of 8 cores waiting.
pub fn decision(runs: usize) -> Result<Figure> {
    let mut state = state_with_workers(1000, 16, None);
    let mut defs: Vec<QueueDef> = (0..5)
        .map(|i| reclaiming(&format!("owed{i}"), 400))
        .collect();
    for i in 0..10 {
        defs.push(QueueDef::named(&format!("batch{i}")));
    }
    state.set_queues(
        Arc::new(QueueTree::new(defs).map_err(|e| anyhow!("{e}"))?),
        Arc::new(Tenants::default()),
    );
    let mut effects = Vec::new();
    for n in 0..6000 {
        let spec = job(format!("batch-{n}"), &format!("batch{}", n % 10), 2, 0, 0);
        state.submit(spec, None, START_MS)?;
    }
    for i in 0..10 {
        let app = ApplicationSpec {
            name: format!("executors-{i}"),
            command: vec!["executor".into()],
            executor_cores: 1,
            executor_memory_mb: 1024,
            executors: 400,
            queue: format!("batch{i}"),
            ..Default::default()
        };
        state.register_app(app, None, "h", START_MS)?;
    }
    state.schedule_until_placed(START_MS, &mut effects);
    let running = effects.len();
    anyhow::ensure!(running == 10_000, "{running} placed, not 10,000");
    let later = START_MS + 600_000;
    for i in 0..5 {
        state.submit(
            job(format!("owed-{i}"), &format!("owed{i}"), 8, 0, 0),
            None,
            later,
        )?;
    }
    effects.clear();
    state.schedule_until_placed(later, &mut effects);
    let mut times = Vec::with_capacity(runs);
    let mut victims = 0;
    for _ in 0..runs {
        let mut s = state.clone();
        let mut out = Vec::new();
        let t0 = Instant::now();
        s.preempt(later, &mut out);
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        victims = out.len();
    }
    anyhow::ensure!(victims > 0, "nothing was preempted");
    Figure::new(
        "preemption: one decision, 10,000 running",
        Unit::Millis,
        times,
        "≤ 10 ms",
        format!(
            "the master's whole preemption step (what waits, what runs, the rule, the orders and \
             events) on 1,000 workers of 16 cores full with 6,000 drivers and 4,000 executors in 10 \
             batch queues, 5 queues below their guarantees each waiting with an 8-core driver: \
             {victims} victims ordered (executors first, newest first)"
        ),
    )
}

/// What the reclaim trace measured.
pub struct ReclaimResult {
    /// Seconds from the turn an item of the owed queue became entitled (its queue's guarantee
    /// covered it, with what runs there and what waits before it) to its start, for each that
    /// needed preemption.
    pub restore_s: Vec<f64>,
    pub evicted_cores: u64,
    pub needed_cores: u64,
    pub preemptions: usize,
    pub owed_items: usize,
}

const GRACE_S: i64 = 30;

/// One of prod's waiting items.
struct Owed {
    arrived_ms: i64,
    cores: u64,
    /// The first turn its queue's guarantee covered it.
    entitled_ms: Option<i64>,
    /// Something was preempted for it.
    preempted_for: bool,
}

/// Replays `minutes` on 40 workers of 16 cores: `batch` (no guarantee) keeps a backlog of
/// drivers of 1-8 cores and gangs of 4-8 members of 2 cores, 1-10 minutes each; every 5 minutes
/// `prod` (guaranteed 320 cores, reclaim) receives a burst of drivers of 2-8 cores and gangs of
/// 4 members of 4 cores, up to its guarantee, that run 2-4 minutes. Batch work is protected for
/// its first minute (`min_runtime` 60 s) and has a 30 s grace; a victim ends at a random time
/// within its grace, one in five only at its SIGKILL. The clock advances a second a turn.
pub fn reclaim_trace(minutes: i64) -> Result<ReclaimResult> {
    let mut rng = StdRng::seed_from_u64(17);
    let mut state = state_with_workers(40, 16, Some(120_000));
    let batch = QueueDef {
        preempt: Preempt {
            min_runtime_ms: 60_000,
            grace_ms: GRACE_S as u64 * 1000,
            ..Preempt::default()
        },
        ..QueueDef::named("batch")
    };
    state.set_queues(
        Arc::new(QueueTree::new(vec![reclaiming("prod", 320), batch]).map_err(|e| anyhow!("{e}"))?),
        Arc::new(Tenants::default()),
    );
    let mut result = ReclaimResult {
        restore_s: Vec::new(),
        evicted_cores: 0,
        needed_cores: 0,
        preemptions: 0,
        owed_items: 0,
    };
    // Per item (driver or application): its run, and for prod's, when it arrived.
    let mut duration_ms: HashMap<String, i64> = HashMap::new();
    let mut arrived: HashMap<String, Owed> = HashMap::new();
    // (when, what): a driver's end (id, attempt), an application's end (id, its start), or a
    // victim's end.
    enum End {
        Driver(String, String, u32),
        App(String, i64),
        Executor(String, String, u32),
    }
    let mut ends: Vec<(i64, End)> = Vec::new();
    let mut effects = Vec::new();
    let end_ms = START_MS + minutes * 60_000;
    let mut now = START_MS;
    let mut n = 0;
    while now < end_ms {
        // Batch keeps a backlog of about 40 items.
        let waiting_batch = state
            .waiting
            .iter()
            .filter_map(|id| state.drivers.get(id))
            .filter(|d| d.spec.queue == "batch")
            .count();
        for _ in waiting_batch..40 {
            n += 1;
            let secs = rng.random_range(60..601);
            let id = if rng.random_bool(0.8) {
                let spec = job(format!("batch-{n}"), "batch", rng.random_range(1..9), 0, 0);
                state.submit(spec, None, now)?
            } else {
                let spec = gang(format!("batch-{n}"), "batch", rng.random_range(4..9), 2);
                state.register_app(spec, None, "h", now)?
            };
            duration_ms.insert(id, secs * 1000);
        }
        // Prod's burst, up to its guarantee.
        if (now - START_MS) % 300_000 == 60_000 {
            let mut cores = 0;
            while cores < 300 {
                n += 1;
                let secs = rng.random_range(120..241);
                let (id, size) = if rng.random_bool(0.7) {
                    let c = rng.random_range(2..9);
                    (
                        state.submit(job(format!("prod-{n}"), "prod", c, 0, 0), None, now)?,
                        c,
                    )
                } else {
                    (
                        state.register_app(
                            gang(format!("prod-{n}"), "prod", 4, 4),
                            None,
                            "h",
                            now,
                        )?,
                        16,
                    )
                };
                cores += size;
                duration_ms.insert(id.clone(), secs * 1000);
                arrived.insert(
                    id,
                    Owed {
                        arrived_ms: now,
                        cores: u64::from(size),
                        entitled_ms: None,
                        preempted_for: false,
                    },
                );
                result.owed_items += 1;
            }
        }
        // What ends now ends.
        ends.sort_by_key(|e| std::cmp::Reverse(e.0));
        while ends.last().is_some_and(|e| e.0 <= now) {
            let Some((_, end)) = ends.pop() else { break };
            match end {
                End::Driver(id, worker, attempt) => {
                    let status = DriverStatus {
                        driver_id: id,
                        attempt,
                        state: DriverState::Finished as i32,
                        exit_code: Some(0),
                        message: String::new(),
                    };
                    state.driver_status(&worker, status, now, &mut effects);
                }
                End::App(id, started) => {
                    // Only the run that started then: a preempted gang started again later.
                    let same_run = state.apps.get(&id).is_some_and(|a| {
                        a.executors
                            .values()
                            .any(|e| e.state.is_live() && e.launched_at_ms == started)
                    });
                    if same_run {
                        state.unregister_app(&id, now, &mut effects)?;
                    }
                }
                End::Executor(app_id, worker, executor_id) => {
                    let status = ExecutorStatus {
                        app_id,
                        executor_id,
                        state: ExecutorState::Killed as i32,
                        exit_code: None,
                        message: "killed".into(),
                    };
                    state.executor_status(&worker, status, now, &mut effects);
                }
            }
        }
        // Which of prod's waiting items its guarantee covers now, in arrival order.
        let prod = state
            .queues
            .index("prod")
            .ok_or_else(|| anyhow!("no prod"))?;
        let mut owed = 320u64.saturating_sub(state.usage().subtree(prod).cores);
        let mut waiting: Vec<(&String, &mut Owed)> = arrived.iter_mut().collect();
        waiting.sort_by_key(|(id, v)| (v.arrived_ms, (*id).clone()));
        for (_, item) in waiting {
            if item.cores <= owed {
                owed -= item.cores;
                item.entitled_ms.get_or_insert(now);
            }
        }
        effects.clear();
        state.decay_usage(now);
        state.schedule_until_placed(now, &mut effects);
        state.preempt(now, &mut effects);
        let mut preemptors: HashSet<String> = HashSet::new();
        let mut gangs_preempted: HashSet<String> = HashSet::new();
        let mut apps_started: HashSet<String> = HashSet::new();
        for effect in effects.drain(..) {
            let Effect::Send { worker_id, message } = effect else {
                continue;
            };
            match message.msg {
                Some(Msg::LaunchDriver(launch)) => {
                    let run = duration_ms
                        .get(&launch.driver_id)
                        .copied()
                        .unwrap_or(60_000);
                    if let Some(Owed {
                        entitled_ms: Some(since),
                        preempted_for: true,
                        ..
                    }) = arrived.remove(&launch.driver_id)
                    {
                        result.restore_s.push((now - since) as f64 / 1000.0);
                    }
                    ends.push((
                        now + run,
                        End::Driver(launch.driver_id, worker_id, launch.attempt),
                    ));
                }
                Some(Msg::LaunchExecutor(launch)) if apps_started.insert(launch.app_id.clone()) => {
                    let run = duration_ms.get(&launch.app_id).copied().unwrap_or(60_000);
                    if let Some(Owed {
                        entitled_ms: Some(since),
                        preempted_for: true,
                        ..
                    }) = arrived.remove(&launch.app_id)
                    {
                        result.restore_s.push((now - since) as f64 / 1000.0);
                    }
                    ends.push((now + run, End::App(launch.app_id, now)));
                }
                Some(Msg::KillDriver(kill)) if kill.preempted => {
                    let d = state
                        .drivers
                        .get(&kill.driver_id)
                        .ok_or_else(|| anyhow!("no victim {}", kill.driver_id))?;
                    result.evicted_cores += u64::from(d.spec.cores);
                    result.preemptions += 1;
                    if let Some(e) = d.preemptions.last() {
                        preemptors.insert(e.preemptor.clone());
                    }
                    let after = victim_end(&mut rng);
                    ends.push((
                        now + after,
                        End::Driver(kill.driver_id, worker_id, kill.attempt),
                    ));
                }
                Some(Msg::KillExecutor(kill)) if kill.preempted => {
                    let a = state
                        .apps
                        .get(&kill.app_id)
                        .ok_or_else(|| anyhow!("no victim {}", kill.app_id))?;
                    result.evicted_cores += u64::from(a.spec.executor_cores);
                    if let Some(e) = a.preemptions.last() {
                        preemptors.insert(e.preemptor.clone());
                    }
                    // A gang is one victim, however many members it has.
                    if !a.spec.gang || gangs_preempted.insert(kill.app_id.clone()) {
                        result.preemptions += 1;
                    }
                    let after = victim_end(&mut rng);
                    ends.push((
                        now + after,
                        End::Executor(kill.app_id, worker_id, kill.executor_id),
                    ));
                }
                _ => {}
            }
        }
        for p in preemptors {
            if let Some(entry) = arrived.get_mut(&p)
                && !entry.preempted_for
            {
                entry.preempted_for = true;
                result.needed_cores += item_cores(&state, &p);
            }
        }
        now += 1000;
    }
    Ok(result)
}

/// When a victim ends after its SIGTERM: at a random time within its grace, or (one in five)
/// only at its SIGKILL.
fn victim_end(rng: &mut StdRng) -> i64 {
    if rng.random_bool(0.2) {
        GRACE_S * 1000
    } else {
        rng.random_range(0..GRACE_S * 1000)
    }
}

/// The cores a driver or a (whole) application asks for.
fn item_cores(state: &State, id: &str) -> u64 {
    if let Some(d) = state.drivers.get(id) {
        u64::from(d.spec.cores)
    } else if let Some(a) = state.apps.get(id) {
        u64::from(a.spec.executor_cores) * u64::from(a.spec.executors)
    } else {
        0
    }
}

/// The trace's two figures: how long prod waits for what it is owed, and how much was evicted
/// for it.
pub fn trace_figures(minutes: i64) -> Result<Vec<Figure>> {
    let r = reclaim_trace(minutes)?;
    anyhow::ensure!(
        !r.restore_s.is_empty(),
        "no owed item needed preemption in {minutes} minutes"
    );
    let ratio = r.evicted_cores as f64 / r.needed_cores.max(1) as f64;
    let note = format!(
        "{minutes} simulated minutes, 40 workers of 16 cores; {} of prod's {} items needed \
         preemption; {} preemptions evicted {} cores for work of {} cores (evicted over needed \
         {ratio:.2}, target ≤ 1.1); grace 30 s, one victim in five ends only at SIGKILL",
        r.restore_s.len(),
        r.owed_items,
        r.preemptions,
        r.evicted_cores,
        r.needed_cores,
    );
    Ok(vec![
        Figure::new(
            "preemption: guarantee restored (s)",
            Unit::Seconds,
            r.restore_s,
            "≤ 31 s (a turn + the 30 s grace)",
            note,
        )?,
        Figure::new(
            "preemption: evicted over needed",
            Unit::Ratio,
            vec![ratio],
            "≤ 1.1",
            String::new(),
        )?,
    ])
}
