//! Applications and their executors: registration, resizing, reports, replacement of failed
//! and lost executors, and the end of an application (which frees every slot it held).
//!
//! An application wants `target` executors. A failed or lost executor is replaced (the target
//! stays); one that exits with code 0 has done its work and lowers the target, as does one its
//! application kills. Failures beyond the application's retry limit end it FAILED.

use std::{collections::BTreeMap, sync::Arc};

use hearth_common::{
    proto::{self, ApplicationSpec, ApplicationState, DriverState, ExecutorState},
    spec::{DEFAULT_EXECUTOR_RETRIES, max_executors},
    state_names::StateName,
};

use super::{Effect, ExecKey, ExecutorInfo, State};
use crate::{
    error::{Error, Result},
    schedule::WaitCode,
};

/// Ended executors kept per application for the UI and API (live ones are always kept).
const MAX_ENDED_EXECUTORS: usize = 100;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AppInfo {
    pub id: String,
    pub spec: ApplicationSpec,
    pub state: ApplicationState,
    pub driver_id: Option<String>,
    pub driver_host: String,
    pub registered_at_ms: i64,
    pub ended_at_ms: i64,
    /// Executors wanted now.
    pub target: u32,
    pub max_executors: u32,
    pub failures: u32,
    pub retries: u32,
    pub waiting_reason: Option<String>,
    /// What kind of wait `waiting_reason` is.
    #[serde(default)]
    pub waiting_code: Option<WaitCode>,
    /// The queue its executors count in: its driver's, or the one it registered into.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Its rank within the queue: its driver's priority, or the one it registered with.
    #[serde(default)]
    pub priority: i32,
    /// The tenant it belongs to (its driver's, or the one that registered it); `None`: the
    /// admin's.
    #[serde(default)]
    pub owner: Option<String>,
    pub message: String,
    pub executors: BTreeMap<u32, ExecutorInfo>,
    pub next_executor_id: u32,
    /// A gang not placed yet: since when it waits whole (registration, or its last restart).
    #[serde(default)]
    pub gang_waiting_since_ms: Option<i64>,
    /// Preemptions it (or its executors) made or suffered, oldest first.
    #[serde(default)]
    pub preemptions: Vec<super::preemption::PreemptionEvent>,
}

// Reflexive, as no field is a float; see `WorkerInfo`'s `Eq` for why it matters.
impl Eq for AppInfo {}

impl AppInfo {
    /// Executors holding a slot (LAUNCHING or RUNNING).
    pub fn live(&self) -> u32 {
        self.executors
            .values()
            .filter(|e| e.state.is_live())
            .count() as u32
    }

    /// Executors still to place. A gang being preempted wants none until every member has
    /// ended: then it starts again whole.
    pub fn wanted(&self) -> u32 {
        if self.state.is_terminal() {
            return 0;
        }
        if self.spec.gang
            && self
                .executors
                .values()
                .any(|e| e.state.is_live() && e.preempted.is_some())
        {
            return 0;
        }
        self.target.saturating_sub(self.live())
    }

    /// Its gang's size; 0: not a gang.
    pub fn gang_size(&self) -> u32 {
        if self.spec.gang {
            self.spec.executors
        } else {
            0
        }
    }

    /// The lowest rank no live executor holds: a replacement takes the rank of the one it
    /// replaces, so ranks stay 0..N-1.
    pub fn free_rank(&self) -> u32 {
        let held: std::collections::BTreeSet<u32> = self
            .executors
            .values()
            .filter(|e| e.state.is_live())
            .map(|e| e.rank)
            .collect();
        (0..).find(|r| !held.contains(r)).unwrap_or(0)
    }

    pub fn cores_granted(&self) -> u32 {
        self.executors
            .values()
            .filter(|e| e.state.is_live())
            .map(|e| e.cores)
            .sum()
    }

