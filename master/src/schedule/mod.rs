//! Placement as a pure function: given what each alive worker has free, the queues and what
//! each uses, the waiting drivers and the applications wanting executors, decide where each goes
//! or why it waits. No I/O, no clock. Drivers are placed first, then executors, like Spark's
//! standalone master.
//!
//! Items are tried in the order their queues earn (guarantees first, then weighted dominant
//! share), within a queue by priority then submission order; one that cannot fit does not block
//! the ones behind it. With one queue this is Spark's order. Among workers where both cores and
//! memory fit, the one with the most free cores wins (then most free memory, fewest drivers,
//! id), which spreads drivers over the cluster.
//!
//! Executors are placed application by application. With `spread_out`
//! (the default) an application's executors are dealt one at a time, round-robin, over the
//! workers with room, most free cores first; without it each worker is filled before the next
//! (consolidation). An executor goes only where its cores and its memory both fit.
//!
//! - [`queues`]: the queue tree, what each queue uses, and which is served next.
//! - [`fair`]: placement across queues, within their caps.
//! - [`preemption`]: which running work ends so that work a queue is owed can start.
//! - [`reservations`]: room held for what waited longest, and when it will fit.
//! - [`drivers`]: where one driver fits, or why it waits.
//! - [`gangs`]: all of a gang's executors in one turn, or none.
//! - [`named`]: GPUs and other named resources: counts, fit, and why one waits for them.
//! - [`executors`]: where each application's wanted executors go, spread out or consolidated.
//! - [`reasons`]: why something cannot be placed: a code, and words a person acts on.
//! - [`demand`]: how many more workers of one shape the waiting work needs.
//!
//! A new placement rule lands as a module of its own here, a pure function over offers and
//! asks with its tests beside it, called from `state::placement`.

pub mod demand;
pub mod drivers;
pub mod executors;
pub mod fair;
pub mod gangs;
pub mod named;
pub mod preemption;
pub mod queues;
mod reasons;
pub mod reservations;

pub use drivers::{Ask, Decision, place_drivers};
pub use executors::{AppAsk, AppPlacement, place_executors};
pub use fair::{
    DriverPlacement, Queued, place_drivers_fairly, place_drivers_fairly_at_most,
    place_executors_fairly,
};
pub use queues::{Amount, DEFAULT_QUEUE, QueueDef, QueueTree, Usage};
pub use reasons::{Wait, WaitCode};

/// What one alive worker offers and has free.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offer {
    /// Shared with the cached offers, so a turn's copy of 10,000 offers allocates no ids.
    pub worker_id: std::sync::Arc<str>,
    pub cores: u32,
    pub memory_mb: u64,
    pub free_cores: u32,
    pub free_memory_mb: u64,
    pub drivers: usize,
    /// Named resources it offers, and those free.
    pub resources: named::Named,
    pub free_resources: named::Named,
}

#[cfg(test)]
mod gang_tests;
#[cfg(test)]
mod preemption_tests;
#[cfg(test)]
mod queue_tests;
#[cfg(test)]
mod tests;
