//! Nothing acknowledged is lost: the master is SIGKILLed and restarted on its state directory,
//! and what it had answered for is still there; running processes are adopted, not relaunched;
//! a damaged state file stops it from starting; retried submissions make one driver each.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use hearth_common::{
    client::Client,
    proto::{DriverSpec, DriverState, SubmitDriverRequest, WorkerState},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::Value;
use support::{Cluster, MasterOptions, process_alive, stderr, stdout, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

fn options(extra: &[&str]) -> MasterOptions {
    MasterOptions {
        extra: extra.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Waits until the master says it is ALIVE again (recovery over).
async fn wait_alive(cluster: &Cluster) -> Value {
    wait_alive_within(cluster, LIMIT).await
}

async fn wait_alive_within(cluster: &Cluster, limit: Duration) -> Value {
    wait_for("the master ALIVE", limit, || {
        let (code, body) = cluster.http_get("/json/");
        let json = (code == 200)
            .then(|| serde_json::from_str::<Value>(&body).ok())
            .flatten()
            .filter(|j| j["status"] == "ALIVE");
        async move { json }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_submissions_survive_a_master_crash() {
    let mut cluster = Cluster::start();
    // No worker yet: the drivers wait, so only the state file can bring them back.
    let ids: Vec<String> = (0..5)
        .map(|i| {
            cluster.submit(&[
                "--memory",
                "64m",
                "--",
                "sh",
                "-c",
                &format!("echo run {i}"),
            ])
        })
        .collect();
    cluster.restart_master(&[]);
    let client = cluster.client().await;
    let drivers = client.drivers().await.unwrap();
    assert_eq!(drivers.len(), 5, "{drivers:?}");
    for id in &ids {
        let d = drivers
            .iter()
            .find(|d| &d.id == id)
            .expect("the driver is back");
        assert_eq!(d.state, hearth_common::proto::DriverState::Submitted as i32);
    }
    // New ids carry on after the old ones.
    let next = cluster.submit(&["--memory", "64m", "--", "true"]);
    assert!(!ids.contains(&next), "{next}");

    cluster.add_worker(2, "1g").await;
    for (i, id) in ids.iter().enumerate() {
        let d = cluster.wait_state(id, "FINISHED", LIMIT).await;
        assert_eq!(d.attempt, 1);
        assert_eq!(stdout(&cluster.hearth(&["logs", id])), format!("run {i}\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_drivers_and_executors_are_adopted_not_relaunched() {
    let mut cluster = Cluster::start_with(options(&["--worker-timeout", "3s"]));
    let workers = [
        cluster.add_worker(12, "4g").await,
        cluster.add_worker(12, "4g").await,
    ];
    let sleeper = "echo $$; exec sleep 600";
    let drivers: Vec<String> = (0..20)
        .map(|_| cluster.submit(&["--memory", "64m", "--supervise", "--", "sh", "-c", sleeper]))
        .collect();
    let with_app = cluster.submit_app(2, sleeper, &[], &["sh", "-c", sleeper]);
    let mut pids = BTreeMap::new();
    for id in drivers.iter().chain([&with_app]) {
        cluster.wait_state(id, "RUNNING", LIMIT).await;
        pids.insert(id.clone(), cluster.wait_pids(id, 1).await[0]);
    }
    let app_id = cluster
        .client()
        .await
        .driver(&with_app)
        .await
        .unwrap()
        .app_id;
    cluster
        .wait_app(&app_id, "2 executors RUNNING", LIMIT, |a| {
            a["executors"]
                .as_array()
                .is_some_and(|e| e.len() == 2 && e.iter().all(|e| e["state"] == "RUNNING"))
        })
        .await;
    for n in 0..2 {
        let id = format!("{app_id}/{n}");
        pids.insert(id.clone(), cluster.wait_pids(&id, 1).await[0]);
    }
    let used_before = cluster.json("/json/")["coresused"].clone();
    assert_eq!(used_before, 23);

    cluster.restart_master(&[]);
    for w in &workers {
        cluster.wait_worker(w, WorkerState::Alive, LIMIT).await;
    }
    let json = wait_alive(&cluster).await;
    assert_eq!(json["coresused"], used_before, "{json}");
    let client = cluster.client().await;
    for id in drivers.iter().chain([&with_app]) {
        let d = client.driver(id).await.unwrap();
        assert_eq!(
            d.state,
            hearth_common::proto::DriverState::Running as i32,
            "{id}"
        );
        assert_eq!(d.attempt, 1, "{id} was adopted, not relaunched");
    }
    let app = cluster.json(&format!("/api/v1/apps/{app_id}"));
    let executors = app["executors"].as_array().unwrap();
    assert_eq!(executors.len(), 2, "no replacement: {app}");
    assert!(executors.iter().all(|e| e["state"] == "RUNNING"), "{app}");
    for (id, pid) in &pids {
        assert!(process_alive(*pid), "{id} (pid {pid}) still runs");
        let logged = stdout(&cluster.hearth(&["logs", id]));
        assert_eq!(logged.trim(), pid.to_string(), "{id} started once");
    }
    // Well after the worker timeout, nothing was declared lost.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(cluster.json("/json/")["coresused"], used_before);
    assert_eq!(client.driver(&drivers[0]).await.unwrap().attempt, 1);
}

/// A worker that comes back to a restarted master no longer running all it was recorded with
/// (processes died while the master was down): what it still runs is adopted, the supervised
/// driver it lost is relaunched, the executor it lost is replaced, and the slots add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_back_with_less_than_recorded_is_reconciled_not_trusted() {
    let mut cluster = Cluster::start_with(options(&["--worker-timeout", "3s"]));
    let worker = cluster.add_worker(8, "4g").await;
    let sleeper = "echo $$; exec sleep 600";
    let keep = cluster.submit(&["--memory", "64m", "--supervise", "--", "sh", "-c", sleeper]);
    let lose = cluster.submit(&["--memory", "64m", "--supervise", "--", "sh", "-c", sleeper]);
    let with_app = cluster.submit_app(2, sleeper, &[], &["sh", "-c", sleeper]);
    for id in [&keep, &lose, &with_app] {
        cluster.wait_state(id, "RUNNING", LIMIT).await;
    }
    let app_id = cluster
        .client()
        .await
        .driver(&with_app)
        .await
        .expect("driver")
        .app_id;
    cluster
        .wait_app(&app_id, "2 executors RUNNING", LIMIT, |a| {
            a["executors"]
                .as_array()
                .is_some_and(|e| e.len() == 2 && e.iter().all(|e| e["state"] == "RUNNING"))
        })
        .await;
    let pid = |id: String| {
        let cluster = &cluster;
        async move { cluster.wait_pids(&id, 1).await[0] }
    };
    let keep_pid = pid(keep.clone()).await;
    let lose_pid = pid(lose.clone()).await;
    let kept_executor = pid(format!("{app_id}/1")).await;
    let lost_executor = pid(format!("{app_id}/0")).await;

    // The master dies; while it is down, two of the worker's processes die too.
    cluster.master.kill();
    for pid in [lose_pid, lost_executor] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill a process");
        support::wait_for(&format!("pid {pid} gone"), LIMIT, || async move {
            (!process_alive(pid)).then_some(())
        })
        .await;
    }
    cluster.restart_master(&[]);
    cluster
        .wait_worker(&worker, WorkerState::Alive, LIMIT)
        .await;
    wait_alive(&cluster).await;

    // Still running: adopted, same process, same attempt.
    let client = cluster.client().await;
    let d = client.driver(&keep).await.expect("driver");
    assert_eq!((d.attempt, d.state), (1, DriverState::Running as i32));
    assert!(process_alive(keep_pid));
    // Lost while the master was away: relaunched as a new attempt, a new process.
    let d = cluster
        .wait_driver(&lose, "relaunched", LIMIT, |d| {
            d.attempt == 2 && d.state == DriverState::Running as i32
        })
        .await;
    assert_eq!(d.worker_id, worker);
    let pids = cluster.wait_pids(&lose, 2).await;
    assert_eq!(pids[0], lose_pid);
    assert!(process_alive(pids[1]) && pids[1] != lose_pid, "{pids:?}");
    // The lost executor is replaced; the other is adopted.
    let app = cluster
        .wait_app(&app_id, "a replacement RUNNING", LIMIT, |a| {
            a["executors"].as_array().is_some_and(|e| {
                e.len() == 3 && e.iter().filter(|e| e["state"] == "RUNNING").count() == 2
            })
        })
        .await;
    let executors = app["executors"].as_array().expect("executors");
    let state_of = |n: u64| {
        executors
            .iter()
            .find(|e| e["id"] == n)
            .map(|e| e["state"].clone())
    };
    assert_eq!(state_of(1), Some("RUNNING".into()), "{app}");
    assert_ne!(state_of(0), Some("RUNNING".into()), "{app}");
    assert_eq!(state_of(2), Some("RUNNING".into()), "{app}");
    assert!(process_alive(kept_executor));
    // What the worker holds is what runs on it: three drivers and two executors, 1 core each.
    let w = cluster
        .wait_worker(&worker, WorkerState::Alive, LIMIT)
        .await;
    assert_eq!((w.cores_used, w.memory_used_mb), (5, 5 * 64), "{w:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_returns_is_dead_once_recovery_times_out() {
    // Long enough that the restarted master is still recovering when first asked, on a
    // loaded machine too.
    let mut cluster = Cluster::start_with(options(&[
        "--worker-timeout",
        "2s",
        "--recovery-timeout",
        "8s",
    ]));
    let gone = cluster.add_worker(2, "1g").await;
    let supervised = cluster.submit(&["--memory", "64m", "--supervise", "--", "sleep", "600"]);
    let plain = cluster.submit(&["--memory", "64m", "--", "sleep", "600"]);
    cluster.wait_state(&supervised, "RUNNING", LIMIT).await;
    cluster.wait_state(&plain, "RUNNING", LIMIT).await;

    // The master goes first, so it never sees the worker go: the new one knows it as alive
    // and waits for it. (Killed the other way round, the old master could mark the worker
    // DEAD before its own end, and the new one would have nothing to wait for.)
    cluster.master.kill();
    cluster.worker_proc(&gone).kill();
    let restarted = std::time::Instant::now();
    cluster.restart_master(&[]);
    let json = cluster.json("/json/");
    assert_eq!(
        json["status"],
        "RECOVERING",
        "{:?} after the restart: {json}",
        restarted.elapsed()
    );
    let (_, page) = cluster.http_get("/");
    assert!(page.contains(">RECOVERING<"), "{page}");
    let spare = cluster.spawn_worker(2, "1g", &["--kill-grace", "1s"]);

    wait_alive_within(&cluster, Duration::from_secs(30)).await;
    cluster.wait_worker(&gone, WorkerState::Dead, LIMIT).await;
    let d = cluster.wait_state(&supervised, "RUNNING", LIMIT).await;
    assert_eq!((d.attempt, d.worker_id.as_str()), (2, spare.as_str()));
    let d = cluster.wait_state(&plain, "ERROR", LIMIT).await;
    assert!(d.message.contains("did not come back"), "{}", d.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_state_file_stops_the_master_with_a_clear_message() {
    let mut cluster = Cluster::start();
    for _ in 0..50 {
        cluster.submit(&["--memory", "64m", "--name", "keep-me", "--", "true"]);
    }
    // The old master has stopped (and let go of the file) before the file is damaged, so what
    // the next one reports is the damage, not the lock.
    let stopped = cluster.master.terminate(Duration::from_secs(10));
    assert!(stopped.is_some(), "the master did not stop on SIGTERM");
    let file = cluster.state_dir().join("hearth.redb");
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() > 4096, "{} bytes", bytes.len());

    let start = |cluster: &Cluster| {
        let mut cmd = support::master_command(&cluster.state_dir());
        cmd.env("HEARTH_SECRET", "test-secret-4f9a");
        support::output_within(&mut cmd, Duration::from_secs(20))
    };
    let refused_as_damaged = |out: &std::process::Output| {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(
            err.contains("does not start on state it cannot read"),
            "{err}"
        );
        assert!(!err.contains("in use by another process"), "{err}");
    };
    // Cut short.
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    refused_as_damaged(&start(&cluster));

    // Overwritten with noise.
    let noise: Vec<u8> = (0..bytes.len()).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&file, &noise).unwrap();
    refused_as_damaged(&start(&cluster));

    // Whole again: it starts and serves exactly what was acknowledged.
    std::fs::write(&file, &bytes).unwrap();
    cluster.restart_master(&[]);
    let drivers = cluster.client().await.drivers().await.unwrap();
    assert_eq!(drivers.len(), 50);
    assert!(
        drivers
            .iter()
            .all(|d| d.spec.as_ref().unwrap().name == "keep-me")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_storm_makes_one_driver_per_submission_id() {
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    let spec = DriverSpec {
        command: vec!["true".into()],
        cores: 1,
        memory_mb: 64,
        ..Default::default()
    };
    // 10 clients, each sending all 100 ids in its own order: 1,000 submissions.
    let mut tasks = Vec::new();
    for c in 0..10u64 {
        let client: Client = client.clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..100u64 {
                let n = (i * 37 + c * 11) % 100;
                let request = SubmitDriverRequest {
                    spec: Some(spec.clone()),
                    application: None,
                    submission_id: format!("storm-{n}"),
                };
                let id = client.submit_request(request).await.expect("accepted");
                answers.push((n, id));
            }
            answers
        }));
    }
    let mut by_id: BTreeMap<u64, String> = BTreeMap::new();
    for task in tasks {
        for (n, driver) in task.await.unwrap() {
            let first = by_id.entry(n).or_insert_with(|| driver.clone());
            assert_eq!(*first, driver, "storm-{n} answered with two drivers");
        }
    }
    assert_eq!(by_id.len(), 100);
    assert_eq!(client.drivers().await.unwrap().len(), 100);

    // The ids outlive a restart.
    cluster.restart_master(&[]);
    let client = cluster.client().await;
    let again = client
        .submit_request(SubmitDriverRequest {
            spec: Some(spec),
            application: None,
            submission_id: "storm-42".into(),
        })
        .await
        .unwrap();
    assert_eq!(again, by_id[&42]);
    assert_eq!(client.drivers().await.unwrap().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_more_submissions_plainly() {
    let cluster = Cluster::start_with(options(&["--max-waiting", "3"]));
    for _ in 0..3 {
        cluster.submit(&["--", "true"]);
    }
    let out = cluster.hearth(&["submit", "--", "true"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("3 drivers are waiting already"), "{err}");
    assert_eq!(cluster.client().await.drivers().await.unwrap().len(), 3);
}

/// A submission sent once, as the library sends each attempt.
fn once(spec: &DriverSpec) -> SubmitDriverRequest {
    SubmitDriverRequest {
        spec: Some(spec.clone()),
        application: None,
        submission_id: hearth_common::spec::new_submission_id(),
    }
}

/// `clients` clients submit `spec` over and over, one attempt each (the library's own retries
/// would outlive the master), until the master is SIGKILLed at a random moment (up to
/// `max_delay_ms`) after the first answer: every answer received is an acknowledgement.
async fn submit_until_killed(
    cluster: &mut Cluster,
    clients: usize,
    spec: &DriverSpec,
    rng: &mut StdRng,
    max_delay_ms: u64,
) -> Vec<String> {
    let client = cluster.client().await;
    let answered = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, answered, spec) = (client.clone(), answered.clone(), spec.clone());
        tasks.spawn(async move {
            while let Ok(id) = client.submit_request(once(&spec)).await {
                answered.lock().expect("answers").push(id);
            }
        });
    }
    support::wait_for("a first answer", LIMIT, || {
        let any = !answered.lock().expect("answers").is_empty();
        async move { any.then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..max_delay_ms))).await;
    cluster.master.kill();
    while tasks.join_next().await.is_some() {}
    std::mem::take(&mut *answered.lock().expect("answers"))
}

/// Many clients submit while the master is SIGKILLed at a random moment, round after round;
/// after each restart every submission answered before the kill is there. A master that
/// answered before the turn's write reached its file would lose the answers of the turn the
/// kill lands in, and with turns back to back a kill lands in one nearly every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_submission_answered_before_a_kill_at_any_moment_survives_it() {
    const ROUNDS: usize = 20;
    const CLIENTS: usize = 16;
    let mut cluster = Cluster::start_with(options(&["--max-waiting", "1000000"]));
    let mut rng = StdRng::seed_from_u64(0xacc0);
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let spec = DriverSpec {
        command: vec!["true".into()],
        cores: 1,
        memory_mb: 32,
        ..Default::default()
    };
    for round in 0..ROUNDS {
        acknowledged.extend(submit_until_killed(&mut cluster, CLIENTS, &spec, &mut rng, 150).await);

        cluster.restart_master(&[]);
        let listed: BTreeSet<String> = cluster
            .client()
            .await
            .drivers()
            .await
            .expect("drivers")
            .into_iter()
            .map(|d| d.id)
            .collect();
        let lost: Vec<&String> = acknowledged.difference(&listed).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} acknowledged submissions lost: {lost:?}",
            lost.len(),
            acknowledged.len()
        );
    }
}

/// Drivers run exactly once across crashes: many clients submit while drivers start and end on
/// a worker, and the master is SIGKILLed at a random moment, round after round. Every
/// acknowledged driver ends FINISHED having run once (each run appends its id to a file), and
/// nothing runs twice. A kill between recording a placement and the launch reaching the worker
/// leaves a driver the worker never saw: it is launched again, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_driver_runs_exactly_once_across_random_master_kills() {
    // More for a soak: HEARTH_CRASH_ROUNDS=200 cargo test --test recovery exactly_once
    let rounds: usize = std::env::var("HEARTH_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    const CLIENTS: usize = 8;
    let mut cluster = Cluster::start_with(options(&["--retained-drivers", "1000000"]));
    cluster.add_worker(8, "4g").await;
    let ran = cluster.dir.path().join("ran");
    let mut rng = StdRng::seed_from_u64(0x0e1ce);
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let spec = DriverSpec {
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo \"$HEARTH_DRIVER_ID\" >> \"$RAN\"".into(),
        ],
        env: [("RAN".to_string(), ran.display().to_string())].into(),
        cores: 1,
        memory_mb: 16,
        ..Default::default()
    };
    for _ in 0..rounds {
        acknowledged.extend(submit_until_killed(&mut cluster, CLIENTS, &spec, &mut rng, 300).await);
        cluster.restart_master(&[]);
        wait_alive(&cluster).await;
    }

    // Everything ends; every acknowledged driver FINISHED, having run once.
    let client = cluster.client().await;
    let drivers = wait_for("every driver ended", Duration::from_secs(60), || {
        let client = client.clone();
        async move {
            let drivers = client.drivers().await.ok()?;
            drivers
                .iter()
                .all(|d| hearth_common::state_names::driver_state(d.state).is_terminal())
                .then_some(drivers)
        }
    })
    .await;
    let states: BTreeMap<String, (i32, String)> = drivers
        .into_iter()
        .map(|d| (d.id.clone(), (d.state, d.message.clone())))
        .collect();
    let runs = std::fs::read_to_string(&ran).unwrap_or_default();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for line in runs.lines() {
        *counts.entry(line.trim()).or_default() += 1;
    }
    let twice: Vec<(&&str, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
    for id in &acknowledged {
        let Some((state, message)) = states.get(id).cloned() else {
            panic!("{id} acknowledged but not listed ({} listed)", states.len());
        };
        if state != DriverState::Finished as i32 {
            panic!(
                "{id} acknowledged but ended {state}: {message}\nwhat the masters logged of it:\n{}",
                logged_of(&cluster, rounds, id)
            );
        }
        assert_eq!(counts.get(id.as_str()), Some(&1), "{id} acknowledged");
    }
    let relaunched: usize = (1..=rounds)
        .map(|n| {
            std::fs::read_to_string(cluster.dir.path().join(format!("master-{n}.log")))
                .unwrap_or_default()
                .matches("launch never reached the worker")
                .count()
        })
        .sum();
    eprintln!(
        "{} acknowledged drivers over {rounds} kills ran exactly once; {relaunched} placements \
         the worker never received were launched again",
        acknowledged.len()
    );
}

/// The lines of the cluster's master logs (the first and its `restarts`) that name `id`.
fn logged_of(cluster: &Cluster, restarts: usize, id: &str) -> String {
    let mut logs = vec![cluster.dir.path().join("master.log")];
    logs.extend((1..=restarts).map(|n| cluster.dir.path().join(format!("master-{n}.log"))));
    logs.iter()
        .flat_map(|path| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(id))
                .map(|l| format!("{}: {l}", path.display()))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Completed drivers beyond `--retained-drivers` leave the master's memory and the state
/// file's drivers table for its history table, where they are still read by id; beyond
/// `--retained-history` they are gone. Oldest first, and the same after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_beyond_retention_leave_memory_for_the_history_and_beyond_it_are_gone() {
    let mut cluster = Cluster::start_with(options(&[
        "--retained-drivers",
        "3",
        "--retained-history",
        "2",
    ]));
    cluster.add_worker(2, "1g").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let id = cluster.submit(&[
            "--memory",
            "64m",
            "--name",
            &format!("job-{i}"),
            "--",
            "true",
        ]);
        cluster.wait_state(&id, "FINISHED", LIMIT).await;
        ids.push(id);
    }
    let (gone, rest) = ids.split_at(1);
    let (history, kept) = rest.split_at(2);
    let set = |ids: &[String]| ids.iter().cloned().collect::<BTreeSet<String>>();
    let in_memory = |drivers: Vec<hearth_common::proto::Driver>| {
        drivers.into_iter().map(|d| d.id).collect::<BTreeSet<_>>()
    };
    let check = |cluster: &Cluster| {
        for id in gone {
            let (code, body) = cluster.http_get(&format!("/api/v1/drivers/{id}"));
            assert_eq!(code, 404, "{id} is beyond the history: {body}");
        }
        for id in history.iter().chain(kept) {
            let (code, body) = cluster.http_get(&format!("/api/v1/drivers/{id}"));
            assert_eq!(code, 200, "{id} is still read by id: {body}");
            assert!(body.contains("\"FINISHED\""), "{body}");
        }
    };
    let drivers = cluster.client().await.drivers().await.expect("drivers");
    assert_eq!(in_memory(drivers), set(kept));
    check(&cluster);

    // The state file: the kept ones in the drivers table, the next two in the history.
    assert!(cluster.master.terminate(Duration::from_secs(10)).is_some());
    {
        use redb::{ReadableDatabase, ReadableTable};
        let db = redb::Database::open(cluster.state_dir().join("hearth.redb")).expect("open");
        let txn = db.begin_read().expect("read");
        let keys = |name: &str| -> BTreeSet<String> {
            let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new(name);
            txn.open_table(table)
                .expect("the table")
                .iter()
                .expect("iterate")
                .map(|row| row.expect("a row").0.value().to_string())
                .collect()
        };
        assert_eq!(keys("drivers"), set(kept));
        assert_eq!(keys("history"), set(history));
    }
    cluster.restart_master(&[]);
    let drivers = cluster.client().await.drivers().await.expect("drivers");
    assert_eq!(in_memory(drivers), set(kept));
    check(&cluster);
}

/// Only one master runs on a state directory; a second is refused at start with the reason and
/// the first goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_master_on_the_same_state_is_refused_and_the_first_serves_on() {
    let cluster = Cluster::start();
    let id = cluster.submit(&["--memory", "64m", "--", "true"]);
    let mut second = support::master_command(&cluster.state_dir());
    second.env("HEARTH_SECRET", "test-secret-4f9a");
    let out = support::output_within(&mut second, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("in use by another process"),
        "{}",
        stderr(&out)
    );
    let d = cluster
        .client()
        .await
        .driver(&id)
        .await
        .expect("the first master answers");
    assert_eq!(d.id, id);
}

/// A state file written by a newer master (a format this one does not know) is refused at
/// start, naming both formats, and the refusal damages nothing in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_from_a_newer_master_is_refused_and_kept_whole() {
    let mut cluster = Cluster::start();
    let id = cluster.submit(&["--memory", "64m", "--", "true"]);
    assert!(cluster.master.terminate(Duration::from_secs(10)).is_some());
    let file = cluster.state_dir().join("hearth.redb");
    // The file as a newer master would leave it: its meta record says format 99.
    set_format(&file, 1, 99);
    let mut newer = support::master_command(&cluster.state_dir());
    newer.env("HEARTH_SECRET", "test-secret-4f9a");
    let out = support::output_within(&mut newer, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("written by a newer master (format 99, this one reads 1)"),
        "{}",
        stderr(&out)
    );
    // Back to this master's format, everything it held is there.
    set_format(&file, 99, 1);
    cluster.restart_master(&[]);
    let d = cluster
        .client()
        .await
        .driver(&id)
        .await
        .expect("the driver");
    assert_eq!(d.id, id);
}

/// Rewrites the format in the state file's meta record, which must be `from`.
fn set_format(file: &std::path::Path, from: u32, to: u32) {
    use redb::ReadableTable;
    let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    let db = redb::Database::open(file).expect("open the state file");
    let txn = db.begin_write().expect("write");
    {
        let mut table = txn.open_table(meta).expect("meta table");
        let mut record: Value = {
            let stored = table.get("meta").expect("read").expect("a meta record");
            serde_json::from_slice(stored.value()).expect("meta JSON")
        };
        assert_eq!(record["format"], from, "{record}");
        record["format"] = to.into();
        let bytes = serde_json::to_vec(&record).expect("JSON");
        table.insert("meta", bytes.as_slice()).expect("write meta");
    }
    txn.commit().expect("commit");
}

/// Unmounts a file system when dropped, so a failing test leaves no mount behind.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, size: &str) -> Self {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount a tmpfs (root needed): {}",
            stderr(&out)
        );
        Self(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process of a failed test): detach it now, gone once released.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

/// A master on a state volume that fills up or turns read-only, with what a test needs to see
/// it through: its client, web address and the ids it acknowledged.
struct DiskTrouble {
    dir: tempfile::TempDir,
    volume: std::path::PathBuf,
    mount: Option<Mount>,
    spawn: hearth_testkit::master::MasterSpawn,
    master: Option<hearth_testkit::master::MasterProcess>,
    client: Client,
}

impl DiskTrouble {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let volume = dir.path().join("volume");
        std::fs::create_dir(&volume).expect("mount point");
        let mount = Mount::tmpfs(&volume, "8m");
        let spawn = hearth_testkit::master::MasterSpawn {
            binary: support::HEARTH.into(),
            state_dir: volume.join("state"),
            bind: "127.0.0.1".into(),
            ports: (support::free_port(), support::free_port()),
            secret: Some("test-secret-4f9a".into()),
            extra: vec![],
            log: dir.path().join("master.log"),
        };
        let master = spawn.start().expect("start the master");
        let client = Client::connect(&master.url, Some(&Self::secret()))
            .await
            .expect("connect");
        Self {
            dir,
            volume,
            mount: Some(mount),
            spawn,
            master: Some(master),
            client,
        }
    }

    fn secret() -> hearth_common::auth::Secret {
        hearth_common::auth::Secret::new("test-secret-4f9a").expect("secret")
    }

    fn web(&self) -> String {
        self.master.as_ref().expect("running").web.clone()
    }

    /// Submissions until one is refused: the acknowledged ids, and the refusal.
    async fn submit_until_refused(&self) -> (Vec<String>, tonic::Status) {
        // Specs of 256 KiB (the environment is kept in the file): a full volume is met soon.
        let big = DriverSpec {
            command: vec!["true".into()],
            cores: 1,
            memory_mb: 32,
            env: [("PADDING".to_string(), "x".repeat(256 * 1024))].into(),
            ..Default::default()
        };
        let mut acknowledged = Vec::new();
        loop {
            match self.client.submit_request(once(&big)).await {
                Ok(id) => acknowledged.push(id),
                Err(hearth_common::Error::Status(status)) => return (acknowledged, status),
                Err(e) => panic!("not a gRPC status: {e}"),
            }
            assert!(
                acknowledged.len() < 100,
                "100 submissions of 256 KiB on 8 MiB"
            );
        }
    }

    /// While changes are refused, the master is up, serves reads, the UI and its metrics, and
    /// says why it is not ready.
    async fn check_refusing(&mut self, acknowledged: &[String], cause: &str) {
        let web = self.web();
        let (code, body) = support::http_get(&web, "/readyz");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains(cause), "/readyz says {body}");
        let (code, page) = support::http_get(&web, "/");
        assert_eq!(code, 200);
        assert!(page.contains("id=\"store-trouble\""), "{page:.800}");
        let (code, metrics) = support::http_get(&web, "/metrics");
        assert_eq!(code, 200);
        assert!(
            metrics.contains("hearth_state_writable 0"),
            "{metrics:.300}"
        );
        let listed: BTreeSet<String> = self
            .client
            .drivers()
            .await
            .expect("reads are served")
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(
            listed,
            acknowledged.iter().cloned().collect::<BTreeSet<_>>()
        );
        // Every change is refused, plainly, naming the cause.
        let refused = self
            .client
            .submit(DriverSpec {
                command: vec!["true".into()],
                cores: 1,
                memory_mb: 32,
                ..Default::default()
            })
            .await
            .expect_err("refused while the file cannot be written");
        let hearth_common::Error::Status(status) = refused else {
            panic!("not a gRPC status: {refused}");
        };
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("hearth.redb"), "{status:?}");
        let master = self.master.as_mut().expect("running");
        assert!(
            master.proc.child.try_wait().expect("wait").is_none(),
            "the master is still running"
        );
    }

    /// Changes are accepted again on their own, within a few seconds.
    async fn check_resumed(&self) -> String {
        let web = self.web();
        wait_for("ready again", LIMIT, || {
            let (code, _) = support::http_get(&web, "/readyz");
            async move { (code == 200).then_some(()) }
        })
        .await;
        self.client
            .submit(DriverSpec {
                command: vec!["true".into()],
                cores: 1,
                memory_mb: 32,
                ..Default::default()
            })
            .await
            .expect("a submission is accepted again")
    }

    /// A restarted master holds exactly what was acknowledged.
    async fn check_after_restart(&mut self, acknowledged: &BTreeSet<String>) {
        drop(self.master.take());
        let master = self.spawn.start().expect("restart the master");
        let client = Client::connect(&master.url, Some(&Self::secret()))
            .await
            .expect("connect");
        let listed: BTreeSet<String> = client
            .drivers()
            .await
            .expect("drivers")
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(&listed, acknowledged);
        self.master = Some(master);
    }
}

