//! Monte-Carlo Pi on a Hearth cluster: a driver and its executors talking over TCP.
//!
//! Submitted as a driver, `pi` listens on a free port, registers an application whose executors
//! run this same program (`pi executor --port P`), and deals out tasks: each task throws one
//! random point into every cell of a band of a grid over the unit square and counts those inside
//! the quarter circle (stratified sampling, so a modest number of points gives Pi to several
//! decimals). Executors connect back to `$HEARTH_DRIVER_HOST:P`, take tasks until none are left,
//! and exit 0. A task's points depend only on the seed and the task's number, so the answer is
//! the same whatever the number of executors; a task whose executor dies is dealt again.
//!
//! ```text
//! hearth submit --wait -- target/release/examples/pi --executors 4 --seed 42
//! ```
//!
//! Given executors at submit time instead (`hearth submit --executors 4 --executor-command
//! 'pi executor --port 9000' -- pi --port 9000`), the driver uses that application.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use hearth_common::{
    client::{Client, app_for_this_driver},
    proto::{ApplicationSpec, ApplicationState},
    state_names::{StateName, app_state},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

#[derive(Parser)]
#[command(about = "Monte-Carlo Pi over Hearth executors")]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    driver: DriverArgs,
}

#[derive(Subcommand)]
enum Role {
    /// Run as an executor: connect to the driver and work until it says done.
    Executor {
        /// The driver's port; its host is $HEARTH_DRIVER_HOST.
        #[arg(long)]
        port: u16,
    },
}

#[derive(clap::Args)]
struct DriverArgs {
    /// Executors to ask for.
    #[arg(long, default_value_t = 4)]
    executors: u32,
    /// Points in all (rounded down to a square grid).
    #[arg(long, default_value_t = 100_000_000)]
    samples: u64,
    /// Tasks the work is split into.
    #[arg(long, default_value_t = 64)]
    tasks: u32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Port to listen on for executors (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Memory per executor in MiB.
    #[arg(long, default_value_t = 128)]
    executor_memory_mb: u64,
}

/// splitmix64: small, fast, and the same on every machine and compiler version.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Rows `[first, end)` of a `grid` x `grid` grid, one jittered point per cell: how many fall
/// inside the quarter circle.
fn count_hits(seed: u64, task: u32, grid: u64, first: u64, end: u64) -> u64 {
    let mut rng = SplitMix(seed ^ u64::from(task).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let cell = 1.0 / grid as f64;
    let mut hits = 0;
    for row in first..end {
        for col in 0..grid {
            let x = (col as f64 + rng.unit()) * cell;
            let y = (row as f64 + rng.unit()) * cell;
            hits += u64::from(x * x + y * y <= 1.0);
        }
    }
    hits
}

/// One unit of work: a band of rows.
#[derive(Debug, Clone, Copy)]
struct Task {
    index: u32,
    first: u64,
    end: u64,
}

struct Work {
    grid: u64,
    seed: u64,
    tasks: u32,
    queue: Mutex<VecDeque<Task>>,
    results: Mutex<BTreeMap<u32, u64>>,
    done: Notify,
}

impl Work {
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Task>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_results(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, u64>> {
        self.results.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves one executor: hands it tasks until none are left. A task it took but did not finish
/// goes back on the queue.
async fn serve_executor(stream: TcpStream, work: Arc<Work>) -> Result<()> {
    let peer = stream.peer_addr()?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let hello = lines.next_line().await?.unwrap_or_default();
    eprintln!("pi: {hello} connected from {peer}");
    loop {
        let next = work.lock_queue().pop_front();
        let Some(task) = next else {
            // Tasks out with other executors may come back if those die: stay until all are in.
            if work.lock_results().len() == work.tasks as usize {
                write.write_all(b"done\n").await?;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let sent = write
            .write_all(
                format!(
                    "task {} {} {} {} {}\n",
                    task.index, work.seed, work.grid, task.first, task.end
                )
                .as_bytes(),
            )
            .await;
        let answer = match sent {
            Ok(()) => lines.next_line().await,
            Err(e) => Err(e),
        };
        let hits = match answer {
            Ok(Some(line)) => parse_result(&line, task.index),
            Ok(None) => Err(anyhow!("the executor hung up")),
            Err(e) => Err(e.into()),
        };
        match hits {
            Ok(hits) => {
                let mut results = work.lock_results();
                results.insert(task.index, hits);
                if results.len() == work.tasks as usize {
                    work.done.notify_one();
                }
            }
            Err(e) => {
                work.lock_queue().push_back(task);
                return Err(e.context(format!("task {} from {peer}", task.index)));
            }
        }
    }
}

fn parse_result(line: &str, index: u32) -> Result<u64> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("result"), Some(i), Some(hits)) if i == index.to_string() => {
            Ok(hits.parse().context("hits")?)
        }
        _ => bail!("unexpected answer {line:?}"),
    }
}

async fn driver(args: DriverArgs) -> Result<()> {
    if args.tasks == 0 || args.executors == 0 {
        bail!("--tasks and --executors must be at least 1");
    }
    let grid = (args.samples as f64).sqrt() as u64;
    if grid < u64::from(args.tasks) {
        bail!(
            "--samples {} is too few for {} tasks",
            args.samples,
            args.tasks
        );
    }
    let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], args.port))).await?;
    let port = listener.local_addr()?.port();
    let client = Client::from_env().await?;

