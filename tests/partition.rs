//! A real network partition: a worker in its own network namespace, reaching the master over a
//! veth pair whose link is taken down. Open connections stall without a reset, as when a
//! switch or a node's network fails, so only the heartbeat timeout notices.

mod support;

use std::{process::Command, time::Duration};

use hearth_common::{proto::WorkerState, state_names::StateName, state_names::driver_state};
use support::Cluster;

const LIMIT: Duration = Duration::from_secs(30);

/// A network namespace joined to the host by a veth pair: host side 198.18.0.(4n+1), namespace
/// side 198.18.0.(4n+2), for the test's own `n`. Removed with its links when dropped, whatever
/// happened.
struct Netns {
    name: String,
    host_link: String,
    host_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e} (the iproute2 package is needed)"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn create(n: u8) -> Self {
        let tag = format!("{}{n}", std::process::id() % 10_000);
        let ns = Self {
            name: format!("hearth-part-{tag}"),
            host_link: format!("hpart{tag}h"),
            host_ip: format!("198.18.0.{}", 4 * u32::from(n) + 1),
        };
        let inner = format!("hpart{tag}n");
        let inner_ip = format!("198.18.0.{}/30", 4 * u32::from(n) + 2);
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &inner,
        ]);
        ip(&["link", "set", &inner, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_link,
        ]);
        ip(&["link", "set", &ns.host_link, "up"]);
        let exec = ["netns", "exec", &ns.name, "ip"];
        let in_ns = |args: &[&str]| {
            let mut all = exec.to_vec();
            all.extend_from_slice(args);
            ip(&all);
        };
        in_ns(&["addr", "add", &inner_ip, "dev", &inner]);
        in_ns(&["link", "set", &inner, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        ns
    }

    fn set_link(&self, up: bool) {
        ip(&[
            "link",
            "set",
            &self.host_link,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A master with a 2 s worker timeout, and a worker of 1 core in `netns` that reaches it over
/// the veth link, ALIVE: the cluster and the worker's id.
async fn across_the_link(netns: &Netns) -> (Cluster, String) {
    let mut cluster = Cluster::start_with(support::MasterOptions {
        bind: "0.0.0.0".into(),
        extra: vec!["--worker-timeout".into(), "2s".into()],
        ..Default::default()
    });
    let port = cluster.url.rsplit(':').next().expect("port").to_string();
    let url = format!("http://{}:{port}", netns.host_ip);
    let far = cluster.spawn_worker_via(
        &["ip", "netns", "exec", &netns.name],
        &url,
        Some((1, "512m")),
        &["--kill-grace", "1s"],
    );
    cluster.wait_worker(&far, WorkerState::Alive, LIMIT).await;
    (cluster, far)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and iproute2 for network namespaces; ./scripts/test runs it, or: cargo test -- --include-ignored"]
async fn a_partitioned_worker_is_declared_dead_its_driver_moves_and_the_old_copy_is_fenced() {
    let netns = Netns::create(0);
    // The worker across the link runs a supervised driver.
    let (mut cluster, far) = across_the_link(&netns).await;
    let driver = cluster.submit_pid_sleeper("128m");
    let d = cluster.wait_state(&driver, "RUNNING", LIMIT).await;
    assert_eq!(d.worker_id, far);
    let first_pid = support::wait_for("the first pid", LIMIT, || {
        let p = support::driver_pids(&cluster, &driver);
        async move { p.first().copied() }
    })
    .await;
    let near = cluster.add_worker(1, "512m").await;

    // The link goes down: nothing is reset, the stream just stalls.
    netns.set_link(false);
    cluster.wait_worker(&far, WorkerState::Dead, LIMIT).await;
    let d = cluster
        .wait_driver(&driver, "relaunched on the near worker", LIMIT, |d| {
            d.attempt == 2 && driver_state(d.state).name() == "RUNNING"
        })
        .await;
    assert_eq!(d.worker_id, near);
    let second_pid = support::wait_for("the second pid", LIMIT, || {
        let p = support::driver_pids(&cluster, &driver);
        async move { p.first().copied().filter(|&p| p != first_pid) }
    })
    .await;
    // Across the partition the far worker cannot be told anything: its copy still runs, beside
    // the new one: the price of a partition for a supervised driver.
    let copies: Vec<i32> = support::driver_copies(&driver);
    assert!(
        copies.contains(&first_pid) && copies.contains(&second_pid),
        "{copies:?}"
    );

    // The link comes back: the far worker reconnects, is told the driver now runs elsewhere,
    // and kills its copy before it is accepted again.
    netns.set_link(true);
    cluster.wait_worker(&far, WorkerState::Alive, LIMIT).await;
    support::wait_for("the stale copy fenced", LIMIT, || async move {
        (!support::process_alive(first_pid)).then_some(())
    })
    .await;
    let copies: Vec<i32> = support::driver_copies(&driver);
    assert_eq!(copies, vec![second_pid], "exactly one copy runs");
    let d = cluster
        .client()
        .await
        .driver(&driver)
        .await
        .expect("driver");
    assert_eq!((d.attempt, d.worker_id.as_str()), (2, near.as_str()));
    let drivers = cluster.client().await.drivers().await.expect("drivers");
    assert_eq!(drivers.len(), 1, "{drivers:?}");
    // The far worker holds nothing now.
    let far_now = cluster.wait_worker(&far, WorkerState::Alive, LIMIT).await;
    assert_eq!((far_now.cores_used, far_now.memory_used_mb), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and iproute2 for network namespaces; ./scripts/test runs it, or: cargo test -- --include-ignored"]
async fn an_at_most_one_driver_cut_off_by_a_partition_stops_before_it_runs_elsewhere() {
    let netns = Netns::create(1);
    let ticks = tempfile::tempdir().expect("tempdir");
    let (mut cluster, far) = across_the_link(&netns).await;
    let env = format!("TICKS={}", ticks.path().display());
    let driver = cluster.submit(&[
        "--supervise",
        "--at-most-one",
        "--env",
        &env,
        "--memory",
        "128m",
        "--",
        "sh",
        "-c",
        &support::ticks::script("copy"),
    ]);
    let d = cluster.wait_state(&driver, "RUNNING", LIMIT).await;
    assert_eq!(d.worker_id, far);
    let near = cluster.add_worker(1, "512m").await;
    support::wait_for("the first copy ticking", LIMIT, || {
        let n = support::ticks::intervals(ticks.path(), "copy").len();
        async move { (n == 1).then_some(()) }
    })
    .await;

    netns.set_link(false);
    let cut = std::time::Instant::now();
    let d = cluster
        .wait_driver(&driver, "relaunched on the near worker", LIMIT, |d| {
            d.attempt == 2 && driver_state(d.state).name() == "RUNNING"
        })
        .await;
    assert_eq!(d.worker_id, near);
    eprintln!("relaunched {:?} after the link went down", cut.elapsed());
    // Still cut off, the far copy has stopped on its own: its keeper's lease ended.
    let far_last = support::ticks::intervals(ticks.path(), "copy")[0].2;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let now = support::ticks::intervals(ticks.path(), "copy");
    assert_eq!(now[0].2, far_last, "the cut-off copy still runs: {now:?}");

    netns.set_link(true);
    cluster.wait_worker(&far, WorkerState::Alive, LIMIT).await;
    let all = support::ticks::intervals(ticks.path(), "copy");
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[0].2 < all[1].1, "the copies overlap: {all:?}");
    let d = cluster
        .client()
        .await
        .driver(&driver)
        .await
        .expect("driver");
    assert_eq!((d.attempt, d.worker_id.as_str()), (2, near.as_str()));
}

/// The master's established connections whose far end is `peer` (an address).
fn connections_from(peer: &str) -> usize {
    let out = Command::new("ss")
        .args(["-Htn", "state", "established", "dst", peer])
        .output()
        .unwrap_or_else(|e| panic!("ss: {e} (the iproute2 package is needed)"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// A peer cut off without a reset is dropped by the master's TCP keepalive and timeout on
/// unacknowledged data (40 s), without the master pinging each connection; a connection that
/// is only idle is kept, as its peer's kernel answers the probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and iproute2 for network namespaces; ./scripts/test runs it, or: cargo test -- --include-ignored"]
async fn a_connection_cut_off_by_a_partition_is_dropped_and_an_idle_one_is_kept() {
    use std::io::{Read, Write};
    let netns = Netns::create(2);
    let far_ip = "198.18.0.10";
    let (cluster, far) = across_the_link(&netns).await;
    assert_eq!(connections_from(far_ip), 1, "the far worker's connection");
    // An HTTP/2 connection from this side that says nothing after its preface and settings.
    let port: u16 = cluster
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .expect("preface");
    // The master's own settings come first; they are acknowledged, as a client must.
    idle.set_read_timeout(Some(LIMIT)).expect("read timeout");
    let mut frame = [0u8; 9];
    idle.read_exact(&mut frame).expect("the master's settings");
    assert_eq!(frame[3], 0x04, "a SETTINGS frame first: {frame:?}");
    idle.write_all(b"\0\0\0\x04\x01\0\0\0\0")
        .expect("settings ack");
    let idle_port = idle.local_addr().expect("local address").port();
    let idle_open = move || {
        let out = Command::new("ss")
            .args([
                "-Htn",
                "state",
                "established",
                "sport",
                &format!("= :{idle_port}"),
            ])
            .output()
            .expect("ss");
        String::from_utf8_lossy(&out.stdout).lines().count() == 1
    };
    assert!(idle_open());

    netns.set_link(false);
    let cut = std::time::Instant::now();
    cluster.wait_worker(&far, WorkerState::Dead, LIMIT).await;
    support::wait_for(
        "the master to drop the cut-off connection",
        Duration::from_secs(75),
        || async { (connections_from(far_ip) == 0).then_some(()) },
    )
    .await;
    let took = cut.elapsed();
    eprintln!("the cut-off connection was dropped {took:?} after the link went down");
    assert!(took >= Duration::from_secs(30), "dropped after {took:?}");
    assert!(
        idle_open(),
        "the idle connection, silent for {took:?}, was dropped too"
    );
    // The master answers on as before.
    cluster.client().await.workers().await.expect("workers");
}
