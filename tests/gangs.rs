//! Gang applications with a real master and real workers: a gang that does not fit waits
//! holding nothing while small work runs, then starts whole in one turn; two gangs never both
//! hold part of a cluster; `--gang-timeout` ends one FAILED with its reason; executors know
//! their rank and the world size, a replacement keeps its rank, and `--gang-restart` starts the
//! whole gang again.

mod support;

use std::time::Duration;

use hearth_common::{
    client::Client,
    proto::{ApplicationSpec, RegisterApplicationRequest},
};
use serde_json::Value;
use support::{Cluster, process_alive, stderr, stdout, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

/// Each executor prints its rank, the world size and its pid, then sleeps.
const REPORTER: &str = "echo \"rank=$HEARTH_EXECUTOR_RANK world=$HEARTH_WORLD_SIZE\"; echo $$; \
                        exec sleep 600";

fn spec(name: &str, executors: u32, gang: bool) -> ApplicationSpec {
    ApplicationSpec {
        name: name.into(),
        command: vec!["sh".into(), "-c".into(), REPORTER.into()],
        executor_cores: 1,
        executor_memory_mb: 64,
        executors,
        gang,
        ..Default::default()
    }
}

async fn register(client: &Client, spec: ApplicationSpec) -> String {
    client
        .register_app(RegisterApplicationRequest {
            spec: Some(spec),
            ..Default::default()
        })
        .await
        .expect("register the application")
        .id
}

fn live(app: &Value) -> Vec<&Value> {
    app["executors"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|e| e["state"] == "RUNNING" || e["state"] == "LAUNCHING")
                .collect()
        })
        .unwrap_or_default()
}

fn running(app: &Value, n: usize) -> bool {
    let live = live(app);
    live.len() == n && live.iter().all(|e| e["state"] == "RUNNING")
}

fn cores_used(cluster: &Cluster) -> u64 {
    let workers = cluster.json("/api/v1/workers");
    workers
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w["coresUsed"].as_u64()).sum())
        .unwrap_or(0)
}

/// The ranks of the live executors, sorted.
fn ranks(app: &Value) -> Vec<u64> {
    let mut ranks: Vec<u64> = live(app)
        .iter()
        .filter_map(|e| e["rank"].as_u64())
        .collect();
    ranks.sort_unstable();
    ranks
}