    pub fn to_proto(&self) -> proto::Application {
        let mut spec = self.spec.clone();
        let env_names = spec.env.keys().cloned().collect();
        // Names only: values often carry credentials.
        spec.env.clear();
        proto::Application {
            id: self.id.clone(),
            spec: Some(spec),
            state: self.state as i32,
            driver_id: self.driver_id.clone().unwrap_or_default(),
            driver_host: self.driver_host.clone(),
            registered_at_ms: self.registered_at_ms,
            ended_at_ms: self.ended_at_ms,
            target_executors: self.target,
            max_executors: self.max_executors,
            cores_granted: self.cores_granted(),
            executor_failures: self.failures,
            waiting_reason: self.waiting_reason.clone().unwrap_or_default(),
            waiting_code: self
                .waiting_code
                .map(|c| c.as_str().to_string())
                .unwrap_or_default(),
            queue: self.queue.clone(),
            priority: self.priority,
            // Reservations and estimates are made for drivers only.
            estimate: if self.waiting_reason.is_some() {
                "unknown: executors waiting for room hold no reservation".to_string()
            } else {
                String::new()
            },
            message: self.message.clone(),
            executors: self
                .executors
                .values()
                .map(ExecutorInfo::to_proto)
                .collect(),
            env_names,
            preemptions: self
                .preemptions
                .iter()
                .map(super::preemption::PreemptionEvent::to_proto)
                .collect(),
        }
    }

    /// Forgets the oldest ended executors beyond the limit.
    pub(super) fn trim_ended(&mut self) {
        let ended: Vec<u32> = self
            .executors
            .values()
            .filter(|e| !e.state.is_live())
            .map(|e| e.id)
            .collect();
        for id in ended
            .iter()
            .take(ended.len().saturating_sub(MAX_ENDED_EXECUTORS))
        {
            self.executors.remove(id);
        }
    }
}

impl State {
    pub fn executor(&self, key: &ExecKey) -> Option<&ExecutorInfo> {
        self.apps
            .get(&key.app_id)
            .and_then(|a| a.executors.get(&key.executor_id))
    }

    pub(super) fn app_mut(&mut self, id: &str) -> Result<&mut AppInfo> {
        self.apps
            .get_mut(id)
            .map(Arc::make_mut)
            .ok_or_else(|| Error::NotFound(format!("no application {id}")))
    }

    /// An application that has not ended, or why it cannot be changed.
    fn active_app_mut(&mut self, id: &str) -> Result<&mut AppInfo> {
        let app = self.app_mut(id)?;
        if app.state.is_terminal() {
            return Err(Error::FailedPrecondition(format!(
                "{id} already ended ({})",
                app.state.name()
            )));
        }
        Ok(app)
    }

    /// Registers a (validated) application. With a driver, the application belongs to that
    /// driver's current attempt, ends with it, and its executors reach the driver at the
    /// driver's worker unless `driver_host` says otherwise.
    pub fn register_app(
        &mut self,
        spec: ApplicationSpec,
        driver: Option<(&str, u32)>,
        driver_host: &str,
        now_ms: i64,
    ) -> Result<String> {
        self.register_app_owned(spec, driver, driver_host, None, now_ms)
    }

