//! `hearth`: parses the command line and hands over to the crates.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hearth_common::{
    Shutdown,
    auth::Secret,
    client::Client,
    commands::{self, ListWhat},
    duration::parse_duration,
    proto::{ApplicationSpec, DriverSpec, LogStream},
    resources::{parse_cores, parse_memory_mb},
    spec::parse_env_pair,
};

/// The master's state is persistent maps of many small records, copied on change: mimalloc
/// makes those allocations several times cheaper than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hearth",
    version,
    about = "A standalone cluster manager for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

fn cores_arg(s: &str) -> Result<u32, String> {
    parse_cores("cores", s).map_err(|e| e.reason)
}

fn memory_arg(s: &str) -> Result<u64, String> {
    parse_memory_mb("memory", s).map_err(|e| e.reason)
}

fn base_path_arg(text: &str) -> Result<String, String> {
    hearth_master::config::ui_base_path(text).map_err(|e| e.to_string())
}

fn label_arg(text: &str) -> Result<(String, String), String> {
    hearth_common::spec::parse_label(text).map_err(|e| e.to_string())
}

/// The labels given, plus the pod's own (which a `--label` of the same key overrides).
fn worker_labels<const N: usize>(
    given: Vec<(String, String)>,
    pod: [(&str, Option<String>); N],
) -> Result<std::collections::BTreeMap<String, String>> {
    let mut labels: std::collections::BTreeMap<String, String> = pod
        .into_iter()
        .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k.to_string(), v)))
        .collect();
    labels.extend(given);
    hearth_common::spec::validate_labels(&labels)?;
    Ok(labels)
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration("duration", s).map_err(|e| e.reason)
}

fn env_arg(s: &str) -> Result<(String, String), String> {
    parse_env_pair(s).map_err(|e| e.reason)
}

#[derive(Args)]
struct SecretArgs {
    /// File holding the shared secret (else $HEARTH_SECRET is used).
    #[arg(long, env = "HEARTH_SECRET_FILE", global = true)]
    secret_file: Option<PathBuf>,
}

impl SecretArgs {
    fn load(&self) -> Result<Option<Secret>> {
        Ok(Secret::resolve(self.secret_file.as_deref())?)
    }
}

