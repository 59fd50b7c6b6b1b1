//! Which waiting drivers hold a reservation, and where: the head of a queue (its highest
//! priority, then oldest) once it has waited `reserve_after` without a cap in its way claims the
//! worker where it fits first. A reservation lasts until its driver is placed, leaves the queue,
//! or its worker goes; at most one per queue and one per worker.

use std::{collections::HashSet, sync::Arc};

use hearth_common::proto::DriverState;

use super::State;
use crate::schedule::{
    Offer, WaitCode,
    reservations::{Ending, Hold, choose_worker, fits_at},
};

/// Each queue's head among the first `count` waiting drivers (ending with `last`).
#[derive(Debug, Clone, Default)]
pub(super) struct Heads {
    count: usize,
    last: String,
    by_queue: std::collections::BTreeMap<String, Head>,
}

/// A queue's head: its priority and its place among the waiting.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head {
    pub(super) priority: i32,
    pub(super) pos: usize,
}

impl State {
    /// What runs on each offered worker, with when each must end by its time limit.
    fn endings(&self, offers: &[Offer]) -> Vec<Vec<Ending>> {
        let deadline = |since: Option<i64>, limit_ms: u64| {
            (limit_ms > 0)
                .then(|| since.map(|s| s.saturating_add(limit_ms as i64)))
                .flatten()
        };
        offers
            .iter()
            .map(|o| {
                let Some(w) = self.workers.get(&*o.worker_id) else {
                    return Vec::new();
                };
                let drivers = w
                    .drivers
                    .iter()
                    .filter_map(|id| self.drivers.get(id))
                    .map(|d| Ending {
                        cores: d.spec.cores,
                        memory_mb: d.spec.memory_mb,
                        ends_at_ms: deadline(d.running_since_ms, d.spec.time_limit_ms),
                    });
                let executors = w.executors.iter().filter_map(|key| {
                    let app = self.apps.get(&key.app_id)?;
                    let e = app.executors.get(&key.executor_id)?;
                    // A driver's executors end with it; an application on its own by its limit.
                    let ends_at_ms = match app.driver_id.as_ref().and_then(|d| self.drivers.get(d))
                    {
                        Some(d) => deadline(d.running_since_ms, d.spec.time_limit_ms),
                        None => deadline(Some(app.registered_at_ms), app.spec.time_limit_ms),
                    };
                    Some(Ending {
                        cores: e.cores,
                        memory_mb: e.memory_mb,
                        ends_at_ms,
                    })
                });
                drivers.chain(executors).collect()
            })
            .collect()
    }

    /// Each queue's head (highest priority, then oldest) among the waiting drivers, with its
    /// place in the queue. The heads among the first drivers are kept from the last look while
    /// those drivers are all still there in front (the last of them at its place, and none put
    /// before them); only the drivers behind them are read again.
    pub(super) fn queue_heads(&mut self) -> &std::collections::BTreeMap<String, Head> {
        let kept = self.heads.take().filter(|h| {
            h.count <= self.waiting.len()
                && h.count > 0
                && self.waiting.get(h.count - 1) == Some(&h.last)
        });
        let mut heads = kept.map(Arc::unwrap_or_clone).unwrap_or_default();
        for (pos, d) in self
            .waiting
            .iter()
            .enumerate()
            .skip(heads.count)
            .filter_map(|(pos, id)| Some((pos, self.drivers.get(id)?)))
        {
            match heads.by_queue.get_mut(d.spec.queue.as_str()) {
                Some(head) if d.spec.priority <= head.priority => {}
                Some(head) => {
                    *head = Head {
                        priority: d.spec.priority,
                        pos,
                    }
                }
                None => {
                    heads.by_queue.insert(
                        d.spec.queue.clone(),
                        Head {
                            priority: d.spec.priority,
                            pos,
                        },
                    );
                }
            }
        }
        heads.count = self.waiting.len();
        heads.last = self.waiting.back().cloned().unwrap_or_default();
        &self.heads.insert(Arc::new(heads)).by_queue
    }

