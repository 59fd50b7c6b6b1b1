//! The client subcommands' arguments: where the master is, and what `submit`, `status`,
//! `kill`, `list`, `logs` and `queues` take.

use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Args;
use hearth_common::{
    client::{Client, DEFAULT_MASTER_URL},
    proto::ApplicationSpec,
};
use hearth_master::config as master;

use super::{CONNECT_TIMEOUT, SecretArgs, TlsCaArgs, cores_arg, duration_arg, env_arg, memory_arg};
use crate::commands::ListWhat;

#[derive(Args)]
pub struct ClientArgs {
    /// The master's gRPC URL.
    #[arg(
        long,
        env = "HEARTH_MASTER_URL",
        default_value = DEFAULT_MASTER_URL,
        global = true
    )]
    master: String,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    tls: TlsCaArgs,
    /// How long to keep trying while the master cannot be reached (restarting, or not up yet)
    /// before giving up.
    #[arg(
        long,
        env = "HEARTH_CONNECT_TIMEOUT",
        default_value = CONNECT_TIMEOUT.as_str(),
        value_parser = duration_arg,
        global = true
    )]
    connect_timeout: Duration,
}

impl ClientArgs {
    pub async fn connect(&self) -> Result<Client> {
        let secret = self.secret.load()?;
        Ok(Client::connect_retrying(
            &self.master,
            secret.as_ref(),
            &self.tls.client_tls(),
            self.connect_timeout,
        )
        .await?)
    }
}

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Cores for the driver.
    #[arg(long, default_value = "1", value_parser = cores_arg, allow_negative_numbers = true)]
    pub cores: u32,
    /// Memory for the driver, e.g. 1g or 512m.
    #[arg(long, default_value = "1g", value_parser = memory_arg)]
    pub memory: u64,
    /// A name for people.
    #[arg(long, default_value = "")]
    pub name: String,
    /// An environment variable for the driver, KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = env_arg)]
    pub env: Vec<(String, String)>,
    /// Relaunch the driver if it fails or its worker dies.
    #[arg(long)]
    pub supervise: bool,
    /// Most relaunches of a supervised driver.
    #[arg(long, default_value_t = 3)]
    pub max_retries: u32,
    /// With --supervise: never run in two places at once. The driver is stopped when its
    /// worker cannot reach the master for the master's worker timeout, and relaunched only
    /// once that has surely happened (see the README's "Never two copies").
    #[arg(long)]
    pub at_most_one: bool,
    /// Follow the driver and exit with its exit code.
    #[arg(long)]
    pub wait: bool,
    /// The queue it waits and runs in.
    #[arg(long, default_value = master::DEFAULT_QUEUE)]
    pub queue: String,
    /// Its priority within the queue: higher goes first; equal ones keep submission order.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// End it (KILLED, with the reason) once it has run this long, e.g. 10m or 2h. With a
    /// limit it may start early on room reserved for larger work that will not need it sooner.
    #[arg(long, value_parser = duration_arg)]
    pub time_limit: Option<Duration>,
    /// A port the driver serves its own web UI on (Spark's 4040, Jupyter, a Dask dashboard),
    /// listening on the worker's loopback or all addresses: the master serves it at
    /// `/drivers/<id>/ui/` while it runs, and the driver gets HEARTH_UI_BASE (that public path)
    /// and HEARTH_UI_PORT.
    #[arg(long)]
    pub ui_port: Option<u16>,
    /// Forward the UI's requests with the path as the browser sent it (HEARTH_UI_BASE
    /// included), for servers that serve under their base path (Jupyter's base_url, Dask's
    /// --dashboard-prefix); by default that prefix is taken off.
    #[arg(long, requires = "ui_port")]
    pub ui_keep_prefix: bool,
    /// A named resource the driver needs on its worker, NAME=COUNT, e.g. gpu=1 (repeatable):
    /// it gets that many addresses in HEARTH_RESOURCE_<NAME> (and CUDA_VISIBLE_DEVICES for gpu).
    #[arg(long = "resource", value_parser = super::resource_ask_arg)]
    pub resources: Vec<(String, u32)>,
    /// Your own id for this submission (1 to 128 letters, digits, '-', '_', '.', ':'): running
    /// the same `hearth submit` again answers with the driver the first one made instead of
    /// starting a second (the same id with a different spec is refused). Default: a fresh id.
    #[arg(long, env = "HEARTH_SUBMISSION_ID")]
    pub submission_id: Option<String>,
    #[command(flatten)]
    pub app: AppArgs,
    /// The driver's command and arguments (after --).
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// Executors for the driver: an application registered each time the driver is launched.
#[derive(Args)]
pub struct AppArgs {
    /// Executors to run (needs --executor-command).
    #[arg(long)]
    executors: Option<u32>,
    /// Cores per executor [default: 1].
    #[arg(long, value_parser = cores_arg, allow_negative_numbers = true)]
    executor_cores: Option<u32>,
    /// Memory per executor, e.g. 1g or 512m [default: 1g].
    #[arg(long, value_parser = memory_arg)]
    executor_memory: Option<u64>,
    /// What each executor runs, through `sh -c` (so $HEARTH_DRIVER_HOST expands at launch).
    #[arg(long)]
    executor_command: Option<String>,
    /// An environment variable for the executors, KEY=VALUE (repeatable).
    #[arg(long = "executor-env", value_parser = env_arg)]
    executor_env: Vec<(String, String)>,
    /// Cap on the cores of all executors together (default: executors x executor cores).
    #[arg(long)]
    max_cores: Option<u32>,
    /// Failed executors replaced before the application is FAILED [default: 10].
    #[arg(long)]
    executor_retries: Option<u32>,
    /// A name for the application (default: the driver's name).
    #[arg(long)]
    app_name: Option<String>,
    /// Start all --executors together in one scheduling turn, or none: a waiting gang holds
    /// nothing (for MPI-style, barrier and distributed-training work).
    #[arg(long)]
    gang: bool,
    /// End the application FAILED, with the reason it waited, when its gang has not started
    /// within this long, e.g. 10m.
    #[arg(long, value_parser = duration_arg)]
    gang_timeout: Option<Duration>,
    /// When a member of the gang fails or is lost, end all the others and start the whole gang
    /// again together, instead of replacing that one member.
    #[arg(long)]
    gang_restart: bool,
    /// A named resource each executor needs, NAME=COUNT, e.g. gpu=1 (repeatable).
    #[arg(long = "executor-resource", value_parser = super::resource_ask_arg)]
    executor_resources: Vec<(String, u32)>,
}

