//! Workers that die and drivers that fail: DEAD detection, supervised relaunches, retry limits.

mod support;

use std::time::{Duration, Instant};

use hearth_common::{
    proto::WorkerState,
    state_names::{StateName, driver_state},
};
use support::{Cluster, stderr, stdout};

const LIMIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_is_dead_within_two_seconds_and_its_supervised_driver_runs_elsewhere() {
    let mut cluster = Cluster::start();
    let first = cluster.add_worker(2, "1g").await;
    let client = cluster.client().await;

    let supervised = cluster.submit(&["--supervise", "--memory", "128m", "--", "sleep", "300"]);
    let plain = cluster.submit(&["--memory", "128m", "--", "sleep", "300"]);
    cluster.wait_state(&supervised, "RUNNING", LIMIT).await;
    cluster.wait_state(&plain, "RUNNING", LIMIT).await;
    let second = cluster.add_worker(2, "1g").await;

    let killed_at = Instant::now();
    cluster.worker_proc(&first).kill();
    cluster
        .wait_worker(&first, WorkerState::Dead, Duration::from_secs(5))
        .await;
    let dead_after = killed_at.elapsed();
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
    let pid = nix::unistd::Pid::from_raw(cluster.worker_proc(&id).pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    cluster
        .wait_worker(&id, WorkerState::Dead, Duration::from_secs(5))
        .await;
    let noticed = stopped.elapsed();
    // The last heartbeat may have been up to a quarter of the timeout before the stop.
    assert!(noticed >= Duration::from_millis(700), "{noticed:?}");
    assert!(noticed <= Duration::from_secs(3), "{noticed:?}");

    // Woken up, it reconnects on its own and is ALIVE again under the same id.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    cluster.wait_worker(&id, WorkerState::Alive, LIMIT).await;
}

/// Past `--max-heartbeat-rate`, workers are asked to heartbeat less often than a quarter of
/// the timeout, and each is held to four times its interval: with a rate of 2 a second, two
/// workers heartbeat every second; a stopped one is declared DEAD after about 4 s, not after
/// the 1 s timeout, and the other, heartbeating once a second, stays ALIVE meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_clusters_workers_heartbeat_less_often_and_are_held_to_a_longer_timeout() {
    let mut cluster = Cluster::start_with(support::MasterOptions {
        extra: vec![
            "--worker-timeout".into(),
            "1s".into(),
            "--max-heartbeat-rate".into(),
            "2".into(),
        ],
        ..Default::default()
    });
    let first = cluster.add_worker(1, "512m").await;
    let second = cluster.add_worker(1, "512m").await;
    // The first registered alone (every 0.5 s); the second's coming asks both for every 1 s.
    support::wait_for("the first worker told the new rhythm", LIMIT, || {
        let log = std::fs::read_to_string(cluster.dir.path().join("worker-0.log"));
        async move {
            log.ok()
                .filter(|l| l.contains("new interval") && l.contains("heartbeat_ms=1000"))
                .map(|_| ())
        }
    })
    .await;
    let pid = nix::unistd::Pid::from_raw(cluster.worker_proc(&second).pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    cluster
        .wait_worker(&second, WorkerState::Dead, Duration::from_secs(10))
        .await;
    let noticed = stopped.elapsed();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    // Its last heartbeat may have come up to an interval (1 s) before the stop.
    assert!(noticed >= Duration::from_millis(2_800), "{noticed:?}");
    assert!(noticed <= Duration::from_secs(6), "{noticed:?}");
    let client = cluster.client().await;
    let workers = client.workers().await.expect("workers");
    let alive = workers.iter().find(|w| w.id == first).expect("first");
    assert_eq!(alive.state, WorkerState::Alive as i32, "{alive:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_back_from_a_partition_is_fenced_and_its_driver_runs_once() {
    let mut cluster = Cluster::start_with(support::MasterOptions {
        extra: vec!["--worker-timeout".into(), "1s".into()],
        ..Default::default()
    });
    let id = cluster.add_worker(1, "512m").await;
    let driver = cluster.submit_pid_sleeper("128m");
    cluster.wait_state(&driver, "RUNNING", LIMIT).await;
    let pids = |cluster: &Cluster| support::driver_pids(cluster, &driver);
    let first_pid = support::wait_for("the driver's pid", LIMIT, || {
        let p = pids(&cluster);
        async move { p.first().copied() }
    })
    .await;

    // The worker goes silent: DEAD after the timeout, the driver waits to be relaunched
    // (there is no other worker), while its process still runs on the silent worker.
    let pid = nix::unistd::Pid::from_raw(cluster.worker_proc(&id).pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    cluster.wait_state(&driver, "RELAUNCHING", LIMIT).await;
    assert!(support::process_alive(first_pid));

    // Back: the old attempt is fenced (killed) and the new one runs, on the same worker.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let d = cluster
        .wait_driver(&driver, "attempt 2 running", LIMIT, |d| {
            d.attempt == 2 && driver_state(d.state).name() == "RUNNING"
        })
        .await;
    assert_eq!(d.worker_id, id);
    let second_pid = support::wait_for("the second pid", LIMIT, || {
        let p = pids(&cluster);
        async move { (p.len() == 2).then(|| p[1]) }
    })
    .await;
    support::wait_for("the fenced attempt gone", LIMIT, || async move {
        (!support::process_alive(first_pid)).then_some(())
    })
    .await;
    let copies: Vec<i32> = support::driver_copies(&driver);
    assert_eq!(copies, vec![second_pid], "exactly one copy runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_no_decommission_grace_stops_a_worker_at_once_and_its_supervised_driver_moves()
{
    let mut cluster = Cluster::start();
    let leaving = cluster.spawn_worker(
        1,
        "512m",
        &["--kill-grace", "1s", "--decommission-grace", "0s"],
    );
    cluster
        .wait_worker(&leaving, WorkerState::Alive, LIMIT)
        .await;
    let driver = cluster.submit_pid_sleeper("128m");
    let d = cluster.wait_state(&driver, "RUNNING", LIMIT).await;
    assert_eq!(d.worker_id, leaving);
    let pid = cluster.wait_pids(&driver, 1).await[0];
    let staying = cluster.add_worker(1, "512m").await;

    let status = cluster
        .worker_proc(&leaving)
        .terminate(Duration::from_secs(10))
        .expect("the worker exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!support::process_alive(pid), "its driver is gone");
    let d = cluster
        .wait_driver(&driver, "running on the other worker", LIMIT, |d| {
            d.attempt == 2 && driver_state(d.state).name() == "RUNNING"
        })
        .await;
    assert_eq!(d.worker_id, staying);
    assert!(
        d.history.iter().any(|h| h.message.contains("stopping")),
        "{:?}",
        d.history
    );
    let gone = cluster
        .client()
        .await
        .workers()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.id == leaving)
        .unwrap();
    assert_eq!(gone.state, WorkerState::Decommissioned as i32);
    assert_eq!(d.attempt, 2, "relaunched once, never on the leaving worker");

    // The master stops cleanly too, with a worker attached and a client following a log.
    let mut follower = std::process::Command::new(support::HEARTH)
        .args(["logs", "--follow", &driver])
        .env("HEARTH_MASTER_URL", &cluster.url)
        .env("HEARTH_SECRET", cluster.secret.as_deref().unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = cluster
        .master
        .terminate(Duration::from_secs(10))
        .expect("the master exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", cluster.master_log());
    let _ = follower.kill();
    let _ = follower.wait();
}

/// A worker that registers and then stops reading its stream (hung, or its network buffer
/// full) while the master keeps placing work on it: the master closes that stream once the
/// worker's order queue is full, declares it DEAD, and answers everyone else meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_reading_its_orders_is_cut_off_without_stalling_the_master() {
    use hearth_common::{
        auth::{Secret, SendSecret},
        proto::{
            DriverSpec, Register, WorkerMessage, worker_message::Msg,
            worker_service_client::WorkerServiceClient,
        },
    };

    // A long timeout: only the full queue may end this worker's stream.
    let cluster = Cluster::start_with(support::MasterOptions {
        extra: vec!["--worker-timeout".into(), "120s".into()],
        ..Default::default()
    });
    let secret = Secret::new(cluster.secret.as_deref().expect("secret")).expect("secret");
    // A small receive window, so the master's sends stop as soon as this worker stops
    // reading, instead of after megabytes of buffering.
    let channel = tonic::transport::Endpoint::from_shared(cluster.url.clone())
        .expect("url")
        .initial_stream_window_size(1024)
        .connect()
        .await
        .expect("connect");
    let mut raw = WorkerServiceClient::with_interceptor(
        channel,
        SendSecret::new(Some(&secret)).expect("header"),
    );
    let worker_id = "worker-20261121000000-127.0.0.9-9999".to_string();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WorkerMessage {
        msg: Some(Msg::Register(Register {
            worker_id: worker_id.clone(),
            name: "stuck".into(),
            host: "127.0.0.9".into(),
            web_port: 9999,
            cores: 1024,
            memory_mb: 1 << 30,
            ..Default::default()
        })),
    })
    .await
    .expect("queue Register");
    // The response stream is held and never read; `tx` keeps the request stream open.
    let _orders = raw
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("session accepted");
    cluster
        .wait_worker(&worker_id, WorkerState::Alive, LIMIT)
        .await;

    let client = cluster.client().await;
    let spec = DriverSpec {
        command: vec!["sleep".into(), "600".into()],
        cores: 1,
        memory_mb: 1,
        ..Default::default()
    };
    // A launch for every core (the queue holds them all), from 8 clients at once; then kills
    // of some, which no longer fit behind the launches this worker never read.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, spec) = (client.clone(), spec.clone());
        tasks.spawn(async move {
            let mut ids = Vec::new();
            let mut slowest = Duration::ZERO;
            for _ in 0..128 {
                let t = Instant::now();
                ids.push(client.submit(spec.clone()).await.expect("submit"));
                slowest = slowest.max(t.elapsed());
            }
            for id in ids.iter().take(40) {
                let t = Instant::now();
                // Refused once the worker is cut off and its drivers have ended: fine.
                let _ = client.kill(id).await;
                slowest = slowest.max(t.elapsed());
            }
            slowest
        });
    }
    let mut slowest = Duration::ZERO;
    while let Some(done) = tasks.join_next().await {
        slowest = slowest.max(done.expect("submitter"));
    }
    let dead = cluster
        .wait_worker(&worker_id, WorkerState::Dead, LIMIT)
        .await;
    assert_eq!(dead.cores_used, 0, "a dead worker holds no slots");
    assert!(
        cluster.master_log().contains("is not reading its orders"),
        "{}",
        cluster.master_log()
    );
    // Calls were answered throughout, none waited on the stuck stream.
    assert!(
        slowest < Duration::from_secs(2),
        "a submission took {slowest:?} (all took {:?})",
        started.elapsed()
    );
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_launching_loses_nothing_and_runs_nothing_twice() {
    let mut cluster = Cluster::start();
    let doomed = cluster.add_worker(8, "4g").await;
    // Submitted in one burst so the worker is killed with launches on the wire and processes
    // half started.
    let client = cluster.client().await;
    let mut drivers = Vec::new();
    for n in 0..16 {
        let spec = hearth_common::proto::DriverSpec {
            command: vec![
                "sh".into(),
                "-c".into(),
                format!("echo {n}; exec sleep 300"),
            ],
            cores: 1,
            memory_mb: 64,
            supervise: true,
            max_retries: 3,
            ..Default::default()
        };
        drivers.push(client.submit(spec).await.expect("submit acknowledged"));
        if n == 7 {
            cluster.worker_proc(&doomed).kill();
        }
    }
    let spare = cluster.add_worker(16, "4g").await;
    for id in &drivers {
        let d = cluster
            .wait_driver(id, "running on the spare worker", LIMIT, |d| {
                driver_state(d.state).name() == "RUNNING" && d.worker_id == spare
            })
            .await;
        assert!(d.attempt <= 2, "{id}: attempt {}", d.attempt);
    }
    // Exactly one live copy of each, all on the spare worker's watch: the killed worker's
    // children died with it.
    for id in &drivers {
        let deadline = Instant::now() + LIMIT;
        let copies = loop {
            let copies = support::driver_processes(id);
            if copies.len() == 1 {
                break copies;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: {} live copies (pid, program) after {LIMIT:?}: {copies:?}",
                copies.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(copies[0].1, "sleep", "{id}: {copies:?}");
    }
    let listed = client.drivers().await.expect("list");
    assert_eq!(listed.len(), drivers.len(), "nothing lost, nothing added");
    let spare_now = cluster.wait_worker(&spare, WorkerState::Alive, LIMIT).await;
    assert_eq!(
        (spare_now.cores_used, spare_now.memory_used_mb),
        (16, 16 * 64),
        "resources accounted exactly"
    );
}
