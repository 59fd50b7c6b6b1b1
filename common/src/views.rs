//! The JSON shapes of `/api/v1/...` and `hearth list --json` (camelCase, Spark's state names).
//!
//! Built from the protocol's messages so the API, the CLI and gRPC clients always agree.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    proto::{
        Application, Driver, DriverStateChange, Executor, Preemption, Queue, ResourceAddresses,
        Resources, Worker,
    },
    state_names::{StateName, app_state, driver_state, executor_state, worker_state},
};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerView {
    pub id: String,
    pub name: String,
    pub host: String,
    pub web_port: u32,
    pub state: &'static str,
    pub cores: u32,
    pub cores_used: u32,
    pub memory_mb: u64,
    pub memory_used_mb: u64,
    pub last_heartbeat_ms: i64,
    pub registered_at_ms: i64,
    pub drivers: Vec<String>,
    pub executors: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Named resources offered (`gpu` → its addresses), and those handed out.
    pub resources: BTreeMap<String, Vec<String>>,
    pub resources_used: BTreeMap<String, Vec<String>>,
}

/// Resource addresses by name, as the views show them.
pub fn by_name(resources: &[ResourceAddresses]) -> BTreeMap<String, Vec<String>> {
    resources
        .iter()
        .map(|r| (r.name.clone(), r.addresses.clone()))
        .collect()
}

