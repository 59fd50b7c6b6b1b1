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
    /// Named resource addresses it holds: `gpu 0,1`.
    pub resources: String,
}

/// `gpu 0,1; fpga f0`: named resource addresses, for a cell.
pub fn addresses(resources: &[hearth_common::proto::ResourceAddresses]) -> String {
    resources
        .iter()
        .map(|r| format!("{} {}", r.name, r.addresses.join(",")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `gpu 1 / 2 (in use: 1)`: a worker's named resources, held and offered.
pub fn held_of_offered(w: &WorkerInfo) -> String {
    w.resources
        .iter()
        .map(|r| {
            let used = w.resources_used.get(&r.name);
            let in_use: Vec<&str> =
                used.map_or(Vec::new(), |u| u.iter().map(String::as_str).collect());
            format!(
                "{} {} / {}{}",
                r.name,
                in_use.len(),
                r.addresses.len(),
                if in_use.is_empty() {
                    String::new()
                } else {
                    format!(" (in use: {})", in_use.join(","))
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
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
            resources: addresses(&e.resources),
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
    /// Named resources held / offered.
    pub resources: String,
}

impl WorkerRow {
    /// The row of `w`; when it was last heard comes from its stream, where `heard` has one.
    pub fn new(w: &WorkerInfo, heard: Option<&crate::links::Links>) -> Self {
        let last_heartbeat_ms = heard.map_or(w.last_heartbeat_ms, |l| l.last_heartbeat_ms(w));
        Self {
            id: w.id.clone(),
            host: w.host.clone(),
            state: w.state.name(),
            cores: w.cores,
            cores_used: w.cores_used,
            memory: format_mb(w.memory_mb),
            memory_used: format_mb(w.memory_used_mb),
            last_heartbeat: display_time(last_heartbeat_ms),
            resources: held_of_offered(w),
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
    /// Named resources asked (`gpu 1`) and the addresses given.
    pub resources: String,
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
            resources: {
                let mut asked: Vec<_> = d.spec.resources.iter().collect();
                asked.sort();
                let asked: Vec<String> = asked.iter().map(|(n, c)| format!("{c} {n}")).collect();
                match (asked.is_empty(), d.resources.is_empty()) {
                    (true, _) => String::new(),
                    (false, true) => asked.join(", "),
                    (false, false) => {
                        format!("{} (given {})", asked.join(", "), addresses(&d.resources))
                    }
                }
            },
        }
    }
}
