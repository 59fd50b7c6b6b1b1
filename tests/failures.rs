//! Workers that die and drivers that fail: DEAD detection, supervised relaunches, retry limits.

mod support;

use std::time::{Duration, Instant};

use hearth_common::states::{StateName, driver_state};
use support::{Cluster, stderr, stdout};

const LIMIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_is_dead_within_two_seconds_and_its_supervised_driver_runs_elsewhere() {
    let mut cluster = Cluster::start();
    let first = cluster.add_worker(2, "1g").await;
    let client = cluster.client().await;

    let out = cluster.hearth(&[
        "submit",
        "--supervise",
        "--memory",
        "128m",
        "--",
        "sleep",
        "300",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let supervised = stdout(&out).trim().to_string();
    let out = cluster.hearth(&["submit", "--memory", "128m", "--", "sleep", "300"]);
    let plain = stdout(&out).trim().to_string();
    cluster.wait_state(&supervised, "RUNNING", LIMIT).await;
    cluster.wait_state(&plain, "RUNNING", LIMIT).await;
    let second = cluster.add_worker(2, "1g").await;

    let killed_at = Instant::now();
    cluster.worker_proc(&first).kill();
    let dead_after = support::wait_for("worker DEAD", Duration::from_secs(5), || {
        let client = client.clone();
        let first = first.clone();
        async move {
            let w = client
                .workers()
                .await
                .ok()?
                .into_iter()
                .find(|w| w.id == first)?;
            (w.state == 2).then(|| killed_at.elapsed())
        }
    })
    .await;
    assert!(
        dead_after <= Duration::from_secs(2),
        "DEAD after {dead_after:?}"
    );

    let d = cluster
        .wait_driver(&supervised, "running again", LIMIT, |d| {
            d.attempt == 2 && driver_state(d.state).name() == "RUNNING"
        })
        .await;
    assert_eq!(
        d.worker_id, second,
        "relaunched on the surviving worker, same id"
    );
    let states: Vec<&str> = d
        .history
        .iter()
        .map(|h| driver_state(h.state).name())
        .collect();
    assert!(states.contains(&"RELAUNCHING"), "{states:?}");

    // The unsupervised driver is not relaunched; it says why it ended.
    let d = cluster.wait_state(&plain, "ERROR", LIMIT).await;
    assert!(d.message.contains("not supervised"), "{}", d.message);

    // The dead worker's slots are gone; the live one holds the relaunched driver.
    for w in client.workers().await.unwrap() {
        if w.id == first {
            assert_eq!((w.cores_used, w.memory_used_mb), (0, 0));
        } else {
            assert_eq!((w.cores_used, w.memory_used_mb), (1, 128));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_supervised_driver_is_relaunched_up_to_its_limit() {
    let mut cluster = Cluster::start();
    cluster.add_worker(2, "1g").await;
    let out = cluster.hearth(&[
        "submit",
        "--wait",
        "--supervise",
        "--max-retries",
        "2",
        "--memory",
        "128m",
        "--",
        "sh",
        "-c",
        "echo attempt $HEARTH_ATTEMPT; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    let d = cluster.wait_state(&id, "FAILED", LIMIT).await;
    assert_eq!(d.attempt, 3, "one launch and two relaunches");
    let relaunches = d
        .history
        .iter()
        .filter(|h| driver_state(h.state).name() == "RELAUNCHING")
        .count();
    assert_eq!(relaunches, 2);
    // Every attempt ran on the one worker and appended to the same log.
    let logs = stdout(&cluster.hearth(&["logs", &id]));
    assert_eq!(logs, "attempt 1\nattempt 2\nattempt 3\n");

    // A supervised driver that succeeds is not relaunched.
    let out = cluster.hearth(&[
        "submit",
        "--wait",
        "--supervise",
        "--memory",
        "128m",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let d = cluster
        .wait_state(stdout(&out).trim(), "FINISHED", LIMIT)
        .await;
    assert_eq!(d.attempt, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_times_out_and_reconnects_when_it_wakes() {
    // Heartbeat timeout: a stopped (SIGSTOP) worker keeps its TCP stream open, so only the
    // timeout can notice it.
    let mut cluster = Cluster::start_with(support::MasterOptions {
        extra: vec!["--worker-timeout".into(), "1s".into()],
        ..Default::default()
    });
    let id = cluster.add_worker(1, "512m").await;
    let client = cluster.client().await;
    let pid = nix::unistd::Pid::from_raw(cluster.worker_proc(&id).pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    support::wait_for("silent worker DEAD", Duration::from_secs(5), || {
        let client = client.clone();
        let id = id.clone();
        async move {
            let w = client
                .workers()
                .await
                .ok()?
                .into_iter()
                .find(|w| w.id == id)?;
            (w.state == 2).then_some(())
        }
    })
    .await;
    let noticed = stopped.elapsed();
    assert!(noticed >= Duration::from_millis(900), "{noticed:?}");
    assert!(noticed <= Duration::from_secs(3), "{noticed:?}");

    // Woken up, it reconnects on its own and is ALIVE again under the same id.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    support::wait_for("worker ALIVE again", LIMIT, || {
        let client = client.clone();
        let id = id.clone();
        async move {
            let w = client
                .workers()
                .await
                .ok()?
                .into_iter()
                .find(|w| w.id == id)?;
            (w.state == 1).then_some(())
        }
    })
    .await;
}
