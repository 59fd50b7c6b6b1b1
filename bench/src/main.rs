//! `hearth-bench`: measures Hearth and prints one table of figures (median, p99, min, max,
//! runs) beside each target. Real `hearth master` and `hearth worker` processes are used where a
//! figure is about them, simulated workers where it is about the master under a thousand, and
//! the master's state in-process for the scheduler and the UI page. `--quick` runs every figure
//! a few times so CI keeps it working; it asserts nothing about speed. The method behind each
//! figure is in BENCHMARKS.md.

mod durable;
mod failure;
mod fairness;
mod figures;
mod kept_logs;
mod launch;
mod preemption;
mod procs;
mod scale;
mod scheduler;
mod sim;
mod startup;
mod stats;
mod ui;

use std::time::Duration;

use clap::Parser;

/// The same allocator as the `hearth` binary, so in-process figures cost what the master's do.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hearth-bench",
    about = "Measure Hearth and print a table of figures"
)]
struct Args {
    /// A few runs per figure: checks that every figure still works, in seconds.
    #[arg(long)]
    quick: bool,
    /// Only the figures whose key or name contains this text (keys: start, submit, floor,
    /// throughput, executors, kill, stop, at-most-one, scheduler, queues, preemption,
    /// heartbeat, curve, scale, burst, tenth, kept, idle, durable, ui).
    #[arg(long)]
    only: Option<String>,
}

fn main() -> anyhow::Result<()> {
    // As a driver of the submit figure, this binary only says it started, before anything else.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(launch::STAMP) {
        return launch::stamp(&argv[2..]);
    }
    let args = Args::parse();
    // Thousands of simulated workers each hold a connection.
    hearth_master::listen::raise_open_file_limit()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let table = runtime.block_on(run(&args))?;
    table.print();
    Ok(())
}

async fn run(args: &Args) -> anyhow::Result<figures::Table> {
    let quick = args.quick;
    let pick = |full: usize, quick_runs: usize| if quick { quick_runs } else { full };
    let wanted = |key: &str, name: &str| {
        args.only
            .as_deref()
            .is_none_or(|o| key.contains(o) || name.contains(o))
    };
    let binary = procs::hearth_binary()?;
    let mut table = figures::Table::default();
    eprintln!(
        "hearth-bench: {} run, {}",
        if quick { "quick" } else { "full" },
        binary.display()
    );
    if wanted("start", "worker process start") {
        table.push(startup::worker_start(&binary, pick(20, 2)).await?);
    }
    if wanted("submit", "submit → driver") || wanted("floor", "floor") {
        for figure in launch::submit_to_start(&binary, pick(200, 10)).await? {
            table.push(figure);
        }
    }
    if wanted("throughput", "end-to-end throughput") {
        table.push(launch::throughput(&binary, pick(3, 1), pick(2000, 100)).await?);
    }
    if wanted("executors", "application registered") {
        table.push(launch::app_to_executors(&binary, pick(50, 3)).await?);
    }
    if wanted("kill", "worker SIGKILL") {
        table.push(failure::worker_kill(&binary, pick(20, 2)).await?);
    }
    if wanted("stop", "worker silently stopped") {
        let timeout = Duration::from_secs(if quick { 1 } else { 10 });
        table.push(failure::worker_stop(&binary, pick(2, 1), timeout).await?);
    }
    if wanted("at-most-one", "--at-most-one") {
        let timeout = Duration::from_secs(if quick { 1 } else { 10 });
        table.push(failure::at_most_one_relaunch(&binary, pick(3, 1), timeout).await?);
    }
    if wanted("scheduler", "scheduler alone") {
        table.push(scheduler::place_all(pick(20, 2))?);
    }
    if wanted("queues", "queues:") {
        table.push(fairness::hundred_queues(pick(20, 2))?);
        for figure in fairness::trace_figures(pick(60, 10) as i64)? {
            table.push(figure);
        }
    }
    if wanted("preemption", "preemption:") {
        table.push(preemption::decision(pick(20, 2))?);
        for figure in preemption::trace_figures(pick(60, 10) as i64)? {
            table.push(figure);
        }
    }
    if wanted("heartbeat", "simulated workers") {
        let (cpu, rss) = sim::heartbeating(
            &binary,
            pick(1000, 50),
            pick(5, 1),
            Duration::from_secs(pick(5, 1) as u64),
            ("1,000", "≤ 64 MiB"),
        )
        .await?;
        table.push(cpu);
        table.push(rss);
    }
    // The curve between: the same figure at 2,500 and 5,000 workers.
    if wanted("curve", "curve") {
        for (count, label) in [(pick(2_500, 100), "2,500"), (pick(5_000, 150), "5,000")] {
            let (cpu, rss) = sim::heartbeating(
                &binary,
                count,
                pick(3, 1),
                Duration::from_secs(pick(5, 1) as u64),
                (label, "between the 1,000 and 10,000 figures"),
            )
            .await?;
            table.push(cpu);
            table.push(rss);
        }
    }
    if wanted("scale", "10,000 simulated workers") {
        // 10,000 workers are asked for a heartbeat every 10 s (--max-heartbeat-rate): each
        // window holds one of every worker's, whatever their phase.
        let (cpu, rss) = sim::heartbeating(
            &binary,
            pick(10_000, 200),
            pick(5, 1),
            Duration::from_secs(pick(10, 1) as u64),
            ("10,000", "≤ 256 MiB"),
        )
        .await?;
        table.push(cpu);
        table.push(rss);
    }
    if wanted("scale", "scale:") || wanted("burst", "burst") {
        table.push(scheduler::burst_turn(pick(20, 2))?);
    }
    if wanted("scale", "scale:") {
        let size = scale::Size {
            workers: pick(10_000, 200),
            waiting: pick(100_000, 2_000),
            retained: pick(1_000_000, 10_000),
            probes: pick(200, 10),
        };
        for figure in scale::at_scale(&binary, size, "scale").await? {
            table.push(figure);
        }
    }
    // The same scenario a tenth the size, for the curve in the Scaling section.
    if wanted("tenth", "tenth:") {
        let size = scale::Size {
            workers: pick(1_000, 100),
            waiting: pick(10_000, 1_000),
            retained: pick(100_000, 5_000),
            probes: pick(200, 10),
        };
        for figure in scale::at_scale(&binary, size, "tenth").await? {
            table.push(figure);
        }
    }
    // Kept logs a tenth and the whole size of a million retained drivers' (two streams each):
    // what one more driver's end costs must not grow with them.
    if wanted("kept", "kept logs:") {
        for streams in [pick(200_000, 2_000), pick(2_000_000, 20_000)] {
            table.push(kept_logs::ended_driver_at(streams, pick(200, 5)).await?);
        }
    }
    if wanted("idle", "master idle RSS") {
        table.push(startup::idle_rss(&binary, pick(3, 1)).await?);
    }
    if wanted("durable", "durable submissions") {
        let window = Duration::from_millis(if quick { 500 } else { 3000 });
        table.push(durable::submissions(&binary, pick(3, 1), window).await?);
    }
    if wanted("ui", ui::NAME) {
        table.push(ui::overview_render(pick(200, 5))?);
    }
    Ok(table)
}