/// Executor `n` of `app_id`'s two lines: "rank=R world=W" and its pid.
async fn executor_report(cluster: &Cluster, app_id: &str, n: u64) -> (String, i32) {
    let id = format!("{app_id}/{n}");
    let log = wait_for(&format!("the report of {id}"), LIMIT, || {
        let out = stdout(&cluster.hearth(&["logs", &id]));
        async move { (out.lines().count() >= 2).then_some(out) }
    })
    .await;
    let mut lines = log.lines();
    let report = lines.next().unwrap_or_default().to_string();
    let pid = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    (report, pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_that_does_not_fit_waits_holding_nothing_while_small_work_runs_then_starts_whole() {
    let mut cluster = Cluster::start();
    cluster.add_worker(4, "1g").await;
    cluster.add_worker(4, "1g").await;
    let client = cluster.client().await;
    let small = register(&client, spec("small", 2, false)).await;
    cluster
        .wait_app(&small, "2 small executors", LIMIT, |a| running(a, 2))
        .await;

    let gang = register(&client, spec("gang", 8, true)).await;
    let waiting = cluster
        .wait_app(&gang, "waiting with a gang reason", LIMIT, |a| {
            a["waitingReason"]
                .as_str()
                .is_some_and(|r| r.starts_with("gang of 8"))
        })
        .await;
    let reason = waiting["waitingReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("6 executors fit in the free room now"),
        "{reason}"
    );
    assert_eq!(waiting["waitingCode"], "NO_FREE_SLOTS", "{waiting}");
    assert_eq!(waiting["gang"], true);
    assert!(
        live(&waiting).is_empty(),
        "a waiting gang holds nothing: {waiting}"
    );

    // Small work still starts beside it: nothing is held for the gang.
    let more = register(&client, spec("more", 1, false)).await;
    cluster
        .wait_app(&more, "the later small executor", LIMIT, |a| running(a, 1))
        .await;
    assert_eq!(cores_used(&cluster), 3);
    let still = cluster.json(&format!("/api/v1/apps/{gang}"));
    assert!(live(&still).is_empty(), "{still}");
    let status = stdout(&cluster.hearth(&["status", &gang]));
    assert!(
        status.contains("gang:       all 8 start together or none"),
        "{status}"
    );
    assert!(status.contains("5 executors fit"), "{status}");

    // Room for all eight: they start in one turn, ranks 0..7 of a world of 8.
    client.kill_app(&small).await.expect("kill small");
    client.kill_app(&more).await.expect("kill more");
    let started = cluster
        .wait_app(&gang, "all 8 RUNNING", LIMIT, |a| running(a, 8))
        .await;
    let launched: Vec<i64> = live(&started)
        .iter()
        .filter_map(|e| e["launchedAtMs"].as_i64())
        .collect();
    assert_eq!(launched.len(), 8);
    assert!(
        launched.iter().all(|&t| t == launched[0]),
        "placed in one turn: {launched:?}"
    );
    assert_eq!(ranks(&started), (0..8).collect::<Vec<u64>>());
    for e in live(&started) {
        let (n, rank) = (
            e["id"].as_u64().unwrap_or(0),
            e["rank"].as_u64().unwrap_or(0),
        );
        let (report, _) = executor_report(&cluster, &gang, n).await;
        assert_eq!(report, format!("rank={rank} world=8"), "executor {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_competing_gangs_never_both_hold_part_of_the_cluster() {
    let mut cluster = Cluster::start();
    cluster.add_worker(2, "1g").await;
    cluster.add_worker(2, "1g").await;
    let client = cluster.client().await;
    // Each needs 3 of the 4 cores: whichever goes first runs whole, the other holds nothing.
    let a = register(&client, spec("a", 3, true)).await;
    let b = register(&client, spec("b", 3, true)).await;
    let first = cluster
        .wait_app(&a, "a whole", LIMIT, |x| running(x, 3))
        .await;
    assert_eq!(ranks(&first), [0, 1, 2]);
    let other = cluster
        .wait_app(&b, "b waiting", LIMIT, |x| {
            x["waitingReason"].as_str().is_some()
        })
        .await;
    assert!(live(&other).is_empty(), "{other}");
    assert_eq!(cores_used(&cluster), 3);
    client.kill_app(&a).await.expect("kill a");
    let second = cluster
        .wait_app(&b, "b whole", LIMIT, |x| running(x, 3))
        .await;
    assert_eq!(ranks(&second), [0, 1, 2]);
    assert_eq!(cores_used(&cluster), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_timeout_ends_the_application_failed_with_the_reason_it_waited() {
    let mut cluster = Cluster::start();
    cluster.add_worker(4, "1g").await;
    let driver = cluster.submit_app(
        8,
        "exec sleep 600",
        &["--gang", "--gang-timeout", "2s"],
        &["sleep", "600"],
    );
    let d = cluster.wait_state(&driver, "RUNNING", LIMIT).await;
    let app = cluster
        .wait_app(&d.app_id, "FAILED", LIMIT, |a| a["state"] == "FAILED")
        .await;
    let message = app["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("gang timeout of 2s reached: gang of 8: only 4 executors fit"),
        "{message}"
    );
    assert!(live(&app).is_empty(), "{app}");
    // Its driver fails with it, saying why.
    let d = cluster.wait_state(&driver, "FAILED", LIMIT).await;
    assert!(d.message.contains("gang timeout of 2s reached"), "{d:?}");
    // A gang option without --gang is refused, naming it.
    let out = cluster.hearth(&[
        "submit",
        "--executors",
        "2",
        "--gang-timeout",
        "1m",
        "--executor-command",
        "true",
        "--",
        "true",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("gang_timeout"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_member_is_replaced_with_its_rank_and_gang_restart_starts_all_again() {
    let mut cluster = Cluster::start();
    cluster.add_worker(8, "2g").await;
    let client = cluster.client().await;

    // Default: the failed member alone is replaced, and its replacement has its rank.
    let gang = register(&client, spec("replace", 3, true)).await;
    let app = cluster
        .wait_app(&gang, "3 RUNNING", LIMIT, |a| running(a, 3))
        .await;
    let victim = live(&app)
        .iter()
        .find(|e| e["rank"] == 1)
        .and_then(|e| e["id"].as_u64())
        .expect("rank 1");
    let (_, pid) = executor_report(&cluster, &gang, victim).await;
    assert!(process_alive(pid));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the executor");
    let replaced = cluster
        .wait_app(&gang, "a replacement", LIMIT, |a| {
            running(a, 3) && live(a).iter().all(|e| e["id"] != victim)
        })
        .await;
    assert_eq!(ranks(&replaced), [0, 1, 2]);
    let new = live(&replaced)
        .iter()
        .find(|e| e["rank"] == 1)
        .and_then(|e| e["id"].as_u64())
        .expect("rank 1 again");
    assert_eq!(new, 3, "one new executor");
    let (report, _) = executor_report(&cluster, &gang, new).await;
    assert_eq!(report, "rank=1 world=3");

    // --gang-restart: the others end, and all three start again together.
    let restarting = register(
        &client,
        ApplicationSpec {
            gang_restart: true,
            ..spec("restart", 3, true)
        },
    )
    .await;
    let app = cluster
        .wait_app(&restarting, "3 RUNNING", LIMIT, |a| running(a, 3))
        .await;
    let first: Vec<u64> = live(&app).iter().filter_map(|e| e["id"].as_u64()).collect();
    let (_, pid) = executor_report(&cluster, &restarting, first[0]).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the executor");
    let again = cluster
        .wait_app(&restarting, "a new gang", LIMIT, |a| {
            running(a, 3)
                && live(a)
                    .iter()
                    .all(|e| !first.contains(&e["id"].as_u64().unwrap_or(0)))
        })
        .await;
    assert_eq!(ranks(&again), [0, 1, 2]);
    let killed: Vec<&Value> = again["executors"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|e| {
                    e["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("gang restart"))
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(killed.len(), 2, "the two others were ended: {again}");
    let launched: Vec<i64> = live(&again)
        .iter()
        .filter_map(|e| e["launchedAtMs"].as_i64())
        .collect();
    assert!(launched.iter().all(|&t| t == launched[0]), "{launched:?}");
    // A gang's size is fixed.
    let err = client.request_executors(&restarting, 1).await.unwrap_err();
    assert!(err.to_string().contains("size is fixed"), "{err}");
}
