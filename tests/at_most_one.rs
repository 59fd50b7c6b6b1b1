//! `--at-most-one`: a supervised driver never runs in two places at once, whatever happens to
//! its worker, and every process's keeper ends what the process started when its worker dies.
//!
//! Each copy of a driver appends a nanosecond timestamp to a file of its attempt every 50 ms;
//! the copies' intervals (first to last timestamp) must never overlap.

mod support;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hearth_common::{proto::WorkerState, state_names::StateName, state_names::driver_state};
use nix::sys::signal::{Signal, kill};
use support::{Cluster, ticks};

const LIMIT: Duration = Duration::from_secs(30);

/// A driver that writes a timestamp into `dir/<tag>-<attempt>` every 50 ms, forever.
fn ticking(tag: &str, dir: &Path) -> Vec<String> {
    vec![
        "--env".into(),
        format!("TICKS={}", dir.display()),
        "--memory".into(),
        "64m".into(),
        "--".into(),
        "sh".into(),
        "-c".into(),
        ticks::script(tag),
    ]
}

async fn running_attempt(cluster: &Cluster, id: &str, attempt: u32) -> String {
    cluster
        .wait_driver(id, &format!("attempt {attempt} running"), LIMIT, |d| {
            d.attempt == attempt && driver_state(d.state).name() == "RUNNING"
        })
        .await
        .worker_id
}

/// Every process this cluster's workers started (by the work directory in their environment,
/// so another test's drivers never count), keepers left out.
fn cluster_processes(cluster: &Cluster) -> Vec<(i32, String)> {
    let dir = cluster.dir.path().to_string_lossy().into_owned();
    hearth_testkit::process::processes_where_env("HEARTH_WORK_DIR", |v| v.starts_with(&dir))
        .expect("reading /proc")
}

