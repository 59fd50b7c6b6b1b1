//! The table the benchmark prints: one row per figure, with its target.

use std::time::Duration;

use crate::stats::Stats;

pub struct Figure {
    pub name: &'static str,
    pub stats: Stats,
    pub target: &'static str,
    /// What else was measured alongside (sizes, counts).
    pub note: String,
}

#[derive(Default)]
pub struct Table {
    rows: Vec<Figure>,
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

impl Table {
    pub fn push(&mut self, figure: Figure) {
        self.rows.push(figure);
    }

    pub fn print(&self) {
        println!("| figure | median | p99 | min | max | runs | target | notes |");
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
        for f in &self.rows {
            let s = &f.stats;
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                f.name,
                ms(s.median),
                ms(s.p99),
                ms(s.min),
                ms(s.max),
                s.runs,
                f.target,
                f.note
            );
        }
    }
}