impl Drop for DiskTrouble {
    fn drop(&mut self) {
        drop(self.master.take());
        drop(self.mount.take());
        let _ = &self.dir;
    }
}

/// The state volume fills up: the turn whose write fails is undone and its callers told
/// UNAVAILABLE naming the file; the master stays up serving reads, the UI and its metrics, is
/// not ready, refuses every change; once there is room it resumes by itself, and a restart
/// shows exactly what was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root to mount a small tmpfs; ./scripts/test runs it, or: cargo test -- --include-ignored"]
async fn a_full_state_volume_refuses_changes_serves_reads_and_resumes_with_room() {
    let mut t = DiskTrouble::start().await;
    // A worker with a driver running: the failed turns must not cost it its work.
    let url = t.master.as_ref().expect("running").url.clone();
    let mut worker = support::Proc::new(
        std::process::Command::new(support::HEARTH)
            .args([
                "worker",
                "--master",
                &url,
                "--webui-port",
                "0",
                "--bind",
                "127.0.0.1",
            ])
            .args(["--host", "127.0.0.1", "--cores", "2", "--memory", "1g"])
            .arg("--work-dir")
            .arg(t.dir.path().join("work"))
            .env("HEARTH_SECRET", "test-secret-4f9a")
            .env_remove("HEARTH_SECRET_FILE")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn a worker"),
        "worker",
    );
    support::first_line(&mut worker.child, "hearth worker:", LIMIT);
    let sleeper = t
        .client
        .submit(DriverSpec {
            command: vec!["sleep".into(), "600".into()],
            cores: 1,
            memory_mb: 32,
            ..Default::default()
        })
        .await
        .expect("a driver");
    wait_for("the driver RUNNING", LIMIT, || {
        let client = t.client.clone();
        let id = sleeper.clone();
        async move {
            let d = client.driver(&id).await.ok()?;
            (d.state == DriverState::Running as i32).then_some(())
        }
    })
    .await;
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(t.volume.join("filler")).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while filler.write_all(&block).is_ok() {}
    }
    let (acknowledged, refusal) = t.submit_until_refused().await;
    assert_eq!(refusal.code(), tonic::Code::Unavailable, "{refusal:?}");
    assert!(
        refusal.message().contains("not recorded") && refusal.message().contains("hearth.redb"),
        "{refusal:?}"
    );
    let mut listed_now = acknowledged.clone();
    listed_now.push(sleeper.clone());
    t.check_refusing(&listed_now, "No space left").await;

    std::fs::remove_file(t.volume.join("filler")).expect("remove the filler");
    let after = t.check_resumed().await;
    let log = std::fs::read_to_string(t.dir.path().join("master.log")).unwrap_or_default();
    assert!(log.contains("can be written again"), "{log}");
    // The worker came back and its driver was adopted, not lost and relaunched.
    let d = wait_for("the driver adopted", LIMIT, || {
        let client = t.client.clone();
        let id = sleeper.clone();
        async move {
            let d = client.driver(&id).await.ok()?;
            let workers = client.workers().await.ok()?;
            workers
                .iter()
                .any(|w| w.state == WorkerState::Alive as i32)
                .then_some(d)
        }
    })
    .await;
    assert_eq!(
        (d.state, d.attempt),
        (DriverState::Running as i32, 1),
        "{}",
        d.message
    );
    let mut all: BTreeSet<String> = acknowledged.into_iter().collect();
    all.insert(sleeper);
    all.insert(after);
    t.check_after_restart(&all).await;
}

