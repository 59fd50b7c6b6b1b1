//! From submission to a running process: one driver at a time, a stream of `true` drivers, and
//! an application's executors.

use std::{
    collections::HashMap,
    net::UdpSocket,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use hearth_common::proto::{
    ApplicationSpec, DriverSpec, ExecutorState, RegisterApplicationRequest,
};

use crate::{
    figures::Figure,
    procs::{self, Master},
    stats::{Stats, Unit},
};

/// The argument that makes this binary a driver that only says it started.
pub const STAMP: &str = "stamp";

/// The driver side of the submit figure: sends its tag to the benchmark over UDP as the first
/// thing it does, before any argument parsing.
pub fn stamp(args: &[String]) -> Result<()> {
    let [addr, tag] = args else {
        anyhow::bail!("usage: hearth-bench stamp ADDR TAG");
    };
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.send_to(tag.as_bytes(), addr.as_str())?;
    Ok(())
}

async fn wait_alive(master: &Master, count: usize) -> Result<()> {
    let client = master.client().await?;
    procs::wait_workers(&client, "workers ALIVE", |w| procs::alive(w) >= count).await
}

/// Waits for the datagram carrying `tag`.
async fn stamped(socket: &tokio::net::UdpSocket, tag: &str, what: &str) -> Result<()> {
    let mut buf = [0u8; 64];
    loop {
        let (len, _) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buf))
            .await
            .map_err(|_| anyhow!("{what} did not start within 10 s"))??;
        if buf[..len] == *tag.as_bytes() {
            return Ok(());
        }
    }
}

/// The physical floor of one submission, measured between the submissions: a 4 KiB write plus
/// `fsync` on the disk holding the master's state (what durability costs at least), plus a
/// fork and exec of the same trivial program until its first datagram arrives (what starting
/// it costs at least).
struct Floor {
    file: std::fs::File,
    path: std::path::PathBuf,
    fsync: Vec<Duration>,
    exec: Vec<Duration>,
}

impl Floor {
    fn new(dir: &Path) -> Result<Self> {
        let path = dir.join("floor-probe");
        Ok(Self {
            file: std::fs::File::create(&path)?,
            path,
            fsync: Vec::new(),
            exec: Vec::new(),
        })
    }

