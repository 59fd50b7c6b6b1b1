//! Why something cannot be placed now: a code for programs and words a person acts on. No
//! workers, larger than any worker, no worker offering both, room only in pieces, or waiting
//! for slots to free; a queue's cap and an unknown queue are decided in [`super::fair`].

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

pub(super) fn plural(n: impl Into<u64>, one: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// What kind of wait it is, for programs (`waitingCode`); stable names, UPPER_SNAKE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WaitCode {
    /// Not tried yet: submitted since the last turn, or the master is recovering.
    Scheduling,
    /// No worker is alive.
    NoWorkers,
    /// Larger than any worker: waits until a larger worker registers.
    TooLarge,
    /// Each resource fits some worker, but no worker offers both.
    NoWorkerOffersBoth,
    /// The cluster has the room free in total, but split over workers.
    Fragmented,
    /// Every worker that could hold it is busy: it runs when slots free.
    NoFreeSlots,
    /// Its queue (or a parent) is at its `max`.
    QueueCap,
    /// Its queue is no longer in the queues file.
    QueueUnknown,
    /// The room that would fit it is held for an item that has waited longer.
    Reserved,
    /// An `at_most_one` driver waiting until its last copy has surely stopped.
    Fencing,
}

impl WaitCode {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitCode::Scheduling => "SCHEDULING",
            WaitCode::NoWorkers => "NO_WORKERS",
            WaitCode::TooLarge => "TOO_LARGE",
            WaitCode::NoWorkerOffersBoth => "NO_WORKER_OFFERS_BOTH",
            WaitCode::Fragmented => "FRAGMENTED",
            WaitCode::NoFreeSlots => "NO_FREE_SLOTS",
            WaitCode::QueueCap => "QUEUE_CAP",
            WaitCode::QueueUnknown => "QUEUE_UNKNOWN",
            WaitCode::Reserved => "RESERVED",
            WaitCode::Fencing => "FENCING",
        }
    }
}

/// A wait: its code and the words for people.
pub type Wait = (WaitCode, String);

/// Why `ask` cannot be placed now, in words a person acts on.
pub(super) fn wait_reason(
    offers: &[Offer],
    ask: &Ask,
    largest_cores: u32,
    largest_memory: u64,
    most_free: MostFree,
) -> Wait {
    if offers.is_empty() {
        return (
            WaitCode::NoWorkers,
            "no alive workers: waiting for a worker to register".to_string(),
        );
    }
    if ask.cores > largest_cores {
        return (
            WaitCode::TooLarge,
            format!(
                "needs {}; the largest worker offers {}",
                plural(ask.cores, "core"),
                largest_cores
            ),
        );
    }
    if ask.memory_mb > largest_memory {
        return (
            WaitCode::TooLarge,
            format!(
                "needs {} of memory; the largest worker offers {}",
                format_mb(ask.memory_mb),
                format_mb(largest_memory)
            ),
        );
    }
    let any_offers_both = offers
        .iter()
        .any(|o| o.cores >= ask.cores && o.memory_mb >= ask.memory_mb);
    if !any_offers_both {
        return (
            WaitCode::NoWorkerOffersBoth,
            format!(
                "needs {} and {} on one worker; no worker offers both",
                plural(ask.cores, "core"),
                format_mb(ask.memory_mb)
            ),
        );
    }
    let free_cores: u64 = offers.iter().map(|o| u64::from(o.free_cores)).sum();
    let free_memory: u64 = offers.iter().map(|o| o.free_memory_mb).sum();
    if free_cores >= u64::from(ask.cores) && free_memory >= ask.memory_mb {
        return (
            WaitCode::Fragmented,
            format!(
                "needs {} and {} on one worker; {} and {} are free, but spread over workers \
                 (the most free on any one is {} and {})",
                plural(ask.cores, "core"),
                format_mb(ask.memory_mb),
                plural(free_cores, "core"),
                format_mb(free_memory),
                plural(most_free.cores, "core"),
                format_mb(most_free.memory_mb)
            ),
        );
    }
    (
        WaitCode::NoFreeSlots,
        format!(
            "waiting for free slots: needs {} and {}; the most free on any worker is {} and {}",
            plural(ask.cores, "core"),
            format_mb(ask.memory_mb),
            plural(most_free.cores, "core"),
            format_mb(most_free.memory_mb)
        ),
    )
}
