//! The command line: clap's types for every subcommand and the parsers of their values.
//!
//! Defaults come from the crates that own them, so `hearth master --help` and
//! `MasterConfig::default()` cannot drift apart.

use std::{net::IpAddr, path::PathBuf, sync::LazyLock, time::Duration};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use hearth_common::{
    auth::Secret,
    client::{ClientTls, DEFAULT_MASTER_URL},
    duration::{format_duration, parse_duration},
    resources::{parse_cores, parse_memory_mb},
    spec::parse_env_pair,
};
use hearth_master::config as master;
use hearth_worker::config as worker;

mod client;

pub use client::{ExecutorsArgs, IdArgs, ListArgs, LogsArgs, QueuesArgs, SubmitArgs};

// clap shows and parses a default as text, and a `Duration` has no `Display`: these are the
// crates' default durations written out once, when the command line is parsed.
static CONNECT_TIMEOUT: LazyLock<String> =
    LazyLock::new(|| format_duration(hearth_common::client::DEFAULT_CONNECT_TIMEOUT));
static WORKER_TIMEOUT: LazyLock<String> =
    LazyLock::new(|| format_duration(master::DEFAULT_WORKER_TIMEOUT));
static RECOVERY_TIMEOUT: LazyLock<String> =
    LazyLock::new(|| format_duration(master::DEFAULT_RECOVERY_TIMEOUT));
static RESERVE_AFTER: LazyLock<String> =
    LazyLock::new(|| format_duration(master::DEFAULT_RESERVE_AFTER));
static USAGE_HALF_LIFE: LazyLock<String> =
    LazyLock::new(|| format_duration(master::DEFAULT_USAGE_HALF_LIFE));
static LOG_SHIP_INTERVAL: LazyLock<String> =
    LazyLock::new(|| format_duration(worker::DEFAULT_LOG_SHIP_INTERVAL));
static KILL_GRACE: LazyLock<String> = LazyLock::new(|| format_duration(worker::DEFAULT_KILL_GRACE));
static DECOMMISSION_GRACE: LazyLock<String> =
    LazyLock::new(|| format_duration(worker::DEFAULT_DECOMMISSION_GRACE));

#[derive(Parser)]
#[command(
    name = "hearth",
    version,
    about = "A standalone cluster manager for Kubernetes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Subcommand)]
pub enum Action {
    /// Run the master: gRPC on 7077, web UI on 8080.
    Master(MasterArgs),
    /// Run a worker that offers this machine's (or container's) cores and memory to a master.
    Worker(WorkerArgs),
    /// Run an embedded cluster (a master and workers) in one process.
    Local(LocalArgs),
    /// Submit a driver; prints its id alone on the first line.
    Submit(SubmitArgs),
    /// Show a driver's or an application's state.
    Status(IdArgs),
    /// Kill a driver or an application.
    Kill(IdArgs),
    /// List workers, drivers or applications.
    List(ListArgs),
    /// Print a driver's or an executor's (app-.../N) output, fetched through the master.
    Logs(LogsArgs),
    /// Grow or shrink an application's executors while it runs (a driver's own dynamic
    /// allocation): --add N more, or --kill the executors named.
    Executors(ExecutorsArgs),
    /// Show the queues: settings, what each holds, what waits in each.
    Queues(QueuesArgs),
}

fn cores_arg(s: &str) -> Result<u32, String> {
    parse_cores("cores", s).map_err(|e| e.reason)
}

fn memory_arg(s: &str) -> Result<u64, String> {
    parse_memory_mb("memory", s).map_err(|e| e.reason)
}

fn base_path_arg(text: &str) -> Result<String, String> {
    master::ui_base_path(text).map_err(|e| e.to_string())
}

fn label_arg(text: &str) -> Result<(String, String), String> {
    hearth_common::spec::parse_label(text).map_err(|e| e.to_string())
}

fn resource_offer_arg(s: &str) -> Result<hearth_common::proto::ResourceAddresses, String> {
    hearth_common::named_resources::parse_offer("resource", s).map_err(|e| e.reason)
}

pub(crate) fn resource_ask_arg(s: &str) -> Result<(String, u32), String> {
    hearth_common::named_resources::parse_ask("resource", s).map_err(|e| e.reason)
}

fn bytes_arg(s: &str) -> Result<u64, String> {
    hearth_common::resources::parse_bytes("size", s).map_err(|e| e.reason)
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration("duration", s).map_err(|e| e.reason)
}

fn env_arg(s: &str) -> Result<(String, String), String> {
    parse_env_pair(s).map_err(|e| e.reason)
}

