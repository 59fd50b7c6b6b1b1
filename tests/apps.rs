//! Applications and executors with a real master and real workers: placement (spread out and
//! consolidated), caps, the executor environment, dynamic requests and kills, the end of an
//! application with its driver, LOST executors replaced, and the retry limit.

mod support;

use std::time::Duration;

use hearth_common::{
    client::Client,
    proto::{ApplicationSpec, DriverSpec, RegisterApplicationRequest, WorkerState},
};
use serde_json::Value;
use support::{Cluster, InProcess, process_alive, stderr, stdout, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

fn executors<'a>(app: &'a Value, state: &str) -> Vec<&'a Value> {
    app["executors"]
        .as_array()
        .map(|all| all.iter().filter(|e| e["state"] == state).collect())
        .unwrap_or_default()
}

fn all_running(app: &Value, n: usize) -> bool {
    executors(app, "RUNNING").len() == n && executors(app, "LAUNCHING").is_empty()
}

/// Live executors of `app` on each of `workers`, in that order.
fn per_worker(app: &Value, workers: &[String]) -> Vec<usize> {
    workers
        .iter()
        .map(|w| {
            executors(app, "RUNNING")
                .iter()
                .chain(executors(app, "LAUNCHING").iter())
                .filter(|e| e["workerId"] == w.as_str())
                .count()
        })
        .collect()
}

/// Cores in use over all workers, as `/api/v1/workers` says.
fn cores_used(workers: &Value) -> u64 {
    workers
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["coresUsed"].as_u64().unwrap())
        .sum()
}

fn sleeper(name: &str, executors: u32, max_cores: u32) -> ApplicationSpec {
    ApplicationSpec {
        name: name.into(),
        command: vec!["sh".into(), "-c".into(), "echo $$; exec sleep 600".into()],
        executor_cores: 1,
        executor_memory_mb: 256,
        executors,
        max_cores,
        ..Default::default()
    }
}

async fn register(client: &Client, spec: ApplicationSpec, driver_id: &str) -> String {
    client
        .register_app(RegisterApplicationRequest {
            spec: Some(spec),
            driver_id: driver_id.into(),
            ..Default::default()
        })
        .await
        .expect("register the application")
        .id
}