fn submit(cluster: &Cluster, flags: &[&str], tag: &str, dir: &Path) -> String {
    let mut args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    args.extend(ticking(tag, dir));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cluster.submit(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_workers_at_most_one_driver_is_stopped_before_it_runs_elsewhere() {
    let ticks = tempfile::tempdir().expect("tempdir");
    let dir: PathBuf = ticks.path().to_path_buf();
    let mut cluster = Cluster::start_with(support::MasterOptions {
        extra: vec!["--worker-timeout".into(), "2s".into()],
        ..Default::default()
    });
    let frozen = cluster.add_worker(2, "512m").await;
    // Beside it, a plain supervised driver: the same freeze gives it two copies at once, so the
    // check below can tell.
    let once = submit(&cluster, &["--supervise", "--at-most-one"], "once", &dir);
    let plain = submit(&cluster, &["--supervise"], "plain", &dir);
    assert_eq!(running_attempt(&cluster, &once, 1).await, frozen);
    assert_eq!(running_attempt(&cluster, &plain, 1).await, frozen);
    let status = cluster.hearth(&["status", &once]);
    assert!(
        support::stdout(&status).contains("at-most-one"),
        "{}",
        support::stdout(&status)
    );
    support::wait_for("both ticking", LIMIT, || {
        let d = dir.clone();
        async move {
            (ticks::last(&d, "once", 1).is_some() && ticks::last(&d, "plain", 1).is_some())
                .then_some(())
        }
    })
    .await;
    let spare = cluster.add_worker(2, "512m").await;

    let worker_pid = nix::unistd::Pid::from_raw(cluster.worker_proc(&frozen).pid());
    kill(worker_pid, Signal::SIGSTOP).expect("SIGSTOP the worker");
    let stopped = Instant::now();
    assert_eq!(running_attempt(&cluster, &plain, 2).await, spare);
    let plain_moved = stopped.elapsed();
    assert_eq!(running_attempt(&cluster, &once, 2).await, spare);
    let once_moved = stopped.elapsed();
    eprintln!("relaunched after the freeze: plain {plain_moved:?}, at-most-one {once_moved:?}");

    // Still frozen: the at-most-one copy was stopped by its keeper, the plain one runs on.
    let once_last = ticks::last(&dir, "once", 1).expect("ticks of the first copy");
    let plain_last = ticks::last(&dir, "plain", 1).expect("ticks of the first copy");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        ticks::last(&dir, "once", 1),
        Some(once_last),
        "the at-most-one copy on the frozen worker still runs"
    );
    assert_ne!(ticks::last(&dir, "plain", 1), Some(plain_last));

    kill(worker_pid, Signal::SIGCONT).expect("SIGCONT the worker");
    cluster
        .wait_worker(&frozen, WorkerState::Alive, LIMIT)
        .await;
    support::wait_for("the plain copy fenced", LIMIT, || {
        let d = dir.clone();
        async move {
            let before = ticks::last(&d, "plain", 1);
            tokio::time::sleep(Duration::from_millis(300)).await;
            (ticks::last(&d, "plain", 1) == before).then_some(())
        }
    })
    .await;

    let once_copies = ticks::intervals(&dir, "once");
    let plain_copies = ticks::intervals(&dir, "plain");
    assert_eq!(once_copies.len(), 2, "{once_copies:?}");
    assert!(
        !ticks::overlaps(&once_copies),
        "at-most-one copies overlap: {once_copies:?}"
    );
    assert!(
        ticks::overlaps(&plain_copies),
        "the plain driver's copies should have overlapped (else this test proves nothing): {plain_copies:?}"
    );
    // The price: it waits for the lease (2 s) and a margin beyond the loss being noticed.
    assert!(
        once_moved > plain_moved,
        "{once_moved:?} vs {plain_moved:?}"
    );
    let d = cluster
        .client()
        .await
        .driver(&once)
        .await
        .expect("the driver");
    assert_eq!((d.attempt, d.worker_id.as_str()), (2, spare.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_processes_and_their_children_are_gone_at_once() {
    let mut cluster = Cluster::start_with(support::MasterOptions {
        extra: vec!["--worker-timeout".into(), "2s".into()],
        ..Default::default()
    });
    let doomed = cluster.add_worker(2, "512m").await;
    // Two background children and a grandchild of a shell: none of them is the worker's child.
    let script = "sleep 1000 & (sleep 1000 & wait) & echo started; wait";
    let once = cluster.submit(&[
        "--supervise",
        "--at-most-one",
        "--memory",
        "64m",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let plain = cluster.submit(&["--memory", "64m", "--", "sh", "-c", script]);
    for id in [&once, &plain] {
        cluster.wait_state(id, "RUNNING", LIMIT).await;
    }
    support::wait_for("all eight processes", LIMIT, || {
        let n = cluster_processes(&cluster).len();
        async move { (n >= 8).then_some(()) }
    })
    .await;
    let before = cluster_processes(&cluster);

    cluster.worker_proc(&doomed).kill();
    let killed = Instant::now();
    // Within the lease (2 s), and in fact at once: the keepers see their worker gone.
    let deadline = killed + Duration::from_secs(2);
    loop {
        let left = cluster_processes(&cluster);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running {:?} after the worker was killed (were {before:?})",
            left
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "all {} processes gone {:?} after the worker's SIGKILL",
        before.len(),
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_one_needs_supervise() {
    let cluster = Cluster::start();
    let out = cluster.hearth(&["submit", "--at-most-one", "--", "true"]);
    assert!(!out.status.success());
    let err = support::stderr(&out);
    assert!(
        err.contains("at_most_one") && err.contains("supervise"),
        "{err}"
    );
}

/// A worker started from a build with `hearth-keeper` beside `hearth` keeps each process with
/// that small binary (it starts in a fraction of the time), and the keeper runs the driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_is_kept_by_the_keeper_binary_beside_the_worker() {
    let ticks = tempfile::tempdir().expect("tempdir");
    let dir: PathBuf = ticks.path().to_path_buf();
    let mut cluster = Cluster::start();
    let worker = cluster.add_worker(1, "256m").await;
    let id = submit(&cluster, &[], "kept", &dir);
    assert_eq!(running_attempt(&cluster, &id, 1).await, worker);
    support::wait_for("ticking", LIMIT, || {
        let d = dir.clone();
        async move { ticks::last(&d, "kept", 1).is_some().then_some(()) }
    })
    .await;
    let parent_of = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The parent's pid is the second field after the parenthesised command name.
        stat.rsplit_once(") ")?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    // The top of the driver's tree: its parent is not one of the cluster's processes.
    let processes = cluster_processes(&cluster);
    let pids: Vec<i32> = processes.iter().map(|(pid, _)| *pid).collect();
    let parent = pids
        .iter()
        .filter_map(|&pid| parent_of(pid))
        .find(|parent| !pids.contains(parent))
        .expect("the driver's parent");
    let keeper = std::fs::read_link(format!("/proc/{parent}/exe")).expect("the keeper's binary");
    assert_eq!(
        keeper.file_name().and_then(|n| n.to_str()),
        Some("hearth-keeper"),
        "kept by {}",
        keeper.display()
    );
    assert_eq!(
        keeper.parent(),
        std::path::Path::new(support::HEARTH).parent(),
        "beside the worker's binary"
    );
}

/// A stop sent to a process's group while its keeper is still starting it (a kill right after a
/// launch) ends the process at once: the signal is neither ignored with the keeper's own
/// disposition nor lost between the keeper's fork and the program's exec.
#[test]
fn a_stop_sent_as_the_keeper_starts_its_program_ends_it_at_once() {
    use std::os::unix::process::CommandExt;
    let keeper = env!("CARGO_BIN_EXE_hearth-keeper");
    for round in 0..30 {
        let (read, write) = nix::unistd::pipe().expect("pipe");
        let mut child = std::process::Command::new(keeper)
            .args(["__keep", &u64::MAX.to_string(), "--", "sleep", "5"])
            .stdin(std::process::Stdio::from(read))
            .process_group(0)
            .spawn()
            .expect("start the keeper");
        let group = nix::unistd::Pid::from_raw(child.id() as i32);
        // Spread over the keeper's start: at once, or a little later.
        std::thread::sleep(Duration::from_micros(round * 50));
        nix::sys::signal::killpg(group, Signal::SIGTERM).expect("SIGTERM the group");
        let t0 = Instant::now();
        let ended = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if t0.elapsed() > Duration::from_secs(2) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        drop(write);
        if ended.is_none() {
            let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
            let _ = child.wait();
        }
        assert!(
            ended.is_some(),
            "round {round}: the program outlived a SIGTERM sent as it started"
        );
    }
}

/// What a program leaves running in its group ends as the program does, by the keeper's own
/// hand while its worker lives (a frozen worker would not get to it), and the keeper passes on
/// how the program ended.
#[test]
fn what_a_program_leaves_running_ends_with_it_and_its_exit_code_is_passed_on() {
    use std::os::unix::process::CommandExt;
    let keeper = env!("CARGO_BIN_EXE_hearth-keeper");
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("left");
    let script = format!(
        "sleep 1000 & echo $! >> {f}; (sleep 1000 & echo $! >> {f}) & wait $!; exit 3",
        f = pid_file.display()
    );
    // The worker's end of the pipe stays open: the worker lives, it only does nothing.
    let (read, write) = nix::unistd::pipe().expect("pipe");
    let mut child = std::process::Command::new(keeper)
        .args(["__keep", &u64::MAX.to_string(), "--", "sh", "-c", &script])
        .stdin(std::process::Stdio::from(read))
        .process_group(0)
        .spawn()
        .expect("start the keeper");
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let status = child.wait().expect("wait for the keeper");
    assert_eq!(status.code(), Some(3), "the program's exit code");
    let left: Vec<i32> = std::fs::read_to_string(&pid_file)
        .expect("the pids the program wrote")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(left.len(), 2, "two background processes: {left:?}");
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while left.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let survivors: Vec<i32> = left.iter().copied().filter(|&p| alive(p)).collect();
    // Whatever the assertion finds, nothing of this test outlives it.
    let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
    drop(write);
    assert!(
        survivors.is_empty(),
        "still running after their program ended: {survivors:?}"
    );
}

/// The keepers waiting, as spares, for the next launch of the worker with this pid.
fn spare_keepers(worker: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            if args.get(1..3) != Some(&[b"__keep".as_slice(), b"--spare".as_slice()][..]) {
                return None;
            }
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let parent = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            (parent.parse::<i32>().ok()? == worker && hearth_testkit::process::process_alive(pid))
                .then_some(pid)
        })
        .collect()
}

/// The spare process directories in a worker's work directory.
fn spare_dirs(work_dir: &Path) -> Vec<String> {
    std::fs::read_dir(work_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| name.starts_with(".spare-"))
                .collect()
        })
        .unwrap_or_default()
}

/// A worker starts each process's keeper, and makes its directory, ahead of the launch. The
/// spare keeper holds none of the worker's own settings, becomes the next process's keeper
/// (its output lands in the process's own files), is replaced after each launch, and ends with
/// its worker; a spare directory a killed worker left is removed by the next worker there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_spare_keeper_runs_the_next_process_and_goes_with_the_worker() {
    let mut cluster = Cluster::start();
    let worker = cluster.add_worker(2, "512m").await;
    let work_dir = cluster.dir.path().join("work-0");
    let pid = cluster.worker_proc(&worker).pid();
    let spare = support::wait_for("the worker's spare keeper", LIMIT, || async move {
        spare_keepers(pid).first().copied()
    })
    .await;
    let environ = std::fs::read(format!("/proc/{spare}/environ")).expect("the spare's environment");
    assert!(
        !environ
            .split(|&b| b == 0)
            .any(|var| var.starts_with(b"HEARTH_")),
        "the spare keeper holds none of the worker's HEARTH_* settings"
    );
    let first_dir = spare_dirs(&work_dir);
    assert_eq!(first_dir.len(), 1, "one spare directory");

    let id = cluster.submit(&[
        "--memory",
        "64m",
        "--",
        "sh",
        "-c",
        "echo \"to stdout in $PWD\"; echo to stderr >&2",
    ]);
    cluster.wait_state(&id, "FINISHED", LIMIT).await;
    let dir = work_dir.join(&id);
    assert_eq!(
        std::fs::read_to_string(dir.join("stdout")).expect("stdout"),
        format!("to stdout in {}\n", dir.display())
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("stderr")).expect("stderr"),
        "to stderr\n"
    );
    assert!(
        !hearth_testkit::process::process_alive(spare),
        "the spare became the driver's keeper and ended with it"
    );
    let next = support::wait_for("a new spare keeper", LIMIT, || async move {
        spare_keepers(pid).first().copied()
    })
    .await;
    assert_ne!(next, spare);
    let next_dir = spare_dirs(&work_dir);
    assert!(
        next_dir.len() == 1 && next_dir != first_dir,
        "the first spare directory became the driver's and a new one was made: {first_dir:?} then {next_dir:?}"
    );

    cluster.worker_proc(&worker).kill();
    support::wait_for(
        "the spare keeper gone with its worker",
        LIMIT,
        || async move { (!hearth_testkit::process::process_alive(next)).then_some(()) },
    )
    .await;
    let left = spare_dirs(&work_dir);
    assert_eq!(
        left.len(),
        1,
        "a SIGKILLed worker cannot remove its spare directory"
    );

    // The next worker on that work directory removes it (here, one made to look left by a
    // worker that is gone, in the second worker's own directory).
    let second_dir = cluster.dir.path().join("work-1");
    std::fs::create_dir_all(second_dir.join(&left[0])).expect("a stale spare directory");
    let second = cluster.add_worker(2, "512m").await;
    let second_pid = cluster.worker_proc(&second).pid();
    support::wait_for("the second worker's spare keeper", LIMIT, || async move {
        spare_keepers(second_pid).first().copied()
    })
    .await;
    let now = spare_dirs(&second_dir);
    assert!(
        now.len() == 1 && now[0] != left[0],
        "the stale directory is gone and the worker's own is there: {now:?}"
    );
}
