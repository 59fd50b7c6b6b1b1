//! Nothing acknowledged is lost: the master is SIGKILLed and restarted on its state directory,
//! and what it had answered for is still there; running processes are adopted, not relaunched;
//! a damaged state file stops it from starting; retried submissions make one driver each.

mod support;

use std::{collections::BTreeMap, time::Duration};

use hearth_common::{
    client::Client,
    proto::{DriverSpec, SubmitDriverRequest, WorkerState},
};
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
    wait_for("the master ALIVE", LIMIT, || {
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
    let with_app = cluster.submit(&[
        "--memory",
        "64m",
        "--executors",
        "2",
        "--executor-memory",
        "64m",
        "--executor-command",
        sleeper,
        "--",
        "sh",
        "-c",
        sleeper,
    ]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_returns_is_dead_once_recovery_times_out() {
    // Long enough that the restarted master is still recovering when first asked, on a
    // loaded machine too.
    let mut cluster = Cluster::start_with(options(&[
        "--worker-timeout",
        "2s",
        "--recovery-timeout",
        "6s",
    ]));
    let gone = cluster.add_worker(2, "1g").await;
    let supervised = cluster.submit(&["--memory", "64m", "--supervise", "--", "sleep", "600"]);
    let plain = cluster.submit(&["--memory", "64m", "--", "sleep", "600"]);
    cluster.wait_state(&supervised, "RUNNING", LIMIT).await;
    cluster.wait_state(&plain, "RUNNING", LIMIT).await;

    cluster.worker_proc(&gone).kill();
    cluster.restart_master(&[]);
    let json = cluster.json("/json/");
    assert_eq!(json["status"], "RECOVERING", "{json}");
    let (_, page) = cluster.http_get("/");
    assert!(page.contains(">RECOVERING<"), "{page}");
    let spare = cluster.spawn_worker(2, "1g", &["--kill-grace", "1s"]);

    wait_alive(&cluster).await;
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
    cluster.master.terminate(Duration::from_secs(10));
    let file = cluster.state_dir().join("hearth.redb");
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() > 4096, "{} bytes", bytes.len());

    let start = |cluster: &Cluster| {
        support::master_command(&cluster.state_dir())
            .env("HEARTH_SECRET", "test-secret-4f9a")
            .output()
            .unwrap()
    };
    // Cut short.
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let out = start(&cluster);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("state file") && err.contains("hearth.redb"),
        "{err}"
    );

    // Overwritten with noise.
    let noise: Vec<u8> = (0..bytes.len()).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&file, &noise).unwrap();
    let out = start(&cluster);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("state file"), "{}", stderr(&out));

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
