//! What can happen to the cluster: the commands the actor receives from gRPC handlers and
//! worker streams.

use hearth_common::proto::{
    ApplicationSpec, DriverSpec, DriverState, DriverStatus, ExecutorStatus, Register,
};
use std::sync::Arc;
use tokio::sync::oneshot;

use crate::{error::Result, links::Link, schedule::QueueTree, tenants::Tenants};

#[derive(Debug)]
pub enum Command {
    /// A worker's stream opened with `Register`. The actor installs `link` and sends
    /// `Registered` through it before any order, then replies.
    Register {
        register: Register,
        /// The address the stream came from, used when the worker advertises none.
        peer_host: String,
        link: Link,
        reply: oneshot::Sender<Result<()>>,
    },
    /// The autoscaler drains an idle worker it is about to remove (nothing new is placed on
    /// it; answered whether it was still idle), or takes a drained one back.
    Drain {
        worker_id: String,
        drain: bool,
        reply: oneshot::Sender<Result<bool>>,
    },
    Heartbeat {
        worker_id: String,
        conn_id: u64,
        /// Answered with a HeartbeatAck once committed (0: a worker that wants none).
        seq: u64,
    },
    DriverStatus {
        worker_id: String,
        conn_id: u64,
        status: DriverStatus,
    },
    ExecutorStatus {
        worker_id: String,
        conn_id: u64,
        status: ExecutorStatus,
    },
    /// The worker is leaving; nothing new goes to it.
    Decommission {
        worker_id: String,
        conn_id: u64,
        reason: String,
    },
    /// The worker's stream ended (or broke).
    Disconnected {
        worker_id: String,
        conn_id: u64,
        reason: String,
    },
    Submit {
        spec: DriverSpec,
        application: Option<ApplicationSpec>,
        /// The client's id for this submission, so a retry returns the same driver.
        submission_id: Option<String>,
        /// The tenant submitting; `None`: the admin.
        owner: Option<String>,
        reply: oneshot::Sender<Result<String>>,
    },
    Kill {
        driver_id: String,
        reply: oneshot::Sender<Result<DriverState>>,
    },
    /// Replies with the new application's id.
    RegisterApp {
        spec: ApplicationSpec,
        /// The owning driver and the attempt that asks (0: whichever runs now).
        driver: Option<(String, u32)>,
        driver_host: String,
        /// The tenant registering it; `None`: the admin (or a driver, whose owner it takes).
        owner: Option<String>,
        reply: oneshot::Sender<Result<String>>,
    },
    RequestExecutors {
        app_id: String,
        count: u32,
        reply: oneshot::Sender<Result<()>>,
    },
    KillExecutors {
        app_id: String,
        executor_ids: Vec<u32>,
        reply: oneshot::Sender<Result<()>>,
    },
    UnregisterApp {
        app_id: String,
        reply: oneshot::Sender<Result<()>>,
    },
    KillApp {
        app_id: String,
        reply: oneshot::Sender<Result<()>>,
    },
    /// The queues file was read again: the new queues to put in force, or why it was refused
    /// (the old ones stay).
    SetQueues(std::result::Result<(Arc<QueueTree>, Arc<Tenants>), String>),
}
