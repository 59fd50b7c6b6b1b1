//! Drivers and executors as supervised child processes.
//!
//! Each process runs in its own process group with its own work directory (`driver-...` or
//! `app-.../N` under the work directory), stdout/stderr going to files there, and `HEARTH_*`
//! variables telling it who it is. A kill is SIGTERM to the group, then SIGKILL after the grace
//! period; when the main process exits, whatever it left behind in its group is killed too.
//!
//! The group's leader is a [`keeper`](crate::keeper) that runs the process and passes its exit
//! status on. When the worker is gone (crashed, killed) the keeper kills the whole group, so
//! nothing the process started runs on unsupervised; for an `at_most_one` driver it also kills
//! the group when the worker's lease from the master ends, even if the worker is frozen.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsString,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use hearth_common::ids::ProcessRef;
use tokio::io::AsyncWriteExt;

use crate::{keeper, lease::LeaseClock};
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{
    process::{Child, Command},
    sync::mpsc,
};

/// The file in a process's directory that says it is being preempted, written just before its
/// SIGTERM: `reason=...` and `sigkill_at_ms=...` (epoch ms) lines.
pub const PREEMPTION_FILE: &str = "PREEMPTED";
/// The longest grace a preemption order may ask for.
const MAX_PREEMPT_GRACE: Duration = Duration::from_secs(3600);

/// Writes the preemption notice atomically, so a process that reads it on SIGTERM sees all
/// of it or none.
fn write_preemption_notice(dir: &Path, reason: &str, grace: Duration) {
    let kill_at = hearth_common::ids::now_ms().saturating_add(grace.as_millis() as i64);
    let reason = reason.replace(['\n', '\r'], " ");
    let text = format!("reason={reason}\nsigkill_at_ms={kill_at}\n");
    let tmp = dir.join(format!(".{PREEMPTION_FILE}.tmp"));
    let done =
        std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, dir.join(PREEMPTION_FILE)));
    if let Err(e) = done {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the preemption notice");
    }
}

/// What the runner needs to know about its worker.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub work_dir: PathBuf,
    pub kill_grace: Duration,
    pub master_url: String,
    /// Given to drivers (not executors) so they can use the client library.
    pub secret: Option<String>,
    /// The CA file for an `https://` master, as an absolute path.
    pub tls_ca: Option<PathBuf>,
    /// The `hearth` binary, run as each process's keeper.
    pub keeper: PathBuf,
    /// How long the master has vouched for this worker, for `at_most_one` drivers.
    pub lease: LeaseClock,
}

/// What to run: a driver's attempt or an executor, already translated from the master's order.
#[derive(Debug, Clone)]
pub struct Launch {
    pub process: ProcessRef,
    /// A driver's attempt; 0 for executors, which are never relaunched under the same id.
    pub attempt: u32,
    pub command: Vec<String>,
    pub env: std::collections::HashMap<String, String>,
    pub cores: u32,
    pub memory_mb: u64,
    /// `HEARTH_*` variables naming this process and where its driver is.
    pub identity: Vec<(String, String)>,
    /// What the process gets as `HEARTH_SECRET`.
    pub credential: Credential,
    /// Stopped by its keeper when the worker's lease from the master ends.
    pub at_most_one: bool,
}

/// The credential a process is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// None: executors.
    None,
    /// The worker's own cluster secret: drivers launched by a master that mints no tokens.
    ClusterSecret,
    /// The driver's own token from the master.
    Token(String),
}

/// How a process stands, as the runner saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Running,
    /// Exited with code 0.
    Finished,
    /// Exited non-zero or by a signal nobody here sent.
    Failed,
    /// Killed on the master's order.
    Killed,
    /// Killed because the worker is leaving: for the master to run it elsewhere.
    Stopped,
    /// Could not be started.
    NotStarted,
}

impl Outcome {
    pub fn is_terminal(self) -> bool {
        self != Outcome::Running
    }
}

/// A state change of one process, for the connection to send up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub process: ProcessRef,
    pub attempt: u32,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub message: String,
}