/// A master (re)started on a state volume that is read-only: it comes up on what the file
/// holds, serves reads, refuses changes, is not ready; once the volume is writable it resumes by
/// itself. (A tmpfs cannot be made read-only while a file on it is open for writing, so the
/// master is stopped for the remount, as a pod restarted onto a read-only volume would be.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root to mount a small tmpfs; ./scripts/test runs it, or: cargo test -- --include-ignored"]
async fn a_read_only_state_volume_refuses_changes_serves_reads_and_resumes_when_writable() {
    let mut t = DiskTrouble::start().await;
    let first = t
        .client
        .submit(DriverSpec {
            command: vec!["true".into()],
            cores: 1,
            memory_mb: 32,
            ..Default::default()
        })
        .await
        .expect("a submission");
    let volume = t.volume.clone();
    let remount = |mode: &str| {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&volume)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "remount {mode}: {}", stderr(&out));
    };
    drop(t.master.take());
    remount("ro");
    let master = t
        .spawn
        .start()
        .expect("the master starts on a read-only volume");
    t.client = Client::connect(&master.url, Some(&DiskTrouble::secret()))
        .await
        .expect("connect");
    t.master = Some(master);
    let (acknowledged, refusal) = t.submit_until_refused().await;
    assert!(
        acknowledged.is_empty(),
        "{acknowledged:?} recorded on a read-only volume"
    );
    assert_eq!(refusal.code(), tonic::Code::Unavailable, "{refusal:?}");
    t.check_refusing(std::slice::from_ref(&first), "Read-only")
        .await;

    remount("rw");
    let after = t.check_resumed().await;
    t.check_after_restart(&[first, after].into_iter().collect())
        .await;
}

