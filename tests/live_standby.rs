//! A standby master on the live Kubernetes of `scripts/kube`, deployed as the README says
//! (`manifests/` without the single master, then `manifests/extras/standby.yaml`), with a client
//! in the cluster submitting without pause through the Service. The leader is lost three ways,
//! twice each: its process killed (SIGKILL, from the node), its pod deleted, its network cut
//! (the pod's veth on the node taken down). Each time a new term begins and the client's
//! submissions are acknowledged again within seconds (the distribution is printed, with who took
//! over): the standby leads and the old leader comes back as the standby and catches up, or, for
//! a killed process the kubelet restarts before the lease runs out, the same pod leads again from
//! its own state. At the end every acknowledged submission exists exactly once, finished, and its
//! command ran once (counted from the workers' files).

mod support;

use std::{
    collections::HashMap,
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

/// The master pods not being deleted: each one's name and whether it is Ready.
fn master_pods(kube: &Kube) -> Vec<(String, bool)> {
    let pods = kube.json(&[
        "-n",
        "hearth",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/component=master",
    ]);
    pods["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .map(|p| {
                    let ready = p["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    });
                    let name = p["metadata"]["name"].as_str().unwrap_or_default();
                    (name.to_string(), ready)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The two master pods: (the Ready one, the other), once there are two and one is Ready.
fn masters(kube: &Kube) -> Option<(String, String)> {
    match master_pods(kube).as_slice() {
        [(a, true), (b, false)] | [(b, false), (a, true)] => Some((a.clone(), b.clone())),
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

/// Waits until one master leads (Ready, holding the Lease, in a term after `after`) and the
/// other is in sync with it: (leader, standby, epoch).
fn wait_pair(kube: &Kube, after: u64) -> (String, String, u64) {
    kube.wait(
        &format!("one master leading in a term after {after}, the other in sync"),
        || {
            let (ready, other) = masters(kube)?;
            let (holder, in_sync, epoch) = lease(kube)?;
            (holder == ready && in_sync.as_deref() == Some(other.as_str()) && epoch > after)
                .then_some((ready, other, epoch))
        },
    )
}

/// When, polling every 100 ms, the Lease first showed a term after `epoch`, and when the pod
/// holding it was first Ready.
fn new_term_timeline(kube: &Kube, epoch: u64) -> (Instant, Instant) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut term_at = None;
    loop {
        assert!(Instant::now() < deadline, "no new term after {epoch}");
        if let Some((holder, _, _)) = lease(kube).filter(|(_, _, e)| *e > epoch) {
            let term = *term_at.get_or_insert_with(Instant::now);
            let is_ready = master_pods(kube)
                .iter()
                .any(|(name, ready)| *ready && *name == holder);
            if is_ready {
                return (term, Instant::now());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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

/// The node's side of `pod`'s network: the veth on the cluster's bridge whose peer is the pod's
/// eth0. Asked of netlink inside the pod's network namespace (`/sys` there would still be the
/// node's), and refused unless the node's side is a veth enslaved to the bridge, so that no
/// mistake can take the node's own interface down.
fn host_veth(pod: &str) -> String {
    let pid = master_pid(pod).to_string();
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-n", "ip", "-o", "link", "show", "eth0"])
        .output()
        .expect("nsenter");
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let index = line
        .split_whitespace()
        .nth(1)
        .and_then(|name| name.trim_end_matches(':').split_once("@if"))
        .map(|(_, peer)| peer.to_string())
        .unwrap_or_else(|| panic!("the pod's eth0 names no peer: {line:?} {}", stderr(&out)));
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show", "type", "veth", "master", "hearth0"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&links.stdout)
        .lines()
        .find(|l| l.starts_with(&format!("{index}: ")))
        .and_then(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .unwrap_or_else(|| panic!("no veth {index} on the bridge hearth0 for {pod}"))
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

/// One acknowledged submission: its id, the driver id, when it was sent and acknowledged.
struct Acked {
    sid: String,
    id: String,
    started: Instant,
    at: Instant,
    /// What `hearth submit` said on stderr (its retries).
    log: String,
}

/// `hearth submit` from the client pod, one after the other, each with its own submission id
/// (retried by the command itself through a failover): what was acknowledged, and when.
struct Hammer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
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
                let started = Instant::now();
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
                    "sh",
                    "-c",
                    "echo ran",
                ]);
                if out.status.success() {
                    let id = stdout(&out).lines().next().unwrap_or_default().to_string();
                    list.lock().unwrap().push(Acked {
                        sid,
                        id,
                        started,
                        at: Instant::now(),
                        log: stderr(&out),
                    });
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

    /// When the first submission started after `at` was acknowledged.
    fn first_after(&self, at: Instant) -> Option<Instant> {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.started > at)
            .map(|a| a.at)
    }

    fn stop(self) -> Vec<Acked> {
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
    kube.create_secret(SECRET);
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
    kube.wait("2 workers ALIVE", || {
        (kube
            .workers()?
            .iter()
            .filter(|w| w["state"] == "ALIVE")
            .count()
            == 2)
            .then_some(())
    });
    let (mut leader, mut standby, mut epoch) = wait_pair(&kube, 0);

    let mut acked_all = Vec::new();
    let mut failovers: Vec<(Loss, Duration, &str)> = Vec::new();
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
        // A new term on the Lease, then a submission sent after it acknowledged (by the new
        // leader: a cut-off one cannot answer). The old leader's network stays cut until then.
        let (term_at, ready_at) = new_term_timeline(&kube, epoch);
        let term_seen = Instant::now();
        kube.wait("a submission acknowledged by the new leader", || {
            hammer.first_after(term_seen)
        });
        let acked = hammer.stop();
        if let Some(veth) = &veth {
            ip_link(veth, "up");
        }
        // What the client saw: the longest wait between two acknowledgements.
        let slowest = acked
            .windows(2)
            .max_by_key(|w| w[1].at - w[0].at)
            .expect("acknowledgements before and after the loss");
        let gap = slowest[1].at - slowest[0].at;
        println!(
            "round {round}, {loss:?}: a new term seen after {:.2} s, its leader Ready after {:.2} s, \
             the client's longest wait {:.2} s; the submission that ended it took {:.2} s: {}",
            term_at.duration_since(lost_at).as_secs_f64(),
            ready_at.duration_since(lost_at).as_secs_f64(),
            gap.as_secs_f64(),
            (slowest[1].at - slowest[1].started).as_secs_f64(),
            slowest[1].log.trim(),
        );
        acked_all.extend(acked);
        // A new term, and the pair whole again: the standby leads and the old leader (restarted,
        // recreated, or cut off and stopped) stands by, or, when the kubelet restarted the
        // killed leader's container before the lease ran out, the same pod leads again from its
        // own state (the last holder needs no wait) and the standby follows it afresh.
        let (new_leader, new_standby, new_epoch) = wait_pair(&kube, epoch);
        let who = if new_leader == standby {
            "the standby"
        } else {
            "the same pod, restarted"
        };
        assert!(
            new_leader == standby || matches!(loss, Loss::Kill),
            "after {loss:?} the standby leads: {new_leader} leads, {standby} was the standby"
        );
        failovers.push((loss, gap, who));
        (leader, standby, epoch) = (new_leader, new_standby, new_epoch);
    }
    let mut times: Vec<f64> = failovers.iter().map(|(_, d, _)| d.as_secs_f64()).collect();
    times.sort_by(f64::total_cmp);
    println!(
        "failover on the live cluster (the longest a client submitting without pause waited for an acknowledgement, across the leader's loss), lease 3s / renew 2s / retry 500ms, readiness every 1s: {:?}; median {:.2} s, max {:.2} s",
        failovers
            .iter()
            .map(|(l, d, who)| format!("{l:?} {:.2} s ({who})", d.as_secs_f64()))
            .collect::<Vec<_>>(),
        times[times.len() / 2],
        times[times.len() - 1],
    );

    // Every acknowledged submission: exactly once, finished, its command run once.
    let drivers = kube.wait("every acknowledged driver FINISHED", || {
        let out = kube.hearth_in_pod(&["list", "drivers", "--json"]);
        if !out.status.success() {
            return None;
        }
        let all: Vec<Value> = serde_json::from_str(&stdout(&out)).ok()?;
        acked_all
            .iter()
            .all(|a| {
                all.iter()
                    .filter(|d| d["name"] == a.sid.as_str())
                    .all(|d| d["state"] == "FINISHED")
            })
            .then_some(all)
    });
    let runs = runs_on_workers(&kube);
    for Acked { sid, id, .. } in &acked_all {
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
        // A later attempt is right when the first never reached its worker (the leader stopped
        // before sending the launch); what must hold is that the command ran once.
        assert_eq!(
            runs.get(id.as_str()),
            Some(&1),
            "{sid} ({id}) ran once: {}",
            copies[0]
        );
    }
}

/// How many times each driver's command ran, from what the workers keep: each run of
/// `echo ran` appends a line to the driver's `stdout` in the worker's work directory.
fn runs_on_workers(kube: &Kube) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    for pod in kube.wait_ready("app.kubernetes.io/component=worker", 2) {
        let out = kube.ok(&[
            "-n",
            "hearth",
            "exec",
            &pod,
            "--",
            "sh",
            "-c",
            "cd /var/lib/hearth/work && grep -c ran driver-*/stdout || true",
        ]);
        for line in out.lines() {
            let Some((path, count)) = line.split_once(':') else {
                continue;
            };
            let driver = path.trim_end_matches("/stdout").to_string();
            *runs.entry(driver).or_default() += count.trim().parse::<usize>().expect("a count");
        }
    }
    runs
}
