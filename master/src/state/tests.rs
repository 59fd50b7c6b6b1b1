//! Randomized sequences of everything that can happen to the cluster, checking after every
//! step that the accounting holds: no worker above its offer or below zero, every RUNNING
//! driver and live executor held by exactly the alive worker it names, no application beyond
//! its cap, no application outliving its driver, and every launch order fits.

use std::time::Duration;

use hearth_common::proto::{
    ApplicationSpec, ApplicationState, DriverSpec, DriverState, DriverStatus, ExecutorState,
    ExecutorStatus, Register, RunningDriver, RunningExecutor, master_message::Msg,
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use tokio::time::Instant;

use crate::state::{Effect, Limits, State};

fn register(id: &str, cores: u32, memory_mb: u64) -> Register {
    Register {
        resources: Default::default(),
        worker_id: id.into(),
        name: id.into(),
        host: "127.0.0.1".into(),
        web_port: 8081,
        cores,
        memory_mb,
        running: vec![],
        completed: vec![],
        running_executors: vec![],
        completed_executors: vec![],
        labels: Default::default(),
        keeps_reports: false,
    }
}

/// A fresh state with these workers registered, one stream each.
fn with_workers(workers: &[(&str, u32, u64)]) -> (State, Vec<Effect>) {
    let mut state = State::new("http://m".into(), 1_795_271_400_000, Limits::retaining(50));
    let mut effects = Vec::new();
    for (conn, (id, cores, memory_mb)) in (1..).zip(workers) {
        let reg = register(id, *cores, *memory_mb);
        state.register_worker(reg, "h".into(), conn, Instant::now(), 0, &mut effects);
    }
    (state, effects)
}

fn app_spec(cores: u32, memory_mb: u64, executors: u32, max_cores: u32) -> ApplicationSpec {
    ApplicationSpec {
        name: "app".into(),
        command: vec!["executor".into()],
        executor_cores: cores,
        executor_memory_mb: memory_mb,
        executors,
        max_cores,
        executor_retries: Some(2),
        ..Default::default()
    }
}

fn spec(cores: u32, memory_mb: u64, supervise: bool) -> DriverSpec {
    DriverSpec {
        command: vec!["true".into()],
        cores,
        memory_mb,
        supervise,
        max_retries: if supervise { 2 } else { 0 },
        ..Default::default()
    }
}

fn check_effects(state: &State, effects: &[Effect]) {
    for effect in effects {
        let Effect::Send { worker_id, message } = effect else {
            continue;
        };
        match &message.msg {
            Some(Msg::LaunchDriver(launch)) => {
                let d = state.driver(&launch.driver_id).unwrap();
                // Launches are checked against the state after the turn: the driver may already
                // have been lost again, but it was placed on a worker that existed.
                assert!(state.workers.contains_key(worker_id));
                assert_eq!(launch.spec.as_ref().unwrap().cores, d.spec.cores);
            }
            Some(Msg::LaunchExecutor(launch)) => {
                assert!(state.workers.contains_key(worker_id));
                if let Ok(app) = state.app(&launch.app_id) {
                    assert_eq!(launch.cores, app.spec.executor_cores);
                    assert!(launch.executor_id < app.next_executor_id);
                }
            }
            _ => {}
        }
    }
}

/// A random step about applications and executors.
fn app_step(state: &mut State, rng: &mut StdRng, now_ms: i64, effects: &mut Vec<Effect>) {
    let apps: Vec<String> = state.apps.keys().cloned().collect();
    let live: Vec<(String, u32, String)> = state
        .apps
        .values()
        .flat_map(|a| {
            a.executors
                .values()
                .filter(|e| e.state.is_live())
                .map(|e| (a.id.clone(), e.id, e.worker_id.clone()))
        })
        .collect();
    match rng.random_range(0..6) {
        0 => {
            // A client registers an application, with or without a running driver.
            let running: Vec<String> = state
                .drivers
                .values()
                .filter(|d| d.state == DriverState::Running)
                .map(|d| d.id.clone())
                .collect();
            let driver = if rng.random_bool(0.5) {
                running.choose(rng).cloned()
            } else {
                None
            };
            let spec = app_spec(
                rng.random_range(1..=3),
                rng.random_range(1..=8) * 128,
                rng.random_range(0..=4),
                rng.random_range(0..=8),
            );
            if hearth_common::spec::validate_app_spec(&spec).is_ok() {
                state
                    .register_app(spec, driver.as_deref().map(|d| (d, 0)), "", now_ms)
                    .unwrap();
            }
        }
        1 | 2 => {
            // A worker reports on an executor: started, or ended some way.
            if let Some((app_id, executor_id, worker)) = live.choose(rng).cloned() {
                let states = [
                    ExecutorState::Running,
                    ExecutorState::Exited,
                    ExecutorState::Failed,
                    ExecutorState::Killed,
                    ExecutorState::Lost,
                ];
                let status = ExecutorStatus {
                    app_id,
                    executor_id,
                    state: *states.choose(rng).unwrap() as i32,
                    exit_code: None,
                    message: String::new(),
                };
                state.executor_status(&worker, status, now_ms, effects);
            }
        }
        3 => {
            if let Some(app_id) = apps.choose(rng) {
                let _ = state.request_executors(app_id, rng.random_range(0..=3));
            }
        }
        4 => {
            // Kill some executors, sometimes naming one of another application.
            if let Some(app_id) = apps.choose(rng) {
                let mut ids: Vec<u32> = live
                    .iter()
                    .filter(|(a, _, _)| rng.random_bool(0.7) || a != app_id)
                    .take(2)
                    .map(|(_, e, _)| *e)
                    .collect();
                ids.push(rng.random_range(0..4));
                let before = state.app(app_id).unwrap().clone();
                if state.kill_executors(app_id, &ids, now_ms, effects).is_err() {
                    let after = state.app(app_id).unwrap();
                    assert_eq!(
                        before.target, after.target,
                        "a refused kill changes nothing"
                    );
                    assert_eq!(
                        before.live(),
                        after.live(),
                        "a refused kill changes nothing"
                    );
                }
            }
        }
        _ => {
            if let Some(app_id) = apps.choose(rng) {
                if rng.random_bool(0.5) {
                    let _ = state.kill_app(app_id, now_ms, effects);
                } else {
                    let _ = state.unregister_app(app_id, now_ms, effects);
                }
            }
        }
    }
}

#[test]
fn random_event_sequences_keep_accounting_exact() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let (mut launches, mut relaunches, mut fenced_kills) = (0, 0, 0);
    let (mut executor_launches, mut executor_kills, mut apps_failed) = (0, 0, 0);
    for round in 0..300 {
        let mut state = State::new("http://m".into(), 1_795_271_400_000, Limits::retaining(50));
        let start = Instant::now();
        let mut now = start;
        let mut conn = 0u64;
        let mut workers: Vec<(String, u64)> = Vec::new();
        for step in 0..200 {
            let mut effects = Vec::new();
            let now_ms = 1_795_271_400_000 + step;
            match rng.random_range(0..13) {
                0 | 1 => {
                    conn += 1;
                    let id = format!("worker-{round}-{}", workers.len());
                    let mut reg =
                        register(&id, rng.random_range(1..=8), rng.random_range(1..=16) * 256);
                    // Some workers offer GPUs, so the addresses are checked too.
                    let gpus = rng.random_range(0..=3);
                    if gpus > 0 {
                        reg.resources = vec![hearth_common::proto::ResourceAddresses {
                            name: "gpu".into(),
                            addresses: (0..gpus).map(|g| g.to_string()).collect(),
                        }];
                    }
                    state.register_worker(reg, "h".into(), conn, now, now_ms, &mut effects);
                    workers.push((id, conn));
                }
                2..=4 => {
                    let mut s = spec(
                        rng.random_range(1..=6),
                        rng.random_range(1..=12) * 256,
                        rng.random_bool(0.5),
                    );
                    if rng.random_bool(0.3) {
                        s.resources.insert("gpu".into(), rng.random_range(1..=2));
                    }
                    let app = rng.random_bool(0.4).then(|| {
                        let mut a = app_spec(
                            rng.random_range(1..=3),
                            rng.random_range(1..=8) * 128,
                            rng.random_range(1..=4),
                            0,
                        );
                        if rng.random_bool(0.3) {
                            a.executor_resources.insert("gpu".into(), 1);
                        }
                        a
                    });
                    state.submit(s, app, now_ms).expect("admitted");
                }
                5 | 6 => {
                    // A worker reports on one of its drivers, sometimes with a stale attempt.
                    let running: Vec<_> = state
                        .drivers
                        .values()
                        .filter(|d| d.state == DriverState::Running)
                        .cloned()
                        .collect();
                    if let Some(d) = running.choose(&mut rng) {
                        let terminal = [
                            DriverState::Finished,
                            DriverState::Failed,
                            DriverState::Killed,
                            DriverState::Error,
                        ];
                        let status = DriverStatus {
                            driver_id: d.id.clone(),
                            attempt: if rng.random_bool(0.9) {
                                d.attempt
                            } else {
                                d.attempt + 1
                            },
                            state: *terminal.choose(&mut rng).unwrap() as i32,
                            exit_code: Some(rng.random_range(0..3)),
                            message: String::new(),
                        };
                        let worker = d.worker_id.clone().unwrap();
                        state.driver_status(&worker, status, now_ms, &mut effects);
                    }
                }
                7 => {
                    if let Some((id, c)) = workers.choose(&mut rng).cloned() {
                        if rng.random_bool(0.5) {
                            state.worker_lost(&id, c, "test", now_ms, &mut effects);
                        } else {
                            state.decommission_worker(&id, c, "test");
                        }
                    }
                }
                8 => {
                    // A known worker reconnects, reporting some of its drivers and a stray one.
                    if let Some((id, _)) = workers.choose(&mut rng).cloned() {
                        conn += 1;
                        let w = state.workers.get(&id).unwrap().clone();
                        // Sometimes it comes back offering less than its drivers hold.
                        let (cores, memory) = if rng.random_bool(0.3) {
                            (
                                rng.random_range(1..=w.cores),
                                rng.random_range(1..=w.memory_mb),
                            )
                        } else {
                            (w.cores, w.memory_mb)
                        };
                        let mut reg = register(&id, cores, memory);
                        // Usually it offers the same GPUs again; sometimes none (a node change).
                        if rng.random_bool(0.8) {
                            reg.resources = w.resources.clone();
                        }
                        for d in &w.drivers {
                            if rng.random_bool(0.7) {
                                let attempt = state.drivers.get(d).unwrap().attempt;
                                reg.running.push(RunningDriver {
                                    driver_id: d.clone(),
                                    attempt,
                                });
                            }
                        }
                        reg.running.push(RunningDriver {
                            driver_id: "driver-20000101000000-9999".into(),
                            attempt: 1,
                        });
                        for key in &w.executors {
                            if rng.random_bool(0.7) {
                                reg.running_executors.push(RunningExecutor {
                                    app_id: key.app_id.clone(),
                                    executor_id: key.executor_id,
                                });
                            }
                        }
                        reg.running_executors.push(RunningExecutor {
                            app_id: "app-20000101000000-9999".into(),
                            executor_id: 0,
                        });
                        state.register_worker(reg, "h".into(), conn, now, now_ms, &mut effects);
                        let fenced = effects.iter().any(|e| matches!(e, Effect::Send { message, .. }
                            if matches!(&message.msg, Some(Msg::KillDriver(k)) if k.driver_id == "driver-20000101000000-9999")));
                        assert!(fenced, "a stray driver is killed");
                        let fenced = effects.iter().any(|e| matches!(e, Effect::Send { message, .. }
                            if matches!(&message.msg, Some(Msg::KillExecutor(k)) if k.app_id == "app-20000101000000-9999")));
                        assert!(fenced, "a stray executor is killed");
                        for entry in workers.iter_mut().filter(|(w, _)| *w == id) {
                            entry.1 = conn;
                        }
                    }
                }
                9..=11 => app_step(&mut state, &mut rng, now_ms, &mut effects),
                _ => {
                    let ids: Vec<String> = state.drivers.keys().cloned().collect();
                    if let Some(id) = ids.choose(&mut rng) {
                        let _ = state.kill_driver(id, now_ms, &mut effects);
                    }
                    now += Duration::from_millis(rng.random_range(0..3000));
                    state.expire_workers(now, Duration::from_secs(10), now_ms, &mut effects);
                }
            }
            state.schedule(now_ms, &mut effects);
            state.prune();
            if let Err(e) = state.check_invariants() {
                panic!("round {round} step {step}: {e}");
            }
            check_effects(&state, &effects);
            for e in &effects {
                if let Effect::Send { message, .. } = e {
                    match &message.msg {
                        Some(Msg::LaunchDriver(l)) => {
                            launches += 1;
                            if l.attempt > 1 {
                                relaunches += 1;
                            }
                        }
                        Some(Msg::KillDriver(_)) => fenced_kills += 1,
                        Some(Msg::LaunchExecutor(_)) => executor_launches += 1,
                        Some(Msg::KillExecutor(_)) => executor_kills += 1,
                        _ => {}
                    }
                }
            }
            for d in state.drivers.values() {
                let waiting = state.waiting.iter().any(|w| *w == d.id);
                let should_wait =
                    matches!(d.state, DriverState::Submitted | DriverState::Relaunching);
                assert_eq!(
                    waiting, should_wait,
                    "round {round} step {step}: {} {:?}",
                    d.id, d.state
                );
                if d.spec.supervise {
                    assert!(d.relaunches <= d.spec.max_retries);
                }
            }
            // Placement is complete: no waiting driver fits the room left on any alive worker
            // (drivers are placed before executors take more of it).
            if !state.recovering {
                for id in &state.waiting {
                    let d = state.driver(id).unwrap();
                    let fits = state.alive_workers().any(|w| {
                        w.free_cores() >= d.spec.cores
                            && w.free_memory_mb() >= d.spec.memory_mb
                            && w.pick(&d.spec.resources).is_some()
                    });
                    assert!(!fits, "round {round} step {step}: {id} waits but fits");
                }
            }
            for a in state.apps.values() {
                assert!(a.failures <= a.retries + 1, "round {round} step {step}");
                if a.state == ApplicationState::Failed && a.failures > a.retries {
                    apps_failed += 1;
                }
            }
        }
    }
    // The sequences reached the interesting paths.
    assert!(
        launches > 1000 && relaunches > 100 && fenced_kills > 100,
        "{launches} {relaunches} {fenced_kills}"
    );
    assert!(
        executor_launches > 1000 && executor_kills > 100 && apps_failed > 10,
        "{executor_launches} {executor_kills} {apps_failed}"
    );
}

