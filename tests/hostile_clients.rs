//! Clients that would knock the master over: thousands of connections to the UI port that never
//! finish their request headers, at an open-file limit of 1024. The probes, the UI and gRPC go
//! on answering, and a stalled connection is closed after the header deadline.

mod support;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use hearth_common::{auth::Secret, client::Client};
use support::{HEARTH, Proc, first_line, free_port, http_get};

const SECRET: &str = "hostile-secret-0b3e";
const STALLED: usize = 3000;

/// `hearth master` with its open-file limit at 1024, soft and hard (it cannot raise it): the
/// process, its URL and its web address.
fn master_at_1024_files(dir: &std::path::Path) -> (Proc, String, String) {
    let (grpc, web) = (free_port(), free_port());
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=1024:1024")
        .arg("--")
        .arg(HEARTH)
        .args(["master", "--bind", "127.0.0.1"])
        .args([
            "--port",
            &grpc.to_string(),
            "--webui-port",
            &web.to_string(),
        ])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("HEARTH_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("master.log")).expect("log"),
        ));
    let child = cmd
        .spawn()
        .expect("start prlimit (util-linux) with hearth master");
    // Reaped on drop even if it never says it is up.
    let mut master = Proc::new(child, "master");
    first_line(&mut master.child, "hearth master:", Duration::from_secs(20));
    (
        master,
        format!("http://127.0.0.1:{grpc}"),
        format!("127.0.0.1:{web}"),
    )
}

/// A connection that sends the start of a request and never its end.
fn stall(web: &str) -> std::io::Result<TcpStream> {
    let addr = web.parse().map_err(std::io::Error::other)?;
    // A port that stopped accepting leaves connections waiting in its backlog, then unanswered.
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: hearth\r\nX-Slow: ")?;
    Ok(stream)
}

/// Whether the server has closed `stream` (a read ends) within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let _ = stream.set_read_timeout(Some(limit));
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // An answer (408, 400) before the close counts as closing it.
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an open-file hard limit of 6000 (root, or a raised ulimit) and prlimit; ./scripts/test runs it, or: cargo test -- --include-ignored"]
async fn thousands_of_stalled_connections_leave_probes_ui_and_grpc_answering() {
    // This test holds the stalled connections itself: it needs more than the master gets.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    assert!(
        hard >= 2 * STALLED as u64,
        "this test needs an open-file hard limit of {} (it is {hard})",
        2 * STALLED
    );
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("raise this test's open-file limit");
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut master, url, web) = master_at_1024_files(dir.path());

    let mut stalled = Vec::with_capacity(STALLED);
    for n in 0..STALLED {
        match stall(&web) {
            Ok(s) => stalled.push(s),
            Err(e) => panic!("the UI port stopped taking connections after {n}: {e}"),
        }
    }
    // Far more than the port keeps open went in; the oldest were closed to make room.
    assert!(
        closed_within(&mut stalled[0], Duration::from_secs(5)),
        "the oldest stalled connection is still open"
    );

    // Everyone else is answered meanwhile.
    let started = Instant::now();
    let (code, _) = http_get(&web, "/healthz");
    assert_eq!(code, 200);
    let (code, page) = http_get(&web, "/");
    assert_eq!(code, 200, "{page:.500}");
    let client = Client::connect(&url, Some(&Secret::new(SECRET).expect("secret")))
        .await
        .expect("connect over gRPC");
    client.workers().await.expect("a gRPC call answers");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answers took {:?}",
        started.elapsed()
    );
    assert!(
        master.child.try_wait().expect("wait").is_none(),
        "the master is still running"
    );
    let log = std::fs::read_to_string(dir.path().join("master.log")).unwrap_or_default();
    assert!(log.contains("open-file limit"), "{log}");
    // The cap held, not only the descriptor limit: at 1,024 files it is 256 connections.
    let open = std::fs::read_dir(format!("/proc/{}/fd", master.pid()))
        .expect("the master's descriptors")
        .count();
    assert!(open < 256 + 64, "the master holds {open} descriptors");
    drop(stalled);
    master.kill();
}

#[test]
#[ignore = "slow (waits out the 10 s header deadline); ./scripts/test runs it, or: cargo test -- --include-ignored"]
fn connections_that_never_finish_a_request_are_closed_after_the_deadline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_master, _, web) = master_at_1024_files(dir.path());
    let addr: std::net::SocketAddr = web.parse().expect("address");
    // Half a header; nothing at all; the headers of a POST whose body never comes.
    let mut body = TcpStream::connect(addr).expect("connect");
    body.write_all(
        b"POST /drivers/driver-20261130000000-0000/kill HTTP/1.1\r\nHost: hearth\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nsecret=",
    )
    .expect("send");
    let mut slow = [
        stall(&web).expect("connect"),
        TcpStream::connect(addr).expect("connect"),
        body,
    ];
    let started = Instant::now();
    for (n, stream) in slow.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(20)),
            "connection {n} still open after 20 s"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(9) && took <= Duration::from_secs(15),
            "connection {n} closed after {took:?}; the deadline is 10 s"
        );
    }
}

/// The most memory the process ever held (VmHWM), in MiB.
fn peak_rss_mb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        / 1024
}

/// Requests just under the message size limit, 32 at a time (each on its own connection) in
/// waves, refused by validation: the master's memory stays under the bound the README states
/// (its decode budget admits two such messages at a time, whatever the number of clients), it
/// stays up, and others are answered meanwhile. Without the budget the peak grows with the
/// clients: 115 MiB measured for 8 at a time, 307 MiB for 32.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_maximum_size_requests_keep_the_master_inside_its_memory_bound() {
    const BOUND_MB: u64 = 128;
    let dir = tempfile::tempdir().expect("temp dir");
    let (master, url, web) = master_at_1024_files(dir.path());
    let secret = Secret::new(SECRET).expect("secret");
    let client = Client::connect(&url, Some(&secret)).await.expect("connect");
    let before = peak_rss_mb(master.pid());
    // Just under the limit once encoded: one environment value carries it.
    let huge = "x".repeat(hearth_common::MAX_MESSAGE_BYTES - 4096);
    for wave in 0..4 {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let url = url.clone();
            let secret = secret.clone();
            let huge = huge.clone();
            // A connection each, as eight separate clients would.
            calls.spawn(async move {
                let client = Client::connect(&url, Some(&secret)).await.expect("connect");
                let spec = hearth_common::proto::DriverSpec {
                    command: vec!["true".into()],
                    cores: 1,
                    memory_mb: 16,
                    env: [("HUGE".to_string(), huge)].into(),
                    ..Default::default()
                };
                client.submit(spec).await
            });
        }
        while let Some(result) = calls.join_next().await {
            let refused = result.expect("task").expect_err("a huge spec is refused");
            let text = refused.to_string();
            assert!(
                text.contains("at most") || text.contains("request"),
                "wave {wave}: {text}"
            );
        }
        client.workers().await.expect("others are answered");
    }
    let (code, _) = http_get(&web, "/healthz");
    assert_eq!(code, 200);
    let peak = peak_rss_mb(master.pid());
    eprintln!(
        "master peak RSS: {before} MiB before, {peak} MiB after 4 waves of 32 requests of 8 MiB"
    );
    assert!(
        peak <= BOUND_MB,
        "the master's peak RSS was {peak} MiB (bound {BOUND_MB} MiB; {before} MiB before)"
    );
}
