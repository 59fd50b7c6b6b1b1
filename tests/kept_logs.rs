//! Logs that outlive their worker: real master and worker processes; drivers and executors
//! write known text; their worker is stopped (SIGTERM, or SIGKILL after the text was shipped);
//! `hearth logs`, the log pages and `/metrics` still show it, marked as kept, and the master's
//! store stays within its bound.

mod support;

use std::time::Duration;

use hearth_common::proto::WorkerState;
use support::*;

const LIMIT: Duration = Duration::from_secs(20);

async fn app_of(cluster: &Cluster, driver: &str) -> String {
    cluster
        .wait_driver(driver, "an application", LIMIT, |d| !d.app_id.is_empty())
        .await
        .app_id
}

/// Waits until `text` is in the log `hearth logs ARGS` prints.
async fn wait_log(cluster: &Cluster, args: &[&str], text: &str) -> std::process::Output {
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    wait_for(&format!("{text:?} in hearth {all:?}"), LIMIT, || {
        let out = cluster.hearth(&all);
        async move { stdout(&out).contains(text).then_some(out) }
    })
    .await
}

/// Waits until the master keeps at least `n` streams (what was shipped is written).
async fn wait_kept(cluster: &Cluster, n: f64) {
    wait_for(&format!("{n} streams kept"), LIMIT, || {
        let kept = metric(cluster, "hearth_kept_log_streams");
        async move { (kept >= n).then_some(()) }
    })
    .await
}