/// Three equal workers; an application of six 1-core executors, then one capped at 3 cores.
/// Returns the per-worker executor counts of both, each sorted from most to fewest.
async fn place_on_three_workers(spread_out: bool) -> (Vec<usize>, Vec<usize>) {
    let mut cluster = InProcess::start(|config| config.spread_out = spread_out).await;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(cluster.add_worker(4, 4096).await);
    }
    let client = cluster.client().await;
    let wide = register(&client, sleeper("wide", 6, 0), "").await;
    let app = cluster
        .wait_app(&wide, "6 executors RUNNING", LIMIT, |a| all_running(a, 6))
        .await;
    let mut wide_counts = per_worker(&app, &workers);

    let capped = register(&client, sleeper("capped", 0, 3), "").await;
    let app = cluster
        .wait_app(&capped, "3 executors RUNNING", LIMIT, |a| all_running(a, 3))
        .await;
    assert_eq!(app["targetExecutors"], 3);
    assert_eq!(app["maxExecutors"], 3);
    assert_eq!(app["coresGranted"], 3);
    // Six cores are still free, but the cap holds, now and when asked for more.
    let err = client.request_executors(&capped, 1).await.unwrap_err();
    assert!(err.to_string().contains("over its cap"), "{err}");
    // The master answers after the turn's placements are published: any extra executor
    // would already be listed.
    let app = cluster.json(&format!("/api/v1/apps/{capped}"));
    assert_eq!(app["targetExecutors"], 3);
    assert_eq!(executors(&app, "RUNNING").len(), 3);
    let mut capped_counts = per_worker(&app, &workers);

    let used = cores_used(&cluster.json("/api/v1/workers"));
    assert_eq!(used, 9, "the API's accounting matches the executors");
    wide_counts.sort_unstable_by(|a, b| b.cmp(a));
    capped_counts.sort_unstable_by(|a, b| b.cmp(a));
    (wide_counts, capped_counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_are_dealt_round_robin_by_default() {
    let (wide, capped) = place_on_three_workers(true).await;
    assert_eq!(wide, [2, 2, 2]);
    assert_eq!(capped, [1, 1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consolidation_fills_one_worker_before_the_next() {
    let (wide, capped) = place_on_three_workers(false).await;
    assert_eq!(wide, [4, 2, 0]);
    // The empty worker has the most free cores, so the capped application fills it.
    assert_eq!(capped, [3, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_executors_know_their_driver_and_end_with_it() {
    let mut cluster = Cluster::start();
    let workers = [
        cluster.add_worker(4, "2g").await,
        cluster.add_worker(4, "2g").await,
    ];
    let report = "echo \"$HEARTH_DRIVER_HOST $HEARTH_APP_ID $HEARTH_EXECUTOR_ID $HEARTH_CORES \
                  $HEARTH_MEMORY_MB ${HEARTH_DRIVER_ID:-none} ${HEARTH_SECRET:-no-secret}\"; \
                  echo $$; exec sleep 600";
    let driver = cluster.submit(&[
        "--memory",
        "128m",
        "--executors",
        "3",
        "--executor-memory",
        "128m",
        "--executor-command",
        report,
        "--",
        "sh",
        "-c",
        "echo app=$HEARTH_APP_ID; exec sleep 600",
    ]);
    let d = cluster.wait_state(&driver, "RUNNING", LIMIT).await;
    let app_id = d.app_id.clone();
    assert!(app_id.starts_with("app-"), "{d:?}");
    let app = cluster
        .wait_app(&app_id, "3 executors RUNNING", LIMIT, |a| all_running(a, 3))
        .await;
    assert_eq!(app["driverId"], driver.as_str());
    assert_eq!(app["state"], "RUNNING");
    let counts = per_worker(&app, &workers);
    assert!(counts.iter().all(|&c| c >= 1), "spread out: {counts:?}");

    // Each executor was told who it is and where its driver is, and not the cluster secret.
    let mut pids = Vec::new();
    for n in 0..3 {
        let log = wait_for(&format!("output of executor {n}"), LIMIT, || {
            let out = stdout(&cluster.hearth(&["logs", &format!("{app_id}/{n}")]));
            async move { (out.lines().count() >= 2).then_some(out) }
        })
        .await;
        let mut lines = log.lines();
        assert_eq!(
            lines.next().unwrap(),
            format!("127.0.0.1 {app_id} {n} 1 128 {driver} no-secret")
        );
        pids.push(lines.next().unwrap().trim().parse::<i32>().unwrap());
    }
    assert!(pids.iter().all(|&p| process_alive(p)));
    let driver_log = stdout(&cluster.hearth(&["logs", &driver]));
    assert_eq!(driver_log.trim(), format!("app={app_id}"));

    // The CLI, the Spark-style JSON and the UI list it.
    let list = cluster.hearth(&["list", "apps"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let row = stdout(&list)
        .lines()
        .find(|l| l.starts_with(&app_id))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(row.contains("RUNNING") && row.contains("3/3"), "{row}");
    let status = stdout(&cluster.hearth(&["status", &app_id]));
    assert!(status.contains("state:      RUNNING"), "{status}");
    assert_eq!(status.matches(" RUNNING ").count(), 3, "{status}");
    let json = cluster.json("/json/");
    assert_eq!(json["activeapps"][0]["id"], app_id.as_str());
    assert_eq!(json["activeapps"][0]["cores"], 3);
    assert_eq!(json["coresused"], 4);
    let (code, page) = cluster.http_get("/");
    assert_eq!(code, 200);
    let title = format!("<title>Hearth master {}</title>", cluster.url);
    assert!(page.contains(&title), "{page}");
    assert_eq!(
        page.matches("<h2 id=\"running-apps\">Running applications (1)</h2>")
            .count(),
        1,
        "{page}"
    );
    assert_eq!(
        page.matches("<h2 id=\"completed-apps\">Completed applications (0)</h2>")
            .count(),
        1,
        "{page}"
    );
    assert!(page.contains(&format!("href=\"/apps/{app_id}\"")), "{page}");
    let (code, page) = cluster.http_get(&format!("/apps/{app_id}"));
    assert_eq!(code, 200);
    assert!(page.contains("id=\"state\">RUNNING<"), "{page}");
    assert_eq!(
        page.matches("class=\"state-RUNNING\">RUNNING</td>").count(),
        3,
        "{page}"
    );

    // Killing the driver ends the application: executors killed, every slot freed.
    let out = cluster.hearth(&["kill", &driver]);
    assert!(out.status.success(), "{}", stderr(&out));
    cluster.wait_state(&driver, "KILLED", LIMIT).await;
    let app = cluster
        .wait_app(&app_id, "KILLED", LIMIT, |a| a["state"] == "KILLED")
        .await;
    assert_eq!(executors(&app, "KILLED").len(), 3, "{app}");
    assert!(app["message"].as_str().unwrap().contains(&driver), "{app}");
    for w in cluster.json("/api/v1/workers").as_array().unwrap() {
        assert_eq!(w["coresUsed"], 0, "{w}");
        assert_eq!(w["memoryUsedMb"], 0, "{w}");
    }
    for pid in pids {
        wait_for(&format!("executor pid {pid} gone"), LIMIT, || async move {
            (!process_alive(pid)).then_some(())
        })
        .await;
    }
    let json = cluster.json("/json/");
    assert_eq!(json["activeapps"].as_array().unwrap().len(), 0);
    assert_eq!(json["completedapps"][0]["id"], app_id.as_str());
    assert_eq!(json["completedapps"][0]["state"], "KILLED");

    // A driver that finishes on its own takes its application with it, FINISHED.
    let driver = cluster.submit(&[
        "--memory",
        "128m",
        "--executors",
        "2",
        "--executor-memory",
        "128m",
        "--executor-command",
        "exec sleep 600",
        "--",
        "sh",
        "-c",
        "sleep 1",
    ]);
    let d = cluster.wait_state(&driver, "FINISHED", LIMIT).await;
    let app = cluster
        .wait_app(&d.app_id, "FINISHED", LIMIT, |a| a["state"] == "FINISHED")
        .await;
    assert!(executors(&app, "RUNNING").is_empty() && executors(&app, "LAUNCHING").is_empty());
    for w in cluster.json("/api/v1/workers").as_array().unwrap() {
        assert_eq!(w["coresUsed"], 0, "{w}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_driver_grows_and_shrinks_its_application() {
    let mut cluster = Cluster::start();
    cluster.add_worker(4, "2g").await;
    cluster.add_worker(4, "2g").await;
    let driver = cluster.submit(&["--memory", "128m", "--", "sleep", "600"]);
    cluster.wait_state(&driver, "RUNNING", LIMIT).await;
    let client = cluster.client().await;

    // Registered for the driver: one executor now, up to three.
    let app_id = register(&client, sleeper("elastic", 1, 3), &driver).await;
    let app = cluster
        .wait_app(&app_id, "1 executor RUNNING", LIMIT, |a| all_running(a, 1))
        .await;
    assert_eq!(app["driverId"], driver.as_str());
    assert_eq!(app["driverHost"], "127.0.0.1");
    let grown = client.request_executors(&app_id, 2).await.unwrap();
    assert_eq!(grown.target_executors, 3);
    cluster
        .wait_app(&app_id, "3 executors RUNNING", LIMIT, |a| all_running(a, 3))
        .await;
    let err = client.request_executors(&app_id, 1).await.unwrap_err();
    assert!(err.to_string().contains("over its cap"), "{err}");

    // Executors it kills are not replaced.
    let shrunk = client.kill_executors(&app_id, &[0]).await.unwrap();
    assert_eq!(shrunk.target_executors, 2);
    // A replacement would be placed in the same turn the kill was answered in.
    let app = cluster.json(&format!("/api/v1/apps/{app_id}"));
    assert_eq!(executors(&app, "KILLED").len(), 1);
    assert_eq!(executors(&app, "RUNNING").len(), 2);
    assert_eq!(
        app["executors"].as_array().unwrap().len(),
        3,
        "no replacement"
    );

    // An executor of another application, or one that already ended: refused, nothing changes.
    let other = register(&client, sleeper("other", 4, 0), "").await;
    cluster
        .wait_app(&other, "4 executors RUNNING", LIMIT, |a| all_running(a, 4))
        .await;
    let before = cluster.json(&format!("/api/v1/apps/{app_id}"));
    let err = client.kill_executors(&app_id, &[1, 3]).await.unwrap_err();
    assert!(err.to_string().contains("has no executor 3"), "{err}");
    let err = client.kill_executors(&app_id, &[0]).await.unwrap_err();
    assert!(err.to_string().contains("already ended"), "{err}");
    let app = cluster.json(&format!("/api/v1/apps/{app_id}"));
    assert_eq!(app, before, "a refused kill changed the application");
    assert_eq!(executors(&app, "RUNNING").len(), 2);
    assert_eq!(app["targetExecutors"], 2);
    assert_eq!(
        executors(&cluster.json(&format!("/api/v1/apps/{other}")), "RUNNING").len(),
        4
    );

    // Unregistering ends it FINISHED and frees its slots; the driver runs on.
    let done = client.unregister_app(&app_id).await.unwrap();
    assert_eq!(
        done.state,
        hearth_common::proto::ApplicationState::Finished as i32
    );
    let err = client.request_executors(&app_id, 1).await.unwrap_err();
    assert!(err.to_string().contains("already ended"), "{err}");
    let used = cores_used(&cluster.json("/api/v1/workers"));
    assert_eq!(used, 1 + 4, "the driver and the other application");
    let d = cluster.client().await.driver(&driver).await.unwrap();
    assert_eq!(d.state, hearth_common::proto::DriverState::Running as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_of_a_killed_worker_are_lost_and_replaced_elsewhere() {
    let mut cluster = Cluster::start();
    let first = cluster.add_worker(2, "1g").await;
    let second = cluster.add_worker(2, "1g").await;
    let client = cluster.client().await;
    let app_id = register(&client, sleeper("survivor", 2, 0), "").await;
    let app = cluster
        .wait_app(&app_id, "2 executors RUNNING", LIMIT, |a| all_running(a, 2))
        .await;
    assert_eq!(per_worker(&app, &[first.clone(), second.clone()]), [1, 1]);

    cluster.worker_proc(&first).kill();
    cluster.wait_worker(&first, WorkerState::Dead, LIMIT).await;
    let app = cluster
        .wait_app(&app_id, "a replacement RUNNING", LIMIT, |a| {
            executors(a, "LOST").len() == 1 && all_running(a, 2)
        })
        .await;
    assert_eq!(per_worker(&app, &[first, second]), [0, 2]);
    assert_eq!(
        app["executorFailures"], 0,
        "a lost executor is not a failure"
    );
    assert_eq!(app["state"], "RUNNING");
    let lost = executors(&app, "LOST")[0];
    assert!(lost["message"].as_str().unwrap().contains("lost"), "{lost}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_that_keeps_failing_fails_its_application_and_driver() {
    let mut cluster = Cluster::start();
    cluster.add_worker(4, "2g").await;
    let driver = cluster.submit(&[
        "--memory",
        "128m",
        "--executors",
        "1",
        "--executor-memory",
        "128m",
        "--executor-retries",
        "2",
        "--executor-command",
        "echo broken >&2; exit 3",
        "--",
        "sleep",
        "600",
    ]);
    // Failing executors end fast: by the time we look, the driver may be stopped already.
    let d = cluster
        .wait_driver(&driver, "an application", LIMIT, |d| !d.app_id.is_empty())
        .await;
    let app = cluster
        .wait_app(&d.app_id, "FAILED", LIMIT, |a| a["state"] == "FAILED")
        .await;
    let failed = executors(&app, "FAILED");
    assert_eq!(failed.len(), 3, "the first and two replacements: {app}");
    assert!(failed.iter().all(|e| e["exitCode"] == 3), "{app}");
    let message = app["message"].as_str().unwrap();
    assert!(
        message.contains("3 executors failed, more than its limit of 2"),
        "{message}"
    );
    let err = stdout(&cluster.hearth(&["logs", "--stderr", &format!("{}/2", d.app_id)]));
    assert_eq!(err.trim(), "broken");
    let d = cluster.wait_state(&driver, "FAILED", LIMIT).await;
    assert!(d.message.contains(&d.app_id), "{}", d.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_application_requests_are_refused_with_the_field_and_change_nothing() {
    let mut cluster = Cluster::start();
    cluster.add_worker(2, "1g").await;
    for (args, field) in [
        (
            vec!["--executors", "0", "--executor-command", "true"],
            "executors",
        ),
        (
            vec![
                "--max-cores",
                "1",
                "--executor-cores",
                "2",
                "--executor-command",
                "true",
            ],
            "max_cores",
        ),
        (vec!["--executors", "2"], "executor_command"),
        (vec!["--executor-cores", "2"], "executor_command"),
        (
            vec![
                "--executors",
                "3",
                "--max-cores",
                "2",
                "--executor-command",
                "true",
            ],
            "executors",
        ),
    ] {
        let mut all = vec!["submit"];
        all.extend(args.iter());
        all.extend(["--", "true"]);
        let out = cluster.hearth(&all);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(field), "{args:?}: {}", stderr(&out));
    }
    // The master checks too, whatever the client.
    let client = cluster.client().await;
    let mut spec = sleeper("bad", 1, 1);
    spec.executor_cores = 2;
    let err = client
        .register_app(RegisterApplicationRequest {
            spec: Some(spec),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_cores"), "{err}");
    let err = client
        .register_app(RegisterApplicationRequest {
            spec: Some(sleeper("orphan", 1, 0)),
            driver_id: "driver-20000101000000-0042".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no driver"), "{err}");

    // Too big for any worker: it waits and says why.
    let mut huge = sleeper("huge", 1, 0);
    huge.executor_cores = 64;
    let huge = register(&client, huge, "").await;
    let app = cluster
        .wait_app(&huge, "a waiting reason", LIMIT, |a| {
            a["waitingReason"]
                .as_str()
                .is_some_and(|r| r.contains("needs 64 cores; the largest worker offers 2"))
        })
        .await;
    assert_eq!(app["state"], "WAITING");

    // Unknown applications.
    for args in [
        vec!["status", "app-20000101000000-0042"],
        vec!["kill", "app-20000101000000-0042"],
        vec!["logs", "app-20000101000000-0042/0"],
    ] {
        let out = cluster.hearth(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr(&out).contains("no application"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let err = client
        .request_executors("app-20000101000000-0042", 1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no application"), "{err}");
    let err = client.request_executors(&huge, 0).await.unwrap_err();
    assert!(err.to_string().contains("count"), "{err}");

    // Only the waiting application exists; nothing was placed.
    let apps = cluster.json("/api/v1/apps");
    assert_eq!(apps.as_array().unwrap().len(), 1, "{apps}");
    assert_eq!(cluster.json("/api/v1/drivers").as_array().unwrap().len(), 0);
    assert_eq!(cluster.json("/json/")["coresused"], 0);

    // Killing it ends it KILLED.
    let out = cluster.hearth(&["kill", &huge]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("KILLED"), "{}", stdout(&out));
}

/// One `name value` line of Prometheus text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `/metrics` says how many workers the waiting work wants (for an autoscaler sizing the
/// worker Deployment) and how many are idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_say_how_many_workers_the_waiting_work_wants() {
    let mut cluster = InProcess::start(|_| {}).await;
    cluster.add_worker(2, 2048).await;
    let client = cluster.client().await;
    let sizing = |cluster: &InProcess| {
        let (code, text) = support::http_get(&cluster.web, "/metrics");
        assert_eq!(code, 200);
        (
            metric(&text, "hearth_workers_wanted"),
            metric(&text, "hearth_workers_idle"),
            metric(&text, "hearth_waiting_too_large"),
        )
    };
    assert_eq!(sizing(&cluster), (Some(1), Some(1), Some(0)));

    // Three drivers of a whole worker each: one runs, two wait and want two more workers;
    // three executors of one core want two more; one driver larger than any worker wants none.
    let whole = DriverSpec {
        command: vec!["sleep".into(), "600".into()],
        cores: 2,
        memory_mb: 512,
        ..Default::default()
    };
    let mut drivers = Vec::new();
    for _ in 0..3 {
        drivers.push(client.submit(whole.clone()).await.expect("submit"));
    }
    let app = register(&client, sleeper("three", 3, 0), "").await;
    let huge = client
        .submit(DriverSpec {
            cores: 16,
            ..whole.clone()
        })
        .await
        .expect("submit");
    wait_for("the wanted workers", LIMIT, || {
        let now = sizing(&cluster);
        async move { (now == (Some(5), Some(0), Some(1))).then_some(()) }
    })
    .await;

    // The work gone, the one worker is idle and wanted.
    for id in drivers.iter().chain([&huge]) {
        let _ = client.kill(id).await;
    }
    client.kill_app(&app).await.expect("kill the application");
    wait_for("one idle worker wanted", LIMIT, || {
        let now = sizing(&cluster);
        async move { (now == (Some(1), Some(1), Some(0))).then_some(()) }
    })
    .await;
}