#[derive(Args)]
struct MasterArgs {
    /// gRPC port for workers and clients.
    #[arg(long, env = "HEARTH_MASTER_PORT", default_value_t = 7077)]
    port: u16,
    /// Web UI port.
    #[arg(long, env = "HEARTH_WEBUI_PORT", default_value_t = 8080)]
    webui_port: u16,
    /// Address to listen on.
    #[arg(long, env = "HEARTH_BIND", default_value = "0.0.0.0")]
    bind: IpAddr,
    #[command(flatten)]
    secret: SecretArgs,
    /// File holding the secret being replaced (else $HEARTH_PREVIOUS_SECRET): accepted too,
    /// so workers and clients can move to the new secret one by one.
    #[arg(long, env = "HEARTH_PREVIOUS_SECRET_FILE")]
    previous_secret_file: Option<PathBuf>,
    /// Run without a shared secret (anyone who reaches the ports can run commands).
    #[arg(long, env = "HEARTH_INSECURE")]
    insecure: bool,
    /// Where the master keeps its state.
    #[arg(long, env = "HEARTH_STATE_DIR", default_value = "./hearth-state")]
    state_dir: PathBuf,
    /// A worker not heard from for this long is declared DEAD.
    #[arg(long, env = "HEARTH_WORKER_TIMEOUT", default_value = "10s", value_parser = duration_arg)]
    worker_timeout: Duration,
    /// How many completed drivers are kept for the UI and API.
    #[arg(long, env = "HEARTH_RETAINED_DRIVERS", default_value_t = 1000)]
    retained_drivers: usize,
    /// How many ended applications are kept for the UI and API.
    #[arg(long, env = "HEARTH_RETAINED_APPS", default_value_t = 1000)]
    retained_apps: usize,
    /// Deal executors round-robin over workers (true) or fill one worker before the next.
    #[arg(long, env = "HEARTH_SPREAD_OUT", default_value_t = true, action = clap::ArgAction::Set)]
    spread_out: bool,
    /// After a restart, how long to wait for the workers the master knew before declaring the
    /// missing ones DEAD.
    #[arg(long, env = "HEARTH_RECOVERY_TIMEOUT", default_value = "20s", value_parser = duration_arg)]
    recovery_timeout: Duration,
    /// Most drivers waiting for a slot; more submissions are refused until some run.
    #[arg(long, env = "HEARTH_MAX_WAITING", default_value_t = 10_000)]
    max_waiting: usize,
    /// The URL clients should use, shown in the UI (default: derived from the bind address).
    #[arg(long, env = "HEARTH_PUBLIC_URL")]
    public_url: Option<String>,
    /// Show kill buttons for drivers and applications on the UI (a kill asks for the secret).
    #[arg(long, env = "HEARTH_UI_KILL")]
    ui_kill: bool,
    /// Every page and JSON endpoint asks for the secret (HTTP basic auth, any user name, or a
    /// bearer token); /healthz and /readyz stay open.
    #[arg(long, env = "HEARTH_UI_AUTH")]
    ui_auth: bool,
    /// Path prefix the UI is served under behind a proxy or ingress, e.g. /hearth.
    #[arg(long, env = "HEARTH_UI_BASE_PATH", default_value = "", value_parser = base_path_arg)]
    ui_base_path: String,
    /// Serve gRPC and the web UI over TLS with this certificate chain (PEM); reloaded when
    /// the file changes.
    #[arg(long, env = "HEARTH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "HEARTH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Args)]
struct TlsCaArgs {
    /// CA certificate (PEM) to check an https:// master against (default: the system's roots).
    #[arg(long, env = "HEARTH_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
}

impl TlsCaArgs {
    fn client_tls(&self) -> hearth_common::client::ClientTls {
        hearth_common::client::ClientTls::with_ca(self.tls_ca.clone())
    }
}

#[derive(Args)]
struct WorkerArgs {
    /// The master's gRPC URL.
    #[arg(
        long,
        env = "HEARTH_MASTER_URL",
        default_value = "http://127.0.0.1:7077"
    )]
    master: String,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    tls: TlsCaArgs,
    /// Cores to offer (default: the container's CPU limit, else the host's CPUs).
    #[arg(long, env = "HEARTH_WORKER_CORES", value_parser = cores_arg, allow_negative_numbers = true)]
    cores: Option<u32>,
    /// Memory to offer, e.g. 4g or 512m (default: the container's memory limit, else the host's).
    #[arg(long, env = "HEARTH_WORKER_MEMORY", value_parser = memory_arg)]
    memory: Option<u64>,
    /// Address to advertise (the pod IP); default: the address the master sees.
    #[arg(long, env = "HEARTH_WORKER_HOST")]
    host: Option<String>,
    /// A name for people (default: the hostname).
    #[arg(long, env = "HEARTH_WORKER_NAME")]
    name: Option<String>,
    /// Port for /healthz, /readyz and /metrics (0 picks a free one).
    #[arg(long, env = "HEARTH_WEBUI_PORT", default_value_t = 8081)]
    webui_port: u16,
    /// Address the worker's web port listens on.
    #[arg(long, env = "HEARTH_BIND", default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Where drivers run and keep their logs.
    #[arg(long, env = "HEARTH_WORK_DIR", default_value = "./hearth-work")]
    work_dir: PathBuf,
    /// Time between SIGTERM and SIGKILL when a driver is killed.
    #[arg(long, env = "HEARTH_KILL_GRACE", default_value = "10s", value_parser = duration_arg)]
    kill_grace: Duration,
    /// After SIGTERM, how long running drivers and executors may go on before the rest are
    /// killed and moved elsewhere. Kubernetes' terminationGracePeriodSeconds must cover this
    /// plus --kill-grace.
    #[arg(long, env = "HEARTH_DECOMMISSION_GRACE", default_value = "30s", value_parser = duration_arg)]
    decommission_grace: Duration,
    /// Where the cgroup file system is mounted; the offer defaults to the limits found there.
    #[arg(long, env = "HEARTH_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// A label shown on the master's worker page, KEY=VALUE (repeatable; comma-separated in
    /// the variable).
    #[arg(long = "label", env = "HEARTH_WORKER_LABELS", value_delimiter = ',', value_parser = label_arg)]
    labels: Vec<(String, String)>,
    /// The pod's name (downward API), shown as the label `pod`.
    #[arg(long, env = "HEARTH_POD_NAME")]
    pod_name: Option<String>,
    /// The pod's namespace (downward API), shown as the label `namespace`.
    #[arg(long, env = "HEARTH_POD_NAMESPACE")]
    pod_namespace: Option<String>,
    /// The node the pod runs on (downward API), shown as the label `node`.
    #[arg(long, env = "HEARTH_NODE_NAME")]
    node_name: Option<String>,
}

