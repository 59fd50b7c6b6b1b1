//! Server-rendered pages (askama): the overview and the worker, driver and application pages.

use askama::Template;
use axum::{
    extract::{Path, State},
    response::{Html, IntoResponse, Response},
};
use hearth_common::{ids::display_time, resources::format_mb, states::StateName};

use crate::{
    actor::MasterHandle,
    error::Error,
    state::{AppInfo, DriverInfo, ExecutorInfo, WorkerInfo},
};

/// An application as a table row.
struct AppRow {
    id: String,
    name: String,
    state: &'static str,
    driver: String,
    executors: String,
    cores_granted: u32,
    memory_per_executor: String,
    registered: String,
    waiting_reason: String,
    message: String,
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
struct ExecutorRow {
    app_id: String,
    id: u32,
    worker: String,
    state: &'static str,
    cores: u32,
    memory: String,
    exit_code: String,
    message: String,
}

impl ExecutorRow {
    fn new(app_id: &str, e: &ExecutorInfo) -> Self {
        Self {
            app_id: app_id.to_string(),
            id: e.id,
            worker: e.worker_id.clone(),
            state: e.state.name(),
            cores: e.cores,
            memory: format_mb(e.memory_mb),
            exit_code: e.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            message: e.message.clone(),
        }
    }
}

/// A worker as a table row.
struct WorkerRow {
    id: String,
    host: String,
    state: &'static str,
    cores: u32,
    cores_used: u32,
    memory: String,
    memory_used: String,
    last_heartbeat: String,
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
struct DriverRow {
    id: String,
    name: String,
    state: &'static str,
    worker: String,
    cores: u32,
    memory: String,
    submitted: String,
    waiting_reason: String,
    exit_code: String,
    message: String,
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

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    base: String,
    url: String,
    /// ALIVE, or RECOVERING after a restart until the known workers are back.
    status: &'static str,
    alive_workers: usize,
    cores: u32,
    cores_used: u32,
    memory: String,
    memory_used: String,
    workers: Vec<WorkerRow>,
    running: Vec<DriverRow>,
    completed: Vec<DriverRow>,
    running_apps: Vec<AppRow>,
    completed_apps: Vec<AppRow>,
}

#[derive(Template)]
#[template(path = "worker.html")]
struct WorkerPage {
    base: String,
    w: WorkerRow,
    name: String,
    drivers: Vec<DriverRow>,
    executors: Vec<ExecutorRow>,
}

#[derive(Template)]
#[template(path = "app.html")]
struct AppPage {
    base: String,
    a: AppRow,
    command: String,
    env_names: String,
    executor_cores: u32,
    max_executors: u32,
    failures: String,
    driver_host: String,
    ended: String,
    executors: Vec<ExecutorRow>,
}

#[derive(Template)]
#[template(path = "driver.html")]
struct DriverPage {
    base: String,
    d: DriverRow,
    attempt: u32,
    supervise: String,
    command: String,
    env_names: String,
    app_id: String,
    history: Vec<HistoryRow>,
}

struct HistoryRow {
    at: String,
    state: &'static str,
    attempt: u32,
    worker: String,
    message: String,
}

fn render(page: impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => Error::Internal(format!("rendering a page: {e}")).into_response(),
    }
}

pub async fn overview(State(master): State<MasterHandle>) -> Response {
    let snap = master.snapshot();
    let alive: Vec<_> = snap.alive_workers().collect();
    let mut completed: Vec<DriverRow> = snap
        .completed
        .iter()
        .rev()
        .filter_map(|id| snap.drivers.get(id))
        .map(|d| DriverRow::from(d.as_ref()))
        .collect();
    completed.truncate(snap.retained_drivers);
    let running_apps = snap
        .active_apps
        .iter()
        .filter_map(|id| snap.apps.get(id))
        .map(|a| AppRow::from(a.as_ref()))
        .collect();
    let completed_apps = snap
        .completed_apps
        .iter()
        .rev()
        .filter_map(|id| snap.apps.get(id))
        .map(|a| AppRow::from(a.as_ref()))
        .collect();
    render(Overview {
        base: String::new(),
        url: snap.master_url.clone(),
        status: if snap.recovering {
            "RECOVERING"
        } else {
            "ALIVE"
        },
        alive_workers: alive.len(),
        cores: alive.iter().map(|w| w.cores).sum(),
        cores_used: alive.iter().map(|w| w.cores_used).sum(),
        memory: format_mb(alive.iter().map(|w| w.memory_mb).sum()),
        memory_used: format_mb(alive.iter().map(|w| w.memory_used_mb).sum()),
        workers: snap
            .workers
            .values()
            .map(|w| WorkerRow::from(w.as_ref()))
            .collect(),
        running: snap
            .drivers
            .values()
            .filter(|d| !d.state.is_terminal())
            .map(|d| DriverRow::from(d.as_ref()))
            .collect(),
        completed,
        running_apps,
        completed_apps,
    })
}

pub async fn worker(State(master): State<MasterHandle>, Path(id): Path<String>) -> Response {
    let snap = master.snapshot();
    let w = match snap.worker(&id) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    render(WorkerPage {
        base: String::new(),
        w: WorkerRow::from(w.as_ref()),
        name: w.name.clone(),
        drivers: w
            .drivers
            .iter()
            .filter_map(|id| snap.drivers.get(id))
            .map(|d| DriverRow::from(d.as_ref()))
            .collect(),
        executors: w
            .executors
            .iter()
            .filter_map(|k| snap.executor(k).map(|e| ExecutorRow::new(&k.app_id, e)))
            .collect(),
    })
}

pub async fn app(State(master): State<MasterHandle>, Path(id): Path<String>) -> Response {
    let snap = master.snapshot();
    let a = match snap.app(&id) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    render(AppPage {
        base: String::new(),
        a: AppRow::from(a.as_ref()),
        command: a.spec.command.join(" "),
        env_names: a.spec.env.keys().cloned().collect::<Vec<_>>().join(", "),
        executor_cores: a.spec.executor_cores,
        max_executors: a.max_executors,
        failures: format!("{} of {} allowed", a.failures, a.retries),
        driver_host: a.driver_host.clone(),
        ended: if a.ended_at_ms > 0 {
            display_time(a.ended_at_ms)
        } else {
            String::new()
        },
        executors: a
            .executors
            .values()
            .rev()
            .map(|e| ExecutorRow::new(&a.id, e))
            .collect(),
    })
}

pub async fn driver(State(master): State<MasterHandle>, Path(id): Path<String>) -> Response {
    let snap = master.snapshot();
    let d = match snap.driver(&id) {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    render(DriverPage {
        base: String::new(),
        d: DriverRow::from(d.as_ref()),
        attempt: d.attempt,
        supervise: if d.spec.supervise {
            format!(
                "yes, up to {} relaunches ({} used)",
                d.spec.max_retries, d.relaunches
            )
        } else {
            "no".into()
        },
        command: d.spec.command.join(" "),
        env_names: d.spec.env.keys().cloned().collect::<Vec<_>>().join(", "),
        app_id: d.app_id.clone().unwrap_or_default(),
        history: d
            .history
            .iter()
            .map(|h| HistoryRow {
                at: display_time(h.at_ms),
                state: hearth_common::states::driver_state(h.state).name(),
                attempt: h.attempt,
                worker: h.worker_id.clone(),
                message: h.message.clone(),
            })
            .collect(),
    })
}
