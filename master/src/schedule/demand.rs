//! How many more workers the waiting work needs, for whoever sizes the worker Deployment (an
//! HPA or KEDA reading `/metrics`): the drivers that wait and the executors applications still
//! want, packed first-fit-decreasing onto new workers of one shape. What the scheduler could
//! place on today's free room it has placed already, so everything that waits needs new room.

use super::{AppAsk, Ask};

/// What one worker offers: the shape new workers will have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub cores: u32,
    pub memory_mb: u64,
}

/// The answer: workers to add, and what no worker of the shape could ever hold (it keeps
/// waiting with its reason, and asks for nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Demand {
    pub more_workers: u32,
    pub too_large: usize,
}

/// Packs `drivers` and the executors `apps` want onto as few new workers of `shape` as
/// best-fit-decreasing finds: largest first, each onto the open worker with the fewest cores
/// left that holds it (then the least memory). The open workers are kept ordered by what they
/// have left, so each item costs a few lookups, not a pass over every worker opened so far
/// (with 100,000 drivers waiting that pass made `/metrics` quadratic).
pub fn workers_needed(shape: Shape, drivers: &[Ask], apps: &[AppAsk]) -> Demand {
    use std::collections::{BTreeMap, BTreeSet};
    let mut items: Vec<(u32, u64)> = drivers.iter().map(|d| (d.cores, d.memory_mb)).collect();
    for app in apps {
        items.extend(std::iter::repeat_n(
            (app.cores, app.memory_mb),
            app.wanted as usize,
        ));
    }
    items.sort_unstable_by(|a, b| b.cmp(a));
    let mut demand = Demand::default();
    // Open workers by cores left, then (memory left, number).
    let mut open: BTreeMap<u32, BTreeSet<(u64, usize)>> = BTreeMap::new();
    let mut opened = 0usize;
    for (cores, memory_mb) in items {
        if cores > shape.cores || memory_mb > shape.memory_mb {
            demand.too_large += 1;
            continue;
        }
        let fit = open
            .range(cores..)
            .find_map(|(&c, left)| left.range((memory_mb, 0)..).next().map(|&(m, n)| (c, m, n)));
        let (c, m, n) = match fit {
            Some((c, m, n)) => {
                if let Some(left) = open.get_mut(&c) {
                    left.remove(&(m, n));
                    if left.is_empty() {
                        open.remove(&c);
                    }
                }
                (c, m, n)
            }
            None => {
                opened += 1;
                (shape.cores, shape.memory_mb, opened)
            }
        };
        open.entry(c - cores)
            .or_default()
            .insert((m - memory_mb, n));
    }
    demand.more_workers = u32::try_from(opened).unwrap_or(u32::MAX);
    demand
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape {
        cores: 4,
        memory_mb: 8192,
    };

    fn driver(cores: u32, memory_mb: u64) -> Ask {
        Ask {
            resources: Default::default(),
            driver_id: format!("d-{cores}-{memory_mb}"),
            cores,
            memory_mb,
        }
    }

    #[test]
    fn nothing_waiting_needs_nothing() {
        assert_eq!(workers_needed(SHAPE, &[], &[]), Demand::default());
    }

    #[test]
    fn drivers_pack_by_cores_and_memory() {
        // 3 + 1 fill one worker; 2 + 2 another; the memory-heavy one needs a third.
        let drivers = [
            driver(1, 1024),
            driver(2, 1024),
            driver(3, 1024),
            driver(2, 1024),
            driver(1, 8000),
        ];
        assert_eq!(workers_needed(SHAPE, &drivers, &[]).more_workers, 3);
    }

    #[test]
    fn executors_count_one_each_and_what_fits_no_worker_asks_for_none() {
        let apps = [AppAsk {
            resources: Default::default(),
            app_id: "app".into(),
            gang_size: 0,
            cores: 2,
            memory_mb: 1024,
            wanted: 5,
        }];
        let demand = workers_needed(SHAPE, &[driver(8, 1024), driver(1, 9000)], &apps);
        assert_eq!(
            demand,
            Demand {
                more_workers: 3,
                too_large: 2
            }
        );
    }
}
