//! All cluster state in one plain data structure, and every transition of it.
//!
//! Only the actor changes a `State`; each transition returns the orders it implies for workers
//! as [`Effect`]s, so the transitions stay free of I/O and easy to test. Maps are persistent
//! (`imbl`), so publishing a snapshot after each turn is a cheap clone.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use hearth_common::{
    ids,
    proto::{
        self, DriverSpec, DriverState, DriverStateChange, DriverStatus, MasterMessage, Register,
        WorkerState, master_message::Msg,
    },
};
use imbl::{OrdMap, Vector};
use tokio::time::Instant;

use crate::{
    error::{Error, Result},
    schedule::{self, Ask, Decision, Offer},
};

/// Most state changes kept per driver.
const MAX_HISTORY: usize = 64;

#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub id: String,
    pub name: String,
    pub host: String,
    pub web_port: u32,
    pub state: WorkerState,
    pub cores: u32,
    pub memory_mb: u64,
    pub cores_used: u32,
    pub memory_used_mb: u64,
    pub registered_at_ms: i64,
    pub last_heartbeat_ms: i64,
    /// When the master last heard from it, on the (pausable) tokio clock the timeout uses.
    pub last_seen: Instant,
    /// The stream this worker is attached by; reports from an older stream are ignored.
    pub conn_id: u64,
    pub drivers: BTreeSet<String>,
}

impl WorkerInfo {
    pub fn free_cores(&self) -> u32 {
        self.cores.saturating_sub(self.cores_used)
    }

    pub fn free_memory_mb(&self) -> u64 {
        self.memory_mb.saturating_sub(self.memory_used_mb)
    }

