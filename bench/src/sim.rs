//! Simulated workers: many worker connections in one process. Each registers an offer over
//! its own connection, heartbeats at the rhythm the master asks for, and answers orders without
//! forking (a launched driver reports RUNNING then FINISHED, an executor RUNNING, a kill
//! KILLED), so one machine can show a master under a thousand workers.

use std::{path::Path, time::Duration};

use anyhow::{Result, anyhow};
use hearth_common::{
    auth::Secret,
    client,
    proto::{
        DriverState, DriverStatus, ExecutorState, ExecutorStatus, Heartbeat, LogData,
        MasterMessage, Register, WorkerMessage, master_message::Msg as Down,
        worker_message::Msg as Up,
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    figures::Figure,
    procs::{self, Master, SECRET},
    stats::{Stats, Unit},
};

fn up(msg: Up) -> WorkerMessage {
    WorkerMessage { msg: Some(msg) }
}

/// One simulated worker's life: connect, register, then heartbeat and answer until the
/// connection ends or `stop` fires. `connecting` is held until registered, so thousands of
/// workers come up at the pace a listener's backlog takes.
async fn simulated_worker(
    url: String,
    n: usize,
    stop: hearth_common::Shutdown,
    connecting: std::sync::Arc<tokio::sync::Semaphore>,
    launched: Launched,
) -> Result<()> {
    let permit = connecting.acquire_owned().await?;
    let channel = client::channel(&url, &Default::default()).await?;
    let mut grpc = client::worker_client(channel, Some(&Secret::new(SECRET)?))?;
    let (tx, rx) = mpsc::channel::<WorkerMessage>(64);
    let host = format!("10.{}.{}.{}", 200 + n / 65_000, (n / 250) % 250, n % 250);
    tx.send(up(Up::Register(Register {
        worker_id: hearth_common::ids::worker_id(hearth_common::ids::now_ms(), &host, 8081),
        name: format!("sim-{n:04}"),
        host,
        web_port: 8081,
        cores: 16,
        memory_mb: 64 * 1024,
        ..Default::default()
    })))
    .await?;
    let mut down = grpc.session(ReceiverStream::new(rx)).await?.into_inner();
    let mut interval = match down.message().await? {
        Some(MasterMessage {
            msg: Some(Down::Registered(r)),
            ..
        }) => Duration::from_millis(r.heartbeat_interval_ms.max(50)),
        other => {
            return Err(anyhow!(
                "simulated worker {n}: expected Registered, got {other:?}"
            ));
        }
    };
    drop(permit);
    let mut tick = tokio::time::interval(interval);
    let (mut seq, mut answered) = (0, tokio::time::Instant::now());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {
                // As a real worker with nothing running: numbered, so answered, once the last
                // answer is due (every other heartbeat); 0 otherwise.
                let asks = hearth_common::heartbeat::answer_due(answered.elapsed(), interval);
                let number = if asks { seq += 1; seq } else { 0 };
                tx.send(up(Up::Heartbeat(Heartbeat { seq: number }))).await?;
            }
            message = down.message() => {
                let Some(MasterMessage { msg: Some(msg), .. }) = message? else {
                    return Ok(());
                };
                // As a real worker does: a larger cluster asks for heartbeats further apart.
                if let Down::HeartbeatAck(ack) = &msg {
                    answered = tokio::time::Instant::now();
                    if ack.heartbeat_interval_ms > 0 {
                        interval = Duration::from_millis(ack.heartbeat_interval_ms.clamp(50, 60_000));
                        tick = tokio::time::interval_at(answered + interval, interval);
                    }
                }
                if let (Some(tell), Down::LaunchDriver(l)) = (&launched, &msg) {
                    let _ = tell.send((l.driver_id.clone(), std::time::Instant::now()));
                }
                for answer in answer(msg) {
                    tx.send(up(answer)).await?;
                }
            }
        }
    }
}

/// Workers ALIVE, from `/metrics` (a list of ten thousand is larger than a client takes).
pub fn alive_count(master: &Master) -> Result<usize> {
    Ok(procs::metric(&master.metrics()?, "hearth_workers{state=\"ALIVE\"}") as usize)
}

/// The command of a simulated driver that runs until killed.
pub const LONG: &str = "long";

/// Where simulated workers say which driver they were told to launch, and when.
pub type Launched = Option<mpsc::UnboundedSender<(String, std::time::Instant)>>;