#[derive(Args)]
pub struct SecretArgs {
    /// File holding the shared secret (else $HEARTH_SECRET is used).
    #[arg(long, env = "HEARTH_SECRET_FILE", global = true)]
    secret_file: Option<PathBuf>,
}

impl SecretArgs {
    pub fn load(&self) -> Result<Option<Secret>> {
        Ok(Secret::resolve(self.secret_file.as_deref())?)
    }
}

#[derive(Args)]
pub struct MasterArgs {
    /// gRPC port for workers and clients.
    #[arg(long, env = "HEARTH_MASTER_PORT", default_value_t = master::DEFAULT_GRPC_PORT)]
    pub port: u16,
    /// Web UI port.
    #[arg(long, env = "HEARTH_WEBUI_PORT", default_value_t = master::DEFAULT_WEBUI_PORT)]
    pub webui_port: u16,
    /// Address to listen on.
    #[arg(long, env = "HEARTH_BIND", default_value_t = master::DEFAULT_BIND)]
    pub bind: IpAddr,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// File holding the secret being replaced (else $HEARTH_PREVIOUS_SECRET): accepted too,
    /// so workers and clients can move to the new secret one by one.
    #[arg(long, env = "HEARTH_PREVIOUS_SECRET_FILE")]
    pub previous_secret_file: Option<PathBuf>,
    /// Run without a shared secret (anyone who reaches the ports can run commands).
    #[arg(long, env = "HEARTH_INSECURE")]
    pub insecure: bool,
    /// Where the master keeps its state.
    #[arg(long, env = "HEARTH_STATE_DIR", default_value = master::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The queues file (YAML; see the README's "Sharing a cluster"), read again when it
    /// changes. Without one: the `default` queue alone, first come first served.
    #[arg(long = "queues", env = "HEARTH_QUEUES_FILE")]
    pub queues_file: Option<PathBuf>,
    /// A worker not heard from for this long is declared DEAD.
    #[arg(
        long,
        env = "HEARTH_WORKER_TIMEOUT",
        default_value = WORKER_TIMEOUT.as_str(),
        value_parser = duration_arg
    )]
    pub worker_timeout: Duration,
    /// The most heartbeats a second asked of the whole cluster: past 4 times this many
    /// workers, each is asked to heartbeat less often, and held to a longer timeout in step
    /// (0: no bound).
    #[arg(
        long,
        env = "HEARTH_MAX_HEARTBEAT_RATE",
        default_value_t = master::DEFAULT_MAX_HEARTBEAT_RATE
    )]
    pub max_heartbeat_rate: u32,
    /// How many completed drivers are kept in memory for the UI and API (the most recent).
    #[arg(
        long,
        env = "HEARTH_RETAINED_DRIVERS",
        default_value_t = master::DEFAULT_RETAINED_DRIVERS
    )]
    pub retained_drivers: usize,
    /// How many older completed drivers are kept in the state file, read from there by id and
    /// page by page (0: none).
    #[arg(
        long,
        env = "HEARTH_RETAINED_HISTORY",
        default_value_t = master::DEFAULT_RETAINED_HISTORY
    )]
    pub retained_history: u64,
    /// How many ended applications are kept for the UI and API.
    #[arg(long, env = "HEARTH_RETAINED_APPS", default_value_t = master::DEFAULT_RETAINED_APPS)]
    pub retained_apps: usize,
    /// Deal executors round-robin over workers (true) or fill one worker before the next.
    #[arg(
        long,
        env = "HEARTH_SPREAD_OUT",
        default_value_t = master::DEFAULT_SPREAD_OUT,
        action = clap::ArgAction::Set
    )]
    pub spread_out: bool,
    /// After a restart, how long to wait for the workers the master knew before declaring the
    /// missing ones DEAD.
    #[arg(
        long,
        env = "HEARTH_RECOVERY_TIMEOUT",
        default_value = RECOVERY_TIMEOUT.as_str(),
        value_parser = duration_arg
    )]
    pub recovery_timeout: Duration,
    /// Most drivers waiting for a slot; more submissions are refused until some run.
    #[arg(long, env = "HEARTH_MAX_WAITING", default_value_t = master::DEFAULT_MAX_WAITING)]
    pub max_waiting: usize,
    /// How long the head of a queue waits for room before it reserves the worker where it fits
    /// first (nothing else starts there until it does, except work whose time limit ends
    /// sooner), so large work waits a bounded time behind a stream of small work.
    #[arg(
        long,
        env = "HEARTH_RESERVE_AFTER",
        default_value = RESERVE_AFTER.as_str(),
        value_parser = duration_arg
    )]
    pub reserve_after: Duration,
    /// Fair shares count what a queue held recently as well as what it holds now, forgetting
    /// half of the past every this long, so a team that just ran a burst yields to one that
    /// did not; 0s counts what it holds now only.
    #[arg(
        long,
        env = "HEARTH_USAGE_HALF_LIFE",
        default_value = USAGE_HALF_LIFE.as_str(),
        value_parser = duration_arg
    )]
    pub usage_half_life: Duration,
    /// Size the worker Deployment to the waiting work: scale up at once, scale down idle
    /// workers after --scale-down-idle (see the README's "Autoscaling workers").
    #[arg(long, env = "HEARTH_AUTOSCALE")]
    pub autoscale: bool,
    /// The worker Deployment to size, NAMESPACE/NAME (default: this pod's namespace, from
    /// HEARTH_POD_NAMESPACE, and hearth-worker).
    #[arg(long, env = "HEARTH_AUTOSCALE_TARGET")]
    pub autoscale_target: Option<String>,
    /// The fewest workers autoscaling keeps.
    #[arg(long, env = "HEARTH_MIN_WORKERS", default_value_t = 1)]
    pub min_workers: u32,
    /// The most workers autoscaling asks for.
    #[arg(long, env = "HEARTH_MAX_WORKERS", default_value_t = 10)]
    pub max_workers: u32,
    /// How long a worker runs nothing before autoscaling removes it.
    #[arg(long, env = "HEARTH_SCALE_DOWN_IDLE", default_value = "60s", value_parser = duration_arg)]
    pub scale_down_idle: Duration,
    /// Run as one of two masters, leading while it holds this Kubernetes Lease and standing by
    /// (following the leader's state) otherwise; see the README's "Running a standby master".
    #[arg(long, env = "HEARTH_LEASE")]
    pub lease: Option<String>,
    /// The Lease's namespace (default: this pod's, from HEARTH_POD_NAMESPACE, else hearth).
    #[arg(long, env = "HEARTH_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This master's name in the Lease (default: HEARTH_POD_NAME, else the host name).
    #[arg(long, env = "HEARTH_IDENTITY")]
    pub identity: Option<String>,
    /// Where the other master reaches this one's gRPC port (default: http://HEARTH_POD_IP:PORT).
    #[arg(long, env = "HEARTH_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// How long the standby waits after it last saw the Lease renewed before taking it.
    #[arg(long, env = "HEARTH_LEASE_DURATION", default_value = "3s", value_parser = duration_arg)]
    pub lease_duration: Duration,
    /// How long the leader acts after its last successful renewal; shorter than the lease.
    #[arg(long, env = "HEARTH_RENEW_DEADLINE", default_value = "2s", value_parser = duration_arg)]
    pub renew_deadline: Duration,
    /// How often the leader renews the Lease and the standby reads it.
    #[arg(long, env = "HEARTH_RETRY_PERIOD", default_value = "500ms", value_parser = duration_arg)]
    pub retry_period: Duration,
    /// How long the leader waits for the standby to confirm a turn before going on without it.
    #[arg(long, env = "HEARTH_REPLICATION_TIMEOUT", default_value = "1s", value_parser = duration_arg)]
    pub replication_timeout: Duration,
    /// The URL clients should use, shown in the UI (default: derived from the bind address).
    #[arg(long, env = "HEARTH_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Show kill buttons for drivers and applications on the UI (a kill asks for the secret).
    #[arg(long, env = "HEARTH_UI_KILL")]
    pub ui_kill: bool,
    /// Every page and JSON endpoint asks for the secret (HTTP basic auth, any user name, or a
    /// bearer token); /healthz and /readyz stay open.
    #[arg(long, env = "HEARTH_UI_AUTH")]
    pub ui_auth: bool,
    /// Path prefix the UI is served under behind a proxy or ingress, e.g. /hearth.
    #[arg(long, env = "HEARTH_UI_BASE_PATH", default_value = "", value_parser = base_path_arg)]
    pub ui_base_path: String,
    /// The most shipped logs the master keeps, all together (e.g. 256m, 2g); the least
    /// recently written go first.
    #[arg(long, env = "HEARTH_KEPT_LOGS", default_value = "256m", value_parser = bytes_arg)]
    pub kept_logs: u64,
    /// Most connections open on the UI port at once; at the cap the oldest client that has not
    /// sent a whole request is closed to make room (capped again at a quarter of the open-file
    /// limit).
    #[arg(long, env = "HEARTH_UI_MAX_CONNECTIONS", default_value_t = master::DEFAULT_UI_MAX_CONNECTIONS)]
    pub ui_max_connections: usize,
    /// Serve gRPC and the web UI over TLS with this certificate chain (PEM); reloaded when
    /// the file changes.
    #[arg(long, env = "HEARTH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "HEARTH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Args)]
