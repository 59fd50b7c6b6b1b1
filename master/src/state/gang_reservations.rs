//! Gangs that have waited `reserve_after` claim workers: enough of them to hold the whole gang
//! once what runs there ends. Their free room is hidden from other work (as a driver's
//! reservation hides its worker's) and builds up until the gang starts there, so a gang is not
//! starved by small work that always fits first. One claim per gang, on workers no other claim
//! holds; it lasts until the gang has started or ended.

use super::{State, claims::Claim};
use crate::schedule::{Offer, WaitCode, gangs::pieces_in};

impl State {
    /// Claims workers for each gang that has waited long enough for room and holds no claim.
    pub(super) fn reserve_for_gangs(&mut self, offers: &[Offer], now_ms: i64) {
        let Some(after_ms) = self.limits.reserve_after_ms else {
            return;
        };
        let due: Vec<(String, u32, u32, u64)> = self
            .active_apps
            .iter()
            .filter_map(|id| self.apps.get(id))
            .filter(|a| {
                a.spec.gang
                    && a.spec.executor_resources.is_empty()
                    && a.live() == 0
                    && a.waiting_code == Some(WaitCode::NoFreeSlots)
                    && !self.claims.contains_key(&a.id)
                    && a.gang_waiting_since_ms
                        .is_some_and(|since| now_ms.saturating_sub(since) >= after_ms as i64)
            })
            .map(|a| {
                (
                    a.id.clone(),
                    a.wanted(),
                    a.spec.executor_cores,
                    a.spec.executor_memory_mb,
                )
            })
            .collect();
        for (app_id, wanted, cores, memory_mb) in due {
            let claimed: std::collections::HashSet<&str> = self
                .claims
                .values()
                .flat_map(Claim::workers)
                .chain(self.reservations.values().map(String::as_str))
                .collect();
            let idle = |o: &Offer| pieces_in((o.cores, o.memory_mb), cores, memory_mb);
            let free = |o: &Offer| pieces_in((o.free_cores, o.free_memory_mb), cores, memory_mb);
            let mut candidates: Vec<&Offer> = offers
                .iter()
                .filter(|o| !claimed.contains(&*o.worker_id) && idle(o) > 0)
                .collect();
            // The workers that hold most of it, and of those the ones closest to free.
            candidates.sort_by_key(|o| (std::cmp::Reverse(idle(o)), std::cmp::Reverse(free(o))));
            let mut pieces: Vec<String> = Vec::new();
            for o in candidates {
                if pieces.len() as u64 >= u64::from(wanted) {
                    break;
                }
                let here = idle(o).min(u64::from(wanted) - pieces.len() as u64);
                pieces.extend(std::iter::repeat_n(o.worker_id.to_string(), here as usize));
            }
            if (pieces.len() as u64) < u64::from(wanted) {
                continue;
            }
            tracing::info!(app_id, pieces = pieces.len(), "workers reserved for a gang");
            let seq = self.next_claim_seq();
            self.claims.insert(
                app_id,
                Claim::of_pieces(&pieces, cores, memory_mb, i64::MAX, seq),
            );
        }
    }
}