    async fn measure(
        &mut self,
        socket: &tokio::net::UdpSocket,
        me: &str,
        addr: &str,
    ) -> Result<()> {
        use std::io::Write;
        let t0 = Instant::now();
        self.file.write_all(&[7u8; 4096])?;
        self.file.sync_all()?;
        self.fsync.push(t0.elapsed());
        let tag = format!("floor-{}", self.exec.len());
        let t0 = Instant::now();
        let mut child = std::process::Command::new(me)
            .args([STAMP, addr, &tag])
            .spawn()?;
        stamped(socket, &tag, "the floor's program").await?;
        self.exec.push(t0.elapsed());
        child.wait()?;
        Ok(())
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `runs` drivers, one after another, on one real worker: from the start of the `submit` call
/// until the driver's own code runs (it sends a UDP datagram first thing). The acknowledgement
/// (after the master's fsync) is in the notes. The second figure is the same times over the
/// floor measured between them.
pub async fn submit_to_start(binary: &Path, runs: usize) -> Result<Vec<Figure>> {
    let mut master = Master::start(binary, &[])?;
    let _worker = master.spawn_worker("submit-w", 4, "8g")?;
    wait_alive(&master, 1).await?;
    let client = master.client().await?;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?.to_string();
    let me = std::env::current_exe()?.display().to_string();
    let mut started = Vec::with_capacity(runs);
    let mut acked = Vec::with_capacity(runs);
    let mut floor = Floor::new(master.dir.path())?;
    for n in 0..runs {
        floor.measure(&socket, &me, &addr).await?;
        let tag = n.to_string();
        let spec = DriverSpec {
            name: format!("stamp-{n}"),
            command: vec![me.clone(), STAMP.into(), addr.clone(), tag.clone()],
            cores: 1,
            memory_mb: 64,
            ..Default::default()
        };
        let t0 = Instant::now();
        client.submit(spec).await?;
        acked.push(t0.elapsed());
        stamped(&socket, &tag, &format!("driver {n}")).await?;
        started.push(t0.elapsed());
    }
    let ack = Stats::of_durations(&acked).ok_or_else(|| anyhow!("no runs"))?;
    let fsync = Stats::of_durations(&floor.fsync).ok_or_else(|| anyhow!("no floor"))?;
    let exec = Stats::of_durations(&floor.exec).ok_or_else(|| anyhow!("no floor"))?;
    let floor_ms = fsync.median + exec.median;
    let over_floor = Figure::new(
        "submit → driver started over the floor (4 KiB write + fsync, fork + exec)",
        Unit::Ratio,
        started
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0 / floor_ms)
            .collect(),
        "median ≤ 1.5",
        format!(
            "each submission's time over the floor measured between them in the same run: {floor_ms:.2} ms (write + fsync on the state disk median {:.2} ms, fork + exec of the same program to its first datagram median {:.2} ms); acknowledgement alone over the write + fsync: median {:.1}",
            fsync.median,
            exec.median,
            ack.median / fsync.median
        ),
    )?;
    let figure = Figure::new(
        "submit → driver process started (trivial command), p50 / p99",
        Unit::Millis,
        started.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        "≤ 5 ms / ≤ 20 ms",
        format!(
            "one at a time on 1 real worker; acknowledged (fsync'd) after median {:.2} ms, p99 {:.2} ms",
            ack.median, ack.p99
        ),
    )?;
    Ok(vec![figure, over_floor])
}

/// `runs` rounds of `drivers` drivers running `true`, submitted by 16 concurrent clients to a
/// master with 2 real workers: drivers per second from the first submission until the
/// master counts them all FINISHED (its `hearth_drivers` metric, read every 5 ms).
pub async fn throughput(binary: &Path, runs: usize, drivers: usize) -> Result<Figure> {
    let retained = (runs * drivers + 10).to_string();
    let mut master = Master::start(binary, &["--retained-drivers", &retained])?;
    let _workers = [
        master.spawn_worker("true-a", 32, "32g")?,
        master.spawn_worker("true-b", 32, "32g")?,
    ];
    wait_alive(&master, 2).await?;
    let mut rates = Vec::new();
    let mut submit_rates = Vec::new();
    const CLIENTS: usize = 16;
    for run in 0..runs {
        let before = procs::metric(&master.metrics()?, "hearth_drivers{state=\"FINISHED\"}");
        let t0 = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..CLIENTS {
            let client = master.client().await?;
            let share = drivers / CLIENTS + usize::from(c < drivers % CLIENTS);
            tasks.spawn(async move {
                for n in 0..share {
                    let spec = DriverSpec {
                        name: format!("true-{run}-{c}-{n}"),
                        command: vec!["true".into()],
                        cores: 1,
                        memory_mb: 16,
                        ..Default::default()
                    };
                    client.submit(spec).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let submitted = t0.elapsed();
        let web = master.web.clone();
        let wanted = before + drivers as f64;
        procs::poll(
            "drivers FINISHED",
            Duration::from_millis(5),
            Duration::from_secs(120),
            || {
                let web = web.clone();
                async move {
                    let text = procs::http_get(&web, "/metrics").ok()?;
                    (procs::metric(&text, "hearth_drivers{state=\"FINISHED\"}") >= wanted)
                        .then_some(())
                }
            },
        )
        .await
        .with_context(|| {
            // The temporary directory goes with the master; its log tells why.
            let log =
                std::fs::read_to_string(master.dir.path().join("master.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            format!(
                "the master's last log lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })?;
        let all = t0.elapsed();
        rates.push(drivers as f64 / all.as_secs_f64());
        submit_rates.push(drivers as f64 / submitted.as_secs_f64());
    }
    let submit = Stats::of(submit_rates).ok_or_else(|| anyhow!("no runs"))?;
    Figure::new(
        "end-to-end throughput, `true` drivers through 2 real workers",
        Unit::PerSecond,
        rates,
        "≥ 500 drivers/s",
        format!(
            "{drivers} drivers a run from 16 clients, until all FINISHED; submissions alone: median {:.0}/s",
            submit.median
        ),
    )
}

/// `runs` applications asking for 4 executors (`sleep`), on 2 real workers: from the start of
/// `register_application` until the master lists all 4 RUNNING (read every millisecond).
pub async fn app_to_executors(binary: &Path, runs: usize) -> Result<Figure> {
    let mut master = Master::start(binary, &[])?;
    let _workers = [
        master.spawn_worker("app-a", 4, "8g")?,
        master.spawn_worker("app-b", 4, "8g")?,
    ];
    wait_alive(&master, 2).await?;
    let client = master.client().await?;
    let mut times = Vec::new();
    let mut spread: HashMap<usize, usize> = HashMap::new();
    for n in 0..runs {
        let request = RegisterApplicationRequest {
            spec: Some(ApplicationSpec {
                name: format!("four-{n}"),
                command: vec!["sleep".into(), "600".into()],
                executor_cores: 1,
                executor_memory_mb: 64,
                executors: 4,
                ..Default::default()
            }),
            ..Default::default()
        };
        let t0 = Instant::now();
        let app = client.register_app(request).await?;
        let id = app.id.clone();
        let running = Arc::new(std::sync::Mutex::new(None));
        procs::poll(
            "4 executors RUNNING",
            Duration::from_millis(1),
            Duration::from_secs(20),
            || {
                let client = client.clone();
                let id = id.clone();
                let running = running.clone();
                async move {
                    let app = client.app(&id).await.ok()?;
                    let up: Vec<_> = app
                        .executors
                        .iter()
                        .filter(|e| e.state == ExecutorState::Running as i32)
                        .collect();
                    if up.len() < 4 {
                        return None;
                    }
                    let workers: std::collections::HashSet<_> =
                        up.iter().map(|e| e.worker_id.clone()).collect();
                    if let Ok(mut r) = running.lock() {
                        *r = Some(workers.len());
                    }
                    Some(())
                }
            },
        )
        .await?;
        times.push(t0.elapsed());
        if let Some(workers) = running.lock().ok().and_then(|r| *r) {
            *spread.entry(workers).or_default() += 1;
        }
        client.kill_app(&id).await?;
    }
    Figure::new(
        "application registered → 4 executors RUNNING on 2 workers",
        Unit::Millis,
        times.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        "≤ 50 ms",
        format!(
            "executors spread over 2 workers in {} of {runs} runs",
            spread.get(&2).copied().unwrap_or(0)
        ),
    )
}
