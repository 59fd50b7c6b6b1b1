//! The scheduler alone: 10,000 waiting drivers placed over 1,000 workers, in-process through
//! the master's own state transitions, with no I/O.

use std::time::Instant;

use anyhow::Result;
use hearth_common::proto::{DriverSpec, Register};
use hearth_master::{
    schedule::{Decision, place_drivers},
    state::{Effect, Limits, State},
};

use crate::{
    figures::Figure,
    stats::{Stats, Unit},
};

const WORKERS: usize = 1000;
const DRIVERS: usize = 10_000;
const START_MS: i64 = 1_795_000_000_000;

/// `workers` workers of 16 cores and 64 GiB, and 10,000 drivers of 1 core and 1 GiB, all
/// waiting.
fn waiting_state(workers: usize) -> Result<State> {
    let mut state = State::new(
        "http://hearth-master:7077".into(),
        START_MS,
        Limits::retaining(1000),
    );
    let mut effects: Vec<Effect> = Vec::new();
    let now = tokio::time::Instant::now();
    for n in 0..workers {
        let host = format!("10.{}.{}.{}", 1 + n / 62_500, (n / 250) % 250, n % 250);
        let register = Register {
            worker_id: format!("worker-20261121000000-{host}-8081"),
            name: format!("hearth-worker-{n:04}"),
            host: host.clone(),
            web_port: 8081,
            cores: 16,
            memory_mb: 64 * 1024,
            ..Default::default()
        };
        state.register_worker(register, host, n as u64 + 1, now, START_MS, &mut effects);
    }
    for n in 0..DRIVERS {
        let spec = DriverSpec {
            name: format!("job-{n}"),
            command: vec!["job".into()],
            cores: 1,
            memory_mb: 1024,
            ..Default::default()
        };
        state.submit(spec, None, START_MS + n as i64)?;
    }
    Ok(state)
}

/// `runs` times: the placement decisions alone (`schedule::place_drivers`, the scheduler as a
/// pure function, on fresh copies of the offers and asks), and the whole turn the master's loop
/// makes on a fresh copy of the waiting state (`State::schedule`: the decisions, every driver's
/// record updated, the launch orders made), each timed.
pub fn place_all(runs: usize) -> Result<Figure> {
    let base = waiting_state(WORKERS)?;
    let offers = base.offers();
    let asks = base.asks(0);
    let mut decide = Vec::with_capacity(runs);
    let mut turn = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut free = offers.clone();
        let t0 = Instant::now();
        let decisions = place_drivers(&mut free, &asks);
        decide.push(t0.elapsed());
        let placed = decisions
            .iter()
            .filter(|d| matches!(d, Decision::Place { .. }))
            .count();
        anyhow::ensure!(placed == DRIVERS, "{placed} of {DRIVERS} placed");

        let mut state = base.clone();
        let t0 = Instant::now();
        turns(&mut state)?;
        turn.push(t0.elapsed());
    }
    let turn = Stats::of_durations(&turn).ok_or_else(|| anyhow::anyhow!("no runs"))?;
    Figure::new(
        "scheduler alone: place 10,000 waiting drivers over 1,000 workers",
        Unit::Millis,
        decide.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        "≤ 20 ms total",
        format!(
            "placement decisions; the master's whole turns (at most {} launches each) with every record updated and 10,000 launch orders made: median {:.1} ms, p99 {:.1} ms in all",
            hearth_master::state::MAX_LAUNCHES_PER_TURN,
            turn.median,
            turn.p99
        ),
    )
}

/// The master's turns on `state` until every waiting driver is placed (a turn launches at most
/// [`hearth_master::state::MAX_LAUNCHES_PER_TURN`]; the master's loop runs the next at once):
/// each turn's time.
fn turns(state: &mut State) -> Result<Vec<std::time::Duration>> {
    // The caches of what workers offer and queues hold follow the master's one line of
    // states; copies of `base` share them, so they are brought to this copy first, untimed.
    state.offers();
    state.usage();
    let mut effects = Vec::with_capacity(DRIVERS);
    let mut times = Vec::new();
    loop {
        // As the master publishes a snapshot after each turn, the next turn copies what it
        // changes rather than changing records no one else holds.
        let _snapshot = state.clone();
        let t0 = Instant::now();
        state.schedule(START_MS + 1 + times.len() as i64, &mut effects);
        times.push(t0.elapsed());
        if !state.placement_pending() {
            break;
        }
    }
    anyhow::ensure!(
        state.waiting.is_empty() && effects.len() == DRIVERS,
        "{} drivers still wait after {} turns",
        state.waiting.len(),
        times.len()
    );
    Ok(times)
}

/// `runs` times, the master's turns for a burst of 10,000 waiting drivers over 10,000 workers
/// (`State::schedule` on a fresh copy of the waiting state, until all are placed): the
/// decisions, every record updated, the launch orders made. The figure is each turn's time.
pub fn burst_turn(runs: usize) -> Result<Figure> {
    const BIG: usize = 10_000;
    let base = waiting_state(BIG)?;
    let mut each = Vec::new();
    let mut whole = Vec::with_capacity(runs);
    let mut count = 0;
    for _ in 0..runs {
        let mut state = base.clone();
        let times = turns(&mut state)?;
        count = times.len();
        whole.push(times.iter().sum());
        each.extend(times);
    }
    let whole = Stats::of_durations(&whole).ok_or_else(|| anyhow::anyhow!("no runs"))?;
    Figure::new(
        "scale: scheduling turn, 10,000-driver burst over 10,000 workers",
        Unit::Millis,
        each.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        "≤ 10 ms",
        format!(
            "State::schedule on a fresh copy until all are placed, {count} turns of at most {} launches: the decisions, every driver and worker record updated, the launch orders made; the whole burst median {:.1} ms, p99 {:.1} ms",
            hearth_master::state::MAX_LAUNCHES_PER_TURN,
            whole.median,
            whole.p99
        ),
    )
}