    let app_id = match std::env::var("HEARTH_APP_ID") {
        Ok(id) if !id.is_empty() => id,
        _ => {
            let exe = std::env::current_exe()?.display().to_string();
            let spec = ApplicationSpec {
                name: "pi".into(),
                command: vec![exe, "executor".into(), "--port".into(), port.to_string()],
                executor_cores: 1,
                executor_memory_mb: args.executor_memory_mb,
                executors: args.executors,
                ..Default::default()
            };
            client.register_app(app_for_this_driver(spec)).await?.id
        }
    };
    eprintln!(
        "pi: application {app_id}, listening on port {port}, {grid}x{grid} points in {} tasks",
        args.tasks
    );

    let tasks: VecDeque<Task> = (0..args.tasks)
        .map(|i| Task {
            index: i,
            first: grid * u64::from(i) / u64::from(args.tasks),
            end: grid * (u64::from(i) + 1) / u64::from(args.tasks),
        })
        .collect();
    let work = Arc::new(Work {
        grid,
        seed: args.seed,
        tasks: args.tasks,
        queue: Mutex::new(tasks),
        results: Mutex::new(BTreeMap::new()),
        done: Notify::new(),
    });
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = work.done.notified() => break,
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let work = work.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_executor(stream, work).await {
                        eprintln!("pi: {e:#}");
                    }
                });
            }
            _ = check.tick() => {
                // The application can end without us (killed, or its executors kept failing).
                let state = app_state(client.app(&app_id).await?.state);
                if state != ApplicationState::Waiting && state != ApplicationState::Running {
                    bail!("application {app_id} ended {}", state.name());
                }
            }
        }
    }
    let hits: u64 = work.lock_results().values().sum();
    let pi = 4.0 * hits as f64 / (grid * grid) as f64;
    println!("Pi is roughly {pi:.9}");
    eprintln!("pi: {hits} of {} points inside", grid * grid);
    client.unregister_app(&app_id).await?;
    Ok(())
}

async fn executor(port: u16) -> Result<()> {
    let host = std::env::var("HEARTH_DRIVER_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let me = format!(
        "{}/{}",
        std::env::var("HEARTH_APP_ID").unwrap_or_default(),
        std::env::var("HEARTH_EXECUTOR_ID").unwrap_or_default()
    );
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connecting to the driver at {host}:{port}"))?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("hello {me}\n").as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    let mut done = 0;
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["done"] => break,
            ["task", index, seed, grid, first, end] => {
                let (index, seed, grid, first, end): (u32, u64, u64, u64, u64) = (
                    index.parse()?,
                    seed.parse()?,
                    grid.parse()?,
                    first.parse()?,
                    end.parse()?,
                );
                let hits =
                    tokio::task::spawn_blocking(move || count_hits(seed, index, grid, first, end))
                        .await?;
                write
                    .write_all(format!("result {index} {hits}\n").as_bytes())
                    .await?;
                done += 1;
            }
            _ => bail!("unexpected order {line:?}"),
        }
    }
    println!("executor {me}: {done} tasks");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.role {
        Some(Role::Executor { port }) => executor(port).await,
        None => driver(cli.driver).await,
    }
}
