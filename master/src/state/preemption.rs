//! Preemption as the master carries it out: what waits for room and what runs, given to the
//! pure [`schedule::preemption`](crate::schedule::preemption) rule, and its decisions applied.
//!
//! A victim is marked (`preempted`, kept in the state file) and ordered ended with its queue's
//! grace; it keeps its slot until its worker says it has ended, so the room it frees is never
//! counted twice and the work it makes room for never runs beside it. A preempted driver goes
//! back to waiting under the same id; a preempted executor ends KILLED and is not replaced (its
//! application may ask again); a preempted gang waits to start again whole. The mark makes the
//! order outlive a master restart and a worker cut off meanwhile: it is sent again whenever the
//! worker comes back still running the victim, and acted on once, when the victim's end is
//! reported.

use std::{collections::HashMap, sync::Arc};

use hearth_common::{
    duration::format_duration,
    proto::{self, DriverState, master_message::Msg},
};

use super::{
    Effect, ExecKey, State,
    claims::{CLAIM_MARGIN_MS, Claim},
};
use crate::schedule::{
    WaitCode,
    preemption::{self, Need, Preempt, Rule, Running},
};

/// Preemption events kept per driver and per application.
const MAX_EVENTS: usize = 20;
/// Decisions are looked for at most this often: a victim's room is counted as coming free
/// from the decision on, so looking more often would find nothing new.
const CHECK_EVERY_MS: i64 = 200;
/// Waiting items considered a turn: a burst is served over a few turns rather than one long
/// one.
const MAX_NEEDS: usize = 64;

/// One preemption, as kept with the driver or application that made or suffered it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreemptionEvent {
    pub at_ms: i64,
    pub rule: Rule,
    pub preemptor: String,
    pub preemptor_queue: String,
    pub victim: String,
    pub victim_queue: String,
    pub reason: String,
}

impl PreemptionEvent {
    pub fn to_proto(&self) -> proto::Preemption {
        proto::Preemption {
            at_ms: self.at_ms,
            rule: self.rule.as_str().to_string(),
            preemptor: self.preemptor.clone(),
            preemptor_queue: self.preemptor_queue.clone(),
            victim: self.victim.clone(),
            victim_queue: self.victim_queue.clone(),
            reason: self.reason.clone(),
        }
    }
}

pub(super) fn remember(events: &mut Vec<PreemptionEvent>, event: PreemptionEvent) {
    events.push(event);
    if events.len() > MAX_EVENTS {
        events.remove(0);
    }
}

/// Who ends: a driver, one executor, or every live member of a gang.
#[derive(Debug, Clone)]
enum Victim {
    Driver { id: String, attempt: u32 },
    Executors { app_id: String, ids: Vec<u32> },
}

/// Who waits: a driver or an application's executors.
#[derive(Debug, Clone)]
enum Waiter {
    Driver(String),
    App(String),
}

impl Waiter {
    fn id(&self) -> &str {
        match self {
            Waiter::Driver(id) | Waiter::App(id) => id,
        }
    }
}

/// The room that waits are for: a wait for lack of free slots, or for room another queue's
/// reservation holds (not a cap).
fn wants_room(code: Option<WaitCode>) -> bool {
    matches!(
        code,
        Some(WaitCode::NoFreeSlots | WaitCode::Fragmented | WaitCode::Reserved)
    )
}

impl State {
    /// Each queue's preemption settings, by index in the tree.
    fn preempt_policy(&self) -> Vec<Preempt> {
        self.queues.defs().iter().map(|d| d.preempt).collect()
    }

    /// Whether victims are still ending for `waiter`: its claim from a preemption holds.
    fn preempted_for(&self, waiter: &str, now_ms: i64) -> bool {
        self.claims
            .get(waiter)
            .is_some_and(|c| c.until_ms != i64::MAX && c.until_ms > now_ms)
    }

    /// The grace a victim of `queue` gets (the default when the queue is gone).
    pub(super) fn grace_ms(&self, queue: &str) -> u64 {
        self.queues
            .index(queue)
            .map_or(Preempt::default().grace_ms, |q| {
                self.queues.def(q).preempt.grace_ms
            })
    }

