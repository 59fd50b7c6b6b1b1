//! The keeper: a small process between the worker and each driver or executor it runs.
//!
//! The worker starts a keeper as the leader of a new process group before it has anything for
//! it to run (`hearth-keeper __keep --spare`), so that a launch waits only for the program's own
//! start and not for a second one: the worker writes the process to run on the keeper's stdin
//! (a [`Spec`]), and the keeper starts the program in that group and waits for it, passing its
//! exit status on as its own. (`hearth __keep DEADLINE -- PROGRAM ARGS...` runs one named on
//! the command line, in the keeper's own directory and environment.) It owns the end of
//! everything in the group in the two cases the worker cannot handle itself:
//!
//! - **The worker is gone** (crashed, SIGKILLed, OOM-killed): the pipe on the keeper's stdin
//!   closes, and the keeper SIGKILLs its whole group at once, so the program's own children
//!   (`sh -c` pipelines, forked helpers) die with it instead of running on unsupervised.
//! - **The lease ends** (an `at_most_one` driver): the worker writes on that pipe, as 8-byte
//!   little-endian numbers, the `CLOCK_BOOTTIME` nanosecond until which the master has vouched
//!   for it. When that time passes without a later one, the keeper SIGKILLs the group, even if
//!   the worker itself is frozen (SIGSTOP, a stalled VM) or cut off. `u64::MAX`: no lease.
//!
//! Everything here is plain blocking system calls: the keeper must keep working when nothing
//! else on the machine is being scheduled fairly. Its own memory is under 1 MiB per process
//! (measured: 776 KiB anonymous in a release build); the binary's pages are shared by all the
//! keepers on the machine.

mod spec;

pub use spec::{Spec, SpecError};

use std::{
    ffi::OsString,
    io::Read,
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
        unix::process::{CommandExt, ExitStatusExt},
    },
    process::{Command, Stdio},
    time::Duration,
};

use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::signal::{
        SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, kill, killpg, sigaction,
        sigprocmask,
    },
    unistd::{Pid, getpgid, getpgrp, getpid, getppid, setpgid},
};

/// The argument that makes `hearth` run as a keeper.
pub const KEEP_ARG: &str = "__keep";

/// The keeper's argument (after [`KEEP_ARG`]) that makes it a spare: started before its launch,
/// it waits for the process to run as a [`Spec`] on stdin.
pub const SPARE_ARG: &str = "--spare";

/// Written in the work directory (the keeper's own) when the program cannot be started, with
/// the reason: the worker reports the process as never started rather than failed.
pub const NOT_STARTED_FILE: &str = ".hearth-not-started";

/// The keeper's exit code when the program could not be started.
pub const NOT_STARTED_CODE: i32 = 127;

/// No lease: only the worker's end stops the process.
pub const NO_LEASE: u64 = u64::MAX;

/// Nanoseconds on `CLOCK_BOOTTIME`: monotonic, shared by every process on the machine, and
/// counting time the machine spent suspended.
pub fn boottime_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(t) => (t.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec() as u64),
        Err(_) => 0,
    }
}

/// A stop signal (SIGTERM, SIGINT, SIGHUP) the keeper received; 0: none.
static RECEIVED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn remember_signal(signal: nix::libc::c_int) {
    RECEIVED.store(signal, std::sync::atomic::Ordering::Relaxed);
}

