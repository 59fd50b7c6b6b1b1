//! Table rows as the templates show them: ids, states and figures already formatted.

use hearth_common::{ids::display_time, resources::format_mb, state_names::StateName};

use crate::state::{AppInfo, DriverInfo, ExecutorInfo, PreemptionEvent, WorkerInfo};

/// An application as a table row.
pub struct AppRow {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub driver: String,
    pub executors: String,
    pub cores_granted: u32,
    pub memory_per_executor: String,
    pub registered: String,
    pub waiting_reason: String,
    pub message: String,
}

impl From<&AppInfo> for AppRow {
    fn from(a: &AppInfo) -> Self {
        Self {
            id: a.id.clone(),
            name: a.spec.name.clone(),
            state: a.state.name(),
            driver: a.driver_id.clone().unwrap_or_default(),
            executors: format!("{} / {}", a.live(), a.target),
            cores_granted: a.cores_granted(),
            memory_per_executor: format_mb(a.spec.executor_memory_mb),
            registered: display_time(a.registered_at_ms),
            waiting_reason: a.waiting_reason.clone().unwrap_or_default(),
            message: a.message.clone(),
        }
    }
}

/// An executor as a table row.
pub struct ExecutorRow {
    pub app_id: String,
    pub id: u32,
    pub rank: u32,
    pub worker: String,
    pub state: &'static str,
    pub cores: u32,
    pub memory: String,
    pub exit_code: String,
    pub message: String,
}

impl ExecutorRow {
    pub fn new(app_id: &str, e: &ExecutorInfo) -> Self {
        Self {
            app_id: app_id.to_string(),
            id: e.id,
            rank: e.rank,
            worker: e.worker_id.clone(),
            state: e.state.name(),
            cores: e.cores,
            memory: format_mb(e.memory_mb),
            exit_code: e.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            message: e.message.clone(),
        }
    }
}

/// A preemption as a table row.
pub struct PreemptionRow {
    pub at: String,
    pub rule: &'static str,
    pub preemptor: String,
    /// Below the UI's base: `drivers/{id}` or `apps/{id}`.
    pub preemptor_path: String,
    pub preemptor_queue: String,
    pub victim: String,
    pub victim_queue: String,
    pub reason: String,
}

impl PreemptionRow {
    pub fn rows(events: &[PreemptionEvent]) -> Vec<Self> {
        events
            .iter()
            .map(|e| Self {
                at: display_time(e.at_ms),
                rule: e.rule.as_str(),
                preemptor_path: if e.preemptor.starts_with("app-") {
                    format!("apps/{}", e.preemptor)
                } else {
                    format!("drivers/{}", e.preemptor)
                },
                preemptor: e.preemptor.clone(),
                preemptor_queue: e.preemptor_queue.clone(),
                victim: e.victim.clone(),
                victim_queue: e.victim_queue.clone(),
                reason: e.reason.clone(),
            })
            .collect()
    }
}

/// A worker as a table row.
pub struct WorkerRow {
    pub id: String,
    pub host: String,
    pub state: &'static str,
    pub cores: u32,
    pub cores_used: u32,
    pub memory: String,
    pub memory_used: String,
    pub last_heartbeat: String,
}

impl From<&WorkerInfo> for WorkerRow {
    fn from(w: &WorkerInfo) -> Self {
        Self {
            id: w.id.clone(),
            host: w.host.clone(),
            state: w.state.name(),
            cores: w.cores,
            cores_used: w.cores_used,
            memory: format_mb(w.memory_mb),
            memory_used: format_mb(w.memory_used_mb),
            last_heartbeat: display_time(w.last_heartbeat_ms),
        }
    }
}

/// A driver as a table row.
pub struct DriverRow {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub worker: String,
    pub cores: u32,
    pub memory: String,
    pub submitted: String,
    pub waiting_reason: String,
    pub exit_code: String,
    pub message: String,
}

impl From<&DriverInfo> for DriverRow {
    fn from(d: &DriverInfo) -> Self {
        Self {
            id: d.id.clone(),
            name: d.spec.name.clone(),
            state: d.state.name(),
            worker: d.worker_id.clone().unwrap_or_default(),
            cores: d.spec.cores,
            memory: format_mb(d.spec.memory_mb),
            submitted: display_time(d.submitted_at_ms),
            waiting_reason: d.waiting_reason.clone().unwrap_or_default(),
            exit_code: d.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            message: d.message.clone(),
        }
    }
}