/// Starts `count` simulated workers on `master` and waits until all are ALIVE.
pub async fn start_simulated(
    master: &Master,
    count: usize,
    stop: &hearth_common::Shutdown,
    launched: Launched,
) -> Result<tokio::task::JoinSet<Result<()>>> {
    let connecting = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let mut sims = tokio::task::JoinSet::new();
    for n in 0..count {
        sims.spawn(simulated_worker(
            master.url.clone(),
            n,
            stop.clone(),
            connecting.clone(),
            launched.clone(),
        ));
    }
    let t0 = std::time::Instant::now();
    while alive_count(master)? < count {
        if let Some(done) = sims.try_join_next() {
            done??;
            anyhow::bail!("a simulated worker stopped before all were ALIVE");
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(300),
            "only {} of {count} simulated workers ALIVE after 300 s",
            alive_count(master)?
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(sims)
}

/// What a worker reports for an order, at once.
fn answer(msg: Down) -> Vec<Up> {
    let driver = |driver_id: String, attempt, state: DriverState| {
        Up::DriverStatus(DriverStatus {
            driver_id,
            attempt,
            state: state as i32,
            exit_code: (state == DriverState::Finished).then_some(0),
            message: String::new(),
        })
    };
    let executor = |app_id: String, executor_id, state: ExecutorState| {
        Up::ExecutorStatus(ExecutorStatus {
            app_id,
            executor_id,
            state: state as i32,
            exit_code: None,
            message: String::new(),
        })
    };
    match msg {
        // A driver whose command is `long` runs until killed; any other ends at once.
        Down::LaunchDriver(l)
            if l.spec
                .as_ref()
                .is_some_and(|s| s.command.first().is_some_and(|c| c == LONG)) =>
        {
            vec![driver(l.driver_id, l.attempt, DriverState::Running)]
        }
        Down::LaunchDriver(l) => vec![
            driver(l.driver_id.clone(), l.attempt, DriverState::Running),
            driver(l.driver_id, l.attempt, DriverState::Finished),
        ],
        Down::KillDriver(k) => vec![driver(k.driver_id, k.attempt, DriverState::Killed)],
        Down::LaunchExecutor(l) => vec![executor(l.app_id, l.executor_id, ExecutorState::Running)],
        Down::KillExecutor(k) => vec![executor(k.app_id, k.executor_id, ExecutorState::Killed)],
        Down::ReadLog(r) => vec![Up::LogData(LogData {
            request_id: r.request_id,
            error: "a simulated worker keeps no logs".into(),
            ..Default::default()
        })],
        // A simulated worker runs no driver UIs: the master's wait for the tunnel times out.
        Down::Registered(_) | Down::OpenTunnel(_) | Down::HeartbeatAck(_) => Vec::new(),
    }
}

/// A real master with `count` simulated workers heartbeating at the rhythm it asks for (every
/// 2.5 s for the default 10 s timeout, further apart once the cluster would send more than
/// `--max-heartbeat-rate` a second): once all are ALIVE and a few seconds have passed, the master's
/// CPU use over `windows` windows of `window` (in the full run at least one interval: a
/// heartbeat of every worker in each, whatever their phase), and its resident memory.
pub async fn heartbeating(
    binary: &Path,
    count: usize,
    windows: usize,
    window: Duration,
    (label, rss_target): (&str, &str),
) -> Result<(Figure, Figure)> {
    let master = Master::start(binary, &[])?;
    let stop = hearth_common::Shutdown::new();
    let mut sims = start_simulated(&master, count, &stop, None).await?;
    // The registrations' own burst, and a change of rhythm the cluster's size asks for, are
    // over before measuring.
    tokio::time::sleep(window.max(Duration::from_secs(3))).await;
    let pid = master.proc.pid();
    let mut cpu = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..windows {
        let (before, t0) = (procs::cpu_time(pid)?, std::time::Instant::now());
        tokio::time::sleep(window).await;
        let used = procs::cpu_time(pid)?.saturating_sub(before);
        cpu.push(used.as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0);
        rss.push(procs::rss_mib(pid)?.0);
        if let Some(done) = sims.try_join_next() {
            done??;
            anyhow::bail!("a simulated worker stopped early");
        }
    }
    let alive = alive_count(&master)?;
    anyhow::ensure!(
        alive == count,
        "only {alive} of {count} simulated workers stayed ALIVE"
    );
    let (_, peak) = procs::rss_mib(pid)?;
    stop.cancel();
    while let Some(done) = sims.join_next().await {
        done??;
    }
    let cpu_figure = Figure::new(
        format!("master with {label} simulated workers heartbeating: CPU"),
        Unit::CorePercent,
        cpu,
        "≤ 5 % of a core",
        format!(
            "{count} workers on their own connections; {windows} windows of {:.0} s",
            window.as_secs_f64()
        ),
    )?;
    let rss_stats = Stats::of(rss.clone()).ok_or_else(|| anyhow!("no samples"))?;
    let rss_figure = Figure::new(
        format!("master with {label} simulated workers heartbeating: RSS"),
        Unit::MiB,
        rss,
        rss_target,
        format!(
            "{count} workers; VmRSS at the end of each window (median {:.1}); peak (VmHWM) {peak:.1} MiB",
            rss_stats.median
        ),
    )?;
    Ok((cpu_figure, rss_figure))
}
