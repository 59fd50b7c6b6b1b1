//! Drivers: kills, reports from workers, and relaunches of supervised ones.

use std::sync::Arc;

use hearth_common::{
    proto::{
        self, ApplicationSpec, ApplicationState, DriverSpec, DriverState, DriverStateChange,
        DriverStatus, master_message::Msg,
    },
    state_names::StateName,
};

use super::{Effect, State, preemption::PreemptionEvent};
use crate::{
    error::{Error, Result},
    schedule::WaitCode,
};

/// Most state changes kept per driver.
const MAX_HISTORY: usize = 64;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DriverInfo {
    pub id: String,
    /// The client's id for this submission: a resubmission with it returns this driver.
    #[serde(default)]
    pub submission_id: Option<String>,
    /// Shared, as it never changes after submission: a driver's record is copied at every
    /// change while a published snapshot holds the old one.
    pub spec: Arc<DriverSpec>,
    /// Executors it asked for at submit time: an application registered at each launch.
    pub app_spec: Option<ApplicationSpec>,
    pub state: DriverState,
    pub worker_id: Option<String>,
    /// Launches so far; a relaunch keeps the id and counts up.
    pub attempt: u32,
    pub relaunches: u32,
    pub exit_code: Option<i32>,
    pub waiting_reason: Option<String>,
    /// What kind of wait `waiting_reason` is.
    #[serde(default)]
    pub waiting_code: Option<WaitCode>,
    /// The tenant that submitted it; `None`: the cluster's admin (the shared secret).
    #[serde(default)]
    pub owner: Option<String>,
    /// When the current attempt was launched (its time limit counts from here).
    #[serde(default)]
    pub running_since_ms: Option<i64>,
    /// While it waits: when it should start, if that can be worked out.
    #[serde(default)]
    pub estimated_start_ms: Option<i64>,
    /// While it waits: what the estimate rests on, or why there is none.
    #[serde(default)]
    pub estimate: Option<String>,
    pub message: String,
    pub submitted_at_ms: i64,
    /// Set once a user asked for the kill, so a supervised driver is not relaunched.
    pub kill_requested: bool,
    /// Set when the master stops it because its application failed: it ends FAILED with this
    /// message, and is not relaunched.
    pub failed_because: Option<String>,
    /// The application most recently registered for its current (or last) attempt.
    pub app_id: Option<String>,
    /// Applications bound to the current attempt and not yet ended.
    pub apps: Vec<String>,
    pub history: Vec<DriverStateChange>,
    /// Its running attempt is being preempted (why): when it ends it waits again.
    #[serde(default)]
    pub preempted: Option<String>,
    /// Preemptions it made or suffered, oldest first.
    #[serde(default)]
    pub preemptions: Vec<PreemptionEvent>,
    /// `at_most_one`: not relaunched before this time (epoch ms), when the lease of the worker
    /// it was lost with has surely ended.
    #[serde(default)]
    pub fenced_until_ms: Option<i64>,
    /// The same on the master's monotonic clock, which decides: a step of the wall clock must
    /// not release it early. Not kept: a restarted master waits a whole lease again.
    #[serde(skip)]
    pub fence_deadline: Option<tokio::time::Instant>,
    /// `at_most_one`: a worker that came back still running an older attempt; not relaunched
    /// until that copy's end is reported.
    #[serde(default)]
    pub old_copy_on: Option<String>,
    /// The resource addresses its current (or last) attempt holds.
    #[serde(default)]
    pub resources: Vec<proto::ResourceAddresses>,
}

// Reflexive, as no field is a float; see `WorkerInfo`'s `Eq` for why it matters.
impl Eq for DriverInfo {}

