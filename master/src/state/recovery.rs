//! Rebuilding the state from the store after a restart, and ending the recovery.
//!
//! Workers the old master knew come back UNKNOWN, still holding the slots of what they ran. The
//! master places nothing until each has re-registered (and been reconciled: what it still runs
//! is adopted, what it lost is relaunched or failed) or the worker timeout has passed, after
//! which those still missing are declared DEAD like any lost worker.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use hearth_common::proto::{DriverState, WorkerState};
use tokio::time::Instant;

use super::{AppInfo, DriverInfo, Effect, Limits, State, WorkerInfo, stored::Loaded};

/// The number at the end of an id (`driver-...-0042`), for the order ids were made in.
fn sequence(id: &str) -> (u64, String) {
    let n = id
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(u64::MAX);
    (n, id.to_string())
}

fn ended_at(d: &DriverInfo) -> i64 {
    d.history.last().map_or(d.submitted_at_ms, |h| h.at_ms)
}

impl State {
    /// The state a restarted master starts from: what the store holds, with every worker that
    /// was connected now UNKNOWN and `recovering` set if there is any.
    pub fn recover(
        loaded: Loaded,
        master_url: String,
        now: Instant,
        now_ms: i64,
        limits: Limits,
    ) -> Self {
        let started_ms = loaded.meta.map_or(now_ms, |m| m.started_ms);
        let mut state = State::new(master_url, started_ms, limits);
        if let Some(meta) = loaded.meta {
            state.next_driver_seq = meta.next_driver_seq;
            state.next_app_seq = meta.next_app_seq;
            // A master before granted longer leases (a larger worker timeout): until one of
            // those has surely run out, fencing counts with it.
            if meta.lease_ms > state.limits.lease_ms {
                let configured = state.limits.lease_ms;
                state.limits.lease_ms = meta.lease_ms;
                state.lease_lowers = Some((now + Duration::from_millis(meta.lease_ms), configured));
            }
        }

        let mut drivers = loaded.drivers;
        drivers.sort_by_key(|d| sequence(&d.id));
        let mut completed: Vec<(i64, String)> = Vec::new();
        for mut d in drivers {
            // Drivers kept before queues existed were in the one queue there was.
            if d.spec.queue.is_empty() {
                Arc::make_mut(&mut d.spec).queue = crate::schedule::DEFAULT_QUEUE.to_string();
            }
            if let Some(s) = &d.submission_id {
                state.submissions.insert(s.clone(), d.id.clone());
            }
            match d.state {
                DriverState::Submitted | DriverState::Relaunching
                    if d.fenced_until_ms.is_some() || d.old_copy_on.is_some() =>
                {
                    state.fenced.insert(d.id.clone());
                }
                DriverState::Submitted | DriverState::Relaunching => {
                    state.waiting.push_back(d.id.clone());
                }
                s if s.is_terminal() => completed.push((ended_at(&d), d.id.clone())),
                _ => {}
            }
            state.drivers.insert(d.id.clone(), Arc::new(d));
        }
        completed.sort();
        state.completed = completed.into_iter().map(|(_, id)| id).collect();

        let mut apps: Vec<AppInfo> = loaded.apps;
        apps.sort_by_key(|a| sequence(&a.id));
        let mut ended: Vec<(i64, String)> = Vec::new();
        for a in apps {
            if a.state.is_terminal() {
                ended.push((a.ended_at_ms, a.id.clone()));
            } else {
                state.active_apps.push_back(a.id.clone());
            }
            state.apps.insert(a.id.clone(), Arc::new(a));
        }
        ended.sort();
        state.completed_apps = ended.into_iter().map(|(_, id)| id).collect();

        for stored in loaded.workers {
            // UNKNOWN: a restart during a recovery; it has not come back since the one before.
            let was_connected = stored.state == WorkerState::Unknown
                || (stored.connected
                    && matches!(
                        stored.state,
                        WorkerState::Alive | WorkerState::Decommissioned
                    ));
            let mut w = WorkerInfo {
                id: stored.id,
                name: stored.name,
                host: stored.host,
                web_port: stored.web_port,
                state: if was_connected {
                    WorkerState::Unknown
                } else {
                    stored.state
                },
                cores: stored.cores,
                memory_mb: stored.memory_mb,
                cores_used: 0,
                memory_used_mb: 0,
                registered_at_ms: stored.registered_at_ms,
                last_heartbeat_ms: 0,
                last_seen: now,
                conn_id: 0,
                connected: false,
                drivers: BTreeSet::new(),
                executors: BTreeSet::new(),
                labels: stored.labels,
                resources: stored.resources,
                resources_used: Default::default(),
                drained: false,
            };
            if was_connected {
                // Only slots the records agree on are held again.
                for id in stored.drivers {
                    if let Some(d) = state.drivers.get(&id)
                        && d.state == DriverState::Running
                        && d.worker_id.as_deref() == Some(w.id.as_str())
                    {
                        w.cores_used = w.cores_used.saturating_add(d.spec.cores);
                        w.memory_used_mb = w.memory_used_mb.saturating_add(d.spec.memory_mb);
                        w.hold(&d.resources);
                        w.drivers.insert(id);
                    }
                }
                for key in stored.executors {
                    if let Some(e) = state.executor(&key)
                        && e.state.is_live()
                        && e.worker_id == w.id
                    {
                        w.cores_used = w.cores_used.saturating_add(e.cores);
                        w.memory_used_mb = w.memory_used_mb.saturating_add(e.memory_mb);
                        w.hold(&e.resources);
                        w.executors.insert(key);
                    }
                }
            }
            state.workers.insert(w.id.clone(), Arc::new(w));
        }
        state.recovering = state
            .workers
            .values()
            .any(|w| w.state == WorkerState::Unknown);
        state.refence_after_restart(now, now_ms);
        state
    }

