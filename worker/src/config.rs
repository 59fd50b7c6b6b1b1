//! The worker's settings as a plain struct, so tests and `hearth local` build it without clap.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use hearth_common::auth::Secret;

// The defaults, here once for both `WorkerConfig::default()` and `hearth worker`'s flags (the
// master's URL is the client library's `DEFAULT_MASTER_URL`).
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
pub const DEFAULT_WEB_PORT: u16 = 8081;
pub const DEFAULT_WORK_DIR: &str = "./hearth-work";
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_DECOMMISSION_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How much of the end of each stdout and stderr the master keeps.
pub const DEFAULT_LOG_TAIL: u64 = 1024 * 1024;
/// How often running processes' new output is shipped to the master.
pub const DEFAULT_LOG_SHIP_INTERVAL: Duration = Duration::from_secs(5);
/// Where GPU device files are looked for.
pub const DEFAULT_DEVICE_DIR: &str = "/dev";

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
    /// Probes, metrics and a small page; port [`DEFAULT_WEB_PORT`] by default.
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
    /// How much of the end of each log the master is asked to keep.
    pub log_tail: u64,
    /// How often running processes' new output is shipped; a worker killed without warning
    /// loses at most this much of it.
    pub log_ship_interval: Duration,
    /// Named resources offered as given (`--resource`), replacing those found of that name.
    pub resources: Vec<hearth_common::proto::ResourceAddresses>,
    /// A program printing Spark's resource discovery format.
    pub resource_discovery: Option<PathBuf>,
    /// Where GPU device files (`nvidia0`, ...) are looked for.
    pub device_dir: PathBuf,
    /// Look for GPUs at all (`hearth local` gives the machine's to its first worker only, so
    /// two embedded workers never hand out the same device).
    pub detect_gpus: bool,
    /// The binary that keeps each process (run as `KEEPER __keep ...`): when unset,
    /// `hearth-keeper` beside this process's executable, else that executable itself.
    pub keeper: Option<PathBuf>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            master_url: hearth_common::client::DEFAULT_MASTER_URL.into(),
            secret: None,
            tls: Default::default(),
            cores: None,
            memory_mb: None,
            host: None,
            name: None,
            web_addr: SocketAddr::new(DEFAULT_BIND, DEFAULT_WEB_PORT),
            work_dir: PathBuf::from(DEFAULT_WORK_DIR),
            kill_grace: DEFAULT_KILL_GRACE,
            decommission_grace: DEFAULT_DECOMMISSION_GRACE,
            cgroup_root: PathBuf::from(DEFAULT_CGROUP_ROOT),
            labels: Default::default(),
            log_tail: DEFAULT_LOG_TAIL,
            log_ship_interval: DEFAULT_LOG_SHIP_INTERVAL,
            resources: Vec::new(),
            resource_discovery: None,
            device_dir: PathBuf::from(DEFAULT_DEVICE_DIR),
            detect_gpus: true,
            keeper: None,
        }
    }
}
