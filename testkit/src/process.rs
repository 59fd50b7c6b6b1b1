//! Child processes reaped when dropped, the line a `hearth` process prints once it is up, and
//! readings of `/proc`.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::{Error, Result};

/// A child process killed (SIGKILL) and reaped when dropped, so a failing test leaves nothing
/// running.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    /// What it is, for messages (`master`, `worker-2`).
    pub name: String,
}

impl Proc {
    pub fn new(child: Child, name: impl Into<String>) -> Self {
        Self {
            child,
            name: name.into(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: Signal) {
        // The process may have ended already; then there is nothing to signal.
        let _ = nix::sys::signal::kill(Pid::from_raw(self.pid()), signal);
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
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

/// `binary` with every `HEARTH_*` variable of the caller's environment removed, so only what
/// the caller sets counts, and stdin closed.
pub fn hearth_command(binary: &Path) -> Command {
    let mut cmd = Command::new(binary);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HEARTH_") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Reads the child's stdout until a line starting with `prefix`, within `limit`. The rest of
/// its stdout keeps being read (and dropped), so the child never blocks on a full pipe.
pub fn first_line(child: &mut Child, prefix: &str, limit: Duration) -> Result<String> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Unexpected("the child's stdout is not piped".into()))?;
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
    rx.recv_timeout(limit).map_err(|_| Error::Timeout {
        what: format!("a line starting with {prefix:?}"),
        limit,
    })
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

/// A worker's keeper (`hearth __keep ...`) shares its process's environment but is not a copy
/// of it.
fn is_keeper(proc_dir: &std::path::Path) -> bool {
    std::fs::read(proc_dir.join("cmdline"))
        .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).nth(1) == Some(b"__keep".as_slice()))
}

/// The live processes (not zombies) whose environment holds `NAME=value`, with their command
/// names: every copy of a driver (`HEARTH_DRIVER_ID=...`) on this machine, whichever worker
/// started it; keepers are left out. Fails when `/proc` cannot be listed or no process's environment can be read
/// (not root, `hidepid`): an empty answer then would make every "no copy left" check pass.
pub fn processes_with_env(name: &str, value: &str) -> Result<Vec<(i32, String)>> {
    processes_where_env(name, |v| v == value)
}

/// The live processes whose environment holds `NAME=value` with `value` accepted by `wanted`:
/// for example every process a test's workers started under its own directory
/// (`HEARTH_WORK_DIR`). Fails as [`processes_with_env`] does when nothing can be read.
pub fn processes_where_env(
    name: &str,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<(i32, String)>> {
    let prefix = format!("{name}=");
    let mut found = Vec::new();
    let mut readable = 0usize;
    for entry in std::fs::read_dir("/proc").map_err(Error::io("listing /proc"))? {
        let entry = entry.map_err(Error::io("listing /proc"))?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // A process may end between the listing and the read.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        readable += 1;
        let matches = environ
            .split(|&b| b == 0)
            .filter_map(|var| var.strip_prefix(prefix.as_bytes()))
            .any(|value| std::str::from_utf8(value).is_ok_and(&wanted));
        if !matches || !process_alive(pid) || is_keeper(&entry.path()) {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        found.push((pid, comm.trim().to_string()));
    }
    if readable == 0 {
        return Err(Error::Unexpected(
            "no process's /proc/PID/environ is readable: cannot tell which processes run".into(),
        ));
    }
    Ok(found)
}

/// CPU time a process has used so far, over all its threads, in nanoseconds as the scheduler
/// counts it (`/proc/PID/task/*/schedstat`), not in 10 ms ticks. Threads that already ended
/// are left out; the master's threads live as long as it does.
pub fn cpu_time(pid: i32) -> Result<Duration> {
    let mut total = 0u64;
    let tasks = format!("/proc/{pid}/task");
    for task in std::fs::read_dir(&tasks).map_err(Error::io(tasks.clone()))? {
        let path = task
            .map_err(Error::io(tasks.clone()))?
            .path()
            .join("schedstat");
        // A thread may end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .ok_or_else(|| Error::Unexpected(format!("malformed {}", path.display())))?;
    }
    Ok(Duration::from_nanos(total))
}

/// Resident memory of a process, MiB: `VmRSS` (now) and `VmHWM` (its peak).
pub fn rss_mib(pid: i32) -> Result<(f64, f64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(Error::io(path.clone()))?;
    let kib = |key: &str| -> Result<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .ok_or_else(|| Error::Unexpected(format!("no {key} in {path}")))
    };
    Ok((kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
}
