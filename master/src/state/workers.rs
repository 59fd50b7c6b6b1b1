//! Workers: registration (and the fencing a reconnect implies), heartbeats, loss and expiry.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use hearth_common::proto::{
    self, DriverState, ExecutorState, Register, WorkerState, master_message::Msg,
};
use tokio::time::Instant;

use super::{Effect, ExecKey, State};
use crate::schedule::named::Named;

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerInfo {
    pub id: String,
    pub name: String,
    pub host: String,
    pub web_port: u32,
    pub state: WorkerState,
    pub cores: u32,
    pub memory_mb: u64,
    pub cores_used: u32,
    pub memory_used_mb: u64,
    pub registered_at_ms: i64,
    pub last_heartbeat_ms: i64,
    /// When the master last heard from it, on the (pausable) tokio clock the timeout uses.
    pub last_seen: Instant,
    /// The stream this worker is attached by; reports from an older stream are ignored.
    pub conn_id: u64,
    /// Its stream is open. A DECOMMISSIONED worker stays listed as such after it has gone.
    pub connected: bool,
    pub drivers: BTreeSet<String>,
    pub executors: BTreeSet<ExecKey>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Named resources it offers (by name, addresses in the order offered), and those held.
    pub resources: Vec<proto::ResourceAddresses>,
    pub resources_used: BTreeMap<String, BTreeSet<String>>,
    /// Drained by the autoscaler before its pod is removed (DECOMMISSIONED meanwhile); it may
    /// be taken back while its pod still runs.
    pub drained: bool,
}

// No field is a float, so equality is reflexive. With `Eq`, two `Arc`s of the same record
// compare by pointer: the persistent maps' diffs (the store's, the caches') compare every
// record of a node they walk, and without it each was compared field by field.
impl Eq for WorkerInfo {}

impl WorkerInfo {
    /// How many of each named resource it offers.
    pub fn named(&self) -> Named {
        Named::new(
            self.resources
                .iter()
                .map(|r| (r.name.clone(), r.addresses.len() as u32)),
        )
    }

    /// How many of each named resource are free.
    pub fn free_named(&self) -> Named {
        Named::new(self.resources.iter().map(|r| {
            let used = self.resources_used.get(&r.name).map_or(0, BTreeSet::len);
            (
                r.name.clone(),
                r.addresses.len().saturating_sub(used) as u32,
            )
        }))
    }

    /// Free addresses for `ask` (the first free ones, in the order offered), or `None` when
    /// there are not enough of some name.
    pub fn pick(&self, ask: &HashMap<String, u32>) -> Option<Vec<proto::ResourceAddresses>> {
        let mut names: Vec<(&String, &u32)> = ask.iter().collect();
        names.sort();
        names
            .into_iter()
            .map(|(name, n)| {
                let offered = self.resources.iter().find(|r| &r.name == name)?;
                let used = self.resources_used.get(name);
                let free: Vec<String> = offered
                    .addresses
                    .iter()
                    .filter(|a| used.is_none_or(|u| !u.contains(*a)))
                    .take(*n as usize)
                    .cloned()
                    .collect();
                (free.len() == *n as usize).then(|| proto::ResourceAddresses {
                    name: name.clone(),
                    addresses: free,
                })
            })
            .collect()
    }

    /// Whether every address of `assigned` is offered here and free.
    pub fn can_hold(&self, assigned: &[proto::ResourceAddresses]) -> bool {
        assigned.iter().all(|r| {
            let offered = self.resources.iter().find(|o| o.name == r.name);
            let used = self.resources_used.get(&r.name);
            r.addresses.iter().all(|a| {
                offered.is_some_and(|o| o.addresses.contains(a))
                    && used.is_none_or(|u| !u.contains(a))
            })
        })
    }

    pub fn hold(&mut self, assigned: &[proto::ResourceAddresses]) {
        for r in assigned {
            self.resources_used
                .entry(r.name.clone())
                .or_default()
                .extend(r.addresses.iter().cloned());
        }
    }

