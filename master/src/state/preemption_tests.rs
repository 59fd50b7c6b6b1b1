//! Preemption as the master's turns carry it out: victims keep their slots until they have
//! ended, a preempted driver waits again under its id, a preempted executor is not replaced,
//! and on random event sequences no two items ever preempt each other and preemption stops
//! once nothing new happens.

use std::{collections::BTreeSet, sync::Arc};

use hearth_common::proto::{
    ApplicationSpec, DriverSpec, DriverState, DriverStatus, ExecutorState, ExecutorStatus,
    MasterMessage, Register, master_message::Msg,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::time::Instant;

use super::{Effect, Limits, State};
use crate::{
    schedule::{Amount, QueueDef, QueueTree, preemption::Preempt},
    tenants::Tenants,
};

fn preempting(reclaim: bool, priority: bool) -> Preempt {
    Preempt {
        reclaim,
        priority,
        min_runtime_ms: 0,
        grace_ms: 1_000,
    }
}

fn queue(name: &str, guaranteed_cores: u64, preempt: Preempt) -> QueueDef {
    QueueDef {
        guaranteed: Amount::new(guaranteed_cores, 0),
        preempt,
        ..QueueDef::named(name)
    }
}

fn state_with(workers: &[u32], queues: Vec<QueueDef>) -> (State, Vec<Effect>) {
    let mut state = State::new("http://m".into(), 1_795_271_400_000, Limits::retaining(500));
    let mut effects = Vec::new();
    for (conn, cores) in (1..).zip(workers) {
        let reg = Register {
            worker_id: format!("w{conn}"),
            cores: *cores,
            memory_mb: 64 * 1024,
            ..Default::default()
        };
        state.register_worker(reg, "h".into(), conn, Instant::now(), 0, &mut effects);
    }
    let tree = QueueTree::new(queues).expect("queues");
    state.set_queues(Arc::new(tree), Arc::new(Tenants::default()));
    (state, effects)
}

fn driver(queue: &str, cores: u32, priority: i32) -> DriverSpec {
    DriverSpec {
        command: vec!["job".into()],
        cores,
        memory_mb: 64,
        queue: queue.into(),
        priority,
        ..Default::default()
    }
}

/// An application of `executors` 1-core executors in queue `lender`.
fn lender_app(executors: u32) -> ApplicationSpec {
    ApplicationSpec {
        command: vec!["executor".into()],
        executor_cores: 1,
        executor_memory_mb: 64,
        executors,
        queue: "lender".into(),
        ..Default::default()
    }
}

/// The preemption orders among `effects`: (victim, grace_ms), drivers by id, executors as
/// app/N.
fn preemption_orders(effects: &[Effect]) -> Vec<(String, u64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                message: MasterMessage { msg: Some(msg), .. },
                ..
            } => match msg {
                Msg::KillDriver(k) if k.preempted => Some((k.driver_id.clone(), k.grace_ms)),
                Msg::KillExecutor(k) if k.preempted => {
                    Some((format!("{}/{}", k.app_id, k.executor_id), k.grace_ms))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// What a worker reports once a killed driver's process has ended.
fn ended(state: &State, driver_id: &str) -> (String, DriverStatus) {
    let d = &state.drivers[driver_id];
    (
        d.worker_id.clone().unwrap_or_default(),
        DriverStatus {
            driver_id: driver_id.into(),
            attempt: d.attempt,
            state: DriverState::Killed as i32,
            exit_code: None,
            message: "killed".into(),
        },
    )
}

#[test]
fn a_queue_below_its_guarantee_takes_back_just_enough_and_its_victims_wait_again() {
    let (mut state, mut effects) = state_with(
        &[4],
        vec![
            queue("owed", 4, preempting(true, false)),
            queue("lender", 0, Preempt::default()),
        ],
    );
    // Started a second apart, so which are the newest is known.
    let mut lent = Vec::new();
    for i in 1..=4 {
        lent.push(
            state
                .submit(driver("lender", 1, 0), None, i * 1_000)
                .unwrap(),
        );
        state.schedule(i * 1_000, &mut effects);
    }
    assert!(
        lent.iter()
            .all(|id| state.drivers[id].state == DriverState::Running)
    );
    let owed = state.submit(driver("owed", 2, 0), None, 200_000).unwrap();
    effects.clear();
    state.schedule(200_000, &mut effects);
    // The lender's work is older than the default min_runtime (60 s), and gets the default
    // grace (30 s).
    assert!(state.preempt(200_000, &mut effects));
    let orders = preemption_orders(&effects);
    let victims: BTreeSet<String> = orders.iter().map(|(v, _)| v.clone()).collect();
    assert_eq!(
        victims,
        BTreeSet::from([lent[2].clone(), lent[3].clone()]),
        "the two newest, no more"
    );
    assert!(
        orders.iter().all(|(_, grace)| *grace == 30_000),
        "{orders:?}"
    );
    // Victims hold their slots through their grace: nothing is placed beside them, and the
    // decision is not made twice.
    effects.clear();
    state.schedule(200_300, &mut effects);
    assert!(!state.preempt(200_500, &mut effects));
    assert_eq!(state.drivers[&owed].state, DriverState::Submitted);
    assert!(state.check_invariants().is_ok());
    for v in &victims {
        let (worker, status) = ended(&state, v);
        state.driver_status(&worker, status, 201_000, &mut effects);
    }
    state.schedule(201_000, &mut effects);
    assert_eq!(state.drivers[&owed].state, DriverState::Running);
    for v in &victims {
        let d = &state.drivers[v];
        assert_eq!(d.state, DriverState::Submitted, "{v} waits again");
        assert_eq!(d.attempt, 1, "its attempt is counted");
        assert!(d.message.starts_with("preempted for"), "{}", d.message);
        assert_eq!(d.preemptions.len(), 1);
        assert_eq!(d.preemptions[0].preemptor, owed);
    }
    assert_eq!(state.drivers[&owed].preemptions.len(), 2);
    assert_eq!(
        state
            .preemptions_total
            .get(&("lender".to_string(), "reclaim", "driver")),
        Some(&2)
    );
    // Owed is within its guarantee and the lender has nothing above its own: no more.
    assert!(!state.preempt(300_000, &mut effects));
    state.check_invariants().unwrap();
}

#[test]
fn a_preempted_executor_is_killed_with_the_reason_and_not_replaced() {
    let (mut state, mut effects) = state_with(
        &[4],
        vec![
            queue("owed", 2, preempting(true, false)),
            queue(
                "lender",
                0,
                Preempt {
                    min_runtime_ms: 0,
                    grace_ms: 5_000,
                    ..Preempt::default()
                },
            ),
        ],
    );
    let app_id = state.register_app(lender_app(4), None, "h", 0).unwrap();
    state.schedule(0, &mut effects);
    assert_eq!(state.apps[&app_id].live(), 4);
    let owed = state.submit(driver("owed", 1, 0), None, 10_000).unwrap();
    effects.clear();
    state.schedule(10_000, &mut effects);
    assert!(state.preempt(10_000, &mut effects));
    let orders = preemption_orders(&effects);
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0].1, 5_000, "the victim's queue's grace");
    let victim: u32 = orders[0].0.rsplit('/').next().unwrap().parse().unwrap();
    let status = ExecutorStatus {
        app_id: app_id.clone(),
        executor_id: victim,
        state: ExecutorState::Killed as i32,
        exit_code: None,
        message: "killed".into(),
    };
    state.executor_status("w1", status, 11_000, &mut effects);
    state.schedule(11_000, &mut effects);
    let a = &state.apps[&app_id];
    let e = &a.executors[&victim];
    assert_eq!(e.state, ExecutorState::Killed);
    assert_eq!(
        a.preemptions.first().map(|p| p.victim.clone()),
        Some(format!("{app_id}/{victim}"))
    );
    assert!(
        e.message.starts_with(&format!("preempted for {owed}")),
        "{}",
        e.message
    );
    assert_eq!(a.target, 3, "not replaced: its application may ask again");
    assert_eq!(a.live(), 3);
    assert_eq!(state.drivers[&owed].state, DriverState::Running);
    state.check_invariants().unwrap();
}

/// Random arrivals, ends and priorities over queues that reclaim and preempt by priority;
/// workers carry out kills a turn later. No item is ever preempted by one it preempted, and
/// once arrivals and ends stop, preemption stops too.
#[test]
fn on_random_event_sequences_no_two_items_preempt_each_other_and_preemption_settles() {
    let mut total = 0;
    for seed in 0..60 {
        let mut rng = StdRng::seed_from_u64(seed);
        let queues = vec![
            queue(
                "a",
                rng.random_range(0..6),
                preempting(rng.random_bool(0.7), rng.random_bool(0.5)),
            ),
            queue(
                "b",
                rng.random_range(0..6),
                preempting(rng.random_bool(0.7), rng.random_bool(0.5)),
            ),
            queue(
                "c",
                rng.random_range(0..4),
                preempting(rng.random_bool(0.5), rng.random_bool(0.5)),
            ),
        ];
        let workers: Vec<u32> = (0..rng.random_range(1..4))
            .map(|_| rng.random_range(2..7))
            .collect();
        let (mut state, mut effects) = state_with(&workers, queues);
        let mut pairs: BTreeSet<(String, String)> = BTreeSet::new();
        let mut pending_kills: Vec<String> = Vec::new();
        let mut now = 1_000;
        let steps = 120;
        let mut last_preemption_step = 0;
        for step in 0..steps {
            now += 500;
            let quiet = step >= 80;
            if !quiet {
                for _ in 0..rng.random_range(0..3) {
                    let q = ["a", "b", "c"][rng.random_range(0..3)];
                    let spec = driver(q, rng.random_range(1..4), rng.random_range(0..3));
                    state.submit(spec, None, now).unwrap();
                }
                // Some running drivers finish.
                let running: Vec<String> = state
                    .drivers
                    .values()
                    .filter(|d| d.state == DriverState::Running && d.preempted.is_none())
                    .map(|d| d.id.clone())
                    .collect();
                for id in running {
                    if rng.random_bool(0.1) {
                        let (worker, mut status) = ended(&state, &id);
                        status.state = DriverState::Finished as i32;
                        status.exit_code = Some(0);
                        state.driver_status(&worker, status, now, &mut effects);
                    }
                }
            }
            // Kills ordered last turn are carried out now.
            for id in std::mem::take(&mut pending_kills) {
                if state.drivers[&id].state == DriverState::Running {
                    let (worker, status) = ended(&state, &id);
                    state.driver_status(&worker, status, now, &mut effects);
                }
            }
            effects.clear();
            state.schedule(now, &mut effects);
            state.preempt(now, &mut effects);
            for (victim, _) in preemption_orders(&effects) {
                let d = &state.drivers[&victim];
                let by = d
                    .preemptions
                    .last()
                    .map(|e| e.preemptor.clone())
                    .unwrap_or_default();
                assert!(
                    !pairs.contains(&(victim.clone(), by.clone())),
                    "seed {seed}: {by} preempted {victim}, which had preempted it"
                );
                pairs.insert((by, victim.clone()));
                pending_kills.push(victim);
                last_preemption_step = step;
                total += 1;
            }
            state
                .check_invariants()
                .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}"));
        }
        assert!(
            last_preemption_step < 90,
            "seed {seed}: still preempting at step {last_preemption_step}, long after arrivals stopped"
        );
    }
    assert!(total > 50, "the sequences preempt at all: {total}");
}

