//! `kubectl scale` with real processes: new workers register by themselves, and a worker given
//! SIGTERM decommissions: nothing new lands on it, running drivers get the grace period to
//! finish, the rest are killed and relaunched elsewhere, and it exits 0.

mod support;

use std::time::{Duration, Instant};

use hearth_common::{proto::WorkerState, state_names::StateName, state_names::driver_state};
use support::Cluster;

const LIMIT: Duration = Duration::from_secs(15);

fn sigterm(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_down_decommissions_a_worker_within_its_grace_and_loses_nothing() {
    let mut cluster = Cluster::start();
    let grace = Duration::from_secs(4);
    let kill_grace = Duration::from_secs(1);
    let leaving = cluster.spawn_worker(
        4,
        "2g",
        &["--kill-grace", "1s", "--decommission-grace", "4s"],
    );
    cluster
        .wait_worker(&leaving, WorkerState::Alive, LIMIT)
        .await;

    // One driver that will finish during the grace (when the flag file appears), one that
    // would run for ever.
    let flag = cluster.dir.path().join("finish-now");
    let finishing = cluster.submit(&[
        "--supervise",
        "--memory",
        "64m",
        "--env",
        &format!("FLAG={}", flag.display()),
        "--",
        "sh",
        "-c",
        "echo $$; while [ ! -e \"$FLAG\" ]; do sleep 0.05; done; echo finished",
    ]);
    let endless = cluster.submit_pid_sleeper("64m");
    for id in [&finishing, &endless] {
        let d = cluster.wait_state(id, "RUNNING", LIMIT).await;
        assert_eq!(d.worker_id, leaving);
    }
    let endless_pid = cluster.wait_pids(&endless, 1).await[0];

    // Scale up: new replicas need nothing but to start.
    let up_a = cluster.add_worker(2, "1g").await;
    let up_b = cluster.add_worker(2, "1g").await;

    // Scale down: the pod gets SIGTERM.
    let signalled = Instant::now();
    sigterm(cluster.worker_proc(&leaving).pid());
    cluster
        .wait_worker(&leaving, WorkerState::Decommissioned, LIMIT)
        .await;

    // Nothing new is placed on a leaving worker, though it has free cores.
    let newcomer = cluster.submit(&["--memory", "64m", "--", "sh", "-c", "exec sleep 300"]);
    let d = cluster.wait_state(&newcomer, "RUNNING", LIMIT).await;
    assert!(
        d.worker_id == up_a || d.worker_id == up_b,
        "placed on {}",
        d.worker_id
    );

    // Within the grace, running work goes on, and what finishes is reported as usual.
    assert!(
        support::process_alive(endless_pid),
        "still running in the grace"
    );
    std::fs::write(&flag, b"").expect("write the flag");
    let done = cluster.wait_state(&finishing, "FINISHED", LIMIT).await;
    assert_eq!(
        (done.attempt, done.worker_id.as_str()),
        (1, leaving.as_str())
    );
    assert!(
        support::stdout(&cluster.hearth(&["logs", &finishing])).contains("finished"),
        "its log is still readable"
    );

    // After the grace the rest is killed, and the worker exits 0 in time.
    let status = {
        let proc = cluster.worker_proc(&leaving);
        support::wait_for("the worker to exit", grace + kill_grace + LIMIT, || {
            let exited = proc.child.try_wait().ok().flatten();
            async move { exited }
        })
        .await
    };
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= grace,
        "exited after {took:?}, before the grace of {grace:?}"
    );
    assert!(
        took <= grace + kill_grace + Duration::from_secs(3),
        "exited after {took:?}"
    );
    assert!(
        !support::process_alive(endless_pid),
        "no process outlives its worker"
    );

    // The supervised driver runs again elsewhere, once.
    let moved = cluster
        .wait_driver(&endless, "relaunched elsewhere", LIMIT, |d| {
            d.attempt == 2 && driver_state(d.state).name() == "RUNNING"
        })
        .await;
    assert!(moved.worker_id == up_a || moved.worker_id == up_b);
    assert!(
        moved.history.iter().any(|h| h.message.contains("stopping")),
        "{:?}",
        moved.history
    );

    // Nothing lost and everything accounted: three drivers, two running on the new workers.
    let client = cluster.client().await;
    let drivers = client.drivers().await.expect("list drivers");
    assert_eq!(drivers.len(), 3, "{drivers:?}");
    let workers = client.workers().await.expect("list workers");
    let gone = workers.iter().find(|w| w.id == leaving).expect("listed");
    assert_eq!(gone.state, WorkerState::Decommissioned as i32);
    assert_eq!((gone.cores_used, gone.memory_used_mb), (0, 0));
    let used: u32 = workers
        .iter()
        .filter(|w| w.state == WorkerState::Alive as i32)
        .map(|w| w.cores_used)
        .sum();
    assert_eq!(used, 2, "{workers:?}");

    // An idle worker leaves at once, without waiting for the grace.
    let out = cluster.hearth(&["kill", &newcomer]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    cluster.wait_state(&newcomer, "KILLED", LIMIT).await;
    let idle = if moved.worker_id == up_a { up_b } else { up_a };
    let started = Instant::now();
    let status = cluster
        .worker_proc(&idle)
        .terminate(Duration::from_secs(10))
        .expect("an idle worker exits promptly");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an idle worker took {:?} to leave",
        started.elapsed()
    );
    cluster
        .wait_worker(&idle, WorkerState::Decommissioned, LIMIT)
        .await;
    let still = cluster.wait_state(&endless, "RUNNING", LIMIT).await;
    assert_eq!(still.attempt, 2);
}
