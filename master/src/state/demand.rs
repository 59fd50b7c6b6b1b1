//! What the waiting work asks of the cluster's size, for an autoscaler outside the master.

use std::collections::BTreeMap;

use super::State;
use crate::schedule::demand::{Demand, Shape, workers_needed};

/// Workers wanted and idle, as `/metrics` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    pub alive: u32,
    /// Alive workers running nothing.
    pub idle: u32,
    /// Alive workers plus those the waiting work needs.
    pub wanted: u32,
    /// Waiting drivers and executors no worker of today's shape could hold.
    pub too_large: usize,
}

impl State {
    /// What the waiting work needs in workers of `shape`. Drivers held by a queue's cap (or a
    /// removed queue) or fenced ask for nothing: more workers would not start them.
    pub fn demand_for(&self, shape: Shape) -> Demand {
        use crate::schedule::WaitCode;
        let asks: Vec<_> = self
            .asks(0)
            .into_iter()
            .filter(|a| {
                self.drivers.get(&a.driver_id).is_none_or(|d| {
                    !matches!(
                        d.waiting_code,
                        Some(WaitCode::QueueCap | WaitCode::QueueUnknown)
                    )
                })
            })
            .collect();
        workers_needed(shape, &asks, &self.app_asks())
    }

    /// The offer most alive workers make: the shape of a Deployment's replicas.
    pub fn worker_shape(&self) -> Option<Shape> {
        let mut counts: BTreeMap<(u32, u64), usize> = BTreeMap::new();
        for w in self.alive_workers() {
            *counts.entry((w.cores, w.memory_mb)).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|(shape, n)| (*n, *shape))
            .map(|((cores, memory_mb), _)| Shape { cores, memory_mb })
    }

    /// How many workers the cluster wants now. With no worker alive the shape is unknown:
    /// waiting work then wants one, to learn it.
    pub fn sizing(&self) -> Sizing {
        let alive = self.alive_workers().count();
        let idle = self
            .alive_workers()
            .filter(|w| w.drivers.is_empty() && w.executors.is_empty())
            .count();
        let asks = self.asks(0);
        let apps = self.app_asks();
        let demand = match self.worker_shape() {
            Some(shape) => workers_needed(shape, &asks, &apps),
            None => Demand {
                more_workers: u32::from(!asks.is_empty() || apps.iter().any(|a| a.wanted > 0)),
                too_large: 0,
            },
        };
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Sizing {
            alive: count(alive),
            idle: count(idle),
            wanted: count(alive).saturating_add(demand.more_workers),
            too_large: demand.too_large,
        }
    }
}