/// A preemption decided, written, and then the master restarts before the victim has ended:
/// the worker that comes back still running it is ordered to end it again (with its grace and
/// notice), and the victim waits again exactly once however often its end is reported.
#[test]
fn a_preemption_written_before_a_restart_is_carried_out_once_after_it() {
    let (mut state, mut effects) = state_with(
        &[2],
        vec![
            queue("owed", 2, preempting(true, false)),
            queue("lender", 0, preempting(false, false)),
        ],
    );
    let lent = state.submit(driver("lender", 2, 0), None, 0).unwrap();
    state.schedule(0, &mut effects);
    let owed = state.submit(driver("owed", 2, 0), None, 5_000).unwrap();
    state.schedule(5_000, &mut effects);
    assert!(state.preempt(5_000, &mut effects));

    let dir = tempfile::tempdir().unwrap();
    let (store, _) = crate::store::Store::open(dir.path()).unwrap();
    let empty = State::new("http://m".into(), state.started_ms, state.limits);
    store.save(&crate::store::diff(&empty, &state)).unwrap();
    drop(store);
    let (_, loaded) = crate::store::Store::open(dir.path()).unwrap();
    let mut state = State::recover(
        loaded,
        "http://m".into(),
        Instant::now(),
        6_000,
        state.limits,
    );
    let tree = QueueTree::new(vec![
        queue("owed", 2, preempting(true, false)),
        queue("lender", 0, preempting(false, false)),
    ])
    .unwrap();
    state.set_queues(Arc::new(tree), Arc::new(Tenants::default()));
    assert!(
        state.drivers[&lent].preempted.is_some(),
        "the mark was kept"
    );

    // The worker comes back, still running the victim: the order is repeated.
    let mut effects = Vec::new();
    let reg = Register {
        worker_id: "w1".into(),
        cores: 2,
        memory_mb: 64 * 1024,
        running: vec![hearth_common::proto::RunningDriver {
            driver_id: lent.clone(),
            attempt: 1,
        }],
        ..Default::default()
    };
    state.register_worker(reg, "h".into(), 7, Instant::now(), 7_000, &mut effects);
    state.finish_recovery(7_000, &mut effects);
    assert_eq!(preemption_orders(&effects), [(lent.clone(), 1_000)]);
    // Not decided a second time.
    effects.clear();
    state.schedule(7_500, &mut effects);
    assert!(!state.preempt(7_500, &mut effects));

    // Its end, reported twice (a retry after a broken stream): it waits again once.
    for now in [8_000, 8_100] {
        let status = DriverStatus {
            driver_id: lent.clone(),
            attempt: 1,
            state: DriverState::Killed as i32,
            exit_code: None,
            message: "killed".into(),
        };
        state.driver_status("w1", status, now, &mut effects);
        state.schedule(now, &mut effects);
    }
    let d = &state.drivers[&lent];
    assert_eq!(d.state, DriverState::Submitted);
    let requeued = d
        .history
        .iter()
        .filter(|h| h.message.starts_with("preempted for"))
        .count();
    assert_eq!(requeued, 1, "{:?}", d.history);
    assert_eq!(state.drivers[&owed].state, DriverState::Running);
    state.check_invariants().unwrap();
}