fn executor_report(app_id: &str, id: u32, state: ExecutorState) -> ExecutorStatus {
    ExecutorStatus {
        app_id: app_id.into(),
        executor_id: id,
        state: state as i32,
        exit_code: Some(1),
        message: String::new(),
    }
}

fn live_executors(state: &State, app_id: &str) -> Vec<(u32, String)> {
    state
        .app(app_id)
        .unwrap()
        .executors
        .values()
        .filter(|e| e.state.is_live())
        .map(|e| (e.id, e.worker_id.clone()))
        .collect()
}

#[test]
fn failed_executors_are_replaced_until_the_limit_then_the_application_fails() {
    let (mut state, mut effects) = with_workers(&[("worker-a", 4, 4096)]);
    let driver = state
        .submit(spec(1, 100, false), Some(app_spec(1, 256, 2, 0)), 0)
        .expect("admitted");
    state.schedule(0, &mut effects);
    let app_id = state.driver(&driver).unwrap().app_id.clone().unwrap();
    assert_eq!(live_executors(&state, &app_id).len(), 2);
    // Retry limit 2: the third failure ends the application and stops its driver.
    for n in 1..=3 {
        let (id, worker) = live_executors(&state, &app_id)[0].clone();
        state.executor_status(
            &worker,
            executor_report(&app_id, id, ExecutorState::Failed),
            n,
            &mut effects,
        );
        state.schedule(n, &mut effects);
        state.check_invariants().unwrap();
    }
    let app = state.app(&app_id).unwrap();
    assert_eq!(app.state, ApplicationState::Failed);
    assert!(
        app.message
            .contains("3 executors failed, more than its limit of 2"),
        "{}",
        app.message
    );
    assert_eq!(app.live(), 0);
    assert_eq!(
        app.next_executor_id, 4,
        "two first executors and two replacements"
    );
    let w = state.worker("worker-a").unwrap();
    assert_eq!(
        (w.cores_used, w.executors.len()),
        (1, 0),
        "only the driver holds a slot"
    );
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Send { message, .. }
        if matches!(&message.msg, Some(Msg::KillDriver(k)) if k.driver_id == driver)))
    );
    // The driver, killed for its application, ends FAILED with the reason.
    let attempt = state.driver(&driver).unwrap().attempt;
    let killed = DriverStatus {
        driver_id: driver.clone(),
        attempt,
        state: DriverState::Killed as i32,
        exit_code: None,
        message: String::new(),
    };
    state.driver_status("worker-a", killed, 9, &mut effects);
    let d = state.driver(&driver).unwrap();
    assert_eq!(d.state, DriverState::Failed);
    assert!(d.message.contains(&app_id), "{}", d.message);
}

