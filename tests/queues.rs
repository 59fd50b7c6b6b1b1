//! Teams sharing a cluster, with real processes: a queue at its cap waits while another runs,
//! weights 1 and 3 share a busy cluster 1:3, a queue below its guarantee goes first, priorities
//! order a queue, a broken queues file is refused and the old one stays, and queue, priority and
//! waiting order survive a restart.

mod support;

use std::{path::Path, time::Duration};

use hearth_common::{client::Client, proto::DriverSpec};
use serde_json::Value;
use support::{Cluster, MasterOptions, stderr, stdout, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

fn sleeper(queue: &str, priority: i32, seconds: &str) -> DriverSpec {
    DriverSpec {
        name: format!("{queue}-sleeper"),
        command: vec!["sleep".into(), seconds.into()],
        cores: 1,
        memory_mb: 32,
        queue: queue.into(),
        priority,
        ..Default::default()
    }
}

async fn submit(client: &Client, queue: &str, priority: i32, seconds: &str) -> String {
    client
        .submit(sleeper(queue, priority, seconds))
        .await
        .expect("submit")
}

fn driver_json(cluster: &Cluster, id: &str) -> Value {
    cluster.json(&format!("/api/v1/drivers/{id}"))
}

async fn wait_driver_json(
    cluster: &Cluster,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let check = &check;
    wait_for(&format!("{id}: {what}"), LIMIT, || async move {
        let d = driver_json(cluster, id);
        check(&d).then_some(d)
    })
    .await
}

/// Cores in use per queue, from `/api/v1/queues`.
fn used_cores(cluster: &Cluster, queue: &str) -> u64 {
    let all = cluster.json("/api/v1/queues");
    all["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["name"] == queue))
        .and_then(|q| q["used"]["cores"].as_u64())
        .unwrap_or_else(|| panic!("no queue {queue} in {all}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_at_its_max_waits_with_the_cap_named_while_another_queues_work_runs() {
    let (mut cluster, _file) = Cluster::start_with_queues(
        "queues:\n  - name: capped\n    max: {cores: 1}\n  - name: other\n",
    );
    cluster.add_worker(4, "1g").await;
    let client = cluster.client().await;
    let first = submit(&client, "capped", 0, "600").await;
    let second = submit(&client, "capped", 0, "600").await;
    let other = submit(&client, "other", 0, "600").await;
    cluster.wait_state(&first, "RUNNING", LIMIT).await;
    cluster.wait_state(&other, "RUNNING", LIMIT).await;
    let waiting = wait_driver_json(&cluster, &second, "waiting on the cap", |d| {
        d["waitingCode"] == "QUEUE_CAP"
    })
    .await;
    assert_eq!(waiting["state"], "SUBMITTED", "{waiting}");
    assert_eq!(waiting["queue"], "capped", "{waiting}");
    let reason = waiting["waitingReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("queue capped is at its max of 1 core"),
        "{reason}"
    );
    // The CLI shows the code and the queue too; the queues list counts it.
    let status = cluster.hearth(&["status", &second]);
    let text = stdout(&status);
    assert!(
        text.contains("waiting:    QUEUE_CAP: queue capped is at its max"),
        "{text}"
    );
    assert!(text.contains("queue:      capped (priority 0)"), "{text}");
    let queues = cluster.hearth(&["queues", "--json"]);
    assert!(queues.status.success(), "{}", stderr(&queues));
    let list: Value = serde_json::from_str(&stdout(&queues)).expect("queues --json");
    let capped = list
        .as_array()
        .and_then(|l| l.iter().find(|q| q["name"] == "capped"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(capped["used"]["cores"], 1, "{list}");
    assert_eq!(capped["max"]["cores"], 1, "{list}");
    assert_eq!(capped["waiting"], 1, "{list}");
    let metrics = cluster.http_get("/metrics").1;
    assert!(
        metrics.contains("hearth_queue_cores_used{queue=\"capped\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hearth_waiting_drivers{code=\"QUEUE_CAP\"} 1"),
        "{metrics}"
    );
    // The cap frees when the running one ends.
    cluster.hearth(&["kill", &first]);
    cluster.wait_state(&second, "RUNNING", LIMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_one_and_three_converge_to_one_to_three_of_the_cores_under_a_steady_backlog() {
    let (mut cluster, _file) = Cluster::start_with_queues(
        "queues:\n  - name: light\n    weight: 1\n  - name: heavy\n    weight: 3\n",
    );
    cluster.add_worker(8, "2g").await;
    let client = cluster.client().await;
    // Short drivers keep slots freeing; each queue keeps far more waiting than it can run in
    // the window. The light queue submits first, so order alone would favour it.
    for _ in 0..40 {
        submit(&client, "light", 0, "1").await;
    }
    for _ in 0..90 {
        submit(&client, "heavy", 0, "1").await;
    }
    // Window: 6 s, sampled every 100 ms, after 2 s of warm-up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut light, mut heavy) = (0u64, 0u64);
    for _ in 0..60 {
        light += used_cores(&cluster, "light");
        heavy += used_cores(&cluster, "heavy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waiting = cluster.json("/api/v1/queues");
    let ratio = light as f64 / heavy as f64;
    eprintln!("light:heavy core-samples over 6 s: {light}:{heavy} = {ratio:.3} (1:3 is 0.333)");
    assert!(
        (ratio - 1.0 / 3.0).abs() <= 0.1 / 3.0,
        "light:heavy core-samples {light}:{heavy} = {ratio:.3}, not within 10% of 1:3; {waiting}"
    );
    // Both still had a backlog at the end of the window, so the share was the policy's.
    for q in waiting["queues"].as_array().into_iter().flatten() {
        if q["name"] == "light" || q["name"] == "heavy" {
            assert!(q["waiting"].as_u64() > Some(0), "{waiting}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_below_its_guarantee_is_served_first_as_slots_free() {
    // By weight alone `heavy` (weight 10) would take every freed slot.
    let (mut cluster, _file) = Cluster::start_with_queues(
        "queues:\n  - name: heavy\n    weight: 10\n  - name: team\n    guaranteed: {cores: 2}\n",
    );
    let client = cluster.client().await;
    let team_first = submit(&client, "team", 0, "600").await;
    let mut heavy = Vec::new();
    for _ in 0..3 {
        heavy.push(submit(&client, "heavy", 0, "600").await);
    }
    cluster.add_worker(4, "1g").await;
    for id in heavy.iter().chain([&team_first]) {
        cluster.wait_state(id, "RUNNING", LIMIT).await;
    }
    let heavy_waiting = submit(&client, "heavy", 0, "600").await;
    let team_waiting = submit(&client, "team", 0, "600").await;
    wait_driver_json(&cluster, &team_waiting, "waiting for room", |d| {
        d["waitingCode"] == "NO_FREE_SLOTS"
    })
    .await;
    cluster.hearth(&["kill", &heavy[0]]);
    cluster.wait_state(&team_waiting, "RUNNING", LIMIT).await;
    let d = driver_json(&cluster, &heavy_waiting);
    assert_eq!(d["state"], "SUBMITTED", "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_a_queue_higher_priority_goes_first() {
    let mut cluster = Cluster::start();
    cluster.add_worker(1, "1g").await;
    let client = cluster.client().await;
    let busy = submit(&client, "default", 0, "600").await;
    cluster.wait_state(&busy, "RUNNING", LIMIT).await;
    let low = submit(&client, "default", 0, "600").await;
    let high = submit(&client, "default", 7, "600").await;
    wait_driver_json(&cluster, &low, "waiting", |d| {
        d["waitingCode"] == "NO_FREE_SLOTS"
    })
    .await;
    // Priorities given on the command line too.
    let lowest = cluster.submit(&["--priority", "-3", "--memory", "32m", "--", "sleep", "600"]);
    assert_eq!(driver_json(&cluster, &lowest)["priority"], -3);
    // Each knows its place in the queue's order: priority first, then submission.
    for (id, position) in [(&high, 1), (&low, 2), (&lowest, 3)] {
        let d = driver_json(&cluster, id);
        assert_eq!(
            (d["queuePosition"].as_u64(), d["queueWaiting"].as_u64()),
            (Some(position), Some(3)),
            "{d}"
        );
    }
    let status = stdout(&cluster.hearth(&["status", &low]));
    assert!(
        status.contains("queue:      default (priority 0), 2 of 3 waiting there"),
        "{status}"
    );
    assert!(
        status.contains("expected:   unknown: it holds no reservation yet"),
        "{status}"
    );
    cluster.hearth(&["kill", &busy]);
    cluster.wait_state(&high, "RUNNING", LIMIT).await;
    assert_eq!(driver_json(&cluster, &low)["state"], "SUBMITTED");
    cluster.hearth(&["kill", &high]);
    cluster.wait_state(&low, "RUNNING", LIMIT).await;
    assert_eq!(driver_json(&cluster, &lowest)["state"], "SUBMITTED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_queues_file_is_refused_with_its_line_and_the_old_one_stays() {
    let (mut cluster, file) =
        Cluster::start_with_queues("queues:\n  - name: capped\n    max: {cores: 1}\n");
    let file = &file.path;
    cluster.add_worker(4, "1g").await;
    let client = cluster.client().await;
    let first = submit(&client, "capped", 0, "600").await;
    let second = submit(&client, "capped", 0, "600").await;
    cluster.wait_state(&first, "RUNNING", LIMIT).await;
    wait_driver_json(&cluster, &second, "held by the cap", |d| {
        d["waitingCode"] == "QUEUE_CAP"
    })
    .await;

    // A child whose parent is missing, on line 4.
    std::fs::write(
        file,
        "queues:\n  - name: capped\n    max: {cores: 3}\n  - name: ml.training\n",
    )
    .expect("write");
    let refused = wait_for("the refusal", LIMIT, || async {
        let q = cluster.json("/api/v1/queues");
        q["refused"].as_str().map(str::to_string)
    })
    .await;
    assert!(
        refused.contains("line 4: queue ml.training: its parent ml is not defined"),
        "{refused}"
    );
    let metrics = cluster.http_get("/metrics").1;
    assert!(
        metrics.contains("hearth_queues_file_refused 1"),
        "{metrics}"
    );
    assert!(cluster.master_log().contains("queues file refused"));
    let out = cluster.hearth(&["queues"]);
    assert!(
        stderr(&out).contains("the queues file was refused"),
        "{}",
        stderr(&out)
    );
    // The old cap is still in force.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(driver_json(&cluster, &second)["state"], "SUBMITTED");

    // A good file applies without a restart: the cap rises and the waiting driver runs.
    std::fs::write(file, "queues:\n  - name: capped\n    max: {cores: 2}\n").expect("write");
    cluster.wait_state(&second, "RUNNING", LIMIT).await;
    let q = cluster.json("/api/v1/queues/capped");
    assert_eq!(q["max"]["cores"], 2, "{q}");
    assert!(cluster.json("/api/v1/queues")["refused"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_queues_file_at_start_stops_the_master_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("queues.yaml");
    std::fs::write(&file, "queues:\n  - name: ok\n  - name: Bad Name\n").expect("write");
    let mut cmd = support::master_command(&dir.path().join("state"));
    cmd.args(["--insecure", "--queues"]).arg(&file);
    let out = support::output_within(&mut cmd, LIMIT);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("queues.yaml: line 3: name: \"Bad Name\" is not a queue name"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_queue_is_refused_naming_the_queues() {
    let (cluster, _file) = Cluster::start_with_queues("queues:\n  - name: ml\n");
    let out = cluster.hearth(&["submit", "--queue", "nope", "--", "true"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("queue: no queue named \"nope\"; the queues are: default, ml"),
        "{err}"
    );
    let out = cluster.hearth(&["submit", "--queue", "Not.Valid", "--", "true"]);
    assert!(
        stderr(&out).contains("queue: \"Not.Valid\" is not a queue name"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        cluster.json("/api/v1/drivers").as_array().map(Vec::len),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_priority_and_waiting_order_survive_a_restart() {
    let (mut cluster, file) = Cluster::start_with_queues("queues:\n  - name: ml\n");
    let file = &file.path;
    let client = cluster.client().await;
    let mut ids = Vec::new();
    for priority in [0, 5, 0, 5] {
        ids.push(submit(&client, "ml", priority, "600").await);
    }
    // Started again with the same --queues.
    cluster.restart_master(&[]);
    for (id, priority) in ids.iter().zip([0, 5, 0, 5]) {
        let d = driver_json(&cluster, id);
        assert_eq!(
            (d["queue"].as_str(), d["priority"].as_i64()),
            (Some("ml"), Some(priority))
        );
    }
    // One slot at a time: priority 5 in submission order, then priority 0 in submission order.
    cluster.add_worker(1, "1g").await;
    for id in [&ids[1], &ids[3], &ids[0], &ids[2]] {
        cluster.wait_state(id, "RUNNING", LIMIT).await;
        cluster.hearth(&["kill", id]);
    }
    assert!(Path::new(&file).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_driver_behind_a_stream_of_small_ones_starts_within_its_reservation_bound() {
    let mut cluster = Cluster::start_with(MasterOptions {
        extra: vec!["--reserve-after".into(), "2s".into()],
        ..Default::default()
    });
    cluster.add_worker(4, "1g").await;
    let client = cluster.client().await;
    let small = |n: usize| DriverSpec {
        name: format!("small-{n}"),
        command: vec!["sleep".into(), "1".into()],
        cores: 1,
        memory_mb: 32,
        time_limit_ms: 10_000,
        ..Default::default()
    };
    // The cluster is full of small work, and more keeps coming faster than it ends.
    for n in 0..6 {
        client.submit(small(n)).await.expect("submit");
    }
    let stream = {
        let client = client.clone();
        tokio::spawn(async move {
            for n in 6.. {
                if client.submit(small(n)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let submitted = std::time::Instant::now();
    let large = client
        .submit(DriverSpec {
            name: "large".into(),
            command: vec!["sleep".into(), "600".into()],
            cores: 4,
            memory_mb: 64,
            ..Default::default()
        })
        .await
        .expect("submit the large one");
    // Once reserved, it knows when it starts: the small work in its way has time limits.
    let reserved = wait_driver_json(&cluster, &large, "an estimate", |d| {
        d["estimatedStart"].is_i64() || d["state"] == "RUNNING"
    })
    .await;
    if reserved["state"] != "RUNNING" {
        let estimate = reserved["estimate"].as_str().unwrap_or_default();
        assert!(
            estimate.contains("holds a reservation on worker-"),
            "{reserved}"
        );
        let at = reserved["estimatedStart"].as_i64().unwrap_or_default();
        let now = hearth_common::ids::now_ms();
        assert!(at >= now - 1_000 && at <= now + 11_000, "{reserved}");
    }
    // Bound: 2 s of waiting (looked for once a second), then the longest small one left there
    // (1 s), plus launches on a busy machine. Without the reservation it never starts.
    cluster.wait_state(&large, "RUNNING", LIMIT).await;
    let waited = submitted.elapsed();
    stream.abort();
    eprintln!("the large driver started {waited:?} after its submission");
    assert!(
        waited <= Duration::from_secs(9),
        "the large driver started after {waited:?}, over its bound of 2 s + 1 s + 1 s (+ 5 s of slack)"
    );
    let d = driver_json(&cluster, &large);
    assert!(d["estimate"].is_null() && d["waitingCode"].is_null(), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_limit_ends_a_driver_killed_with_the_reason_and_it_is_not_relaunched() {
    let mut cluster = Cluster::start();
    cluster.add_worker(2, "1g").await;
    let id = cluster.submit(&[
        "--time-limit",
        "2s",
        "--supervise",
        "--memory",
        "32m",
        "--",
        "sleep",
        "600",
    ]);
    let started = std::time::Instant::now();
    cluster.wait_state(&id, "RUNNING", LIMIT).await;
    let d = cluster.wait_state(&id, "KILLED", LIMIT).await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        d.message.contains("time limit of 2s reached"),
        "{}",
        d.message
    );
    assert_eq!(
        d.attempt, 1,
        "a time limit is not a failure to relaunch after"
    );
    assert_eq!(driver_json(&cluster, &id)["timeLimitMs"], 2000);
    let out = cluster.hearth(&["submit", "--time-limit", "9000h", "--", "true"]);
    assert!(stderr(&out).contains("time_limit"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_just_ran_a_burst_yields_the_freed_slots_to_one_that_did_not() {
    let (mut cluster, _file) =
        Cluster::start_with_queues("queues:\n  - name: burst\n  - name: quiet\n");
    cluster.restart_master(&["--usage-half-life", "2s"]);
    cluster.add_worker(2, "1g").await;
    let client = cluster.client().await;
    let first = submit(&client, "burst", 0, "4").await;
    let second = submit(&client, "burst", 0, "4").await;
    cluster.wait_state(&first, "RUNNING", LIMIT).await;
    cluster.wait_state(&second, "RUNNING", LIMIT).await;
    // Both wait for the burst to end; `burst` asked first.
    let mut later = Vec::new();
    for queue in ["burst", "burst", "quiet", "quiet"] {
        later.push((queue, submit(&client, queue, 0, "600").await));
    }
    wait_for("two of the later ones running", LIMIT, || async {
        let running: Vec<&str> = later
            .iter()
            .filter(|(_, id)| driver_json(&cluster, id)["state"] == "RUNNING")
            .map(|(q, _)| *q)
            .collect();
        (running.len() == 2).then_some(())
    })
    .await;
    for (queue, id) in &later {
        let state = driver_json(&cluster, id)["state"].clone();
        let expected = if *queue == "quiet" {
            "RUNNING"
        } else {
            "SUBMITTED"
        };
        assert_eq!(state, expected, "{queue} {id}");
    }
}
