//! The table the benchmark prints: one row per figure, with its target.

use crate::stats::{Stats, Unit};

pub struct Figure {
    pub name: &'static str,
    pub stats: Stats,
    pub unit: Unit,
    pub target: &'static str,
    /// What else was measured alongside (sizes, counts, the parts of a figure).
    pub note: String,
}

impl Figure {
    /// A figure from durations or other values; an error when nothing was measured.
    pub fn new(
        name: &'static str,
        unit: Unit,
        values: Vec<f64>,
        target: &'static str,
        note: String,
    ) -> anyhow::Result<Self> {
        let stats = Stats::of(values).ok_or_else(|| anyhow::anyhow!("{name}: no runs"))?;
        Ok(Self {
            name,
            stats,
            unit,
            target,
            note,
        })
    }
}

#[derive(Default)]
pub struct Table {
    rows: Vec<Figure>,
}

impl Table {
    pub fn push(&mut self, figure: Figure) {
        eprintln!(
            "  {}: median {} ({} runs)",
            figure.name,
            figure.unit.format(figure.stats.median),
            figure.stats.runs
        );
        self.rows.push(figure);
    }

    pub fn print(&self) {
        println!("| figure | median | p99 | min | max | runs | target | notes |");
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
        for f in &self.rows {
            let (s, u) = (&f.stats, f.unit);
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                f.name,
                u.format(s.median),
                u.format(s.p99),
                u.format(s.min),
                u.format(s.max),
                s.runs,
                f.target,
                f.note
            );
        }
    }
}
