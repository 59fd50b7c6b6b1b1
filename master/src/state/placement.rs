//! Each turn's placement: the waiting drivers, then the executors applications want, given to
//! the pure [`schedule`](crate::schedule) functions as offers and asks, and their decisions
//! applied. A queue that cannot move is not tried again until room grows.

use std::sync::Arc;

use imbl::{OrdMap, Vector, ordmap::DiffItem};

use hearth_common::proto::{WorkerState, master_message::Msg};

use super::{Effect, State, WorkerInfo};
use crate::schedule::{self, AppAsk, Ask, Decision, Offer, Queued, Usage, reservations::Hold};

/// The free room on each alive worker after the last placement of drivers, what each queue
/// held then, how many drivers at the front of the queue (ending with `last`) were tried
/// against room at least that large and queues holding at least that much, and the fewest
/// cores and least memory any of them asks for. While no worker has come or gained room that
/// the smallest of them could use (nothing ended that leaves room that large), no queue holds
/// less (nothing of it ended: its cap may have freed), and none of those drivers left the
/// queue, they would wait again, so only the drivers behind them are tried. A long queue in
/// front of a full cluster then costs nothing per turn, even while small work comes and goes
/// beside it.
#[derive(Debug, Clone)]
pub(super) struct Tried {
    workers: OrdMap<String, Arc<WorkerInfo>>,
    usage: Usage,
    pub(super) count: usize,
    last: String,
    pub(super) smallest: (u32, u64),
}

impl Tried {
    /// Whether `now` has room that the workers recorded did not and that the smallest driver
    /// tried could use: a worker come (or alive again), or more free somewhere, as large as
    /// that driver's ask. A worker gone gives no room. Only the workers changed since are read.
    fn grew(&self, now: &OrdMap<String, Arc<WorkerInfo>>) -> bool {
        let (min_cores, min_memory) = self.smallest;
        let usable = |w: &WorkerInfo| {
            w.state == WorkerState::Alive
                && w.free_cores() >= min_cores
                && w.free_memory_mb() >= min_memory
        };
        self.workers.diff(now).any(|change| match change {
            DiffItem::Add(_, w) => usable(w),
            DiffItem::Update {
                old: (_, was),
                new: (_, w),
            } => {
                let more = was.state != WorkerState::Alive
                    || w.free_cores() > was.free_cores()
                    || w.free_memory_mb() > was.free_memory_mb();
                more && usable(w)
            }
            DiffItem::Remove(..) => false,
        })
    }

    /// How many drivers at the front of `waiting` need not be tried against room `now`.
    pub(super) fn covers(
        &self,
        waiting: &Vector<String>,
        now: &OrdMap<String, Arc<WorkerInfo>>,
    ) -> usize {
        let intact = self.count <= waiting.len()
            && self.count > 0
            && waiting.get(self.count - 1) == Some(&self.last);
        if intact && !self.grew(now) {
            self.count
        } else {
            0
        }
    }
}

impl State {
    /// Forgets which waiting drivers were tried, and the queue heads among them: the queue or
    /// what it is tried against changed in a way its last driver's place does not show (one put
    /// in front, one taken out by a claim or a fence, new queues).
    pub(super) fn forget_tried(&mut self) {
        self.tried = None;
        self.heads = None;
    }

    /// Whether the last turn stopped at its bound with drivers it did not look at: then the
    /// next turn should come at once.
    pub fn placement_pending(&self) -> bool {
        self.more_to_place
    }

    /// Turns in a row until nothing is left to place, as the master's loop runs them (for
    /// simulations and benchmarks that stand in for the loop).
    pub fn schedule_until_placed(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        self.schedule(now_ms, effects);
        while self.placement_pending() {
            self.schedule(now_ms, effects);
        }
    }