/// A script that runs `hearth submit --submission-id ID` again (after a timeout, say) gets the
/// driver the first run made, never a second; the same id for other work is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_retrying_with_its_own_submission_id_makes_one_driver() {
    let cluster = Cluster::start();
    let submit = |command: &str| {
        cluster.hearth(&[
            "submit",
            "--submission-id",
            "nightly-2026-11-30",
            "--memory",
            "64m",
            "--",
            "sh",
            "-c",
            command,
        ])
    };
    let first = submit("echo report");
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let again = submit("echo report");
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(stdout(&again), stdout(&first), "the same driver");
    let other = submit("echo something else");
    assert_eq!(other.status.code(), Some(1), "{}", stderr(&other));
    assert!(
        stderr(&other).contains("submission_id: nightly-2026-11-30 was already used for"),
        "{}",
        stderr(&other)
    );
    let drivers = cluster.client().await.drivers().await.expect("drivers");
    assert_eq!(drivers.len(), 1, "{drivers:?}");
    // A malformed id is refused before anything is sent.
    let out = cluster.hearth(&["submit", "--submission-id", "no spaces", "--", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("submission_id: must be"),
        "{}",
        stderr(&out)
    );
}

/// The `hearth` command waits for a master that is restarting (up to `--connect-timeout`),
/// and gives up with the reason once that has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_waits_for_a_restarting_master_within_its_connect_timeout() {
    let mut cluster = Cluster::start();
    let id = cluster.submit(&["--memory", "64m", "--cores", "64", "--", "true"]);
    cluster.master.kill();
    let mut status = hearth_testkit::process::hearth_command(std::path::Path::new(support::HEARTH));
    status
        .args(["status", &id, "--connect-timeout", "30s"])
        .env("HEARTH_MASTER_URL", &cluster.url)
        .env(
            "HEARTH_SECRET",
            cluster.secret.as_deref().unwrap_or_default(),
        );
    let asking = std::thread::spawn(move || support::output_within(&mut status, LIMIT));
    // The command is trying while the master is down; then it comes back on the same port.
    std::thread::sleep(Duration::from_secs(1));
    cluster.restart_master(&[]);
    let out = asking.join().expect("the status command");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(&id), "{}", stdout(&out));

    cluster.master.kill();
    let started = std::time::Instant::now();
    let out = cluster.hearth(&["status", &id, "--connect-timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot connect to the master"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up after {:?}",
        started.elapsed()
    );
}