#[test]
fn executors_of_a_lost_worker_are_replaced_and_freed_when_unregistered() {
    let (mut state, mut effects) = with_workers(&[("worker-a", 4, 4096), ("worker-b", 4, 4096)]);
    let app_id = state
        .register_app(app_spec(1, 256, 4, 0), None, "10.0.0.9", 0)
        .unwrap();
    state.schedule(0, &mut effects);
    let on_b = live_executors(&state, &app_id)
        .iter()
        .filter(|(_, w)| w == "worker-b")
        .count();
    assert_eq!(on_b, 2, "spread out");
    assert!(state.worker_lost("worker-b", 2, "gone", 1, &mut effects));
    let app = state.app(&app_id).unwrap();
    assert_eq!(
        app.executors
            .values()
            .filter(|e| e.state == ExecutorState::Lost)
            .count(),
        2
    );
    assert_eq!(app.failures, 0, "a lost executor is not a failure");
    state.schedule(1, &mut effects);
    let live = live_executors(&state, &app_id);
    assert_eq!(live.len(), 4);
    assert!(live.iter().all(|(_, w)| w == "worker-a"));
    state.check_invariants().unwrap();

    // Unregistering frees every slot and orders every executor killed.
    effects.clear();
    state.unregister_app(&app_id, 2, &mut effects).unwrap();
    let kills = effects
        .iter()
        .filter(|e| {
            matches!(e, Effect::Send { message, .. }
        if matches!(&message.msg, Some(Msg::KillExecutor(_))))
        })
        .count();
    assert_eq!(kills, 4);
    assert_eq!(state.worker("worker-a").unwrap().cores_used, 0);
    assert_eq!(
        state.app(&app_id).unwrap().state,
        ApplicationState::Finished
    );
    state.check_invariants().unwrap();
}

