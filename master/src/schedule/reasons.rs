//! Why something cannot be placed now, in words a person acts on: no workers, larger than any
//! worker, no worker offering both, or waiting for slots to free.

use hearth_common::resources::format_mb;

use super::{Ask, Offer};

/// The most free cores and the most free memory on any one worker (not always the same one).
#[derive(Debug, Clone, Copy)]
pub(super) struct MostFree {
    pub(super) cores: u32,
    pub(super) memory_mb: u64,
}

impl MostFree {
    pub(super) fn of(offers: &[Offer]) -> Self {
        Self {
            cores: offers.iter().map(|o| o.free_cores).max().unwrap_or(0),
            memory_mb: offers.iter().map(|o| o.free_memory_mb).max().unwrap_or(0),
        }
    }
}

fn plural(n: u32, one: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// Why `ask` cannot be placed now, in words a person acts on.
pub(super) fn wait_reason(
    offers: &[Offer],
    ask: &Ask,
    largest_cores: u32,
    largest_memory: u64,
    most_free: MostFree,
) -> String {
    if offers.is_empty() {
        return "no alive workers: waiting for a worker to register".to_string();
    }
    if ask.cores > largest_cores {
        return format!(
            "needs {}; the largest worker offers {}",
            plural(ask.cores, "core"),
            largest_cores
        );
    }
    if ask.memory_mb > largest_memory {
        return format!(
            "needs {} of memory; the largest worker offers {}",
            format_mb(ask.memory_mb),
            format_mb(largest_memory)
        );
    }
    let any_offers_both = offers
        .iter()
        .any(|o| o.cores >= ask.cores && o.memory_mb >= ask.memory_mb);
    if !any_offers_both {
        return format!(
            "needs {} and {} on one worker; no worker offers both",
            plural(ask.cores, "core"),
            format_mb(ask.memory_mb)
        );
    }
    format!(
        "waiting for free slots: needs {} and {}; the most free on any worker is {} and {}",
        plural(ask.cores, "core"),
        format_mb(ask.memory_mb),
        plural(most_free.cores, "core"),
        format_mb(most_free.memory_mb)
    )
}