    /// Whether some queue preempts, something may wait (a driver, or an application that may
    /// want executors) and the last look is 200 ms old: then a turn looks for preemptions even
    /// when nothing else changed (a victim may have come of age).
    pub fn preemption_due(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.preemption_checked_ms) >= CHECK_EVERY_MS
            && self
                .queues
                .defs()
                .iter()
                .any(|d| d.preempt.reclaim || d.preempt.priority)
            && (!self.waiting.is_empty() || !self.active_apps.is_empty())
    }

    /// Decides and orders the preemptions this turn calls for; returns whether any was ordered.
    pub fn preempt(&mut self, now_ms: i64, effects: &mut Vec<Effect>) -> bool {
        if self.recovering || !self.preemption_due(now_ms) {
            return false;
        }
        self.preemption_checked_ms = now_ms;
        let policy = self.preempt_policy();
        let preempting: Vec<bool> = policy.iter().map(|p| p.reclaim || p.priority).collect();
        let (needs, waiters) = self.needs(&preempting, now_ms);
        if needs.is_empty() {
            return false;
        }
        let offers = self.offers();
        let index: HashMap<&str, usize> = offers
            .iter()
            .enumerate()
            .map(|(i, o)| (&*o.worker_id, i))
            .collect();
        let (running, victims) = self.running(&index);
        let free: Vec<(u32, u64)> = offers
            .iter()
            .map(|o| (o.free_cores, o.free_memory_mb))
            .collect();
        // Claimed room is its claimant's alone, whether it is free yet or still being freed;
        // a worker reserved for a driver that waited long is kept for it whole.
        let mut held: Vec<Vec<preemption::Held>> = vec![Vec::new(); offers.len()];
        let owner_of = |id: &str| waiters.iter().position(|w| w.id() == id);
        for (holder, worker) in &self.reservations {
            if let Some(&i) = index.get(worker.as_str()) {
                held[i].push(preemption::Held {
                    owner: owner_of(holder),
                    cores: u64::MAX,
                    memory_mb: u64::MAX,
                });
            }
        }
        for (claimant, claim) in &self.claims {
            for (worker, cores, memory_mb) in &claim.room {
                if let Some(&i) = index.get(worker.as_str()) {
                    held[i].push(preemption::Held {
                        owner: owner_of(claimant),
                        cores: u64::from(*cores),
                        memory_mb: *memory_mb,
                    });
                }
            }
        }
        // What each queue will hold once what is being freed has ended and what it was freed
        // for has started: victims in their grace no longer count, claimants already do.
        let mut usage = self.usage();
        for r in running.iter().filter(|r| r.ending) {
            usage.charge_back(&self.queues, r.queue, r.amount());
        }
        for (claimant, claim) in &self.claims {
            let queue = match self.drivers.get(claimant) {
                Some(d) => Some(d.spec.queue.as_str()),
                None => self.apps.get(claimant).map(|a| a.queue.as_str()),
            };
            if let Some(q) = queue.and_then(|q| self.queues.index(q)) {
                let (cores, memory_mb) =
                    claim.room.iter().fold((0u64, 0u64), |(c, m), (_, rc, rm)| {
                        (c + u64::from(*rc), m + rm)
                    });
                usage.charge(
                    &self.queues,
                    q,
                    crate::schedule::Amount::new(cores, memory_mb),
                );
            }
        }
        let cluster = preemption::Cluster {
            free: &free,
            running: &running,
            held: &held,
        };
        let decisions =
            preemption::choose(&self.queues, &mut usage, &policy, &cluster, &needs, now_ms);
        let mut any = false;
        for decision in decisions {
            let waiter = &waiters[decision.need];
            let need = &needs[decision.need];
            let queue = self.queues.def(need.queue).name.clone();
            let longest_grace = decision
                .victims
                .iter()
                .map(|&v| self.queues.def(running[v].queue).preempt.grace_ms)
                .max()
                .unwrap_or(0);
            let pieces: Vec<String> = decision
                .places
                .iter()
                .map(|&i| offers[i].worker_id.to_string())
                .collect();
            let seq = self.next_claim_seq();
            self.claims.insert(
                waiter.id().to_string(),
                Claim::of_pieces(
                    &pieces,
                    need.cores,
                    need.memory_mb,
                    now_ms
                        .saturating_add(longest_grace as i64)
                        .saturating_add(CLAIM_MARGIN_MS),
                    seq,
                ),
            );
            for &v in &decision.victims {
                let victim_queue = self.queues.def(running[v].queue).clone();
                let why = match decision.rule {
                    Rule::Reclaim => format!(
                        "preempted for {} (reclaim: queue {queue} is owed its guarantee; queue {} \
                         uses more than its own)",
                        waiter.id(),
                        victim_queue.name
                    ),
                    Rule::Priority => format!(
                        "preempted for {} (priority {} over {} in queue {queue})",
                        waiter.id(),
                        need.priority,
                        running[v].priority
                    ),
                };
                let grace_ms = victim_queue.preempt.grace_ms;
                let reason = format!(
                    "{why}; SIGKILL {} after SIGTERM",
                    format_duration(std::time::Duration::from_millis(grace_ms))
                );
                let event = PreemptionEvent {
                    at_ms: now_ms,
                    rule: decision.rule,
                    preemptor: waiter.id().to_string(),
                    preemptor_queue: queue.clone(),
                    victim: String::new(),
                    victim_queue: victim_queue.name.clone(),
                    reason: reason.clone(),
                };
                self.order_preemption(&victims[v], event, grace_ms, waiter, effects);
                any = true;
            }
        }
        any
    }

    /// What waits for room in queues that preempt, in serve order (higher priority first, then
    /// the longest waiting), at most [`MAX_NEEDS`] a turn.
    fn needs(&self, preempting: &[bool], now_ms: i64) -> (Vec<Need>, Vec<Waiter>) {
        // (priority, waiting since, need, who)
        let mut items: Vec<(i32, i64, Need, Waiter)> = Vec::new();
        for id in &self.waiting {
            let Some(d) = self.drivers.get(id) else {
                continue;
            };
            let Some(q) = self.queues.index(&d.spec.queue) else {
                continue;
            };
            // Preemption frees cores and memory; work waiting for named resources (GPUs) is
            // not helped by it, so it never preempts.
            if !preempting[q]
                || !wants_room(d.waiting_code)
                || !d.spec.resources.is_empty()
                || self.preempted_for(id, now_ms)
            {
                continue;
            }
            let need = Need {
                queue: q,
                priority: d.spec.priority,
                cores: d.spec.cores,
                memory_mb: d.spec.memory_mb,
                count: 1,
                whole: true,
            };
            let since = d.history.last().map_or(d.submitted_at_ms, |h| h.at_ms);
            items.push((d.spec.priority, since, need, Waiter::Driver(id.clone())));
        }
        for id in &self.active_apps {
            let Some(a) = self.apps.get(id) else {
                continue;
            };
            let Some(q) = self.queues.index(&a.queue) else {
                continue;
            };
            if !preempting[q]
                || !wants_room(a.waiting_code)
                || a.wanted() == 0
                || !a.spec.executor_resources.is_empty()
                || self.preempted_for(id, now_ms)
            {
                continue;
            }
            let need = Need {
                queue: q,
                priority: a.priority,
                cores: a.spec.executor_cores,
                memory_mb: a.spec.executor_memory_mb,
                count: a.wanted(),
                whole: a.spec.gang && a.live() == 0,
            };
            let since = a.gang_waiting_since_ms.unwrap_or(a.registered_at_ms);
            items.push((a.priority, since, need, Waiter::App(id.clone())));
        }
        // Stable: equal times keep drivers' waiting order, then applications'.
        items.sort_by_key(|(p, since, _, _)| (std::cmp::Reverse(*p), *since));
        items.truncate(MAX_NEEDS);
        items.into_iter().map(|(_, _, n, w)| (n, w)).unzip()
    }

    /// Everything running on alive workers as preemption candidates, with who each one is.
    fn running(&self, index: &HashMap<&str, usize>) -> (Vec<Running>, Vec<Victim>) {
        let mut running = Vec::new();
        let mut victims = Vec::new();
        // In one pass over the records: a lookup per driver costs more than the whole pass.
        for d in self.drivers.values() {
            if d.state != DriverState::Running {
                continue;
            }
            let (Some(&w), Some(q)) = (
                d.worker_id.as_deref().and_then(|w| index.get(w)),
                self.queues.index(&d.spec.queue),
            ) else {
                continue;
            };
            running.push(Running {
                queue: q,
                priority: d.spec.priority,
                started_ms: d.running_since_ms.unwrap_or(0),
                is_driver: true,
                ending: d.preempted.is_some() || d.stop_requested(),
                pieces: vec![(w, d.spec.cores, d.spec.memory_mb)],
            });
            victims.push(Victim::Driver {
                id: d.id.clone(),
                attempt: d.attempt,
            });
        }
        for app_id in &self.active_apps {
            let Some(a) = self.apps.get(app_id) else {
                continue;
            };
            let Some(q) = self.queues.index(&a.queue) else {
                continue;
            };
            let live: Vec<_> = a
                .executors
                .values()
                .filter(|e| e.state.is_live())
                .filter_map(|e| index.get(e.worker_id.as_str()).map(|&w| (e, w)))
                .collect();
            let piece = |(e, w): &(&super::ExecutorInfo, usize)| (*w, e.cores, e.memory_mb);
            if a.spec.gang {
                // A gang ends whole or not at all.
                if live.is_empty() {
                    continue;
                }
                running.push(Running {
                    queue: q,
                    priority: a.priority,
                    started_ms: live
                        .iter()
                        .map(|(e, _)| e.launched_at_ms)
                        .max()
                        .unwrap_or(0),
                    is_driver: false,
                    ending: a
                        .executors
                        .values()
                        .any(|e| e.state.is_live() && e.preempted.is_some()),
                    pieces: live.iter().map(piece).collect(),
                });
                // Every live member ends, wherever it runs (one on a leaving worker too), or
                // the gang would be left in part.
                victims.push(Victim::Executors {
                    app_id: app_id.clone(),
                    ids: a
                        .executors
                        .values()
                        .filter(|e| e.state.is_live())
                        .map(|e| e.id)
                        .collect(),
                });
            } else {
                for item in &live {
                    running.push(Running {
                        queue: q,
                        priority: a.priority,
                        started_ms: item.0.launched_at_ms,
                        is_driver: false,
                        ending: item.0.preempted.is_some(),
                        pieces: vec![piece(item)],
                    });
                    victims.push(Victim::Executors {
                        app_id: app_id.clone(),
                        ids: vec![item.0.id],
                    });
                }
            }
        }
        (running, victims)
    }

    /// Marks a victim, orders it ended with its grace, and records the event on both sides.
    fn order_preemption(
        &mut self,
        victim: &Victim,
        mut event: PreemptionEvent,
        grace_ms: u64,
        waiter: &Waiter,
        effects: &mut Vec<Effect>,
    ) {
        let reason = event.reason.clone();
        let kind = match victim {
            Victim::Driver { id, attempt } => {
                event.victim = id.clone();
                let Some(d) = self.drivers.get_mut(id) else {
                    return;
                };
                let d = Arc::make_mut(d);
                d.preempted = Some(reason.clone());
                remember(&mut d.preemptions, event.clone());
                tracing::info!(driver_id = %id, preemptor = %event.preemptor, rule = event.rule.as_str(), "preempting driver");
                if let Some(worker_id) = &d.worker_id {
                    effects.push(kill_driver(worker_id, id, *attempt, &reason, grace_ms));
                }
                "driver"
            }
            Victim::Executors { app_id, ids } => {
                event.victim = if ids.len() == 1 {
                    ExecKey::new(app_id, ids[0]).to_string()
                } else {
                    app_id.clone()
                };
                let Some(a) = self.apps.get_mut(app_id) else {
                    return;
                };
                let a = Arc::make_mut(a);
                remember(&mut a.preemptions, event.clone());
                for id in ids {
                    let Some(e) = a.executors.get_mut(id) else {
                        continue;
                    };
                    e.preempted = Some(reason.clone());
                    tracing::info!(app_id, executor_id = id, preemptor = %event.preemptor, rule = event.rule.as_str(), "preempting executor");
                    effects.push(kill_executor(&e.worker_id, app_id, *id, &reason, grace_ms));
                }
                "executor"
            }
        };
        match waiter {
            Waiter::Driver(id) => {
                if let Some(d) = self.drivers.get_mut(id) {
                    remember(&mut Arc::make_mut(d).preemptions, event.clone());
                }
            }
            Waiter::App(id) => {
                if let Some(a) = self.apps.get_mut(id) {
                    remember(&mut Arc::make_mut(a).preemptions, event.clone());
                }
            }
        }
        *self
            .preemptions_total
            .entry((event.victim_queue.clone(), event.rule.as_str(), kind))
            .or_default() += 1;
    }

    /// A preempted driver's attempt has ended: it waits again, first in its queue, under the
    /// same id; its applications end KILLED.
    pub(super) fn requeue_preempted(&mut self, driver_id: &str, now_ms: i64) {
        let Some(d) = self.drivers.get_mut(driver_id) else {
            return;
        };
        let d = Arc::make_mut(d);
        let why = d.preempted.take().unwrap_or_default();
        d.worker_id = None;
        d.waiting_reason = Some("waiting for the scheduler".into());
        d.waiting_code = Some(WaitCode::Scheduling);
        d.record(
            DriverState::Submitted,
            format!("{why}; waiting to run again"),
            now_ms,
        );
        tracing::info!(driver_id, "preempted driver waits again");
        self.waiting.push_front(driver_id.to_string());
        self.forget_tried();
    }
}

pub(super) fn kill_driver(
    worker_id: &str,
    driver_id: &str,
    attempt: u32,
    reason: &str,
    grace_ms: u64,
) -> Effect {
    Effect::send(
        worker_id,
        Msg::KillDriver(proto::KillDriver {
            driver_id: driver_id.to_string(),
            attempt,
            reason: reason.to_string(),
            grace_ms,
            preempted: true,
        }),
    )
}

pub(super) fn kill_executor(
    worker_id: &str,
    app_id: &str,
    executor_id: u32,
    reason: &str,
    grace_ms: u64,
) -> Effect {
    Effect::send(
        worker_id,
        Msg::KillExecutor(proto::KillExecutor {
            app_id: app_id.to_string(),
            executor_id,
            reason: reason.to_string(),
            grace_ms,
            preempted: true,
        }),
    )
}