    pub fn to_proto(&self) -> proto::Worker {
        proto::Worker {
            id: self.id.clone(),
            name: self.name.clone(),
            host: self.host.clone(),
            web_port: self.web_port,
            state: self.state as i32,
            cores: self.cores,
            cores_used: self.cores_used,
            memory_mb: self.memory_mb,
            memory_used_mb: self.memory_used_mb,
            last_heartbeat_ms: self.last_heartbeat_ms,
            registered_at_ms: self.registered_at_ms,
            driver_ids: self.drivers.iter().cloned().collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DriverInfo {
    pub id: String,
    pub spec: DriverSpec,
    pub state: DriverState,
    pub worker_id: Option<String>,
    /// Launches so far; a relaunch keeps the id and counts up.
    pub attempt: u32,
    pub relaunches: u32,
    pub exit_code: Option<i32>,
    pub waiting_reason: Option<String>,
    pub message: String,
    pub submitted_at_ms: i64,
    /// Set once a user asked for the kill, so a supervised driver is not relaunched.
    pub kill_requested: bool,
    pub history: Vec<DriverStateChange>,
}

impl DriverInfo {
    pub fn to_proto(&self) -> proto::Driver {
        let mut spec = self.spec.clone();
        let env_names = spec.env.keys().cloned().collect();
        // Values of environment variables often carry credentials: they never leave the master
        // except in the launch order to the worker.
        spec.env.clear();
        proto::Driver {
            id: self.id.clone(),
            spec: Some(spec),
            state: self.state as i32,
            worker_id: self.worker_id.clone().unwrap_or_default(),
            attempt: self.attempt,
            exit_code: self.exit_code,
            waiting_reason: self.waiting_reason.clone().unwrap_or_default(),
            submitted_at_ms: self.submitted_at_ms,
            history: self.history.clone(),
            message: self.message.clone(),
            env_names,
        }
    }

    fn record(&mut self, state: DriverState, message: impl Into<String>, now_ms: i64) {
        let message = message.into();
        self.state = state;
        if !message.is_empty() {
            self.message = message.clone();
        }
        if self.history.len() >= MAX_HISTORY {
            self.history.remove(1);
        }
        self.history.push(DriverStateChange {
            state: state as i32,
            at_ms: now_ms,
            attempt: self.attempt,
            message,
            worker_id: self.worker_id.clone().unwrap_or_default(),
        });
    }
}

/// Whether a worker in this state still has its stream (and so may hold drivers).
fn is_connected(state: WorkerState) -> bool {
    matches!(state, WorkerState::Alive | WorkerState::Decommissioned)
}

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
}

impl State {
    pub fn new(master_url: String, started_ms: i64, retained_drivers: usize) -> Self {
        Self {
            started_ms,
            master_url,
            workers: OrdMap::new(),
            drivers: OrdMap::new(),
            waiting: Vector::new(),
            completed: Vector::new(),
            next_driver_seq: 0,
            retained_drivers,
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

    pub fn alive_workers(&self) -> impl Iterator<Item = &Arc<WorkerInfo>> {
        self.workers
            .values()
            .filter(|w| w.state == WorkerState::Alive)
    }

    // ----- submissions ------------------------------------------------------------------------

    /// Accepts a (validated) driver; it waits until [`State::schedule`] places it.
    pub fn submit(&mut self, spec: DriverSpec, now_ms: i64) -> String {
        let id = ids::driver_id(self.started_ms, self.next_driver_seq);
        self.next_driver_seq += 1;
        let mut driver = DriverInfo {
            id: id.clone(),
            spec,
            state: DriverState::Submitted,
            worker_id: None,
            attempt: 0,
            relaunches: 0,
            exit_code: None,
            waiting_reason: Some("waiting for the scheduler".into()),
            message: String::new(),
            submitted_at_ms: now_ms,
            kill_requested: false,
            history: Vec::new(),
        };
        driver.record(DriverState::Submitted, "", now_ms);
        self.drivers.insert(id.clone(), Arc::new(driver));
        self.waiting.push_back(id.clone());
        id
    }

    /// A user's kill. Waiting drivers end at once; running ones are killed by their worker, which
    /// then reports KILLED.
    pub fn kill_driver(
        &mut self,
        id: &str,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Result<DriverState> {
        let driver = self.driver(id)?;
        let state = driver.state;
        if state.is_terminal() {
            return Err(Error::FailedPrecondition(format!(
                "{id} already ended ({})",
                hearth_common::states::StateName::name(&state)
            )));
        }
        let worker_id = driver.worker_id.clone();
        let attempt = driver.attempt;
        match (state, worker_id) {
            (DriverState::Running, Some(worker_id)) => {
                let d = self.driver_mut(id)?;
                d.kill_requested = true;
                d.message = "kill requested by a user".into();
                effects.push(Effect::Send {
                    worker_id,
                    message: MasterMessage {
                        msg: Some(Msg::KillDriver(proto::KillDriver {
                            driver_id: id.to_string(),
                            attempt,
                            reason: "killed by a user".into(),
                        })),
                    },
                });
                Ok(DriverState::Running)
            }
            _ => {
                self.waiting.retain(|w| w != id);
                let d = self.driver_mut(id)?;
                d.kill_requested = true;
                d.waiting_reason = None;
                d.record(
                    DriverState::Killed,
                    "killed by a user before it ran",
                    now_ms,
                );
                self.completed.push_back(id.to_string());
                Ok(DriverState::Killed)
            }
        }
    }

    // ----- workers ----------------------------------------------------------------------------

    /// A worker (re)registers. A new worker is added; a known one is reconciled with what it
    /// reports: drivers the master no longer expects there are killed (fencing), drivers the
    /// master expected but the worker no longer runs are treated as lost. Never fails: whatever
    /// a worker reports, the master ends up with a consistent view.
    pub fn register_worker(
        &mut self,
        reg: Register,
        host: String,
        conn_id: u64,
        now: Instant,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let id = reg.worker_id.clone();
        let previous = self.workers.get(&id).cloned();
        let expected: BTreeSet<String> = previous
            .as_ref()
            .map(|w| w.drivers.clone())
            .unwrap_or_default();
        let worker = WorkerInfo {
            id: id.clone(),
            name: reg.name.clone(),
            host,
            web_port: reg.web_port,
            state: WorkerState::Alive,
            cores: reg.cores,
            memory_mb: reg.memory_mb,
            cores_used: 0,
            memory_used_mb: 0,
            registered_at_ms: previous.as_ref().map_or(now_ms, |w| w.registered_at_ms),
            last_heartbeat_ms: now_ms,
            last_seen: now,
            conn_id,
            drivers: BTreeSet::new(),
        };
        self.workers.insert(id.clone(), Arc::new(worker));

        // Terminal reports it could not deliver while disconnected.
        for status in reg.completed {
            self.driver_status(&id, status, now_ms);
        }
        let mut still_running = BTreeSet::new();
        for running in reg.running {
            let ours = self.drivers.get(&running.driver_id).is_some_and(|d| {
                d.state == DriverState::Running
                    && d.worker_id.as_deref() == Some(id.as_str())
                    && d.attempt == running.attempt
                    && expected.contains(&d.id)
            });
            if ours {
                still_running.insert(running.driver_id);
            } else {
                tracing::warn!(worker_id = %id, driver_id = %running.driver_id, attempt = running.attempt,
                    "fencing: worker runs a driver the master has not placed there; killing it");
                effects.push(Effect::Send {
                    worker_id: id.clone(),
                    message: MasterMessage {
                        msg: Some(Msg::KillDriver(proto::KillDriver {
                            driver_id: running.driver_id,
                            attempt: running.attempt,
                            reason: "fenced: the master no longer runs this attempt here".into(),
                        })),
                    },
                });
            }
        }
        for driver_id in expected {
            let Some(d) = self.drivers.get(&driver_id) else {
                continue;
            };
            if still_running.contains(&driver_id) {
                let (cores, memory, attempt) = (d.spec.cores, d.spec.memory_mb, d.attempt);
                if let Err(e) = self.allocate(&id, &driver_id, cores, memory) {
                    // It came back offering less than its drivers hold: fence this one off.
                    tracing::warn!(worker_id = %id, driver_id, error = %e, "driver no longer fits its worker");
                    effects.push(Effect::Send {
                        worker_id: id.clone(),
                        message: MasterMessage {
                            msg: Some(Msg::KillDriver(proto::KillDriver {
                                driver_id: driver_id.clone(),
                                attempt,
                                reason: "no longer fits the worker's offer".into(),
                            })),
                        },
                    });
                    self.driver_lost(&driver_id, format!("{id} came back offering less"), now_ms);
                }
            } else if d.state == DriverState::Running && d.worker_id.as_deref() == Some(&id) {
                self.driver_lost(&driver_id, format!("{id} reconnected without it"), now_ms);
            }
        }
    }

    /// The worker is leaving: it stays connected while its drivers end, but nothing new is
    /// placed on it.
    pub fn decommission_worker(&mut self, worker_id: &str, conn_id: u64, reason: &str) {
        if let Some(w) = self.workers.get_mut(worker_id)
            && w.conn_id == conn_id
            && w.state == WorkerState::Alive
        {
            tracing::info!(worker_id, reason, "worker decommissioning");
            Arc::make_mut(w).state = WorkerState::Decommissioned;
        }
    }

    pub fn heartbeat(&mut self, worker_id: &str, conn_id: u64, now: Instant, now_ms: i64) {
        if let Some(w) = self.workers.get_mut(worker_id)
            && w.conn_id == conn_id
            && is_connected(w.state)
        {
            let w = Arc::make_mut(w);
            w.last_seen = now;
            w.last_heartbeat_ms = now_ms;
        }
    }

    /// The worker's stream on `conn_id` ended or timed out: it is DEAD and its drivers are lost.
    /// Returns whether anything changed (a stale connection id changes nothing).
    pub fn worker_lost(
        &mut self,
        worker_id: &str,
        conn_id: u64,
        reason: &str,
        now_ms: i64,
    ) -> bool {
        let Some(w) = self.workers.get_mut(worker_id) else {
            return false;
        };
        if w.conn_id != conn_id || w.state != WorkerState::Alive {
            return false;
        }
        let w = Arc::make_mut(w);
        w.state = WorkerState::Dead;
        w.cores_used = 0;
        w.memory_used_mb = 0;
        let drivers = std::mem::take(&mut w.drivers);
        tracing::warn!(worker_id, reason, drivers = drivers.len(), "worker lost");
        for driver_id in drivers {
            self.driver_lost(&driver_id, format!("{worker_id} lost: {reason}"), now_ms);
        }
        true
    }

    /// Declares DEAD every alive worker not heard from within `timeout`.
    pub fn expire_workers(
        &mut self,
        now: Instant,
        timeout: Duration,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let expired: Vec<(String, u64)> = self
            .workers
            .values()
            .filter(|w| is_connected(w.state))
            .filter(|w| now.saturating_duration_since(w.last_seen) > timeout)
            .map(|w| (w.id.clone(), w.conn_id))
            .collect();
        for (worker_id, conn_id) in &expired {
            let reason = format!("no heartbeat for more than {} ms", timeout.as_millis());
            self.worker_lost(worker_id, *conn_id, &reason, now_ms);
            effects.push(Effect::Disconnect {
                worker_id: worker_id.clone(),
                conn_id: *conn_id,
            });
        }
        !expired.is_empty()
    }

    // ----- drivers ----------------------------------------------------------------------------

    /// A report from a worker about one of its drivers. Reports about an attempt the master does
    /// not run there (late, duplicate, or from a fenced worker) change nothing.
    pub fn driver_status(&mut self, worker_id: &str, status: DriverStatus, now_ms: i64) {
        let state = hearth_common::states::driver_state(status.state);
        let current = self.drivers.get(&status.driver_id).is_some_and(|d| {
            d.state == DriverState::Running
                && d.worker_id.as_deref() == Some(worker_id)
                && d.attempt == status.attempt
        });
        if !current {
            tracing::debug!(worker_id, driver_id = %status.driver_id, attempt = status.attempt,
                "ignoring a report about an attempt the master does not run there");
            return;
        }
        if !state.is_terminal() {
            return;
        }
        let driver_id = status.driver_id;
        self.release(worker_id, &driver_id);
        let Some(d) = self.drivers.get_mut(&driver_id) else {
            return;
        };
        let d = Arc::make_mut(d);
        d.exit_code = status.exit_code;
        let relaunch = d.spec.supervise
            && !d.kill_requested
            && matches!(state, DriverState::Failed | DriverState::Error)
            && d.relaunches < d.spec.max_retries;
        let message = if status.message.is_empty() {
            match status.exit_code {
                Some(code) => format!("exited with code {code}"),
                None => String::new(),
            }
        } else {
            status.message
        };
        if relaunch {
            d.record(state, message.clone(), now_ms);
            self.relaunch(&driver_id, message, now_ms);
        } else {
            let state = if d.kill_requested && state != DriverState::Finished {
                DriverState::Killed
            } else {
                state
            };
            d.record(state, message, now_ms);
            self.completed.push_back(driver_id);
        }
    }

    /// A running driver's worker went away.
    fn driver_lost(&mut self, driver_id: &str, reason: String, now_ms: i64) {
        let Some(d) = self.drivers.get_mut(driver_id) else {
            return;
        };
        if d.state != DriverState::Running {
            return;
        }
        let d = Arc::make_mut(d);
        if d.spec.supervise && !d.kill_requested && d.relaunches < d.spec.max_retries {
            self.relaunch(driver_id, reason, now_ms);
        } else {
            let (state, why) = if d.kill_requested {
                (DriverState::Killed, reason)
            } else if d.spec.supervise {
                (
                    DriverState::Error,
                    format!("{reason}; no relaunches left of {}", d.spec.max_retries),
                )
            } else {
                (DriverState::Error, format!("{reason}; not supervised"))
            };
            d.worker_id = None;
            d.record(state, why, now_ms);
            self.completed.push_back(driver_id.to_string());
        }
    }

    fn relaunch(&mut self, driver_id: &str, reason: String, now_ms: i64) {
        if let Some(d) = self.drivers.get_mut(driver_id) {
            let d = Arc::make_mut(d);
            d.relaunches += 1;
            d.worker_id = None;
            d.waiting_reason = Some("waiting for the scheduler".into());
            let message = format!(
                "relaunch {} of {}: {reason}",
                d.relaunches, d.spec.max_retries
            );
            d.record(DriverState::Relaunching, message, now_ms);
            self.waiting.push_back(driver_id.to_string());
        }
    }

    fn driver_mut(&mut self, id: &str) -> Result<&mut DriverInfo> {
        self.drivers
            .get_mut(id)
            .map(Arc::make_mut)
            .ok_or_else(|| Error::NotFound(format!("no driver {id}")))
    }

    // ----- resources --------------------------------------------------------------------------

    /// Takes a slot on a worker; refuses (and changes nothing) if it would exceed the offer.
    fn allocate(
        &mut self,
        worker_id: &str,
        driver_id: &str,
        cores: u32,
        memory_mb: u64,
    ) -> Result<()> {
        let w = self
            .workers
            .get_mut(worker_id)
            .ok_or_else(|| Error::NotFound(format!("no worker {worker_id}")))?;
        let fits = w.free_cores() >= cores && w.free_memory_mb() >= memory_mb;
        if !fits {
            return Err(Error::Internal(format!(
                "{driver_id} does not fit on {worker_id}: {cores} cores/{memory_mb} MiB asked, {} / {} free",
                w.free_cores(),
                w.free_memory_mb()
            )));
        }
        let w = Arc::make_mut(w);
        w.cores_used += cores;
        w.memory_used_mb += memory_mb;
        w.drivers.insert(driver_id.to_string());
        Ok(())
    }

    /// Gives back a driver's slot, if it holds one there.
    fn release(&mut self, worker_id: &str, driver_id: &str) {
        let Some(d) = self.drivers.get(driver_id) else {
            return;
        };
        let (cores, memory_mb) = (d.spec.cores, d.spec.memory_mb);
        if let Some(w) = self.workers.get_mut(worker_id)
            && w.drivers.contains(driver_id)
        {
            let w = Arc::make_mut(w);
            w.drivers.remove(driver_id);
            w.cores_used = w.cores_used.saturating_sub(cores);
            w.memory_used_mb = w.memory_used_mb.saturating_sub(memory_mb);
        }
    }

    // ----- scheduling -------------------------------------------------------------------------

    /// Places waiting drivers where they fit and records why the rest wait.
    pub fn schedule(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        if self.waiting.is_empty() {
            return;
        }
        let mut offers: Vec<Offer> = self
            .alive_workers()
            .map(|w| Offer {
                worker_id: w.id.clone(),
                cores: w.cores,
                memory_mb: w.memory_mb,
                free_cores: w.free_cores(),
                free_memory_mb: w.free_memory_mb(),
                drivers: w.drivers.len(),
            })
            .collect();
        let asks: Vec<Ask> = self
            .waiting
            .iter()
            .filter_map(|id| self.drivers.get(id))
            .map(|d| Ask {
                driver_id: d.id.clone(),
                cores: d.spec.cores,
                memory_mb: d.spec.memory_mb,
            })
            .collect();
        let mut still_waiting = Vector::new();
        for decision in schedule::place_drivers(&mut offers, &asks) {
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
    }

    fn launch(
        &mut self,
        driver_id: &str,
        worker_id: &str,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Result<()> {
        let d = self.driver(driver_id)?;
        let (cores, memory_mb) = (d.spec.cores, d.spec.memory_mb);
        self.allocate(worker_id, driver_id, cores, memory_mb)?;
        let d = self.driver_mut(driver_id)?;
        d.attempt += 1;
        d.worker_id = Some(worker_id.to_string());
        d.waiting_reason = None;
        d.exit_code = None;
        d.record(
            DriverState::Running,
            format!("launched on {worker_id}"),
            now_ms,
        );
        tracing::info!(
            driver_id,
            worker_id,
            attempt = d.attempt,
            "launching driver"
        );
        effects.push(Effect::Send {
            worker_id: worker_id.to_string(),
            message: MasterMessage {
                msg: Some(Msg::LaunchDriver(proto::LaunchDriver {
                    driver_id: driver_id.to_string(),
                    attempt: d.attempt,
                    spec: Some(d.spec.clone()),
                })),
            },
        });
        Ok(())
    }

    /// Forgets the oldest completed drivers beyond the retention limit.
    pub fn prune(&mut self) {
        while self.completed.len() > self.retained_drivers {
            if let Some(id) = self.completed.pop_front() {
                self.drivers.remove(&id);
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
            if cores != w.cores_used || memory != w.memory_used_mb {
                return Err(format!("{}: used does not match its drivers", w.id));
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
                    .is_some_and(|w| w.drivers.contains(&d.id) && is_connected(w.state));
                if !on {
                    return Err(format!("{} RUNNING but not held by an alive worker", d.id));
                }
            }
        }
        Ok(())
    }
}
