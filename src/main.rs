//! `hearth`, the one binary for every role: parses the command line and hands over to the
//! master's and the worker's crates, or to the client-side [`commands`].

mod args;
mod commands;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use hearth_common::{
    Shutdown,
    auth::Secret,
    proto::{DriverSpec, LogStream},
};

use args::{Action, Cli, LocalArgs, MasterArgs, WorkerArgs};

/// The master's state is persistent maps of many small records, copied on change: mimalloc
/// makes those allocations several times cheaper than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The labels given, plus the pod's own (which a `--label` of the same key overrides).
fn worker_labels<const N: usize>(
    given: Vec<(String, String)>,
    pod: [(&str, Option<String>); N],
) -> Result<BTreeMap<String, String>> {
    let mut labels: BTreeMap<String, String> = pod
        .into_iter()
        .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k.to_string(), v)))
        .collect();
    labels.extend(given);
    hearth_common::spec::validate_labels(&labels)?;
    Ok(labels)
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
    let open_files = open_file_limit();
    let autoscale = autoscale_config(&args)?;
    let ha = ha_config(&args)?;
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
        queues_file: args.queues_file,
        worker_timeout: args.worker_timeout,
        max_heartbeat_rate: args.max_heartbeat_rate,
        retained_drivers: args.retained_drivers,
        retained_history: args.retained_history,
        retained_apps: args.retained_apps,
        spread_out: args.spread_out,
        max_waiting: args.max_waiting,
        reserve_after: args.reserve_after,
        usage_half_life: args.usage_half_life,
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
            max_connections: ui_connections(args.ui_max_connections, open_files),
        },
        kept_logs_bytes: args.kept_logs,
        autoscale,
        ha,
        ..Default::default()
    };
    let shutdown = Shutdown::new();
    on_signals(shutdown.clone())?;
    if config.ha.is_some() {
        println!(
            "hearth master: under a Lease; web UI on {} (the standby's page until it leads)",
            config.web_addr
        );
        hearth_master::ha::term::run(config, shutdown).await?;
        return Ok(0);
    }
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
        log_tail: args.log_tail,
        log_ship_interval: args.log_ship_interval,
        resources: args.resources,
        resource_discovery: args.resource_discovery,
        device_dir: args.device_dir,
        detect_gpus: true,
        keeper: None,
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
            queues_file: args.queues_file,
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
                // The machine's GPUs go to one embedded worker, never to two at once.
                detect_gpus: n == 0,
                keeper: None,
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
    match cli.action {
        Action::Master(args) => run_master(args).await,
        Action::Worker(args) => run_worker(args).await,
        Action::Local(args) => run_local(args).await,
        Action::Submit(args) => {
            let spec = DriverSpec {
                name: args.name,
                command: args.command,
                env: args.env.into_iter().collect(),
                cores: args.cores,
                memory_mb: args.memory,
                supervise: args.supervise,
                max_retries: if args.supervise { args.max_retries } else { 0 },
                queue: args.queue,
                priority: args.priority,
                time_limit_ms: args
                    .time_limit
                    .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                ui_port: args.ui_port.map_or(0, u32::from),
                ui_keep_prefix: args.ui_keep_prefix,
                resources: no_repeats("resource", args.resources)?,
                at_most_one: args.at_most_one,
            };
            hearth_common::spec::validate_driver_spec(&spec)?;
            if let Some(id) = &args.submission_id {
                hearth_common::spec::validate_submission_id(id)?;
            }
            let app = args.app.spec(&spec.name)?;
            let client = args.client.connect().await?;
            Ok(commands::submit(&client, spec, app, args.submission_id, args.wait).await?)
        }
        Action::Status(args) => {
            let client = args.client.connect().await?;
            Ok(commands::status(&client, &args.id, args.json).await?)
        }
        Action::Kill(args) => {
            let client = args.client.connect().await?;
            Ok(commands::kill(&client, &args.id).await?)
        }
        Action::List(args) => {
            let client = args.client.connect().await?;
            Ok(commands::list(&client, args.what, args.json).await?)
        }
        Action::Executors(args) => {
            let client = args.client.connect().await?;
            Ok(commands::executors(&client, &args.app_id, args.add, &args.kill).await?)
        }
        Action::Queues(args) => {
            let client = args.client.connect().await?;
            Ok(commands::queues(&client, args.json).await?)
        }
        Action::Logs(args) => {
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
    // A process's keeper (see `hearth_worker::keeper`): no runtime, no logging, no parsing.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == hearth_worker::keeper::KEEP_ARG)
    {
        let code = hearth_worker::keeper::run(&args[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = Cli::parse();
    let daemon = matches!(
        cli.action,
        Action::Master(_) | Action::Worker(_) | Action::Local(_)
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

/// The master's open-file limit, raised to the hard limit and logged: each connection to its
/// ports takes one.
fn open_file_limit() -> usize {
    match hearth_master::listen::raise_open_file_limit() {
        Ok((soft, hard)) => {
            tracing::info!(soft, hard, "open-file limit");
            usize::try_from(soft).unwrap_or(usize::MAX)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            usize::MAX
        }
    }
}

/// `--autoscale` and its settings, checked.
/// `--lease` and the settings beside it, with their defaults from the pod's environment.
fn ha_config(args: &MasterArgs) -> Result<Option<hearth_master::ha::HaConfig>> {
    let Some(lease) = args.lease.clone() else {
        return Ok(None);
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let identity = match args.identity.clone().or_else(|| env("HEARTH_POD_NAME")) {
        Some(id) => id,
        None => hostname().ok_or_else(|| {
            anyhow!("--lease: no --identity, no HEARTH_POD_NAME and no host name")
        })?,
    };
    let advertise_url = match args.advertise_url.clone() {
        Some(url) => url,
        None => match env("HEARTH_POD_IP") {
            Some(ip) if ip.contains(':') => format!("http://[{ip}]:{}", args.port),
            Some(ip) => format!("http://{ip}:{}", args.port),
            None => {
                return Err(anyhow!(
                    "--lease: no --advertise-url, and HEARTH_POD_IP (the downward API's status.podIP) is not set"
                ));
            }
        },
    };
    let config = hearth_master::ha::HaConfig {
        namespace: args
            .lease_namespace
            .clone()
            .or_else(|| env("HEARTH_POD_NAMESPACE"))
            .unwrap_or_else(|| "hearth".into()),
        lease,
        identity,
        advertise_url,
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.retry_period,
        replication_timeout: args.replication_timeout,
    };
    config.validate().map_err(|e| anyhow!(e))?;
    Ok(Some(config))
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

fn autoscale_config(
    args: &MasterArgs,
) -> Result<Option<hearth_master::autoscale::AutoscaleConfig>> {
    if !args.autoscale {
        return Ok(None);
    }
    let (namespace, deployment) = match &args.autoscale_target {
        Some(target) => match target.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => (ns.to_string(), name.to_string()),
            _ => return Err(anyhow!("--autoscale-target: {target:?} is not NAMESPACE/NAME")),
        },
        None => (
            std::env::var("HEARTH_POD_NAMESPACE").map_err(|_| {
                anyhow!("--autoscale: no --autoscale-target, and HEARTH_POD_NAMESPACE (the downward API's metadata.namespace) is not set")
            })?,
            "hearth-worker".to_string(),
        ),
    };
    if args.min_workers > args.max_workers || args.max_workers == 0 {
        return Err(anyhow!(
            "--min-workers {} / --max-workers {}: the minimum must be at most the maximum, and the maximum at least 1",
            args.min_workers,
            args.max_workers
        ));
    }
    Ok(Some(hearth_master::autoscale::AutoscaleConfig {
        namespace,
        deployment,
        min_workers: args.min_workers,
        max_workers: args.max_workers,
        scale_down_idle: args.scale_down_idle,
    }))
}

/// The UI's connection cap: as asked, but at most a quarter of the open-file limit, which the
/// gRPC port and the state file share.
fn ui_connections(asked: usize, open_files: usize) -> usize {
    let most = open_files / 4;
    if asked > most && most > 0 {
        tracing::warn!(
            asked,
            most,
            "--ui-max-connections lowered to a quarter of the open-file limit"
        );
        return most;
    }
    asked
}

/// `NAME=N` settings as a map, refusing a name given twice (one would silently win).
fn no_repeats(
    flag: &str,
    pairs: Vec<(String, u32)>,
) -> Result<std::collections::HashMap<String, u32>> {
    let mut map = std::collections::HashMap::new();
    for (name, n) in pairs {
        if map.insert(name.clone(), n).is_some() {
            return Err(anyhow!("--{flag}: {name} is given twice"));
        }
    }
    Ok(map)
}
