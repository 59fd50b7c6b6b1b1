//! What of the state is kept across restarts: the shapes the store writes and recovery reads.
//!
//! Drivers and applications are kept whole; a worker only as its offer and the slots it held,
//! not its connection.

use std::collections::BTreeSet;

use hearth_common::proto::WorkerState;
use serde::{Deserialize, Serialize};

use super::{AppInfo, DriverInfo, ExecKey, WorkerInfo};

/// The id counters and the cluster's start time, which ids are made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    pub started_ms: i64,
    pub next_driver_seq: u64,
    pub next_app_seq: u64,
    /// The longest lease a worker may still hold (a master before ran with this worker
    /// timeout): `at_most_one` drivers are fenced for at least this long.
    #[serde(default)]
    pub lease_ms: u64,
}

/// What is kept of a worker: its offer and the slots it held, not its connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredWorker {
    pub id: String,
    pub name: String,
    pub host: String,
    pub web_port: u32,
    pub state: WorkerState,
    pub cores: u32,
    pub memory_mb: u64,
    pub registered_at_ms: i64,
    /// Its stream was open: a DECOMMISSIONED worker that has left is not waited for.
    pub connected: bool,
    pub drivers: BTreeSet<String>,
    pub executors: BTreeSet<ExecKey>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub resources: Vec<hearth_common::proto::ResourceAddresses>,
}

impl From<&WorkerInfo> for StoredWorker {
    fn from(w: &WorkerInfo) -> Self {
        Self {
            id: w.id.clone(),
            name: w.name.clone(),
            host: w.host.clone(),
            web_port: w.web_port,
            state: w.state,
            cores: w.cores,
            memory_mb: w.memory_mb,
            registered_at_ms: w.registered_at_ms,
            connected: w.connected,
            drivers: w.drivers.clone(),
            executors: w.executors.clone(),
            labels: w.labels.clone(),
            resources: w.resources.clone(),
        }
    }
}

/// Everything a restarted master reads back.
#[derive(Debug, Default)]
pub struct Loaded {
    pub meta: Option<Meta>,
    pub drivers: Vec<DriverInfo>,
    pub apps: Vec<AppInfo>,
    pub workers: Vec<StoredWorker>,
}
