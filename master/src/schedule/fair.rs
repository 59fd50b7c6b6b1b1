//! Placement across queues. Every waiting item is tried once a turn, in the order the queues
//! earn ([`Usage::next`]: guarantees first, then weighted dominant share), and within a queue by
//! priority (higher first), then submission order. An item that would take its queue (or a
//! parent) past its `max` waits with that cap named; one that fits nowhere waits with the reason
//! from the workers; neither blocks the items behind it, so no slot stays idle while something
//! that fits it waits.

use std::collections::VecDeque;

use super::{
    AppAsk, AppPlacement, Ask, Decision, Offer,
    drivers::DriverFit,
    executors::{more_wanted, place_executors},
    gangs::place_gang,
    queues::{Amount, CapHit, QueueTree, Usage},
    reasons::{Wait, WaitCode, plural},
    reservations::Hold,
};
use hearth_common::resources::format_mb;

/// One item of a queue: where it goes, how it ranks within the queue, and its time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Queued {
    /// Index in the tree; `None`: the queue is no longer defined.
    pub queue: Option<usize>,
    pub priority: i32,
    /// 0: none.
    pub time_limit_ms: u64,
}

/// The items to try in fair order: each queue's own, by priority then their order given, and
/// the ones whose queue is gone.
struct Pending {
    by_queue: Vec<VecDeque<usize>>,
    count: Vec<usize>,
    /// Items pending in each queue's subtree, itself included.
    subtree: Vec<usize>,
    lost: Vec<usize>,
}

impl Pending {
    fn new(tree: &QueueTree, items: impl Iterator<Item = Queued>) -> Self {
        let mut by_queue: Vec<Vec<(i32, usize)>> = vec![Vec::new(); tree.len()];
        let mut lost = Vec::new();
        for (i, item) in items.enumerate() {
            match item.queue {
                Some(q) => by_queue[q].push((item.priority, i)),
                None => lost.push(i),
            }
        }
        let by_queue: Vec<VecDeque<usize>> = by_queue
            .into_iter()
            .map(|mut q| {
                // Stable: equal priorities keep the order given (submission order).
                q.sort_by_key(|&(priority, _)| std::cmp::Reverse(priority));
                q.into_iter().map(|(_, i)| i).collect()
            })
            .collect();
        let count: Vec<usize> = by_queue.iter().map(VecDeque::len).collect();
        let mut subtree = vec![0; tree.len()];
        for (q, n) in count.iter().enumerate() {
            for a in tree.lineage(q) {
                subtree[a] += n;
            }
        }
        Self {
            by_queue,
            count,
            subtree,
            lost,
        }
    }

    /// The next item to try and its queue, in fair order.
    fn next(&mut self, tree: &QueueTree, usage: &Usage) -> Option<(usize, usize)> {
        let q = usage.next(tree, &self.count, &self.subtree)?;
        let i = self.by_queue[q].pop_front()?;
        self.count[q] -= 1;
        for a in tree.lineage(q) {
            self.subtree[a] -= 1;
        }
        Some((q, i))
    }
}

fn cap_words(hit: &CapHit) -> String {
    format!(
        "queue {} is at its max of {} and {} ({} and {} in use)",
        hit.queue,
        plural(hit.max.cores, "core"),
        format_mb(hit.max.memory_mb),
        plural(hit.used.cores, "core"),
        format_mb(hit.used.memory_mb),
    )
}

fn lost_queue() -> Wait {
    (
        WaitCode::QueueUnknown,
        "its queue is no longer in the queues file: add it back, or kill this and submit again"
            .to_string(),
    )
}

/// What one turn of driver placement decided, and the room it kept hidden for reservations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverPlacement {
    /// In the order of the asks.
    pub decisions: Vec<Decision>,
    /// Room still held for reservations, by offer: hidden from everything placed after (the
    /// offers show it as taken).
    pub withheld: Vec<(usize, u32, u64)>,
}

/// Room for `ask` in one worker's held room.
fn fits_in(room: (u32, u64), ask: &Ask) -> bool {
    room.0 >= ask.cores && room.1 >= ask.memory_mb
}

/// Places the waiting drivers (`asks`, oldest first, with `queued[i]` for `asks[i]`) on
/// `offers`, charging what is placed to `usage`.
///
/// A driver holding a reservation goes first, on its worker when it fits there, else anywhere
/// it fits; a reservation not met yet hides its worker's free room from the others, except from
/// a driver whose time limit ends before the reservation needs the room (backfill).
pub fn place_drivers_fairly(
    offers: &mut [Offer],
    asks: &[Ask],
    queued: &[Queued],
    tree: &QueueTree,
    usage: &mut Usage,
    holds: &[Hold],
    now_ms: i64,
) -> DriverPlacement {
    place_drivers_fairly_at_most(offers, asks, queued, tree, usage, holds, now_ms, usize::MAX)
}