    /// [`State::register_app`] by `owner` (a tenant; `None`: the admin). A driver's
    /// application is its driver's owner's whoever registers it.
    pub fn register_app_owned(
        &mut self,
        spec: ApplicationSpec,
        driver: Option<(&str, u32)>,
        driver_host: &str,
        owner: Option<String>,
        now_ms: i64,
    ) -> Result<String> {
        let mut host = driver_host.to_string();
        let driver_id = driver.map(|(id, _)| id);
        if let Some((driver_id, attempt)) = driver {
            let d = self.driver(driver_id)?;
            if d.state != DriverState::Running {
                return Err(Error::FailedPrecondition(format!(
                    "{driver_id} is {}: only a running driver can own an application",
                    d.state.name()
                )));
            }
            // An old attempt still winding down must not bind an application to the new one.
            if attempt != 0 && attempt != d.attempt {
                return Err(Error::FailedPrecondition(format!(
                    "{driver_id} attempt {attempt} has ended; attempt {} runs now",
                    d.attempt
                )));
            }
            if host.is_empty()
                && let Some(w) = d.worker_id.as_ref().and_then(|w| self.workers.get(w))
            {
                host = w.host.clone();
            }
        }
        // A driver's application runs in its driver's queue, at its priority, and is its
        // owner's.
        let (queue, priority, owner) = match driver_id.and_then(|id| self.drivers.get(id)) {
            Some(d) => (d.spec.queue.clone(), d.spec.priority, d.owner.clone()),
            None => (spec.queue.clone(), spec.priority, owner),
        };
        self.queue_index("queue", &queue)?;
        let queue = if queue.is_empty() {
            default_queue()
        } else {
            queue
        };
        let id = hearth_common::ids::app_id(self.started_ms, self.next_app_seq);
        self.next_app_seq += 1;
        let max_executors = max_executors(&spec);
        let spec_gang = spec.gang;
        let target = if spec.gang {
            // A gang's size is fixed: it asks for its members, not for its cap.
            spec.executors
        } else if spec.executors > 0 {
            spec.executors.min(max_executors)
        } else {
            max_executors
        };
        let app = AppInfo {
            id: id.clone(),
            retries: spec.executor_retries.unwrap_or(DEFAULT_EXECUTOR_RETRIES),
            spec,
            state: ApplicationState::Waiting,
            driver_id: driver_id.map(str::to_string),
            driver_host: host,
            registered_at_ms: now_ms,
            ended_at_ms: 0,
            target,
            max_executors,
            failures: 0,
            waiting_reason: Some("waiting for the scheduler".into()),
            waiting_code: Some(WaitCode::Scheduling),
            queue,
            priority,
            owner,
            message: String::new(),
            executors: BTreeMap::new(),
            next_executor_id: 0,
            gang_waiting_since_ms: spec_gang.then_some(now_ms),
            preemptions: Vec::new(),
        };
        tracing::info!(app_id = %id, driver_id = driver_id.unwrap_or(""), executors = target, "application registered");
        self.apps.insert(id.clone(), Arc::new(app));
        self.active_apps.push_back(id.clone());
        if let Some(driver_id) = driver_id
            && let Some(d) = self.drivers.get_mut(driver_id)
        {
            let d = Arc::make_mut(d);
            d.apps.push(id.clone());
            d.app_id = Some(id.clone());
        }
        Ok(id)
    }

    /// Asks for `count` more executors, refusing (and changing nothing) beyond the cap.
    pub fn request_executors(&mut self, app_id: &str, count: u32) -> Result<()> {
        if count == 0 {
            return Err(
                hearth_common::error::InvalidInput::new("count", "must be at least 1").into(),
            );
        }
        let app = self.active_app_mut(app_id)?;
        if app.spec.gang {
            return Err(Error::FailedPrecondition(format!(
                "{app_id} is a gang of {}: its size is fixed when it registers",
                app.spec.executors
            )));
        }
        let target = u64::from(app.target) + u64::from(count);
        if target > u64::from(app.max_executors) {
            let cap = if app.spec.max_cores > 0 {
                format!(
                    "max_cores {} allows {} executors of {} cores",
                    app.spec.max_cores, app.max_executors, app.spec.executor_cores
                )
            } else {
                format!(
                    "it was registered for {} executors and no max_cores",
                    app.max_executors
                )
            };
            return Err(Error::FailedPrecondition(format!(
                "{app_id} wants {} executors; {count} more would be {target}, over its cap: {cap}",
                app.target
            )));
        }
        app.target = target as u32;
        tracing::info!(app_id, target, "more executors requested");
        Ok(())
    }