    /// Places waiting drivers, then executors, where they fit, and records why the rest wait.
    pub fn schedule(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        self.more_to_place = false;
        if self.recovering {
            return;
        }
        let apps_want = self.active_apps.iter().any(|id| {
            self.apps
                .get(id)
                .is_some_and(|a| a.wanted() > 0 || a.waiting_reason.is_some())
        });
        if self.waiting.is_empty() && !apps_want {
            self.reservations.clear();
            return;
        }
        // Time alone makes a reservation due; it is looked for once a second at most.
        let mut due = false;
        if self.reservation_check_due(now_ms) {
            self.reservations_checked_ms = now_ms;
            due = self.reservation_due(now_ms);
        }
        // Most turns (heartbeats, reports) change nothing a waiting driver needs: then the
        // offers are not even built.
        let tried = self.tried.as_ref().map_or(0, |t| {
            let covered = t.covers(&self.waiting, &self.workers);
            if covered > 0 && self.queues.has_caps() && self.usage().freed_since(&t.usage) {
                0
            } else {
                covered
            }
        });
        // Nothing usable came since the record: the room now is what later turns compare
        // with (no more than the room the drivers were tried against, so still a bound), and
        // each turn reads only the workers changed since the last, not all changed since the
        // drivers were tried (with 10,000 workers each heartbeating through the loop, that
        // diff grew to every worker).
        if tried > 0
            && let Some(t) = &self.tried
            && !t.workers.ptr_eq(&self.workers)
        {
            self.tried = Some(Arc::new(Tried {
                workers: self.workers.clone(),
                ..Tried::clone(t)
            }));
        }
        // A reservation due is looked for even then; only one made or dropped (below) makes
        // the whole queue worth trying again.
        if !apps_want && !due && tried == self.waiting.len() {
            return;
        }
        let mut offers = self.offers();
        let (holds, changed) = if self.reservations.is_empty() && !due {
            (Vec::new(), false)
        } else {
            self.refresh_reservations(&offers, now_ms)
        };
        let mut usage = self.usage();
        self.reserve_for_gangs(&offers, now_ms);
        let served = self.serve_claims(&mut offers, &mut usage, now_ms, effects);
        // Either changes what waits: everything is tried again.
        let tried = if changed || served { 0 } else { tried };
        self.schedule_drivers(&mut offers, &mut usage, &holds, tried, now_ms, effects);
        self.schedule_executors(&mut offers, &mut usage, now_ms, effects);
        self.offers.give_back(offers);
    }

    /// What each alive worker offers and has free, in the order of their ids.
    pub fn offers(&self) -> Vec<Offer> {
        self.offers.offers(&self.workers)
    }

    /// What the waiting drivers ask for, oldest first, leaving out the first `skip`.
    pub fn asks(&self, skip: usize) -> Vec<Ask> {
        self.waiting
            .skip(skip)
            .iter()
            .filter_map(|id| self.drivers.get(id))
            .map(|d| Ask {
                driver_id: d.id.clone(),
                cores: d.spec.cores,
                memory_mb: d.spec.memory_mb,
                resources: named_asks(&d.spec.resources),
            })
            .collect()
    }

    /// What the waiting drivers ask for, oldest first, leaving out the first `skip`, with
    /// each one's queue, priority and time limit.
    pub fn queued_asks(&self, skip: usize) -> (Vec<Ask>, Vec<Queued>) {
        self.waiting
            .skip(skip)
            .iter()
            .filter_map(|id| self.queued_ask(id))
            .unzip()
    }

    /// What the driver `id` asks for, with its queue, priority and time limit.
    fn queued_ask(&self, id: &str) -> Option<(Ask, Queued)> {
        let d = self.drivers.get(id)?;
        Some((
            Ask {
                driver_id: d.id.clone(),
                cores: d.spec.cores,
                memory_mb: d.spec.memory_mb,
                resources: named_asks(&d.spec.resources),
            },
            Queued {
                queue: self.queues.index(&d.spec.queue),
                priority: d.spec.priority,
                time_limit_ms: d.spec.time_limit_ms,
            },
        ))
    }

