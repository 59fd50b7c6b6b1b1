//! JSON: `/api/v1/...` (the full state, camelCase) and `/json/` (Spark master's shape).

use axum::{
    Json,
    extract::{Path, State},
};
use hearth_common::{
    states::StateName,
    views::{AppView, DriverView, WorkerView},
};
use serde_json::{Value, json};

use crate::{actor::MasterHandle, error::Error};

pub async fn workers(State(master): State<MasterHandle>) -> Json<Vec<WorkerView>> {
    let snap = master.snapshot();
    Json(
        snap.workers
            .values()
            .map(|w| WorkerView::from(&w.to_proto()))
            .collect(),
    )
}

pub async fn worker(
    State(master): State<MasterHandle>,
    Path(id): Path<String>,
) -> Result<Json<WorkerView>, Error> {
    let snap = master.snapshot();
    Ok(Json(WorkerView::from(&snap.worker(&id)?.to_proto())))
}

pub async fn drivers(State(master): State<MasterHandle>) -> Json<Vec<DriverView>> {
    let snap = master.snapshot();
    Json(
        snap.drivers
            .values()
            .map(|d| DriverView::from(&d.to_proto()))
            .collect(),
    )
}

pub async fn driver(
    State(master): State<MasterHandle>,
    Path(id): Path<String>,
) -> Result<Json<DriverView>, Error> {
    let snap = master.snapshot();
    Ok(Json(DriverView::from(&snap.driver(&id)?.to_proto())))
}

pub async fn apps(State(master): State<MasterHandle>) -> Json<Vec<AppView>> {
    let snap = master.snapshot();
    Json(
        snap.apps
            .values()
            .map(|a| AppView::from(&a.to_proto()))
            .collect(),
    )
}

pub async fn app(
    State(master): State<MasterHandle>,
    Path(id): Path<String>,
) -> Result<Json<AppView>, Error> {
    let snap = master.snapshot();
    Ok(Json(AppView::from(&snap.app(&id)?.to_proto())))
}

/// The summary Spark's master serves at `/json/`, so tools written for Spark read it.
pub async fn spark_json(State(master): State<MasterHandle>) -> Json<Value> {
    let snap = master.snapshot();
    let alive: Vec<_> = snap.alive_workers().collect();
    let workers: Vec<Value> = snap
        .workers
        .values()
        .map(|w| {
            json!({
                "id": w.id,
                "host": w.host,
                "port": w.web_port,
                "webuiaddress": format!("http://{}:{}", w.host, w.web_port),
                "cores": w.cores,
                "coresused": w.cores_used,
                "coresfree": w.free_cores(),
                "memory": w.memory_mb,
                "memoryused": w.memory_used_mb,
                "memoryfree": w.free_memory_mb(),
                "state": w.state.name(),
                "lastheartbeat": w.last_heartbeat_ms,
            })
        })
        .collect();
    let driver_json = |d: &crate::state::DriverInfo| {
        json!({
            "id": d.id,
            "starttime": d.submitted_at_ms.to_string(),
            "state": d.state.name(),
            "cores": d.spec.cores,
            "memory": d.spec.memory_mb,
            "submitdate": hearth_common::ids::display_time(d.submitted_at_ms),
            "worker": d.worker_id.clone().unwrap_or_else(|| "None".into()),
            "mainclass": d.spec.command.first().cloned().unwrap_or_default(),
            "name": d.spec.name,
        })
    };
    let active: Vec<Value> = snap
        .drivers
        .values()
        .filter(|d| !d.state.is_terminal())
        .map(|d| driver_json(d))
        .collect();
    let completed: Vec<Value> = snap
        .drivers
        .values()
        .filter(|d| d.state.is_terminal())
        .map(|d| driver_json(d))
        .collect();
    let app_json = |a: &crate::state::AppInfo| {
        let duration = if a.ended_at_ms > 0 {
            a.ended_at_ms - a.registered_at_ms
        } else {
            hearth_common::ids::now_ms() - a.registered_at_ms
        };
        json!({
            "id": a.id,
            "starttime": a.registered_at_ms,
            "name": a.spec.name,
            "cores": a.cores_granted(),
            "user": "hearth",
            "memoryperexecutor": a.spec.executor_memory_mb,
            "memoryperslave": a.spec.executor_memory_mb,
            "resourcesperexecutor": [],
            "resourcesperslave": [],
            "submitdate": hearth_common::ids::display_time(a.registered_at_ms),
            "state": a.state.name(),
            "duration": duration.max(0),
            "driver": a.driver_id.clone().unwrap_or_default(),
            "executors": a.live(),
        })
    };
    let active_apps: Vec<Value> = snap
        .active_apps
        .iter()
        .filter_map(|id| snap.apps.get(id))
        .map(|a| app_json(a))
        .collect();
    // Most recent first, as Spark lists them.
    let completed_apps: Vec<Value> = snap
        .completed_apps
        .iter()
        .rev()
        .filter_map(|id| snap.apps.get(id))
        .map(|a| app_json(a))
        .collect();
    let alive_count = alive.len();
    Json(json!({
        "url": snap.master_url,
        "workers": workers,
        "aliveworkers": alive_count,
        "cores": alive.iter().map(|w| w.cores).sum::<u32>(),
        "coresused": alive.iter().map(|w| w.cores_used).sum::<u32>(),
        "memory": alive.iter().map(|w| w.memory_mb).sum::<u64>(),
        "memoryused": alive.iter().map(|w| w.memory_used_mb).sum::<u64>(),
        "resources": [],
        "resourcesused": [],
        "activeapps": active_apps,
        "completedapps": completed_apps,
        "activedrivers": active,
        "completeddrivers": completed,
        "status": if snap.recovering { "RECOVERING" } else { "ALIVE" },
    }))
}