#[derive(Args)]
struct LocalArgs {
    /// Number of workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// gRPC port.
    #[arg(long, env = "HEARTH_MASTER_PORT", default_value_t = 7077)]
    port: u16,
    /// Web UI port.
    #[arg(long, env = "HEARTH_WEBUI_PORT", default_value_t = 8080)]
    webui_port: u16,
    /// Cores each worker offers (default: the host's CPUs).
    #[arg(long, value_parser = cores_arg)]
    cores: Option<u32>,
    /// Memory each worker offers (default: the host's memory).
    #[arg(long, value_parser = memory_arg)]
    memory: Option<u64>,
    /// Where the workers' drivers run.
    #[arg(long, default_value = "./hearth-work")]
    work_dir: PathBuf,
    /// Where the master keeps its state.
    #[arg(long, default_value = "./hearth-state")]
    state_dir: PathBuf,
    /// A worker not heard from for this long is declared DEAD.
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    worker_timeout: Duration,
    /// Deal executors round-robin over workers (true) or fill one worker before the next.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    spread_out: bool,
    #[command(flatten)]
    secret: SecretArgs,
}

#[derive(Args)]
struct ClientArgs {
    /// The master's gRPC URL.
    #[arg(
        long,
        env = "HEARTH_MASTER_URL",
        default_value = "http://127.0.0.1:7077",
        global = true
    )]
    master: String,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    tls: TlsCaArgs,
}

impl ClientArgs {
    async fn connect(&self) -> Result<Client> {
        let secret = self.secret.load()?;
        Ok(Client::connect_with(&self.master, secret.as_ref(), &self.tls.client_tls()).await?)
    }
}

#[derive(Args)]
struct SubmitArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Cores for the driver.
    #[arg(long, default_value = "1", value_parser = cores_arg, allow_negative_numbers = true)]
    cores: u32,
    /// Memory for the driver, e.g. 1g or 512m.
    #[arg(long, default_value = "1g", value_parser = memory_arg)]
    memory: u64,
    /// A name for people.
    #[arg(long, default_value = "")]
    name: String,
    /// An environment variable for the driver, KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = env_arg)]
    env: Vec<(String, String)>,
    /// Relaunch the driver if it fails or its worker dies.
    #[arg(long)]
    supervise: bool,
    /// Most relaunches of a supervised driver.
    #[arg(long, default_value_t = 3)]
    max_retries: u32,
    /// Follow the driver and exit with its exit code.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    app: AppArgs,
    /// The driver's command and arguments (after --).
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

/// Executors for the driver: an application registered each time the driver is launched.
#[derive(Args)]
struct AppArgs {
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
}

impl AppArgs {
    fn spec(self, driver_name: &str) -> Result<Option<ApplicationSpec>> {
        let Some(command) = self.executor_command else {
            let executor_flags = self.executors.is_some()
                || self.max_cores.is_some()
                || self.executor_cores.is_some()
                || self.executor_memory.is_some()
                || self.executor_retries.is_some()
                || self.app_name.is_some()
                || !self.executor_env.is_empty();
            if executor_flags {
                return Err(anyhow!(
                    "executor_command: required with any --executor-* option, --executors, \
                     --max-cores or --app-name (what each executor runs)"
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
        };
        hearth_common::spec::validate_app_spec(&spec)?;
        Ok(Some(spec))
    }
}

#[derive(Args)]
struct IdArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// A driver id (driver-...) or an application id (app-...).
    id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ListKind {
    Workers,
    Drivers,
    Apps,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    client: ClientArgs,
    what: ListKind,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LogsArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// A driver id, or an executor as app-.../N.
    id: String,
    /// Print stderr instead of stdout.
    #[arg(long)]
    stderr: bool,
    /// Keep printing new output until the driver ends.
    #[arg(long, short)]
    follow: bool,
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in `kubectl logs` or files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
fn on_signals(shutdown: Shutdown) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        shutdown.cancel();
    });
    Ok(())
}

async fn run_master(args: MasterArgs) -> Result<i32> {
    let config = hearth_master::MasterConfig {
        grpc_addr: SocketAddr::new(args.bind, args.port),
        web_addr: SocketAddr::new(args.bind, args.webui_port),
        secret: args.secret.load()?,
        previous_secret: Secret::resolve_from(
            args.previous_secret_file.as_deref(),
            hearth_common::auth::PREVIOUS_SECRET_ENV,
        )?,
        insecure: args.insecure,
        state_dir: args.state_dir,
        worker_timeout: args.worker_timeout,
        retained_drivers: args.retained_drivers,
        retained_apps: args.retained_apps,
        spread_out: args.spread_out,
        max_waiting: args.max_waiting,
        recovery_timeout: args.recovery_timeout,
        public_url: args.public_url,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| hearth_master::tls::TlsFiles { cert, key }),
        ui: hearth_master::config::UiConfig {
            kill: args.ui_kill,
            auth: args.ui_auth,
            base_path: args.ui_base_path,
        },
        ..Default::default()
    };
    let shutdown = Shutdown::new();
    on_signals(shutdown.clone())?;
    let master = hearth_master::start(config, shutdown).await?;
    println!(
        "hearth master: gRPC on {} ({}), web UI on {}://{}",
        master.grpc_addr,
        master.url,
        if master.tls { "https" } else { "http" },
        master.web_addr
    );
    master.wait().await?;
    Ok(0)
}