    /// The heads of queues (highest priority, then oldest) that have waited `reserve_after` for
    /// room, in queues holding no reservation yet.
    fn due_heads(&mut self, now_ms: i64) -> Vec<String> {
        let Some(after_ms) = self.limits.reserve_after_ms else {
            return Vec::new();
        };
        let queues_holding: HashSet<String> = self
            .reservations
            .keys()
            .filter_map(|id| self.drivers.get(id))
            .map(|d| d.spec.queue.clone())
            .collect();
        let heads: Vec<usize> = self
            .queue_heads()
            .iter()
            .filter(|(queue, _)| !queues_holding.contains(*queue))
            .map(|(_, head)| head.pos)
            .collect();
        heads
            .into_iter()
            .filter_map(|pos| self.waiting.get(pos).and_then(|id| self.drivers.get(id)))
            .filter(|d| {
                let since = d.history.last().map_or(d.submitted_at_ms, |h| h.at_ms);
                let blocked_by_room = matches!(
                    d.waiting_code,
                    Some(WaitCode::NoFreeSlots | WaitCode::Fragmented | WaitCode::Reserved)
                );
                // A reservation holds cores and memory; one asking for named resources
                // (GPUs) would hold a worker that may lack them, so it does not reserve.
                blocked_by_room
                    && d.spec.resources.is_empty()
                    && !self.reservations.contains_key(&d.id)
                    && now_ms.saturating_sub(since) >= after_ms as i64
            })
            .map(|d| d.id.clone())
            .collect()
    }

    /// Whether it is time to look for a reservation due (once a second while drivers wait).
    pub fn reservation_check_due(&self, now_ms: i64) -> bool {
        self.limits.reserve_after_ms.is_some()
            && !self.waiting.is_empty()
            && now_ms.saturating_sub(self.reservations_checked_ms) >= 1000
    }

    /// Whether a reservation is due: then the whole queue is tried again this turn.
    pub(super) fn reservation_due(&mut self, now_ms: i64) -> bool {
        !self.due_heads(now_ms).is_empty()
    }

    /// Brings the reservations up to date for this turn and returns them as holds on `offers`;
    /// sets each reserved driver's estimate. Says whether the set of reservations changed.
    pub(super) fn refresh_reservations(
        &mut self,
        offers: &[Offer],
        now_ms: i64,
    ) -> (Vec<Hold>, bool) {
        if self.limits.reserve_after_ms.is_none() {
            return (Vec::new(), false);
        }
        let before = self.reservations.clone();
        // Offers come in worker id order.
        let index_of = |id: &str| offers.binary_search_by(|o| (*o.worker_id).cmp(id)).ok();
        // Gone: placed, ended, or its worker left.
        self.reservations.retain(|driver_id, worker_id| {
            index_of(worker_id).is_some()
                && self.drivers.get(driver_id).is_some_and(|d| {
                    matches!(d.state, DriverState::Submitted | DriverState::Relaunching)
                        && d.worker_id.is_none()
                        // A cap or a lost queue keeps it waiting whatever room is held: the
                        // room goes back to everyone.
                        && !matches!(
                            d.waiting_code,
                            Some(WaitCode::QueueCap | WaitCode::QueueUnknown)
                        )
                })
        });
        let new = self.due_heads(now_ms);
        let endings = self.endings(offers);
        for driver_id in new {
            let Some(d) = self.drivers.get(&driver_id) else {
                continue;
            };
            let mut taken = vec![false; offers.len()];
            for w in self.reservations.values() {
                if let Some(i) = index_of(w) {
                    taken[i] = true;
                }
            }
            if let Some((i, _)) = choose_worker(
                offers,
                &endings,
                &taken,
                d.spec.cores,
                d.spec.memory_mb,
                now_ms,
            ) {
                tracing::info!(driver_id, worker_id = %offers[i].worker_id, "room reserved");
                self.reservations
                    .insert(driver_id, offers[i].worker_id.to_string());
            }
        }
        let mut holds = Vec::new();
        let reserved: Vec<(String, String)> = self
            .reservations
            .iter()
            .map(|(d, w)| (d.clone(), w.clone()))
            .collect();
        for (driver_id, worker_id) in reserved {
            let (Some(i), Some(d)) = (index_of(&worker_id), self.drivers.get_mut(&driver_id))
            else {
                continue;
            };
            let ready_at_ms = fits_at(
                &offers[i],
                &endings[i],
                d.spec.cores,
                d.spec.memory_mb,
                now_ms,
            );
            let estimate = Some(match ready_at_ms {
                Some(_) => format!(
                    "holds a reservation on {worker_id}; the work there ends by its time limits"
                ),
                None => format!(
                    "unknown: holds a reservation on {worker_id}, where work without a time limit runs"
                ),
            });
            if d.estimated_start_ms != ready_at_ms || d.estimate != estimate {
                let d = Arc::make_mut(d);
                d.estimated_start_ms = ready_at_ms;
                d.estimate = estimate;
            }
            holds.push(Hold {
                worker: i,
                driver_id,
                ready_at_ms,
            });
        }
        for gone in before
            .keys()
            .filter(|d| !self.reservations.contains_key(*d))
        {
            if let Some(d) = self.drivers.get_mut(gone)
                && (d.estimate.is_some() || d.estimated_start_ms.is_some())
            {
                let d = Arc::make_mut(d);
                d.estimate = None;
                d.estimated_start_ms = None;
            }
        }
        let changed = before != self.reservations;
        (holds, changed)
    }
}
