//! Reservations as the master's turns see them: room held for a waiting driver stays out of
//! reach of executors too, turn after turn, and a holder its queue's cap stops lets go.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Effect, Limits, State};
use crate::{
    schedule::{Amount, QueueDef, QueueTree},
    tenants::Tenants,
};
use hearth_common::proto::{ApplicationSpec, DriverSpec, Register};

fn one_worker(cores: u32) -> (State, Vec<Effect>) {
    let limits = Limits {
        reserve_after_ms: Some(0),
        ..Limits::retaining(50)
    };
    let mut state = State::new("http://m".into(), 1_795_271_400_000, limits);
    let mut effects = Vec::new();
    let reg = Register {
        worker_id: "w1".into(),
        cores,
        memory_mb: 4096,
        ..Default::default()
    };
    state.register_worker(reg, "h".into(), 1, Instant::now(), 0, &mut effects);
    (state, effects)
}

fn driver(cores: u32, queue: &str) -> DriverSpec {
    DriverSpec {
        command: vec!["job".into()],
        cores,
        memory_mb: 64,
        queue: queue.into(),
        ..Default::default()
    }
}

/// A gang of `members` executors of 1 core and 64 MiB.
fn gang_of(members: u32) -> ApplicationSpec {
    ApplicationSpec {
        command: vec!["member".into()],
        executor_cores: 1,
        executor_memory_mb: 64,
        executors: members,
        gang: true,
        ..Default::default()
    }
}

fn free_cores(state: &State) -> u32 {
    state.workers.get("w1").map_or(0, |w| w.free_cores())
}

#[test]
fn room_held_for_a_driver_goes_to_no_executor_turn_after_turn() {
    let (mut state, mut effects) = one_worker(4);
    for _ in 0..3 {
        state.submit(driver(1, ""), None, 0).unwrap();
    }
    state.schedule(1_000, &mut effects);
    let big = state.submit(driver(4, ""), None, 1_000).unwrap();
    state.schedule(2_000, &mut effects);
    let app = ApplicationSpec {
        command: vec!["executor".into()],
        executor_cores: 1,
        executor_memory_mb: 64,
        executors: 1,
        ..Default::default()
    };
    let app_id = state.register_app(app, None, "h", 2_000).unwrap();
    for now in [3_000, 5_000, 7_000] {
        state.schedule(now, &mut effects);
        assert_eq!(state.reservations.get(&big).map(String::as_str), Some("w1"));
        assert_eq!(
            free_cores(&state),
            1,
            "at {now}: the held core was given away"
        );
        assert_eq!(state.apps.get(&app_id).map(|a| a.live()), Some(0));
    }
}

#[test]
fn a_holder_held_back_by_its_queues_cap_lets_the_room_go() {
    let (mut state, mut effects) = one_worker(4);
    let tree = QueueTree::new(vec![QueueDef {
        max: Some(Amount::new(4, u64::MAX)),
        ..QueueDef::named("capped")
    }])
    .unwrap();
    state.set_queues(Arc::new(tree), Arc::new(Tenants::default()));
    for _ in 0..3 {
        state.submit(driver(1, "default"), None, 0).unwrap();
    }
    state.schedule(1_000, &mut effects);
    let big = state.submit(driver(4, "capped"), None, 1_000).unwrap();
    state.schedule(2_000, &mut effects);
    state.schedule(3_000, &mut effects);
    assert!(state.reservations.contains_key(&big));
    // The cap drops below what it needs: it cannot start whatever is held.
    let tree = QueueTree::new(vec![QueueDef {
        max: Some(Amount::new(2, u64::MAX)),
        ..QueueDef::named("capped")
    }])
    .unwrap();
    state.set_queues(Arc::new(tree), Arc::new(Tenants::default()));
    state.schedule(4_000, &mut effects);
    // The next work that wants room finds the reservation gone and the room free.
    let small = state.submit(driver(1, "default"), None, 5_000).unwrap();
    state.schedule(6_000, &mut effects);
    assert!(!state.reservations.contains_key(&big));
    assert!(
        state
            .drivers
            .get(&small)
            .is_some_and(|d| d.worker_id.is_some())
    );
}

/// A driver waiting on its queue's cap starts when the queue's running driver ends, although
/// the room that frees is no more than the room it was tried against (another queue's driver
/// was placed in between).
#[test]
fn a_driver_waiting_on_its_cap_starts_when_its_queue_frees_though_room_does_not_grow() {
    let (mut state, mut effects) = one_worker(4);
    let tree = QueueTree::new(vec![
        QueueDef {
            max: Some(Amount::new(1, u64::MAX)),
            ..QueueDef::named("capped")
        },
        QueueDef::named("other"),
    ])
    .unwrap();
    state.set_queues(Arc::new(tree), Arc::new(Tenants::default()));
    let first = state.submit(driver(1, "capped"), None, 0).unwrap();
    state.schedule(1_000, &mut effects);
    let second = state.submit(driver(1, "capped"), None, 1_000).unwrap();
    state.schedule(2_000, &mut effects);
    let other = state.submit(driver(1, "other"), None, 2_000).unwrap();
    state.schedule(3_000, &mut effects);
    let placed =
        |state: &State, id: &str| state.drivers.get(id).is_some_and(|d| d.worker_id.is_some());
    assert!(placed(&state, &first) && placed(&state, &other));
    assert!(!placed(&state, &second), "the cap holds it back");
    state.kill_driver(&first, 4_000, &mut effects).unwrap();
    let status = hearth_common::proto::DriverStatus {
        driver_id: first.clone(),
        attempt: 1,
        state: hearth_common::proto::DriverState::Killed as i32,
        exit_code: None,
        message: String::new(),
    };
    state.driver_status("w1", status, 5_000, &mut effects);
    state.schedule(5_000, &mut effects);
    assert!(
        placed(&state, &second),
        "the cap freed: {:?}",
        state.drivers.get(&second)
    );
    state.check_invariants().unwrap();
}

