//! The scheduler alone: 10,000 waiting drivers placed over 1,000 workers, in-process through
//! the master's own state transitions, with no I/O.

use std::time::Instant;

use anyhow::Result;
use hearth_common::proto::{DriverSpec, Register};
use hearth_master::state::{Effect, State};

use crate::{figures::Figure, stats::Unit};

const WORKERS: usize = 1000;
const DRIVERS: usize = 10_000;
const START_MS: i64 = 1_795_000_000_000;

/// 1,000 workers of 16 cores and 64 GiB, and 10,000 drivers of 1 core and 1 GiB, all waiting.
fn waiting_state() -> State {
    let mut state = State::new("http://hearth-master:7077".into(), START_MS, 1000);
    let mut effects: Vec<Effect> = Vec::new();
    let now = tokio::time::Instant::now();
    for n in 0..WORKERS {
        let host = format!("10.1.{}.{}", n / 250, n % 250);
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
        state.submit(spec, None, START_MS + n as i64);
    }
    state
}

/// `runs` times: a fresh copy of the waiting state, then one `schedule` (the call the master's
/// loop makes), timed.
pub fn place_all(runs: usize) -> Result<Figure> {
    let base = waiting_state();
    let mut times = Vec::with_capacity(runs);
    let mut placed = 0;
    for _ in 0..runs {
        let mut state = base.clone();
        let mut effects = Vec::with_capacity(DRIVERS);
        let t0 = Instant::now();
        state.schedule(START_MS + 1, &mut effects);
        times.push(t0.elapsed());
        placed = state.waiting.len();
        anyhow::ensure!(placed == 0, "{placed} drivers still wait after scheduling");
        placed = effects.len();
    }
    Figure::new(
        "scheduler alone: place 10,000 waiting drivers over 1,000 workers",
        Unit::Millis,
        times.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        "≤ 20 ms total",
        format!("one schedule() call of the master's state; {placed} effects (launch orders) made"),
    )
}
