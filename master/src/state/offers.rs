//! What each alive worker offers, kept up to date from what changed between turns: building
//! the offers of 10,000 workers afresh was most of a turn that placed a few drivers.

use std::sync::{Arc, Mutex};

use hearth_common::proto::WorkerState;
use imbl::OrdMap;

use super::WorkerInfo;
use crate::schedule::{Amount, Offer};

/// An alive worker's offer; `None` for a worker that is not alive.
pub(super) fn offer_of(w: &WorkerInfo) -> Option<Offer> {
    (w.state == WorkerState::Alive).then(|| Offer {
        worker_id: w.id.as_str().into(),
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
}

impl OffersCache {
    pub fn offers(&self, workers: &OrdMap<String, Arc<WorkerInfo>>) -> Vec<Offer> {
        self.made(workers, |made| made.offers.clone())
    }

    /// The cores and memory of the alive workers in `workers`.
    pub fn total(&self, workers: &OrdMap<String, Arc<WorkerInfo>>) -> Amount {
        self.made(workers, |made| made.total)
    }

    fn made<T>(
        &self,
        workers: &OrdMap<String, Arc<WorkerInfo>>,
        read: impl FnOnce(&Made) -> T,
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
                    match (at, now.and_then(|w| offer_of(w))) {
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