pub struct TlsCaArgs {
    /// CA certificate (PEM) to check an https:// master against (default: the system's roots).
    #[arg(long, env = "HEARTH_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
}

impl TlsCaArgs {
    pub fn client_tls(&self) -> ClientTls {
        ClientTls::with_ca(self.tls_ca.clone())
    }
}

#[derive(Args)]
pub struct WorkerArgs {
    /// The master's gRPC URL.
    #[arg(long, env = "HEARTH_MASTER_URL", default_value = DEFAULT_MASTER_URL)]
    pub master: String,
    #[command(flatten)]
    pub secret: SecretArgs,
    #[command(flatten)]
    pub tls: TlsCaArgs,
    /// Cores to offer (default: the container's CPU limit, else the host's CPUs).
    #[arg(long, env = "HEARTH_WORKER_CORES", value_parser = cores_arg, allow_negative_numbers = true)]
    pub cores: Option<u32>,
    /// Memory to offer, e.g. 4g or 512m (default: the container's memory limit, else the host's).
    #[arg(long, env = "HEARTH_WORKER_MEMORY", value_parser = memory_arg)]
    pub memory: Option<u64>,
    /// Address to advertise (the pod IP); default: the address the master sees.
    #[arg(long, env = "HEARTH_WORKER_HOST")]
    pub host: Option<String>,
    /// A name for people (default: the hostname).
    #[arg(long, env = "HEARTH_WORKER_NAME")]
    pub name: Option<String>,
    /// Port for /healthz, /readyz and /metrics (0 picks a free one).
    #[arg(long, env = "HEARTH_WEBUI_PORT", default_value_t = worker::DEFAULT_WEB_PORT)]
    pub webui_port: u16,
    /// Address the worker's web port listens on.
    #[arg(long, env = "HEARTH_BIND", default_value_t = worker::DEFAULT_BIND)]
    pub bind: IpAddr,
    /// Where drivers run and keep their logs.
    #[arg(long, env = "HEARTH_WORK_DIR", default_value = worker::DEFAULT_WORK_DIR)]
    pub work_dir: PathBuf,
    /// Time between SIGTERM and SIGKILL when a driver is killed.
    #[arg(
        long,
        env = "HEARTH_KILL_GRACE",
        default_value = KILL_GRACE.as_str(),
        value_parser = duration_arg
    )]
    pub kill_grace: Duration,
    /// After SIGTERM, how long running drivers and executors may go on before the rest are
    /// killed and moved elsewhere. Kubernetes' terminationGracePeriodSeconds must cover this
    /// plus --kill-grace.
    #[arg(
        long,
        env = "HEARTH_DECOMMISSION_GRACE",
        default_value = DECOMMISSION_GRACE.as_str(),
        value_parser = duration_arg
    )]
    pub decommission_grace: Duration,
    /// Where the cgroup file system is mounted; the offer defaults to the limits found there.
    #[arg(long, env = "HEARTH_CGROUP_ROOT", default_value = worker::DEFAULT_CGROUP_ROOT)]
    pub cgroup_root: PathBuf,
    /// A label shown on the master's worker page, KEY=VALUE (repeatable; comma-separated in
    /// the variable).
    #[arg(long = "label", env = "HEARTH_WORKER_LABELS", value_delimiter = ',', value_parser = label_arg)]
    pub labels: Vec<(String, String)>,
    /// The pod's name (downward API), shown as the label `pod`.
    #[arg(long, env = "HEARTH_POD_NAME")]
    pub pod_name: Option<String>,
    /// The pod's namespace (downward API), shown as the label `namespace`.
    #[arg(long, env = "HEARTH_POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// The node the pod runs on (downward API), shown as the label `node`.
    #[arg(long, env = "HEARTH_NODE_NAME")]
    pub node_name: Option<String>,
    /// How much of the end of each driver's and executor's stdout and stderr the master is
    /// sent to keep, e.g. 1m or 256k.
    #[arg(long, env = "HEARTH_LOG_TAIL", default_value = "1m", value_parser = bytes_arg)]
    pub log_tail: u64,
    /// How often the new output of running processes is sent to the master; a worker killed
    /// without warning loses at most the output of this long.
    #[arg(
        long,
        env = "HEARTH_LOG_SHIP_INTERVAL",
        default_value = LOG_SHIP_INTERVAL.as_str(),
        value_parser = duration_arg
    )]
    pub log_ship_interval: Duration,
    /// A named resource to offer, NAME=ADDR,ADDR,... or NAME=COUNT (addresses 0..COUNT-1), e.g.
    /// gpu=0,1 (repeatable; ';'-separated in the variable). Replaces what was found of that name.
    #[arg(long = "resource", env = "HEARTH_WORKER_RESOURCES", value_delimiter = ';', value_parser = resource_offer_arg)]
    pub resources: Vec<hearth_common::proto::ResourceAddresses>,
    /// A program that prints the resources to offer in Spark's discovery format,
    /// {"name":"gpu","addresses":["0","1"]} (one object, an array, or one per line).
    #[arg(long, env = "HEARTH_RESOURCE_DISCOVERY")]
    pub resource_discovery: Option<PathBuf>,
    /// Where GPU device files (nvidia0, nvidia1, ...) are looked for when NVIDIA_VISIBLE_DEVICES
    /// is not set.
    #[arg(long, env = "HEARTH_DEVICE_DIR", default_value = worker::DEFAULT_DEVICE_DIR)]
    pub device_dir: PathBuf,
}