#[test]
fn bad_requests_change_nothing() {
    let (mut state, mut effects) = with_workers(&[("worker-a", 8, 8192)]);
    let a = state
        .register_app(app_spec(2, 256, 1, 4), None, "", 0)
        .unwrap();
    let b = state
        .register_app(app_spec(1, 256, 3, 0), None, "", 0)
        .unwrap();
    state.schedule(0, &mut effects);
    // Over the cap: 4 cores / 2 per executor = 2 executors.
    let err = state.request_executors(&a, 2).unwrap_err().to_string();
    assert!(err.contains("over its cap"), "{err}");
    state.request_executors(&a, 1).unwrap();
    assert!(state.request_executors(&a, 0).is_err());
    assert!(
        state
            .request_executors("app-20000101000000-0042", 1)
            .is_err()
    );
    // Executor 2 exists only in b.
    let before = state.app(&a).unwrap().target;
    let err = state
        .kill_executors(&a, &[0, 2], 1, &mut effects)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no executor 2"), "{err}");
    assert_eq!(state.app(&a).unwrap().target, before);
    assert_eq!(state.app(&a).unwrap().live(), 1);
    assert_eq!(state.app(&b).unwrap().live(), 3);
    // A driver that is not running cannot own an application.
    let d = state
        .submit(spec(64, 100, false), None, 0)
        .expect("admitted");
    let err = state
        .register_app(app_spec(1, 1, 1, 0), Some((&d, 0)), "", 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("only a running driver"), "{err}");
    state.check_invariants().unwrap();
}