/// An application that kills an executor already being preempted lowers its target once.
#[test]
fn killing_an_executor_being_preempted_lowers_the_target_once() {
    let (mut state, mut effects) = state_with(
        &[2],
        vec![
            queue("owed", 1, preempting(true, false)),
            queue("lender", 0, preempting(false, false)),
        ],
    );
    let app_id = state.register_app(lender_app(2), None, "h", 0).unwrap();
    state.schedule(0, &mut effects);
    state.submit(driver("owed", 1, 0), None, 1_000).unwrap();
    effects.clear();
    state.schedule(1_000, &mut effects);
    assert!(state.preempt(1_000, &mut effects));
    let victim: u32 = preemption_orders(&effects)[0]
        .0
        .rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap();
    state
        .kill_executors(&app_id, &[victim], 1_500, &mut effects)
        .unwrap();
    assert_eq!(state.apps[&app_id].target, 1);
    state.check_invariants().unwrap();
}

/// Items of a reclaiming queue arriving turn after turn, while the first victims are still in
/// their grace: reclaim takes no more than the guarantee in all.
#[test]
fn reclaim_over_several_turns_stops_at_the_guarantee() {
    let (mut state, mut effects) = state_with(
        &[16],
        vec![
            queue("prod", 8, preempting(true, false)),
            queue("batch", 4, preempting(false, false)),
        ],
    );
    for _ in 0..16 {
        state.submit(driver("batch", 1, 0), None, 0).unwrap();
    }
    state.schedule(0, &mut effects);
    let mut evicted = 0;
    for turn in 1..=4 {
        let now = turn * 1_000;
        state.submit(driver("prod", 4, 0), None, now).unwrap();
        effects.clear();
        state.schedule(now, &mut effects);
        state.preempt(now, &mut effects);
        evicted += preemption_orders(&effects).len();
    }
    assert_eq!(evicted, 8, "prod's guarantee of 8 cores, in 1-core victims");
    state.check_invariants().unwrap();
}

