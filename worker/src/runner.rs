//! Drivers as supervised child processes.
//!
//! Each driver runs in its own process group with its own work directory, stdout/stderr going
//! to files there, and `HEARTH_*` variables telling it who it is. A kill is SIGTERM to the group,
//! then SIGKILL after the grace period; when the driver's main process exits, whatever it left
//! behind in its group is killed too. The driver's main process dies with the worker
//! (PR_SET_PDEATHSIG), so a worker that crashes does not leave it running unsupervised; its own
//! children outlive it only if they ignore the loss of their parent.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use hearth_common::proto::{DriverState, DriverStatus, LaunchDriver, RunningDriver};
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{process::Command, sync::mpsc, sync::oneshot};

/// What the runner needs to know about its worker.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub work_dir: PathBuf,
    pub kill_grace: Duration,
    pub master_url: String,
    /// Given to drivers so they can use the client library (register applications, submit).
    pub secret: Option<String>,
    /// The address drivers are reachable at (`HEARTH_DRIVER_HOST`).
    pub host: String,
}

/// Why a driver is being killed.
#[derive(Debug)]
struct KillOrder {
    reason: String,
    /// The worker is leaving: report ERROR (so the master relaunches supervised drivers
    /// elsewhere) rather than KILLED (a user's decision, never relaunched).
    worker_stopping: bool,
}

#[derive(Debug)]
struct Proc {
    attempt: u32,
    kill: Option<oneshot::Sender<KillOrder>>,
    /// A newer attempt ordered while this one was still running (after a fence): it starts as
    /// soon as this one has ended.
    next: Option<LaunchDriver>,
}

/// The drivers this worker runs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Runner {
    config: Arc<RunnerConfig>,
    /// Set once the worker is leaving: launches are refused from then on.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    procs: Arc<Mutex<HashMap<String, Proc>>>,
    /// State changes for the connection to send up.
    reports: mpsc::UnboundedSender<DriverStatus>,
}

/// The directory a driver runs in and keeps its logs in.
pub fn driver_dir(work_dir: &Path, driver_id: &str) -> PathBuf {
    work_dir.join(driver_id)
}

impl Runner {
    pub fn new(config: RunnerConfig, reports: mpsc::UnboundedSender<DriverStatus>) -> Self {
        Self {
            config: Arc::new(config),
            stopping: Arc::default(),
            procs: Arc::new(Mutex::new(HashMap::new())),
            reports,
        }
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Proc>> {
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drivers running now, for a (re)registration.
    pub fn running(&self) -> Vec<RunningDriver> {
        self.procs()
            .iter()
            .map(|(id, p)| RunningDriver {
                driver_id: id.clone(),
                attempt: p.attempt,
            })
            .collect()
    }

    pub fn count(&self) -> usize {
        self.procs().len()
    }

    /// Starts a driver; its RUNNING and exit reports arrive on the reports channel.
    pub fn launch(&self, order: LaunchDriver) {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self.reports.send(DriverStatus {
                driver_id: order.driver_id,
                attempt: order.attempt,
                state: DriverState::Error as i32,
                exit_code: None,
                message: "not started: the worker is stopping".into(),
            });
            return;
        }
        let (kill_tx, kill_rx) = oneshot::channel();
        {
            let mut procs = self.procs();
            if let Some(p) = procs.get_mut(&order.driver_id) {
                if p.attempt == order.attempt {
                    tracing::warn!(driver_id = %order.driver_id, attempt = order.attempt,
                        "launch ignored: this attempt already runs here");
                    return;
                }
                // An older attempt is still being fenced off: start this one once it is gone.
                tracing::info!(driver_id = %order.driver_id, attempt = order.attempt, old_attempt = p.attempt,
                    "launch queued behind the old attempt");
                if let Some(tx) = p.kill.take() {
                    let _ = tx.send(KillOrder {
                        reason: format!("superseded by attempt {}", order.attempt),
                        worker_stopping: false,
                    });
                }
                p.next = Some(order);
                return;
            }
            procs.insert(
                order.driver_id.clone(),
                Proc {
                    attempt: order.attempt,
                    kill: Some(kill_tx),
                    next: None,
                },
            );
        }
        let runner = self.clone();
        tokio::spawn(async move {
            let LaunchDriver {
                driver_id,
                attempt,
                spec,
            } = order;
            let (state, exit_code, message) = runner
                .run(&driver_id, attempt, spec.unwrap_or_default(), kill_rx)
                .await;
            tracing::info!(driver_id, attempt, state = ?state, exit_code, message, "driver ended");
            // Removed and reported under one lock, so a registration sees the driver either
            // running or among the reports, never in neither.
            let next = {
                let mut procs = runner.procs();
                let next = procs.remove(&driver_id).and_then(|p| p.next);
                let _ = runner.reports.send(DriverStatus {
                    driver_id,
                    attempt,
                    state: state as i32,
                    exit_code,
                    message,
                });
                next
            };
            if let Some(next) = next {
                runner.launch(next);
            }
        });
    }

    /// Kills a driver (any attempt when `attempt` is 0).
    pub fn kill(&self, driver_id: &str, attempt: u32, reason: String) {
        self.send_kill(driver_id, attempt, reason, false);
    }

    fn send_kill(&self, driver_id: &str, attempt: u32, reason: String, worker_stopping: bool) {
        let mut procs = self.procs();
        match procs.get_mut(driver_id) {
            Some(p) if attempt == 0 || p.attempt == attempt => {
                if worker_stopping {
                    p.next = None;
                }
                if let Some(tx) = p.kill.take() {
                    let _ = tx.send(KillOrder {
                        reason,
                        worker_stopping,
                    });
                }
            }
            _ => tracing::debug!(driver_id, attempt, "kill ignored: not running here"),
        }
    }

    /// The worker is leaving: kills every driver (reported as ERROR, so the master relaunches
    /// supervised ones elsewhere) and waits until all have ended (or `limit` passes).
    pub async fn kill_all(&self, reason: &str, limit: Duration) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let ids: Vec<String> = self.procs().keys().cloned().collect();
        for id in ids {
            self.send_kill(&id, 0, reason.to_string(), true);
        }
        let deadline = tokio::time::Instant::now() + limit;
        while self.count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn run(
        &self,
        driver_id: &str,
        attempt: u32,
        spec: hearth_common::proto::DriverSpec,
        kill_rx: oneshot::Receiver<KillOrder>,
    ) -> (DriverState, Option<i32>, String) {
        let dir = driver_dir(&self.config.work_dir, driver_id);
        let mut command = match self.prepare(driver_id, attempt, &spec, &dir) {
            Ok(c) => c,
            Err(e) => return (DriverState::Error, None, e),
        };
        let program = spec.command.first().cloned().unwrap_or_default();
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                return (
                    DriverState::Error,
                    None,
                    format!("cannot start {program:?}: {e}"),
                );
            }
        };
        let Some(pid) = child.id() else {
            return (
                DriverState::Error,
                None,
                "the process vanished at start".into(),
            );
        };
        let pgid = Pid::from_raw(pid as i32);
        tracing::info!(driver_id, attempt, pid, "driver started");
        let _ = self.reports.send(DriverStatus {
            driver_id: driver_id.to_string(),
            attempt,
            state: DriverState::Running as i32,
            exit_code: None,
            message: format!("started as pid {pid}"),
        });