async fn run_worker(args: WorkerArgs) -> Result<i32> {
    let config = hearth_worker::WorkerConfig {
        master_url: args.master,
        secret: args.secret.load()?,
        tls: args.tls.client_tls(),
        cores: args.cores,
        memory_mb: args.memory,
        host: args.host,
        name: args.name,
        web_addr: SocketAddr::new(args.bind, args.webui_port),
        work_dir: args.work_dir,
        kill_grace: args.kill_grace,
        decommission_grace: args.decommission_grace,
        cgroup_root: args.cgroup_root,
        labels: worker_labels(
            args.labels,
            [
                ("pod", args.pod_name),
                ("namespace", args.pod_namespace),
                ("node", args.node_name),
            ],
        )?,
    };
    let shutdown = Shutdown::new();
    on_signals(shutdown.clone())?;
    let worker = hearth_worker::start(config, shutdown).await?;
    println!(
        "hearth worker: {} offering {} cores and {} MiB; web on http://{}",
        worker.worker_id, worker.cores, worker.memory_mb, worker.web_addr
    );
    worker.wait().await;
    Ok(0)
}

async fn run_local(args: LocalArgs) -> Result<i32> {
    if args.workers == 0 {
        return Err(anyhow!("--workers: must be at least 1"));
    }
    let secret = args.secret.load()?;
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let shutdown = Shutdown::new();
    on_signals(shutdown.clone())?;
    let master = hearth_master::start(
        hearth_master::MasterConfig {
            grpc_addr: SocketAddr::new(loopback, args.port),
            web_addr: SocketAddr::new(loopback, args.webui_port),
            insecure: secret.is_none(),
            secret: secret.clone(),
            state_dir: args.state_dir,
            worker_timeout: args.worker_timeout,
            spread_out: args.spread_out,
            // Its workers are new processes with new ids: the old ones never come back.
            recovery_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await?;
    let mut workers = Vec::new();
    for n in 1..=args.workers {
        let worker = hearth_worker::start(
            hearth_worker::WorkerConfig {
                master_url: master.url.clone(),
                secret: secret.clone(),
                cores: args.cores,
                memory_mb: args.memory,
                host: Some("127.0.0.1".into()),
                name: Some(format!("local-worker-{n}")),
                web_addr: SocketAddr::new(loopback, 0),
                work_dir: args.work_dir.join(format!("worker-{n}")),
                // Ctrl-C on a local cluster means now.
                decommission_grace: Duration::ZERO,
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await
        .with_context(|| format!("starting local worker {n}"))?;
        workers.push(worker);
    }
    println!("Hearth local cluster with {} workers", workers.len());
    println!("  web UI:  http://{}", master.web_addr);
    println!("  master:  {}", master.url);
    println!(
        "  try:     hearth submit --master {} --wait -- sh -c 'echo hello'",
        master.url
    );
    for worker in workers {
        worker.wait().await;
    }
    master.wait().await?;
    Ok(0)
}

async fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Master(args) => run_master(args).await,
        Command::Worker(args) => run_worker(args).await,
        Command::Local(args) => run_local(args).await,
        Command::Submit(args) => {
            let spec = DriverSpec {
                name: args.name,
                command: args.command,
                env: args.env.into_iter().collect(),
                cores: args.cores,
                memory_mb: args.memory,
                supervise: args.supervise,
                max_retries: if args.supervise { args.max_retries } else { 0 },
            };
            hearth_common::spec::validate_driver_spec(&spec)?;
            let app = args.app.spec(&spec.name)?;
            let client = args.client.connect().await?;
            Ok(commands::submit(&client, spec, app, args.wait).await?)
        }
        Command::Status(args) => {
            let client = args.client.connect().await?;
            Ok(commands::status(&client, &args.id, args.json).await?)
        }
        Command::Kill(args) => {
            let client = args.client.connect().await?;
            Ok(commands::kill(&client, &args.id).await?)
        }
        Command::List(args) => {
            let what = match args.what {
                ListKind::Workers => ListWhat::Workers,
                ListKind::Drivers => ListWhat::Drivers,
                ListKind::Apps => ListWhat::Apps,
            };
            let client = args.client.connect().await?;
            Ok(commands::list(&client, what, args.json).await?)
        }
        Command::Logs(args) => {
            let stream = if args.stderr {
                LogStream::Stderr
            } else {
                LogStream::Stdout
            };
            let client = args.client.connect().await?;
            Ok(commands::logs(&client, &args.id, stream, args.follow).await?)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(
        cli.command,
        Command::Master(_) | Command::Worker(_) | Command::Local(_)
    );
    init_logging(if daemon { "info" } else { "warn" });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