/// A gang whose every member was lost waits whole again, and its timeout counts from then.
#[test]
fn a_gang_left_without_members_times_out_from_then() {
    let (mut state, mut effects) = state_with(&[4], vec![queue("q", 0, Preempt::default())]);
    let gang = ApplicationSpec {
        command: vec!["member".into()],
        executor_cores: 1,
        executor_memory_mb: 64,
        executors: 2,
        gang: true,
        gang_timeout_ms: 5_000,
        queue: "q".into(),
        ..Default::default()
    };
    let app_id = state.register_app(gang, None, "h", 0).unwrap();
    state.schedule(0, &mut effects);
    assert_eq!(state.apps[&app_id].live(), 2);
    assert!(state.worker_lost("w1", 1, "gone", 60_000, &mut effects));
    state.schedule(60_000, &mut effects);
    assert_eq!(state.apps[&app_id].gang_waiting_since_ms, Some(60_000));
    assert!(!state.enforce_time_limits(64_000, &mut effects));
    assert!(state.enforce_time_limits(65_000, &mut effects));
    let a = &state.apps[&app_id];
    assert_eq!(a.state, hearth_common::proto::ApplicationState::Failed);
    assert!(
        a.message.starts_with("gang timeout of 5s reached"),
        "{}",
        a.message
    );
}
