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
    queues::{Amount, CapHit, QueueTree, Usage},
    reasons::{Wait, WaitCode, plural},
};
use hearth_common::resources::format_mb;

/// One item of a queue: where it goes, and how it ranks within the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    /// Index in the tree; `None`: the queue is no longer defined.
    pub queue: Option<usize>,
    pub priority: i32,
}

/// The items to try in fair order: each queue's own, by priority then their order given, and
/// the ones whose queue is gone.
struct Pending {
    by_queue: Vec<VecDeque<usize>>,
    count: Vec<usize>,
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
        let count = by_queue.iter().map(VecDeque::len).collect();
        Self {
            by_queue,
            count,
            lost,
        }
    }

    /// The next item to try and its queue, in fair order.
    fn next(&mut self, tree: &QueueTree, usage: &Usage) -> Option<(usize, usize)> {
        let q = usage.next(tree, &self.count)?;
        let i = self.by_queue[q].pop_front()?;
        self.count[q] -= 1;
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

/// Places the waiting drivers (`asks`, oldest first, with `queued[i]` for `asks[i]`) on
/// `offers`, charging what is placed to `usage`. Decisions come back in the order of `asks`.
pub fn place_drivers_fairly(
    offers: &mut [Offer],
    asks: &[Ask],
    queued: &[Queued],
    tree: &QueueTree,
    usage: &mut Usage,
) -> Vec<Decision> {
    let mut pending = Pending::new(tree, queued.iter().copied());
    let mut decisions: Vec<Option<Decision>> = vec![None; asks.len()];
    let wait = |ask: &Ask, (code, reason): Wait| Decision::Wait {
        driver_id: ask.driver_id.clone(),
        code,
        reason,
    };
    for &i in &pending.lost {
        decisions[i] = Some(wait(&asks[i], lost_queue()));
    }
    let mut fit = DriverFit::new(offers);
    while let Some((q, i)) = pending.next(tree, usage) {
        let ask = &asks[i];
        let amount = Amount::new(u64::from(ask.cores), ask.memory_mb);
        let decision = if let Some(hit) = usage.cap_hit(tree, q, amount) {
            wait(ask, (WaitCode::QueueCap, cap_words(&hit)))
        } else {
            match fit.place(ask) {
                Ok(worker_id) => {
                    usage.charge(tree, q, amount);
                    Decision::Place {
                        driver_id: ask.driver_id.clone(),
                        worker_id,
                    }
                }
                Err(why) => wait(ask, why),
            }
        };
        decisions[i] = Some(decision);
    }
    decisions.into_iter().flatten().collect()
}

/// How many executors of `cores` and `memory_mb` queue `q` may still start under every cap
/// above it, and the cap that stops the next one.
fn room_under_caps(
    tree: &QueueTree,
    usage: &Usage,
    q: usize,
    cores: u32,
    memory_mb: u64,
    wanted: u32,
) -> (u32, Option<CapHit>) {
    let each = Amount::new(u64::from(cores), memory_mb);
    // Few executors are wanted at once, and each step is a few comparisons per ancestor.
    let mut taken = Amount::default();
    for n in 0..wanted {
        let mut with = taken;
        with.add(each);
        if let Some(hit) = usage.cap_hit(tree, q, with) {
            return (n, Some(hit));
        }
        taken = with;
    }
    (wanted, None)
}

/// Places executors for the applications (`apps`, in registration order, with `queued[i]` for
/// `apps[i]`) on `offers` after the drivers, each application in turn in fair order, at most
/// as many as its queue's caps allow.
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
        let (allowed, hit) = room_under_caps(tree, usage, q, app.cores, app.memory_mb, app.wanted);
        let bounded = AppAsk {
            wanted: allowed,
            ..app.clone()
        };
        let mut placement = place_executors(offers, std::slice::from_ref(&bounded), spread_out)
            .pop()
            .unwrap_or_else(|| AppPlacement {
                app_id: app.app_id.clone(),
                workers: Vec::new(),
                waiting: None,
            });
        let placed = placement.workers.len() as u32;
        usage.charge(
            tree,
            q,
            Amount::new(
                u64::from(app.cores) * u64::from(placed),
                app.memory_mb * u64::from(placed),
            ),
        );
        if placement.waiting.is_none()
            && let Some(hit) = hit
        {
            placement.waiting = Some((
                WaitCode::QueueCap,
                more_wanted(app.wanted - placed, &format!("waits: {}", cap_words(&hit))),
            ));
        }
        placements[i] = Some(placement);
    }
    placements.into_iter().flatten().collect()
}