/// Why a driver is being killed.
#[derive(Debug)]
struct KillOrder {
    reason: String,
    /// Between SIGTERM and SIGKILL instead of the worker's own grace.
    grace: Option<Duration>,
    /// Preempted: the process is told so in its preemption file before SIGTERM.
    preempted: bool,
    /// The worker is leaving: report ERROR (so the master relaunches supervised drivers
    /// elsewhere) rather than KILLED (a user's decision, never relaunched).
    worker_stopping: bool,
}

#[derive(Debug)]
struct Proc {
    attempt: u32,
    /// Stopped by its keeper when the lease ends: the worker keeps its lease fresh.
    at_most_one: bool,
    /// Kill orders: the first starts the kill; a later one can only shorten its grace (a
    /// user's kill during a preemption's long grace is not left waiting).
    kill: Option<mpsc::UnboundedSender<KillOrder>>,
    /// A newer attempt ordered while this one was still running (after a fence): it starts as
    /// soon as this one has ended.
    next: Option<Launch>,
}

/// The processes this worker runs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Runner {
    config: Arc<RunnerConfig>,
    /// Set once the worker is leaving: launches are refused from then on.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    procs: Arc<Mutex<HashMap<ProcessRef, Proc>>>,
    /// State changes for the connection to send up.
    reports: mpsc::UnboundedSender<Report>,
    /// A keeper started ahead of the next launch, waiting for its process on stdin.
    spare: Arc<Mutex<Option<Child>>>,
    /// A process directory made ahead of the next launch, with its empty `stdout` and `stderr`:
    /// the launch renames it into place. Making a file costs an inode allocation, which on a
    /// busy ext4 (inodes freed in the last minute are skipped one by one) measured 0.15 to 1 ms
    /// each; a rename allocates none.
    spare_dir: Arc<Mutex<Option<PathBuf>>>,
    /// The worker's environment without its own `HEARTH_*` settings, which are not a
    /// process's business: what every process's environment starts from.
    base_env: Arc<BTreeMap<OsString, OsString>>,
}

impl Runner {
    pub fn new(config: RunnerConfig, reports: mpsc::UnboundedSender<Report>) -> Self {
        let base_env = std::env::vars_os()
            .filter(|(key, _)| !key.to_string_lossy().starts_with("HEARTH_"))
            .collect();
        Self {
            config: Arc::new(config),
            stopping: Arc::default(),
            procs: Arc::new(Mutex::new(HashMap::new())),
            reports,
            spare: Arc::default(),
            spare_dir: Arc::default(),
            base_env: Arc::new(base_env),
        }
    }

    /// Removes the spare directories left by workers that are gone (killed before they could).
    pub fn remove_stale_spare_dirs(&self) {
        let Ok(entries) = std::fs::read_dir(&self.config.work_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(SPARE_DIR_PREFIX))
                .and_then(|rest| rest.split('-').next())
            else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() || pid == std::process::id().to_string() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    fn make_spare_dir(&self) -> std::io::Result<PathBuf> {
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self
            .config
            .work_dir
            .join(format!("{SPARE_DIR_PREFIX}{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        for name in ["stdout", "stderr"] {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))?;
        }
        Ok(dir)
    }

    fn spare_dir_slot(&self) -> std::sync::MutexGuard<'_, Option<PathBuf>> {
        self.spare_dir.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts the spare directory in place as `dir`; false when there is none or `dir` is there
    /// already with something in it (a relaunch here: its logs go on in the same files).
    fn use_spare_dir(&self, dir: &Path) -> bool {
        let Some(spare) = self.spare_dir_slot().take() else {
            return false;
        };
        let parent_ready = dir
            .parent()
            .is_none_or(|parent| std::fs::create_dir_all(parent).is_ok());
        // An empty directory already there is replaced; one with files in it is not.
        if parent_ready && std::fs::rename(&spare, dir).is_ok() {
            return true;
        }
        if spare.is_dir() {
            *self.spare_dir_slot() = Some(spare);
        }
        false
    }

    /// Starts a spare keeper unless one waits already or the worker is leaving. Called in the
    /// runtime (the keeper is a `tokio` child).
    pub fn fill_spare(&self) {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if self.spare_dir_slot().is_none() {
            match self.make_spare_dir() {
                Ok(dir) => {
                    let mut slot = self.spare_dir_slot();
                    if slot.is_none() && !self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                        *slot = Some(dir);
                    } else {
                        drop(slot);
                        let _ = std::fs::remove_dir_all(dir);
                    }
                }
                Err(e) => tracing::warn!(work_dir = %self.config.work_dir.display(), error = %e,
                    "cannot make a spare process directory"),
            }
        }
        if self.spare_slot().is_some() {
            return;
        }
        let keeper = match self.spawn_keeper() {
            Ok(keeper) => keeper,
            Err(e) => {
                // Each launch then starts its own keeper, and says why if it cannot.
                tracing::warn!(keeper = %self.config.keeper.display(), error = %e,
                    "cannot start a spare keeper");
                return;
            }
        };
        let mut slot = self.spare_slot();
        // The worker started leaving meanwhile: the keeper's pipe closes as it is dropped,
        // and it exits having run nothing.
        if slot.is_none() && !self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            *slot = Some(keeper);
        }
    }

