//! What each alive worker offers, kept up to date from what changed between turns: building
//! the offers of 10,000 workers afresh was most of a turn that placed a few drivers.

use std::sync::{Arc, Mutex};

use hearth_common::proto::WorkerState;
use imbl::OrdMap;

use super::WorkerInfo;
use crate::schedule::{Amount, Offer};

/// An alive worker's offer; `None` for a worker that is not alive.
pub(super) fn offer_of(w: &WorkerInfo) -> Option<Offer> {
    offer_named(w, || w.id.as_str().into())
}

/// An alive worker's offer under the id `id` gives.
fn offer_named(w: &WorkerInfo, id: impl FnOnce() -> Arc<str>) -> Option<Offer> {
    (w.state == WorkerState::Alive).then(|| Offer {
        worker_id: id(),
        cores: w.cores,
        memory_mb: w.memory_mb,
        free_cores: w.free_cores(),
        free_memory_mb: w.free_memory_mb(),
        drivers: w.drivers.len(),
        resources: w.named(),
        free_resources: w.free_named(),
    })
}

/// The offers, in worker id order, what they add up to, and the worker map they were made
/// from. Shared by a state and its copies: whichever asks, the offers follow its own map.
#[derive(Debug, Clone, Default)]
pub(super) struct OffersCache(Arc<Mutex<Option<Made>>>);

#[derive(Debug)]
struct Made {
    from: OrdMap<String, Arc<WorkerInfo>>,
    offers: Vec<Offer>,
    /// The alive workers' cores and memory: every turn's fair shares are taken of it.
    total: Amount,
    /// The last turn's copy, given back: the next copy is made in its memory, not in pages
    /// the kernel must clear first (10,000 offers are a megabyte).
    spare: Vec<Offer>,
}

impl OffersCache {
    pub fn offers(&self, workers: &OrdMap<String, Arc<WorkerInfo>>) -> Vec<Offer> {
        self.made(workers, |made| {
            let mut copy = std::mem::take(&mut made.spare);
            copy.clear();
            copy.extend_from_slice(&made.offers);
            copy
        })
    }

    /// Takes back a copy `offers` made, for the next.
    pub fn give_back(&self, copy: Vec<Offer>) {
        if let Some(made) = self.0.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            made.spare = copy;
        }
    }

    /// The cores and memory of the alive workers in `workers`.
    pub fn total(&self, workers: &OrdMap<String, Arc<WorkerInfo>>) -> Amount {
        self.made(workers, |made| made.total)
    }

    fn made<T>(
        &self,
        workers: &OrdMap<String, Arc<WorkerInfo>>,
        read: impl FnOnce(&mut Made) -> T,
    ) -> T {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let made = match cache.as_mut() {
            Some(made) => {
                for change in made.from.diff(workers) {
                    let (id, now) = match change {
                        imbl::ordmap::DiffItem::Add(id, w) => (id, Some(w)),
                        imbl::ordmap::DiffItem::Update { new: (id, w), .. } => (id, Some(w)),
                        imbl::ordmap::DiffItem::Remove(id, _) => (id, None),
                    };
                    let at = made
                        .offers
                        .binary_search_by(|o| (*o.worker_id).cmp(id.as_str()));
                    if let Ok(i) = at {
                        made.total.sub(capacity(&made.offers[i]));
                    }
                    // An offer made again keeps its id's allocation: the ids a turn's copy
                    // shares stay together in memory, not scattered over every worker's last
                    // change (copying 10,000 offers was mostly waiting on their ids' counts).
                    let kept = at.ok().map(|i| made.offers[i].worker_id.clone());
                    let offer = now.and_then(|w| {
                        offer_named(w, || kept.unwrap_or_else(|| w.id.as_str().into()))
                    });
                    match (at, offer) {
                        (Ok(i), Some(offer)) => {
                            made.total.add(capacity(&offer));
                            made.offers[i] = offer;
                        }
                        (Ok(i), None) => {
                            made.offers.remove(i);
                        }
                        (Err(i), Some(offer)) => {
                            made.total.add(capacity(&offer));
                            made.offers.insert(i, offer);
                        }
                        (Err(_), None) => {}
                    }
                }
                made.from = workers.clone();
                made
            }
            None => {
                let offers: Vec<Offer> = workers.values().filter_map(|w| offer_of(w)).collect();
                let mut total = Amount::default();
                for offer in &offers {
                    total.add(capacity(offer));
                }
                cache.insert(Made {
                    from: workers.clone(),
                    offers,
                    total,
                    spare: Vec::new(),
                })
            }
        };
        read(made)
    }
}

/// What an offer's worker has in all.
fn capacity(offer: &Offer) -> Amount {
    Amount::new(u64::from(offer.cores), offer.memory_mb)
}
