//! Preemption with real processes: a queue below its guarantee gets its share back within a
//! turn plus the victims' grace, freeing no more than it needs; each victim reads its notice
//! and writes a checkpoint on SIGTERM before it ends; a preempted driver waits again and runs
//! again under the same id; work younger than `min_runtime` is never chosen; a gang is
//! preempted whole.

mod support;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use hearth_common::{
    client::Client,
    proto::{ApplicationSpec, DriverSpec, RegisterApplicationRequest},
};
use serde_json::Value;
use support::{Cluster, stdout, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

/// A driver that, on SIGTERM, copies its preemption notice to `$CKPT/<id>.<attempt>` (its
/// checkpoint) and exits.
fn checkpointing(queue: &str, cores: u32, checkpoints: &Path) -> DriverSpec {
    let script = "trap 'cp \"$HEARTH_PREEMPTION_FILE\" \"$CKPT/$HEARTH_DRIVER_ID.$HEARTH_ATTEMPT\"; \
                  exit 0' TERM; while :; do sleep 0.1; done";
    DriverSpec {
        name: format!("{queue}-worker"),
        command: vec!["sh".into(), "-c".into(), script.into()],
        cores,
        memory_mb: 32,
        queue: queue.into(),
        env: [("CKPT".to_string(), checkpoints.display().to_string())].into(),
        ..Default::default()
    }
}

fn sleeper(queue: &str, cores: u32) -> DriverSpec {
    DriverSpec {
        name: format!("{queue}-sleeper"),
        command: vec!["sleep".into(), "600".into()],
        cores,
        memory_mb: 32,
        queue: queue.into(),
        ..Default::default()
    }
}

fn driver_json(cluster: &Cluster, id: &str) -> Value {
    cluster.json(&format!("/api/v1/drivers/{id}"))
}

async fn submit_all(client: &Client, specs: Vec<DriverSpec>) -> Vec<String> {
    let mut ids = Vec::new();
    for spec in specs {
        ids.push(client.submit(spec).await.expect("submit"));
    }
    ids
}

const RECLAIM: &str = "queues:
  - name: owed
    guaranteed: {cores: 2}
    preempt: {reclaim: true}
  - name: lender
    preempt: {min_runtime: 0s, grace: 3s}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_below_its_guarantee_gets_its_share_back_and_its_victims_checkpoint_and_run_again()
{
    let (mut cluster, file) = Cluster::start_with_queues(RECLAIM);
    cluster.add_worker(4, "1g").await;
    let client = cluster.client().await;
    let checkpoints = file.dir().join("checkpoints");
    std::fs::create_dir(&checkpoints).expect("mkdir");
    let lent = submit_all(
        &client,
        (0..4)
            .map(|_| checkpointing("lender", 1, &checkpoints))
            .collect(),
    )
    .await;
    for id in &lent {
        cluster.wait_state(id, "RUNNING", LIMIT).await;
    }

    let asked = Instant::now();
    let owed = client
        .submit(sleeper("owed", 2))
        .await
        .expect("submit owed");
    cluster.wait_state(&owed, "RUNNING", LIMIT).await;
    let took = asked.elapsed();
    // One turn, the victims' SIGTERM handling (well inside their 3 s grace), and the turn that
    // places it.
    assert!(took < Duration::from_secs(3 + 2), "took {took:?}");

    // Exactly two 1-core drivers were preempted for 2 cores: no more than needed.
    let owed_json = driver_json(&cluster, &owed);
    let events = owed_json["preemptions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(events.len(), 2, "{owed_json}\n{}", cluster.master_log());
    let victims: Vec<String> = events
        .iter()
        .filter_map(|e| e["victim"].as_str().map(str::to_string))
        .collect();
    for e in &events {
        assert_eq!(e["rule"], "reclaim");
        assert_eq!(e["preemptor"], owed.as_str());
        assert_eq!(e["victimQueue"], "lender");
    }
    for v in &victims {
        assert!(lent.contains(v), "{v}");
        // It read its notice on SIGTERM and wrote its checkpoint before it ended.
        let checkpoint = std::fs::read_to_string(checkpoints.join(format!("{v}.1")))
            .unwrap_or_else(|e| panic!("no checkpoint from {v}: {e}"));
        assert!(
            checkpoint.starts_with(&format!("reason=preempted for {owed} (reclaim")),
            "{checkpoint}"
        );
        assert!(checkpoint.contains("\nsigkill_at_ms="), "{checkpoint}");
        // It waits again under the same id, its attempt counted, not FAILED.
        let d = driver_json(&cluster, v);
        assert_eq!(d["state"], "SUBMITTED", "{d}");
        assert_eq!(d["attempt"], 1, "{d}");
        assert!(
            d["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("preempted for"),
            "{d}"
        );
        let status = stdout(&cluster.hearth(&["status", v]));
        assert!(
            status.contains(&format!("by {owed} of queue owed (reclaim)")),
            "{status}"
        );
    }
    let spared: Vec<&String> = lent.iter().filter(|id| !victims.contains(id)).collect();
    for id in &spared {
        assert_eq!(driver_json(&cluster, id)["state"], "RUNNING");
    }
    let (_, metrics) = cluster.http_get("/metrics");
    assert!(
        metrics.contains(
            "hearth_preemptions_total{queue=\"lender\",rule=\"reclaim\",kind=\"driver\"} 2"
        ),
        "{metrics}"
    );
    let (_, page) = cluster.http_get(&format!("/drivers/{owed}"));
    assert!(page.contains("id=\"preemptions\""), "{page}");

    // Room back: a preempted driver runs again, same id, next attempt.
    client.kill(&owed).await.expect("kill owed");
    let again = cluster.wait_state(&victims[0], "RUNNING", LIMIT).await;
    assert_eq!(again.attempt, 2);
    cluster.wait_state(&victims[1], "RUNNING", LIMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_younger_than_min_runtime_is_never_preempted() {
    let (mut cluster, _file) = Cluster::start_with_queues(
        "queues:
  - name: owed
    guaranteed: {cores: 2}
    preempt: {reclaim: true}
  - name: lender
    preempt: {min_runtime: 4s, grace: 1s}
",
    );
    cluster.add_worker(2, "1g").await;
    let client = cluster.client().await;
    let lent = submit_all(&client, vec![sleeper("lender", 1), sleeper("lender", 1)]).await;
    for id in &lent {
        cluster.wait_state(id, "RUNNING", LIMIT).await;
    }
    let started = Instant::now();
    let owed = client.submit(sleeper("owed", 1)).await.expect("submit");
    // While the lender's work is younger than 4 s, nothing is chosen.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = driver_json(&cluster, &owed);
    assert_eq!(d["state"], "SUBMITTED", "{d}");
    assert_eq!(d["preemptions"].as_array().map(Vec::len), Some(0), "{d}");
    assert!(started.elapsed() < Duration::from_secs(4));
    for id in &lent {
        assert_eq!(driver_json(&cluster, id)["state"], "RUNNING");
    }
    // Once it is old enough, one (the newest) goes.
    cluster.wait_state(&owed, "RUNNING", LIMIT).await;
    let d = driver_json(&cluster, &owed);
    assert_eq!(d["preemptions"].as_array().map(Vec::len), Some(1), "{d}");
    let at = d["preemptions"][0]["atMs"].as_i64().unwrap_or(0);
    let youngest_start = lent
        .iter()
        .map(|id| {
            driver_json(&cluster, id)["history"]
                .as_array()
                .and_then(|h| h.iter().find(|c| c["state"] == "RUNNING"))
                .and_then(|c| c["atMs"].as_i64())
                .unwrap_or(i64::MAX)
        })
        .max()
        .unwrap_or(0);
    assert!(
        at - youngest_start >= 4_000,
        "preempted at {at}, started at {youngest_start}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_is_preempted_whole_and_waits_to_start_again_whole() {
    let (mut cluster, _file) = Cluster::start_with_queues(RECLAIM);
    cluster.add_worker(2, "1g").await;
    cluster.add_worker(2, "1g").await;
    let client = cluster.client().await;
    let gang = client
        .register_app(RegisterApplicationRequest {
            spec: Some(ApplicationSpec {
                name: "gang".into(),
                command: vec!["sleep".into(), "600".into()],
                executor_cores: 1,
                executor_memory_mb: 32,
                executors: 4,
                gang: true,
                queue: "lender".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("register")
        .id;
    let live = |app: &Value| {
        app["executors"]
            .as_array()
            .map(|all| all.iter().filter(|e| e["state"] == "RUNNING").count())
            .unwrap_or(0)
    };
    cluster
        .wait_app(&gang, "4 RUNNING", LIMIT, |a| live(a) == 4)
        .await;
    let owed = client.submit(sleeper("owed", 1)).await.expect("submit");
    cluster.wait_state(&owed, "RUNNING", LIMIT).await;
    let app = cluster
        .wait_app(&gang, "every member preempted", LIMIT, |a| live(a) == 0)
        .await;
    let killed = app["executors"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|e| {
                    e["state"] == "KILLED"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.starts_with("preempted for"))
                })
                .count()
        })
        .unwrap_or(0);
    assert_eq!(killed, 4, "the whole gang: {app}");
    assert_eq!(app["preemptions"][0]["victim"], gang.as_str(), "{app}");
    // It waits whole: 3 cores are free, it needs 4.
    let waiting = cluster
        .wait_app(&gang, "waiting whole", LIMIT, |a| {
            a["waitingReason"]
                .as_str()
                .is_some_and(|r| r.starts_with("gang of 4"))
        })
        .await;
    assert_eq!(live(&waiting), 0);
    client.kill(&owed).await.expect("kill owed");
    cluster
        .wait_app(&gang, "4 RUNNING again", LIMIT, |a| live(a) == 4)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_displaces_lower_in_a_queue_that_preempts_by_priority_and_never_back() {
    let (mut cluster, _file) = Cluster::start_with_queues(
        "queues:
  - name: research
    preempt: {priority: true, min_runtime: 0s, grace: 2s}
",
    );
    cluster.add_worker(2, "1g").await;
    let client = cluster.client().await;
    let low = submit_all(
        &client,
        vec![sleeper("research", 1), sleeper("research", 1)],
    )
    .await;
    for id in &low {
        cluster.wait_state(id, "RUNNING", LIMIT).await;
    }
    let urgent = client
        .submit(DriverSpec {
            priority: 5,
            ..sleeper("research", 1)
        })
        .await
        .expect("submit");
    cluster.wait_state(&urgent, "RUNNING", LIMIT).await;
    let d = driver_json(&cluster, &urgent);
    let events = d["preemptions"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 1, "{d}");
    assert_eq!(events[0]["rule"], "priority");
    let victim = events[0]["victim"].as_str().unwrap_or_default().to_string();
    assert!(low.contains(&victim), "{victim}");
    // The displaced one waits; being lower, it never takes the room back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(driver_json(&cluster, &urgent)["state"], "RUNNING");
    let v = driver_json(&cluster, &victim);
    assert_eq!(v["state"], "SUBMITTED", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("(priority 5 over 0 in queue research)"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_kill_during_a_long_preemption_grace_ends_the_victim_within_the_kill_grace() {
    let (mut cluster, _file) = Cluster::start_with_queues(
        "queues:
  - name: owed
    guaranteed: {cores: 1}
    preempt: {reclaim: true}
  - name: lender
    preempt: {min_runtime: 0s, grace: 60s}
",
    );
    cluster.add_worker(1, "1g").await;
    let client = cluster.client().await;
    // It ignores SIGTERM: only SIGKILL ends it.
    let stubborn = client
        .submit(DriverSpec {
            command: vec![
                "sh".into(),
                "-c".into(),
                "trap '' TERM; while :; do sleep 0.1; done".into(),
            ],
            ..sleeper("lender", 1)
        })
        .await
        .expect("submit");
    cluster.wait_state(&stubborn, "RUNNING", LIMIT).await;
    let owed = client.submit(sleeper("owed", 1)).await.expect("submit");
    wait_for_preemption(&cluster, &stubborn).await;
    // The preemption gives it 60 s; a user's kill (the worker's grace is 1 s) cuts that short.
    let killed_at = Instant::now();
    client.kill(&stubborn).await.expect("kill");
    cluster.wait_state(&stubborn, "KILLED", LIMIT).await;
    assert!(
        killed_at.elapsed() < Duration::from_secs(5),
        "ended {:?} after the kill",
        killed_at.elapsed()
    );
    cluster.wait_state(&owed, "RUNNING", LIMIT).await;
}

/// Waits until `id` has been preempted.
async fn wait_for_preemption(cluster: &Cluster, id: &str) {
    wait_for(&format!("{id} preempted"), LIMIT, || {
        let d = driver_json(cluster, id);
        async move {
            d["preemptions"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
                .then_some(())
        }
    })
    .await;
}
