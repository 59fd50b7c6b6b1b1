//! All cluster state in one plain data structure, and every transition of it.
//!
//! Only the actor changes a `State`; each transition returns the orders it implies for workers
//! as [`Effect`]s, so the transitions stay free of I/O and easy to test. Maps are persistent
//! (`imbl`), so publishing a snapshot after each turn is a cheap clone.
//!
//! - [`workers`]: registration (with fencing), heartbeats, loss and expiry.
//! - [`drivers`]: submissions, kills, reports, relaunches.
//! - [`apps`]: applications and their executors.
//! - [`recovery`]: rebuilding the state from the store after a restart.

mod apps;
mod drivers;
mod recovery;
mod workers;

use std::sync::Arc;

use hearth_common::proto::{DriverState, MasterMessage, WorkerState};
use imbl::{OrdMap, Vector};

pub use apps::{AppInfo, ExecKey, ExecutorInfo};
pub use drivers::DriverInfo;
pub use workers::WorkerInfo;

use crate::{
    error::{Error, Result},
    schedule::{self, AppAsk, Ask, Decision, Offer},
};

/// An order for a worker that a transition implies; the actor delivers them after the turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send {
        worker_id: String,
        message: MasterMessage,
    },
    /// Close the worker's stream (it was declared dead while its stream looked open).
    Disconnect { worker_id: String, conn_id: u64 },
}

impl Effect {
    fn send(worker_id: &str, msg: hearth_common::proto::master_message::Msg) -> Self {
        Effect::Send {
            worker_id: worker_id.to_string(),
            message: MasterMessage { msg: Some(msg) },
        }
    }
}

/// The whole cluster as the master knows it.
#[derive(Debug, Clone)]
pub struct State {
    pub started_ms: i64,
    pub master_url: String,
    pub workers: OrdMap<String, Arc<WorkerInfo>>,
    pub drivers: OrdMap<String, Arc<DriverInfo>>,
    /// Drivers waiting for a slot (SUBMITTED or RELAUNCHING), oldest first.
    pub waiting: Vector<String>,
    /// Terminal drivers, oldest first, for retention.
    pub completed: Vector<String>,
    pub next_driver_seq: u64,
    /// How many completed drivers are kept.
    pub retained_drivers: usize,
    pub apps: OrdMap<String, Arc<AppInfo>>,
    /// Applications not yet ended, in registration order (the order executors are placed in).
    pub active_apps: Vector<String>,
    /// Ended applications, oldest first, for retention.
    pub completed_apps: Vector<String>,
    pub next_app_seq: u64,
    /// How many ended applications are kept.
    pub retained_apps: usize,
    /// Deal executors round-robin over workers (true) or fill one worker first (false).
    pub spread_out: bool,
    /// Client submission ids of retained drivers, to answer a resubmission with its driver.
    pub submissions: OrdMap<String, String>,
    /// Set after a restart until the workers it knew have come back (or the timeout passed):
    /// nothing is placed meanwhile, so nothing a returning worker still runs is started twice.
    pub recovering: bool,
    /// What the last placement of drivers left, so the next one need not try again the
    /// drivers that would wait again.
    tried: Option<Tried>,
}

/// The free room on each alive worker after the last placement of drivers, and how many
/// drivers at the front of the queue (ending with `last`) were tried against room at least that
/// large. While no worker's room grows (nothing ended, no worker came) and none of those
/// drivers left the queue, they would wait again, so only the drivers behind them are tried.
/// A long queue in front of a full cluster then costs nothing per turn.
#[derive(Debug, Clone)]
struct Tried {
    room: Vec<(String, u32, u64)>,
    count: usize,
    last: String,
}