    /// Places waiting drivers but for the first `skip`, which were tried against room at least
    /// as large as `offers` and would wait again.
    fn schedule_drivers(
        &mut self,
        offers: &mut [Offer],
        usage: &mut Usage,
        holds: &[Hold],
        skip: usize,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        if self.waiting.is_empty() {
            self.tried = None;
            self.asks_left.forget();
            return;
        }
        // Nothing new to try: what was tried stays tried against the room recorded then,
        // which is at least the room now. No holder can be met either, so what they hold stays
        // hidden from the executors.
        if skip == self.waiting.len() {
            for hold in holds {
                let offer = &mut offers[hold.worker];
                offer.free_cores = 0;
                offer.free_memory_mb = 0;
            }
            return;
        }
        let queues = self.queues.clone();
        let (asks, queued) = self
            .asks_left
            .take(&self.waiting, skip, &queues, |id| self.queued_ask(id));
        // The smallest ask among those left waiting: the ones skipped, then each that waits now.
        let mut smallest = match (&self.tried, skip) {
            (Some(t), 1..) => t.smallest,
            _ => (u32::MAX, u64::MAX),
        };
        let mut still_waiting = self.waiting.clone();
        still_waiting.truncate(skip);
        let placed = schedule::place_drivers_fairly_at_most(
            offers,
            &asks,
            &queued,
            &queues,
            usage,
            holds,
            now_ms,
            MAX_LAUNCHES_PER_TURN,
        );
        // Decisions come in the order of the asks; an ask without one was not looked at.
        let mut decisions = placed.decisions.into_iter().peekable();
        let (mut launched, mut deferred) = (0usize, 0usize);
        // The asks of the drivers left waiting, in their order: kept for the next turn if
        // this one stops at its bound.
        let mut left = (Vec::new(), Vec::new());
        for (ask, q) in asks.into_iter().zip(queued) {
            let Some(decision) = decisions.next_if(|d| decided_for(d) == ask.driver_id) else {
                deferred += 1;
                still_waiting.push_back(ask.driver_id.clone());
                left.0.push(ask);
                left.1.push(q);
                continue;
            };
            match decision {
                Decision::Place {
                    driver_id,
                    worker_id,
                } => match self.launch(&driver_id, &worker_id, now_ms, effects) {
                    Ok(()) => launched += 1,
                    Err(e) => {
                        tracing::error!(driver_id, worker_id, error = %e, "placement refused");
                        smallest = (smallest.0.min(ask.cores), smallest.1.min(ask.memory_mb));
                        still_waiting.push_back(driver_id);
                        left.0.push(ask);
                        left.1.push(q);
                    }
                },
                Decision::Wait {
                    driver_id,
                    code,
                    reason,
                } => {
                    smallest = (smallest.0.min(ask.cores), smallest.1.min(ask.memory_mb));
                    if let Some(d) = self.drivers.get_mut(&driver_id)
                        && (d.waiting_reason.as_deref() != Some(reason.as_str())
                            || d.waiting_code != Some(code))
                    {
                        let d = Arc::make_mut(d);
                        d.waiting_reason = Some(reason);
                        d.waiting_code = Some(code);
                    }
                    still_waiting.push_back(driver_id);
                    left.0.push(ask);
                    left.1.push(q);
                }
            }
        }
        if launched > 0 {
            tracing::info!(
                launched,
                deferred,
                waiting = still_waiting.len(),
                "drivers placed"
            );
        }
        self.waiting = still_waiting;
        // The turn stopped at its bound: the drivers not looked at are placed by the next one,
        // which the master's loop runs at once; nothing of this turn counts as tried.
        if deferred > 0 {
            self.tried = None;
            self.more_to_place = true;
            self.asks_left.keep(&queues, skip, left.0, left.1);
            return;
        }
        self.asks_left.forget();
        // Every driver tried this turn was placed: those in front were tried against room at
        // least as large as recorded then, and the room now is less, so the record stands. (A
        // driver placed now and ending later gives back only room the record already counts.)
        if skip > 0
            && self.waiting.len() == skip
            && self.tried.as_ref().is_some_and(|t| t.count == skip)
        {
            return;
        }
        // The room as it is, held room included: a reservation changing makes its own retry.
        self.tried = self.waiting.last().map(|last| {
            Arc::new(Tried {
                workers: self.workers.clone(),
                usage: usage.clone(),
                count: self.waiting.len(),
                last: last.clone(),
                smallest,
            })
        });
    }

