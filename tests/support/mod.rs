//! The end-to-end tests' harness: real `hearth` processes on loopback (a [`Cluster`]), plain
//! HTTP to their web ports, `/proc` readings, and waiting for conditions. The pieces shared
//! with `hearth-bench` live in the `hearth-testkit` crate; these wrappers turn its errors into
//! test failures.
//!
//! - [`browser`]: a headless Chromium over WebDriver.
//! - [`cluster`]: a master and workers as processes, the `hearth` command run against them.
//! - [`in_process`]: a master and workers inside the test's own process, for behaviour where
//!   the process boundary is not the point.
//! - [`http`]: GETs and requests answered with status, head and body.
//! - [`images`]: the container images built by a Docker daemon of the test's own.
//! - [`rpc`]: every RPC of the protocol, read from its descriptor.
//! - [`kube`]: the single-node Kubernetes of `scripts/kube`, up for a test.
//! - [`service`]: a Service in front of two masters, routing by readiness.
//! - [`ticks`]: drivers that write when they ran, to check copies never overlapped.

// Each test binary uses a part of the harness.
#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod cluster;
pub mod http;
pub mod images;
pub mod in_process;
pub mod kube;
pub mod rpc;
pub mod service;
pub mod ticks;

use std::{
    process::{Child, Command, Output},
    time::Duration,
};

use hearth_common::{auth::Secret, client::Client};

pub use browser::Browser;
pub use cluster::{
    Cluster, MasterOptions, QueuesFile, master_command, master_command_bound, master_command_on,
};
pub use hearth_testkit::process::{Proc, process_alive};
pub use http::{http_get, http_request, try_http_get};
pub use in_process::InProcess;
pub use rpc::every_rpc;

pub const HEARTH: &str = env!("CARGO_BIN_EXE_hearth");

/// The longest any `hearth` command a test runs may take: a hung `--wait` or `logs` fails the
/// test instead of hanging the suite.
pub const CLI_LIMIT: Duration = Duration::from_secs(60);

/// Reads the child's stdout until a line starting with `prefix`, within `limit`.
pub fn first_line(child: &mut Child, prefix: &str, limit: Duration) -> String {
    hearth_testkit::process::first_line(child, prefix, limit).unwrap_or_else(|e| panic!("{e}"))
}

/// A port nobody listens on now (the master binds it right after).
pub fn free_port() -> u16 {
    hearth_testkit::master::free_port().unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `cmd` to its end, failing the test if it takes longer than `limit` (it is killed).
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    use std::process::Stdio;
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.unwrap_or_else(|e| panic!("run {cmd:?}: {e}")),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{cmd:?} did not end within {limit:?}")
        }
    }
}

/// Polls `probe` every 20 ms until it returns `Some`, failing the test after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    hearth_testkit::wait::poll(what, Duration::from_millis(20), limit, probe)
        .await
        .unwrap_or_else(|e| panic!("timed out: {e}"))
}

/// A client of the master at `url` with `secret`, trusting `tls_ca` for an `https://` URL.
pub async fn connect(
    url: &str,
    secret: Option<&str>,
    tls_ca: Option<std::path::PathBuf>,
) -> Client {
    let secret = secret.map(|s| Secret::new(s).expect("secret"));
    let tls = hearth_common::client::ClientTls::with_ca(tls_ca);
    Client::connect_with(url, secret.as_ref(), &tls)
        .await
        .expect("connect to the master")
}

/// GETs `path` from the web port `web` and parses its JSON body, which must come with a 200.
pub fn json_at(web: &str, path: &str) -> serde_json::Value {
    let (code, body) = http_get(web, path);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON body")
}

/// Waits until `/api/v1/apps/{id}` on the web port `web` satisfies `check`, returning it.
pub async fn wait_app_at(
    web: &str,
    id: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let check = &check;
    wait_for(&format!("{id}: {what}"), limit, || {
        let (code, body) = http_get(web, &format!("/api/v1/apps/{id}"));
        let app = (code == 200)
            .then(|| serde_json::from_str::<serde_json::Value>(&body).ok())
            .flatten()
            .filter(|a| check(a));
        async move { app }
    })
    .await
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The live processes (not zombies) whose environment names driver `id`, with their command
/// names: every copy of that driver on this machine, whichever worker started it. Fails the
/// test when `/proc` cannot be read, rather than answer "none".
pub fn driver_processes(id: &str) -> Vec<(i32, String)> {
    hearth_testkit::process::processes_with_env("HEARTH_DRIVER_ID", id)
        .unwrap_or_else(|e| panic!("reading the processes of {id}: {e}"))
}

/// The pids of every live copy of driver `id` on this machine (see [`driver_processes`]).
pub fn driver_copies(id: &str) -> Vec<i32> {
    driver_processes(id)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// The pids a driver printed on its stdout (`echo $$` first thing), read through the master.
pub fn driver_pids(cluster: &Cluster, id: &str) -> Vec<i32> {
    stdout(&cluster.hearth(&["logs", id]))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