#[test]
fn an_application_waiting_for_executors_says_why_and_why_no_start_time() {
    let (mut state, mut effects) = one_worker(1);
    state.submit(driver(1, ""), None, 0).unwrap();
    state.schedule(1_000, &mut effects);
    let app = ApplicationSpec {
        command: vec!["executor".into()],
        executor_cores: 1,
        executor_memory_mb: 64,
        executors: 2,
        ..Default::default()
    };
    let app_id = state.register_app(app, None, "h", 1_000).unwrap();
    state.schedule(2_000, &mut effects);
    let view = state.apps.get(&app_id).map(|a| a.to_proto()).unwrap();
    assert_eq!(view.waiting_code, "NO_FREE_SLOTS");
    assert!(
        view.waiting_reason.starts_with("2 more executors wanted"),
        "{view:?}"
    );
    assert_eq!(
        view.estimate,
        "unknown: executors waiting for room hold no reservation"
    );
    assert_eq!(view.queue, "default");
}

/// Small drivers keep coming and going on a full worker; a gang of 4 that needs the whole
/// worker starts once it has waited `reserve_after` and the small ones there have ended,
/// instead of losing each freed core to the next small driver.
#[test]
fn a_gang_that_waited_long_enough_is_not_starved_by_small_work() {
    let (mut state, mut effects) = one_worker(4);
    state.limits.reserve_after_ms = Some(5_000);
    let mut running: Vec<String> = (0..4)
        .map(|_| state.submit(driver(1, ""), None, 0).unwrap())
        .collect();
    state.schedule(0, &mut effects);
    let gang_id = state.register_app(gang_of(4), None, "h", 0).unwrap();
    let mut started_at = None;
    for step in 1..=40 {
        let now = step * 1_000;
        // The oldest small driver ends and a new one is submitted.
        let done = running.remove(0);
        let attempt = state.drivers[&done].attempt;
        let status = hearth_common::proto::DriverStatus {
            driver_id: done,
            attempt,
            state: hearth_common::proto::DriverState::Finished as i32,
            exit_code: Some(0),
            message: String::new(),
        };
        state.driver_status("w1", status, now, &mut effects);
        let next = state.submit(driver(1, ""), None, now).unwrap();
        state.schedule(now, &mut effects);
        running.retain(|id| state.drivers[id].worker_id.is_some());
        if state.drivers[&next].worker_id.is_some() {
            running.push(next);
        }
        state.check_invariants().unwrap();
        if state.apps[&gang_id].live() == 4 {
            started_at = Some(now);
            break;
        }
        assert_eq!(state.apps[&gang_id].live(), 0, "never partly placed");
    }
    let started_at = started_at.expect("the gang started");
    // Reserved at 5 s; the four small drivers there end within the next four turns.
    assert!(started_at <= 10_000, "started at {started_at}");
}

/// A gang's reservation on a worker that dies is given up: the gang waits again with the
/// reason the cluster gives now, and holds no room on the survivor.
#[test]
fn a_gang_reservation_on_a_worker_that_dies_is_given_up() {
    let (mut state, mut effects) = one_worker(2);
    state.limits.reserve_after_ms = Some(0);
    let reg = Register {
        worker_id: "w2".into(),
        cores: 2,
        memory_mb: 4096,
        ..Default::default()
    };
    state.register_worker(reg, "h".into(), 2, Instant::now(), 0, &mut effects);
    let small = state.submit(driver(1, ""), None, 0).unwrap();
    state.schedule(0, &mut effects);
    let gang_id = state.register_app(gang_of(4), None, "h", 0).unwrap();
    state.schedule(1_000, &mut effects);
    state.schedule(2_000, &mut effects);
    assert!(state.claims.contains_key(&gang_id), "the gang reserved");
    let on = state.drivers[&small].worker_id.clone().unwrap_or_default();
    let other = if on == "w1" { "w2" } else { "w1" };
    assert!(state.worker_lost(
        other,
        if other == "w1" { 1 } else { 2 },
        "gone",
        3_000,
        &mut effects
    ));
    state.schedule(3_000, &mut effects);
    assert!(
        !state.claims.contains_key(&gang_id),
        "the reservation was given up"
    );
    let a = &state.apps[&gang_id];
    assert_eq!(a.live(), 0);
    assert_eq!(a.waiting_code, Some(crate::schedule::WaitCode::TooLarge));
    state.check_invariants().unwrap();
}
