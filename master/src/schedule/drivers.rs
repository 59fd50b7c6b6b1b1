//! Where one driver fits: the worker where both its cores and memory fit with the most free
//! cores (then memory, fewest drivers, id), which spreads drivers over the cluster. Drivers are
//! offered one at a time by the queue policy ([`super::fair`]); [`place_drivers`] offers them in
//! submission order, where one that fits nowhere waits without blocking smaller ones behind it.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, HashMap},
};

use super::{
    Offer,
    named::{self, Named},
    reasons::{MostFree, Wait, WaitCode, wait_reason},
};

/// What one waiting driver asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ask {
    pub driver_id: String,
    pub cores: u32,
    pub memory_mb: u64,
    /// Named resources it needs on the same worker.
    pub resources: Named,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Place {
        driver_id: String,
        worker_id: String,
    },
    Wait {
        driver_id: String,
        code: WaitCode,
        reason: String,
    },
}

type Rank = (Reverse<u32>, Reverse<u64>, usize, usize, usize);

/// Placements made by a pass over the offers before they are ordered: a pass costs about what
/// a few hundred steps in the order do, and ordering 10,000 offers what thousands do.
const PASSES_BEFORE_INDEX: usize = 4;

/// The offers kept ordered by preference (most free cores, then memory, fewest drivers, id), so
/// a placement costs a few steps down that order rather than a pass over every worker; the
/// reason a driver waits is worked out once per size asked for until something is placed.
/// The order is built only once a few drivers were placed: a turn whose asks fit nowhere (a
/// full cluster with a long queue) costs one pass over the offers, and one that places a
/// driver or two a pass each, not a sort of them.
pub struct DriverFit<'a> {
    offers: &'a mut [Offer],
    index: Option<Index>,
    /// Placements left to make by a pass over the offers before the order is built.
    passes_left: usize,
    /// The most free cores and memory on any one offer, before the order is built.
    most_free: (u32, u64),
    largest_cores: u32,
    largest_memory: u64,
    reasons: HashMap<(u32, u64), Wait>,
}

/// The offers in order of preference, and by free memory.
struct Index {
    id_rank: Vec<usize>,
    preferred: BTreeSet<Rank>,
    by_memory: BTreeSet<(Reverse<u64>, usize)>,
}

impl Index {
    fn new(offers: &[Offer]) -> Self {
        // Offers usually come in id order already (the master keeps them so): then no sort.
        let mut id_rank: Vec<usize> = (0..offers.len()).collect();
        if !offers.is_sorted_by(|a, b| a.worker_id <= b.worker_id) {
            let mut by_id = id_rank.clone();
            by_id.sort_by(|&a, &b| offers[a].worker_id.cmp(&offers[b].worker_id));
            for (rank, &i) in by_id.iter().enumerate() {
                id_rank[i] = rank;
            }
        }
        let mut index = Self {
            id_rank,
            preferred: BTreeSet::new(),
            by_memory: BTreeSet::new(),
        };
        // Built from sorted lists at once, not by one insertion per offer.
        let mut preferred: Vec<Rank> = (0..offers.len()).map(|i| index.rank(offers, i)).collect();
        preferred.sort_unstable();
        let mut by_memory: Vec<(Reverse<u64>, usize)> = offers
            .iter()
            .enumerate()
            .map(|(i, o)| (Reverse(o.free_memory_mb), i))
            .collect();
        by_memory.sort_unstable();
        index.preferred = preferred.into_iter().collect();
        index.by_memory = by_memory.into_iter().collect();
        index
    }

    fn rank(&self, offers: &[Offer], i: usize) -> Rank {
        let o = &offers[i];
        (
            Reverse(o.free_cores),
            Reverse(o.free_memory_mb),
            o.drivers,
            self.id_rank[i],
            i,
        )
    }
}

impl<'a> DriverFit<'a> {
    pub fn new(offers: &'a mut [Offer]) -> Self {
        let largest_cores = offers.iter().map(|o| o.cores).max().unwrap_or(0);
        let largest_memory = offers.iter().map(|o| o.memory_mb).max().unwrap_or(0);
        let most_free = most_free(offers);
        Self {
            offers,
            index: None,
            passes_left: PASSES_BEFORE_INDEX,
            most_free,
            largest_cores,
            largest_memory,
            reasons: HashMap::new(),
        }
    }