impl From<&Worker> for WorkerView {
    fn from(w: &Worker) -> Self {
        Self {
            id: w.id.clone(),
            name: w.name.clone(),
            host: w.host.clone(),
            web_port: w.web_port,
            state: worker_state(w.state).name(),
            cores: w.cores,
            cores_used: w.cores_used,
            memory_mb: w.memory_mb,
            memory_used_mb: w.memory_used_mb,
            last_heartbeat_ms: w.last_heartbeat_ms,
            registered_at_ms: w.registered_at_ms,
            drivers: w.driver_ids.clone(),
            executors: w.executor_ids.clone(),
            labels: w.labels.clone().into_iter().collect(),
            resources: by_name(&w.resources),
            resources_used: by_name(&w.resources_used),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateChangeView {
    pub state: &'static str,
    pub at_ms: i64,
    pub attempt: u32,
    pub message: String,
    pub worker_id: Option<String>,
}

/// One preemption: who ended whom, under which rule (`reclaim`, `priority`), and why.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreemptionView {
    pub at_ms: i64,
    pub rule: String,
    pub preemptor: String,
    pub preemptor_queue: String,
    pub victim: String,
    pub victim_queue: String,
    pub reason: String,
}

impl From<&Preemption> for PreemptionView {
    fn from(p: &Preemption) -> Self {
        Self {
            at_ms: p.at_ms,
            rule: p.rule.clone(),
            preemptor: p.preemptor.clone(),
            preemptor_queue: p.preemptor_queue.clone(),
            victim: p.victim.clone(),
            victim_queue: p.victim_queue.clone(),
            reason: p.reason.clone(),
        }
    }
}

impl From<&DriverStateChange> for StateChangeView {
    fn from(c: &DriverStateChange) -> Self {
        Self {
            state: driver_state(c.state).name(),
            at_ms: c.at_ms,
            attempt: c.attempt,
            message: c.message.clone(),
            worker_id: non_empty(&c.worker_id),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriverView {
    pub id: String,
    pub name: String,
    pub command: Vec<String>,
    /// Names only: values often carry credentials.
    pub env_names: Vec<String>,
    pub state: &'static str,
    pub worker_id: Option<String>,
    pub cores: u32,
    pub memory_mb: u64,
    pub supervise: bool,
    pub max_retries: u32,
    /// Never runs in two places at once (see `DriverSpec.at_most_one`).
    pub at_most_one: bool,
    pub attempt: u32,
    pub exit_code: Option<i32>,
    pub queue: String,
    pub priority: i32,
    pub waiting_reason: Option<String>,
    /// What kind of wait it is (`NO_FREE_SLOTS`, `QUEUE_CAP`, ...); see the README.
    pub waiting_code: Option<String>,
    /// While it waits: when it should start (epoch ms), where that can be worked out.
    pub estimated_start: Option<i64>,
    /// While it waits: what the estimate rests on, or why there is none.
    pub estimate: Option<String>,
    /// Ended KILLED once it has run this long.
    pub time_limit_ms: Option<u64>,
    /// While it waits: its place in its queue's order (1 goes next), and how many wait there.
    pub queue_position: Option<u32>,
    pub queue_waiting: Option<u32>,
    pub message: Option<String>,
    pub submitted_at_ms: i64,
    pub history: Vec<StateChangeView>,
    pub app_id: Option<String>,
    /// Preemptions it made (for room) or suffered, oldest first.
    pub preemptions: Vec<PreemptionView>,
    /// The port its own web UI listens on.
    pub ui_port: Option<u32>,
    /// While it runs: where that UI is served, under the master's web UI root (after any base
    /// path), `/drivers/<id>/ui/`.
    pub ui_path: Option<String>,
    /// Named resources it asks for (`gpu` → 1), and the addresses its attempt was given.
    pub resources: BTreeMap<String, u32>,
    pub resource_addresses: BTreeMap<String, Vec<String>>,
}

impl From<&Driver> for DriverView {
    fn from(d: &Driver) -> Self {
        let spec = d.spec.clone().unwrap_or_default();
        Self {
            id: d.id.clone(),
            name: spec.name,
            command: spec.command,
            env_names: d.env_names.clone(),
            state: driver_state(d.state).name(),
            worker_id: non_empty(&d.worker_id),
            cores: spec.cores,
            memory_mb: spec.memory_mb,
            supervise: spec.supervise,
            max_retries: spec.max_retries,
            at_most_one: spec.at_most_one,
            attempt: d.attempt,
            exit_code: d.exit_code,
            queue: spec.queue,
            priority: spec.priority,
            waiting_reason: non_empty(&d.waiting_reason),
            waiting_code: non_empty(&d.waiting_code),
            estimated_start: d.estimated_start_ms,
            estimate: non_empty(&d.estimate),
            time_limit_ms: (spec.time_limit_ms > 0).then_some(spec.time_limit_ms),
            queue_position: (d.queue_position > 0).then_some(d.queue_position),
            queue_waiting: (d.queue_position > 0).then_some(d.queue_waiting),
            message: non_empty(&d.message),
            submitted_at_ms: d.submitted_at_ms,
            history: d.history.iter().map(StateChangeView::from).collect(),
            app_id: non_empty(&d.app_id),
            preemptions: d.preemptions.iter().map(PreemptionView::from).collect(),
            ui_port: (spec.ui_port > 0).then_some(spec.ui_port),
            ui_path: non_empty(&d.ui_path),
            resources: spec.resources.clone().into_iter().collect(),
            resource_addresses: by_name(&d.resources),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutorView {
    pub id: u32,
    pub worker_id: Option<String>,
    pub state: &'static str,
    pub cores: u32,
    pub memory_mb: u64,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub launched_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    /// HEARTH_EXECUTOR_RANK: 0..N-1; a replacement keeps the rank of the one it replaces.
    pub rank: u32,
    /// The named resource addresses it was given.
    pub resources: BTreeMap<String, Vec<String>>,
}

impl From<&Executor> for ExecutorView {
    fn from(e: &Executor) -> Self {
        Self {
            id: e.id,
            worker_id: non_empty(&e.worker_id),
            state: executor_state(e.state).name(),
            cores: e.cores,
            memory_mb: e.memory_mb,
            exit_code: e.exit_code,
            message: non_empty(&e.message),
            launched_at_ms: e.launched_at_ms,
            ended_at_ms: (e.ended_at_ms > 0).then_some(e.ended_at_ms),
            rank: e.rank,
            resources: by_name(&e.resources),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub driver_id: Option<String>,
    pub driver_host: Option<String>,
    pub command: Vec<String>,
    /// Names only: values often carry credentials.
    pub env_names: Vec<String>,
    pub executor_cores: u32,
    pub executor_memory_mb: u64,
    pub target_executors: u32,
    pub max_executors: u32,
    pub max_cores: Option<u32>,
    pub cores_granted: u32,
    pub executor_failures: u32,
    /// All its executors start together or none ([`Self::target_executors`] is its size).
    pub gang: bool,
    /// A gang that has not started within this long ends FAILED.
    pub gang_timeout_ms: Option<u64>,
    /// A failed or lost member ends the whole gang, which starts again together.
    pub gang_restart: bool,
    /// Named resources each executor asks for (`gpu` → 1).
    pub executor_resources: BTreeMap<String, u32>,
    pub queue: String,
    pub priority: i32,
    pub waiting_reason: Option<String>,
    pub waiting_code: Option<String>,
    /// While it waits for executors: why no start time can be given.
    pub estimate: Option<String>,
    pub message: Option<String>,
    pub registered_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub executors: Vec<ExecutorView>,
    /// Preemptions it (or its executors) made or suffered, oldest first.
    pub preemptions: Vec<PreemptionView>,
}

impl From<&Application> for AppView {
    fn from(a: &Application) -> Self {
        let spec = a.spec.clone().unwrap_or_default();
        Self {
            id: a.id.clone(),
            name: spec.name,
            state: app_state(a.state).name(),
            driver_id: non_empty(&a.driver_id),
            driver_host: non_empty(&a.driver_host),
            command: spec.command,
            env_names: a.env_names.clone(),
            executor_cores: spec.executor_cores,
            executor_memory_mb: spec.executor_memory_mb,
            target_executors: a.target_executors,
            max_executors: a.max_executors,
            max_cores: (spec.max_cores > 0).then_some(spec.max_cores),
            cores_granted: a.cores_granted,
            executor_failures: a.executor_failures,
            gang: spec.gang,
            gang_timeout_ms: (spec.gang_timeout_ms > 0).then_some(spec.gang_timeout_ms),
            gang_restart: spec.gang_restart,
            executor_resources: spec.executor_resources.clone().into_iter().collect(),
            queue: a.queue.clone(),
            priority: a.priority,
            waiting_reason: non_empty(&a.waiting_reason),
            waiting_code: non_empty(&a.waiting_code),
            estimate: non_empty(&a.estimate),
            message: non_empty(&a.message),
            registered_at_ms: a.registered_at_ms,
            ended_at_ms: (a.ended_at_ms > 0).then_some(a.ended_at_ms),
            executors: a.executors.iter().map(ExecutorView::from).collect(),
            preemptions: a.preemptions.iter().map(PreemptionView::from).collect(),
        }
    }
}

/// Cores and memory together, as the queues show them.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AmountView {
    pub cores: u64,
    pub memory_mb: u64,
}

impl From<&Resources> for AmountView {
    fn from(r: &Resources) -> Self {
        Self {
            cores: r.cores,
            memory_mb: r.memory_mb,
        }
    }
}

/// One queue in `/api/v1/queues` and `hearth queues --json`. A cap of `u64::MAX` in one
/// resource means none there.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    pub name: String,
    pub parent: Option<String>,
    pub weight: u32,
    pub guaranteed: AmountView,
    pub max: Option<AmountView>,
    /// Held by its work and its children's.
    pub used: AmountView,
    /// Drivers waiting in it, and executors its applications still want.
    pub waiting: u32,
    pub wanted_executors: u32,
    /// Its dominant share of the cluster (0 to 1).
    pub share: f64,
}

impl From<&Queue> for QueueView {
    fn from(q: &Queue) -> Self {
        let zero = AmountView {
            cores: 0,
            memory_mb: 0,
        };
        Self {
            name: q.name.clone(),
            parent: non_empty(&q.parent),
            weight: q.weight,
            guaranteed: q.guaranteed.as_ref().map_or(zero, AmountView::from),
            max: q.max.as_ref().map(AmountView::from),
            used: q.used.as_ref().map_or(zero, AmountView::from),
            waiting: q.waiting_drivers,
            wanted_executors: q.wanted_executors,
            share: q.share,
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}
