//! The end-to-end tests' harness: real `hearth` processes on loopback (a [`Cluster`]), plain
//! HTTP to their web ports, `/proc` readings, and waiting for conditions. The pieces shared
//! with `hearth-bench` live in the `hearth-testkit` crate; these wrappers turn its errors into
//! test failures.
//!
//! - [`cluster`]: a master and workers as processes, the `hearth` command run against them.
//! - [`http`]: GETs and requests answered with status, head and body.
//! - [`rpc`]: every RPC of the protocol, read from its descriptor.

// Each test binary uses a part of the harness.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod http;
pub mod rpc;

use std::{
    process::{Child, Command, Output},
    time::Duration,
};

pub use cluster::{
    Cluster, MasterOptions, master_command, master_command_bound, master_command_on,
};
pub use hearth_testkit::process::{Proc, process_alive};
pub use http::{http_get, http_request, try_http_get};
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

/// The pids a driver printed on its stdout (`echo $$` first thing), read through the master.
pub fn driver_pids(cluster: &Cluster, id: &str) -> Vec<i32> {
    stdout(&cluster.hearth(&["logs", id]))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
