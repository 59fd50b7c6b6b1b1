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

/// The offers kept ordered by preference (most free cores, then memory, fewest drivers, id), so
/// a placement costs a few steps down that order rather than a pass over every worker; the
/// reason a driver waits is worked out once per size asked for until something is placed.
pub struct DriverFit<'a> {
    offers: &'a mut [Offer],
    id_rank: Vec<usize>,
    preferred: BTreeSet<Rank>,
    by_memory: BTreeSet<(Reverse<u64>, usize)>,
    largest_cores: u32,
    largest_memory: u64,
    reasons: HashMap<(u32, u64), Wait>,
}

impl<'a> DriverFit<'a> {
    pub fn new(offers: &'a mut [Offer]) -> Self {
        let largest_cores = offers.iter().map(|o| o.cores).max().unwrap_or(0);
        let largest_memory = offers.iter().map(|o| o.memory_mb).max().unwrap_or(0);
        let mut by_id: Vec<usize> = (0..offers.len()).collect();
        by_id.sort_by(|&a, &b| offers[a].worker_id.cmp(&offers[b].worker_id));
        let mut id_rank = vec![0; offers.len()];
        for (rank, &i) in by_id.iter().enumerate() {
            id_rank[i] = rank;
        }
        let mut fit = Self {
            offers,
            id_rank,
            preferred: BTreeSet::new(),
            by_memory: BTreeSet::new(),
            largest_cores,
            largest_memory,
            reasons: HashMap::new(),
        };
        for i in 0..fit.offers.len() {
            fit.preferred.insert(fit.rank(i));
            fit.by_memory
                .insert((Reverse(fit.offers[i].free_memory_mb), i));
        }
        fit
    }

    fn rank(&self, i: usize) -> Rank {
        let o = &self.offers[i];
        (
            Reverse(o.free_cores),
            Reverse(o.free_memory_mb),
            o.drivers,
            self.id_rank[i],
            i,
        )
    }

    /// Takes room for `ask` on the preferred worker that fits it and returns that worker's id,
    /// or says why it waits.
    pub fn place(&mut self, ask: &Ask) -> Result<String, Wait> {
        let most_free = MostFree {
            cores: self.preferred.first().map_or(0, |r| r.0.0),
            memory_mb: self.by_memory.first().map_or(0, |m| m.0.0),
        };
        let fits = ask.cores <= most_free.cores && ask.memory_mb <= most_free.memory_mb;
        let offers = &*self.offers;
        let best = fits
            .then(|| {
                self.preferred
                    .iter()
                    .take_while(|r| r.0.0 >= ask.cores)
                    .find(|r| {
                        r.1.0 >= ask.memory_mb && offers[r.4].free_resources.covers(&ask.resources)
                    })
                    .copied()
            })
            .flatten();
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
        let Some(found) = best else {
            let (offers, largest) = (&*self.offers, (self.largest_cores, self.largest_memory));
            return Err(self
                .reasons
                .entry((ask.cores, ask.memory_mb))
                .or_insert_with(|| wait_reason(offers, ask, largest.0, largest.1, most_free))
                .clone());
        };
        let i = found.4;
        self.preferred.remove(&found);
        self.by_memory
            .remove(&(Reverse(self.offers[i].free_memory_mb), i));
        let offer = &mut self.offers[i];
        offer.free_cores -= ask.cores;
        offer.free_memory_mb -= ask.memory_mb;
        offer.free_resources.take(&ask.resources);
        offer.drivers += 1;
        let worker_id = offer.worker_id.to_string();
        let free_memory = offer.free_memory_mb;
        self.preferred.insert(self.rank(i));
        self.by_memory.insert((Reverse(free_memory), i));
        self.reasons.clear();
        Ok(worker_id)
    }
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
