//! The accounting every state must keep, checked by the tests after every step.

use hearth_common::proto::DriverState;

use super::{ExecKey, State};

impl State {
    /// Checks the accounting invariants; tests call it after every step.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        for w in self.workers.values() {
            let (mut cores, mut memory) = (0u32, 0u64);
            let mut held = Vec::new();
            for id in &w.drivers {
                let d = self
                    .drivers
                    .get(id)
                    .ok_or_else(|| format!("{} holds unknown driver {id}", w.id))?;
                if d.state != DriverState::Running || d.worker_id.as_deref() != Some(&w.id) {
                    return Err(format!("{} holds {id} which is {:?}", w.id, d.state));
                }
                cores += d.spec.cores;
                memory += d.spec.memory_mb;
                held.push((id.clone(), &d.resources));
            }
            for key in &w.executors {
                let e = self
                    .apps
                    .get(&key.app_id)
                    .and_then(|a| a.executors.get(&key.executor_id))
                    .ok_or_else(|| format!("{} holds unknown executor {key}", w.id))?;
                if !e.state.is_live() || e.worker_id != w.id {
                    return Err(format!("{} holds {key} which is {:?}", w.id, e.state));
                }
                cores += e.cores;
                memory += e.memory_mb;
                held.push((key.to_string(), &e.resources));
            }
            // Every address held is offered, held by one holder only, and the worker's used
            // sets are exactly the holders' addresses.
            let mut used: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
                Default::default();
            for (holder, resources) in &held {
                for r in resources.iter() {
                    let offered = w.resources.iter().find(|o| o.name == r.name);
                    for a in &r.addresses {
                        if !offered.is_some_and(|o| o.addresses.contains(a)) {
                            return Err(format!(
                                "{holder} holds {} {a}, not offered by {}",
                                r.name, w.id
                            ));
                        }
                        if !used.entry(r.name.clone()).or_default().insert(a.clone()) {
                            return Err(format!("{} {a} on {} is held twice", r.name, w.id));
                        }
                    }
                }
            }
            if used != w.resources_used {
                return Err(format!(
                    "{}: resources used do not match its drivers and executors",
                    w.id
                ));
            }
            if cores != w.cores_used || memory != w.memory_used_mb {
                return Err(format!(
                    "{}: used does not match its drivers and executors",
                    w.id
                ));
            }
            if !w.holds_slots() && (!w.drivers.is_empty() || !w.executors.is_empty()) {
                return Err(format!("{} is gone but holds slots", w.id));
            }
            if w.cores_used > w.cores || w.memory_used_mb > w.memory_mb {
                return Err(format!("{} is over-committed", w.id));
            }
        }
        for d in self.drivers.values() {
            if d.state == DriverState::Running {
                let on = d
                    .worker_id
                    .as_ref()
                    .and_then(|w| self.workers.get(w))
                    .is_some_and(|w| w.drivers.contains(&d.id) && w.holds_slots());
                if !on {
                    return Err(format!("{} RUNNING but not held by an alive worker", d.id));
                }
            }
        }
        for a in self.apps.values() {
            let live = a.live();
            if live > a.max_executors || a.target > a.max_executors {
                return Err(format!(
                    "{} holds {live} executors, wants {}, cap {}",
                    a.id, a.target, a.max_executors
                ));
            }
            if !a.state.is_terminal()
                && let Some(d) = a.driver_id.as_ref().and_then(|d| self.drivers.get(d))
                && (d.state != DriverState::Running || !d.apps.contains(&a.id))
            {
                return Err(format!(
                    "{} outlives its driver {} ({:?})",
                    a.id, d.id, d.state
                ));
            }
            if a.state.is_terminal() && live > 0 {
                return Err(format!("{} ended but holds {live} executors", a.id));
            }
            for e in a.executors.values().filter(|e| e.state.is_live()) {
                let key = ExecKey::new(&a.id, e.id);
                let held = self
                    .workers
                    .get(&e.worker_id)
                    .is_some_and(|w| w.executors.contains(&key) && w.holds_slots());
                if !held {
                    return Err(format!("{key} is live but not held by an alive worker"));
                }
            }
        }
        // What queues hold, as kept from the changes between counts, is what a count over
        // every driver finds.
        let kept = self.held.held(&self.queues, &self.drivers, &self.workers);
        let counted = super::held::afresh(&self.queues, &self.drivers, &self.workers);
        if kept.amounts != counted.amounts || kept.named != counted.named {
            return Err(format!(
                "held by queue, kept: {:?} {:?}; counted: {:?} {:?}",
                kept.amounts, kept.named, counted.amounts, counted.named
            ));
        }
        let made_afresh: Vec<_> = self
            .workers
            .values()
            .filter_map(|w| super::offers::offer_of(w))
            .collect();
        if self.offers() != made_afresh {
            return Err("the offers kept differ from the offers made afresh".into());
        }
        Ok(())
    }
}
