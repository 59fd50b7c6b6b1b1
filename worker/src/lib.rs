//! The Hearth worker: offers its pod's cores and memory to a master and runs the drivers and
//! executors it is given as supervised processes.
//!
//! - [`config`]: settings as a plain struct.
//! - [`resources`]: cgroup v2/v1 limits, else the host's, as the offer.
//! - [`discovery`]: GPUs and other named resources the worker offers.
//! - [`connection`]: the one outgoing stream to the master, with back-off and reconnects.
//! - [`runner`]: drivers and executors as process groups: launch, report, kill.
//! - [`orders`]: the master's launch orders and the runner's reports, translated.
//! - [`logs`]: reading stdout/stderr files in chunks for the master.
//! - [`log_shipping`]: the tails of those files, shipped for the master to keep.
//! - [`tunnels`]: drivers' web UIs, reached by the master through this worker.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics` and a small page on port 8081.

pub mod config;
pub mod connection;
pub mod discovery;
pub mod error;
pub mod http;
pub mod keeper;
pub mod lease;
pub mod log_shipping;
pub mod logs;
pub mod orders;
pub mod resources;
pub mod runner;
pub mod tunnels;

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
};

use hearth_common::{Shutdown, ids};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};

pub use config::WorkerConfig;
pub use error::{Error, Result};

/// A started worker.
#[derive(Debug)]
pub struct RunningWorker {
    pub worker_id: String,
    pub web_addr: SocketAddr,
    pub cores: u32,
    pub memory_mb: u64,
    task: JoinHandle<()>,
}

