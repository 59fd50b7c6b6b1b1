//! Real `hearth master` and `hearth worker` processes for the figures about them: started from
//! the `hearth` binary built beside this one, each in its own temporary directory, killed when
//! dropped.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use hearth_common::{auth::Secret, client::Client};

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
            "build", "--quiet", "--locked", "-p", "hearth", "--bin", "hearth",
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

/// Every `HEARTH_*` variable of the caller's environment is dropped, so only what a figure
/// sets counts.
fn hearth_command(binary: &Path) -> Command {
    let mut cmd = Command::new(binary);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HEARTH_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HEARTH_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    cmd
}

/// A child killed (SIGKILL) and reaped when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
        let dir = tempfile::tempdir()?;
        let log = std::fs::File::create(dir.path().join("master.log"))?;
        let mut child = hearth_command(binary)
            .args(["master", "--port", "0", "--webui-port", "0"])
            .args(["--bind", "127.0.0.1", "--state-dir"])
            .arg(dir.path().join("state"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting hearth master")?;
        let line = first_line(&mut child, "hearth master:")?;
        let proc = Proc(child);
        let url = line
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(url, _)| url.to_string())
            .ok_or_else(|| anyhow!("no URL in {line:?}"))?;
        let web = line
            .rsplit_once("://")
            .map(|(_, web)| web.trim().to_string())
            .ok_or_else(|| anyhow!("no web address in {line:?}"))?;
        Ok(Self {
            proc,
            url,
            web,
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
        let child = hearth_command(&self.binary)
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
        Ok(Proc(child))
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

/// A plain HTTP/1.1 GET; the body of a 200 answer.
pub fn http_get(host_port: &str, path: &str) -> Result<String> {
    let mut stream = std::net::TcpStream::connect(host_port)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP answer from {host_port}{path}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{host_port}{path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

fn first_line(child: &mut Child, prefix: &str) -> Result<String> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("stdout is not piped"))?;
    let (tx, rx) = mpsc::channel();
    let wanted = prefix.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.starts_with(&wanted) {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .map_err(|_| anyhow!("no line starting with {prefix:?} within 20 s"))
}

/// CPU time a process has used so far, over all its threads, in nanoseconds as the scheduler
/// counts it (`/proc/PID/task/*/schedstat`), not in 10 ms ticks. Threads that already ended
/// are left out; the master's threads live as long as it does.
pub fn cpu_time(pid: i32) -> Result<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("malformed {}", path.display()))?;
    }
    Ok(Duration::from_nanos(total))
}

/// Resident memory of a process, MiB: `VmRSS` (now) and `VmHWM` (its peak).
pub fn rss_mib(pid: i32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> Result<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .ok_or_else(|| anyhow!("{key} in /proc/{pid}/status"))
    };
    Ok((kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
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
pub async fn poll<T, F, Fut>(
    what: &str,
    every: Duration,
    limit: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(every).await;
    }
}
