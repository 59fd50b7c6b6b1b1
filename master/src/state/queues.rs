//! The queues in force, what each queue's work holds, and the queues as the API shows them.

use std::{collections::HashMap, sync::Arc};

use hearth_common::{error::InvalidInput, proto};

use super::State;
use crate::tenants::Tenants;
use crate::{
    error::Result,
    schedule::{Amount, DEFAULT_QUEUE, QueueTree, Usage},
};

impl State {
    /// Puts `tree` and `tenants` in force; everything waiting is tried again against them.
    pub fn set_queues(&mut self, tree: Arc<QueueTree>, tenants: Arc<Tenants>) {
        self.queues = tree;
        self.tenants = tenants;
        self.forget_tried();
    }

    /// The index of the queue named `name` (empty: `default`), or an error naming `field`.
    pub fn queue_index(&self, field: &'static str, name: &str) -> Result<usize> {
        let name = if name.is_empty() { DEFAULT_QUEUE } else { name };
        self.queues.index(name).ok_or_else(|| {
            InvalidInput::new(
                field,
                format!(
                    "no queue named {name:?}; the queues are: {}",
                    self.queues.names()
                ),
            )
            .into()
        })
    }

    /// What each queue's work holds on alive workers, against the alive workers' capacity.
    /// Work of a queue no longer defined is counted nowhere.
    pub fn usage(&self) -> Usage {
        let tree = &self.queues;
        let total = self.offers.total(&self.workers);
        let mut usage = Usage::new(tree, total);
        let held = self.held.held(tree, &self.drivers, &self.workers);
        for (q, amount) in held.amounts.iter().enumerate() {
            usage.charge(tree, q, *amount);
            usage.charge_named(tree, q, &held.named_of(q));
        }
        let holding =
            |worker_id: &str| self.workers.get(worker_id).is_some_and(|w| w.holds_slots());
        for app in self.active_apps.iter().filter_map(|id| self.apps.get(id)) {
            let Some(q) = tree.index(&app.queue) else {
                continue;
            };
            let mut held = Amount::default();
            let mut named = crate::schedule::named::Named::default();
            for e in app.executors.values() {
                if e.state.is_live() && holding(&e.worker_id) {
                    held.add(Amount::new(u64::from(e.cores), e.memory_mb));
                    if !e.resources.is_empty() {
                        named.add(&held_named(&e.resources));
                    }
                }
            }
            usage.charge(tree, q, held);
            usage.charge_named(tree, q, &named);
        }
        if self.limits.usage_half_life_ms.is_some() {
            let recent = tree
                .defs()
                .iter()
                .map(|d| self.recent_use.get(&d.name).copied().unwrap_or(0.0))
                .collect();
            usage = usage.with_recent(recent);
        }
        usage
    }

    /// Moves each queue's recent share toward its current one by the time passed, halving the
    /// weight of the past every half-life. Called about once a second.
    pub fn decay_usage(&mut self, now_ms: i64) {
        let Some(half_life) = self.limits.usage_half_life_ms.filter(|h| *h > 0) else {
            return;
        };
        let since = now_ms.saturating_sub(self.recent_updated_ms);
        if self.recent_updated_ms == 0 || since <= 0 {
            self.recent_updated_ms = now_ms;
            return;
        }
        self.recent_updated_ms = now_ms;
        let past = 0.5f64.powf(since as f64 / half_life as f64);
        let usage = self.usage();
        let tree = self.queues.clone();
        self.recent_use.retain(|name, _| tree.index(name).is_some());
        for (q, def) in tree.defs().iter().enumerate() {
            let now = usage.subtree(q).dominant_share(usage.total());
            let recent = self.recent_use.entry(def.name.clone()).or_insert(0.0);
            *recent = *recent * past + now * (1.0 - past);
        }
    }

    /// The waiting drivers of each queue in the order it serves them (priority, then
    /// submission), as (position from 1, how many wait in the queue), by driver id.
    pub(crate) fn queue_positions(&self, only_queue: Option<&str>) -> HashMap<&str, (u32, u32)> {
        let mut by_queue: HashMap<&str, Vec<(i32, usize, &str)>> = HashMap::new();
        for (pos, d) in self
            .waiting
            .iter()
            .enumerate()
            .filter_map(|(pos, id)| Some((pos, self.drivers.get(id)?)))
            .filter(|(_, d)| only_queue.is_none_or(|q| q == d.spec.queue))
        {
            by_queue.entry(d.spec.queue.as_str()).or_default().push((
                d.spec.priority,
                pos,
                d.id.as_str(),
            ));
        }
        let mut positions = HashMap::new();
        for (_, mut drivers) in by_queue {
            drivers.sort_by_key(|(priority, pos, _)| (std::cmp::Reverse(*priority), *pos));
            let n = drivers.len() as u32;
            for (i, (_, _, id)) in drivers.into_iter().enumerate() {
                positions.insert(id, (i as u32 + 1, n));
            }
        }
        positions
    }

    /// Driver `id` as the API shows it, with its place in its queue while it waits.
    pub fn driver_proto(&self, id: &str) -> Result<proto::Driver> {
        let d = self.driver(id)?;
        let mut p = d.to_proto();
        if d.waiting_reason.is_some()
            && let Some((position, of)) =
                self.queue_positions(Some(&d.spec.queue)).get(d.id.as_str())
        {
            p.queue_position = *position;
            p.queue_waiting = *of;
        }
        Ok(p)
    }

    /// Every driver as the API shows it, each waiting one with its place in its queue.
    pub fn drivers_proto(&self) -> Vec<proto::Driver> {
        let positions = self.queue_positions(None);
        self.drivers
            .values()
            .map(|d| {
                let mut p = d.to_proto();
                if let Some((position, of)) = positions.get(d.id.as_str()) {
                    p.queue_position = *position;
                    p.queue_waiting = *of;
                }
                p
            })
            .collect()
    }

    /// Each queue with its settings, use, waiting work and share, in name order.
    pub fn queue_views(&self) -> Vec<proto::Queue> {
        let tree = &self.queues;
        let usage = self.usage();
        let mut waiting = vec![0u32; tree.len()];
        for d in self.waiting.iter().filter_map(|id| self.drivers.get(id)) {
            if let Some(q) = tree.index(&d.spec.queue) {
                waiting[q] += 1;
            }
        }
        let mut wanted = vec![0u32; tree.len()];
        for a in self.active_apps.iter().filter_map(|id| self.apps.get(id)) {
            if let Some(q) = tree.index(&a.queue) {
                wanted[q] += a.wanted();
            }
        }
        let resources = |a: Amount| proto::Resources {
            cores: a.cores,
            memory_mb: a.memory_mb,
        };
        tree.defs()
            .iter()
            .enumerate()
            .map(|(q, def)| proto::Queue {
                name: def.name.clone(),
                parent: tree
                    .parent(q)
                    .map(|p| tree.def(p).name.clone())
                    .unwrap_or_default(),
                weight: def.weight,
                guaranteed: Some(resources(def.guaranteed)),
                max: def.max.map(resources),
                used: Some(resources(usage.subtree(q))),
                waiting_drivers: waiting[q],
                wanted_executors: wanted[q],
                share: usage.subtree(q).dominant_share(usage.total()),
            })
            .collect()
    }
}

/// How many addresses of each named resource a process holds.
fn held_named(held: &[hearth_common::proto::ResourceAddresses]) -> crate::schedule::named::Named {
    crate::schedule::named::Named::new(
        held.iter()
            .map(|r| (r.name.clone(), r.addresses.len() as u32)),
    )
}