    /// Takes room for `ask` on the preferred worker that fits it and returns that worker's id,
    /// or says why it waits.
    pub fn place(&mut self, ask: &Ask) -> Result<String, Wait> {
        let most_free = match &self.index {
            Some(index) => MostFree {
                cores: index.preferred.first().map_or(0, |r| r.0.0),
                memory_mb: index.by_memory.first().map_or(0, |m| m.0.0),
            },
            None => MostFree {
                cores: self.most_free.0,
                memory_mb: self.most_free.1,
            },
        };
        let fits = ask.cores <= most_free.cores && ask.memory_mb <= most_free.memory_mb;
        if fits && self.index.is_none() && self.passes_left > 0 {
            self.passes_left -= 1;
            if let Some(worker_id) = self.place_by_pass(ask) {
                return Ok(worker_id);
            }
        }
        let best = if fits {
            let offers = &*self.offers;
            let index = self.index.get_or_insert_with(|| Index::new(offers));
            index
                .preferred
                .iter()
                .take_while(|r| r.0.0 >= ask.cores)
                .find(|r| {
                    r.1.0 >= ask.memory_mb && offers[r.4].free_resources.covers(&ask.resources)
                })
                .copied()
        } else {
            None
        };
        let offers = &*self.offers;
        if best.is_none() && !ask.resources.is_empty() {
            // The named resources are rare: they say why first, else their combination does.
            if let Some(wait) = named::short_of(offers, &ask.resources) {
                return Err(wait);
            }
            if fits {
                return Err(named::not_together(
                    &ask.resources,
                    ask.cores,
                    ask.memory_mb,
                ));
            }
        }
        let (Some(found), Some(index)) = (best, self.index.as_mut()) else {
            let largest = (self.largest_cores, self.largest_memory);
            return Err(self
                .reasons
                .entry((ask.cores, ask.memory_mb))
                .or_insert_with(|| wait_reason(offers, ask, largest.0, largest.1, most_free))
                .clone());
        };
        let i = found.4;
        index.preferred.remove(&found);
        index
            .by_memory
            .remove(&(Reverse(self.offers[i].free_memory_mb), i));
        let worker_id = take(&mut self.offers[i], ask);
        let free_memory = self.offers[i].free_memory_mb;
        index.preferred.insert(index.rank(self.offers, i));
        index.by_memory.insert((Reverse(free_memory), i));
        self.reasons.clear();
        Ok(worker_id)
    }
}

impl DriverFit<'_> {
    /// Places `ask` on the preferred offer that fits it, found by one pass over the offers in
    /// the order's terms (most free cores, then memory, fewest drivers, id); `None` when none
    /// fits (named resources), and then the order decides and says why.
    fn place_by_pass(&mut self, ask: &Ask) -> Option<String> {
        fn key(o: &Offer) -> (Reverse<u32>, Reverse<u64>, usize, &str) {
            (
                Reverse(o.free_cores),
                Reverse(o.free_memory_mb),
                o.drivers,
                &o.worker_id,
            )
        }
        let i = self
            .offers
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                o.free_cores >= ask.cores
                    && o.free_memory_mb >= ask.memory_mb
                    && o.free_resources.covers(&ask.resources)
            })
            .min_by(|(_, a), (_, b)| key(a).cmp(&key(b)))
            .map(|(i, _)| i)?;
        let worker_id = take(&mut self.offers[i], ask);
        self.most_free = most_free(self.offers);
        self.reasons.clear();
        Some(worker_id)
    }
}

/// The most free cores and the most free memory on any one offer.
fn most_free(offers: &[Offer]) -> (u32, u64) {
    (
        offers.iter().map(|o| o.free_cores).max().unwrap_or(0),
        offers.iter().map(|o| o.free_memory_mb).max().unwrap_or(0),
    )
}

/// Takes room for `ask` on `offer`; returns the offer's worker id.
pub(super) fn take(offer: &mut Offer, ask: &Ask) -> String {
    offer.free_cores -= ask.cores;
    offer.free_memory_mb -= ask.memory_mb;
    offer.free_resources.take(&ask.resources);
    offer.drivers += 1;
    offer.worker_id.to_string()
}

/// Places `asks` (in FIFO order) on `offers`. The returned decisions are in the order of `asks`;
/// `offers` are left with what remains free.
pub fn place_drivers(offers: &mut [Offer], asks: &[Ask]) -> Vec<Decision> {
    let mut fit = DriverFit::new(offers);
    asks.iter()
        .map(|ask| match fit.place(ask) {
            Ok(worker_id) => Decision::Place {
                driver_id: ask.driver_id.clone(),
                worker_id,
            },
            Err((code, reason)) => Decision::Wait {
                driver_id: ask.driver_id.clone(),
                code,
                reason,
            },
        })
        .collect()
}