/// The signals the worker stops a process with, which the keeper outlives.
const STOP_SIGNALS: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// Runs the keeper with the arguments after [`KEEP_ARG`]; returns only on a usage error, or
/// for a spare whose worker closed the pipe before sending it a process.
pub fn run(args: &[OsString]) -> i32 {
    let spare = args.len() == 1 && args[0] == SPARE_ARG;
    let parsed = if spare { None } else { parse(args) };
    if !spare && parsed.is_none() {
        eprintln!(
            "usage: hearth {KEEP_ARG} DEADLINE_NS -- PROGRAM [ARGS...]\n       \
             hearth {KEEP_ARG} {SPARE_ARG}   (the process to run comes on stdin)"
        );
        return 2;
    }
    // The worker's SIGTERM to the group is for the program: the keeper outlives it to pass on
    // how the program ended. A stop that comes while the program is still starting must not be
    // lost (a kill right after a launch): the signals stay blocked until the program is forked,
    // the program restores their default action and unblocks them before it is executed (one
    // already sent to the group then ends it), and one that reached the keeper alone before the
    // fork is passed on to the program.
    let mut stops = SigSet::empty();
    for signal in STOP_SIGNALS {
        stops.add(signal);
    }
    let mut mask = SigSet::empty();
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&stops), Some(&mut mask));
    let handler = SigAction::new(
        SigHandler::Handler(remember_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in STOP_SIGNALS {
        // SAFETY: the handler stores one atomic integer, which is async-signal-safe.
        let _ = unsafe { sigaction(signal, &handler) };
    }
    let (deadline, program, program_args, env) = match parsed {
        Some((deadline, program, args)) => (deadline, program, args, None),
        None => match take_spec() {
            Ok(spec) => (spec.deadline, spec.program, spec.args, Some(spec.env)),
            Err(code) => return code,
        },
    };
    let keeper = getpid();
    let mut command = Command::new(&program);
    command.args(&program_args).stdin(Stdio::null());
    if let Some(env) = env {
        command.env_clear().envs(env);
    }
    // SAFETY: prctl, getppid, kill, sigaction and sigprocmask are async-signal-safe and touch
    // no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != keeper {
                let _ = kill(getpid(), Signal::SIGKILL);
            }
            let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            for signal in STOP_SIGNALS {
                sigaction(signal, &default).map_err(std::io::Error::from)?;
            }
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None)
                .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let why = format!("cannot start {:?}: {e}", program.to_string_lossy());
            eprintln!("hearth: {why}");
            let _ = std::fs::write(NOT_STARTED_FILE, why);
            return NOT_STARTED_CODE;
        }
    };
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None);
    let before_fork = RECEIVED.swap(0, std::sync::atomic::Ordering::Relaxed);
    if let Ok(signal) = Signal::try_from(before_fork) {
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
    }
    let pidfd = pidfd_open(child.id());
    let mut lease = Lease {
        deadline,
        partial: Vec::new(),
        open: true,
    };
    // Read unbuffered: a buffer would hold lease numbers that `poll` on the pipe cannot see.
    // SAFETY: descriptor 0 is the worker's pipe, open for the keeper's whole life; it is
    // never closed here (ManuallyDrop).
    let mut stdin = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
    loop {
        let now = boottime_ns();
        if now >= lease.deadline {
            end_group("its lease from the master ended: no word from the master in time");
        }
        let wait_ms = if lease.deadline == NO_LEASE {
            None
        } else {
            Some((lease.deadline - now).div_ceil(1_000_000))
        };
        // Without a pidfd (kernels before 5.3) the child is looked at every 100 ms.
        let wait_ms = match (&pidfd, wait_ms) {
            (Some(_), w) => w,
            (None, w) => Some(w.map_or(100, |w| w.min(100))),
        };
        let timeout = wait_ms.map_or(PollTimeout::NONE, |ms| {
            PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
        });
        let stdin_fd = std::io::stdin();
        let mut fds = Vec::with_capacity(2);
        if lease.open {
            fds.push(PollFd::new(stdin_fd.as_fd(), PollFlags::POLLIN));
        }
        if let Some(pidfd) = &pidfd {
            fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("hearth: keeper cannot wait: {e}");
                end_group("the keeper failed");
            }
        }
        let input_ready = lease.open
            && fds.first().and_then(|f| f.revents()).is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            });
        drop(fds);
        if input_ready && !lease.read(&mut *stdin) {
            end_group("its worker is gone");
        }
        if let Ok(Some(status)) = child.try_wait() {
            // What the program left running goes with it now, not when the worker gets to it:
            // a frozen worker could not, and the lease covers them too.
            kill_rest_of_group();
            pass_on(status);
        }
    }
}

/// A spare waits here for the process to run, then takes on its directory and log files as its
/// own working directory, stdout and stderr (the keeper's own last words go to the process's
/// log, as for a keeper started for it). Err: the code to exit with.
fn take_spec() -> Result<Spec, i32> {
    // SAFETY: descriptor 0 is the worker's pipe, open for the keeper's whole life; it is never
    // closed here (ManuallyDrop). Read unbuffered: the lease numbers after the message are the
    // loop's to read.
    let mut stdin = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
    let spec = match Spec::read_from(&mut *stdin) {
        Ok(spec) => spec,
        // Not needed after all (the worker is leaving, or gone): nothing was started.
        Err(SpecError::Closed) => return Err(0),
        Err(e) => {
            eprintln!("hearth: keeper: {e}");
            return Err(2);
        }
    };
    let not_started = |why: String| {
        eprintln!("hearth: {why}");
        let _ = std::fs::write(spec.dir.join(NOT_STARTED_FILE), why);
        NOT_STARTED_CODE
    };
    if let Err(e) = std::env::set_current_dir(&spec.dir) {
        return Err(not_started(format!(
            "cannot enter {}: {e}",
            spec.dir.display()
        )));
    }
    for (path, fd) in [(&spec.stdout, 1), (&spec.stderr, 2)] {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        let file = match file {
            Ok(file) => file,
            Err(e) => return Err(not_started(format!("cannot open {}: {e}", path.display()))),
        };
        // SAFETY: dup2 onto 1 or 2 replaces the keeper's /dev/null there; `file` stays valid
        // until it is dropped after the call.
        if unsafe { nix::libc::dup2(file.as_raw_fd(), fd) } < 0 {
            let e = std::io::Error::last_os_error();
            return Err(not_started(format!("cannot open {}: {e}", path.display())));
        }
    }
    Ok(spec)
}

