//! Two masters under one Lease on the live API server of `scripts/kube`, run as processes on
//! the host behind a Service that routes by readiness ([`support::service`]), with real workers
//! and a client submitting without pause:
//!
//! - the standby follows the leader and is named in sync in the Lease;
//! - the leader killed with SIGKILL (three times, each master in turn): the standby leads and
//!   accepts submissions again within seconds (the distribution is printed), every
//!   acknowledged submission exists exactly once, and no driver runs twice;
//! - the old leader started again comes back as the standby and catches up;
//! - a leader paused (SIGSTOP) past its deadline and past the worker timeout, then resumed,
//!   acts on nothing: it would declare every worker lost and relaunch their supervised
//!   drivers, yet no relaunch reaches a worker, and it stops.

mod support;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use hearth_common::{
    auth::Secret,
    client::Client,
    proto::{DriverSpec, SubmitDriverRequest, WorkerState},
    state_names::{StateName, driver_state},
};
use hearth_testkit::process::processes_with_env;
use nix::sys::signal::Signal;
use serde_json::Value;
use support::{Proc, kube::Kube, master_command_on, service::Service, try_http_get, wait_for};

const SECRET: &str = "standby-secret-3c8e";
const LIMIT: Duration = Duration::from_secs(30);

/// One of the two masters: its name in the Lease, ports and state kept across restarts.
struct Master {
    name: &'static str,
    dir: PathBuf,
    grpc: u16,
    web: u16,
    lease: String,
    kubeconfig: String,
    proc: Option<Proc>,
    starts: u32,
}

impl Master {
    fn new(name: &'static str, dir: &Path, lease: &str, kube: &Kube) -> Self {
        Self {
            name,
            dir: dir.join(name),
            grpc: hearth_testkit::master::free_port().expect("a free port"),
            web: hearth_testkit::master::free_port().expect("a free port"),
            lease: lease.to_string(),
            kubeconfig: kube.kubeconfig.clone(),
            proc: None,
            starts: 0,
        }
    }