#[test]
fn a_lost_worker_relaunches_supervised_drivers_and_fails_the_rest() {
    let mut state = State::new("http://m".into(), 1_795_271_400_000, Limits::retaining(50));
    let now = Instant::now();
    let mut effects = Vec::new();
    state.register_worker(
        register("worker-a", 2, 1024),
        "h".into(),
        1,
        now,
        0,
        &mut effects,
    );
    let sup = state.submit(spec(1, 100, true), None, 0).expect("admitted");
    let plain = state
        .submit(spec(1, 100, false), None, 0)
        .expect("admitted");
    state.schedule(0, &mut effects);
    assert!(state.worker_lost("worker-a", 1, "gone", 1, &mut effects));
    assert_eq!(state.driver(&sup).unwrap().state, DriverState::Relaunching);
    assert_eq!(state.driver(&plain).unwrap().state, DriverState::Error);
    // A report on the old connection changes nothing.
    assert!(!state.worker_lost("worker-a", 1, "again", 2, &mut effects));

    state.register_worker(
        register("worker-b", 1, 1024),
        "h".into(),
        2,
        now,
        3,
        &mut effects,
    );
    state.schedule(3, &mut effects);
    let d = state.driver(&sup).unwrap();
    assert_eq!(
        (d.state, d.attempt, d.worker_id.as_deref()),
        (DriverState::Running, 2, Some("worker-b"))
    );
    state.check_invariants().unwrap();
}

#[test]
fn a_reconnect_confirms_executors_and_repeats_kills_that_may_have_been_lost() {
    let (mut state, mut effects) = with_workers(&[("worker-a", 4, 4096)]);
    let driver = state
        .submit(spec(1, 100, true), Some(app_spec(1, 256, 1, 0)), 0)
        .expect("admitted");
    state.schedule(0, &mut effects);
    let app_id = state.driver(&driver).unwrap().app_id.clone().unwrap();
    // An older attempt may not bind an application to the current one.
    let err = state
        .register_app(app_spec(1, 1, 1, 0), Some((&driver, 7)), "", 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("attempt 7 has ended"), "{err}");
    state.kill_driver(&driver, 1, &mut effects).unwrap();

    // The stream breaks before the kill or the executor's RUNNING report got through; the
    // worker comes back on a new stream, still running both.
    effects.clear();
    let mut reg = register("worker-a", 4, 4096);
    reg.running.push(RunningDriver {
        driver_id: driver.clone(),
        attempt: 1,
    });
    reg.running_executors.push(RunningExecutor {
        app_id: app_id.clone(),
        executor_id: 0,
    });
    state.register_worker(reg, "h".into(), 2, Instant::now(), 2, &mut effects);
    let executor = &state.app(&app_id).unwrap().executors[&0];
    assert_eq!(executor.state, ExecutorState::Running);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Send { message, .. }
            if matches!(&message.msg, Some(Msg::KillDriver(k)) if k.driver_id == driver))),
        "the kill is ordered again: {effects:?}"
    );
    state.check_invariants().unwrap();
}

/// The queue in front of a full cluster is not tried again each turn, yet nothing behind it is
/// ever skipped: not after a waiting driver leaves the queue, and not when room frees up.
#[test]
fn a_long_queue_is_tried_once_and_a_change_in_it_or_in_room_is_noticed() {
    let (mut state, mut effects) = with_workers(&[("w", 4, 4096)]);
    let big = state
        .submit(spec(3, 512, false), None, 1)
        .expect("admitted");
    state.schedule(1, &mut effects);
    assert_eq!(state.driver(&big).unwrap().state, DriverState::Running);
    // Two 2-core drivers wait (1 core free); then one of them is killed while waiting.
    let a = state
        .submit(spec(2, 512, false), None, 2)
        .expect("admitted");
    let b = state
        .submit(spec(2, 512, false), None, 3)
        .expect("admitted");
    state.schedule(3, &mut effects);
    assert_eq!(state.waiting.len(), 2);
    state.kill_driver(&a, 4, &mut effects).unwrap();
    // A 1-core driver arrives behind the one left: it fits, and is placed.
    let small = state
        .submit(spec(1, 256, false), None, 5)
        .expect("admitted");
    state.schedule(5, &mut effects);
    assert_eq!(state.driver(&small).unwrap().state, DriverState::Running);
    assert_eq!(state.waiting.iter().collect::<Vec<_>>(), vec![&b]);
    // Room frees up: the driver at the front, tried before, is tried again and placed.
    let status = DriverStatus {
        driver_id: big.clone(),
        attempt: 1,
        state: DriverState::Finished as i32,
        exit_code: Some(0),
        message: String::new(),
    };
    state.driver_status("w", status, 6, &mut effects);
    state.schedule(6, &mut effects);
    assert_eq!(state.driver(&b).unwrap().state, DriverState::Running);
    assert!(state.waiting.is_empty());
    state.check_invariants().unwrap();
}