impl RunningWorker {
    /// Waits until the worker has stopped (after shutdown) and its drivers are gone.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Detects the offer, binds the web port and starts the connection to the master.
/// The keeper of every process: `hearth-keeper` beside this process's own executable, which
/// starts in a fraction of the time the whole `hearth` binary takes to load (a launch that
/// finds no spare keeper ready waits for it), else this executable itself (`hearth __keep`). `/proc/self/exe` still names
/// the executable after the file was replaced by an upgrade.
fn keeper_program() -> std::path::PathBuf {
    let own = std::path::PathBuf::from("/proc/self/exe");
    let own = if own.exists() {
        own
    } else {
        std::env::current_exe().unwrap_or_else(|_| "hearth".into())
    };
    let beside = std::fs::read_link(&own)
        .ok()
        .or_else(|| std::env::current_exe().ok())
        .and_then(|exe| Some(exe.parent()?.join(KEEPER_BINARY)));
    match beside {
        Some(keeper) if keeper.is_file() => keeper,
        _ => own,
    }
}

/// The keeper's own binary, looked for beside the worker's.
pub const KEEPER_BINARY: &str = "hearth-keeper";

pub async fn start(mut config: WorkerConfig, shutdown: Shutdown) -> Result<RunningWorker> {
    if config.cores == Some(0) {
        return Err(Error::Config("cores: must be at least 1, got 0".into()));
    }
    if config.log_ship_interval < std::time::Duration::from_millis(100) {
        return Err(Error::Config(format!(
            "log ship interval: must be at least 100ms, got {:?}",
            config.log_ship_interval
        )));
    }
    if config.log_tail == 0 {
        return Err(Error::Config(
            "log tail: must be at least 1 byte, got 0".into(),
        ));
    }
    if config.memory_mb == Some(0) {
        return Err(Error::Config("memory: must be at least 1m, got 0".into()));
    }
    // Drivers run in their own directories: they get the CA file by a path that holds there.
    if let Some(ca) = &config.tls.ca_file {
        let absolute = std::path::absolute(ca)
            .map_err(|e| Error::Config(format!("tls ca {}: {e}", ca.display())))?;
        config.tls.ca_file = Some(absolute);
    }
    hearth_common::client::endpoint(&config.master_url, &config.tls)?;
    let detected = resources::detect(&config.cgroup_root);
    let nvidia_visible_devices = std::env::var("NVIDIA_VISIBLE_DEVICES").ok();
    let (named, named_from) = discovery::discover(&discovery::Sources {
        given: config.resources.clone(),
        program: config.resource_discovery.clone(),
        device_dir: config.device_dir.clone(),
        nvidia_visible_devices: nvidia_visible_devices.clone(),
        detect_gpus: config.detect_gpus,
    })
    .await?;
    let gpus = orders::GpuView {
        present: named.iter().any(|r| r.name == "gpu"),
        cuda_ids: discovery::cuda_ids(nvidia_visible_devices.as_deref(), &named),
    };
    let cores = config.cores.unwrap_or(detected.cores);
    let memory_mb = config.memory_mb.unwrap_or(detected.memory_mb);

    std::fs::create_dir_all(&config.work_dir).map_err(|source| Error::WorkDir {
        path: config.work_dir.display().to_string(),
        source,
    })?;
    let work_dir = std::fs::canonicalize(&config.work_dir).map_err(|source| Error::WorkDir {
        path: config.work_dir.display().to_string(),
        source,
    })?;

    let listener = TcpListener::bind(config.web_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: config.web_addr,
            source,
        })?;
    let web_addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: config.web_addr,
        source,
    })?;

    let hostname = sysinfo::System::host_name().unwrap_or_else(|_| "localhost".into());
    let id_host = config.host.clone().unwrap_or_else(|| hostname.clone());
    let worker_id = ids::worker_id(ids::now_ms(), &id_host, web_addr.port());
    ids::check_id("worker id", &worker_id, ids::IdKind::Worker).map_err(|e| {
        Error::Config(format!(
            "{e}: the host {id_host:?} (--host or the hostname) must be an address or name \
             without spaces or slashes"
        ))
    })?;
    let worker_id_for_log = worker_id.clone();
    let identity = connection::Identity {
        worker_id: worker_id.clone(),
        name: config.name.clone().unwrap_or(hostname),
        host: config.host.clone().unwrap_or_default(),
        web_port: u32::from(web_addr.port()),
        cores,
        memory_mb,
        labels: config.labels.clone().into_iter().collect(),
        resources: named.clone(),
        gpus,
    };
    // The master would refuse what it refuses anyway: say so here, before dialling.
    hearth_common::spec::validate_register(&identity.register(Default::default()))
        .map_err(|e| Error::Config(format!("this worker cannot register: {e}")))?;
    tracing::info!(worker_id, cores, cores_from = %if config.cores.is_some() { "setting".to_string() } else { detected.cores_source.clone() },
        memory_mb, memory_from = %if config.memory_mb.is_some() { "setting".to_string() } else { detected.memory_source.clone() },
        work_dir = %work_dir.display(),
        resources = %named.iter().map(|r| format!("{}={}", r.name, r.addresses.join(","))).collect::<Vec<_>>().join(" "),
        resources_from = %named_from.join(", "), "worker starting");

    let (reports_tx, reports) = mpsc::unbounded_channel();
    let lease = lease::LeaseClock::default();
    let runner = runner::Runner::new(
        runner::RunnerConfig {
            work_dir: work_dir.clone(),
            kill_grace: config.kill_grace,
            master_url: config.master_url.clone(),
            secret: config.secret.as_ref().map(|s| s.expose().to_string()),
            tls_ca: config.tls.ca_file.clone(),
            keeper: config.keeper.clone().unwrap_or_else(keeper_program),
            lease: lease.clone(),
        },
        reports_tx,
    );
    // Ready before the first launch, which then waits only for its program.
    runner.remove_stale_spare_dirs();
    runner.fill_spare();
    let registered = Arc::new(AtomicBool::new(false));
    let web = http::WebState {
        identity: identity.clone(),
        master_url: config.master_url.clone(),
        registered: registered.clone(),
        runner: runner.clone(),
    };
    let connection = connection::Connection {
        identity,
        master_url: config.master_url.clone(),
        secret: config.secret.clone(),
        tls: config.tls.clone(),
        runner: runner.clone(),
        reports,
        driver_host: id_host,
        work_dir: work_dir.clone(),
        kill_limit: config.kill_grace + std::time::Duration::from_secs(1),
        decommission_grace: config.decommission_grace,
        registered,
        shipper: log_shipping::Shipper::new(work_dir.clone(), config.log_tail),
        ship_interval: config.log_ship_interval,
        tunnels: tunnels::TunnelClient::new(
            config.master_url.clone(),
            config.tls.clone(),
            config.secret.clone(),
        ),
        lease,
        state: connection::Delivery::default(),
        shutdown: shutdown.clone(),
    };
    let grace = config.kill_grace;
    let task = tokio::spawn(async move {
        let web_task = tokio::spawn(http::serve(listener, web, shutdown));
        // A connected worker decommissions itself on the way out (see `Connection::leave`).
        connection.run().await;
        // Whether or not it was connected, no driver may outlive its worker.
        runner
            .kill_all(
                &format!("{worker_id_for_log} stopping"),
                grace + std::time::Duration::from_secs(1),
            )
            .await;
        let _ = web_task.await;
    });
    Ok(RunningWorker {
        worker_id,
        web_addr,
        cores,
        memory_mb,
        task,
    })
}