impl DriverInfo {
    pub fn to_proto(&self) -> proto::Driver {
        let mut spec = (*self.spec).clone();
        let env_names = spec.env.keys().cloned().collect();
        // Values of environment variables often carry credentials: they never leave the master
        // except in the launch order to the worker.
        spec.env.clear();
        let application = self.app_spec.clone().map(|mut a| {
            a.env.clear();
            a
        });
        let ui_path = if self.spec.ui_port > 0 && self.state == DriverState::Running {
            format!("/drivers/{}/ui/", self.id)
        } else {
            String::new()
        };
        proto::Driver {
            ui_path,
            resources: self.resources.clone(),
            id: self.id.clone(),
            spec: Some(spec),
            state: self.state as i32,
            worker_id: self.worker_id.clone().unwrap_or_default(),
            attempt: self.attempt,
            exit_code: self.exit_code,
            waiting_reason: self.waiting_reason.clone().unwrap_or_default(),
            waiting_code: self
                .waiting_code
                .map(|c| c.as_str().to_string())
                .unwrap_or_default(),
            estimated_start_ms: self.waiting_reason.as_ref().and(self.estimated_start_ms),
            estimate: match (&self.waiting_reason, &self.estimate) {
                (None, _) => String::new(),
                (Some(_), Some(estimate)) => estimate.clone(),
                // Only a reservation on a worker whose work has time limits gives a time.
                (Some(_), None) => "unknown: it holds no reservation yet".to_string(),
            },
            // Filled in by `State::driver_proto`, which sees the whole queue.
            queue_position: 0,
            queue_waiting: 0,
            submitted_at_ms: self.submitted_at_ms,
            history: self.history.clone(),
            message: self.message.clone(),
            env_names,
            application,
            app_id: self.app_id.clone().unwrap_or_default(),
            preemptions: self
                .preemptions
                .iter()
                .map(PreemptionEvent::to_proto)
                .collect(),
        }
    }

    /// Stopped on purpose (by a user, or because its application failed): never relaunched.
    pub(super) fn stop_requested(&self) -> bool {
        self.kill_requested || self.failed_because.is_some()
    }

