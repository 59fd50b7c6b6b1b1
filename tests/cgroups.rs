//! A worker offers its container's limits: run for real inside a cgroup v1 with a CPU quota
//! and a memory limit on this machine, and against cgroup v2 files laid out as in a pod.

mod support;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use hearth_common::proto::{Worker, WorkerState};
use support::Cluster;

const LIMIT: Duration = Duration::from_secs(15);

/// Cgroups made for one test, removed when dropped (after the processes in them are gone).
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            // A killed process can take a moment to leave its cgroup.
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// This process's cgroup in the v1 hierarchy of `controller`.
fn own_v1_cgroup(controller: &str) -> String {
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    own.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
        .next()
        .unwrap_or_else(|| panic!("this test needs the cgroup v1 {controller} controller"))
}

/// Starts `hearth worker` after `prelude` in a shell, with no offer given so it detects one,
/// and waits until the master lists it ALIVE.
async fn start_detecting_worker(cluster: &mut Cluster, prelude: &str, extra: &[&str]) -> Worker {
    let script = format!("{prelude}\nexec \"$0\" \"$@\"");
    let url = cluster.url.clone();
    let id = cluster.spawn_worker_via(&["sh", "-c", &script], &url, None, extra);
    cluster.wait_worker(&id, WorkerState::Alive, LIMIT).await
}

fn worker_log(cluster: &Cluster, n: usize) -> String {
    std::fs::read_to_string(cluster.dir.path().join(format!("worker-{n}.log"))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and a cgroup v1 hierarchy; ./scripts/test runs it, or: cargo test -- --include-ignored"]
async fn a_worker_in_a_cgroup_v1_offers_its_cpu_quota_and_memory_limit() {
    let root = Path::new("/sys/fs/cgroup");
    let name = format!("hearth-test-{}", std::process::id());
    let cpu = root
        .join("cpu")
        .join(own_v1_cgroup("cpu").trim_start_matches('/'))
        .join(&name);
    let memory = root
        .join("memory")
        .join(own_v1_cgroup("memory").trim_start_matches('/'))
        .join(&name);
    for dir in [&cpu, &memory] {
        std::fs::create_dir(dir).unwrap_or_else(|e| {
            panic!(
                "cannot create {} (this test runs as root on cgroup v1): {e}",
                dir.display()
            )
        });
    }
    let _cgroups = Cgroups(vec![cpu.clone(), memory.clone()]);
    // 1.5 CPUs (offered as 1 core: a fraction rounds down) and 300 MiB.
    std::fs::write(cpu.join("cpu.cfs_period_us"), "100000").expect("period");
    std::fs::write(cpu.join("cpu.cfs_quota_us"), "150000").expect("quota");
    std::fs::write(
        memory.join("memory.limit_in_bytes"),
        (300u64 << 20).to_string(),
    )
    .expect("memory limit");

    let mut cluster = Cluster::start();
    let prelude = format!(
        "echo $$ > {}/cgroup.procs && echo $$ > {}/cgroup.procs || exit 97",
        cpu.display(),
        memory.display()
    );
    let w = start_detecting_worker(&mut cluster, &prelude, &[]).await;
    assert_eq!((w.cores, w.memory_mb), (1, 300), "{w:?}");

    // It really ran in there, and says where its figures came from.
    let pid = cluster.workers[0].1.pid();
    let procs = std::fs::read_to_string(memory.join("cgroup.procs")).expect("procs");
    assert!(procs.lines().any(|p| p == pid.to_string()), "{procs}");
    let log = worker_log(&cluster, 0);
    assert!(log.contains("cgroup v1"), "{log}");
    assert!(log.contains("1.50 CPUs"), "{log}");

    // A driver launched there lives in the same limits.
    let driver = cluster.submit(&[
        "--memory",
        "64m",
        "--",
        "sh",
        "-c",
        "cat /proc/self/cgroup; sleep 300",
    ]);
    cluster.wait_state(&driver, "RUNNING", LIMIT).await;
    let own = support::wait_for("the driver's cgroups", LIMIT, || {
        let out = support::stdout(&cluster.hearth(&["logs", &driver]));
        async move { out.contains(":memory:").then_some(out) }
    })
    .await;
    assert!(own.contains(&name), "{own}");
    let out = cluster.hearth(&["kill", &driver]);
    assert!(out.status.success());
    cluster.wait_state(&driver, "KILLED", LIMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reads_cgroup_v2_limits_laid_out_as_in_a_pod() {
    // What a container sees on a cgroup v2 node: its own cgroup mounted as the root.
    let fixture = tempfile::tempdir().expect("temp dir");
    for (file, text) in [
        ("cgroup.controllers", "cpuset cpu io memory pids\n"),
        ("cpu.max", "100000 100000\n"),
        ("memory.max", &format!("{}\n", 768u64 << 20)),
    ] {
        std::fs::write(fixture.path().join(file), text).expect("fixture");
    }
    let mut cluster = Cluster::start();
    let root = fixture.path().display().to_string();
    let w = start_detecting_worker(&mut cluster, ":", &["--cgroup-root", &root]).await;
    assert_eq!((w.cores, w.memory_mb), (1, 768), "{w:?}");
    let log = worker_log(&cluster, 0);
    assert!(log.contains("cgroup v2"), "{log}");

    // "max" is no limit: the host's figures are offered.
    std::fs::write(fixture.path().join("cpu.max"), "max 100000\n").expect("fixture");
    std::fs::write(fixture.path().join("memory.max"), "max\n").expect("fixture");
    let w = start_detecting_worker(&mut cluster, ":", &["--cgroup-root", &root]).await;
    let host_cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    assert_eq!(w.cores, host_cores, "{w:?}");
    assert!(w.memory_mb > 768, "{w:?}");
}
