//! A real master and real workers on loopback: registration, placement, logs, exit codes, kill.

mod support;

use std::time::Duration;

use hearth_common::state_names::{StateName, driver_state};
use support::{Cluster, process_alive, stderr, stdout};

const LIMIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_register_with_their_offers_and_show_in_cli_api_json_and_ui() {
    let mut cluster = Cluster::start();
    let small = cluster.add_worker(2, "1g").await;
    let big = cluster.add_worker(4, "2g").await;

    let out = cluster.hearth(&["list", "workers", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let workers: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let workers = workers.as_array().unwrap();
    assert_eq!(workers.len(), 2);
    for (id, cores, memory) in [(&small, 2, 1024), (&big, 4, 2048)] {
        let w = workers.iter().find(|w| w["id"] == id.as_str()).unwrap();
        assert_eq!(w["state"], "ALIVE");
        assert_eq!(w["cores"], cores);
        assert_eq!(w["memoryMb"], memory);
        assert_eq!(w["coresUsed"], 0);
        assert_eq!(w["host"], "127.0.0.1");
    }

    let (code, body) = cluster.http_get("/api/v1/workers");
    assert_eq!(code, 200);
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api.as_array().unwrap().len(), 2);
    let (code, body) = cluster.http_get(&format!("/api/v1/workers/{small}"));
    assert_eq!(code, 200, "{body}");
    let (code, body) = cluster.http_get("/api/v1/workers/worker-nope");
    assert_eq!(code, 404);
    assert!(body.contains("\"error\""), "{body}");

    let (code, body) = cluster.http_get("/json/");
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["aliveworkers"], 2);
    assert_eq!(json["cores"], 6);
    assert_eq!(json["memory"], 3072);
    assert_eq!(json["status"], "ALIVE");
    assert_eq!(json["url"], cluster.url.as_str());

    let (code, page) = cluster.http_get("/");
    assert_eq!(code, 200);
    assert!(page.contains(&small) && page.contains(&big), "{page}");
    assert_eq!(
        page.matches("class=\"state-ALIVE\">ALIVE</td>").count(),
        2,
        "{page}"
    );
    let (code, page) = cluster.http_get(&format!("/workers/{big}"));
    assert_eq!(code, 200);
    assert!(page.contains("4 cores") || page.contains("0 / 4"), "{page}");

    assert_eq!(cluster.http_get("/healthz").0, 200);
    assert_eq!(cluster.http_get("/readyz").0, 200);
    let (code, metrics) = cluster.http_get("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("hearth_workers{state=\"ALIVE\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_respects_cores_and_memory_and_queues_until_slots_free() {
    let mut cluster = Cluster::start();
    let small = cluster.add_worker(2, "1g").await;
    let big = cluster.add_worker(4, "2g").await;
    let client = cluster.client().await;
    let submit = |cores: &str, memory: &str| {
        cluster.submit(&["--cores", cores, "--memory", memory, "--", "sleep", "60"])
    };

    // A 3-core driver can only go to the 4-core worker.
    let three = submit("3", "256m");
    let d = cluster.wait_state(&three, "RUNNING", LIMIT).await;
    assert_eq!(d.worker_id, big);

    // Another 3-core driver: the cluster has no 3 free cores on one worker, so it waits.
    let queued = submit("3", "256m");
    let d = cluster
        .wait_driver(&queued, "a waiting reason", LIMIT, |d| {
            !d.waiting_reason.is_empty() && d.waiting_reason != "waiting for the scheduler"
        })
        .await;
    assert_eq!(driver_state(d.state).name(), "SUBMITTED");
    assert!(
        d.waiting_reason.contains("needs 3 cores"),
        "{}",
        d.waiting_reason
    );

    // Bigger than any worker: accepted, and waits with the reason.
    let huge = submit("8", "256m");
    let d = cluster
        .wait_driver(&huge, "a waiting reason", LIMIT, |d| {
            d.waiting_reason.contains("largest")
        })
        .await;
    assert_eq!(
        d.waiting_reason,
        "needs 8 cores; the largest worker offers 4"
    );
    let out = cluster.hearth(&["status", &huge]);
    assert!(
        stdout(&out).contains("needs 8 cores; the largest worker offers 4"),
        "{}",
        stdout(&out)
    );
    let (_, page) = cluster.http_get("/");
    assert!(page.contains("needs 8 cores; the largest worker offers 4"));

    // Memory counts as much as cores: 1 core but 3 GiB fits nowhere.
    let fat = submit("1", "3g");
    let d = cluster
        .wait_driver(&fat, "a waiting reason", LIMIT, |d| {
            d.waiting_reason.contains("memory")
        })
        .await;
    assert!(
        d.waiting_reason
            .contains("the largest worker offers 2.0 GiB"),
        "{}",
        d.waiting_reason
    );

    // 1 core / 1.5 GiB fits only the 2 GiB worker, which has 1 free core: it runs there.
    let mem_bound = submit("1", "1536m");
    let d = cluster.wait_state(&mem_bound, "RUNNING", LIMIT).await;
    assert_eq!(d.worker_id, big);
    let w = client
        .workers()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.id == big)
        .unwrap();
    assert_eq!((w.cores_used, w.memory_used_mb), (4, 256 + 1536));
    let w = client
        .workers()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.id == small)
        .unwrap();
    assert_eq!((w.cores_used, w.memory_used_mb), (0, 0));

    // Free the first 3-core slot: the queued driver starts there.
    let out = cluster.hearth(&["kill", &three]);
    assert!(out.status.success(), "{}", stderr(&out));
    cluster.wait_state(&three, "KILLED", LIMIT).await;
    let d = cluster.wait_state(&queued, "RUNNING", LIMIT).await;
    assert_eq!(d.worker_id, big);
    assert!(d.waiting_reason.is_empty());

    // No worker is ever above its offer.
    for w in client.workers().await.unwrap() {
        assert!(
            w.cores_used <= w.cores && w.memory_used_mb <= w.memory_mb,
            "{w:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_logs_and_follow() {
    let mut cluster = Cluster::start();
    cluster.add_worker(2, "1g").await;

    let out = cluster.hearth(&[
        "submit",
        "--wait",
        "--memory",
        "128m",
        "--",
        "sh",
        "-c",
        "echo hello; echo oops >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let id = stdout(&out).lines().next().unwrap().to_string();
    assert!(id.starts_with("driver-"), "first line is the id: {id:?}");
    assert_eq!(stdout(&out).lines().count(), 1, "only the id on stdout");
    let d = cluster.wait_state(&id, "FAILED", LIMIT).await;
    assert_eq!(d.exit_code, Some(3));

    let logs = cluster.hearth(&["logs", &id]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    assert_eq!(stdout(&logs), "hello\n");
    let logs = cluster.hearth(&["logs", "--stderr", &id]);
    assert_eq!(stdout(&logs), "oops\n");

    let out = cluster.hearth(&["submit", "--wait", "--memory", "128m", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ok = stdout(&out).trim().to_string();
    cluster.wait_state(&ok, "FINISHED", LIMIT).await;

    // The driver sees who it is.
    let out = cluster.hearth(&[
        "submit", "--wait", "--cores", "2", "--memory", "300m", "--env", "GREETING=hi there", "--",
        "sh", "-c", "echo $HEARTH_DRIVER_ID $HEARTH_CORES $HEARTH_MEMORY_MB $HEARTH_MASTER_URL \"$GREETING\"; pwd",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let env_id = stdout(&out).trim().to_string();
    let logs = stdout(&cluster.hearth(&["logs", &env_id]));
    let mut lines = logs.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("{env_id} 2 300 {} hi there", cluster.url)
    );
    assert!(
        lines.next().unwrap().ends_with(&env_id),
        "runs in its own work dir: {logs}"
    );
    // Values of environment variables never leave the master: not over gRPC, not in the CLI's
    // JSON, the API or the pages. The value is nowhere in the command, so only the environment
    // could carry it.
    let secret_value = "s3cret-value-9d4e";
    let with_secret = cluster.submit(&[
        "--memory",
        "64m",
        "--env",
        &format!("TOKEN={secret_value}"),
        "--executors",
        "1",
        "--executor-memory",
        "64m",
        "--executor-env",
        &format!("EXECUTOR_TOKEN={secret_value}"),
        "--executor-command",
        "true",
        "--",
        "sleep",
        "1",
    ]);
    cluster.wait_state(&with_secret, "FINISHED", LIMIT).await;
    let client = cluster.client().await;
    let seen = client.driver(&with_secret).await.expect("the driver");
    let spec = seen.spec.clone().expect("the spec is shown");
    assert!(
        spec.env.is_empty(),
        "environment values sent back: {:?}",
        spec.env
    );
    assert!(
        seen.env_names.iter().any(|n| n == "TOKEN"),
        "{:?}",
        seen.env_names
    );
    let app_spec = seen.application.clone().expect("the application asked for");
    assert!(
        app_spec.env.is_empty(),
        "executor environment sent back: {:?}",
        app_spec.env
    );
    let app = client.app(&seen.app_id).await.expect("the application");
    assert!(!format!("{app:?}").contains(secret_value), "{app:?}");
    assert!(!format!("{:?}", client.apps().await.expect("apps")).contains(secret_value));
    let listed = client.drivers().await.expect("drivers");
    assert!(!format!("{listed:?}").contains(secret_value));
    for view in [
        stdout(&cluster.hearth(&["status", "--json", &with_secret])),
        stdout(&cluster.hearth(&["list", "drivers", "--json"])),
        cluster
            .http_get(&format!("/api/v1/drivers/{with_secret}"))
            .1,
        cluster.http_get("/api/v1/drivers").1,
        cluster.http_get(&format!("/drivers/{with_secret}")).1,
        cluster.http_get("/json/").1,
        cluster.http_get(&format!("/api/v1/apps/{}", seen.app_id)).1,
        cluster.http_get(&format!("/apps/{}", seen.app_id)).1,
        stdout(&cluster.hearth(&["status", "--json", &seen.app_id])),
    ] {
        assert!(
            view.contains(&with_secret) || view.contains("TOKEN"),
            "{view}"
        );
        assert!(!view.contains(secret_value), "the value leaked: {view}");
    }
    // The state file keeps the values (relaunches need them): only the master's user reads it.
    let mode = |path: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&cluster.state_dir()), 0o700, "the state directory");
    assert_eq!(
        mode(&cluster.state_dir().join("hearth.redb")),
        0o600,
        "the state file"
    );
    // The journal holds each turn's records, specs included, until a checkpoint.
    assert_eq!(
        mode(&cluster.state_dir().join("hearth.journal")),
        0o600,
        "the state journal"
    );

    // --follow streams output as it is written and ends when the driver ends.
    let slow = cluster.submit(&[
        "--memory",
        "128m",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4; do echo line$i; sleep 0.3; done",
    ]);
    cluster.wait_state(&slow, "RUNNING", LIMIT).await;
    let followed = cluster.hearth(&["logs", "--follow", &slow]);
    assert!(followed.status.success(), "{}", stderr(&followed));
    assert_eq!(stdout(&followed), "line1\nline2\nline3\nline4\n");
    let d = cluster.wait_state(&slow, "FINISHED", LIMIT).await;
    assert_eq!(d.exit_code, Some(0));

    // A command that cannot start is an ERROR with the reason.
    let out = cluster.hearth(&[
        "submit",
        "--wait",
        "--memory",
        "128m",
        "--",
        "/nonexistent/program",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let bad = stdout(&out).trim().to_string();
    let d = cluster.wait_state(&bad, "ERROR", LIMIT).await;
    assert!(d.message.contains("cannot start"), "{}", d.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_stops_the_whole_process_group_and_escalates_to_sigkill() {
    let mut cluster = Cluster::start();
    cluster.add_worker(2, "1g").await;

    // The driver starts a child in the background; both must die.
    let id = cluster.submit(&[
        "--memory",
        "128m",
        "--",
        "sh",
        "-c",
        "sleep 300 & echo $! ; echo $$ ; wait",
    ]);
    cluster.wait_state(&id, "RUNNING", LIMIT).await;
    let pids = cluster.wait_pids(&id, 2).await;
    assert!(pids.iter().all(|&p| process_alive(p)));
    let out = cluster.hearth(&["kill", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = cluster.wait_state(&id, "KILLED", LIMIT).await;
    assert!(d.message.contains("killed by a user"), "{}", d.message);
    for pid in pids {
        support::wait_for(&format!("pid {pid} gone"), LIMIT, || async move {
            (!process_alive(pid)).then_some(())
        })
        .await;
    }

    // A driver that ignores SIGTERM is killed with SIGKILL after the grace period (1 s here).
    let stubborn = cluster.submit(&[
        "--memory",
        "128m",
        "--",
        "sh",
        "-c",
        "trap '' TERM; echo $$; while true; do sleep 0.1; done",
    ]);
    cluster.wait_state(&stubborn, "RUNNING", LIMIT).await;
    let shell = cluster.wait_pids(&stubborn, 1).await[0];
    let started = std::time::Instant::now();
    assert!(cluster.hearth(&["kill", &stubborn]).status.success());
    cluster.wait_state(&stubborn, "KILLED", LIMIT).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    // The shell that ignored SIGTERM, and every process of its group, is gone: SIGKILL came.
    support::wait_for(&format!("{stubborn}'s processes gone"), LIMIT, || {
        let left = support::driver_processes(&stubborn);
        async move { left.is_empty().then_some(()) }
    })
    .await;
    assert!(!process_alive(shell), "pid {shell} survived the kill");

    // Killing a driver that already ended is refused, and changes nothing.
    let client = cluster.client().await;
    let before = client.driver(&stubborn).await.expect("the driver");
    let out = cluster.hearth(&["kill", &stubborn]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already ended (KILLED)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(client.driver(&stubborn).await.expect("the driver"), before);

    // A waiting driver is killed at once.
    let waiting = cluster.submit(&["--cores", "64", "--", "true"]);
    assert!(cluster.hearth(&["kill", &waiting]).status.success());
    cluster.wait_state(&waiting, "KILLED", LIMIT).await;
}