    /// What the applications not yet ended want placed, in registration order.
    pub fn app_asks(&self) -> Vec<AppAsk> {
        self.active_apps
            .iter()
            .filter_map(|id| self.apps.get(id))
            .map(|a| AppAsk {
                app_id: a.id.clone(),
                cores: a.spec.executor_cores,
                memory_mb: a.spec.executor_memory_mb,
                wanted: a.wanted(),
                // A gang with members running replaces one alone; whole, it starts together.
                gang_size: if a.spec.gang && a.live() == 0 {
                    a.gang_size()
                } else {
                    0
                },
                resources: named_asks(&a.spec.executor_resources),
            })
            .collect()
    }

    fn schedule_executors(
        &mut self,
        offers: &mut [Offer],
        usage: &mut Usage,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let asks = self.app_asks();
        let queued: Vec<Queued> = self
            .active_apps
            .iter()
            .filter_map(|id| self.apps.get(id))
            .map(|a| Queued {
                queue: self.queues.index(&a.queue),
                priority: a.priority,
                time_limit_ms: a.spec.time_limit_ms,
            })
            .collect();
        let queues = self.queues.clone();
        let placements = schedule::place_executors_fairly(
            offers,
            &asks,
            &queued,
            &queues,
            usage,
            self.limits.spread_out,
        );
        for placement in placements {
            let first = effects.len();
            for worker_id in &placement.workers {
                if let Err(e) = self.launch_executor(&placement.app_id, worker_id, now_ms, effects)
                {
                    tracing::error!(app_id = %placement.app_id, worker_id, error = %e, "executor placement refused");
                }
            }
            if !placement.workers.is_empty() {
                self.tell_gang_hosts(&placement.app_id, &mut effects[first..]);
            }
            let (code, reason) = placement.waiting.unzip();
            if let Some(a) = self.apps.get_mut(&placement.app_id)
                && (a.waiting_reason != reason || a.waiting_code != code)
            {
                let a = Arc::make_mut(a);
                a.waiting_reason = reason;
                a.waiting_code = code;
            }
        }
    }
}

impl State {
    /// Gives a gang's new members the hosts of all its live members in rank order: known only
    /// once the whole gang is placed, so filled into this turn's launch orders afterwards.
    fn tell_gang_hosts(&self, app_id: &str, launched: &mut [Effect]) {
        let Some(app) = self.apps.get(app_id).filter(|a| a.spec.gang) else {
            return;
        };
        let mut members: Vec<(u32, String)> = app
            .executors
            .values()
            .filter(|e| e.state.is_live())
            .map(|e| {
                let host = self
                    .workers
                    .get(&e.worker_id)
                    .map_or_else(|| e.worker_id.clone(), |w| w.host.clone());
                (e.rank, host)
            })
            .collect();
        members.sort();
        let hosts: Vec<String> = members.into_iter().map(|(_, h)| h).collect();
        for effect in launched {
            if let Effect::Send { message, .. } = effect
                && let Some(Msg::LaunchExecutor(launch)) = &mut message.msg
                && launch.app_id == app_id
            {
                launch.gang_hosts = hosts.clone();
            }
        }
    }
}

/// The most drivers one turn launches: a larger burst is placed over several turns in a row,
/// in the same order, so no turn (and no commit, and no wait of a submission behind it) grows
/// with the size of the burst.
pub const MAX_LAUNCHES_PER_TURN: usize = 1_000;

/// The driver a decision is about.
fn decided_for(decision: &Decision) -> &str {
    match decision {
        Decision::Place { driver_id, .. } | Decision::Wait { driver_id, .. } => driver_id,
    }
}

/// A spec's named resources as the scheduler counts them.
fn named_asks(asked: &std::collections::HashMap<String, u32>) -> crate::schedule::named::Named {
    crate::schedule::named::Named::new(asked.iter().map(|(n, c)| (n.clone(), *c)))
}
