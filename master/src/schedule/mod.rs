//! Placement as a pure function: given what each alive worker has free, the drivers waiting in
//! FIFO order and the applications wanting executors, decide where each goes or why it waits.
//! No I/O, no clock. Drivers are placed first, then executors, like Spark's standalone master.
//!
//! Drivers are considered in submission order, but one that cannot fit does not block smaller
//! ones behind it (Spark's behaviour). Among workers where both cores and memory fit, the one
//! with the most free cores wins (then most free memory, fewest drivers, id), which spreads
//! drivers over the cluster.
//!
//! Executors are placed application by application in registration order. With `spread_out`
//! (the default) an application's executors are dealt one at a time, round-robin, over the
//! workers with room, most free cores first; without it each worker is filled before the next
//! (consolidation). An executor goes only where its cores and its memory both fit.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, HashMap},
};

use hearth_common::resources::format_mb;

/// What one alive worker offers and has free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub worker_id: String,
    pub cores: u32,
    pub memory_mb: u64,
    pub free_cores: u32,
    pub free_memory_mb: u64,
    pub drivers: usize,
}

/// What one waiting driver asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub driver_id: String,
    pub cores: u32,
    pub memory_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Place {
        driver_id: String,
        worker_id: String,
    },
    Wait {
        driver_id: String,
        reason: String,
    },
}

/// Places `asks` (in FIFO order) on `offers`. The returned decisions are in the order of `asks`;
/// `offers` are left with what remains free.
///
/// Offers are kept ordered by preference (most free cores, then memory, fewest drivers, id), so
/// a placement costs a few steps down that order rather than a pass over every worker; the
/// reason a driver waits is worked out once per size asked for until something is placed.
pub fn place_drivers(offers: &mut [Offer], asks: &[Ask]) -> Vec<Decision> {
    let largest_cores = offers.iter().map(|o| o.cores).max().unwrap_or(0);
    let largest_memory = offers.iter().map(|o| o.memory_mb).max().unwrap_or(0);
    let mut by_id: Vec<usize> = (0..offers.len()).collect();
    by_id.sort_by(|&a, &b| offers[a].worker_id.cmp(&offers[b].worker_id));
    let mut id_rank = vec![0; offers.len()];
    for (rank, &i) in by_id.iter().enumerate() {
        id_rank[i] = rank;
    }
    let rank = |o: &Offer, i: usize| {
        (
            Reverse(o.free_cores),
            Reverse(o.free_memory_mb),
            o.drivers,
            id_rank[i],
            i,
        )
    };
    let mut preferred: BTreeSet<_> = offers.iter().enumerate().map(|(i, o)| rank(o, i)).collect();
    let mut by_memory: BTreeSet<(Reverse<u64>, usize)> = offers
        .iter()
        .enumerate()
        .map(|(i, o)| (Reverse(o.free_memory_mb), i))
        .collect();
    let mut reasons: HashMap<(u32, u64), String> = HashMap::new();
    asks.iter()
        .map(|ask| {
            let most_free = MostFree {
                cores: preferred.first().map_or(0, |r| r.0.0),
                memory_mb: by_memory.first().map_or(0, |m| m.0.0),
            };
            let fits = ask.cores <= most_free.cores && ask.memory_mb <= most_free.memory_mb;
            let best = fits
                .then(|| {
                    preferred
                        .iter()
                        .take_while(|r| r.0.0 >= ask.cores)
                        .find(|r| r.1.0 >= ask.memory_mb)
                        .copied()
                })
                .flatten();
            match best {
                Some(found) => {
                    let i = found.4;
                    preferred.remove(&found);
                    by_memory.remove(&(Reverse(offers[i].free_memory_mb), i));
                    let offer = &mut offers[i];
                    offer.free_cores -= ask.cores;
                    offer.free_memory_mb -= ask.memory_mb;
                    offer.drivers += 1;
                    preferred.insert(rank(offer, i));
                    by_memory.insert((Reverse(offer.free_memory_mb), i));
                    reasons.clear();
                    Decision::Place {
                        driver_id: ask.driver_id.clone(),
                        worker_id: offer.worker_id.clone(),
                    }
                }
                None => Decision::Wait {
                    driver_id: ask.driver_id.clone(),
                    reason: reasons
                        .entry((ask.cores, ask.memory_mb))
                        .or_insert_with(|| {
                            wait_reason(offers, ask, largest_cores, largest_memory, most_free)
                        })
                        .clone(),
                },
            }
        })
        .collect()
}

/// What one application wants placed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAsk {
    pub app_id: String,
    /// Per executor.
    pub cores: u32,
    pub memory_mb: u64,
    /// Executors still to place (its target minus those it holds; its cap already applied).
    pub wanted: u32,
}

/// Where one application's new executors go, and why the rest wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPlacement {
    pub app_id: String,
    /// One worker id per new executor, in placement order.
    pub workers: Vec<String>,
    /// Set when fewer than `wanted` were placed.
    pub waiting: Option<String>,
}

/// Places executors for `apps` (in registration order) on `offers`, after the drivers.
/// `offers` are left with what remains free.
pub fn place_executors(
    offers: &mut [Offer],
    apps: &[AppAsk],
    spread_out: bool,
) -> Vec<AppPlacement> {
    let largest_cores = offers.iter().map(|o| o.cores).max().unwrap_or(0);
    let largest_memory = offers.iter().map(|o| o.memory_mb).max().unwrap_or(0);
    apps.iter()
        .map(|app| {
            let fits = |o: &Offer| o.free_cores >= app.cores && o.free_memory_mb >= app.memory_mb;
            let mut usable: Vec<usize> = (0..offers.len()).filter(|&i| fits(&offers[i])).collect();
            usable.sort_by(|&a, &b| {
                let (a, b) = (&offers[a], &offers[b]);
                b.free_cores
                    .cmp(&a.free_cores)
                    .then(b.free_memory_mb.cmp(&a.free_memory_mb))
                    .then(a.worker_id.cmp(&b.worker_id))
            });
            let mut workers = Vec::new();
            let mut remaining = app.wanted;
            while remaining > 0 && !usable.is_empty() {
                for &i in &usable {
                    while remaining > 0 && fits(&offers[i]) {
                        let offer = &mut offers[i];
                        offer.free_cores -= app.cores;
                        offer.free_memory_mb -= app.memory_mb;
                        workers.push(offer.worker_id.clone());
                        remaining -= 1;
                        if spread_out {
                            break;
                        }
                    }
                }
                usable.retain(|&i| fits(&offers[i]));
            }
            let waiting = (remaining > 0).then(|| {
                let ask = Ask {
                    driver_id: app.app_id.clone(),
                    cores: app.cores,
                    memory_mb: app.memory_mb,
                };
                let why = wait_reason(
                    offers,
                    &ask,
                    largest_cores,
                    largest_memory,
                    MostFree::of(offers),
                );
                format!(
                    "{} more {} wanted; each {why}",
                    remaining,
                    if remaining == 1 {
                        "executor"
                    } else {
                        "executors"
                    }
                )
            });
            AppPlacement {
                app_id: app.app_id.clone(),
                workers,
                waiting,
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct MostFree {
    cores: u32,
    memory_mb: u64,
}

impl MostFree {
    fn of(offers: &[Offer]) -> Self {
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
fn wait_reason(
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

#[cfg(test)]
mod tests;
