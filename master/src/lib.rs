//! The Hearth master: the one owner of cluster state, its scheduler, and the gRPC and HTTP
//! sides people and workers talk to.
//!
//! - [`config`]: settings as a plain struct with `validate()`.
//! - [`state`]: all cluster state and every transition of it, free of I/O.
//! - [`schedule`]: placement as a pure function.
//! - [`queue_file`]: the queues file, parsed and watched for changes.
//! - [`tenants`]: who may submit with a token of their own, and into which queues.
//! - [`driver_tokens`]: the token each driver launch gets instead of the cluster secret.
//! - [`store`]: the durable state file (redb) the actor writes before it answers.
//! - [`command`]: what can happen to the cluster: the commands the state owner receives.
//! - [`actor`]: the state owner's loop and the handle others hold.
//! - [`ha`]: leader election on a Kubernetes Lease, and the standby that follows the leader.
//! - [`links`]: the open streams to workers (orders and log requests go through them).
//! - [`kept_logs`]: the tails of logs workers ship, kept for when the worker is gone.
//! - [`tunnels`]: drivers' web UIs, proxied through tunnels their workers open.
//! - [`grpc`]: the worker and client services, plus health and reflection.
//! - [`web`]: pages, JSON, probes and metrics on port 8080.
//! - [`listen`]: the ports as bound, plain or behind TLS.
//! - [`tls`]: the certificate both ports serve, reloaded when its files change.
//! - [`telemetry`]: latency histograms and the utilisation samples behind the UI's chart.
//! - [`server`]: binds the ports and runs it all until shutdown.

pub mod accepted;
pub mod actor;
pub mod autoscale;
pub mod command;
pub mod config;
pub mod driver_tokens;
pub mod error;
pub mod grpc;
pub mod ha;
pub mod history;
pub mod kept_logs;
pub mod links;
pub mod listen;
pub mod queue_file;
pub mod scaling_status;
pub mod schedule;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod tls;
pub mod tunnels;
pub mod web;

pub use config::MasterConfig;
pub use error::{Error, Result};
pub use server::{RunningMaster, start};
