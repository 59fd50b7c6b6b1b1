//! Claims: room being freed for a particular waiting driver or application (by preemption,
//! or held for a gang that waited too long), given to it as it comes free and hidden from
//! everything else meanwhile, so a victim (or anyone) cannot take part of it back while the
//! rest is still ending.

use std::collections::HashMap;

use super::{Effect, State};
use crate::schedule::{Amount, Offer, Usage, gangs::place_gang, place_executors};

/// Room held for one waiting driver or application: so much on each of some workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// (worker, cores, memory) held there.
    pub room: Vec<(String, u32, u64)>,
    /// Given up then, whatever happened: the victims' grace and a margin.
    pub until_ms: i64,
    /// Claims are served oldest first: room freed on a worker two claims share goes to the
    /// one made first, so a later one cannot take what the earlier one's victims freed.
    pub seq: u64,
}

impl Claim {
    /// A claim on `pieces` (worker ids, one per piece, repeats allowed) of one shape.
    pub fn of_pieces(
        pieces: &[String],
        cores: u32,
        memory_mb: u64,
        until_ms: i64,
        seq: u64,
    ) -> Self {
        let mut room: Vec<(String, u32, u64)> = Vec::new();
        for w in pieces {
            match room.iter_mut().find(|(id, _, _)| id == w) {
                Some((_, c, m)) => {
                    *c += cores;
                    *m += memory_mb;
                }
                None => room.push((w.clone(), cores, memory_mb)),
            }
        }
        Self {
            room,
            until_ms,
            seq,
        }
    }

    pub fn workers(&self) -> impl Iterator<Item = &str> {
        self.room.iter().map(|(w, _, _)| w.as_str())
    }
}

/// How long after its victims' grace a claim is kept.
pub(super) const CLAIM_MARGIN_MS: i64 = 10_000;

impl State {
    /// The next claim's place in the serving order.
    pub(super) fn next_claim_seq(&mut self) -> u64 {
        self.claim_seq += 1;
        self.claim_seq
    }