impl AppArgs {
    pub fn spec(self, driver_name: &str) -> Result<Option<ApplicationSpec>> {
        let Some(command) = self.executor_command else {
            let executor_flags = self.executors.is_some()
                || self.max_cores.is_some()
                || self.executor_cores.is_some()
                || self.executor_memory.is_some()
                || self.executor_retries.is_some()
                || self.app_name.is_some()
                || self.gang
                || self.gang_timeout.is_some()
                || self.gang_restart
                || !self.executor_resources.is_empty()
                || !self.executor_env.is_empty();
            if executor_flags {
                return Err(anyhow!(
                    "executor_command: required with any --executor-* option, --executors, \
                     --max-cores, --app-name or --gang* (what each executor runs)"
                ));
            }
            return Ok(None);
        };
        let spec = ApplicationSpec {
            name: self.app_name.unwrap_or_else(|| driver_name.to_string()),
            command: vec!["sh".into(), "-c".into(), command],
            env: self.executor_env.into_iter().collect(),
            executor_cores: self.executor_cores.unwrap_or(1),
            executor_memory_mb: self.executor_memory.unwrap_or(1024),
            executors: self.executors.unwrap_or(0),
            max_cores: self.max_cores.unwrap_or(0),
            executor_retries: Some(
                self.executor_retries
                    .unwrap_or(hearth_common::spec::DEFAULT_EXECUTOR_RETRIES),
            ),
            // A driver's application runs in its driver's queue.
            queue: String::new(),
            priority: 0,
            time_limit_ms: 0,
            gang: self.gang,
            gang_timeout_ms: self
                .gang_timeout
                .map_or(0, |d| d.as_millis().try_into().unwrap_or(u64::MAX)),
            gang_restart: self.gang_restart,
            executor_resources: {
                let mut map = std::collections::HashMap::new();
                for (name, n) in self.executor_resources {
                    if map.insert(name.clone(), n).is_some() {
                        return Err(anyhow!("--executor-resource: {name} is given twice"));
                    }
                }
                map
            },
        };
        hearth_common::spec::validate_app_spec(&spec)?;
        Ok(Some(spec))
    }
}

#[derive(Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// A driver id (driver-...) or an application id (app-...).
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub what: ListWhat,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct QueuesArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("change").required(true).args(["add", "kill"])))]
pub struct ExecutorsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The application (app-...; a driver finds its own in HEARTH_APP_ID).
    pub app_id: String,
    /// Ask for this many more executors (within the application's cap).
    #[arg(long)]
    pub add: Option<u32>,
    /// End these executors (ids, comma-separated); they are not replaced.
    #[arg(long, value_delimiter = ',')]
    pub kill: Vec<u32>,
}

#[derive(Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// A driver id, or an executor as app-.../N.
    pub id: String,
    /// Print stderr instead of stdout.
    #[arg(long)]
    pub stderr: bool,
    /// Keep printing new output until the driver ends.
    #[arg(long, short)]
    pub follow: bool,
}
