//! Hearth on a live Kubernetes: the single-node cluster of `scripts/kube` (a real API server,
//! scheduler, controllers, kubelet, containerd, kube-proxy and CoreDNS), driven with the real
//! `kubectl` through what the README tells a user to do: create the manifests and the secret,
//! browse the UI through a port-forward and through `kubectl proxy`, submit from the client pod
//! and through a port-forward of gRPC, scale the workers up and down, delete the master pod,
//! and restart the workers with work running.
//!
//! The node has 2 CPUs, so the pods' CPU and memory *requests* are shrunk after the manifests
//! are created (`kubectl set resources`, as the README says for a small node); their limits,
//! which the workers offer, stay as the manifests say.
//!
//! What this cluster cannot show: the NetworkPolicy (a plain bridge CNI does not enforce it),
//! so a pod without the client label is not checked to be refused; more than one node.

mod support;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    http_get,
    images::save_images,
    kube::{KUBECTL_LIMIT, Kube},
    output_within, stderr, stdout,
};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SECRET: &str = "live-kube-secret-51f0";

/// A supervised driver that sleeps on its first attempt and, relaunched, says where it ran and
/// ends: it shows a relaunch finishing.
const RELAUNCH_FINISHES: &str = "echo attempt $HEARTH_ATTEMPT on $HOSTNAME; [ \"$HEARTH_ATTEMPT\" = 1 ] && exec sleep 600; echo done";

/// The pod a worker id names (its name is the pod's, `HEARTH_WORKER_NAME`).
fn pod_of(workers: &[Value], worker_id: &str) -> String {
    workers
        .iter()
        .find(|w| w["id"] == worker_id)
        .and_then(|w| w["name"].as_str())
        .unwrap_or_else(|| panic!("no worker {worker_id} in {workers:?}"))
        .to_string()
}

/// Every `href="..."` on a page.
fn links(page: &str) -> Vec<String> {
    page.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|l| l.replace("&amp;", "&"))
        .collect()
}

