//! The table the benchmark prints: one row per figure, with its target.

use crate::stats::{Stats, Unit};

pub struct Figure {
    pub name: String,
    pub stats: Stats,
    pub unit: Unit,
    pub target: String,
    /// What else was measured alongside (sizes, counts, the parts of a figure).
    pub note: String,
}

impl Figure {
    /// A figure from durations or other values; an error when nothing was measured.
    pub fn new(
        name: impl Into<String>,
        unit: Unit,
        values: Vec<f64>,
        target: impl Into<String>,
        note: String,
    ) -> anyhow::Result<Self> {
        let name = name.into();
        let stats = Stats::of(values).ok_or_else(|| anyhow::anyhow!("{name}: no runs"))?;
        Ok(Self {
            name,
            stats,
            unit,
            target: target.into(),
            note,
        })
    }
}

pub struct Table {
    rows: Vec<Figure>,
    /// When the last figure was done, to show how long each takes.
    last: std::time::Instant,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            last: std::time::Instant::now(),
        }
    }
}

impl Table {
    pub fn push(&mut self, figure: Figure) {
        eprintln!(
            "  {}: median {} ({} runs, {:.1} s)",
            figure.name,
            figure.unit.format(figure.stats.median),
            figure.stats.runs,
            self.last.elapsed().as_secs_f64()
        );
        self.last = std::time::Instant::now();
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