    pub fn release(&mut self, assigned: &[proto::ResourceAddresses]) {
        for r in assigned {
            if let Some(used) = self.resources_used.get_mut(&r.name) {
                for a in &r.addresses {
                    used.remove(a);
                }
                if used.is_empty() {
                    self.resources_used.remove(&r.name);
                }
            }
        }
    }

    /// Connected, or not yet back after a master restart (its slots are kept until then).
    pub fn holds_slots(&self) -> bool {
        self.connected || self.state == WorkerState::Unknown
    }

    pub fn free_cores(&self) -> u32 {
        self.cores.saturating_sub(self.cores_used)
    }

    pub fn free_memory_mb(&self) -> u64 {
        self.memory_mb.saturating_sub(self.memory_used_mb)
    }

    pub fn to_proto(&self) -> proto::Worker {
        proto::Worker {
            id: self.id.clone(),
            name: self.name.clone(),
            host: self.host.clone(),
            web_port: self.web_port,
            state: self.state as i32,
            cores: self.cores,
            cores_used: self.cores_used,
            memory_mb: self.memory_mb,
            memory_used_mb: self.memory_used_mb,
            last_heartbeat_ms: self.last_heartbeat_ms,
            registered_at_ms: self.registered_at_ms,
            driver_ids: self.drivers.iter().cloned().collect(),
            executor_ids: self.executors.iter().map(ToString::to_string).collect(),
            labels: self.labels.clone().into_iter().collect(),
            resources: self.resources.clone(),
            resources_used: self
                .resources_used
                .iter()
                .map(|(name, used)| proto::ResourceAddresses {
                    name: name.clone(),
                    addresses: used.iter().cloned().collect(),
                })
                .collect(),
        }
    }
}

fn kill_driver_order(worker_id: &str, driver_id: String, attempt: u32, reason: &str) -> Effect {
    Effect::send(
        worker_id,
        Msg::KillDriver(proto::KillDriver {
            driver_id,
            attempt,
            reason: reason.into(),
            ..Default::default()
        }),
    )
}