#[derive(Args)]
pub struct LocalArgs {
    /// Number of workers.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// gRPC port.
    #[arg(long, env = "HEARTH_MASTER_PORT", default_value_t = master::DEFAULT_GRPC_PORT)]
    pub port: u16,
    /// Web UI port.
    #[arg(long, env = "HEARTH_WEBUI_PORT", default_value_t = master::DEFAULT_WEBUI_PORT)]
    pub webui_port: u16,
    /// Cores each worker offers (default: the host's CPUs).
    #[arg(long, value_parser = cores_arg)]
    pub cores: Option<u32>,
    /// Memory each worker offers (default: the host's memory).
    #[arg(long, value_parser = memory_arg)]
    pub memory: Option<u64>,
    /// Where the workers' drivers run.
    #[arg(long, default_value = worker::DEFAULT_WORK_DIR)]
    pub work_dir: PathBuf,
    /// Where the master keeps its state.
    #[arg(long, default_value = master::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The queues file (YAML), as for `hearth master --queues`.
    #[arg(long = "queues", env = "HEARTH_QUEUES_FILE")]
    pub queues_file: Option<PathBuf>,
    /// A worker not heard from for this long is declared DEAD.
    #[arg(long, default_value = WORKER_TIMEOUT.as_str(), value_parser = duration_arg)]
    pub worker_timeout: Duration,
    /// Deal executors round-robin over workers (true) or fill one worker before the next.
    #[arg(long, default_value_t = master::DEFAULT_SPREAD_OUT, action = clap::ArgAction::Set)]
    pub spread_out: bool,
    #[command(flatten)]
    pub secret: SecretArgs,
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use crate::commands::ListWhat;

    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Action {
        match Cli::try_parse_from(args) {
            Ok(cli) => cli.action,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn flags_default_to_the_crates_own_defaults() {
        let Action::Master(m) = parse(&["hearth", "master"]) else {
            panic!("not the master");
        };
        let config = hearth_master::MasterConfig::default();
        assert_eq!(SocketAddr::new(m.bind, m.port), config.grpc_addr);
        assert_eq!(SocketAddr::new(m.bind, m.webui_port), config.web_addr);
        assert_eq!(m.state_dir, config.state_dir);
        assert_eq!(m.worker_timeout, config.worker_timeout);
        assert_eq!(m.max_heartbeat_rate, config.max_heartbeat_rate);
        assert_eq!(m.recovery_timeout, config.recovery_timeout);
        assert_eq!(m.retained_drivers, config.retained_drivers);
        assert_eq!(m.retained_apps, config.retained_apps);
        assert_eq!(m.max_waiting, config.max_waiting);
        assert_eq!(m.reserve_after, config.reserve_after);
        assert_eq!(m.usage_half_life, config.usage_half_life);
        assert_eq!(m.spread_out, config.spread_out);

        let Action::Worker(w) = parse(&["hearth", "worker"]) else {
            panic!("not the worker");
        };
        let config = hearth_worker::WorkerConfig::default();
        assert_eq!(w.master, config.master_url);
        assert_eq!(SocketAddr::new(w.bind, w.webui_port), config.web_addr);
        assert_eq!(w.work_dir, config.work_dir);
        assert_eq!(w.kill_grace, config.kill_grace);
        assert_eq!(w.decommission_grace, config.decommission_grace);
        assert_eq!(w.cgroup_root, config.cgroup_root);

        let Action::List(l) = parse(&["hearth", "list", "apps"]) else {
            panic!("not list");
        };
        assert_eq!(l.what, ListWhat::Apps);
    }
}