/// As [`place_drivers_fairly`], but stops once `max_places` drivers are placed: the asks not
/// looked at by then get no decision (the next turn goes on from where this one stopped, in the
/// same order), so one turn's work stays bounded however large the burst.
#[allow(clippy::too_many_arguments)]
pub fn place_drivers_fairly_at_most(
    offers: &mut [Offer],
    asks: &[Ask],
    queued: &[Queued],
    tree: &QueueTree,
    usage: &mut Usage,
    holds: &[Hold],
    now_ms: i64,
    max_places: usize,
) -> DriverPlacement {
    let mut decisions: Vec<Option<Decision>> = vec![None; asks.len()];
    let wait = |ask: &Ask, (code, reason): Wait| Decision::Wait {
        driver_id: ask.driver_id.clone(),
        code,
        reason,
    };
    let amount = |ask: &Ask| Amount::new(u64::from(ask.cores), ask.memory_mb);
    let index: std::collections::HashMap<&str, usize> = holds
        .iter()
        .filter_map(|h| {
            asks.iter()
                .position(|a| a.driver_id == h.driver_id)
                .map(|i| (h.driver_id.as_str(), i))
        })
        .collect();
    // A reservation met now: its driver goes to its worker.
    let mut open_holds = Vec::new();
    for hold in holds {
        let Some(&i) = index.get(hold.driver_id.as_str()) else {
            open_holds.push(hold);
            continue;
        };
        let ask = &asks[i];
        let capped = queued[i].queue.is_none_or(|q| {
            usage.cap_hit(tree, q, amount(ask)).is_some()
                || usage.named_cap_hit(tree, q, &ask.resources).is_some()
        });
        let offer = &mut offers[hold.worker];
        if !capped
            && fits_in((offer.free_cores, offer.free_memory_mb), ask)
            && offer.free_resources.covers(&ask.resources)
        {
            let worker_id = super::drivers::take(offer, ask);
            if let Some(q) = queued[i].queue {
                usage.charge(tree, q, amount(ask));
                usage.charge_named(tree, q, &ask.resources);
            }
            decisions[i] = Some(Decision::Place {
                driver_id: ask.driver_id.clone(),
                worker_id,
            });
        } else {
            open_holds.push(hold);
        }
    }
    // The others' room is hidden while their drivers wait.
    let mut withheld: Vec<(usize, u32, u64)> = Vec::new();
    for hold in &open_holds {
        let offer = &mut offers[hold.worker];
        withheld.push((hold.worker, offer.free_cores, offer.free_memory_mb));
        offer.free_cores = 0;
        offer.free_memory_mb = 0;
    }
    let held_for = |ask: &Ask, withheld: &[(usize, u32, u64)]| {
        withheld
            .iter()
            .zip(&open_holds)
            .find(|((_, c, m), _)| fits_in((*c, *m), ask))
            .map(|(_, hold)| hold)
    };
    {
        let mut fit = DriverFit::new(offers);
        let mut try_place = |i: usize, q: Option<usize>, usage: &mut Usage| -> Decision {
            let ask = &asks[i];
            let Some(q) = q else {
                return wait(ask, lost_queue());
            };
            if let Some(hit) = usage.cap_hit(tree, q, amount(ask)) {
                return wait(ask, (WaitCode::QueueCap, cap_words(&hit)));
            }
            if let Some(words) = usage.named_cap_hit(tree, q, &ask.resources) {
                return wait(ask, (WaitCode::QueueCap, words));
            }
            match fit.place(ask) {
                Ok(worker_id) => {
                    usage.charge(tree, q, amount(ask));
                    usage.charge_named(tree, q, &ask.resources);
                    Decision::Place {
                        driver_id: ask.driver_id.clone(),
                        worker_id,
                    }
                }
                Err((WaitCode::NoFreeSlots | WaitCode::Fragmented, _))
                    if held_for(ask, &withheld).is_some_and(|h| h.driver_id != ask.driver_id) =>
                {
                    let hold = held_for(ask, &withheld).map_or("", |h| h.driver_id.as_str());
                    wait(
                        ask,
                        (
                            WaitCode::Reserved,
                            format!(
                                "the room that would fit it is held for {hold}, which has waited \
                                 longest at the head of its queue"
                            ),
                        ),
                    )
                }
                Err(why) => wait(ask, why),
            }
        };
        // Drivers holding a reservation first: they have waited longest.
        for hold in &open_holds {
            if let Some(&i) = index.get(hold.driver_id.as_str()) {
                decisions[i] = Some(try_place(i, queued[i].queue, usage));
            }
        }
        let mut pending = Pending::new(
            tree,
            queued.iter().enumerate().map(|(i, q)| {
                if decisions[i].is_some() {
                    Queued { queue: None, ..*q }
                } else {
                    *q
                }
            }),
        );
        pending.lost.retain(|&i| decisions[i].is_none());
        for &i in &pending.lost {
            decisions[i] = Some(wait(&asks[i], lost_queue()));
        }
        let mut places = decisions
            .iter()
            .flatten()
            .filter(|d| matches!(d, Decision::Place { .. }))
            .count();
        while places < max_places
            && let Some((q, i)) = pending.next(tree, usage)
        {
            let decision = try_place(i, Some(q), usage);
            places += usize::from(matches!(decision, Decision::Place { .. }));
            decisions[i] = Some(decision);
        }
    }
    // Backfill: held room goes to drivers that will be done before the reservation needs it.
    for (slot, hold) in withheld.iter_mut().zip(&open_holds) {
        let Some(ready_at) = hold.ready_at_ms else {
            continue;
        };
        for (i, ask) in asks.iter().enumerate() {
            let limit = queued[i].time_limit_ms;
            let waiting = matches!(decisions[i], Some(Decision::Wait { .. }));
            let done_in_time = limit > 0 && now_ms.saturating_add(limit as i64) <= ready_at;
            if !waiting
                || !done_in_time
                || !fits_in((slot.1, slot.2), ask)
                || !offers[hold.worker].free_resources.covers(&ask.resources)
            {
                continue;
            }
            let Some(q) = queued[i].queue else {
                continue;
            };
            if usage.cap_hit(tree, q, amount(ask)).is_some()
                || usage.named_cap_hit(tree, q, &ask.resources).is_some()
            {
                continue;
            }
            slot.1 -= ask.cores;
            slot.2 -= ask.memory_mb;
            offers[hold.worker].free_resources.take(&ask.resources);
            offers[hold.worker].drivers += 1;
            usage.charge(tree, q, amount(ask));
            usage.charge_named(tree, q, &ask.resources);
            decisions[i] = Some(Decision::Place {
                driver_id: ask.driver_id.clone(),
                worker_id: offers[hold.worker].worker_id.to_string(),
            });
        }
    }
    DriverPlacement {
        decisions: decisions.into_iter().flatten().collect(),
        withheld,
    }
}

