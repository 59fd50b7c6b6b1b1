//! Randomized sequences of everything that can happen to the cluster, checking after every
//! step that the accounting holds: no worker above its offer or below zero, every RUNNING
//! driver held by exactly the alive worker it names, and every launch order fits.

use std::time::Duration;

use hearth_common::proto::{
    DriverSpec, DriverState, DriverStatus, Register, RunningDriver, master_message::Msg,
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use tokio::time::Instant;

use crate::state::{Effect, State};

fn register(id: &str, cores: u32, memory_mb: u64) -> Register {
    Register {
        worker_id: id.into(),
        name: id.into(),
        host: "127.0.0.1".into(),
        web_port: 8081,
        cores,
        memory_mb,
        running: vec![],
        completed: vec![],
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
        if let Effect::Send { worker_id, message } = effect
            && let Some(Msg::LaunchDriver(launch)) = &message.msg
        {
            let d = state.driver(&launch.driver_id).unwrap();
            // Launches are checked against the state after the turn: the driver may already
            // have been lost again, but it was placed on a worker that existed.
            assert!(state.workers.contains_key(worker_id));
            assert_eq!(launch.spec.as_ref().unwrap().cores, d.spec.cores);
        }
    }
}

#[test]
fn random_event_sequences_keep_accounting_exact() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let (mut launches, mut relaunches, mut fenced_kills) = (0, 0, 0);
    for round in 0..300 {
        let mut state = State::new("http://m".into(), 1_795_271_400_000, 50);
        let start = Instant::now();
        let mut now = start;
        let mut conn = 0u64;
        let mut workers: Vec<(String, u64)> = Vec::new();
        for step in 0..200 {
            let mut effects = Vec::new();
            let now_ms = 1_795_271_400_000 + step;
            match rng.random_range(0..10) {
                0 | 1 => {
                    conn += 1;
                    let id = format!("worker-{round}-{}", workers.len());
                    let reg =
                        register(&id, rng.random_range(1..=8), rng.random_range(1..=16) * 256);
                    state.register_worker(reg, "h".into(), conn, now, now_ms, &mut effects);
                    workers.push((id, conn));
                }
                2..=4 => {
                    let s = spec(
                        rng.random_range(1..=6),
                        rng.random_range(1..=12) * 256,
                        rng.random_bool(0.5),
                    );
                    state.submit(s, now_ms);
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
                        state.driver_status(&worker, status, now_ms);
                    }
                }
                7 => {
                    if let Some((id, c)) = workers.choose(&mut rng).cloned() {
                        if rng.random_bool(0.5) {
                            state.worker_lost(&id, c, "test", now_ms);
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
                        state.register_worker(reg, "h".into(), conn, now, now_ms, &mut effects);
                        let fenced = effects.iter().any(|e| matches!(e, Effect::Send { message, .. }
                            if matches!(&message.msg, Some(Msg::KillDriver(k)) if k.driver_id == "driver-20000101000000-9999")));
                        assert!(fenced, "a stray driver is killed");
                        for entry in workers.iter_mut().filter(|(w, _)| *w == id) {
                            entry.1 = conn;
                        }
                    }
                }
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
        }
    }
    // The sequences reached the interesting paths.
    assert!(
        launches > 1000 && relaunches > 100 && fenced_kills > 100,
        "{launches} {relaunches} {fenced_kills}"
    );
}

#[test]
fn a_lost_worker_relaunches_supervised_drivers_and_fails_the_rest() {
    let mut state = State::new("http://m".into(), 1_795_271_400_000, 50);
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
    let sup = state.submit(spec(1, 100, true), 0);
    let plain = state.submit(spec(1, 100, false), 0);
    state.schedule(0, &mut effects);
    assert!(state.worker_lost("worker-a", 1, "gone", 1));
    assert_eq!(state.driver(&sup).unwrap().state, DriverState::Relaunching);
    assert_eq!(state.driver(&plain).unwrap().state, DriverState::Error);
    // A report on the old connection changes nothing.
    assert!(!state.worker_lost("worker-a", 1, "again", 2));

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
