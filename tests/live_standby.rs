//! A standby master on the live Kubernetes of `scripts/kube`, deployed as the README says
//! (`manifests/` without the single master, then `manifests/extras/standby.yaml`), with a client
//! in the cluster submitting without pause through the Service. The leader is lost three ways,
//! twice each: its process killed (SIGKILL, from the node), its pod deleted, its network cut
//! (the pod's veth on the node taken down). Each time the standby leads and the client's
//! submissions are acknowledged again within seconds (the distribution is printed), the old
//! leader comes back as the standby and catches up, and at the end every acknowledged
//! submission exists exactly once, finished, on its first attempt.

mod support;

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{images::save_images, kube::Kube, stderr, stdout};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SECRET: &str = "live-standby-secret-92ab";

/// The two master pods: (the Ready one, the other), once there are two and one is Ready.
fn masters(kube: &Kube) -> Option<(String, String)> {
    let pods = kube.json(&[
        "-n",
        "hearth",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/component=master",
    ]);
    let items: Vec<&Value> = pods["items"]
        .as_array()?
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    if items.len() != 2 {
        return None;
    }
    let ready = |p: &Value| {
        p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    };
    let name = |p: &Value| {
        p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    match (ready(items[0]), ready(items[1])) {
        (true, false) => Some((name(items[0]), name(items[1]))),
        (false, true) => Some((name(items[1]), name(items[0]))),
        _ => None,
    }
}

/// The Lease's holder pod and the pod it names in sync.
fn lease(kube: &Kube) -> Option<(String, Option<String>, u64)> {
    let lease = kube.json(&["-n", "hearth", "get", "lease", "hearth-master"]);
    let pod = |v: &Value| {
        v.as_str()
            .map(|h| h.split('/').next().unwrap_or_default().to_string())
    };
    Some((
        pod(&lease["spec"]["holderIdentity"])?,
        pod(&lease["metadata"]["annotations"]["hearth.dev/in-sync"]),
        lease["spec"]["leaseTransitions"].as_u64()?,
    ))
}

/// Waits until `leader` leads (Ready, holding the Lease) and `standby` is in sync with it.
fn wait_pair(kube: &Kube, leader: &str, standby: &str) -> u64 {
    kube.wait(&format!("{leader} leading, {standby} in sync"), || {
        let (ready, _) = masters(kube)?;
        let (holder, in_sync, epoch) = lease(kube)?;
        (ready == leader && holder == leader && in_sync.as_deref() == Some(standby))
            .then_some(epoch)
    })
}

/// The pid, on this node, of the master process of `pod`.
fn master_pid(pod: &str) -> i32 {
    let found =
        hearth_testkit::process::processes_with_env("HEARTH_POD_NAME", pod).expect("read /proc");
    found
        .iter()
        .find(|(_, name)| name.contains("hearth"))
        .unwrap_or_else(|| panic!("no master process of {pod}: {found:?}"))
        .0
}

/// The node's side of `pod`'s network: the veth whose peer is the pod's eth0.
fn host_veth(pod: &str) -> String {
    let pid = master_pid(pod).to_string();
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-n", "cat", "/sys/class/net/eth0/iflink"])
        .output()
        .expect("nsenter");
    let index = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&links.stdout)
        .lines()
        .find(|l| l.starts_with(&format!("{index}: ")))
        .and_then(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .unwrap_or_else(|| panic!("no link {index} for {pod}"))
}

fn ip_link(veth: &str, state: &str) {
    let status = std::process::Command::new("ip")
        .args(["link", "set", veth, state])
        .status()
        .expect("ip link set");
    assert!(status.success(), "ip link set {veth} {state}");
}

#[derive(Debug, Clone, Copy)]
enum Loss {
    Kill,
    Delete,
    Cut,
}

/// `hearth submit` from the client pod, one after the other, each with its own submission id
/// (retried by the command itself through a failover): what was acknowledged, and when.
struct Hammer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String, Instant)>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Hammer {
    fn start(kube: Arc<Kube>, tag: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (flag, list) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) {
                let sid = format!("{tag}-{n}");
                let out = kube.hearth_in_pod(&[
                    "submit",
                    "--name",
                    &sid,
                    "--submission-id",
                    &sid,
                    "--cores",
                    "1",
                    "--memory",
                    "16m",
                    "--",
                    "true",
                ]);
                if out.status.success() {
                    let id = stdout(&out).lines().next().unwrap_or_default().to_string();
                    list.lock().unwrap().push((sid, id, Instant::now()));
                    n += 1;
                } else {
                    eprintln!("{sid}: {}", stderr(&out));
                }
            }
        });
        Self {
            stop,
            acked,
            thread,
        }
    }

    fn first_after(&self, at: Instant) -> Option<Instant> {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, when)| *when)
            .find(|when| *when > at)
    }

    fn stop(self) -> Vec<(String, String, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the client thread");
        Arc::try_unwrap(self.acked)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default()
    }
}

