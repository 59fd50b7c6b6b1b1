//! Real frameworks on executors, with the examples under `examples/` as users run them and
//! the frameworks installed from Debian (python3-distributed, python3-torch; the README's test
//! command installs them): a Dask driver that grows and shrinks its own workers, and a
//! torchrun gang whose members all-reduce using Hearth's ranks and rank 0's host.

mod support;

use std::time::Duration;

use hearth_common::proto::WorkerState;
use support::*;

const LIMIT: Duration = Duration::from_secs(30);
/// Debian's Python, where Debian's Dask and PyTorch are installed.
const PYTHON: &str = "/usr/bin/python3";

fn example(path: &str) -> String {
    format!("{}/examples/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn require(module: &str, package: &str) {
    let ok = std::process::Command::new(PYTHON)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the framework tests need Debian's {package} for {PYTHON} \
         (apt-get install -y {package}; scripts/test installs it)"
    );
}

/// A cluster of two 2-core workers.
async fn two_workers() -> Cluster {
    let mut cluster = Cluster::start();
    for _ in 0..2 {
        let w = cluster.spawn_worker(2, "4g", &["--kill-grace", "2s"]);
        cluster.wait_worker(&w, WorkerState::Alive, LIMIT).await;
    }
    cluster
}

/// Submits `examples/{name}/driver.py` with executors running `examples/{name}/executor.sh`
/// under Debian's Python, `options` before the command.
fn submit_example(cluster: &Cluster, name: &str, options: &[&str]) -> String {
    let python_env = format!("PYTHON={PYTHON}");
    let executor = format!("exec sh {}", example(&format!("{name}/executor.sh")));
    let driver = example(&format!("{name}/driver.py"));
    let mut args = options.to_vec();
    args.extend([
        "--executor-env",
        &python_env,
        "--executor-command",
        &executor,
        "--",
        PYTHON,
        &driver,
    ]);
    cluster.submit(&args)
}

/// Waits (up to 3 minutes: the frameworks start slowly) until `driver` has ended.
async fn wait_ended(cluster: &Cluster, driver: &str) -> hearth_common::proto::Driver {
    use hearth_common::proto::DriverState::{Relaunching, Running, Submitted};
    cluster
        .wait_driver(driver, "the driver to end", Duration::from_secs(180), |d| {
            !matches!(
                hearth_common::state_names::driver_state(d.state),
                Submitted | Running | Relaunching
            )
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dask_driver_computes_and_grows_and_shrinks_its_workers() {
    require("distributed", "python3-distributed");
    let cluster = two_workers().await;
    let port_env = format!("DASK_SCHEDULER_PORT={}", free_port());
    let driver = submit_example(
        &cluster,
        "dask",
        &[
            "--memory",
            "512m",
            "--env",
            &port_env,
            "--executors",
            "1",
            "--max-cores",
            "3",
            "--executor-memory",
            "512m",
            "--executor-env",
            &port_env,
        ],
    );
    let d = wait_ended(&cluster, &driver).await;
    let out = stdout(&cluster.hearth(&["logs", &driver]));
    let err = stdout(&cluster.hearth(&["logs", "--stderr", &driver]));
    assert_eq!(
        hearth_common::state_names::driver_state(d.state),
        hearth_common::proto::DriverState::Finished,
        "{out}\n{err}"
    );
    // A real computation's results, with one worker, three, then one again.
    for line in [
        "workers=1",
        "sum=499999500000",
        "workers=3",
        "squares=332833500",
        "after=10000",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}\n{err}");
    }
    assert!(out.find("workers=3") < out.rfind("workers=1"), "{out}");
    // Hearth's side: three executors were launched; two were ended at the driver's request.
    let app = cluster.json(&format!("/api/v1/apps/{}", d.app_id));
    let executors = app["executors"].as_array().expect("executors");
    assert_eq!(executors.len(), 3, "{app}");
    let by_driver: Vec<u64> = executors
        .iter()
        .filter(|e| e["state"] == "KILLED" && e["message"] == "killed by its application")
        .filter_map(|e| e["id"].as_u64())
        .collect();
    assert_eq!(by_driver, vec![1, 2], "{app}");
    // Each executor ran a Dask worker under its own name.
    let log = stderr_of(&cluster, &format!("{}/0", d.app_id));
    assert!(
        log.contains("Start worker") || log.contains("Starting Worker"),
        "{log}"
    );
}

fn stderr_of(cluster: &Cluster, id: &str) -> String {
    stdout(&cluster.hearth(&["logs", "--stderr", id]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torchrun_gang_all_reduces_with_hearths_ranks() {
    require("torch", "python3-torch");
    let cluster = two_workers().await;
    let port = format!("TORCH_MASTER_PORT={}", free_port());
    let driver = submit_example(
        &cluster,
        "torchrun",
        &[
            "--memory",
            "256m",
            "--executors",
            "3",
            "--gang",
            "--executor-memory",
            "1g",
            "--executor-env",
            &port,
        ],
    );
    let d = wait_ended(&cluster, &driver).await;
    let out = stdout(&cluster.hearth(&["logs", &driver]));
    assert_eq!(
        hearth_common::state_names::driver_state(d.state),
        hearth_common::proto::DriverState::Finished,
        "{out}"
    );
    assert!(out.contains("members: EXITED, EXITED, EXITED"), "{out}");
    let app = cluster.json(&format!("/api/v1/apps/{}", d.app_id));
    for e in app["executors"].as_array().expect("executors") {
        let id = format!("{}/{}", d.app_id, e["id"]);
        let rank = e["rank"].as_u64().expect("rank");
        let log = stdout(&cluster.hearth(&["logs", &id]));
        // torch's rank is Hearth's, and the sum is 1 + 2 + 3 on every member.
        let line = format!("rank={rank} hearth_rank={rank} world=3 allreduce=6 expected=6");
        assert!(log.contains(&line), "{id}: {line:?} missing from {log}");
    }
}
