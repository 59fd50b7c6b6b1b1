//! Drivers, in submission order: each goes to the worker where both its cores and memory fit
//! with the most free cores (then memory, fewest drivers, id); one that fits nowhere waits
//! without blocking smaller ones behind it.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, HashMap},
};

use super::{
    Offer,
    reasons::{MostFree, wait_reason},
};

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