impl Tried {
    /// Whether `now` (each alive worker's id and free cores and memory, in id order) has room
    /// that `self` did not: a worker added or gone, or more free somewhere.
    fn grew<'a>(&self, now: impl Iterator<Item = (&'a str, u32, u64)>) -> bool {
        let mut seen = 0;
        for (id, cores, memory) in now {
            match self.room.get(seen) {
                Some((was_id, was_cores, was_memory))
                    if was_id == id && cores <= *was_cores && memory <= *was_memory => {}
                _ => return true,
            }
            seen += 1;
        }
        seen != self.room.len()
    }

    /// How many drivers at the front of `waiting` need not be tried against room `now`.
    fn covers<'a>(
        &self,
        waiting: &Vector<String>,
        now: impl Iterator<Item = (&'a str, u32, u64)>,
    ) -> usize {
        let intact = self.count <= waiting.len()
            && self.count > 0
            && waiting.get(self.count - 1) == Some(&self.last);
        if intact && !self.grew(now) {
            self.count
        } else {
            0
        }
    }
}

impl State {
    pub fn new(master_url: String, started_ms: i64, retained: usize) -> Self {
        Self {
            started_ms,
            master_url,
            workers: OrdMap::new(),
            drivers: OrdMap::new(),
            waiting: Vector::new(),
            completed: Vector::new(),
            next_driver_seq: 0,
            retained_drivers: retained,
            apps: OrdMap::new(),
            active_apps: Vector::new(),
            completed_apps: Vector::new(),
            next_app_seq: 0,
            retained_apps: retained,
            spread_out: true,
            submissions: OrdMap::new(),
            recovering: false,
            tried: None,
        }
    }

