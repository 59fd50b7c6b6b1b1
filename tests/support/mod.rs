//! Starts real `hearth` processes on loopback for the end-to-end tests and cleans them up.

#![allow(dead_code)]

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use hearth_common::{
    auth::Secret,
    client::Client,
    proto::{Driver, Worker, WorkerState},
    states::StateName,
};

pub const HEARTH: &str = env!("CARGO_BIN_EXE_hearth");

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads the child's stdout until a line starting with `prefix`, within `limit`.
pub fn first_line(child: &mut Child, prefix: &str, limit: Duration) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
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
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("no line starting with {prefix:?} within {limit:?}"))
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

/// A port nobody listens on now (the master binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `hearth master` on the given loopback ports with no secret in its environment.
pub fn master_command_on(state_dir: &Path, grpc_port: u16, web_port: u16) -> Command {
    master_command_bound(state_dir, "127.0.0.1", grpc_port, web_port)
}

/// `hearth master` listening on `bind`.
pub fn master_command_bound(
    state_dir: &Path,
    bind: &str,
    grpc_port: u16,
    web_port: u16,
) -> Command {
    let mut cmd = Command::new(HEARTH);
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
    .arg(state_dir)
    .env_remove("HEARTH_SECRET")
    .env_remove("HEARTH_SECRET_FILE")
    .env_remove("HEARTH_INSECURE");
    cmd
}

impl Cluster {
    pub fn start() -> Self {
        Self::start_with(MasterOptions::default())
    }

    pub fn start_with(options: MasterOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = (free_port(), free_port());
        let (child, url, web) = spawn_master(dir.path(), &options, ports, "master.log");
        Self {
            dir,
            master: Proc {
                child,
                name: "master".into(),
            },
            url,
            web,
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
        let (child, url, web) = spawn_master(
            self.dir.path(),
            &options,
            self.ports,
            &format!("master-{n}.log"),
        );
        self.master = Proc {
            child,
            name: "master".into(),
        };
        self.url = url;
        self.web = web;
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
        let mut child = cmd.spawn().expect("spawn hearth worker");
        let line = first_line(&mut child, "hearth worker:", Duration::from_secs(20));
        let id = line
            .split_whitespace()
            .nth(2)
            .expect("worker id in the worker's first line")
            .to_string();
        self.workers.push((
            id.clone(),
            Proc {
                child,
                name: format!("worker-{n}"),
            },
        ));
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
        let secret = self
            .secret
            .as_deref()
            .map(|s| Secret::new(s).expect("secret"));
        let tls = hearth_common::client::ClientTls::with_ca(self.tls_ca.clone());
        Client::connect_with(&self.url, secret.as_ref(), &tls)
            .await
            .expect("connect to the master")
    }

    /// Runs the `hearth` command against this master with its secret.
    pub fn hearth(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(HEARTH);
        cmd.args(args)
            .env("HEARTH_MASTER_URL", &self.url)
            .env_remove("HEARTH_SECRET")
            .env_remove("HEARTH_SECRET_FILE")
            .stdin(Stdio::null());
        if let Some(s) = &self.secret {
            cmd.env("HEARTH_SECRET", s);
        }
        match &self.tls_ca {
            Some(ca) => cmd.env("HEARTH_TLS_CA", ca),
            None => cmd.env_remove("HEARTH_TLS_CA"),
        };
        cmd.output().expect("run hearth")
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
            hearth_common::states::driver_state(d.state).name() == state
        })
        .await
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(&self.web, path)
    }

    /// GETs `path` from the web port and parses its JSON body.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.http_get(path);
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("JSON body")
    }

    /// Waits until `/api/v1/apps/{id}` satisfies `check`, returning it.
    pub async fn wait_app(
        &self,
        id: &str,
        what: &str,
        limit: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let check = &check;
        wait_for(&format!("{id}: {what}"), limit, || {
            let (code, body) = self.http_get(&format!("/api/v1/apps/{id}"));
            let app = (code == 200)
                .then(|| serde_json::from_str::<serde_json::Value>(&body).ok())
                .flatten()
                .filter(|a| check(a));
            async move { app }
        })
        .await
    }

    /// The master's log, for failure messages.
    pub fn master_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("master.log")).unwrap_or_default()
    }
}

