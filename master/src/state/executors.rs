//! Executors: their ids and records, placement on a worker, and what their reports do (a
//! running one confirmed, an ended one freed and, when it failed or was lost, replaced).

use std::{fmt, sync::Arc};

use hearth_common::{
    proto::{self, ApplicationState, ExecutorState, ExecutorStatus, master_message::Msg},
    state_names::{StateName, executor_state},
};

use super::{Effect, State};
use crate::error::Result;

/// One executor, named across the cluster by its application and its number.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ExecKey {
    pub app_id: String,
    pub executor_id: u32,
}

impl ExecKey {
    pub fn new(app_id: &str, executor_id: u32) -> Self {
        Self {
            app_id: app_id.to_string(),
            executor_id,
        }
    }
}

impl fmt::Display for ExecKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app_id, self.executor_id)
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExecutorInfo {
    pub id: u32,
    pub worker_id: String,
    pub state: ExecutorState,
    pub cores: u32,
    pub memory_mb: u64,
    pub exit_code: Option<i32>,
    pub message: String,
    pub launched_at_ms: i64,
    pub ended_at_ms: i64,
    /// HEARTH_EXECUTOR_RANK.
    #[serde(default)]
    pub rank: u32,
    /// Being preempted (why): when it ends it is KILLED with this, and not replaced.
    #[serde(default)]
    pub preempted: Option<String>,
    /// The resource addresses it holds.
    #[serde(default)]
    pub resources: Vec<proto::ResourceAddresses>,
}

impl ExecutorInfo {
    pub fn to_proto(&self) -> proto::Executor {
        proto::Executor {
            id: self.id,
            worker_id: self.worker_id.clone(),
            state: self.state as i32,
            cores: self.cores,
            memory_mb: self.memory_mb,
            exit_code: self.exit_code,
            message: self.message.clone(),
            launched_at_ms: self.launched_at_ms,
            ended_at_ms: self.ended_at_ms,
            rank: self.rank,
            resources: self.resources.clone(),
        }
    }
}