/// How many executors of `app` queue `q` may still start under every cap above it (on
/// cores and memory, and on named resources), and in words the cap that stops the next one.
fn room_under_caps(
    tree: &QueueTree,
    usage: &Usage,
    q: usize,
    app: &AppAsk,
) -> (u32, Option<String>) {
    let each = Amount::new(u64::from(app.cores), app.memory_mb);
    // Few executors are wanted at once, and each step is a few comparisons per ancestor.
    let mut taken = Amount::default();
    for n in 0..app.wanted {
        let mut with = taken;
        with.add(each);
        if let Some(hit) = usage.cap_hit(tree, q, with) {
            return (n, Some(cap_words(&hit)));
        }
        if let Some(words) = usage.named_cap_hit(tree, q, &app.resources.times(n + 1)) {
            return (n, Some(words));
        }
        taken = with;
    }
    (app.wanted, None)
}

/// Places executors for the applications (`apps`, in registration order, with `queued[i]` for
/// `apps[i]`) on `offers` after the drivers, each application in turn in fair order, at most
/// as many as its queue's caps allow. A gang goes whole or not at all.
pub fn place_executors_fairly(
    offers: &mut [Offer],
    apps: &[AppAsk],
    queued: &[Queued],
    tree: &QueueTree,
    usage: &mut Usage,
    spread_out: bool,
) -> Vec<AppPlacement> {
    let mut pending = Pending::new(tree, queued.iter().copied());
    let mut placements: Vec<Option<AppPlacement>> = vec![None; apps.len()];
    for &i in &pending.lost {
        let (code, why) = lost_queue();
        placements[i] = Some(AppPlacement {
            app_id: apps[i].app_id.clone(),
            workers: Vec::new(),
            waiting: (apps[i].wanted > 0).then(|| (code, more_wanted(apps[i].wanted, &why))),
        });
    }
    while let Some((q, i)) = pending.next(tree, usage) {
        let app = &apps[i];
        let (allowed, hit) = room_under_caps(tree, usage, q, app);
        if app.gang_size > 0 && allowed < app.wanted {
            // A gang under a cap that allows only part of it waits whole.
            let words = hit.clone().unwrap_or_default();
            placements[i] = Some(AppPlacement {
                app_id: app.app_id.clone(),
                workers: Vec::new(),
                waiting: Some((
                    WaitCode::QueueCap,
                    format!(
                        "gang of {}: all start together or none, and {words}",
                        app.gang_size
                    ),
                )),
            });
            continue;
        }
        let bounded = AppAsk {
            wanted: allowed,
            ..app.clone()
        };
        let mut placement = if app.gang_size > 0 {
            place_gang(offers, &bounded, spread_out)
        } else {
            place_executors(offers, std::slice::from_ref(&bounded), spread_out)
                .pop()
                .unwrap_or_else(|| AppPlacement {
                    app_id: app.app_id.clone(),
                    workers: Vec::new(),
                    waiting: None,
                })
        };
        let placed = placement.workers.len() as u32;
        usage.charge(
            tree,
            q,
            Amount::new(
                u64::from(app.cores) * u64::from(placed),
                app.memory_mb * u64::from(placed),
            ),
        );
        usage.charge_named(tree, q, &app.resources.times(placed));
        if placement.waiting.is_none()
            && let Some(hit) = hit
        {
            placement.waiting = Some((
                WaitCode::QueueCap,
                more_wanted(app.wanted - placed, &format!("waits: {hit}")),
            ));
        }
        placements[i] = Some(placement);
    }
    placements.into_iter().flatten().collect()
}