    fn start(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("master dir");
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("master-{}.log", self.starts)))
            .expect("log file");
        let mut cmd = master_command_on(&self.dir.join("state"), self.grpc, self.web);
        cmd.args(["--lease", &self.lease, "--lease-namespace", "default"])
            .args(["--identity", self.name])
            .args([
                "--advertise-url",
                &format!("http://127.0.0.1:{}", self.grpc),
            ])
            .env("HEARTH_SECRET", SECRET)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        self.proc = Some(Proc::new(
            cmd.spawn().expect("spawn hearth master"),
            self.name.to_string(),
        ));
    }

    fn web(&self) -> String {
        format!("127.0.0.1:{}", self.web)
    }

    fn json(&self) -> Option<Value> {
        match try_http_get(&self.web(), "/json/") {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir.join(format!("master-{n}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restarted ---\n")
    }

    fn signal(&self, signal: Signal) {
        self.proc.as_ref().expect("started").signal(signal);
    }

    /// Waits for its process to end by itself; whether it did.
    fn exited_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let proc = self.proc.as_mut().expect("started");
        while Instant::now() < deadline {
            if let Ok(Some(_)) = proc.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

async fn wait_role(master: &Master, role: &str) -> Value {
    wait_for(
        &format!("{} to be the {role}", master.name),
        LIMIT,
        || async { master.json().filter(|j| j["role"] == role) },
    )
    .await
}

/// The leader names a standby in sync (in the Lease and its `/json/`).
async fn wait_in_sync(leader: &Master, standby: &Master) {
    wait_for(
        &format!("{} to be in sync with {}", standby.name, leader.name),
        LIMIT,
        || async {
            let l = leader.json()?;
            let s = standby.json()?;
            (l["standbyInSync"] == true && s["inSync"] == true).then_some(())
        },
    )
    .await;
}

/// A client that submits every 25 ms, each submission retried with its own id until it is
/// acknowledged, as a careful client does through a failover.
struct Hammer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(String, String, Instant)>>,
}

impl Hammer {
    fn start(url: String, ran: PathBuf, from: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let secret = Secret::new(SECRET).expect("secret");
            let mut acked = Vec::new();
            let mut client: Option<Client> = None;
            let mut n = from;
            while !flag.load(Ordering::Relaxed) {
                let sid = format!("sub-{n:06}");
                let request = SubmitDriverRequest {
                    spec: Some(DriverSpec {
                        name: sid.clone(),
                        command: vec![
                            "sh".into(),
                            "-c".into(),
                            format!("echo \"$RAN_AS\" >> {}", ran.display()),
                        ],
                        env: HashMap::from([("RAN_AS".to_string(), sid.clone())]),
                        cores: 1,
                        memory_mb: 16,
                        ..DriverSpec::default()
                    }),
                    submission_id: sid.clone(),
                    ..SubmitDriverRequest::default()
                };
                let deadline = Instant::now() + LIMIT;
                loop {
                    assert!(
                        Instant::now() < deadline,
                        "{sid} not acknowledged within {LIMIT:?}"
                    );
                    if client.is_none() {
                        client = tokio::time::timeout(
                            Duration::from_secs(2),
                            Client::connect(&url, Some(&secret)),
                        )
                        .await
                        .ok()
                        .and_then(Result::ok);
                    }
                    let Some(c) = &client else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    match tokio::time::timeout(
                        Duration::from_secs(2),
                        c.submit_request(request.clone()),
                    )
                    .await
                    {
                        Ok(Ok(id)) => {
                            acked.push((sid.clone(), id, Instant::now()));
                            break;
                        }
                        _ => {
                            // A new connection: through the Service to whichever master is ready.
                            client = None;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                n += 1;
                // Paced: what it checks is every acknowledgement across a failover, not the
                // rate, and each driver is a process two workers must run.
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            acked
        });
        Self { stop, task }
    }

    async fn stop(self) -> Vec<(String, String, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the client task")
    }
}

/// Every driver the master lists, page by page, by name.
async fn drivers_by_name(client: &Client) -> HashMap<String, Vec<(String, String)>> {
    let mut all: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut token = String::new();
    loop {
        let (page, next) = client
            .drivers_page(1000, &token)
            .await
            .expect("list drivers");
        for d in page {
            let spec = d.spec.unwrap_or_default();
            all.entry(spec.name)
                .or_default()
                .push((d.id, driver_state(d.state).name().to_string()));
        }
        if next.is_empty() {
            return all;
        }
        token = next;
    }
}

/// Acknowledged submissions per second from `clients` concurrent clients over `window`, of
/// drivers no worker can hold (so they only wait): what one turn's durable write costs.
async fn durable_rate(url: &str, clients: usize, window: Duration) -> f64 {
    let secret = Secret::new(SECRET).expect("secret");
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = Client::connect(url, Some(&secret)).await.expect("connect");
        tasks.push(tokio::spawn(async move {
            let end = Instant::now() + window;
            let mut n = 0u64;
            while Instant::now() < end {
                client
                    .submit(DriverSpec {
                        name: format!("rate-{c}-{n}"),
                        command: vec!["true".into()],
                        cores: 1024,
                        memory_mb: 16,
                        ..DriverSpec::default()
                    })
                    .await
                    .expect("a durable submission");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("client task");
    }
    total as f64 / window.as_secs_f64()
}

fn spawn_worker(dir: &Path, n: usize, url: &str) -> Proc {
    let mut cmd = hearth_testkit::process::hearth_command(Path::new(support::HEARTH));
    cmd.args([
        "worker",
        "--master",
        url,
        "--webui-port",
        "0",
        "--bind",
        "127.0.0.1",
    ])
    .args(["--host", "127.0.0.1", "--name", &format!("w{n}")])
    .args(["--cores", "4", "--memory", "2g", "--kill-grace", "1s"])
    .arg("--work-dir")
    .arg(dir.join(format!("work-{n}")))
    .env("HEARTH_SECRET", SECRET)
    .env("RUST_LOG", "info")
    .stdout(Stdio::null())
    .stderr(Stdio::from(
        std::fs::File::create(dir.join(format!("worker-{n}.log"))).expect("log"),
    ));
    Proc::new(
        cmd.spawn().expect("spawn hearth worker"),
        format!("worker-{n}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root and the local Kubernetes of scripts/kube (built once, about 6 min on 2 cores); ./scripts/test runs it, or: cargo test -- --include-ignored"]
async fn a_standby_takes_over_losing_nothing_and_a_paused_leader_acts_on_nothing() {
    let kube = Kube::up(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let lease = format!("hearth-standby-{}", std::process::id());
    let mut masters = [
        Master::new("m1", dir.path(), &lease, &kube),
        Master::new("m2", dir.path(), &lease, &kube),
    ];
    masters[0].start();
    wait_role(&masters[0], "leader").await;
    masters[1].start();
    wait_role(&masters[1], "standby").await;
    wait_in_sync(&masters[0], &masters[1]).await;

    // What waiting for the standby costs: durable submissions/s against the pair and against a
    // single master on the same machine.
    let window = Duration::from_secs(3);
    let paired = durable_rate(&format!("http://127.0.0.1:{}", masters[0].grpc), 16, window).await;
    let single_rate = {
        let single_dir = dir.path().join("single");
        let mut cmd = support::master_command(&single_dir.join("state"));
        cmd.env("HEARTH_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut proc = Proc::new(cmd.spawn().expect("spawn a single master"), "single");
        let line = hearth_testkit::process::first_line(&mut proc.child, "hearth master:", LIMIT)
            .expect("the single master's first line");
        let url = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix('(').and_then(|w| w.strip_suffix("),")))
            .expect("its URL")
            .to_string();
        durable_rate(&url, 16, window).await
    };
    println!(
        "durable submissions/s, 16 clients, {window:?}: {paired:.0}/s with a standby in sync, {single_rate:.0}/s from a single master ({:.0} % of it)",
        paired / single_rate * 100.0
    );
    assert!(paired > 0.0 && single_rate > 0.0);

    let service = Service::start(
        masters
            .iter()
            .map(|m| {
                (
                    format!("127.0.0.1:{}", m.grpc).parse().expect("addr"),
                    m.web(),
                )
            })
            .collect(),
    )
    .await;
    let url = service.url();
    let mut workers: Vec<Proc> = (0..2).map(|n| spawn_worker(dir.path(), n, &url)).collect();
    let secret = Secret::new(SECRET).expect("secret");
    let alive = |client: Client| async move {
        let ws = client.workers().await.ok()?;
        (ws.iter()
            .filter(|w| w.state == WorkerState::Alive as i32)
            .count()
            == 2)
            .then_some(())
    };
    wait_for("2 workers ALIVE", LIMIT, || async {
        let client = Client::connect(&url, Some(&secret)).await.ok()?;
        alive(client).await
    })
    .await;

    let ran = dir.path().join("ran.txt");
    let mut acked_all = Vec::new();
    let mut gaps = Vec::new();
    let mut leader = 0;
    for round in 0..3 {
        let standby = 1 - leader;
        let epoch_before = masters[leader].json().expect("leader json")["epoch"]
            .as_u64()
            .expect("epoch");
        let hammer = Hammer::start(url.clone(), ran.clone(), round * 100_000);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let killed_at = Instant::now();
        masters[leader].signal(Signal::SIGKILL);
        let took = wait_role(&masters[standby], "leader").await;
        assert!(
            took["epoch"].as_u64().expect("epoch") > epoch_before,
            "a new term: {took}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let acked = hammer.stop().await;
        let first_after = acked
            .iter()
            .map(|(_, _, at)| *at)
            .find(|at| *at > killed_at)
            .expect("acknowledgements after the kill");
        gaps.push(first_after - killed_at);
        assert!(
            acked.len() > 10,
            "the client kept submitting: {}",
            acked.len()
        );
        acked_all.extend(acked);

        // The old leader comes back as the standby and catches up.
        masters[leader].proc.take();
        masters[leader].start();
        wait_role(&masters[leader], "standby").await;
        wait_in_sync(&masters[standby], &masters[leader]).await;
        leader = standby;
    }
    println!(
        "failover (SIGKILL of the leader → next submission acknowledged), lease 3s / renew 2s / retry 500ms, a readiness probe every 1s: {:?}",
        gaps
    );

    // Every acknowledged submission exists exactly once on the leader now, and ran once.
    let client = Client::connect(&url, Some(&secret)).await.expect("connect");
    let acked_ids: Vec<&str> = acked_all.iter().map(|(sid, _, _)| sid.as_str()).collect();
    let finished = wait_for("every acknowledged driver FINISHED", LIMIT, || async {
        let all = drivers_by_name(&client).await;
        acked_ids
            .iter()
            .all(|sid| {
                all.get(*sid)
                    .is_some_and(|d| d.iter().all(|(_, s)| s == "FINISHED"))
            })
            .then_some(all)
    })
    .await;
    for (sid, id, _) in &acked_all {
        let copies = &finished[sid];
        assert_eq!(copies.len(), 1, "{sid} exists once: {copies:?}");
        assert_eq!(&copies[0].0, id, "{sid} is the driver acknowledged");
    }
    let lines = std::fs::read_to_string(&ran).expect("ran.txt");
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for line in lines.lines() {
        *runs.entry(line).or_default() += 1;
    }
    for (sid, n) in &runs {
        assert_eq!(*n, 1, "{sid} ran {n} times");
    }
    for sid in &acked_ids {
        assert_eq!(runs.get(sid), Some(&1), "{sid} ran once");
    }

    // A leader paused past its deadline and past the worker timeout acts on nothing.
    let standby = 1 - leader;
    let endless = client
        .submit(DriverSpec {
            name: "endless".into(),
            command: vec!["sleep".into(), "600".into()],
            env: HashMap::from([("ENDLESS".to_string(), lease.clone())]),
            cores: 1,
            memory_mb: 16,
            supervise: true,
            ..DriverSpec::default()
        })
        .await
        .expect("submit the endless driver");
    wait_for("the endless driver RUNNING", LIMIT, || async {
        let d = client.driver(&endless).await.ok()?;
        (driver_state(d.state).name() == "RUNNING").then_some(())
    })
    .await;
    wait_for("its process", LIMIT, || async {
        (processes_with_env("ENDLESS", &lease).ok()?.len() == 1).then_some(())
    })
    .await;
    masters[leader].signal(Signal::SIGSTOP);
    let paused = Instant::now();
    wait_role(&masters[standby], "leader").await;
    // Past the worker timeout (10 s): resumed, it finds every worker silent.
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(paused.elapsed())).await;
    masters[leader].signal(Signal::SIGCONT);
    assert!(
        masters[leader].exited_within(Duration::from_secs(10)),
        "the resumed old leader stops:\n{}",
        masters[leader].log()
    );
    // Workers come back to the new leader; the driver is still its first attempt, one copy.
    let client = Client::connect(&url, Some(&secret)).await.expect("connect");
    let d = wait_for(
        "the endless driver adopted by the new leader",
        LIMIT,
        || async {
            let d = client.driver(&endless).await.ok()?;
            (driver_state(d.state).name() == "RUNNING").then_some(d)
        },
    )
    .await;
    assert_eq!(d.attempt, 1, "never relaunched: {d:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        processes_with_env("ENDLESS", &lease)
            .expect("processes")
            .len(),
        1,
        "one copy of the endless driver"
    );
    let old_log = masters[leader].log();
    assert!(
        old_log.contains("no longer the leader") || old_log.contains("not renewed"),
        "the old leader says why it stopped:\n{old_log}"
    );

    for w in &mut workers {
        w.kill();
    }
    for (pid, _) in processes_with_env("ENDLESS", &lease).unwrap_or_default() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
}