/// Room coming back that none of the waiting drivers could use (small work coming and going
/// beside a queue of large ones) does not make the turn try the queue again; room that the
/// smallest of them fits does.
#[test]
fn room_too_small_for_any_waiting_driver_does_not_retry_the_queue() {
    let (mut state, mut effects) = with_workers(&[("w", 8, 8192)]);
    let finished = |driver_id: &str| DriverStatus {
        driver_id: driver_id.into(),
        attempt: 1,
        state: DriverState::Finished as i32,
        exit_code: Some(0),
        message: String::new(),
    };
    let long = state.submit(spec(4, 512, false), None, 1).unwrap();
    let mid = state.submit(spec(2, 512, false), None, 2).unwrap();
    state.schedule(2, &mut effects);
    let wide: Vec<String> = (0..3)
        .map(|n| state.submit(spec(5, 512, false), None, 3 + n).unwrap())
        .collect();
    state.schedule(6, &mut effects);
    let tried = |state: &State| state.tried.as_ref().map(|t| (t.count, t.smallest));
    assert_eq!(tried(&state), Some((3, (5, 512))));
    // The 2-core driver ends: 4 cores free, more than the queue was tried against, less than 5.
    state.driver_status("w", finished(&mid), 7, &mut effects);
    let covered = state
        .tried
        .as_ref()
        .map(|t| t.covers(&state.waiting, &state.workers));
    assert_eq!(
        covered,
        Some(3),
        "the queue stays tried: nothing it could use came back"
    );
    state.schedule(7, &mut effects);
    assert_eq!(tried(&state), Some((3, (5, 512))));
    // The 4-core driver ends: 8 cores free, and the first wide driver starts.
    state.driver_status("w", finished(&long), 8, &mut effects);
    state.schedule(8, &mut effects);
    assert_eq!(state.driver(&wide[0]).unwrap().state, DriverState::Running);
    assert_eq!(state.waiting.len(), 2);
    state.check_invariants().unwrap();
}

/// The queue heads kept between looks are always those read afresh: as drivers join behind
/// (one of a higher priority among them), and as a head or the last driver leaves.
#[test]
fn kept_queue_heads_are_those_read_afresh() {
    let (mut state, mut effects) = with_workers(&[("w", 1, 1024)]);
    let tree = crate::schedule::QueueTree::new(vec![crate::schedule::QueueDef::named("other")]);
    state.set_queues(
        std::sync::Arc::new(tree.unwrap()),
        std::sync::Arc::new(crate::tenants::Tenants::default()),
    );
    let heads = |state: &mut State| -> Vec<(String, i32, usize)> {
        state
            .queue_heads()
            .iter()
            .map(|(q, h)| (q.clone(), h.priority, h.pos))
            .collect()
    };
    let afresh = |state: &mut State| {
        let mut fresh = state.clone();
        fresh.forget_tried();
        heads(&mut fresh)
    };
    let submit = |state: &mut State, queue: &str, priority: i32, at: i64| {
        let spec = DriverSpec {
            queue: queue.into(),
            priority,
            ..spec(2, 512, false)
        };
        state.submit(spec, None, at).unwrap()
    };
    let a = submit(&mut state, "", 0, 1);
    let b = submit(&mut state, "", 0, 2);
    assert_eq!(heads(&mut state), vec![("default".into(), 0, 0)]);
    let c = submit(&mut state, "", 5, 3);
    let d = submit(&mut state, "other", 0, 4);
    assert_eq!(heads(&mut state), afresh(&mut state));
    assert_eq!(heads(&mut state)[0], ("default".into(), 5, 2));
    for (gone, at) in [(d, 5), (c, 6), (a, 7)] {
        state.kill_driver(&gone, at, &mut effects).unwrap();
        let kept = heads(&mut state);
        assert_eq!(kept, afresh(&mut state), "after {gone} left");
    }
    assert_eq!(heads(&mut state), vec![("default".into(), 0, 0)]);
    assert_eq!(state.waiting.front(), Some(&b));
}

/// Running drivers are read for their time limits only once one may have reached it, and a
/// driver launched after a read that found no limit near is still ended on time.
#[test]
fn a_time_limit_launched_after_a_quiet_look_is_kept() {
    let (mut state, mut effects) = with_workers(&[("w", 4, 4096)]);
    state.submit(spec(1, 256, false), None, 0).unwrap();
    state.schedule(0, &mut effects);
    assert!(!state.enforce_time_limits(1_000, &mut effects));
    assert_eq!(state.limits_quiet_until_ms, Some(i64::MAX));
    let limited = DriverSpec {
        time_limit_ms: 5_000,
        ..spec(1, 256, false)
    };
    let id = state.submit(limited, None, 2_000).unwrap();
    state.schedule(2_000, &mut effects);
    assert_eq!(state.limits_quiet_until_ms, Some(7_000));
    effects.clear();
    assert!(!state.enforce_time_limits(6_999, &mut effects));
    assert!(state.enforce_time_limits(7_000, &mut effects));
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Send { message, .. }
            if matches!(&message.msg, Some(Msg::KillDriver(k)) if k.driver_id == id))),
        "{effects:?}"
    );
}