    pub fn driver(&self, id: &str) -> Result<&Arc<DriverInfo>> {
        self.drivers
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("no driver {id}")))
    }

    pub fn worker(&self, id: &str) -> Result<&Arc<WorkerInfo>> {
        self.workers
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("no worker {id}")))
    }

    pub fn app(&self, id: &str) -> Result<&Arc<AppInfo>> {
        self.apps
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("no application {id}")))
    }

    /// Where a process's logs are: its worker (if it was ever placed) and whether it has ended.
    pub fn log_source(
        &self,
        process: &hearth_common::ids::ProcessRef,
    ) -> Result<(Option<String>, bool)> {
        use hearth_common::ids::ProcessRef;
        match process {
            ProcessRef::Driver(id) => {
                let d = self.driver(id)?;
                Ok((d.worker_id.clone(), d.state.is_terminal()))
            }
            ProcessRef::Executor {
                app_id,
                executor_id,
            } => {
                let app = self.app(app_id)?;
                let e = app.executors.get(executor_id).ok_or_else(|| {
                    Error::NotFound(format!("{app_id} has no executor {executor_id}"))
                })?;
                Ok((Some(e.worker_id.clone()), !e.state.is_live()))
            }
        }
    }

    pub fn alive_workers(&self) -> impl Iterator<Item = &Arc<WorkerInfo>> {
        self.workers
            .values()
            .filter(|w| w.state == WorkerState::Alive)
    }

    // ----- resources --------------------------------------------------------------------------

    /// Takes a slot on a worker; refuses (and changes nothing) if it would exceed the offer.
    fn take_slot(
        &mut self,
        worker_id: &str,
        what: &str,
        cores: u32,
        memory_mb: u64,
    ) -> Result<&mut WorkerInfo> {
        let w = self
            .workers
            .get_mut(worker_id)
            .ok_or_else(|| Error::NotFound(format!("no worker {worker_id}")))?;
        let fits = w.free_cores() >= cores && w.free_memory_mb() >= memory_mb;
        if !fits {
            return Err(Error::Internal(format!(
                "{what} does not fit on {worker_id}: {cores} cores/{memory_mb} MiB asked, {} / {} free",
                w.free_cores(),
                w.free_memory_mb()
            )));
        }
        let w = Arc::make_mut(w);
        w.cores_used += cores;
        w.memory_used_mb += memory_mb;
        Ok(w)
    }

    /// Gives back a slot on a worker (saturating: a slot is never given back twice because the
    /// holder sets say who holds one).
    fn give_back(w: &mut WorkerInfo, cores: u32, memory_mb: u64) {
        w.cores_used = w.cores_used.saturating_sub(cores);
        w.memory_used_mb = w.memory_used_mb.saturating_sub(memory_mb);
    }

    // ----- scheduling -------------------------------------------------------------------------

    /// Places waiting drivers, then executors, where they fit, and records why the rest wait.
    pub fn schedule(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        if self.recovering {
            return;
        }
        let apps_want = self.active_apps.iter().any(|id| {
            self.apps
                .get(id)
                .is_some_and(|a| a.wanted() > 0 || a.waiting_reason.is_some())
        });
        if self.waiting.is_empty() && !apps_want {
            return;
        }
        // Most turns (heartbeats, reports) change nothing a waiting driver needs: then the
        // offers are not even built.
        let tried = self.tried.as_ref().map_or(0, |t| {
            let room = self
                .alive_workers()
                .map(|w| (w.id.as_str(), w.free_cores(), w.free_memory_mb()));
            t.covers(&self.waiting, room)
        });
        if !apps_want && tried == self.waiting.len() {
            return;
        }
        let mut offers = self.offers();
        self.schedule_drivers(&mut offers, now_ms, effects);
        self.schedule_executors(&mut offers, now_ms, effects);
    }

    /// What each alive worker offers and has free, in the order of their ids.
    pub fn offers(&self) -> Vec<Offer> {
        self.alive_workers()
            .map(|w| Offer {
                worker_id: w.id.clone(),
                cores: w.cores,
                memory_mb: w.memory_mb,
                free_cores: w.free_cores(),
                free_memory_mb: w.free_memory_mb(),
                drivers: w.drivers.len(),
            })
            .collect()
    }

    /// What the waiting drivers ask for, oldest first, leaving out the first `skip`.
    pub fn asks(&self, skip: usize) -> Vec<Ask> {
        self.waiting
            .iter()
            .skip(skip)
            .filter_map(|id| self.drivers.get(id))
            .map(|d| Ask {
                driver_id: d.id.clone(),
                cores: d.spec.cores,
                memory_mb: d.spec.memory_mb,
            })
            .collect()
    }

    fn schedule_drivers(&mut self, offers: &mut [Offer], now_ms: i64, effects: &mut Vec<Effect>) {
        if self.waiting.is_empty() {
            self.tried = None;
            return;
        }
        let skip = self.tried.as_ref().map_or(0, |t| {
            let room = offers
                .iter()
                .map(|o| (o.worker_id.as_str(), o.free_cores, o.free_memory_mb));
            t.covers(&self.waiting, room)
        });
        // Nothing new to try: what was tried stays tried against the room recorded then,
        // which is at least the room now.
        if skip == self.waiting.len() {
            return;
        }
        let asks = self.asks(skip);
        let mut still_waiting = self.waiting.clone();
        still_waiting.truncate(skip);
        for decision in schedule::place_drivers(offers, &asks) {
            match decision {
                Decision::Place {
                    driver_id,
                    worker_id,
                } => {
                    if let Err(e) = self.launch(&driver_id, &worker_id, now_ms, effects) {
                        tracing::error!(driver_id, worker_id, error = %e, "placement refused");
                        still_waiting.push_back(driver_id);
                    }
                }
                Decision::Wait { driver_id, reason } => {
                    if let Some(d) = self.drivers.get_mut(&driver_id)
                        && d.waiting_reason.as_deref() != Some(reason.as_str())
                    {
                        Arc::make_mut(d).waiting_reason = Some(reason);
                    }
                    still_waiting.push_back(driver_id);
                }
            }
        }
        self.waiting = still_waiting;
        self.tried = self.waiting.last().map(|last| Tried {
            room: offers
                .iter()
                .map(|o| (o.worker_id.clone(), o.free_cores, o.free_memory_mb))
                .collect(),
            count: self.waiting.len(),
            last: last.clone(),
        });
    }

    fn schedule_executors(&mut self, offers: &mut [Offer], now_ms: i64, effects: &mut Vec<Effect>) {
        let asks: Vec<AppAsk> = self
            .active_apps
            .iter()
            .filter_map(|id| self.apps.get(id))
            .map(|a| AppAsk {
                app_id: a.id.clone(),
                cores: a.spec.executor_cores,
                memory_mb: a.spec.executor_memory_mb,
                wanted: a.wanted(),
            })
            .collect();
        for placement in schedule::place_executors(offers, &asks, self.spread_out) {
            for worker_id in &placement.workers {
                if let Err(e) = self.launch_executor(&placement.app_id, worker_id, now_ms, effects)
                {
                    tracing::error!(app_id = %placement.app_id, worker_id, error = %e, "executor placement refused");
                }
            }
            if let Some(a) = self.apps.get_mut(&placement.app_id)
                && a.waiting_reason != placement.waiting
            {
                Arc::make_mut(a).waiting_reason = placement.waiting;
            }
        }
    }

    /// Forgets the oldest completed drivers and applications beyond the retention limits.
    pub fn prune(&mut self) {
        while self.completed.len() > self.retained_drivers {
            if let Some(id) = self.completed.pop_front()
                && let Some(d) = self.drivers.remove(&id)
                && let Some(s) = &d.submission_id
            {
                self.submissions.remove(s);
            }
        }
        while self.completed_apps.len() > self.retained_apps {
            if let Some(id) = self.completed_apps.pop_front() {
                self.apps.remove(&id);
            }
        }
    }

    /// Checks the accounting invariants; tests call it after every step.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        for w in self.workers.values() {
            let (mut cores, mut memory) = (0u32, 0u64);
            for id in &w.drivers {
                let d = self
                    .drivers
                    .get(id)
                    .ok_or_else(|| format!("{} holds unknown driver {id}", w.id))?;
                if d.state != DriverState::Running || d.worker_id.as_deref() != Some(&w.id) {
                    return Err(format!("{} holds {id} which is {:?}", w.id, d.state));
                }
                cores += d.spec.cores;
                memory += d.spec.memory_mb;
            }
            for key in &w.executors {
                let e = self
                    .apps
                    .get(&key.app_id)
                    .and_then(|a| a.executors.get(&key.executor_id))
                    .ok_or_else(|| format!("{} holds unknown executor {key}", w.id))?;
                if !e.state.is_live() || e.worker_id != w.id {
                    return Err(format!("{} holds {key} which is {:?}", w.id, e.state));
                }
                cores += e.cores;
                memory += e.memory_mb;
            }
            if cores != w.cores_used || memory != w.memory_used_mb {
                return Err(format!(
                    "{}: used does not match its drivers and executors",
                    w.id
                ));
            }
            if !w.holds_slots() && (!w.drivers.is_empty() || !w.executors.is_empty()) {
                return Err(format!("{} is gone but holds slots", w.id));
            }
            if w.cores_used > w.cores || w.memory_used_mb > w.memory_mb {
                return Err(format!("{} is over-committed", w.id));
            }
        }
        for d in self.drivers.values() {
            if d.state == DriverState::Running {
                let on = d
                    .worker_id
                    .as_ref()
                    .and_then(|w| self.workers.get(w))
                    .is_some_and(|w| w.drivers.contains(&d.id) && w.holds_slots());
                if !on {
                    return Err(format!("{} RUNNING but not held by an alive worker", d.id));
                }
            }
        }
        for a in self.apps.values() {
            let live = a.live();
            if live > a.max_executors || a.target > a.max_executors {
                return Err(format!(
                    "{} holds {live} executors, wants {}, cap {}",
                    a.id, a.target, a.max_executors
                ));
            }
            if !a.state.is_terminal()
                && let Some(d) = a.driver_id.as_ref().and_then(|d| self.drivers.get(d))
                && (d.state != DriverState::Running || !d.apps.contains(&a.id))
            {
                return Err(format!(
                    "{} outlives its driver {} ({:?})",
                    a.id, d.id, d.state
                ));
            }
            if a.state.is_terminal() && live > 0 {
                return Err(format!("{} ended but holds {live} executors", a.id));
            }
            for e in a.executors.values().filter(|e| e.state.is_live()) {
                let key = ExecKey::new(&a.id, e.id);
                let held = self
                    .workers
                    .get(&e.worker_id)
                    .is_some_and(|w| w.executors.contains(&key) && w.holds_slots());
                if !held {
                    return Err(format!("{key} is live but not held by an alive worker"));
                }
            }
        }
        Ok(())
    }
}
