//! A master and workers, each a real `hearth` process on loopback, in a temporary directory.

use std::{
    fs::File,
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use hearth_common::{
    auth::Secret,
    client::Client,
    proto::{Driver, Worker, WorkerState},
    state_names::StateName,
};
use hearth_testkit::master::{MasterProcess, MasterSpawn};

use super::{
    CLI_LIMIT, HEARTH, Proc, connect, first_line, free_port, http_get, json_at, output_within,
    stderr, stdout, wait_app_at, wait_for,
};

/// A master's queues file, and a directory beside it for the test's own files.
pub struct QueuesFile {
    dir: tempfile::TempDir,
    pub path: std::path::PathBuf,
}

impl QueuesFile {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A master and workers, each a real `hearth` process, in a temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub master: Proc,
    pub url: String,
    pub web: String,
    pub secret: Option<String>,
    pub workers: Vec<(String, Proc)>,
    /// The CA workers, clients and the `hearth` command trust, for a master serving TLS.
    pub tls_ca: Option<std::path::PathBuf>,
    /// How the master was started, to start it again on the same ports and state.
    options: MasterOptions,
    ports: (u16, u16),
}

#[derive(Clone)]
pub struct MasterOptions {
    pub secret: Option<String>,
    pub extra: Vec<String>,
    /// The address the master listens on (loopback unless a test needs other hosts to reach it).
    pub bind: String,
}

impl Default for MasterOptions {
    fn default() -> Self {
        Self {
            secret: Some("test-secret-4f9a".into()),
            extra: Vec::new(),
            bind: "127.0.0.1".into(),
        }
    }
}

/// `hearth master` on free loopback ports with no secret in its environment.
pub fn master_command(state_dir: &Path) -> Command {
    master_command_on(state_dir, 0, 0)
}

/// `hearth master` on the given loopback ports with no secret in its environment.
pub fn master_command_on(state_dir: &Path, grpc_port: u16, web_port: u16) -> Command {
    master_command_bound(state_dir, "127.0.0.1", grpc_port, web_port)
}

/// `hearth master` listening on `bind`, with none of the caller's `HEARTH_*` settings.
pub fn master_command_bound(
    state_dir: &Path,
    bind: &str,
    grpc_port: u16,
    web_port: u16,
) -> Command {
    let mut cmd = hearth_testkit::process::hearth_command(Path::new(HEARTH));
    cmd.args([
        "master",
        "--port",
        &grpc_port.to_string(),
        "--webui-port",
        &web_port.to_string(),
        "--bind",
        bind,
    ])
    .arg("--state-dir")
    .arg(state_dir);
    cmd
}

impl Cluster {
    pub fn start() -> Self {
        Self::start_with(MasterOptions::default())
    }

    /// A cluster whose master reads `queues` (YAML) from a file, in a directory that lives as
    /// long as the returned [`QueuesFile`].
    pub fn start_with_queues(queues: &str) -> (Self, QueuesFile) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("queues.yaml");
        std::fs::write(&path, queues).expect("write the queues file");
        let cluster = Self::start_with(MasterOptions {
            extra: vec!["--queues".into(), path.display().to_string()],
            ..Default::default()
        });
        (cluster, QueuesFile { dir, path })
    }

    pub fn start_with(options: MasterOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = (free_port(), free_port());
        let master = spawn_master(dir.path(), &options, ports, "master.log");
        Self {
            dir,
            master: master.proc,
            url: master.url,
            web: master.web,
            secret: options.secret.clone(),
            workers: Vec::new(),
            tls_ca: None,
            options,
            ports,
        }
    }

    /// SIGKILLs the master and starts it again on the same ports and state directory, with
    /// `extra` arguments added. The new master's log is `master-N.log`.
    pub fn restart_master(&mut self, extra: &[&str]) {
        self.master.kill();
        let mut options = self.options.clone();
        options.extra.extend(extra.iter().map(|s| s.to_string()));
        let n = self.restarts();
        let master = spawn_master(
            self.dir.path(),
            &options,
            self.ports,
            &format!("master-{n}.log"),
        );
        self.master = master.proc;
        self.url = master.url;
        self.web = master.web;
    }

    fn restarts(&self) -> usize {
        (1..)
            .find(|n| !self.dir.path().join(format!("master-{n}.log")).exists())
            .unwrap_or(1)
    }

    /// The master's state directory.
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    /// Starts a worker offering `cores` and `memory` and returns its id once it printed it.
    pub fn spawn_worker(&mut self, cores: u32, memory: &str, extra: &[&str]) -> String {
        let url = self.url.clone();
        self.spawn_worker_via(&[], &url, Some((cores, memory)), extra)
    }

    /// [`Cluster::spawn_worker`] run through `wrapper` (e.g. `ip netns exec NS`, or `sh -c`
    /// with a script ending in `exec "$0" "$@"`), dialling the master at `master_url`; with no
    /// `offer` the worker detects its own.
    pub fn spawn_worker_via(
        &mut self,
        wrapper: &[&str],
        master_url: &str,
        offer: Option<(u32, &str)>,
        extra: &[&str],
    ) -> String {
        let n = self.workers.len();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(HEARTH);
                cmd
            }
            None => Command::new(HEARTH),
        };
        cmd.args([
            "worker",
            "--master",
            master_url,
            "--webui-port",
            "0",
            "--bind",
            "127.0.0.1",
        ])
        .args(["--host", "127.0.0.1"])
        .args(["--name", &format!("w{n}")])
        .arg("--work-dir")
        .arg(self.dir.path().join(format!("work-{n}")))
        .args(extra)
        .env_remove("HEARTH_SECRET")
        .env_remove("HEARTH_SECRET_FILE")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log_file(self.dir.path(), &format!("worker-{n}.log")));
        if let Some((cores, memory)) = offer {
            cmd.args(["--cores", &cores.to_string(), "--memory", memory]);
        }
        if let Some(s) = &self.secret {
            cmd.env("HEARTH_SECRET", s);
        }
        match &self.tls_ca {
            Some(ca) => cmd.env("HEARTH_TLS_CA", ca),
            None => cmd.env_remove("HEARTH_TLS_CA"),
        };
        // Reaped on drop even if it never says it is up.
        let mut worker = Proc::new(
            cmd.spawn().expect("spawn hearth worker"),
            format!("worker-{n}"),
        );
        let line = first_line(&mut worker.child, "hearth worker:", Duration::from_secs(20));
        let id = line
            .split_whitespace()
            .nth(2)
            .expect("worker id in the worker's first line")
            .to_string();
        self.workers.push((id.clone(), worker));
        id
    }

    /// Starts a worker and waits until the master lists it ALIVE.
    pub async fn add_worker(&mut self, cores: u32, memory: &str) -> String {
        let id = self.spawn_worker(cores, memory, &["--kill-grace", "1s"]);
        self.wait_worker(&id, WorkerState::Alive, Duration::from_secs(10))
            .await;
        id
    }

    /// Waits until the master lists worker `id` in `state`.
    pub async fn wait_worker(&self, id: &str, state: WorkerState, limit: Duration) -> Worker {
        let client = self.client().await;
        wait_for(&format!("{id} {}", state.name()), limit, || {
            let client = client.clone();
            async move {
                let workers = client.workers().await.ok()?;
                workers
                    .into_iter()
                    .find(|w| w.id == id && w.state == state as i32)
            }
        })
        .await
    }

    pub fn worker_proc(&mut self, id: &str) -> &mut Proc {
        &mut self
            .workers
            .iter_mut()
            .find(|(w, _)| w == id)
            .expect("known worker")
            .1
    }

    pub async fn client(&self) -> Client {
        connect(&self.url, self.secret.as_deref(), self.tls_ca.clone()).await
    }

    /// Runs the `hearth` command against this master with its secret.
    pub fn hearth(&self, args: &[&str]) -> Output {
        // None of the caller's HEARTH_* settings: only what this cluster sets counts.
        let mut cmd = hearth_testkit::process::hearth_command(Path::new(HEARTH));
        cmd.args(args).env("HEARTH_MASTER_URL", &self.url);
        if let Some(s) = &self.secret {
            cmd.env("HEARTH_SECRET", s);
        }
        match &self.tls_ca {
            Some(ca) => cmd.env("HEARTH_TLS_CA", ca),
            None => cmd.env_remove("HEARTH_TLS_CA"),
        };
        output_within(&mut cmd, CLI_LIMIT)
    }

    /// Runs `hearth submit ARGS`, which must succeed, and returns the driver id it printed.
    pub fn submit(&self, args: &[&str]) -> String {
        let mut all = vec!["submit"];
        all.extend_from_slice(args);
        let out = self.hearth(&all);
        assert!(out.status.success(), "submit {args:?}: {}", stderr(&out));
        stdout(&out)
            .lines()
            .next()
            .expect("the id on the first line")
            .to_string()
    }

    /// Submits a driver (`driver`, after `extra` options) with an application of `executors`
    /// executors running `executor_command`, 64 MiB each, driver included.
    pub fn submit_app(
        &self,
        executors: u32,
        executor_command: &str,
        extra: &[&str],
        driver: &[&str],
    ) -> String {
        let executors = executors.to_string();
        let mut args = extra.to_vec();
        args.extend([
            "--memory",
            "64m",
            "--executors",
            &executors,
            "--executor-memory",
            "64m",
            "--executor-command",
            executor_command,
            "--",
        ]);
        args.extend_from_slice(driver);
        self.submit(&args)
    }

    /// Submits a supervised driver that prints its pid and sleeps: the usual subject of the
    /// failure tests.
    pub fn submit_pid_sleeper(&self, memory: &str) -> String {
        self.submit(&[
            "--supervise",
            "--memory",
            memory,
            "--",
            "sh",
            "-c",
            "echo $$; exec sleep 300",
        ])
    }

    /// Waits until driver `id`'s stdout holds at least `n` lines that are pids, returning them.
    pub async fn wait_pids(&self, id: &str, n: usize) -> Vec<i32> {
        wait_for(
            &format!("{n} pids in the log of {id}"),
            Duration::from_secs(15),
            || {
                let logs = stdout(&self.hearth(&["logs", id]));
                let pids: Vec<i32> = logs.lines().filter_map(|l| l.trim().parse().ok()).collect();
                async move { (pids.len() >= n).then_some(pids) }
            },
        )
        .await
    }

    /// Waits until driver `id` satisfies `check`, returning it.
    pub async fn wait_driver(
        &self,
        id: &str,
        what: &str,
        limit: Duration,
        check: impl Fn(&Driver) -> bool,
    ) -> Driver {
        let client = self.client().await;
        let check = &check;
        wait_for(&format!("{id}: {what}"), limit, || {
            let client = client.clone();
            async move {
                let d = client.driver(id).await.ok()?;
                check(&d).then_some(d)
            }
        })
        .await
    }

    pub async fn wait_state(&self, id: &str, state: &str, limit: Duration) -> Driver {
        self.wait_driver(id, state, limit, |d| {
            hearth_common::state_names::driver_state(d.state).name() == state
        })
        .await
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(&self.web, path)
    }

    /// GETs `path` from the web port and parses its JSON body.
    pub fn json(&self, path: &str) -> serde_json::Value {
        json_at(&self.web, path)
    }

    /// Waits until `/api/v1/apps/{id}` satisfies `check`, returning it.
    pub async fn wait_app(
        &self,
        id: &str,
        what: &str,
        limit: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_app_at(&self.web, id, what, limit, check).await
    }

    /// The master's log, for failure messages.
    pub fn master_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("master.log")).unwrap_or_default()
    }
}

/// Starts `hearth master` on `ports` with its state under `dir` and waits for its first line.
fn spawn_master(
    dir: &Path,
    options: &MasterOptions,
    ports: (u16, u16),
    log: &str,
) -> MasterProcess {
    MasterSpawn {
        binary: HEARTH.into(),
        state_dir: dir.join("state"),
        bind: options.bind.clone(),
        ports,
        secret: options.secret.clone(),
        extra: options.extra.clone(),
        log: dir.join(log),
    }
    .start()
    .unwrap_or_else(|e| panic!("starting hearth master: {e}"))
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    Stdio::from(File::create(dir.join(name)).expect("log file"))
}

impl Drop for Cluster {
    /// Kills the workers first, then every process they started under this cluster's
    /// directory: a worker SIGKILLed leaves behind what its drivers and executors forked, and
    /// a failed test must not leave anything running.
    fn drop(&mut self) {
        for (_, worker) in &mut self.workers {
            worker.kill();
        }
        let dir = self.dir.path().to_string_lossy().into_owned();
        if let Ok(left) =
            hearth_testkit::process::processes_where_env("HEARTH_WORK_DIR", |v| v.starts_with(&dir))
        {
            for (pid, _) in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}
