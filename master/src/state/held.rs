//! What running drivers hold, by queue, kept up to date from what changed between turns.
//!
//! A turn's fair placement needs each queue's use. Counting it over every driver the master
//! holds made each turn as slow as the waiting queue is long (100,000 waiting: most of a
//! submission's turn). The count is kept instead, with the maps it was made from: the next
//! count walks only the records that changed since (the persistent maps share the rest), and is
//! made afresh when the queues change or a worker starts or stops holding its slots.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use hearth_common::proto::DriverState;
use imbl::OrdMap;

use super::{DriverInfo, WorkerInfo};
use crate::schedule::{Amount, QueueTree, named::Named};

/// Each queue's own held cores and memory, and named resources, by queue index.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub amounts: Vec<Amount>,
    pub named: Vec<BTreeMap<String, u64>>,
}

impl Held {
    fn new(queues: usize) -> Self {
        Self {
            amounts: vec![Amount::default(); queues],
            named: vec![BTreeMap::new(); queues],
        }
    }

    fn count(
        &mut self,
        tree: &QueueTree,
        workers: &OrdMap<String, Arc<WorkerInfo>>,
        d: &DriverInfo,
        add: bool,
    ) {
        let held = d.state == DriverState::Running
            && d.worker_id
                .as_deref()
                .and_then(|w| workers.get(w))
                .is_some_and(|w| w.holds_slots());
        let Some(q) = held.then(|| tree.index(&d.spec.queue)).flatten() else {
            return;
        };
        let amount = Amount::new(u64::from(d.spec.cores), d.spec.memory_mb);
        if add {
            self.amounts[q].add(amount);
        } else {
            self.amounts[q].sub(amount);
        }
        for r in &d.resources {
            let n = r.addresses.len() as u64;
            let count = self.named[q].entry(r.name.clone()).or_default();
            *count = if add {
                *count + n
            } else {
                count.saturating_sub(n)
            };
            if *count == 0 {
                self.named[q].remove(&r.name);
            }
        }
    }

    /// Named resources of queue `q` as the scheduler counts them.
    pub fn named_of(&self, q: usize) -> Named {
        Named::new(
            self.named[q]
                .iter()
                .map(|(name, n)| (name.clone(), u32::try_from(*n).unwrap_or(u32::MAX))),
        )
    }
}

/// The count, and the maps and queues it was made from.
#[derive(Debug, Clone)]
struct Counted {
    drivers: OrdMap<String, Arc<DriverInfo>>,
    workers: OrdMap<String, Arc<WorkerInfo>>,
    tree: Arc<QueueTree>,
    held: Held,
}

/// Shared by a state and its copies: whichever asks, the count follows its own maps.
#[derive(Debug, Clone, Default)]
pub(super) struct HeldCache(Arc<Mutex<Option<Counted>>>);

impl HeldCache {
    /// What the running drivers of `drivers` hold by queue of `tree`.
    pub fn held(
        &self,
        tree: &Arc<QueueTree>,
        drivers: &OrdMap<String, Arc<DriverInfo>>,
        workers: &OrdMap<String, Arc<WorkerInfo>>,
    ) -> Held {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let usable = cache
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.tree, tree) && same_holders(&c.workers, workers));
        let counted = match cache.as_mut() {
            Some(c) if usable => {
                for change in c.drivers.diff(drivers) {
                    match change {
                        imbl::ordmap::DiffItem::Add(_, d) => c.held.count(tree, workers, d, true),
                        imbl::ordmap::DiffItem::Remove(_, d) => {
                            c.held.count(tree, workers, d, false)
                        }
                        imbl::ordmap::DiffItem::Update { old, new } => {
                            c.held.count(tree, workers, old.1, false);
                            c.held.count(tree, workers, new.1, true);
                        }
                    }
                }
                c.drivers = drivers.clone();
                c.workers = workers.clone();
                c
            }
            _ => cache.insert(Counted {
                held: afresh(tree, drivers, workers),
                drivers: drivers.clone(),
                workers: workers.clone(),
                tree: tree.clone(),
            }),
        };
        counted.held.clone()
    }
}

/// Whether the same workers hold their slots in both (a changed worker record is compared;
/// the rest is shared).
fn same_holders(
    before: &OrdMap<String, Arc<WorkerInfo>>,
    now: &OrdMap<String, Arc<WorkerInfo>>,
) -> bool {
    before.diff(now).all(|change| match change {
        imbl::ordmap::DiffItem::Update { old, new } => old.1.holds_slots() == new.1.holds_slots(),
        // A worker added or removed may have running drivers counted to it.
        imbl::ordmap::DiffItem::Add(..) | imbl::ordmap::DiffItem::Remove(..) => false,
    })
}

/// The count over every driver.
pub(super) fn afresh(
    tree: &QueueTree,
    drivers: &OrdMap<String, Arc<DriverInfo>>,
    workers: &OrdMap<String, Arc<WorkerInfo>>,
) -> Held {
    let mut held = Held::new(tree.len());
    for d in drivers.values() {
        held.count(tree, workers, d, true);
    }
    held
}