impl State {
    /// A worker (re)registers. A new worker is added; a known one is reconciled with what it
    /// reports: drivers and executors the master no longer expects there are killed (fencing),
    /// those the master expected but the worker no longer runs are treated as lost. Never fails:
    /// whatever a worker reports, the master ends up with a consistent view.
    pub fn register_worker(
        &mut self,
        reg: Register,
        host: String,
        conn_id: u64,
        now: Instant,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let id = reg.worker_id.clone();
        let previous = self.workers.get(&id).cloned();
        let expected: BTreeSet<String> = previous
            .as_ref()
            .map(|w| w.drivers.clone())
            .unwrap_or_default();
        let expected_executors: BTreeSet<ExecKey> = previous
            .as_ref()
            .map(|w| w.executors.clone())
            .unwrap_or_default();
        let worker = WorkerInfo {
            id: id.clone(),
            name: reg.name.clone(),
            host,
            web_port: reg.web_port,
            state: WorkerState::Alive,
            cores: reg.cores,
            memory_mb: reg.memory_mb,
            cores_used: 0,
            memory_used_mb: 0,
            registered_at_ms: previous.as_ref().map_or(now_ms, |w| w.registered_at_ms),
            last_heartbeat_ms: now_ms,
            last_seen: now,
            conn_id,
            connected: true,
            drivers: BTreeSet::new(),
            executors: BTreeSet::new(),
            labels: reg.labels.clone().into_iter().collect(),
            resources: hearth_common::named_resources::merge(reg.resources.clone()),
            resources_used: BTreeMap::new(),
            drained: false,
        };
        self.workers.insert(id.clone(), Arc::new(worker));

        // A process that ended while the worker built its registration is in both lists: it
        // ended, and its `running` entry is no copy to fence.
        let ended: BTreeSet<(String, u32)> = reg
            .completed
            .iter()
            .map(|s| (s.driver_id.clone(), s.attempt))
            .collect();
        // Terminal reports it could not deliver while disconnected. The worker's sets are empty
        // now, so these only record how things ended; slots are rebuilt below.
        for status in reg.completed {
            self.driver_status(&id, status, now_ms, effects);
        }
        for status in reg.completed_executors {
            self.executor_status(&id, status, now_ms, effects);
        }

        let mut still_running = BTreeSet::new();
        for running in reg.running {
            if ended.contains(&(running.driver_id.clone(), running.attempt)) {
                continue;
            }
            let ours = self.drivers.get(&running.driver_id).is_some_and(|d| {
                d.state == DriverState::Running
                    && d.worker_id.as_deref() == Some(id.as_str())
                    && d.attempt == running.attempt
                    && expected.contains(&d.id)
            });
            if ours {
                still_running.insert(running.driver_id);
            } else {
                tracing::warn!(worker_id = %id, driver_id = %running.driver_id, attempt = running.attempt,
                    "fencing: worker runs a driver the master has not placed there; killing it");
                self.old_copy_seen(&running.driver_id, &id);
                effects.push(kill_driver_order(
                    &id,
                    running.driver_id,
                    running.attempt,
                    "fenced: the master no longer runs this attempt here",
                ));
            }
        }
        for driver_id in expected {
            let Some(d) = self.drivers.get(&driver_id) else {
                continue;
            };
            if still_running.contains(&driver_id) {
                let (cores, memory, attempt) = (d.spec.cores, d.spec.memory_mb, d.attempt);
                let held = d.resources.clone();
                // A kill ordered before the stream broke may have been lost: order it again.
                let kill_again = d.stop_requested().then(|| d.message.clone());
                let preempt_again = d
                    .preempted
                    .clone()
                    .map(|why| (why, self.grace_ms(&d.spec.queue)));
                match self.take_slot(&id, &driver_id, (cores, memory), &held) {
                    Ok(w) => {
                        w.drivers.insert(driver_id.clone());
                        if let Some(reason) = kill_again {
                            effects.push(kill_driver_order(&id, driver_id, attempt, &reason));
                        } else if let Some((why, grace_ms)) = preempt_again {
                            effects.push(super::preemption::kill_driver(
                                &id, &driver_id, attempt, &why, grace_ms,
                            ));
                        }
                    }
                    Err(e) => {
                        // It came back offering less than its drivers hold: fence this one off.
                        tracing::warn!(worker_id = %id, driver_id, error = %e, "driver no longer fits its worker");
                        effects.push(kill_driver_order(
                            &id,
                            driver_id.clone(),
                            attempt,
                            "no longer fits the worker's offer",
                        ));
                        self.driver_lost(
                            &driver_id,
                            format!("{id} came back offering less"),
                            now_ms,
                            effects,
                        );
                        // Its copy there runs until the kill takes effect.
                        self.old_copy_seen(&driver_id, &id);
                    }
                }
            } else if d.state == DriverState::Running && d.worker_id.as_deref() == Some(&id) {
                if reg.keeps_reports {
                    // Neither running nor ended there: the launch order never arrived (the
                    // stream broke, or the master restarted, before it did).
                    self.requeue_unlaunched(&driver_id, &id, now_ms, effects);
                } else {
                    self.driver_lost(
                        &driver_id,
                        format!("{id} reconnected without it"),
                        now_ms,
                        effects,
                    );
                }
            }
        }

        let mut executors_running = BTreeSet::new();
        for running in reg.running_executors {
            let key = ExecKey::new(&running.app_id, running.executor_id);
            let ours = expected_executors.contains(&key)
                && self
                    .executor(&key)
                    .is_some_and(|e| e.state.is_live() && e.worker_id == id);
            if ours {
                executors_running.insert(key);
            } else {
                tracing::warn!(worker_id = %id, executor = %key,
                    "fencing: worker runs an executor the master has not placed there; killing it");
                effects.push(Effect::send(
                    &id,
                    Msg::KillExecutor(proto::KillExecutor {
                        app_id: key.app_id,
                        executor_id: key.executor_id,
                        reason: "fenced: the master no longer runs this executor here".into(),
                        ..Default::default()
                    }),
                ));
            }
        }
        for key in expected_executors {
            let Some(e) = self.executor(&key) else {
                continue;
            };
            if !e.state.is_live() || e.worker_id != id {
                continue;
            }
            let (cores, memory, held) = (e.cores, e.memory_mb, e.resources.clone());
            let kept = executors_running.contains(&key)
                && match self.take_slot(&id, &key.to_string(), (cores, memory), &held) {
                    Ok(w) => {
                        w.executors.insert(key.clone());
                        true
                    }
                    Err(_) => {
                        effects.push(Effect::send(
                            &id,
                            Msg::KillExecutor(proto::KillExecutor {
                                app_id: key.app_id.clone(),
                                executor_id: key.executor_id,
                                reason: "no longer fits the worker's offer".into(),
                                ..Default::default()
                            }),
                        ));
                        false
                    }
                };
            if kept {
                // It runs, whether or not its RUNNING report got through before the break.
                self.executor_running(&key, None);
                let preempt_again = self.executor(&key).and_then(|e| e.preempted.clone());
                if let Some(why) = preempt_again {
                    let queue = self.apps.get(&key.app_id).map(|a| a.queue.clone());
                    let grace_ms = self.grace_ms(queue.as_deref().unwrap_or_default());
                    effects.push(super::preemption::kill_executor(
                        &id,
                        &key.app_id,
                        key.executor_id,
                        &why,
                        grace_ms,
                    ));
                }
            } else {
                self.executor_gone(
                    &key,
                    ExecutorState::Lost,
                    None,
                    format!("{id} reconnected without it"),
                    now_ms,
                    effects,
                );
            }
        }
    }

