//! Drivers as supervised child processes.
//!
//! Each driver runs in its own process group with its own work directory, stdout/stderr going
//! to files there, and `HEARTH_*` variables telling it who it is. A kill is SIGTERM to the group,
//! then SIGKILL after the grace period; when the driver's main process exits, whatever it left
//! behind in its group is killed too. The child dies with the worker (PR_SET_PDEATHSIG), so a
//! worker that crashes leaves no driver running unsupervised.

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

#[derive(Debug)]
struct Proc {
    attempt: u32,
    kill: Option<oneshot::Sender<String>>,
}

/// The drivers this worker runs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Runner {
    config: Arc<RunnerConfig>,
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
        let LaunchDriver {
            driver_id,
            attempt,
            spec,
        } = order;
        let spec = spec.unwrap_or_default();
        let (kill_tx, kill_rx) = oneshot::channel();
        {
            let mut procs = self.procs();
            if procs.contains_key(&driver_id) {
                tracing::warn!(driver_id, attempt, "launch ignored: already running here");
                return;
            }
            procs.insert(
                driver_id.clone(),
                Proc {
                    attempt,
                    kill: Some(kill_tx),
                },
            );
        }
        let runner = self.clone();
        tokio::spawn(async move {
            let (state, exit_code, message) = runner.run(&driver_id, attempt, spec, kill_rx).await;
            runner.procs().remove(&driver_id);
            tracing::info!(driver_id, attempt, state = ?state, exit_code, message, "driver ended");
            let _ = runner.reports.send(DriverStatus {
                driver_id,
                attempt,
                state: state as i32,
                exit_code,
                message,
            });
        });
    }

    /// Kills a driver (any attempt when `attempt` is 0).
    pub fn kill(&self, driver_id: &str, attempt: u32, reason: String) {
        let mut procs = self.procs();
        match procs.get_mut(driver_id) {
            Some(p) if attempt == 0 || p.attempt == attempt => {
                if let Some(tx) = p.kill.take() {
                    let _ = tx.send(reason);
                }
            }
            _ => tracing::debug!(driver_id, attempt, "kill ignored: not running here"),
        }
    }

    /// Kills every driver and waits until all have ended (or `limit` passes).
    pub async fn kill_all(&self, reason: &str, limit: Duration) {
        let ids: Vec<String> = self.procs().keys().cloned().collect();
        for id in ids {
            self.kill(&id, 0, reason.to_string());
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
        kill_rx: oneshot::Receiver<String>,
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

        let mut killed: Option<String> = None;
        let status = tokio::select! {
            status = child.wait() => status,
            reason = kill_rx => {
                let reason = reason.unwrap_or_else(|_| "worker stopping".into());
                tracing::info!(driver_id, attempt, reason, "killing driver");
                let _ = killpg(pgid, Signal::SIGTERM);
                let status = match tokio::time::timeout(self.config.kill_grace, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        tracing::warn!(driver_id, attempt, "grace period over; SIGKILL");
                        let _ = killpg(pgid, Signal::SIGKILL);
                        child.wait().await
                    }
                };
                killed = Some(reason);
                status
            }
        };
        // Whatever the driver left running in its group goes with it.
        let _ = killpg(pgid, Signal::SIGKILL);
        match (status, killed) {
            (_, Some(reason)) => (DriverState::Killed, None, reason),
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
