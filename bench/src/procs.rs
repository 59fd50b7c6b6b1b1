//! Real `hearth master` and `hearth worker` processes for the figures about them: started from
//! the `hearth` binary built beside this one, each in its own temporary directory, killed when
//! dropped.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use hearth_common::{auth::Secret, client::Client};
pub use hearth_testkit::process::{Proc, cpu_time, rss_mib};
use hearth_testkit::{master::MasterSpawn, process::hearth_command};

pub const SECRET: &str = "hearth-bench-secret";

/// The `hearth` binary of this build. Under `cargo run` it is built (or brought up to date)
/// first, in the same profile as this benchmark, so the figures are of the current code.
pub fn hearth_binary() -> Result<PathBuf> {
    let dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("the benchmark's own directory"))?;
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "--locked",
            "-p",
            "hearth",
            "--bin",
            "hearth",
            "--bin",
            "hearth-keeper",
        ]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build.status().context("running cargo build for `hearth`")?;
        if !status.success() {
            bail!("cargo build of the `hearth` binary failed");
        }
    }
    let hearth = dir.join("hearth");
    if !hearth.exists() {
        bail!(
            "{} is missing: run the benchmark with `cargo run --release -p hearth-bench`, or \
             build it first with `cargo build --release --bin hearth`",
            hearth.display()
        );
    }
    Ok(hearth)
}

/// `hearth` with the benchmark's secret and none of the caller's `HEARTH_*` settings, so only
/// what a figure sets counts.
fn bench_command(binary: &Path) -> Command {
    let mut cmd = hearth_command(binary);
    cmd.env("HEARTH_SECRET", SECRET).env("RUST_LOG", "info");
    cmd
}

/// A `hearth master` on free loopback ports, its state and logs in a temporary directory.
pub struct Master {
    pub proc: Proc,
    pub url: String,
    /// host:port of the web UI.
    pub web: String,
    pub dir: tempfile::TempDir,
    binary: PathBuf,
    workers: usize,
}

impl Master {
    pub fn start(binary: &Path, extra: &[&str]) -> Result<Self> {
        Self::start_in(tempfile::tempdir()?, binary, extra)
    }

    /// A master whose state directory is `dir/state`, which may hold a state file already.
    pub fn start_in(dir: tempfile::TempDir, binary: &Path, extra: &[&str]) -> Result<Self> {
        let master = MasterSpawn {
            binary: binary.to_path_buf(),
            state_dir: dir.path().join("state"),
            bind: "127.0.0.1".into(),
            ports: (0, 0),
            secret: Some(SECRET.into()),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: dir.path().join("master.log"),
        }
        .start()
        .context("starting hearth master")?;
        Ok(Self {
            proc: master.proc,
            url: master.url,
            web: master.web,
            dir,
            binary: binary.to_path_buf(),
            workers: 0,
        })
    }

    pub async fn client(&self) -> Result<Client> {
        Ok(Client::connect(&self.url, Some(&Secret::new(SECRET)?)).await?)
    }

    /// Starts `hearth worker` offering `cores` and `memory`, named `name`; returns at once.
    pub fn spawn_worker(&mut self, name: &str, cores: u32, memory: &str) -> Result<Proc> {
        self.workers += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))?;
        let child = bench_command(&self.binary)
            .args(["worker", "--master", &self.url, "--webui-port", "0"])
            .args(["--bind", "127.0.0.1", "--host", "127.0.0.1", "--name", name])
            .args(["--cores", &cores.to_string(), "--memory", memory])
            .args(["--kill-grace", "1s", "--decommission-grace", "0s"])
            .arg("--work-dir")
            .arg(self.dir.path().join(format!("work-{}", self.workers)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting hearth worker")?;
        Ok(Proc::new(child, name))
    }

    /// The master's Prometheus metrics, as text.
    pub fn metrics(&self) -> Result<String> {
        http_get(&self.web, "/metrics")
    }
}

/// One `name value` line of Prometheus text, e.g. `hearth_drivers{state="FINISHED"}`.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A GET; the body of a 200 answer.
pub fn http_get(host_port: &str, path: &str) -> Result<String> {
    let (status, body) = hearth_testkit::http::get(host_port, path)?;
    if status != 200 {
        bail!("{host_port}{path}: HTTP {status}");
    }
    Ok(body)
}

/// Waits (polling `ListWorkers` every 2 ms, for at most 20 s) until `done` holds for the
/// master's list of workers.
pub async fn wait_workers(
    client: &Client,
    what: &str,
    done: impl Fn(&[hearth_common::proto::Worker]) -> bool,
) -> Result<()> {
    let done = &done;
    poll(
        what,
        Duration::from_millis(2),
        Duration::from_secs(20),
        || {
            let client = client.clone();
            async move {
                let workers = client.workers().await.ok()?;
                done(&workers).then_some(())
            }
        },
    )
    .await
}

/// How many of `workers` are ALIVE.
pub fn alive(workers: &[hearth_common::proto::Worker]) -> usize {
    workers
        .iter()
        .filter(|w| w.state == hearth_common::proto::WorkerState::Alive as i32)
        .count()
}

/// Whether the worker named `name` is listed in `state`.
pub fn named_in(
    workers: &[hearth_common::proto::Worker],
    name: &str,
    state: hearth_common::proto::WorkerState,
) -> bool {
    workers
        .iter()
        .any(|w| w.name == name && w.state == state as i32)
}

/// Polls `probe` every `every` until it returns `Some`, for at most `limit`.
pub async fn poll<T, F, Fut>(what: &str, every: Duration, limit: Duration, probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    Ok(hearth_testkit::wait::poll(what, every, limit, probe).await?)
}