    /// Gives claimed room to the work it was held for, each claim at most its own share of a
    /// worker's free room, and hides what is held and still free from this turn's other
    /// placements. A claim ends when its work runs, leaves, or its time is up, or when a worker
    /// it holds room on is no longer alive. Returns whether any claim ended (then what waits
    /// has changed).
    pub(super) fn serve_claims(
        &mut self,
        offers: &mut [Offer],
        usage: &mut Usage,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> bool {
        if self.claims.is_empty() {
            return false;
        }
        let index: HashMap<String, usize> = offers
            .iter()
            .enumerate()
            .map(|(i, o)| (o.worker_id.to_string(), i))
            .collect();
        let mut ended = false;
        let mut held: Vec<(usize, u32, u64)> = Vec::new();
        let mut claims: Vec<(String, Claim)> =
            std::mem::take(&mut self.claims).into_iter().collect();
        claims.sort_by_key(|(_, c)| c.seq);
        for (waiter, claim) in claims {
            // Over by time, or a worker it holds room on is gone (its victims with it).
            let gone = claim.workers().any(|w| !index.contains_key(w));
            if claim.until_ms <= now_ms || gone {
                ended = true;
                continue;
            }
            // The claim's share of each worker's free room, as offers of their own.
            let shares: Vec<(usize, Offer)> = claim
                .room
                .iter()
                .filter_map(|(w, c, m)| {
                    let &i = index.get(w)?;
                    let mut share = offers[i].clone();
                    share.free_cores = share.free_cores.min(*c);
                    share.free_memory_mb = share.free_memory_mb.min(*m);
                    Some((i, share))
                })
                .collect();
            let mut room: Vec<Offer> = shares.iter().map(|(_, o)| o.clone()).collect();
            let done = if self.drivers.contains_key(&waiter) {
                self.serve_driver_claim(&waiter, &mut room, usage, now_ms, effects)
            } else {
                self.serve_app_claim(&waiter, &mut room, usage, now_ms, effects)
            };
            let mut claim = claim;
            for ((i, before), after) in shares.iter().zip(&room) {
                let (cores, memory_mb) = (
                    before.free_cores - after.free_cores,
                    before.free_memory_mb - after.free_memory_mb,
                );
                let offer = &mut offers[*i];
                offer.free_cores -= cores;
                offer.free_memory_mb -= memory_mb;
                offer.drivers = after.drivers;
                // What was placed is no longer held for it.
                if let Some(held) = claim
                    .room
                    .iter_mut()
                    .find(|(w, _, _)| **w == *offer.worker_id)
                {
                    held.1 = held.1.saturating_sub(cores);
                    held.2 = held.2.saturating_sub(memory_mb);
                }
            }
            let filled = claim.room.iter().all(|(_, c, m)| *c == 0 && *m == 0);
            if done || filled {
                ended = true;
            } else {
                for (w, c, m) in &claim.room {
                    if let Some(&i) = index.get(w) {
                        held.push((i, *c, *m));
                    }
                }
                self.claims.insert(waiter, claim);
            }
        }
        // Hidden once every claim was served: claims may share a worker.
        for (i, c, m) in held {
            let offer = &mut offers[i];
            offer.free_cores -= offer.free_cores.min(c);
            offer.free_memory_mb -= offer.free_memory_mb.min(m);
        }
        ended
    }

    /// Places a claiming driver in its claimed room (`room`, its shares as offers) if it fits
    /// now; true once the claim is over (placed, or no longer waiting).
    fn serve_driver_claim(
        &mut self,
        driver_id: &str,
        room: &mut [Offer],
        usage: &mut Usage,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let Some(d) = self.drivers.get(driver_id) else {
            return true;
        };
        if d.worker_id.is_some() || d.state.is_terminal() || !self.waiting.contains(&d.id) {
            return true;
        }
        let (cores, memory_mb, queue) = (d.spec.cores, d.spec.memory_mb, d.spec.queue.clone());
        let Some(offer) = room
            .iter_mut()
            .find(|o| o.free_cores >= cores && o.free_memory_mb >= memory_mb)
        else {
            return false;
        };
        let worker_id = offer.worker_id.clone();
        if self.launch(driver_id, &worker_id, now_ms, effects).is_err() {
            return false;
        }
        offer.free_cores -= cores;
        offer.free_memory_mb -= memory_mb;
        offer.drivers += 1;
        if let Some(q) = self.queues.index(&queue) {
            usage.charge(
                &self.queues.clone(),
                q,
                Amount::new(u64::from(cores), memory_mb),
            );
        }
        self.waiting.retain(|id| id != driver_id);
        self.forget_tried();
        true
    }

    /// Places a claiming application's wanted executors in its claimed room (a gang whole);
    /// true once the claim is over (nothing more wanted, or ended).
    fn serve_app_claim(
        &mut self,
        app_id: &str,
        room: &mut [Offer],
        usage: &mut Usage,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let Some(ask) = self.app_asks().into_iter().find(|a| a.app_id == app_id) else {
            return true;
        };
        if ask.wanted == 0 {
            return true;
        }
        let placement = if ask.gang_size > 0 {
            place_gang(room, &ask, self.limits.spread_out)
        } else {
            match place_executors(room, std::slice::from_ref(&ask), self.limits.spread_out).pop() {
                Some(p) => p,
                None => return false,
            }
        };
        let placed = placement.workers.len() as u64;
        for worker_id in &placement.workers {
            if let Err(e) = self.launch_executor(app_id, worker_id, now_ms, effects) {
                tracing::error!(app_id, worker_id, error = %e, "executor placement refused");
            }
        }
        let queue = self.apps.get(app_id).map(|a| a.queue.clone());
        if let Some(q) = queue.and_then(|q| self.queues.index(&q)) {
            usage.charge(
                &self.queues.clone(),
                q,
                Amount::new(u64::from(ask.cores) * placed, ask.memory_mb * placed),
            );
        }
        placement.waiting.is_none()
    }
}
