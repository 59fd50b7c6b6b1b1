//! Named resources (GPUs) with real processes: workers offering `gpu` addresses (given, found
//! as device files, printed by a discovery program); drivers and executors asking for them get
//! disjoint addresses in their environment and give them back; over-asking waits with a reason
//! that names the resource; `/json/` speaks Spark's resource fields; a broken discovery program
//! stops the worker with its output quoted; assignments survive a master restart.

mod support;

use std::{collections::BTreeSet, process::Command, time::Duration};

use hearth_common::proto::WorkerState;
use serde_json::{Value, json};
use support::*;

const LIMIT: Duration = Duration::from_secs(20);

/// A driver that prints the GPUs it was given, then runs on.
const SHOW: &str =
    "echo \"gpu=$HEARTH_RESOURCE_GPU cuda=${CUDA_VISIBLE_DEVICES-unset}\"; exec sleep 600";

/// (worker, address) of every GPU the API says `driver` holds.
fn driver_gpus(cluster: &Cluster, driver: &str) -> Vec<(String, String)> {
    let d = cluster.json(&format!("/api/v1/drivers/{driver}"));
    let worker = d["workerId"].as_str().unwrap_or_default().to_string();
    d["resourceAddresses"]["gpu"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| (worker.clone(), x.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Submits a [`SHOW`] driver asking for `gpus` GPUs; its id.
fn show_gpus(cluster: &Cluster, gpus: u32) -> String {
    let ask = format!("gpu={gpus}");
    cluster.submit(&[
        "--memory",
        "64m",
        "--resource",
        &ask,
        "--",
        "sh",
        "-c",
        SHOW,
    ])
}

async fn printed(cluster: &Cluster, id: &str) -> String {
    wait_for(&format!("{id} to print its GPUs"), LIMIT, || {
        let out = stdout(&cluster.hearth(&["logs", id]));
        async move { out.contains("gpu=").then(|| out.trim().to_string()) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpus_are_split_between_drivers_and_executors_and_given_back() {
    let mut cluster = Cluster::start();
    // One worker is told its GPUs; the other finds them as device files.
    let devices = tempfile::tempdir().expect("device dir");
    for f in ["nvidia0", "nvidia1", "nvidiactl"] {
        std::fs::write(devices.path().join(f), b"").expect("device file");
    }
    let a = cluster.spawn_worker(4, "4g", &["--kill-grace", "1s", "--resource", "gpu=0,1"]);
    let dir = devices.path().display().to_string();
    let b = cluster.spawn_worker(4, "4g", &["--kill-grace", "1s", "--device-dir", &dir]);
    for w in [&a, &b] {
        cluster.wait_worker(w, WorkerState::Alive, LIMIT).await;
    }
    let w = cluster.json(&format!("/api/v1/workers/{b}"));
    assert_eq!(w["resources"], json!({ "gpu": ["0", "1"] }));

    // Two drivers with a GPU each, and an application of two executors with a GPU each.
    let d1 = show_gpus(&cluster, 1);
    let d2 = show_gpus(&cluster, 1);
    let app_driver = cluster.submit_app(
        2,
        "echo \"gpu=$HEARTH_RESOURCE_GPU cuda=$CUDA_VISIBLE_DEVICES\"; exec sleep 600",
        &["--executor-resource", "gpu=1"],
        &["sleep", "600"],
    );
    for id in [&d1, &d2, &app_driver] {
        cluster.wait_state(id, "RUNNING", LIMIT).await;
    }
    let app = cluster
        .wait_driver(&app_driver, "its application", LIMIT, |d| {
            !d.app_id.is_empty()
        })
        .await
        .app_id;
    let app_view = cluster
        .wait_app(&app, "two executors running", LIMIT, |a| {
            a["executors"]
                .as_array()
                .is_some_and(|e| e.iter().filter(|e| e["state"] == "RUNNING").count() == 2)
        })
        .await;

    // Four GPUs, four holders, no address twice; each process sees exactly its own.
    let mut held = BTreeSet::new();
    for id in [&d1, &d2] {
        let gpus = driver_gpus(&cluster, id);
        assert_eq!(gpus.len(), 1, "{id}: {gpus:?}");
        let (_, address) = &gpus[0];
        assert_eq!(
            printed(&cluster, id).await,
            format!("gpu={address} cuda={address}")
        );
        assert!(held.insert(gpus[0].clone()), "{gpus:?} given twice");
    }
    for e in app_view["executors"].as_array().expect("executors") {
        let worker = e["workerId"].as_str().expect("worker").to_string();
        let given = e["resources"]["gpu"].as_array().expect("gpu given");
        assert_eq!(given.len(), 1, "{e}");
        let address = given[0].as_str().expect("address").to_string();
        let id = format!("{app}/{}", e["id"]);
        assert_eq!(
            printed(&cluster, &id).await,
            format!("gpu={address} cuda={address}")
        );
        assert!(held.insert((worker, address)), "given twice: {held:?}");
    }
    assert_eq!(held.len(), 4);
    let (_, metrics) = cluster.http_get("/metrics");
    assert!(
        metrics.contains("hearth_resources{name=\"gpu\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hearth_resources_used{name=\"gpu\"} 4"),
        "{metrics}"
    );
    let list = stdout(&cluster.hearth(&["list", "workers"]));
    assert_eq!(list.matches("gpu 2/2").count(), 2, "{list}");
    // The pages: each worker's GPUs in use on the overview and its own page, each executor's
    // and driver's on theirs.
    let (_, overview) = cluster.http_get("/");
    assert_eq!(
        overview.matches("gpu 2 / 2 (in use: 0,1)").count(),
        2,
        "{overview}"
    );
    let (_, page) = cluster.http_get(&format!("/workers/{a}"));
    assert!(
        page.contains("id=\"resources\">gpu 2 / 2 (in use: 0,1)"),
        "{page}"
    );
    let (_, page) = cluster.http_get(&format!("/apps/{app}"));
    assert_eq!(
        page.matches("<td class=\"resources\">gpu ").count(),
        2,
        "{page}"
    );
    let (_, page) = cluster.http_get(&format!("/drivers/{d1}"));
    assert!(page.contains("1 gpu (given gpu "), "{page}");

    // A process that asked for none, on a worker with GPUs, is kept off them.
    let plain = cluster.submit(&["--memory", "64m", "--", "sh", "-c", SHOW]);
    cluster.wait_state(&plain, "RUNNING", LIMIT).await;
    assert_eq!(printed(&cluster, &plain).await, "gpu= cuda=");

    // Over-asking waits, saying which resource is short.
    let more = show_gpus(&cluster, 1);
    let too_many = cluster.submit(&["--memory", "64m", "--resource", "gpu=3", "--", "sleep", "1"]);
    let d = cluster
        .wait_driver(&more, "waiting for a gpu", LIMIT, |d| {
            !d.waiting_reason.is_empty()
        })
        .await;
    assert_eq!(
        d.waiting_reason,
        "needs 1 gpu; the most free on any worker is 0"
    );
    assert_eq!(d.waiting_code, "NO_FREE_SLOTS");
    let d = cluster
        .wait_driver(&too_many, "too large", LIMIT, |d| {
            !d.waiting_reason.is_empty()
        })
        .await;
    assert_eq!(d.waiting_code, "TOO_LARGE");
    assert!(
        d.waiting_reason.contains("the most any has is 2"),
        "{}",
        d.waiting_reason
    );

    // Spark's JSON: per worker, the cluster, the drivers and the applications.
    let spark = cluster.json("/json/");
    let worker_a = spark["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == a.as_str()))
        .expect("worker a")
        .clone();
    assert_eq!(
        worker_a["resources"],
        json!({ "gpu": { "name": "gpu", "addresses": ["0", "1"] } })
    );
    assert_eq!(
        worker_a["resourcesused"]["gpu"]["addresses"],
        json!(["0", "1"])
    );
    assert_eq!(worker_a["resourcesfree"]["gpu"]["addresses"], json!([]));
    assert_eq!(spark["resources"].as_array().map(Vec::len), Some(2));
    assert_eq!(spark["resourcesused"].as_array().map(Vec::len), Some(2));
    let driver = spark["activedrivers"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["id"] == d1.as_str()))
        .expect("d1 in activedrivers");
    assert_eq!(driver["resources"]["gpu"]["name"], "gpu");
    assert_eq!(
        driver["resources"]["gpu"]["addresses"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let spark_app = spark["activeapps"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == app.as_str()))
        .expect("the application");
    assert_eq!(
        spark_app["resourcesperexecutor"],
        json!([{ "name": "gpu", "amount": 1 }])
    );

    // A GPU given back goes to the driver that waited for it.
    let (freed_worker, freed) = driver_gpus(&cluster, &d1).remove(0);
    let out = cluster.hearth(&["kill", &d1]);
    assert!(out.status.success(), "{}", stderr(&out));
    cluster.wait_state(&more, "RUNNING", LIMIT).await;
    assert_eq!(
        driver_gpus(&cluster, &more),
        vec![(freed_worker, freed.clone())]
    );
    assert_eq!(
        printed(&cluster, &more).await,
        format!("gpu={freed} cuda={freed}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_program_is_used_and_a_broken_one_stops_the_worker_with_its_output() {
    let mut cluster = Cluster::start();
    let scripts = tempfile::tempdir().expect("dir");
    let good = scripts.path().join("good.sh");
    std::fs::write(
        &good,
        "#!/bin/sh\necho '{\"name\":\"gpu\",\"addresses\":[\"3\",\"5\"]}'\necho '{\"name\":\"fpga\",\"addresses\":[\"f0\"]}'\n",
    )
    .expect("script");
    let broken = scripts.path().join("broken.sh");
    std::fs::write(&broken, "#!/bin/sh\necho 'no devices here, sorry'\n").expect("script");
    for s in [&good, &broken] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(s, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let program = good.display().to_string();
    let w = cluster.spawn_worker(2, "1g", &["--resource-discovery", &program]);
    cluster.wait_worker(&w, WorkerState::Alive, LIMIT).await;
    let view = cluster.json(&format!("/api/v1/workers/{w}"));
    assert_eq!(
        view["resources"],
        json!({ "fpga": ["f0"], "gpu": ["3", "5"] })
    );
    let id = show_gpus(&cluster, 2);
    assert_eq!(printed(&cluster, &id).await, "gpu=3,5 cuda=3,5");

    let mut cmd = Command::new(HEARTH);
    cmd.args([
        "worker",
        "--master",
        &cluster.url,
        "--webui-port",
        "0",
        "--bind",
        "127.0.0.1",
    ])
    .arg("--work-dir")
    .arg(scripts.path().join("work"))
    .arg("--resource-discovery")
    .arg(&broken)
    .env(
        "HEARTH_SECRET",
        cluster.secret.as_deref().unwrap_or_default(),
    );
    let out = output_within(&mut cmd, LIMIT);
    assert!(
        !out.status.success(),
        "a broken discovery program must stop the worker"
    );
    let err = stderr(&out);
    assert!(err.contains("no devices here, sorry"), "{err}");
    assert!(err.contains("resource discovery"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_survive_a_master_restart_and_are_never_given_twice() {
    let mut cluster = Cluster::start();
    let w = cluster.spawn_worker(4, "2g", &["--kill-grace", "1s", "--resource", "gpu=0,1"]);
    cluster.wait_worker(&w, WorkerState::Alive, LIMIT).await;
    let d1 = show_gpus(&cluster, 1);
    let d2 = show_gpus(&cluster, 1);
    for id in [&d1, &d2] {
        cluster.wait_state(id, "RUNNING", LIMIT).await;
    }
    let before: Vec<_> = [&d1, &d2]
        .iter()
        .map(|d| driver_gpus(&cluster, d))
        .collect();

    cluster.restart_master(&[]);
    cluster
        .wait_worker(&w, WorkerState::Alive, Duration::from_secs(30))
        .await;
    let after: Vec<_> = [&d1, &d2]
        .iter()
        .map(|d| driver_gpus(&cluster, d))
        .collect();
    assert_eq!(before, after, "adopted work keeps its addresses");
    let view: Value = cluster.json(&format!("/api/v1/workers/{w}"));
    assert_eq!(view["resourcesUsed"], json!({ "gpu": ["0", "1"] }));
    // Nothing is free: a new ask waits rather than being given a held address.
    let d3 = show_gpus(&cluster, 1);
    let d = cluster
        .wait_driver(&d3, "waiting for a gpu", LIMIT, |d| {
            !d.waiting_reason.is_empty()
        })
        .await;
    assert_eq!(
        d.waiting_reason,
        "needs 1 gpu; the most free on any worker is 0"
    );
    // Given back, it goes to the new driver.
    let out = cluster.hearth(&["kill", &d2]);
    assert!(out.status.success(), "{}", stderr(&out));
    cluster.wait_state(&d3, "RUNNING", LIMIT).await;
    assert_eq!(driver_gpus(&cluster, &d3), before[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_caps_the_gpus_its_work_holds() {
    let (mut cluster, _queues) =
        Cluster::start_with_queues("queues:\n  - name: ml\n    max: {resources: {gpu: 1}}\n");
    let w = cluster.spawn_worker(4, "2g", &["--kill-grace", "1s", "--resource", "gpu=0,1"]);
    cluster.wait_worker(&w, WorkerState::Alive, LIMIT).await;
    let gpu_in = |queue: &str| {
        cluster.submit(&[
            "--memory",
            "64m",
            "--queue",
            queue,
            "--resource",
            "gpu=1",
            "--",
            "sleep",
            "600",
        ])
    };
    let first = gpu_in("ml");
    let second = gpu_in("ml");
    cluster.wait_state(&first, "RUNNING", LIMIT).await;
    let d = cluster
        .wait_driver(&second, "held back by its queue's cap", LIMIT, |d| {
            !d.waiting_reason.is_empty()
        })
        .await;
    assert_eq!(d.waiting_code, "QUEUE_CAP");
    assert_eq!(
        d.waiting_reason,
        "queue ml is at its max of 1 gpu (1 in use)"
    );
    // The other GPU is free for another queue's work.
    let other = gpu_in("default");
    cluster.wait_state(&other, "RUNNING", LIMIT).await;
}