/// DEADLINE -- PROGRAM ARGS...
fn parse(args: &[OsString]) -> Option<(u64, OsString, Vec<OsString>)> {
    let deadline = args.first()?.to_str()?.parse().ok()?;
    if args.get(1)?.to_str()? != "--" {
        return None;
    }
    let program = args.get(2)?.clone();
    Some((deadline, program, args.get(3..)?.to_vec()))
}

struct Lease {
    deadline: u64,
    /// Bytes of a number not yet all read.
    partial: Vec<u8>,
    /// False once the worker's end closed.
    open: bool,
}

impl Lease {
    /// Reads what the worker wrote; false when its end is closed.
    fn read(&mut self, input: &mut impl Read) -> bool {
        let mut buf = [0u8; 512];
        match input.read(&mut buf) {
            Ok(0) => {
                self.open = false;
                false
            }
            Ok(n) => {
                self.partial.extend_from_slice(&buf[..n]);
                let whole = self.partial.len() / 8 * 8;
                for chunk in self.partial[..whole].chunks_exact(8) {
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(chunk);
                    // Later leases never end sooner: a stale number changes nothing.
                    self.deadline = self.deadline.max(u64::from_le_bytes(bytes));
                }
                self.partial.drain(..whole);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
            Err(_) => {
                self.open = false;
                false
            }
        }
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::c_int, 0) };
    // SAFETY: a non-negative return is a descriptor this process now owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// SIGKILLs every other live process of the keeper's group.
///
/// The keeper first leaves the group for its parent's (the worker's, in the same session), so
/// one signal to the group reaches all of them and not the keeper, and a process forking as it
/// comes leaves no child behind (the kernel does not let a fork finish while a signal to its
/// group is pending). Only where that group cannot be joined (the worker gone) are the
/// group's members looked for in `/proc`, which costs a read per process on the machine.
fn kill_rest_of_group() {
    let group = getpgrp();
    let joined = getpgid(Some(getppid()))
        .is_ok_and(|parents| parents != group && setpgid(Pid::from_raw(0), parents).is_ok());
    if joined {
        let _ = killpg(group, Signal::SIGKILL);
        return;
    }
    let (me, group) = (getpid().as_raw(), group.as_raw());
    // A process forking while it is killed leaves a child: look again until none is left.
    for _ in 0..5 {
        let mut found = false;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // After the command name (in parentheses): state, parent, process group.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
            if pgrp == Some(group) && state != Some("Z") {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                found = true;
            }
        }
        if !found {
            return;
        }
    }
}

/// SIGKILLs the whole group, the keeper with it.
fn end_group(why: &str) -> ! {
    eprintln!("hearth: stopping this process and everything it started: {why}");
    let _ = killpg(getpgrp(), Signal::SIGKILL);
    // Not reached: the keeper is in the group.
    std::process::exit(137)
}

/// Ends the keeper the way the program ended, so the worker reads the program's status.
fn pass_on(status: std::process::ExitStatus) -> ! {
    if let Some(code) = status.code() {
        std::process::exit(code);
    }
    if let Some(signal) = status.signal().and_then(|s| Signal::try_from(s).ok()) {
        // No core file of the keeper for a program that dumped one.
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        // SAFETY: restoring the default action installs no code.
        let _ = unsafe { sigaction(signal, &default) };
        let mut set = SigSet::empty();
        set.add(signal);
        let _ = set.thread_unblock();
        let _ = kill(getpid(), signal);
        std::thread::sleep(Duration::from_millis(100));
        std::process::exit(128 + signal as i32);
    }
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_numbers_arrive_in_pieces_and_only_extend() {
        let mut lease = Lease {
            deadline: 100,
            partial: Vec::new(),
            open: true,
        };
        let mut bytes = 500u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&50u64.to_le_bytes());
        let (first, rest) = bytes.split_at(5);
        assert!(lease.read(&mut &first[..]));
        assert_eq!(lease.deadline, 100, "half a number changes nothing");
        assert!(lease.read(&mut &rest[..]));
        assert_eq!(lease.deadline, 500, "the stale 50 does not shorten it");
        assert!(
            !lease.read(&mut &[][..]),
            "a closed pipe is the worker gone"
        );
    }

    #[test]
    fn arguments_need_the_separator() {
        let args: Vec<OsString> = ["12", "--", "sleep", "1"].iter().map(Into::into).collect();
        let (deadline, program, rest) = parse(&args).expect("parses");
        assert_eq!(
            (deadline, program.to_str(), rest.len()),
            (12, Some("sleep"), 1)
        );
        let bad: Vec<OsString> = ["12", "sleep"].iter().map(Into::into).collect();
        assert!(parse(&bad).is_none());
    }
}