#[test]
#[ignore = "needs root and the local Kubernetes of scripts/kube (built once, about 6 min on 2 cores); ./scripts/test runs it, or: cargo test -- --include-ignored"]
fn hearth_runs_on_kubernetes_as_the_readme_says() {
    let (master_image, worker_image) = save_images("0.1.0");
    let kube = Kube::up(&[&master_image, &worker_image]);
    kube.ok(&["get", "nodes"]);

    // Create everything as the README says, then the secret; shrink requests to fit the node.
    let manifests = Path::new(ROOT).join("manifests");
    kube.ok(&["create", "-f", &manifests.display().to_string()]);
    kube.create_secret(SECRET);
    for (deployment, requests) in [
        ("hearth-master", "cpu=100m,memory=64Mi"),
        ("hearth-worker", "cpu=100m,memory=128Mi"),
    ] {
        kube.ok(&[
            "-n",
            "hearth",
            "set",
            "resources",
            &format!("deployment/{deployment}"),
            &format!("--requests={requests}"),
        ]);
    }
    kube.wait_ready("app.kubernetes.io/component=master", 1);
    kube.wait_ready("app.kubernetes.io/component=worker", 2);
    let client_pod = manifests.join("extras/client-pod.yaml");
    kube.ok(&["create", "-f", &client_pod.display().to_string()]);
    kube.wait_ready("app.kubernetes.io/component=client", 1);

    // Every worker registered through the Service's DNS name and offers its pod's limits.
    let workers = kube.wait("2 workers ALIVE", || {
        let w = kube.workers()?;
        (w.iter().filter(|w| w["state"] == "ALIVE").count() == 2).then_some(w)
    });
    for w in &workers {
        assert_eq!(
            (w["cores"].as_u64(), w["memoryMb"].as_u64()),
            (Some(2), Some(4096)),
            "{w}"
        );
    }

    // The UI through a port-forward of its Service.
    let (_ui_forward, ui_port) = kube.forward(
        &["-n", "hearth", "port-forward", "svc/hearth-webui", ":8080"],
        "Forwarding from 127.0.0.1:",
    );
    let ui = format!("127.0.0.1:{ui_port}");
    let (code, page) = http_get(&ui, "/");
    assert_eq!(code, 200, "{page:.2000}");
    for w in &workers {
        assert!(
            page.contains(w["id"].as_str().unwrap_or("?")),
            "the overview lists {w}"
        );
    }
    let (code, json) = http_get(&ui, "/json/");
    assert_eq!(code, 200);
    let json: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(json["aliveworkers"], 2, "{json}");

    // A driver from the client pod: it runs in a worker pod, its log comes back through the
    // master.
    let out = kube.hearth_in_pod(&[
        "submit",
        "--wait",
        "--",
        "sh",
        "-c",
        "echo hello from $HOSTNAME",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let from_pod = stdout(&out).lines().next().unwrap_or_default().to_string();
    let out = kube.hearth_in_pod(&["logs", &from_pod]);
    let logged = stdout(&out);
    assert!(logged.starts_with("hello from hearth-worker-"), "{logged}");

    // A driver through a port-forward of gRPC, from this machine.
    let (_grpc_forward, grpc_port) = kube.forward(
        &["-n", "hearth", "port-forward", "svc/hearth-master", ":7077"],
        "Forwarding from 127.0.0.1:",
    );
    let master = format!("http://127.0.0.1:{grpc_port}");
    let local = |args: &[&str]| {
        output_within(
            hearth_testkit::process::hearth_command(Path::new(support::HEARTH))
                .args(args)
                .env("HEARTH_MASTER_URL", &master)
                .env("HEARTH_SECRET", SECRET),
            KUBECTL_LIMIT,
        )
    };
    let out = local(&["submit", "--wait", "--", "sh", "-c", "echo forwarded"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let forwarded = stdout(&out).lines().next().unwrap_or_default().to_string();
    assert_eq!(stdout(&local(&["logs", &forwarded])), "forwarded\n");

    // The UI through `kubectl proxy`: every link of every page stays under the proxy's path
    // and answers.
    let (_proxy, proxy_port) = kube.forward(&["proxy", "--port=0"], "Starting to serve on ");
    let proxy = format!("127.0.0.1:{proxy_port}");
    let prefix = "/api/v1/namespaces/hearth/services/hearth-webui:http/proxy";
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![format!("{prefix}/")];
    while let Some(path) = todo.pop() {
        if !seen.insert(path.clone()) || seen.len() > 60 {
            continue;
        }
        let (code, page) = http_get(&proxy, &path);
        assert_eq!(code, 200, "{path} through kubectl proxy: {page:.1000}");
        for link in links(&page) {
            // The page itself (a refresh link) and anchors stay where they are.
            if link.is_empty() || link.starts_with('#') || link.starts_with('?') {
                continue;
            }
            assert!(
                !link.starts_with("http"),
                "{path} links to {link}, off the proxy"
            );
            let link = if link.starts_with('/') {
                link
            } else {
                // Relative to the page's folder.
                let folder = &path[..=path.rfind('/').unwrap_or(0)];
                format!("{folder}{link}")
            };
            assert!(
                link.starts_with(prefix),
                "{path} links to {link}, outside {prefix}"
            );
            // Log pages and JSON are checked once each; pages are followed.
            if !link.contains("bytes=") {
                todo.push(link);
            }
        }
    }
    assert!(seen.len() > 5, "only {seen:?} reached");

    // Scale up to three: three ALIVE.
    kube.ok(&[
        "-n",
        "hearth",
        "scale",
        "deployment",
        "hearth-worker",
        "--replicas=3",
    ]);
    kube.wait_ready("app.kubernetes.io/component=worker", 3);
    kube.wait("3 workers ALIVE", || {
        (kube
            .workers()?
            .iter()
            .filter(|w| w["state"] == "ALIVE")
            .count()
            == 3)
            .then_some(())
    });

    // Down to one while a supervised driver runs on a pod that goes: that worker is
    // DECOMMISSIONED, the driver is relaunched on the survivor and finishes there, and the pod
    // exits within its grace period.
    let moving = kube.submit_in_pod(&["--supervise", "--", "sh", "-c", RELAUNCH_FINISHES]);
    let running = kube.wait("the supervised driver RUNNING", || {
        let d = kube.driver(&moving)?;
        (d["state"] == "RUNNING").then_some(d)
    });
    let workers = kube.workers().expect("the workers");
    let leaving_worker = running["workerId"].as_str().unwrap_or_default().to_string();
    let leaving_pod = pod_of(&workers, &leaving_worker);
    let survivor = workers
        .iter()
        .find(|w| w["state"] == "ALIVE" && w["id"] != leaving_worker.as_str())
        .expect("another worker")
        .clone();
    let survivor_pod = survivor["name"].as_str().unwrap_or_default().to_string();
    // Which pods a scale-down removes follows their deletion cost: the driver's goes first,
    // the survivor stays.
    for (pod, cost) in [(&leaving_pod, "-100"), (&survivor_pod, "100")] {
        kube.ok(&[
            "-n",
            "hearth",
            "annotate",
            "pod",
            pod,
            &format!("controller.kubernetes.io/pod-deletion-cost={cost}"),
        ]);
    }
    let scaled = Instant::now();
    kube.ok(&[
        "-n",
        "hearth",
        "scale",
        "deployment",
        "hearth-worker",
        "--replicas=1",
    ]);
    kube.wait("the leaving worker DECOMMISSIONED", || {
        kube.workers()?
            .iter()
            .any(|w| w["id"] == leaving_worker.as_str() && w["state"] == "DECOMMISSIONED")
            .then_some(())
    });
    let finished = kube.wait("the driver relaunched and FINISHED", || {
        let d = kube.driver(&moving)?;
        (d["state"] == "FINISHED").then_some(d)
    });
    assert_eq!(finished["attempt"], 2, "{finished}");
    assert_eq!(finished["workerId"], survivor["id"], "{finished}");
    let log = stdout(&kube.hearth_in_pod(&["logs", &moving]));
    assert!(
        log.contains(&format!("attempt 2 on {survivor_pod}")) && log.contains("done"),
        "{log}"
    );
    kube.wait("the leaving pod gone", || {
        let out = output_within(
            kube.kubectl()
                .args(["-n", "hearth", "get", "pod", &leaving_pod]),
            KUBECTL_LIMIT,
        );
        (!out.status.success()).then_some(())
    });
    assert!(
        scaled.elapsed() < Duration::from_secs(90 + 30),
        "the pod took {:?} to go (grace period 90 s)",
        scaled.elapsed()
    );
    kube.wait_ready("app.kubernetes.io/component=worker", 1);

    // The master pod deleted: recreated on the same claim, it recovers; the worker reconnects
    // through the Service; every acknowledged driver is there and the running one is adopted.
    let sleeping = kube.submit_in_pod(&["--", "sh", "-c", "echo $$; exec sleep 600"]);
    kube.wait("the sleeping driver RUNNING", || {
        (kube.driver(&sleeping)?["state"] == "RUNNING").then_some(())
    });
    let acknowledged = [
        from_pod.clone(),
        forwarded.clone(),
        moving.clone(),
        sleeping.clone(),
    ];
    let old_master = kube.wait_ready("app.kubernetes.io/component=master", 1);
    kube.ok(&[
        "-n",
        "hearth",
        "delete",
        "pod",
        &old_master[0],
        "--wait=false",
    ]);
    kube.wait("a new master pod ready", || {
        let now = kube.wait_ready("app.kubernetes.io/component=master", 1);
        (now != old_master).then_some(())
    });
    kube.wait("the worker back ALIVE", || {
        let w = kube.workers()?;
        (w.iter().filter(|w| w["state"] == "ALIVE").count() == 1).then_some(())
    });
    for id in &acknowledged {
        let d = kube.driver(id).expect("the driver");
        assert_eq!(d["id"], id.as_str(), "{d}");
    }
    let d = kube.driver(&sleeping).expect("the driver");
    assert_eq!(
        (d["state"].as_str(), d["attempt"].as_u64()),
        (Some("RUNNING"), Some(1)),
        "adopted, not relaunched: {d}"
    );

    // The workers restarted with work running: nothing acknowledged is lost.
    kube.ok(&[
        "-n",
        "hearth",
        "scale",
        "deployment",
        "hearth-worker",
        "--replicas=2",
    ]);
    kube.wait_ready("app.kubernetes.io/component=worker", 2);
    let supervised = kube.submit_in_pod(&["--supervise", "--", "sh", "-c", "exec sleep 600"]);
    kube.wait("the supervised driver RUNNING", || {
        (kube.driver(&supervised)?["state"] == "RUNNING").then_some(())
    });
    kube.ok(&[
        "-n",
        "hearth",
        "rollout",
        "restart",
        "deployment/hearth-worker",
    ]);
    let out = output_within(
        kube.kubectl().args([
            "-n",
            "hearth",
            "rollout",
            "status",
            "deployment/hearth-worker",
            "--timeout=600s",
        ]),
        Duration::from_secs(660),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    kube.wait("the supervised driver RUNNING again", || {
        (kube.driver(&supervised)?["state"] == "RUNNING").then_some(())
    });
    for id in acknowledged.iter().chain([&supervised]) {
        let d = kube.driver(id).expect("the driver");
        assert_eq!(d["id"], id.as_str(), "{d}");
    }
    // The NetworkPolicy is not checked: the bridge CNI does not enforce it (see the README).
    eprintln!("not shown on this cluster: NetworkPolicy enforcement (the bridge CNI ignores it)");

    for id in [&sleeping, &supervised] {
        let out = kube.hearth_in_pod(&["kill", id]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    autoscaling(&kube);
}

/// The worker Deployment's replicas, as the API server holds them.
fn replicas(kube: &Kube) -> Option<u64> {
    kube.json(&[
        "-n",
        "hearth",
        "get",
        "deployment",
        "hearth-worker",
        "-o",
        "json",
    ])["spec"]["replicas"]
        .as_u64()
}

/// Autoscaling on the live cluster: the RBAC of `manifests/extras/autoscaling.yaml` and the
/// master's patch, min 1 / max 4, a 5 s idle time. A burst needing 3 workers is met by a patch
/// of the Deployment within 2 s and ALIVE workers; as the work ends, idle workers go while busy
/// ones keep their drivers (every driver ends FINISHED on its first attempt); at rest, one.
fn autoscaling(kube: &Kube) {
    let extras = Path::new(ROOT).join("manifests/extras");
    kube.ok(&[
        "apply",
        "-f",
        &extras.join("autoscaling.yaml").display().to_string(),
    ]);
    // Exactly what the feature uses: one verb more is refused.
    let can = |query: &[&str]| {
        let mut args = vec!["-n", "hearth", "auth", "can-i"];
        args.extend_from_slice(query);
        args.push("--as=system:serviceaccount:hearth:hearth-master");
        let out = output_within(kube.kubectl().args(&args), KUBECTL_LIMIT);
        stdout(&out).trim() == "yes"
    };
    assert!(
        can(&[
            "patch",
            "deployments.apps/hearth-worker",
            "--subresource=scale"
        ]),
        "the scale patch is granted"
    );
    assert!(
        can(&["get", "deployments.apps/hearth-worker"]),
        "reading the shape is granted"
    );
    assert!(can(&["patch", "pods"]), "pod annotations are granted");
    assert!(!can(&["delete", "pods"]), "deleting pods is not granted");
    assert!(
        !can(&["patch", "deployments.apps/hearth-worker"]),
        "changing the Deployment itself is not granted"
    );
    assert!(
        !can(&[
            "patch",
            "deployments.apps/hearth-master",
            "--subresource=scale"
        ]),
        "scaling another Deployment is not granted"
    );

    kube.ok(&[
        "-n",
        "hearth",
        "scale",
        "deployment",
        "hearth-worker",
        "--replicas=1",
    ]);
    let old_master = kube.wait_ready("app.kubernetes.io/component=master", 1);
    kube.ok(&[
        "-n",
        "hearth",
        "patch",
        "deployment",
        "hearth-master",
        "--patch-file",
        &Path::new(ROOT)
            .join("manifests/patches/autoscaling-master.yaml")
            .display()
            .to_string(),
    ]);
    kube.ok(&[
        "-n",
        "hearth",
        "set",
        "env",
        "deployment/hearth-master",
        "HEARTH_SCALE_DOWN_IDLE=5s",
    ]);
    kube.wait("the autoscaling master ready", || {
        let now = kube.wait_ready("app.kubernetes.io/component=master", 1);
        (now != old_master).then_some(())
    });
    // Recovered (the worker removed by the scale to one is not waited for any more): nothing
    // is placed, nor scaled, while the restarted master recovers.
    kube.wait("one worker ALIVE, none UNKNOWN", || {
        let w = kube.workers()?;
        (w.iter().filter(|w| w["state"] == "ALIVE").count() == 1
            && !w.iter().any(|w| w["state"] == "UNKNOWN"))
        .then_some(())
    });

    // A burst: 6 one-core drivers; the worker (2 cores) takes 2, the rest need 2 more workers.
    // Two run longer, so the scale-in comes while they still run.
    let burst = Instant::now();
    let mut drivers = Vec::new();
    for n in 0..6 {
        let secs = if n >= 4 { 45 } else { 15 };
        drivers.push(kube.submit_in_pod(&[
            "--cores",
            "1",
            "--memory",
            "256m",
            "--",
            "sh",
            "-c",
            &format!("sleep {secs}"),
        ]));
    }
    let submitted = burst.elapsed();
    let mut patched = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if replicas(kube) == Some(3) {
            patched = Some(burst.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let patched = patched.expect("the Deployment patched to 3 replicas");
    kube.wait("3 workers ALIVE", || {
        let w = kube.workers()?;
        (w.iter().filter(|w| w["state"] == "ALIVE").count() == 3).then_some(())
    });
    let alive = burst.elapsed();
    eprintln!(
        "autoscaling: 6 drivers submitted in {submitted:?}; Deployment patched to 3 after {patched:?}, \
         3 workers ALIVE after {alive:?} (from the first submission)"
    );
    // The patch follows the demand at once: within 2 s of the last submission.
    assert!(
        patched <= submitted + Duration::from_secs(2),
        "patched {patched:?} after the first of submissions that took {submitted:?}"
    );
    let running = kube.wait("all 6 drivers RUNNING", || {
        let all: Vec<Value> = drivers.iter().filter_map(|d| kube.driver(d)).collect();
        (all.len() == 6 && all.iter().all(|d| d["state"] == "RUNNING")).then_some(all)
    });
    let busy_workers: std::collections::BTreeSet<String> = running
        .iter()
        .skip(4)
        .filter_map(|d| d["workerId"].as_str().map(str::to_string))
        .collect();

    // The short ones end; idle workers go after 5 s while the long ones still run on theirs.
    kube.wait("the Deployment scaled in while long drivers run", || {
        let r = replicas(kube)?;
        let long_running = drivers[4..]
            .iter()
            .filter_map(|d| kube.driver(d))
            .all(|d| d["state"] == "RUNNING");
        (r < 3 && long_running).then_some(())
    });
    for w in kube.workers().expect("workers") {
        if busy_workers.contains(w["id"].as_str().unwrap_or_default()) {
            assert_eq!(w["state"], "ALIVE", "a busy worker was drained: {w}");
        }
    }
    // Every driver ends on its own, on its first attempt: nothing busy was killed.
    let ended = kube.wait("every driver FINISHED", || {
        let all: Vec<Value> = drivers.iter().filter_map(|d| kube.driver(d)).collect();
        (all.len() == 6 && all.iter().all(|d| d["state"] == "FINISHED")).then_some(all)
    });
    for d in &ended {
        assert_eq!(d["attempt"], 1, "relaunched, so killed once: {d}");
    }
    // At rest: back to the minimum.
    kube.wait("back to one worker", || {
        let w = kube.workers()?;
        (replicas(kube) == Some(1) && w.iter().filter(|w| w["state"] == "ALIVE").count() == 1)
            .then_some(())
    });
    let (_ui, port) = kube.forward(
        &["-n", "hearth", "port-forward", "svc/hearth-webui", ":8080"],
        "Forwarding from 127.0.0.1:",
    );
    let (code, metrics) = http_get(&format!("127.0.0.1:{port}"), "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("hearth_autoscale_scale_ups_total")
            && metrics.contains("hearth_autoscale_demand_to_alive_seconds_count")
            && !metrics.contains("hearth_autoscale_scale_downs_total 0"),
        "{metrics:.3000}"
    );
    let (_, page) = http_get(&format!("127.0.0.1:{port}"), "/");
    assert!(page.contains("id=\"autoscale-decisions\""), "{page:.3000}");
}