        let mut killed: Option<KillOrder> = None;
        let status = tokio::select! {
            status = child.wait() => status,
            order = kill_rx => {
                let order = order.unwrap_or(KillOrder { reason: "worker stopping".into(), worker_stopping: true });
                tracing::info!(driver_id, attempt, reason = %order.reason, "killing driver");
                let _ = killpg(pgid, Signal::SIGTERM);
                let status = match tokio::time::timeout(self.config.kill_grace, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        tracing::warn!(driver_id, attempt, "grace period over; SIGKILL");
                        let _ = killpg(pgid, Signal::SIGKILL);
                        child.wait().await
                    }
                };
                killed = Some(order);
                status
            }
        };
        // Whatever the driver left running in its group goes with it.
        let _ = killpg(pgid, Signal::SIGKILL);
        match (status, killed) {
            (_, Some(order)) if order.worker_stopping => (DriverState::Error, None, order.reason),
            (_, Some(order)) => (DriverState::Killed, None, order.reason),
            (Err(e), None) => (
                DriverState::Error,
                None,
                format!("waiting for it failed: {e}"),
            ),
            (Ok(status), None) => {
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(0), _) => (DriverState::Finished, Some(0), "exited with code 0".into()),
                    (Some(code), _) => (
                        DriverState::Failed,
                        Some(code),
                        format!("exited with code {code}"),
                    ),
                    (None, Some(sig)) => (
                        DriverState::Failed,
                        Some(128 + sig),
                        format!("killed by signal {sig}"),
                    ),
                    (None, None) => (DriverState::Failed, None, "ended without a status".into()),
                }
            }
        }
    }

    fn prepare(
        &self,
        driver_id: &str,
        attempt: u32,
        spec: &hearth_common::proto::DriverSpec,
        dir: &Path,
    ) -> Result<Command, String> {
        let (program, args) = spec
            .command
            .split_first()
            .ok_or_else(|| "empty command".to_string())?;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .map_err(|e| format!("cannot open {}: {e}", dir.join(name).display()))
        };
        let stdout = open("stdout")?;
        let stderr = open("stderr")?;
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        // The worker's own HEARTH_* settings are not the driver's business.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HEARTH_") {
                command.env_remove(key);
            }
        }
        command
            .envs(&spec.env)
            .env("HEARTH_DRIVER_ID", driver_id)
            .env("HEARTH_ATTEMPT", attempt.to_string())
            .env("HEARTH_CORES", spec.cores.to_string())
            .env("HEARTH_MEMORY_MB", spec.memory_mb.to_string())
            .env("HEARTH_MASTER_URL", &self.config.master_url)
            .env("HEARTH_DRIVER_HOST", &self.config.host)
            .env("HEARTH_WORK_DIR", dir);
        if let Some(secret) = &self.config.secret {
            command.env(hearth_common::auth::SECRET_ENV, secret);
        }
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        Ok(command)
    }
}
