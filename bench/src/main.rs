//! `hearth-bench`: measures Hearth and prints one table of figures (median, p99, min, max,
//! runs) beside each target. `--quick` runs every figure a few times so CI keeps it working;
//! it asserts nothing about speed. The method behind each figure is in BENCHMARKS.md.

mod figures;
mod stats;
mod ui;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "hearth-bench",
    about = "Measure Hearth and print a table of figures"
)]
struct Args {
    /// A few runs per figure: checks that every figure still works, in seconds.
    #[arg(long)]
    quick: bool,
    /// Only the figures whose name contains this text.
    #[arg(long)]
    only: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runs = if args.quick { 5 } else { 200 };
    let mut table = figures::Table::default();
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));
    if wanted(ui::NAME) {
        table.push(ui::overview_render(runs)?);
    }
    table.print();
    Ok(())
}