    /// Kills some executors of one application; they are not replaced. Every id is checked
    /// before anything changes.
    pub fn kill_executors(
        &mut self,
        app_id: &str,
        executor_ids: &[u32],
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Result<()> {
        if executor_ids.is_empty() {
            return Err(hearth_common::error::InvalidInput::new(
                "executor_ids",
                "name at least one executor",
            )
            .into());
        }
        let app = self.active_app_mut(app_id)?;
        for id in executor_ids {
            match app.executors.get(id) {
                None => {
                    return Err(Error::NotFound(format!("{app_id} has no executor {id}")));
                }
                Some(e) if !e.state.is_live() => {
                    return Err(Error::FailedPrecondition(format!(
                        "executor {id} of {app_id} already ended ({})",
                        e.state.name()
                    )));
                }
                Some(_) => {}
            }
        }
        let ids: std::collections::BTreeSet<u32> = executor_ids.iter().copied().collect();
        // A preempted executor lowers the target itself as it ends.
        let counted = ids
            .iter()
            .filter(|id| app.executors.get(id).is_some_and(|e| e.preempted.is_none()))
            .count();
        app.target = app.target.saturating_sub(counted as u32);
        for id in ids {
            self.executor_gone(
                &ExecKey::new(app_id, id),
                ExecutorState::Killed,
                None,
                "killed by its application".into(),
                now_ms,
                effects,
            );
        }
        Ok(())
    }

    /// A user's kill of a whole application; the driver it belongs to is killed as well.
    pub fn kill_app(&mut self, app_id: &str, now_ms: i64, effects: &mut Vec<Effect>) -> Result<()> {
        let driver_id = self.active_app_mut(app_id)?.driver_id.clone();
        self.end_app(
            app_id,
            ApplicationState::Killed,
            "killed by a user".into(),
            now_ms,
            effects,
        );
        if let Some(driver_id) = driver_id
            && self
                .drivers
                .get(&driver_id)
                .is_some_and(|d| !d.state.is_terminal())
        {
            self.kill_driver(&driver_id, now_ms, effects)?;
        }
        Ok(())
    }

    /// The application's driver or client is done with it.
    pub fn unregister_app(
        &mut self,
        app_id: &str,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Result<()> {
        self.active_app_mut(app_id)?;
        self.end_app(
            app_id,
            ApplicationState::Finished,
            "unregistered".into(),
            now_ms,
            effects,
        );
        Ok(())
    }

    /// Ends an application: its live executors are killed and their slots freed at once.
    pub(super) fn end_app(
        &mut self,
        app_id: &str,
        state: ApplicationState,
        message: String,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(app) = self.apps.get(app_id) else {
            return;
        };
        if app.state.is_terminal() {
            return;
        }
        let live: Vec<u32> = app
            .executors
            .values()
            .filter(|e| e.state.is_live())
            .map(|e| e.id)
            .collect();
        for id in live {
            self.executor_gone(
                &ExecKey::new(app_id, id),
                ExecutorState::Killed,
                None,
                format!("its application ended {}", state.name()),
                now_ms,
                effects,
            );
        }
        let driver_id = match self.apps.get_mut(app_id) {
            Some(app) => {
                let app = Arc::make_mut(app);
                app.state = state;
                app.ended_at_ms = now_ms;
                app.waiting_reason = None;
                app.waiting_code = None;
                app.message = message.clone();
                app.driver_id.clone()
            }
            None => None,
        };
        tracing::info!(app_id, state = state.name(), message, "application ended");
        self.active_apps.retain(|id| id != app_id);
        self.completed_apps.push_back(app_id.to_string());
        if let Some(driver_id) = driver_id
            && let Some(d) = self.drivers.get_mut(&driver_id)
            && d.apps.iter().any(|a| a == app_id)
        {
            Arc::make_mut(d).apps.retain(|a| a != app_id);
        }
    }
}

fn default_queue() -> String {
    crate::schedule::DEFAULT_QUEUE.to_string()
}