/// Between the turns of a burst, drivers killed, submitted or too large for any worker change
/// the waiting list the last turn left: the next turn's asks follow the list as it is, so
/// nothing is placed twice, killed work is never launched, and order holds.
#[test]
fn a_burst_changed_between_its_turns_places_what_waits_now_in_order() {
    let (mut state, mut effects) = with_workers(&[("a", 4096, 1 << 30), ("b", 4096, 1 << 30)]);
    let total = super::MAX_LAUNCHES_PER_TURN + 10;
    let mut ids: Vec<String> = (0..total)
        .map(|n| state.submit(spec(1, 1, false), None, n as i64).unwrap())
        .collect();
    // Fits nowhere: it waits in front of the burst's rest every turn.
    let huge = state.submit(spec(1 << 20, 1, false), None, 0).unwrap();
    state.schedule(10_000, &mut effects);
    assert!(state.placement_pending());
    let first_turn = effects.len();
    // One of the rest is killed, one more joins behind.
    let killed = ids.remove(total - 5);
    state.kill_driver(&killed, 10_001, &mut effects).unwrap();
    ids.push(state.submit(spec(1, 1, false), None, 10_001).unwrap());
    let before = effects.len();
    state.schedule(10_002, &mut effects);
    assert!(!state.placement_pending());
    let launched: Vec<&str> = effects[..first_turn]
        .iter()
        .chain(&effects[before..])
        .filter_map(|e| match e {
            Effect::Send { message, .. } => match &message.msg {
                Some(Msg::LaunchDriver(l)) => Some(l.driver_id.as_str()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(launched, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(state.waiting.iter().collect::<Vec<_>>(), [&huge]);
    assert_eq!(state.driver(&killed).unwrap().state, DriverState::Killed);
    state.check_invariants().unwrap();
}

/// A burst larger than one turn launches is placed over turns in a row, in order: the first
/// turn says more is to place, the next places the rest, and nothing is lost or placed twice.
#[test]
fn a_burst_beyond_one_turn_is_placed_by_the_next_turns_in_order() {
    let (mut state, mut effects) = with_workers(&[("a", 4096, 1 << 30), ("b", 4096, 1 << 30)]);
    let total = super::MAX_LAUNCHES_PER_TURN + 3;
    let ids: Vec<String> = (0..total)
        .map(|n| state.submit(spec(1, 1, false), None, n as i64).unwrap())
        .collect();
    state.schedule(10_000, &mut effects);
    assert_eq!(effects.len(), super::MAX_LAUNCHES_PER_TURN);
    assert!(state.placement_pending());
    assert_eq!(
        state.waiting.iter().collect::<Vec<_>>(),
        ids[total - 3..].iter().collect::<Vec<_>>()
    );
    state.schedule(10_001, &mut effects);
    assert!(!state.placement_pending());
    assert!(state.waiting.is_empty());
    assert_eq!(effects.len(), total);
    assert!(
        ids.iter()
            .all(|id| state.driver(id).unwrap().state == DriverState::Running)
    );
    state.check_invariants().unwrap();
}

#[test]
fn a_full_queue_refuses_new_drivers_but_answers_a_retry_with_its_driver() {
    let limits = Limits {
        max_waiting: 2,
        ..Limits::retaining(50)
    };
    let mut state = State::new("http://m".into(), 1_795_271_400_000, limits);
    let first = state
        .submit_once(spec(1, 100, false), None, Some("sub-1".into()), 1)
        .expect("admitted");
    state
        .submit(spec(1, 100, false), None, 2)
        .expect("admitted");
    let before = (
        state.drivers.len(),
        state.waiting.len(),
        state.next_driver_seq,
    );
    let refused = state.submit(spec(1, 100, false), None, 3);
    assert!(
        matches!(&refused, Err(crate::Error::ResourceExhausted(m)) if m.contains("2 drivers are waiting already")),
        "{refused:?}"
    );
    assert_eq!(
        (
            state.drivers.len(),
            state.waiting.len(),
            state.next_driver_seq
        ),
        before,
        "a refused submission changes nothing"
    );
    // A client retrying an acknowledged submission gets its driver even with the queue full.
    let retry = state
        .submit_once(spec(1, 100, false), None, Some("sub-1".into()), 4)
        .expect("a retry is answered");
    assert_eq!(retry, first);
}

#[test]
fn a_submission_id_reused_for_other_work_is_refused_and_changes_nothing() {
    let mut state = State::new("http://m".into(), 1_795_271_400_000, Limits::retaining(50));
    let first = state
        .submit_once(spec(1, 100, false), None, Some("nightly-1".into()), 1)
        .expect("admitted");
    let again = state
        .submit_once(spec(1, 100, false), None, Some("nightly-1".into()), 2)
        .expect("a retry is answered");
    assert_eq!(again, first);
    let before = (state.drivers.len(), state.next_driver_seq);
    let other = state.submit_once(spec(2, 100, false), None, Some("nightly-1".into()), 3);
    assert!(
        matches!(&other, Err(crate::Error::AlreadyExists(m))
            if m.contains("submission_id: nightly-1 was already used for") && m.contains(&first)),
        "{other:?}"
    );
    assert_eq!((state.drivers.len(), state.next_driver_seq), before);
}

/// A state with `worker-a` (2 cores) running a supervised `at_most_one` driver: its id.
fn at_most_one_on_worker_a() -> (State, Vec<Effect>, String) {
    let (mut state, mut effects) = with_workers(&[("worker-a", 2, 1024)]);
    let once = state
        .submit(
            DriverSpec {
                at_most_one: true,
                ..spec(1, 100, true)
            },
            None,
            0,
        )
        .expect("admitted");
    state.schedule(0, &mut effects);
    (state, effects, once)
}

#[test]
fn an_at_most_one_driver_waits_out_its_lost_workers_lease_then_runs_elsewhere() {
    let (mut state, mut effects, once) = at_most_one_on_worker_a();
    state.register_worker(
        register("worker-b", 2, 1024),
        "h".into(),
        2,
        Instant::now(),
        0,
        &mut effects,
    );
    assert!(state.worker_lost("worker-a", 1, "gone", 1_000, &mut effects));
    let d = state.driver(&once).unwrap();
    assert_eq!(d.state, DriverState::Relaunching);
    assert_eq!(d.waiting_code, Some(crate::schedule::WaitCode::Fencing));
    let until = d.fenced_until_ms.expect("held back");
    // The lease (10 s) plus the margin, from when the worker was last heard of (just now).
    assert!((11_000..=11_200).contains(&(until - 1_000)), "{until}");
    let deadline = d.fence_deadline.expect("held back on the monotonic clock");
    let wait = deadline.saturating_duration_since(Instant::now());
    assert!(wait > std::time::Duration::from_secs(10), "{wait:?}");
    state.schedule(2_000, &mut effects);
    assert_eq!(
        state.driver(&once).unwrap().state,
        DriverState::Relaunching,
        "placed during the lease"
    );
    assert!(!state.fence_due(deadline - std::time::Duration::from_millis(1)));
    assert!(state.fence_due(deadline));
    assert!(state.release_fences(deadline));
    state.schedule(until, &mut effects);
    let d = state.driver(&once).unwrap();
    assert_eq!(
        (d.state, d.attempt, d.worker_id.as_deref()),
        (DriverState::Running, 2, Some("worker-b"))
    );
    state.check_invariants().unwrap();
}

#[test]
fn an_old_copy_on_a_returning_worker_holds_an_at_most_one_driver_until_it_ends() {
    let (mut state, mut effects, once) = at_most_one_on_worker_a();
    assert!(state.worker_lost("worker-a", 1, "gone", 1_000, &mut effects));
    let d = state.driver(&once).unwrap();
    let (until, deadline) = (
        d.fenced_until_ms.expect("held back"),
        d.fence_deadline.expect("held back"),
    );
    // It comes back still running attempt 1: ordered to end it, and the driver waits for that.
    let mut back = register("worker-a", 2, 1024);
    back.running = vec![hearth_common::proto::RunningDriver {
        driver_id: once.clone(),
        attempt: 1,
    }];
    state.register_worker(back, "h".into(), 3, Instant::now(), 2_000, &mut effects);
    assert_eq!(
        state.driver(&once).unwrap().old_copy_on.as_deref(),
        Some("worker-a")
    );
    assert!(
        !state.fence_due(deadline + std::time::Duration::from_secs(60)),
        "released with the old copy running"
    );
    state.driver_status(
        "worker-a",
        hearth_common::proto::DriverStatus {
            driver_id: once.clone(),
            attempt: 1,
            state: DriverState::Killed as i32,
            exit_code: None,
            message: "fenced".into(),
        },
        3_000,
        &mut effects,
    );
    assert!(state.fence_due(deadline));
    assert!(state.release_fences(deadline));
    state.schedule(until, &mut effects);
    assert_eq!(state.driver(&once).unwrap().state, DriverState::Running);
    state.check_invariants().unwrap();
}

#[test]
fn a_placement_its_worker_never_received_is_launched_again_not_lost() {
    let (mut state, mut effects) = with_workers(&[("worker-a", 2, 1024)]);
    let plain = state
        .submit(spec(1, 100, false), None, 0)
        .expect("admitted");
    state.schedule(0, &mut effects);
    assert_eq!(state.driver(&plain).unwrap().state, DriverState::Running);
    // The stream broke before the launch arrived: the worker reconnects running nothing and
    // having ended nothing.
    let mut back = register("worker-a", 2, 1024);
    back.keeps_reports = true;
    state.register_worker(back, "h".into(), 2, Instant::now(), 10, &mut effects);
    let d = state.driver(&plain).unwrap();
    assert_eq!(d.state, DriverState::Submitted, "{}", d.message);
    assert!(d.message.contains("never reached"), "{}", d.message);
    state.schedule(20, &mut effects);
    let d = state.driver(&plain).unwrap();
    assert_eq!((d.state, d.attempt), (DriverState::Running, 2));
    state.check_invariants().unwrap();
}

#[test]
fn a_master_restarted_with_a_shorter_timeout_fences_with_the_longer_leases_until_they_end() {
    let loaded = crate::state::stored::Loaded {
        meta: Some(crate::state::stored::Meta {
            format: 1,
            started_ms: 1,
            next_driver_seq: 0,
            next_app_seq: 0,
            lease_ms: 60_000,
        }),
        ..Default::default()
    };
    let now = Instant::now();
    let mut state = State::recover(loaded, "http://m".into(), now, 5, Limits::retaining(50));
    assert_eq!(
        state.limits.lease_ms, 60_000,
        "workers may hold leases of 60 s"
    );
    assert!(!state.lower_lease(now + std::time::Duration::from_secs(59)));
    assert!(state.lower_lease(now + std::time::Duration::from_secs(60)));
    assert_eq!(
        state.limits.lease_ms, 10_000,
        "this master's own from then on"
    );
}