    /// The worker is leaving: it stays connected while its drivers end, but nothing new is
    /// placed on it.
    pub fn decommission_worker(&mut self, worker_id: &str, conn_id: u64, reason: &str) {
        if let Some(w) = self.workers.get_mut(worker_id)
            && w.conn_id == conn_id
            && (w.state == WorkerState::Alive || w.drained)
        {
            tracing::info!(worker_id, reason, "worker decommissioning");
            let w = Arc::make_mut(w);
            w.state = WorkerState::Decommissioned;
            // Leaving on its own now: no longer the autoscaler's to take back.
            w.drained = false;
        }
    }

    /// The autoscaler drains an idle worker (`drain`), or takes a drained one back. Whether it
    /// was done: a worker given work meanwhile is not drained.
    pub fn drain_worker(&mut self, worker_id: &str, drain: bool) -> bool {
        let Some(w) = self.workers.get_mut(worker_id) else {
            return false;
        };
        if !w.connected {
            return false;
        }
        if drain {
            if w.state != WorkerState::Alive || !w.drivers.is_empty() || !w.executors.is_empty() {
                return false;
            }
            tracing::info!(
                worker_id,
                "worker drained by the autoscaler; its pod is removed next"
            );
            let w = Arc::make_mut(w);
            w.state = WorkerState::Decommissioned;
            w.drained = true;
        } else {
            if !w.drained || w.state != WorkerState::Decommissioned {
                return false;
            }
            tracing::info!(worker_id, "drained worker taken back by the autoscaler");
            let w = Arc::make_mut(w);
            w.state = WorkerState::Alive;
            w.drained = false;
            self.forget_tried();
        }
        true
    }

    /// Records a heartbeat on the worker's current stream; false if it is not current.
    pub fn heartbeat(&mut self, worker_id: &str, conn_id: u64, now: Instant, now_ms: i64) -> bool {
        if let Some(w) = self.workers.get_mut(worker_id)
            && w.conn_id == conn_id
            && w.connected
        {
            let w = Arc::make_mut(w);
            w.last_seen = w.last_seen.max(now);
            w.last_heartbeat_ms = w.last_heartbeat_ms.max(now_ms);
            true
        } else {
            false
        }
    }