#[test]
#[ignore = "needs root and the local Kubernetes of scripts/kube (built once, about 6 min on 2 cores); ./scripts/test runs it, or: cargo test -- --include-ignored"]
fn a_standby_master_takes_over_on_the_live_cluster() {
    let (master_image, worker_image) = save_images("0.1.0");
    let kube = Arc::new(Kube::up(&[&master_image, &worker_image]));

    // The README's way: everything but the single master, then the pair.
    let manifests = Path::new(ROOT).join("manifests");
    let mut files: Vec<_> = std::fs::read_dir(&manifests)
        .expect("manifests")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name != "20-master-state.yaml" && name != "30-master.yaml"
        })
        .collect();
    files.sort();
    for file in files {
        kube.ok(&["create", "-f", &file.display().to_string()]);
    }
    kube.ok(&[
        "-n",
        "hearth",
        "create",
        "secret",
        "generic",
        "hearth-secret",
        &format!("--from-literal=secret={SECRET}"),
    ]);
    kube.ok(&[
        "apply",
        "-f",
        &manifests.join("extras/standby.yaml").display().to_string(),
    ]);
    kube.ok(&[
        "-n",
        "hearth",
        "set",
        "resources",
        "deployment/hearth-worker",
        "--requests=cpu=100m,memory=128Mi",
    ]);
    kube.wait_ready("app.kubernetes.io/component=worker", 2);
    kube.ok(&[
        "create",
        "-f",
        &manifests
            .join("extras/client-pod.yaml")
            .display()
            .to_string(),
    ]);
    kube.wait_ready("app.kubernetes.io/component=client", 1);
    let (mut leader, mut standby) =
        kube.wait("one master leading, one standing by", || masters(&kube));
    kube.wait("2 workers ALIVE", || {
        (kube
            .workers()?
            .iter()
            .filter(|w| w["state"] == "ALIVE")
            .count()
            == 2)
            .then_some(())
    });
    let mut epoch = wait_pair(&kube, &leader, &standby);

    let mut acked_all = Vec::new();
    let mut failovers: Vec<(Loss, Duration)> = Vec::new();
    for (round, loss) in [
        Loss::Kill,
        Loss::Delete,
        Loss::Cut,
        Loss::Kill,
        Loss::Delete,
        Loss::Cut,
    ]
    .into_iter()
    .enumerate()
    {
        let hammer = Hammer::start(kube.clone(), format!("r{round}"));
        kube.wait("the client's first acknowledgement", || {
            hammer.first_after(Instant::now() - Duration::from_secs(3600))
        });
        std::thread::sleep(Duration::from_secs(1));
        let veth = matches!(loss, Loss::Cut).then(|| host_veth(&leader));
        let lost_at = Instant::now();
        match loss {
            Loss::Kill => {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(master_pid(&leader)),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .expect("SIGKILL the leader");
            }
            Loss::Delete => {
                kube.ok(&["-n", "hearth", "delete", "pod", &leader, "--wait=false"]);
            }
            Loss::Cut => ip_link(veth.as_deref().unwrap_or_default(), "down"),
        }
        let back = kube.wait("a submission acknowledged by the new leader", || {
            hammer.first_after(lost_at)
        });
        failovers.push((loss, back - lost_at));
        let acked = hammer.stop();
        assert!(!acked.is_empty());
        acked_all.extend(acked);
        if let Some(veth) = &veth {
            ip_link(veth, "up");
        }
        // The old leader (restarted, recreated, or cut off and stopped) comes back as the standby.
        let new_epoch = wait_pair(&kube, &standby, &leader);
        assert!(
            new_epoch > epoch,
            "a new term after {loss:?}: {new_epoch} > {epoch}"
        );
        epoch = new_epoch;
        std::mem::swap(&mut leader, &mut standby);
    }
    let mut times: Vec<f64> = failovers.iter().map(|(_, d)| d.as_secs_f64()).collect();
    times.sort_by(f64::total_cmp);
    println!(
        "failover on the live cluster (leader lost → a client's submission acknowledged again), lease 3s / renew 2s / retry 500ms, readiness every 1s: {:?}; median {:.2} s, max {:.2} s",
        failovers
            .iter()
            .map(|(l, d)| format!("{l:?} {:.2} s", d.as_secs_f64()))
            .collect::<Vec<_>>(),
        times[times.len() / 2],
        times[times.len() - 1],
    );

    // Every acknowledged submission: exactly once, finished, on its first attempt.
    let drivers = kube.wait("every acknowledged driver FINISHED", || {
        let out = kube.hearth_in_pod(&["list", "drivers", "--json"]);
        if !out.status.success() {
            return None;
        }
        let all: Vec<Value> = serde_json::from_str(&stdout(&out)).ok()?;
        acked_all
            .iter()
            .all(|(sid, _, _)| {
                all.iter()
                    .filter(|d| d["name"] == sid.as_str())
                    .all(|d| d["state"] == "FINISHED")
            })
            .then_some(all)
    });
    for (sid, id, _) in &acked_all {
        let copies: Vec<&Value> = drivers
            .iter()
            .filter(|d| d["name"] == sid.as_str())
            .collect();
        assert_eq!(copies.len(), 1, "{sid} exists once: {copies:?}");
        assert_eq!(
            copies[0]["id"],
            id.as_str(),
            "{sid} is the driver acknowledged"
        );
        assert_eq!(copies[0]["attempt"], 1, "{sid} ran once: {}", copies[0]);
    }
}