impl State {
    /// Places one new executor of `app_id` on `worker_id`.
    pub(super) fn launch_executor(
        &mut self,
        app_id: &str,
        worker_id: &str,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Result<()> {
        let app = self.app(app_id)?;
        let (cores, memory_mb, executor_id, rank) = (
            app.spec.executor_cores,
            app.spec.executor_memory_mb,
            app.next_executor_id,
            app.free_rank(),
        );
        let world_size = if app.spec.gang {
            app.spec.executors
        } else {
            app.target
        };
        let key = ExecKey::new(app_id, executor_id);
        let asked = app.spec.executor_resources.clone();
        let held = self.pick_resources(worker_id, &key.to_string(), &asked)?;
        self.take_slot(worker_id, &key.to_string(), (cores, memory_mb), &held)?
            .executors
            .insert(key);
        let app = self.app_mut(app_id)?;
        app.next_executor_id += 1;
        app.state = ApplicationState::Running;
        app.gang_waiting_since_ms = None;
        app.executors.insert(
            executor_id,
            ExecutorInfo {
                id: executor_id,
                worker_id: worker_id.to_string(),
                state: ExecutorState::Launching,
                cores,
                memory_mb,
                exit_code: None,
                message: format!("launched on {worker_id}"),
                launched_at_ms: now_ms,
                ended_at_ms: 0,
                rank,
                preempted: None,
                resources: held.clone(),
            },
        );
        tracing::info!(app_id, executor_id, rank, worker_id, "launching executor");
        effects.push(Effect::send(
            worker_id,
            Msg::LaunchExecutor(proto::LaunchExecutor {
                app_id: app_id.to_string(),
                executor_id,
                command: app.spec.command.clone(),
                env: app.spec.env.clone(),
                cores,
                memory_mb,
                driver_id: app.driver_id.clone().unwrap_or_default(),
                driver_host: app.driver_host.clone(),
                rank,
                world_size,
                resources: held,
                // Filled in once the whole turn's placement is known (a gang's hosts).
                gang_hosts: Vec::new(),
            }),
        ));
        Ok(())
    }

    /// A member of a gang that restarts whole failed or was lost: the others end too, and the
    /// gang waits to be placed again together.
    fn restart_gang(
        &mut self,
        key: &ExecKey,
        state: ExecutorState,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let Ok(app) = self.app_mut(&key.app_id) else {
            return;
        };
        app.gang_waiting_since_ms = Some(now_ms);
        let others: Vec<u32> = app
            .executors
            .values()
            .filter(|e| e.state.is_live())
            .map(|e| e.id)
            .collect();
        tracing::info!(app_id = %key.app_id, executor_id = key.executor_id, ending = others.len(), "restarting the gang");
        let why = format!(
            "gang restart: executor {} {}",
            key.executor_id,
            state.name().to_lowercase()
        );
        for id in others {
            self.executor_gone(
                &ExecKey::new(&key.app_id, id),
                ExecutorState::Killed,
                None,
                why.clone(),
                now_ms,
                effects,
            );
        }
    }

    /// A report from a worker about one of its executors. Reports about executors the master
    /// does not run there (late, duplicate, fenced) change nothing.
    pub fn executor_status(
        &mut self,
        worker_id: &str,
        status: ExecutorStatus,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let key = ExecKey::new(&status.app_id, status.executor_id);
        let current = self
            .executor(&key)
            .is_some_and(|e| e.state.is_live() && e.worker_id == worker_id);
        if !current {
            tracing::debug!(worker_id, executor = %key, "ignoring a report about an executor the master does not run there");
            return;
        }
        let state = executor_state(status.state);
        match state {
            ExecutorState::Running => self.executor_running(&key, Some(status.message)),
            ExecutorState::Exited
            | ExecutorState::Failed
            | ExecutorState::Killed
            | ExecutorState::Lost => {
                let message = if status.message.is_empty() {
                    state.name().to_lowercase()
                } else {
                    status.message
                };
                self.executor_gone(&key, state, status.exit_code, message, now_ms, effects);
            }
            ExecutorState::Launching | ExecutorState::Unspecified => {}
        }
    }

    /// Its worker says this live executor runs (a report, or a reconnect listing it).
    pub(super) fn executor_running(&mut self, key: &ExecKey, message: Option<String>) {
        if let Ok(app) = self.app_mut(&key.app_id)
            && let Some(e) = app.executors.get_mut(&key.executor_id)
            && e.state.is_live()
        {
            e.state = ExecutorState::Running;
            if let Some(message) = message {
                e.message = message;
            }
        }
    }

    /// An executor ended (or is being ended by the master): frees its slot, records how, and
    /// applies what that means for its application. For KILLED executors still running, the
    /// kill order goes to the worker; the slot is free at once, like Spark's master.
    pub(super) fn executor_gone(
        &mut self,
        key: &ExecKey,
        state: ExecutorState,
        exit_code: Option<i32>,
        message: String,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(e) = self.executor(key) else {
            return;
        };
        if !e.state.is_live() {
            return;
        }
        let (worker_id, cores, memory_mb) = (e.worker_id.clone(), e.cores, e.memory_mb);
        let held = e.resources.clone();
        // A preempted executor ends KILLED with the reason, however its process ended.
        let preempted = e.preempted.clone();
        let (state, exit_code, message) = match preempted.clone() {
            Some(why) => (ExecutorState::Killed, exit_code, why),
            None => (state, exit_code, message),
        };
        if let Some(w) = self.workers.get_mut(&worker_id)
            && w.executors.contains(key)
        {
            let w = Arc::make_mut(w);
            w.executors.remove(key);
            Self::give_back(w, cores, memory_mb, &held);
            // Killed by the master: the process is still running there.
            if state == ExecutorState::Killed && w.connected {
                effects.push(Effect::send(
                    &worker_id,
                    Msg::KillExecutor(proto::KillExecutor {
                        app_id: key.app_id.clone(),
                        executor_id: key.executor_id,
                        reason: message.clone(),
                        ..Default::default()
                    }),
                ));
            }
        }
        let Ok(app) = self.app_mut(&key.app_id) else {
            return;
        };
        if let Some(e) = app.executors.get_mut(&key.executor_id) {
            e.state = state;
            e.exit_code = exit_code;
            e.message = message.clone();
            e.ended_at_ms = now_ms;
        }
        tracing::info!(app_id = %key.app_id, executor_id = key.executor_id, worker_id, state = state.name(), message, "executor ended");
        let mut failed = None;
        match state {
            // Its application may ask again; a gang waits to start whole again.
            _ if preempted.is_some() => {
                if app.spec.gang {
                    app.gang_waiting_since_ms.get_or_insert(now_ms);
                } else {
                    app.target = app.target.saturating_sub(1);
                }
            }
            ExecutorState::Exited => app.target = app.target.saturating_sub(1),
            ExecutorState::Failed => {
                app.failures += 1;
                if app.failures > app.retries && !app.state.is_terminal() {
                    failed = Some(format!(
                        "{} executors failed, more than its limit of {} retries; the last: executor {}: {message}",
                        app.failures, app.retries, key.executor_id
                    ));
                }
            }
            _ => {}
        }
        app.trim_ended();
        // A gang with no member left waits whole again, from now (its timeout and its
        // reservation count from here).
        if app.spec.gang && !app.state.is_terminal() && app.live() == 0 {
            app.gang_waiting_since_ms.get_or_insert(now_ms);
        }
        let restart_gang = failed.is_none()
            && preempted.is_none()
            && app.spec.gang_restart
            && !app.state.is_terminal()
            && matches!(state, ExecutorState::Failed | ExecutorState::Lost);
        let driver_id = app.driver_id.clone();
        if restart_gang {
            self.restart_gang(key, state, now_ms, effects);
        }
        if let Some(reason) = failed {
            self.end_app(
                &key.app_id,
                ApplicationState::Failed,
                reason.clone(),
                now_ms,
                effects,
            );
            if let Some(driver_id) = driver_id {
                self.fail_driver(
                    &driver_id,
                    format!("its application {} failed: {reason}", key.app_id),
                    effects,
                );
            }
        }
    }
}