    /// The worker's stream on `conn_id` ended or timed out: it is DEAD (or stays DECOMMISSIONED
    /// if it was leaving), its drivers are lost and its executors LOST. Returns whether anything
    /// changed (a stale connection id changes nothing).
    pub fn worker_lost(
        &mut self,
        worker_id: &str,
        conn_id: u64,
        reason: &str,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let Some(w) = self.workers.get_mut(worker_id) else {
            return false;
        };
        if w.conn_id != conn_id || !w.connected {
            return false;
        }
        self.declare_gone(worker_id, reason, now_ms, effects);
        true
    }

    /// The worker is gone: DEAD (or still DECOMMISSIONED if it was leaving); its drivers are
    /// lost and its executors LOST.
    pub(super) fn declare_gone(
        &mut self,
        worker_id: &str,
        reason: &str,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(w) = self.workers.get_mut(worker_id) else {
            return;
        };
        let w = Arc::make_mut(w);
        w.connected = false;
        if w.state != WorkerState::Decommissioned {
            w.state = WorkerState::Dead;
        }
        w.cores_used = 0;
        w.memory_used_mb = 0;
        w.resources_used.clear();
        let since_heard = w.last_seen.elapsed();
        let drivers = std::mem::take(&mut w.drivers);
        let executors = std::mem::take(&mut w.executors);
        tracing::warn!(
            worker_id,
            reason,
            drivers = drivers.len(),
            executors = executors.len(),
            "worker lost"
        );
        for driver_id in drivers {
            self.driver_lost(
                &driver_id,
                format!("{worker_id} lost: {reason}"),
                now_ms,
                effects,
            );
            self.fence_after_loss(&driver_id, worker_id, since_heard, now_ms);
        }
        self.old_copies_lost(worker_id, since_heard, now_ms);
        for key in executors {
            self.executor_gone(
                &key,
                ExecutorState::Lost,
                None,
                format!("{worker_id} lost: {reason}"),
                now_ms,
                effects,
            );
        }
    }

    /// Declares DEAD every connected worker not heard from within `timeout`.
    pub fn expire_workers(
        &mut self,
        now: Instant,
        timeout: Duration,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> bool {
        self.expire_workers_heard(now_ms, effects, timeout, |w| {
            (now.saturating_duration_since(w.last_seen) > timeout).then_some(w.last_seen)
        })
    }

    /// How many workers are connected (each should have a stream).
    pub fn connected_workers(&self) -> usize {
        self.workers.values().filter(|w| w.connected).count()
    }

    /// Declares DEAD every connected worker `silent` says was not heard from in time; `silent`
    /// answers when it was last heard (a worker's heartbeats may be kept outside the state), and
    /// that moment is what its drivers' fences count from.
    pub fn expire_workers_heard(
        &mut self,
        now_ms: i64,
        effects: &mut Vec<Effect>,
        timeout: Duration,
        mut silent: impl FnMut(&WorkerInfo) -> Option<Instant>,
    ) -> bool {
        let expired: Vec<(String, u64, Instant)> = self
            .workers
            .values()
            .filter(|w| w.connected)
            .filter_map(|w| silent(w).map(|heard| (w.id.clone(), w.conn_id, heard)))
            .collect();
        for (worker_id, conn_id, heard) in &expired {
            if let Some(w) = self.workers.get_mut(worker_id) {
                let w = Arc::make_mut(w);
                w.last_seen = w.last_seen.max(*heard);
            }
            let reason = format!("no heartbeat for more than {} ms", timeout.as_millis());
            self.worker_lost(worker_id, *conn_id, &reason, now_ms, effects);
            effects.push(Effect::Disconnect {
                worker_id: worker_id.clone(),
                conn_id: *conn_id,
            });
        }
        !expired.is_empty()
    }
}
