//! JSON: `/api/v1/...` (the full state, camelCase) and `/json/` (Spark master's shape).

use axum::{
    Json,
    extract::{Path, State},
};
use hearth_common::{
    ids::{java_date, now_ms},
    proto::ResourceAddresses,
    state_names::StateName,
    views::{AppView, DriverView, QueueView, WorkerView},
};
use serde_json::{Value, json};

use crate::{actor::MasterHandle, error::Error, telemetry::Sample};

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
    Json(snap.drivers_proto().iter().map(DriverView::from).collect())
}

pub async fn driver(
    State(master): State<MasterHandle>,
    Path(id): Path<String>,
) -> Result<Json<DriverView>, Error> {
    let snap = master.snapshot();
    if snap.drivers.contains_key(&id) {
        return Ok(Json(DriverView::from(&snap.driver_proto(&id)?)));
    }
    Ok(Json(DriverView::from(
        &master.find_driver(&id).await?.to_proto(),
    )))
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

/// The queues, their use and what waits in each; `refused` says why the queues file last read
/// was not applied, while older queues are in force.
pub async fn queues(State(master): State<MasterHandle>) -> Json<Value> {
    let snap = master.snapshot();
    let queues: Vec<QueueView> = snap.queue_views().iter().map(QueueView::from).collect();
    Json(json!({ "queues": queues, "refused": snap.queues_refused }))
}

pub async fn queue(
    State(master): State<MasterHandle>,
    Path(name): Path<String>,
) -> Result<Json<QueueView>, Error> {
    let snap = master.snapshot();
    snap.queue_views()
        .iter()
        .find(|q| q.name == name)
        .map(|q| Json(QueueView::from(q)))
        .ok_or_else(|| Error::NotFound(format!("no queue {name}")))
}

/// The summary Spark's master serves at `/json/`, field for field, so tools written for
/// Spark read it: memory in MiB, times in epoch milliseconds, dates as Java prints them.
pub async fn spark_json(State(master): State<MasterHandle>) -> Json<Value> {
    let mut all = spark_state(&master.snapshot(), &master.links);
    // Hearth's own, beside Spark's fields: which master this is.
    let replication = master
        .replication
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    all.insert(
        "role".into(),
        json!(if master.leadership.elected_by_lease() {
            "leader"
        } else {
            "single"
        }),
    );
    all.insert("epoch".into(), json!(master.leadership.epoch));
    all.insert("standby".into(), json!(replication.standby));
    all.insert("standbyInSync".into(), json!(replication.in_sync));
    Json(Value::Object(all))
}

/// `/json/<field>`, as Spark 4 serves it: `{"<field>": value}`, `""` for a name it does not
/// have, and `clusterutilization` as percentages.
pub async fn spark_json_field(
    State(master): State<MasterHandle>,
    Path(field): Path<String>,
) -> Json<Value> {
    let snap = master.snapshot();
    if field == "clusterutilization" {
        return Json(cluster_utilisation(&snap));
    }
    let mut all = spark_state(&snap, &master.links);
    let value = all.remove(&field).unwrap_or_else(|| json!(""));
    Json(json!({ field: value }))
}

fn cluster_utilisation(snap: &crate::state::State) -> Value {
    let now = Sample::of(snap, now_ms());
    // Spark reports 100 when nothing is offered.
    let pct = |used: u64, total: u64| (used * 100).checked_div(total).unwrap_or(100);
    json!({
        "waitingDrivers": snap.waiting.len(),
        "cores": now.cores,
        "coresused": now.cores_used,
        "coresutilization": pct(now.cores_used, now.cores),
        "memory": now.memory_mb,
        "memoryused": now.memory_used_mb,
        "memoryutilization": pct(now.memory_used_mb, now.memory_mb),
    })
}

/// Spark's `writeResourcesInfo`: `{"gpu": {"name": "gpu", "addresses": ["0", "1"]}}`.
fn resources_info(resources: &[ResourceAddresses]) -> Value {
    Value::Object(
        resources
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    json!({ "name": r.name, "addresses": r.addresses }),
                )
            })
            .collect(),
    )
}