    fn spare_slot(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.spare.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The spare keeper if it is still alive.
    fn take_spare(&self) -> Option<Child> {
        let mut spare = self.spare_slot().take()?;
        matches!(spare.try_wait(), Ok(None)).then_some(spare)
    }

    fn spawn_keeper(&self) -> std::io::Result<Child> {
        Command::new(&self.config.keeper)
            .arg(keeper::KEEP_ARG)
            .arg(keeper::SPARE_ARG)
            .current_dir("/")
            .env_clear()
            .envs(self.base_env.iter())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
    }

    /// A keeper running `spec`: the spare if there is one (and another started behind it),
    /// else one started now.
    async fn start_keeper(&self, spec: &keeper::Spec) -> std::io::Result<Child> {
        let message = spec.encode();
        let mut spare = self.take_spare();
        let runner = self.clone();
        tokio::spawn(async move {
            // The launch's own work goes first.
            tokio::task::yield_now().await;
            runner.fill_spare();
        });
        loop {
            let (mut child, was_spare) = match spare.take() {
                Some(child) => (child, true),
                None => (self.spawn_keeper()?, false),
            };
            let written = match child.stdin.as_mut() {
                Some(stdin) => stdin.write_all(&message).await,
                None => Err(std::io::Error::other("the keeper has no pipe")),
            };
            match written {
                Ok(()) => return Ok(child),
                // The spare had ended (killed by someone): the process goes to a new keeper.
                Err(e) if was_spare => {
                    tracing::debug!(error = %e, "the spare keeper is gone; starting another");
                    let _ = child.start_kill();
                }
                Err(e) => {
                    let _ = child.start_kill();
                    return Err(e);
                }
            }
        }
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, HashMap<ProcessRef, Proc>> {
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a process here (running, or waiting for an older attempt to end) is kept
    /// under the lease, so the lease must be renewed at its own rhythm.
    pub fn keeps_at_most_one(&self) -> bool {
        self.procs()
            .values()
            .any(|p| p.at_most_one || p.next.as_ref().is_some_and(|n| n.at_most_one))
    }

    /// Processes running now with their attempts.
    pub fn running(&self) -> Vec<(ProcessRef, u32)> {
        self.procs()
            .iter()
            .map(|(id, p)| (id.clone(), p.attempt))
            .collect()
    }

    /// Processes running now, and attempts waiting here for an older one to end, for a
    /// (re)registration: a launch this worker took is never reported as never arrived.
    pub fn running_or_queued(&self) -> Vec<(ProcessRef, u32)> {
        let procs = self.procs();
        let mut all: Vec<(ProcessRef, u32)> = procs
            .iter()
            .map(|(id, p)| (id.clone(), p.attempt))
            .collect();
        all.extend(
            procs
                .values()
                .filter_map(|p| p.next.as_ref())
                .map(|next| (next.process.clone(), next.attempt)),
        );
        all
    }

    pub fn count(&self) -> usize {
        self.procs().len()
    }

    /// How many drivers and executors run now.
    pub fn counts(&self) -> (usize, usize) {
        let procs = self.procs();
        let drivers = procs
            .keys()
            .filter(|p| matches!(p, ProcessRef::Driver(_)))
            .count();
        (drivers, procs.len() - drivers)
    }

    /// Starts a process; its RUNNING and exit reports arrive on the reports channel.
    pub fn launch(&self, order: Launch) {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self.reports.send(Report {
                process: order.process,
                attempt: order.attempt,
                outcome: Outcome::Stopped,
                exit_code: None,
                message: "not started: the worker is stopping".into(),
            });
            return;
        }
        let (kill_tx, kill_rx) = mpsc::unbounded_channel();
        {
            let mut procs = self.procs();
            if let Some(p) = procs.get_mut(&order.process) {
                if p.attempt == order.attempt {
                    tracing::warn!(process = %order.process, attempt = order.attempt,
                        "launch ignored: this attempt already runs here");
                    return;
                }
                // An older attempt is still being fenced off: start this one once it is gone.
                tracing::info!(process = %order.process, attempt = order.attempt, old_attempt = p.attempt,
                    "launch queued behind the old attempt");
                if let Some(tx) = &p.kill {
                    let _ = tx.send(KillOrder {
                        reason: format!("superseded by attempt {}", order.attempt),
                        worker_stopping: false,
                        grace: None,
                        preempted: false,
                    });
                }
                p.next = Some(order);
                return;
            }
            procs.insert(
                order.process.clone(),
                Proc {
                    attempt: order.attempt,
                    at_most_one: order.at_most_one,
                    kill: Some(kill_tx),
                    next: None,
                },
            );
        }
        let runner = self.clone();
        tokio::spawn(async move {
            let process = order.process.clone();
            let attempt = order.attempt;
            let (outcome, exit_code, message) = runner.run(order, kill_rx).await;
            tracing::info!(%process, attempt, ?outcome, exit_code, message, "process ended");
            // Removed and reported under one lock, so a registration sees the process either
            // running or among the reports, never in neither.
            let next = {
                let mut procs = runner.procs();
                let next = procs.remove(&process).and_then(|p| p.next);
                let _ = runner.reports.send(Report {
                    process,
                    attempt,
                    outcome,
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

    /// Kills a process (any attempt when `attempt` is 0).
    pub fn kill(&self, process: &ProcessRef, attempt: u32, reason: String) {
        self.send_kill(process, attempt, reason, false, None, false);
    }

    /// Preempts a process: writes `reason` and the time of its SIGKILL to its preemption file
    /// (`HEARTH_PREEMPTION_FILE`), then SIGTERM, then SIGKILL after `grace` (the worker's own
    /// when zero) unless it has ended.
    pub fn preempt(&self, process: &ProcessRef, attempt: u32, reason: String, grace: Duration) {
        let grace = (!grace.is_zero()).then_some(grace.min(MAX_PREEMPT_GRACE));
        self.send_kill(process, attempt, reason, false, grace, true);
    }

    fn send_kill(
        &self,
        process: &ProcessRef,
        attempt: u32,
        reason: String,
        worker_stopping: bool,
        grace: Option<Duration>,
        preempted: bool,
    ) {
        let mut procs = self.procs();
        match procs.get_mut(process) {
            Some(p) if attempt == 0 || p.attempt == attempt => {
                if worker_stopping {
                    p.next = None;
                }
                if let Some(tx) = &p.kill {
                    let _ = tx.send(KillOrder {
                        reason,
                        worker_stopping,
                        grace,
                        preempted,
                    });
                }
            }
            _ => tracing::debug!(%process, attempt, "kill ignored: not running here"),
        }
    }

    /// The worker is leaving: kills every process (reported as stopped, so the master runs
    /// them elsewhere) and waits until all have ended (or `limit` passes).
    pub async fn kill_all(&self, reason: &str, limit: Duration) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Its pipe closes: it exits having run nothing.
        drop(self.spare_slot().take());
        if let Some(dir) = self.spare_dir_slot().take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        let ids: Vec<ProcessRef> = self.procs().keys().cloned().collect();
        for id in ids {
            self.send_kill(&id, 0, reason.to_string(), true, None, false);
        }
        let deadline = tokio::time::Instant::now() + limit;
        while self.count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn run(
        &self,
        order: Launch,
        mut kill_rx: mpsc::UnboundedReceiver<KillOrder>,
    ) -> (Outcome, Option<i32>, String) {
        let process = &order.process;
        let attempt = order.attempt;
        let dir = process.dir_in(&self.config.work_dir);
        // The keeper's first deadline is the lease as renewed just before.
        if order.at_most_one && !self.config.lease.renew(LEASE_RENEWAL_WAIT).await {
            tracing::warn!(%process, attempt,
                "the lease was not renewed before an at-most-one process started");
        }
        let spec = match self.prepare(&order, &dir) {
            Ok(spec) => spec,
            Err(e) => return (Outcome::NotStarted, None, e),
        };
        let mut held_pipe = None;
        let mut child = match self.start_keeper(&spec).await {
            Ok(c) => c,
            Err(e) => {
                return (
                    Outcome::NotStarted,
                    None,
                    format!(
                        "cannot start the keeper {} for {:?}: {e}",
                        self.config.keeper.display(),
                        spec.program
                    ),
                );
            }
        };
        let Some(pid) = child.id() else {
            return (
                Outcome::NotStarted,
                None,
                "the process vanished at start".into(),
            );
        };
        let pgid = Pid::from_raw(pid as i32);
        // The keeper's end of this pipe closing means the worker is gone: it is held until the
        // process has ended, and for an `at_most_one` driver it carries the lease.
        let lease_pipe = child.stdin.take();
        let lease_writer = match (order.at_most_one, lease_pipe) {
            (true, Some(pipe)) => Some(tokio::spawn(forward_lease(
                pipe,
                self.config.lease.subscribe(),
            ))),
            (_, pipe) => {
                held_pipe = pipe;
                None
            }
        };
        tracing::info!(%process, attempt, pid, at_most_one = order.at_most_one, "process started");
        let _ = self.reports.send(Report {
            process: process.clone(),
            attempt,
            outcome: Outcome::Running,
            exit_code: None,
            message: format!("started as pid {pid}"),
        });

        let mut killed: Option<KillOrder> = None;
        let status = tokio::select! {
            status = child.wait() => status,
            order = kill_rx.recv() => {
                let order = order.unwrap_or(KillOrder {
                    reason: "worker stopping".into(),
                    worker_stopping: true,
                    grace: None,
                    preempted: false,
                });
                let grace = order.grace.unwrap_or(self.config.kill_grace);
                tracing::info!(%process, attempt, reason = %order.reason, preempted = order.preempted, grace_ms = grace.as_millis() as u64, "killing process");
                if order.preempted {
                    write_preemption_notice(&dir, &order.reason, grace);
                }
                let _ = killpg(pgid, Signal::SIGTERM);
                let mut deadline = tokio::time::Instant::now() + grace;
                let mut open = true;
                let status = loop {
                    tokio::select! {
                        status = child.wait() => break status,
                        () = tokio::time::sleep_until(deadline) => {
                            tracing::warn!(%process, attempt, "grace period over; SIGKILL");
                            let _ = killpg(pgid, Signal::SIGKILL);
                            break child.wait().await;
                        }
                        later = kill_rx.recv(), if open => match later {
                            Some(later) => {
                                let grace = later.grace.unwrap_or(self.config.kill_grace);
                                deadline = deadline.min(tokio::time::Instant::now() + grace);
                            }
                            None => open = false,
                        },
                    }
                };
                killed = Some(order);
                status
            }
        };
        // Whatever the process left running in its group goes with it.
        let _ = killpg(pgid, Signal::SIGKILL);
        if let Some(writer) = lease_writer {
            writer.abort();
        }
        drop(held_pipe);
        let lease_ended = order.at_most_one && !self.config.lease.holds();
        match (status, killed) {
            (_, Some(order)) if order.worker_stopping => (Outcome::Stopped, None, order.reason),
            (_, Some(order)) => (Outcome::Killed, None, order.reason),
            (Err(e), None) => (Outcome::Failed, None, format!("waiting for it failed: {e}")),
            (Ok(status), None) => {
                use std::os::unix::process::ExitStatusExt;
                let not_started = (status.code() == Some(keeper::NOT_STARTED_CODE))
                    .then(|| std::fs::read_to_string(dir.join(keeper::NOT_STARTED_FILE)).ok())
                    .flatten();
                if let Some(why) = not_started {
                    let _ = std::fs::remove_file(dir.join(keeper::NOT_STARTED_FILE));
                    return (Outcome::NotStarted, None, why);
                }
                match (status.code(), status.signal()) {
                    (Some(0), _) => (Outcome::Finished, Some(0), "exited with code 0".into()),
                    (Some(code), _) => (
                        Outcome::Failed,
                        Some(code),
                        format!("exited with code {code}"),
                    ),
                    (None, Some(9)) if lease_ended => (
                        Outcome::Failed,
                        Some(137),
                        "stopped by its keeper: this worker's lease from the master ended \
                         (at-most-one)"
                            .into(),
                    ),
                    (None, Some(sig)) => (
                        Outcome::Failed,
                        Some(128 + sig),
                        format!("killed by signal {sig}"),
                    ),
                    (None, None) => (Outcome::Failed, None, "ended without a status".into()),
                }
            }
        }
    }

    fn prepare(&self, order: &Launch, dir: &Path) -> Result<keeper::Spec, String> {
        let (program, args) = order
            .command
            .split_first()
            .ok_or_else(|| "empty command".to_string())?;
        let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
        if !self.use_spare_dir(dir) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            // A notice left by an earlier attempt's preemption is not this attempt's.
            let _ = std::fs::remove_file(dir.join(PREEMPTION_FILE));
            let _ = std::fs::remove_file(dir.join(keeper::NOT_STARTED_FILE));
            // Created here, so they are there (to read) once the process is reported running;
            // the keeper opens them again as its own.
            let open = |path: &Path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(drop)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))
            };
            open(&stdout)?;
            open(&stderr)?;
        }
        let deadline = if order.at_most_one {
            self.config.lease.until()
        } else {
            keeper::NO_LEASE
        };
        let mut env = (*self.base_env).clone();
        let mut set = |key: &str, value: OsString| {
            env.insert(key.into(), value);
        };
        for (key, value) in order
            .env
            .iter()
            .chain(order.identity.iter().map(|(k, v)| (k, v)))
        {
            set(key, value.into());
        }
        set("HEARTH_CORES", order.cores.to_string().into());
        set("HEARTH_MEMORY_MB", order.memory_mb.to_string().into());
        set("HEARTH_MASTER_URL", self.config.master_url.clone().into());
        set("HEARTH_WORK_DIR", dir.into());
        set("HEARTH_PREEMPTION_FILE", dir.join(PREEMPTION_FILE).into());
        // The `hearth` command the worker runs: a driver resizes its application with it
        // (`$HEARTH_BIN executors ...`) whatever the image's PATH.
        if let Ok(bin) = std::env::current_exe() {
            set("HEARTH_BIN", bin.into());
        }
        if let Some(ca) = &self.config.tls_ca {
            set(hearth_common::client::TLS_CA_ENV, ca.into());
        }
        match &order.credential {
            Credential::Token(token) => set(hearth_common::auth::SECRET_ENV, token.into()),
            Credential::ClusterSecret => {
                if let Some(secret) = &self.config.secret {
                    set(hearth_common::auth::SECRET_ENV, secret.into());
                }
            }
            Credential::None => {}
        }
        Ok(keeper::Spec {
            deadline,
            dir: dir.to_path_buf(),
            stdout,
            stderr,
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            env: env.into_iter().collect(),
        })
    }
}

/// The start of a spare process directory's name in the work directory, before the worker's
/// pid: no process id starts with a dot.
const SPARE_DIR_PREFIX: &str = ".spare-";

/// How long an `at_most_one` process waits at its start for the lease to be renewed (a
/// heartbeat's round trip, normally a millisecond or two).
const LEASE_RENEWAL_WAIT: Duration = Duration::from_secs(2);

/// Writes each new end of the lease to an `at_most_one` driver's keeper until it has gone.
async fn forward_lease(
    mut pipe: tokio::process::ChildStdin,
    mut lease: tokio::sync::watch::Receiver<u64>,
) {
    loop {
        let until = *lease.borrow_and_update();
        if pipe.write_all(&until.to_le_bytes()).await.is_err() {
            // The keeper has gone; the pipe is kept open until the process is reaped.
            std::future::pending::<()>().await;
        }
        if lease.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
