//! What each alive worker offers, kept up to date from what changed between turns: building
//! the offers of 10,000 workers afresh was most of a turn that placed a few drivers.

use std::sync::{Arc, Mutex};

use hearth_common::proto::WorkerState;
use imbl::OrdMap;

use super::WorkerInfo;
use crate::schedule::Offer;

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

/// The offers, in worker id order, and the worker map they were made from. Shared by a state
/// and its copies: whichever asks, the offers follow its own map.
#[derive(Debug, Clone, Default)]
pub(super) struct OffersCache(Arc<Mutex<Option<Made>>>);

/// The worker map the offers were made from, and the offers.
type Made = (OrdMap<String, Arc<WorkerInfo>>, Vec<Offer>);

impl OffersCache {
    pub fn offers(&self, workers: &OrdMap<String, Arc<WorkerInfo>>) -> Vec<Offer> {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match cache.as_mut() {
            Some((made_from, offers)) => {
                for change in made_from.diff(workers) {
                    let (id, now) = match change {
                        imbl::ordmap::DiffItem::Add(id, w) => (id, Some(w)),
                        imbl::ordmap::DiffItem::Update { new: (id, w), .. } => (id, Some(w)),
                        imbl::ordmap::DiffItem::Remove(id, _) => (id, None),
                    };
                    let at = offers.binary_search_by(|o| (*o.worker_id).cmp(id.as_str()));
                    match (at, now.and_then(|w| offer_of(w))) {
                        (Ok(i), Some(offer)) => offers[i] = offer,
                        (Ok(i), None) => {
                            offers.remove(i);
                        }
                        (Err(i), Some(offer)) => offers.insert(i, offer),
                        (Err(_), None) => {}
                    }
                }
                *made_from = workers.clone();
                offers.clone()
            }
            None => {
                let offers: Vec<Offer> = workers.values().filter_map(|w| offer_of(w)).collect();
                *cache = Some((workers.clone(), offers.clone()));
                offers
            }
        }
    }
}
