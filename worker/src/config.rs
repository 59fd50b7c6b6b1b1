//! The worker's settings as a plain struct, so tests and `hearth local` build it without clap.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use hearth_common::auth::Secret;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The master's gRPC URL; the worker always dials this, never an address echoed back.
    pub master_url: String,
    pub secret: Option<Secret>,
    /// How an `https://` master is checked; passed on to drivers and executors.
    pub tls: hearth_common::client::ClientTls,
    /// Cores offered; detected from the cgroup (else the host) when unset.
    pub cores: Option<u32>,
    /// Memory offered, MiB; detected from the cgroup (else the host) when unset.
    pub memory_mb: Option<u64>,
    /// Address advertised to the master (the pod IP); unset lets the master use the address it
    /// sees the stream come from.
    pub host: Option<String>,
    pub name: Option<String>,
    /// Probes, metrics and a small page; port 8081 by default.
    pub web_addr: SocketAddr,
    pub work_dir: PathBuf,
    /// Between SIGTERM and SIGKILL when a driver is killed.
    pub kill_grace: Duration,
    /// After SIGTERM, how long running drivers and executors may go on before the rest are
    /// killed (and relaunched or replaced elsewhere by the master).
    pub decommission_grace: Duration,
    /// Where the cgroup file system is mounted.
    pub cgroup_root: PathBuf,
    /// Shown on the master's worker page: pod, node, namespace, and any the operator adds.
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            master_url: "http://127.0.0.1:7077".into(),
            secret: None,
            tls: Default::default(),
            cores: None,
            memory_mb: None,
            host: None,
            name: None,
            web_addr: SocketAddr::from(([0, 0, 0, 0], 8081)),
            work_dir: PathBuf::from("./hearth-work"),
            kill_grace: Duration::from_secs(10),
            decommission_grace: Duration::from_secs(30),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            labels: Default::default(),
        }
    }
}