    /// Records that claim a slot no worker holds (a damaged or partial file) are settled like a
    /// lost worker's: supervised drivers relaunched, executors replaced.
    pub fn settle_orphans(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        let orphan_drivers: Vec<String> = self
            .drivers
            .values()
            .filter(|d| d.state == DriverState::Running)
            .filter(|d| {
                !d.worker_id
                    .as_ref()
                    .and_then(|w| self.workers.get(w))
                    .is_some_and(|w| w.drivers.contains(&d.id))
            })
            .map(|d| d.id.clone())
            .collect();
        for id in orphan_drivers {
            tracing::warn!(driver_id = %id, worker_id = ?self.drivers.get(&id).and_then(|d| d.worker_id.clone()),
                "a running driver's worker does not list it; treated as lost");
            let worker = self.drivers.get(&id).and_then(|d| d.worker_id.clone());
            self.driver_lost(&id, "its worker is unknown".into(), now_ms, effects);
            // That worker may still hold a lease from the master before: a full one is waited.
            if let Some(worker) = worker {
                self.fence_after_loss(&id, &worker, std::time::Duration::ZERO, now_ms);
            }
        }
        let orphan_executors: Vec<super::ExecKey> = self
            .apps
            .values()
            .flat_map(|a| {
                a.executors
                    .values()
                    .filter(|e| e.state.is_live())
                    .map(|e| (super::ExecKey::new(&a.id, e.id), e.worker_id.clone()))
                    .collect::<Vec<_>>()
            })
            .filter(|(key, w)| {
                !self
                    .workers
                    .get(w)
                    .is_some_and(|w| w.executors.contains(key))
            })
            .map(|(key, _)| key)
            .collect();
        for key in orphan_executors {
            self.executor_gone(
                &key,
                hearth_common::proto::ExecutorState::Lost,
                None,
                "its worker is unknown".into(),
                now_ms,
                effects,
            );
        }
    }

    /// The master closed every worker's stream itself (a state write failed and its turn was
    /// undone): each worker is waited for as after a restart, what it holds kept, and its work
    /// adopted when it registers again, rather than declared lost when its stream ends.
    pub fn await_reconnects(&mut self, now: Instant) {
        let ids: Vec<String> = self
            .workers
            .values()
            .filter(|w| w.connected)
            .map(|w| w.id.clone())
            .collect();
        for id in &ids {
            if let Some(w) = self.workers.get_mut(id) {
                let w = Arc::make_mut(w);
                w.connected = false;
                w.conn_id = 0;
                w.state = WorkerState::Unknown;
                w.last_seen = now;
            }
        }
        if !ids.is_empty() {
            self.recovering = true;
        }
    }

    /// Whether every worker the old master knew has come back.
    pub fn all_workers_back(&self) -> bool {
        !self
            .workers
            .values()
            .any(|w| w.state == WorkerState::Unknown)
    }

    /// Ends the recovery: workers still UNKNOWN are declared DEAD, which relaunches or fails
    /// what they ran; then placement resumes.
    pub fn finish_recovery(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        let missing: Vec<String> = self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Unknown)
            .map(|w| w.id.clone())
            .collect();
        for id in &missing {
            self.declare_gone(
                id,
                "did not come back after the master restarted",
                now_ms,
                effects,
            );
        }
        self.recovering = false;
        tracing::info!(missing = missing.len(), "recovery finished");
    }
}