fn metric(cluster: &Cluster, name: &str) -> f64 {
    let (_, text) = cluster.http_get("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_ended_work_outlive_a_worker_stopped_with_sigterm() {
    let mut cluster = Cluster::start();
    let worker = cluster.spawn_worker(4, "2g", &["--kill-grace", "1s"]);
    cluster
        .wait_worker(&worker, WorkerState::Alive, LIMIT)
        .await;
    let driver = cluster.submit_app(
        1,
        "echo executor-wrote-this; echo executor-complained >&2; exec sleep 600",
        &[],
        &[
            "sh",
            "-c",
            "echo driver-wrote-this; echo driver-complained >&2; sleep 3",
        ],
    );
    let app = app_of(&cluster, &driver).await;
    let executor = format!("{app}/0");
    wait_log(&cluster, &[&executor], "executor-wrote-this").await;
    cluster.wait_state(&driver, "FINISHED", LIMIT).await;

    // SIGTERM: the worker decommissions and leaves; nothing runs there any more.
    let status = cluster
        .worker_proc(&worker)
        .terminate(Duration::from_secs(20));
    assert!(status.is_some(), "the worker did not exit on SIGTERM");
    cluster
        .wait_worker(&worker, WorkerState::Decommissioned, LIMIT)
        .await;
    // stdout and stderr of the driver and of the executor.
    wait_kept(&cluster, 4.0).await;

    let out = cluster.hearth(&["logs", &driver]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "driver-wrote-this\n");
    assert!(
        stderr(&out).contains("tail the master kept"),
        "{}",
        stderr(&out)
    );
    let out = cluster.hearth(&["logs", "--stderr", &driver]);
    assert_eq!(stdout(&out), "driver-complained\n", "{}", stderr(&out));
    let out = cluster.hearth(&["logs", &executor]);
    assert_eq!(stdout(&out), "executor-wrote-this\n", "{}", stderr(&out));
    let out = cluster.hearth(&["logs", "--stderr", &executor]);
    assert_eq!(stdout(&out), "executor-complained\n", "{}", stderr(&out));

    let (status, page) = cluster.http_get(&format!("/drivers/{driver}/logs/stdout"));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("driver-wrote-this"), "{page}");
    assert!(page.contains("id=\"log-kept\""), "{page}");
    assert!(page.contains("All 18 bytes were kept."), "{page}");
    let (status, page) = cluster.http_get(&format!("/apps/{app}/executors/0/logs/stderr"));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("executor-complained"), "{page}");
    assert!(page.contains("Kept by the master"), "{page}");
    // The driver page still links its logs.
    let (_, page) = cluster.http_get(&format!("/drivers/{driver}"));
    assert!(page.contains("id=\"stdout-link\""), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_shipped_before_a_sigkill_is_kept_and_said_to_be_partial() {
    let mut cluster = Cluster::start();
    let worker = cluster.spawn_worker(
        4,
        "2g",
        &["--kill-grace", "1s", "--log-ship-interval", "1s"],
    );
    cluster
        .wait_worker(&worker, WorkerState::Alive, LIMIT)
        .await;
    let driver = cluster.submit_app(
        1,
        "echo executor-before-the-crash; exec sleep 600",
        &[],
        &["sh", "-c", "echo driver-before-the-crash; exec sleep 600"],
    );
    let app = app_of(&cluster, &driver).await;
    let executor = format!("{app}/0");
    wait_log(&cluster, &[&driver], "driver-before-the-crash").await;
    wait_log(&cluster, &[&executor], "executor-before-the-crash").await;
    // A ship interval or two pass: what was written is on the master (the two stdouts).
    wait_kept(&cluster, 2.0).await;
    cluster.worker_proc(&worker).kill();
    cluster.wait_worker(&worker, WorkerState::Dead, LIMIT).await;

    let out = cluster.hearth(&["logs", &driver]);
    assert_eq!(
        stdout(&out),
        "driver-before-the-crash\n",
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("master kept"), "{}", stderr(&out));
    let out = cluster.hearth(&["logs", &executor]);
    assert_eq!(
        stdout(&out),
        "executor-before-the-crash\n",
        "{}",
        stderr(&out)
    );
    let (status, page) = cluster.http_get(&format!("/drivers/{driver}/logs/stdout"));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("driver-before-the-crash"), "{page}");
    assert!(
        page.contains("still running when last shipped"),
        "the page says the end may be missing: {page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_store_stays_within_its_bound_the_newest_logs_staying() {
    let mut cluster = Cluster::start_with(MasterOptions {
        extra: vec!["--kept-logs".into(), "256k".into()],
        ..Default::default()
    });
    let worker = cluster.spawn_worker(4, "4g", &["--kill-grace", "1s", "--log-tail", "64k"]);
    cluster
        .wait_worker(&worker, WorkerState::Alive, LIMIT)
        .await;
    // 16 drivers, each writing 100 KiB: a 64 KiB tail of each is kept while there is room.
    let mut drivers = Vec::new();
    for i in 0..16 {
        let script = format!("head -c 102400 /dev/zero | tr '\\0' x; echo; echo end-of-driver-{i}");
        drivers.push(cluster.submit(&["--memory", "64m", "--", "sh", "-c", &script]));
    }
    for id in &drivers {
        cluster.wait_state(id, "FINISHED", LIMIT).await;
    }
    let newest = drivers.last().expect("drivers").clone();
    // Every driver's end was shipped: the store fills to its bound and stays within it.
    let bytes = wait_for("the store filled", LIMIT, || {
        let bytes = metric(&cluster, "hearth_kept_logs_bytes");
        async move { (bytes >= 3.0 * 65536.0).then_some(bytes) }
    })
    .await;
    assert_eq!(metric(&cluster, "hearth_kept_logs_limit_bytes"), 262144.0);
    assert!(
        (3.0 * 65536.0..=262144.0).contains(&bytes),
        "kept {bytes} bytes"
    );

    cluster.worker_proc(&worker).kill();
    cluster.wait_worker(&worker, WorkerState::Dead, LIMIT).await;
    // The newest is kept, cut to the worker's 64 KiB tail; the oldest went to make room.
    let out = wait_log(&cluster, &[&newest], "end-of-driver-15").await;
    assert!(
        stdout(&out).ends_with("end-of-driver-15\n"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out).len(), 65536);
    assert!(
        // 102,400 x's, a newline and "end-of-driver-15\n".
        stderr(&out).contains(&format!("the first {} bytes were cut", 102_418 - 65_536)),
        "{}",
        stderr(&out)
    );
    let out = cluster.hearth(&["logs", &drivers[0]]);
    assert!(
        !out.status.success(),
        "the oldest log was not cut: {}",
        stdout(&out).len()
    );
    assert!(stderr(&out).contains("kept none"), "{}", stderr(&out));
}