/// Starts `hearth master` on `ports` with its state under `dir` and waits for its first line:
/// the child, its URL and its web address.
fn spawn_master(
    dir: &Path,
    options: &MasterOptions,
    ports: (u16, u16),
    log: &str,
) -> (std::process::Child, String, String) {
    let mut cmd = master_command_bound(&dir.join("state"), &options.bind, ports.0, ports.1);
    cmd.args(&options.extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log_file(dir, log));
    match &options.secret {
        Some(s) => {
            cmd.env("HEARTH_SECRET", s);
        }
        None => {
            cmd.arg("--insecure");
        }
    }
    let mut child = cmd.spawn().expect("spawn hearth master");
    let line = first_line(&mut child, "hearth master:", Duration::from_secs(20));
    let url = between(&line, "(", ")");
    let web = line
        .rsplit_once("web UI on ")
        .map(|(_, w)| {
            let w = w.trim();
            w.strip_prefix("https://")
                .or_else(|| w.strip_prefix("http://"))
                .unwrap_or(w)
                .to_string()
        })
        .expect("web address in the master's first line");
    (child, url, web)
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    Stdio::from(File::create(dir.join(name)).expect("log file"))
}

fn between(s: &str, open: &str, close: &str) -> String {
    let start = s.find(open).expect("opening delimiter") + open.len();
    let end = s[start..].find(close).expect("closing delimiter") + start;
    s[start..end].to_string()
}

/// Polls `probe` every 20 ms until it returns `Some`, failing the test after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP/1.1 GET: status code and body.
pub fn http_get(host_port: &str, path: &str) -> (u16, String) {
    let (status, _, body) = http_request(host_port, "GET", path, &[], "");
    (status, body)
}

/// A plain HTTP/1.1 request with extra headers and a body: status code, head and body.
pub fn http_request(
    host_port: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    try_http_request(host_port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://{host_port}{path}: {e}"))
}

/// A plain HTTP/1.1 GET that reports a refused connection instead of failing the test.
pub fn try_http_get(host_port: &str, path: &str) -> std::io::Result<(u16, String)> {
    try_http_request(host_port, "GET", path, &[], "").map(|(status, _, body)| (status, body))
}

fn try_http_request(
    host_port: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String, String)> {
    let mut stream = TcpStream::connect(host_port)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, head.to_string(), body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The live processes (not zombies) whose environment names driver `id`, with their command
/// names: every copy of that driver on this machine, whichever worker started it.
pub fn driver_processes(id: &str) -> Vec<(i32, String)> {
    let marker = format!("HEARTH_DRIVER_ID={id}\0");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !String::from_utf8_lossy(&environ).contains(&marker) || !process_alive(pid) {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        found.push((pid, comm.trim().to_string()));
    }
    found
}

/// Every method of every Hearth service, read from the protocol's own descriptor (so a new RPC
/// is covered without anyone listing it).
pub fn every_rpc() -> Vec<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(hearth_common::proto::FILE_DESCRIPTOR_SET)
        .expect("the protocol's descriptor");
    let mut paths = Vec::new();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            for method in service.method {
                paths.push(format!(
                    "/{package}.{}/{}",
                    service.name.as_deref().unwrap_or_default(),
                    method.name.unwrap_or_default()
                ));
            }
        }
    }
    paths
}

/// The pids a driver printed on its stdout (`echo $$` first thing), read through the master.
pub fn driver_pids(cluster: &Cluster, id: &str) -> Vec<i32> {
    stdout(&cluster.hearth(&["logs", id]))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