/// Spark's `writeResourceRequirement`s: `[{"name": "gpu", "amount": 1}]`, by name.
fn requirements(asked: &std::collections::HashMap<String, u32>) -> Value {
    let mut names: Vec<(&String, &u32)> = asked.iter().collect();
    names.sort();
    Value::Array(
        names
            .into_iter()
            .map(|(name, amount)| json!({ "name": name, "amount": amount }))
            .collect(),
    )
}

fn used_of(w: &crate::state::WorkerInfo) -> Vec<ResourceAddresses> {
    w.resources_used
        .iter()
        .map(|(name, used)| ResourceAddresses {
            name: name.clone(),
            addresses: used.iter().cloned().collect(),
        })
        .collect()
}

fn free_of(w: &crate::state::WorkerInfo) -> Vec<ResourceAddresses> {
    w.resources
        .iter()
        .map(|r| ResourceAddresses {
            name: r.name.clone(),
            addresses: r
                .addresses
                .iter()
                .filter(|a| {
                    w.resources_used
                        .get(&r.name)
                        .is_none_or(|u| !u.contains(*a))
                })
                .cloned()
                .collect(),
        })
        .collect()
}

fn spark_state(
    snap: &crate::state::State,
    links: &crate::links::Links,
) -> serde_json::Map<String, Value> {
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
                "resources": resources_info(&w.resources),
                "resourcesused": resources_info(&used_of(w)),
                "resourcesfree": resources_info(&free_of(w)),
                "state": w.state.name(),
                "lastheartbeat": links.last_heartbeat_ms(w),
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
            "resources": resources_info(&d.resources),
            "submitdate": java_date(d.submitted_at_ms),
            "worker": d.worker_id.clone().unwrap_or_else(|| "None".into()),
            "mainclass": d.spec.command.first().cloned().unwrap_or_default(),
        })
    };
    let active: Vec<Value> = snap
        .drivers
        .values()
        .filter(|d| !d.state.is_terminal())
        .map(|d| driver_json(d))
        .collect();
    let completed: Vec<Value> = snap
        .completed
        .iter()
        .filter_map(|id| snap.drivers.get(id))
        .map(|d| driver_json(d))
        .collect();
    let now = now_ms();
    let in_use = Sample::of(snap, now);
    let app_json = |a: &crate::state::AppInfo| {
        let end = if a.ended_at_ms > 0 {
            a.ended_at_ms
        } else {
            now
        };
        json!({
            "id": a.id,
            "starttime": a.registered_at_ms,
            "name": a.spec.name,
            "cores": a.cores_granted(),
            "user": "hearth",
            "memoryperexecutor": a.spec.executor_memory_mb,
            "memoryperslave": a.spec.executor_memory_mb,
            "resourcesperexecutor": requirements(&a.spec.executor_resources),
            "resourcesperslave": requirements(&a.spec.executor_resources),
            "submitdate": java_date(a.registered_at_ms),
            "state": a.state.name(),
            "duration": (end - a.registered_at_ms).max(0),
        })
    };
    let active_apps: Vec<Value> = snap
        .active_apps
        .iter()
        .filter_map(|id| snap.apps.get(id))
        .map(|a| app_json(a))
        .collect();
    let completed_apps: Vec<Value> = snap
        .completed_apps
        .iter()
        .filter_map(|id| snap.apps.get(id))
        .map(|a| app_json(a))
        .collect();
    let fields = json!({
        "url": snap.master_url,
        "workers": workers,
        "aliveworkers": alive.len(),
        "cores": in_use.cores,
        "coresused": in_use.cores_used,
        "memory": in_use.memory_mb,
        "memoryused": in_use.memory_used_mb,
        "resources": alive.iter().map(|w| resources_info(&w.resources)).collect::<Vec<_>>(),
        "resourcesused": alive.iter().map(|w| resources_info(&used_of(w))).collect::<Vec<_>>(),
        "activeapps": active_apps,
        "completedapps": completed_apps,
        "activedrivers": active,
        "completeddrivers": completed,
        "status": if snap.recovering { "RECOVERING" } else { "ALIVE" },
    });
    match fields {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}