    pub(super) fn record(&mut self, state: DriverState, message: impl Into<String>, now_ms: i64) {
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

/// How an application ends when its driver's attempt ends this way.
fn app_end_for(driver_state: DriverState) -> ApplicationState {
    match driver_state {
        DriverState::Finished => ApplicationState::Finished,
        DriverState::Killed => ApplicationState::Killed,
        _ => ApplicationState::Failed,
    }
}

impl State {
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
                state.name()
            )));
        }
        let worker_id = driver.worker_id.clone();
        let attempt = driver.attempt;
        match (state, worker_id) {
            (DriverState::Running, Some(worker_id)) => {
                let d = self.driver_mut(id)?;
                d.kill_requested = true;
                d.message = "kill requested by a user".into();
                effects.push(Effect::send(
                    &worker_id,
                    Msg::KillDriver(proto::KillDriver {
                        driver_id: id.to_string(),
                        attempt,
                        reason: "killed by a user".into(),
                        ..Default::default()
                    }),
                ));
                Ok(DriverState::Running)
            }
            _ => {
                self.waiting.retain(|w| w != id);
                let d = self.driver_mut(id)?;
                d.kill_requested = true;
                d.waiting_reason = None;
                d.waiting_code = None;
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

    /// Stops a running driver because its application failed; it ends FAILED, not relaunched.
    pub(super) fn fail_driver(&mut self, id: &str, reason: String, effects: &mut Vec<Effect>) {
        let Some(d) = self.drivers.get_mut(id) else {
            return;
        };
        if d.state != DriverState::Running || d.stop_requested() {
            return;
        }
        let d = Arc::make_mut(d);
        d.failed_because = Some(reason.clone());
        if let Some(worker_id) = d.worker_id.clone() {
            effects.push(Effect::send(
                &worker_id,
                Msg::KillDriver(proto::KillDriver {
                    driver_id: id.to_string(),
                    attempt: d.attempt,
                    reason,
                    ..Default::default()
                }),
            ));
        }
    }

    /// A report from a worker about one of its drivers. Reports about an attempt the master does
    /// not run there (late, duplicate, or from a fenced worker) change nothing.
    pub fn driver_status(
        &mut self,
        worker_id: &str,
        status: DriverStatus,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let state = hearth_common::state_names::driver_state(status.state);
        let current = self.drivers.get(&status.driver_id).is_some_and(|d| {
            d.state == DriverState::Running
                && d.worker_id.as_deref() == Some(worker_id)
                && d.attempt == status.attempt
        });
        if !current {
            tracing::debug!(worker_id, driver_id = %status.driver_id, attempt = status.attempt,
                "ignoring a report about an attempt the master does not run there");
            if state.is_terminal() {
                self.old_copy_ended(&status.driver_id, worker_id);
            }
            return;
        }
        if !state.is_terminal() {
            return;
        }
        let driver_id = status.driver_id;
        self.release_driver(worker_id, &driver_id);
        let Some(d) = self.drivers.get_mut(&driver_id) else {
            return;
        };
        let d = Arc::make_mut(d);
        d.exit_code = status.exit_code;
        if d.preempted.is_some() && !d.stop_requested() {
            let why = d.preempted.clone().unwrap_or_default();
            self.end_driver_apps(&driver_id, DriverState::Killed, &why, now_ms, effects);
            self.requeue_preempted(&driver_id, now_ms);
            return;
        }
        let relaunch = d.spec.supervise
            && !d.stop_requested()
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
            self.end_driver_apps(&driver_id, state, &message, now_ms, effects);
            self.relaunch(&driver_id, message, now_ms);
        } else {
            let (state, message) = if state == DriverState::Finished {
                (state, message)
            } else if let Some(why) = d.failed_because.clone() {
                (DriverState::Failed, why)
            } else if d.kill_requested {
                (DriverState::Killed, message)
            } else {
                (state, message)
            };
            d.record(state, message.clone(), now_ms);
            self.completed.push_back(driver_id.clone());
            self.end_driver_apps(&driver_id, state, &message, now_ms, effects);
        }
    }

    /// A running driver's worker went away.
    pub(super) fn driver_lost(
        &mut self,
        driver_id: &str,
        reason: String,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(d) = self.drivers.get_mut(driver_id) else {
            return;
        };
        if d.state != DriverState::Running {
            return;
        }
        let d = Arc::make_mut(d);
        if d.preempted.is_some() && !d.stop_requested() {
            // It was being preempted anyway: it waits again, as it would have.
            let why = d.preempted.clone().unwrap_or_default();
            self.end_driver_apps(driver_id, DriverState::Killed, &why, now_ms, effects);
            self.requeue_preempted(driver_id, now_ms);
            return;
        }
        if d.spec.supervise && !d.stop_requested() && d.relaunches < d.spec.max_retries {
            self.end_driver_apps(driver_id, DriverState::Error, &reason, now_ms, effects);
            self.relaunch(driver_id, reason, now_ms);
        } else {
            let (state, why) = if let Some(why) = d.failed_because.clone() {
                (DriverState::Failed, why)
            } else if d.kill_requested {
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
            d.record(state, why.clone(), now_ms);
            self.completed.push_back(driver_id.to_string());
            self.end_driver_apps(driver_id, state, &why, now_ms, effects);
        }
    }

    /// The driver's attempt ended: so do the applications bound to it.
    fn end_driver_apps(
        &mut self,
        driver_id: &str,
        driver_state: DriverState,
        message: &str,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(d) = self.drivers.get_mut(driver_id) else {
            return;
        };
        let apps = std::mem::take(&mut Arc::make_mut(d).apps);
        let why = format!("its driver {driver_id} ended {}", driver_state.name());
        let why = if message.is_empty() {
            why
        } else {
            format!("{why}: {message}")
        };
        for app_id in apps {
            self.end_app(
                &app_id,
                app_end_for(driver_state),
                why.clone(),
                now_ms,
                effects,
            );
        }
    }

    /// A placed attempt whose launch never reached its worker waits again, first in its
    /// queue: it never ran, so it is neither failed nor counted as a relaunch.
    pub(super) fn requeue_unlaunched(
        &mut self,
        driver_id: &str,
        worker_id: &str,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(d) = self.drivers.get(driver_id) else {
            return;
        };
        if d.stop_requested() {
            // Killed (or failed by its application) meanwhile: it ends as a lost one would.
            self.driver_lost(
                driver_id,
                format!("{worker_id} never received it"),
                now_ms,
                effects,
            );
            return;
        }
        let why = format!(
            "attempt {} never reached {worker_id} (its stream broke before the launch arrived)",
            d.attempt
        );
        self.end_driver_apps(driver_id, DriverState::Error, &why, now_ms, effects);
        let Some(d) = self.drivers.get_mut(driver_id) else {
            return;
        };
        let d = Arc::make_mut(d);
        d.worker_id = None;
        d.running_since_ms = None;
        d.waiting_reason = Some("waiting for the scheduler".into());
        d.waiting_code = Some(WaitCode::Scheduling);
        let state = if d.relaunches > 0 {
            DriverState::Relaunching
        } else {
            DriverState::Submitted
        };
        d.record(state, format!("{why}; waiting to run again"), now_ms);
        tracing::warn!(
            driver_id,
            worker_id,
            "launch never reached the worker; driver waits again"
        );
        self.waiting.push_front(driver_id.to_string());
        self.forget_tried();
    }

    fn relaunch(&mut self, driver_id: &str, reason: String, now_ms: i64) {
        if let Some(d) = self.drivers.get_mut(driver_id) {
            let d = Arc::make_mut(d);
            d.relaunches += 1;
            d.worker_id = None;
            d.waiting_reason = Some("waiting for the scheduler".into());
            d.waiting_code = Some(WaitCode::Scheduling);
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

    /// Gives back a driver's slot, if it holds one there.
    fn release_driver(&mut self, worker_id: &str, driver_id: &str) {
        let Some(d) = self.drivers.get(driver_id) else {
            return;
        };
        let (cores, memory_mb, held) = (d.spec.cores, d.spec.memory_mb, d.resources.clone());
        if let Some(w) = self.workers.get_mut(worker_id)
            && w.drivers.contains(driver_id)
        {
            let w = Arc::make_mut(w);
            w.drivers.remove(driver_id);
            Self::give_back(w, cores, memory_mb, &held);
        }
    }

    /// Starts a placed driver on its worker, registering its application first if it has one.
    pub(super) fn launch(
        &mut self,
        driver_id: &str,
        worker_id: &str,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Result<()> {
        let d = self.driver(driver_id)?;
        let (cores, memory_mb) = (d.spec.cores, d.spec.memory_mb);
        let app_spec = d.app_spec.clone();
        let held = self.pick_resources(worker_id, driver_id, &d.spec.resources)?;
        self.take_slot(worker_id, driver_id, (cores, memory_mb), &held)?
            .drivers
            .insert(driver_id.to_string());
        let d = self.driver_mut(driver_id)?;
        d.resources = held.clone();
        d.attempt += 1;
        d.worker_id = Some(worker_id.to_string());
        d.waiting_reason = None;
        d.waiting_code = None;
        d.estimated_start_ms = None;
        d.estimate = None;
        d.running_since_ms = Some(now_ms);
        d.exit_code = None;
        d.record(
            DriverState::Running,
            format!("launched on {worker_id}"),
            now_ms,
        );
        let (attempt, spec) = (d.attempt, d.spec.clone());
        let app_id = match app_spec {
            Some(app_spec) => {
                let app_id = self.register_app(app_spec, Some((driver_id, attempt)), "", now_ms)?;
                self.driver_mut(driver_id)?.app_id = Some(app_id.clone());
                Some(app_id)
            }
            None => {
                d.app_id = None;
                None
            }
        };
        if spec.time_limit_ms > 0 {
            let at = now_ms.saturating_add(spec.time_limit_ms as i64);
            self.limits_quiet_until_ms = self.limits_quiet_until_ms.map(|t| t.min(at));
        }
        // At debug: a burst places thousands a turn; the turn logs how many it placed.
        tracing::debug!(
            driver_id,
            worker_id,
            attempt,
            app_id = app_id.as_deref().unwrap_or(""),
            "launching driver"
        );
        effects.push(Effect::send(
            worker_id,
            Msg::LaunchDriver(proto::LaunchDriver {
                driver_id: driver_id.to_string(),
                attempt,
                spec: Some((*spec).clone()),
                app_id: app_id.unwrap_or_default(),
                // Minted by the actor as it sends the order.
                token: String::new(),
                // Known to the actor (the UI's base path).
                ui_base: String::new(),
                resources: held,
            }),
        ));
        Ok(())
    }
}
