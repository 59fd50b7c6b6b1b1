//! Tenants and drivers' own tokens, with real processes and the real `hearth` command: a
//! tenant submits into its queues only, sees everything, and kills or reads its own work only;
//! a driver's token acts on its own driver and application only, and only while it runs; wrong
//! credentials change nothing.

mod support;

use std::{path::Path, process::Output, time::Duration};

use ring::digest::{SHA256, digest};
use support::{Cluster, MasterOptions, output_within, stderr, stdout, wait_for};

const LIMIT: Duration = Duration::from_secs(20);
const ALICE: &str = "alice-token-0b7e";
const BOB: &str = "bob-token-91c2";

fn sha256_hex(text: &str) -> String {
    digest(&SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A cluster with queues `ml` and `adhoc`: alice (token in a file) may submit into `ml`, bob
/// (token given as its hash) into `adhoc`.
fn shared_cluster() -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice_file = dir.path().join("alice");
    std::fs::write(&alice_file, format!("{ALICE}\n")).expect("token file");
    let queues = dir.path().join("queues.yaml");
    std::fs::write(
        &queues,
        format!(
            "queues:\n  - name: ml\n  - name: adhoc\ntenants:\n  - name: alice\n    token_file: {}\n    queues: [ml]\n  - name: bob\n    token_sha256: {}\n    queues: [adhoc]\n",
            alice_file.display(),
            sha256_hex(BOB)
        ),
    )
    .expect("queues file");
    let cluster = Cluster::start_with(MasterOptions {
        extra: vec!["--queues".into(), queues.display().to_string()],
        ..Default::default()
    });
    (cluster, dir)
}

/// Runs `hearth ARGS` against `cluster` holding `token` instead of the cluster secret.
fn hearth_as(cluster: &Cluster, token: &str, args: &[&str]) -> Output {
    let mut cmd = hearth_testkit::process::hearth_command(Path::new(support::HEARTH));
    cmd.args(args)
        .env("HEARTH_MASTER_URL", &cluster.url)
        .env("HEARTH_SECRET", token);
    output_within(&mut cmd, LIMIT)
}

fn submitted(out: &Output) -> String {
    assert!(out.status.success(), "submit: {}", stderr(out));
    stdout(out).lines().next().unwrap_or_default().to_string()
}

fn refused(out: &Output, code: &str, reason: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "not refused: {}", stdout(out));
    assert!(err.contains(code), "expected {code}: {err}");
    assert!(err.contains(reason), "expected {reason:?}: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_submits_into_its_queues_and_acts_on_its_own_work_only() {
    let (mut cluster, _dir) = shared_cluster();
    cluster.add_worker(4, "1g").await;
    let sleeper = [
        "--memory",
        "32m",
        "--",
        "sh",
        "-c",
        "echo secret-output; sleep 600",
    ];

    let mut args = vec!["submit", "--queue", "ml"];
    args.extend(sleeper);
    let alices = submitted(&hearth_as(&cluster, ALICE, &args));
    let mut args = vec!["submit", "--queue", "adhoc"];
    args.extend(sleeper);
    let bobs = submitted(&hearth_as(&cluster, BOB, &args));
    cluster.wait_state(&alices, "RUNNING", LIMIT).await;
    cluster.wait_state(&bobs, "RUNNING", LIMIT).await;

    // Only into its own queues, the default included only when listed.
    refused(
        &hearth_as(
            &cluster,
            ALICE,
            &["submit", "--queue", "adhoc", "--", "true"],
        ),
        "permission denied:",
        "tenant alice may submit into ml; not into adhoc",
    );
    refused(
        &hearth_as(&cluster, ALICE, &["submit", "--", "true"]),
        "permission denied:",
        "not into default",
    );
    // Sees everything.
    let list = hearth_as(&cluster, BOB, &["list", "drivers", "--json"]);
    assert!(stdout(&list).contains(&alices), "{}", stderr(&list));
    let status = hearth_as(&cluster, BOB, &["status", &alices]);
    assert!(
        stdout(&status).contains("queue:      ml"),
        "{}",
        stderr(&status)
    );
    // But neither kills nor reads another's work.
    refused(
        &hearth_as(&cluster, BOB, &["kill", &alices]),
        "permission denied:",
        &format!("{alices} belongs to tenant alice; tenant bob may act on its own work only"),
    );
    refused(
        &hearth_as(&cluster, BOB, &["logs", &alices]),
        "permission denied:",
        "belongs to tenant alice",
    );
    let d = cluster
        .client()
        .await
        .driver(&alices)
        .await
        .expect("driver");
    assert_eq!(d.state, hearth_common::proto::DriverState::Running as i32);
    // Nor its application, nor an id the master has not published yet.
    let with_app = submitted(&hearth_as(
        &cluster,
        ALICE,
        &[
            "submit",
            "--queue",
            "ml",
            "--memory",
            "32m",
            "--executors",
            "1",
            "--executor-memory",
            "32m",
            "--executor-command",
            "sleep 600",
            "--",
            "sleep",
            "600",
        ],
    ));
    let app = wait_for("alice's application", LIMIT, || async {
        let d = cluster.client().await.driver(&with_app).await.ok()?;
        (!d.app_id.is_empty()).then_some(d.app_id)
    })
    .await;
    refused(
        &hearth_as(&cluster, BOB, &["kill", &app]),
        "permission denied:",
        &format!("{app} belongs to tenant alice"),
    );
    refused(
        &hearth_as(&cluster, BOB, &["logs", &format!("{app}/0")]),
        "permission denied:",
        "belongs to tenant alice",
    );
    refused(
        &hearth_as(&cluster, BOB, &["kill", "driver-29991231000000-0000"]),
        "not found:",
        "no driver driver-29991231000000-0000",
    );
    let app_now = cluster.json(&format!("/api/v1/apps/{app}"));
    assert_ne!(app_now["state"], "KILLED", "{app_now}");
    // Its own, yes.
    let logs = wait_for("alice's log", LIMIT, || async {
        let out = hearth_as(&cluster, ALICE, &["logs", &alices]);
        stdout(&out).contains("secret-output").then_some(out)
    })
    .await;
    assert!(logs.status.success());
    assert!(
        hearth_as(&cluster, ALICE, &["kill", &alices])
            .status
            .success()
    );
    cluster.wait_state(&alices, "KILLED", LIMIT).await;
    // The admin's secret still does anything.
    assert!(cluster.hearth(&["kill", &bobs]).status.success());
    // A token nobody has is UNAUTHENTICATED.
    refused(
        &hearth_as(&cluster, "nobody-7", &["list", "drivers"]),
        "not authenticated:",
        "not the master's shared secret, a tenant's token, or a driver's own",
    );
    // And a tenant's token cannot open a worker session.
    let log = cluster.dir.path().join("worker-as-alice.log");
    let mut cmd = hearth_testkit::process::hearth_command(Path::new(support::HEARTH));
    cmd.args([
        "worker",
        "--master",
        &cluster.url,
        "--cores",
        "1",
        "--memory",
        "256m",
    ])
    .args([
        "--work-dir",
        &cluster.dir.path().join("w-alice").display().to_string(),
    ])
    .env("HEARTH_SECRET", ALICE)
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(&log).expect("log"));
    let _worker = hearth_testkit::process::Proc::new(cmd.spawn().expect("spawn"), "worker");
    wait_for("the refusal in the worker's log", LIMIT, || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("the master refused this worker's secret")
            .then_some(())
    })
    .await;
    let workers = cluster.client().await.workers().await.expect("workers");
    assert_eq!(workers.len(), 1, "{workers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drivers_own_token_acts_on_its_own_driver_only_and_only_while_it_runs() {
    let (mut cluster, _dir) = shared_cluster();
    cluster.add_worker(4, "1g").await;
    let other = cluster.submit(&["--queue", "ml", "--memory", "32m", "--", "sleep", "600"]);
    cluster.wait_state(&other, "RUNNING", LIMIT).await;
    let token_file = cluster.dir.path().join("driver-token");
    // The driver tries, with the HEARTH_SECRET it was given, what it may and may not do.
    let script = format!(
        "h={hearth}; printf %s \"$HEARTH_SECRET\" > {token}; \
         $h status $HEARTH_DRIVER_ID >/dev/null 2>&1; echo own-status=$?; \
         $h list drivers >/dev/null 2>/tmp/err-$$; echo list=$?; \
         $h kill {other} 2>&1; echo kill-other=$?; \
         $h submit -- true 2>&1; echo submit=$?; \
         [ \"$HEARTH_SECRET\" = test-secret-4f9a ] && echo has-cluster-secret; echo done",
        hearth = support::HEARTH,
        token = token_file.display(),
    );
    let driver = cluster.submit(&["--memory", "32m", "--", "sh", "-c", &script]);
    let d = cluster.wait_state(&driver, "FINISHED", LIMIT).await;
    assert_eq!(d.exit_code, Some(0));
    let log = wait_for("the driver's output", LIMIT, || async {
        let out = cluster.hearth(&["logs", &driver]);
        let text = stdout(&out);
        text.contains("done").then_some(text)
    })
    .await;
    assert!(log.contains("own-status=0"), "{log}");
    for refused in ["list=0", "kill-other=0", "submit=0"] {
        assert!(!log.contains(refused), "{log}");
    }
    assert!(
        log.contains("cannot kill drivers; a driver ends by exiting"),
        "{log}"
    );
    assert!(log.contains("it cannot submit drivers"), "{log}");
    assert!(!log.contains("has-cluster-secret"), "{log}");
    // The other driver was not touched.
    let o = cluster.client().await.driver(&other).await.expect("driver");
    assert_eq!(o.state, hearth_common::proto::DriverState::Running as i32);
    // Once its attempt has ended, the token is good for nothing.
    let token = std::fs::read_to_string(&token_file).expect("the token the driver saw");
    assert!(token.starts_with("hdt."), "{token}");
    refused(
        &hearth_as(&cluster, &token, &["status", &driver]),
        "not authenticated:",
        "which is not running",
    );
}
