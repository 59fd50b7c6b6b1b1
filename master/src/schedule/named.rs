//! Named resources (GPUs and the like) in placement: counts of them on offers and in asks,
//! whether an ask's fit a worker, and why one waits when they are what is short. Which
//! addresses a placed item gets is decided by the state, which knows them; here only counts.

use super::{
    Offer,
    reasons::{Wait, WaitCode},
};

/// Counts by name (`gpu` → 2), sorted by name; empty for most work.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Named(Vec<(String, u32)>);

impl Named {
    pub fn new(counts: impl IntoIterator<Item = (String, u32)>) -> Self {
        let mut v: Vec<(String, u32)> = counts.into_iter().filter(|(_, n)| *n > 0).collect();
        v.sort();
        v.dedup_by(|a, b| {
            if a.0 == b.0 {
                b.1 += a.1;
                true
            } else {
                false
            }
        });
        Self(v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> u32 {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .map_or(0, |i| self.0[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.0.iter().map(|(n, c)| (n.as_str(), *c))
    }

    /// Holds at least what `ask` asks for, of every name.
    pub fn covers(&self, ask: &Named) -> bool {
        ask.iter().all(|(name, n)| self.get(name) >= n)
    }

    /// How many of `ask` fit in this (no limit when `ask` is empty).
    pub fn pieces(&self, ask: &Named) -> u64 {
        ask.iter()
            .map(|(name, n)| u64::from(self.get(name) / n.max(1)))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Takes `ask` out (saturating: callers check [`Named::covers`] first).
    pub fn take(&mut self, ask: &Named) {
        for (name, n) in ask.iter() {
            if let Ok(i) = self.0.binary_search_by(|(x, _)| x.as_str().cmp(name)) {
                self.0[i].1 = self.0[i].1.saturating_sub(n);
            }
        }
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Named) {
        let merged = self
            .0
            .drain(..)
            .chain(other.0.iter().cloned())
            .collect::<Vec<_>>();
        *self = Named::new(merged);
    }

    /// `n` times these counts.
    pub fn times(&self, n: u32) -> Named {
        Named(
            self.0
                .iter()
                .map(|(name, c)| (name.clone(), c.saturating_mul(n)))
                .filter(|(_, c)| *c > 0)
                .collect(),
        )
    }

    /// "1 gpu and 2 fpga".
    pub fn words(&self) -> String {
        self.iter()
            .map(|(name, n)| format!("{n} {name}"))
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

/// Why `ask` cannot be placed when its named resources are what is short: none on any worker
/// in that number ([`WaitCode::TooLarge`]), or not free in that number on any one now
/// ([`WaitCode::NoFreeSlots`]). `None` when every name is free in that number somewhere.
pub fn short_of(offers: &[Offer], ask: &Named) -> Option<Wait> {
    for (name, n) in ask.iter() {
        let most = offers
            .iter()
            .map(|o| o.resources.get(name))
            .max()
            .unwrap_or(0);
        if most < n {
            let why = if most == 0 {
                format!("needs {n} {name}; no worker offers {name}")
            } else {
                format!("needs {n} {name}; no worker has that many (the most any has is {most})")
            };
            return Some((WaitCode::TooLarge, why));
        }
    }
    for (name, n) in ask.iter() {
        let most_free = offers
            .iter()
            .map(|o| o.free_resources.get(name))
            .max()
            .unwrap_or(0);
        if most_free < n {
            return Some((
                WaitCode::NoFreeSlots,
                format!("needs {n} {name}; the most free on any worker is {most_free}"),
            ));
        }
    }
    None
}

/// The wait of an item whose named resources, cores and memory each fit somewhere but never
/// all on one worker now.
pub fn not_together(ask: &Named, cores: u32, memory_mb: u64) -> Wait {
    (
        WaitCode::NoFreeSlots,
        format!(
            "needs {} with {cores} cores and {} on one worker; no worker has all of these free now",
            ask.words(),
            hearth_common::resources::format_mb(memory_mb)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(pairs: &[(&str, u32)]) -> Named {
        Named::new(pairs.iter().map(|(n, c)| (n.to_string(), *c)))
    }

    fn offer(id: &str, gpus: u32, free: u32) -> Offer {
        Offer {
            worker_id: id.into(),
            cores: 8,
            memory_mb: 8192,
            free_cores: 8,
            free_memory_mb: 8192,
            drivers: 0,
            resources: named(&[("gpu", gpus)]),
            free_resources: named(&[("gpu", free)]),
        }
    }

    #[test]
    fn counts_cover_take_and_divide() {
        let mut free = named(&[("gpu", 3), ("fpga", 1)]);
        assert!(free.covers(&named(&[("gpu", 2)])));
        assert!(!free.covers(&named(&[("gpu", 2), ("tpu", 1)])));
        assert_eq!(free.pieces(&named(&[("gpu", 1)])), 3);
        assert_eq!(free.pieces(&Named::default()), u64::MAX);
        free.take(&named(&[("gpu", 2)]));
        assert_eq!(free.get("gpu"), 1);
        assert_eq!(named(&[("gpu", 1), ("gpu", 1)]).get("gpu"), 2);
    }

    #[test]
    fn the_reason_names_the_resource_that_is_short() {
        let offers = [offer("a", 2, 1), offer("b", 1, 0)];
        let (code, why) = short_of(&offers, &named(&[("gpu", 2)])).unwrap();
        assert_eq!(code, WaitCode::NoFreeSlots);
        assert_eq!(why, "needs 2 gpu; the most free on any worker is 1");
        let (code, why) = short_of(&offers, &named(&[("gpu", 4)])).unwrap();
        assert_eq!(code, WaitCode::TooLarge);
        assert!(why.contains("the most any has is 2"), "{why}");
        let (_, why) = short_of(&offers, &named(&[("fpga", 1)])).unwrap();
        assert!(why.contains("no worker offers fpga"), "{why}");
        assert!(short_of(&offers, &named(&[("gpu", 1)])).is_none());
    }

    #[test]
    fn placement_goes_where_the_resources_are_and_counts_them_down() {
        use crate::schedule::{
            AppAsk, Ask, Decision, gangs::place_gang, place_drivers, place_executors,
        };
        // `big` has the most free cores but no GPU: GPU work skips it, other work does not.
        let mut offers = vec![
            Offer {
                free_cores: 16,
                cores: 16,
                ..offer("big", 0, 0)
            },
            offer("gpu", 2, 2),
        ];
        let ask = |id: &str, gpus: u32| Ask {
            driver_id: id.into(),
            cores: 1,
            memory_mb: 100,
            resources: named(&[("gpu", gpus)]),
        };
        let plain = Ask {
            resources: Named::default(),
            ..ask("plain", 0)
        };
        let decisions = place_drivers(&mut offers, &[ask("a", 1), plain, ask("b", 2)]);
        let placed = |d: &Decision| match d {
            Decision::Place { worker_id, .. } => worker_id.clone(),
            Decision::Wait { reason, .. } => format!("waits: {reason}"),
        };
        assert_eq!(placed(&decisions[0]), "gpu");
        assert_eq!(placed(&decisions[1]), "big");
        assert_eq!(
            placed(&decisions[2]),
            "waits: needs 2 gpu; the most free on any worker is 1"
        );
        assert_eq!(offers[1].free_resources.get("gpu"), 1);

        // Executors: as many as the GPUs allow, the rest wait naming them.
        let app = AppAsk {
            app_id: "app".into(),
            cores: 1,
            memory_mb: 100,
            wanted: 3,
            gang_size: 0,
            resources: named(&[("gpu", 1)]),
        };
        let p = place_executors(&mut offers, std::slice::from_ref(&app), true).remove(0);
        assert_eq!(p.workers, vec!["gpu".to_string()]);
        let (_, why) = p.waiting.unwrap();
        assert!(
            why.contains("needs 1 gpu; the most free on any worker is 0"),
            "{why}"
        );

        // A gang counts GPUs too: 2 members with a GPU each never fit on 2 GPUs minus 1 held.
        let mut offers = vec![offer("gpu", 2, 1), offer("other", 0, 0)];
        let gang = AppAsk {
            wanted: 2,
            gang_size: 2,
            ..app
        };
        let p = place_gang(&mut offers, &gang, true);
        assert!(p.workers.is_empty());
        let (_, why) = p.waiting.unwrap();
        assert!(why.contains("1 executor fit in the free room now"), "{why}");
    }

    #[test]
    fn a_queue_cap_on_a_named_resource_keeps_the_next_one_waiting() {
        use crate::schedule::{
            Amount, Ask, Decision, QueueDef, QueueTree, Queued, Usage, place_drivers_fairly,
        };
        let tree = QueueTree::new(vec![QueueDef {
            max_named: vec![("gpu".into(), 1)],
            ..QueueDef::named("ml")
        }])
        .unwrap();
        let q = tree.index("ml").unwrap();
        let mut usage = Usage::new(&tree, Amount::new(8, 8192));
        let mut offers = vec![offer("gpu", 2, 2)];
        let ask = |id: &str| Ask {
            driver_id: id.into(),
            cores: 1,
            memory_mb: 100,
            resources: named(&[("gpu", 1)]),
        };
        let queued = [Queued {
            queue: Some(q),
            priority: 0,
            time_limit_ms: 0,
        }; 2];
        let placed = place_drivers_fairly(
            &mut offers,
            &[ask("a"), ask("b")],
            &queued,
            &tree,
            &mut usage,
            &[],
            0,
        );
        assert!(matches!(placed.decisions[0], Decision::Place { .. }));
        match &placed.decisions[1] {
            Decision::Wait { code, reason, .. } => {
                assert_eq!(*code, WaitCode::QueueCap);
                assert_eq!(reason, "queue ml is at its max of 1 gpu (1 in use)");
            }
            other => panic!("{other:?}"),
        }
    }
}
