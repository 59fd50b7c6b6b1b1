//! The container images, built from `images/*/Dockerfile` and run: a master and two workers as
//! containers on their own network, with CPU and memory limits, the workers reaching the master
//! by its container name as they would the Service.
//!
//! No registry is reachable here, so the base image is made with debootstrap and imported, the
//! Docker daemon is started (and stopped) by the test, and the Dockerfiles take the binaries
//! this build made (`BINARY_FROM=context`) instead of compiling in their Rust stage.

mod support;

use std::{process::Command, time::Duration};

use hearth_common::{auth::Secret, client::Client, proto::WorkerState};
use support::{
    HEARTH,
    images::{Daemon, build_images},
    stderr, stdout, wait_for,
};

const SECRET: &str = "image-test-secret-29b7";
const LIMIT: Duration = Duration::from_secs(30);

fn published(daemon: &Daemon, container: &str, port: u16) -> String {
    let out = daemon.ok(&["port", container, &format!("{port}/tcp")]);
    out.lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("{container}:{port} not published: {out}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, Docker (docker.io) and debootstrap; ./scripts/test installs them and runs it, or: cargo test -- --include-ignored"]
async fn the_images_build_and_run_a_cluster_of_containers() {
    let built = build_images("test");
    let daemon = &built.daemon;
    for image in ["master", "worker"] {
        let user = daemon.ok(&[
            "image",
            "inspect",
            "-f",
            "{{.Config.User}} {{json .Config.Entrypoint}}",
            &format!("hearth-{image}:test"),
        ]);
        assert_eq!(
            user.trim(),
            "10001:10001 [\"/usr/local/bin/hearth\"]",
            "{image} runs `hearth` as the non-root user"
        );
    }

    daemon.ok(&[
        "network",
        "create",
        "--subnet",
        "198.18.1.0/24",
        "hearth-net",
    ]);
    let secret = format!("HEARTH_SECRET={SECRET}");
    daemon.ok(&[
        "run",
        "-d",
        "--name",
        "hearth-master",
        "--network",
        "hearth-net",
        "--cpus",
        "1",
        "--memory",
        "256m",
        "-e",
        &secret,
        "-p",
        "127.0.0.1::7077",
        "-p",
        "127.0.0.1::8080",
        "hearth-master:test",
    ]);
    // Two workers of different sizes: each must offer exactly its own limits.
    let sizes = [
        ("hearth-worker-1", "1", "384m", 1, 384),
        ("hearth-worker-2", "2", "512m", 2, 512),
    ];
    for (name, cpus, memory, _, _) in sizes {
        daemon.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--hostname",
            name,
            "--network",
            "hearth-net",
            "--cpus",
            cpus,
            "--memory",
            memory,
            "-e",
            &secret,
            "-e",
            "HEARTH_MASTER_URL=http://hearth-master:7077",
            "hearth-worker:test",
        ]);
    }

    let grpc = published(daemon, "hearth-master", 7077);
    let web = published(daemon, "hearth-master", 8080);
    let url = format!("http://{grpc}");
    let client = wait_for("the master container", LIMIT, || {
        let url = url.clone();
        async move {
            Client::connect(&url, Some(&Secret::new(SECRET).expect("secret")))
                .await
                .ok()
        }
    })
    .await;
    let workers = wait_for("both worker containers ALIVE", LIMIT, || {
        let client = client.clone();
        async move {
            let ws = client.workers().await.ok()?;
            (ws.iter()
                .filter(|w| w.state == WorkerState::Alive as i32)
                .count()
                == 2)
                .then_some(ws)
        }
    })
    .await;
    for (name, _, _, cores, memory_mb) in sizes {
        let w = workers
            .iter()
            .find(|w| w.name == name)
            .unwrap_or_else(|| panic!("{name} registered: {workers:?}"));
        assert_eq!(
            (w.cores, w.memory_mb),
            (cores, memory_mb),
            "{name} offers its limits"
        );
        assert!(
            w.host.starts_with("198.18.1."),
            "{name} at its container address: {}",
            w.host
        );
    }
    assert_eq!(support::http_get(&web, "/readyz").0, 200);

    // A driver runs in a worker container, as the non-root user, with python3 there; its log
    // is read through the master.
    let hearth = |args: &[&str]| {
        let out = support::output_within(
            Command::new(HEARTH)
                .args(args)
                .env("HEARTH_MASTER_URL", &url)
                .env("HEARTH_SECRET", SECRET),
            support::CLI_LIMIT,
        );
        assert!(out.status.success(), "hearth {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let driver = hearth(&[
        "submit",
        "--wait",
        "--memory",
        "64m",
        "--",
        "python3",
        "-c",
        "import os; print('hello from', os.environ['HEARTH_DRIVER_ID'], 'as uid', os.getuid())",
    ]);
    let driver = driver.lines().next().expect("driver id").to_string();
    let log = hearth(&["logs", &driver]);
    assert_eq!(log.trim(), format!("hello from {driver} as uid 10001"));

    // The example from the image: a driver in one container, executors in the other, talking
    // over the containers' network.
    let pi = hearth(&[
        "submit",
        "--wait",
        "--memory",
        "128m",
        "--",
        "/opt/hearth/examples/pi",
        "--executors",
        "2",
        "--samples",
        "1000000",
        "--tasks",
        "8",
    ]);
    let pi = pi.lines().next().expect("driver id").to_string();
    let log = hearth(&["logs", &pi]);
    assert!(log.contains("Pi is roughly 3.14"), "{log}");
}
