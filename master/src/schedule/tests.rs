//! The placement rules checked case by case, and the indexed driver placement checked
//! against the plain rule on random clusters.

use super::{
    reasons::{MostFree, wait_reason},
    *,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The placement rule written plainly, one pass over every offer per driver: the
/// reference the indexed `place_drivers` must agree with.
fn place_drivers_plainly(offers: &mut [Offer], asks: &[Ask]) -> Vec<Decision> {
    let largest_cores = offers.iter().map(|o| o.cores).max().unwrap_or(0);
    let largest_memory = offers.iter().map(|o| o.memory_mb).max().unwrap_or(0);
    asks.iter()
        .map(|ask| match best_offer(offers, ask) {
            Some(i) => {
                let offer = &mut offers[i];
                offer.free_cores -= ask.cores;
                offer.free_memory_mb -= ask.memory_mb;
                offer.drivers += 1;
                Decision::Place {
                    driver_id: ask.driver_id.clone(),
                    worker_id: offer.worker_id.to_string(),
                }
            }
            None => {
                let (code, reason) = wait_reason(
                    offers,
                    ask,
                    largest_cores,
                    largest_memory,
                    MostFree::of(offers),
                );
                Decision::Wait {
                    driver_id: ask.driver_id.clone(),
                    code,
                    reason,
                }
            }
        })
        .collect()
}

fn best_offer(offers: &[Offer], ask: &Ask) -> Option<usize> {
    offers
        .iter()
        .enumerate()
        .filter(|(_, o)| o.free_cores >= ask.cores && o.free_memory_mb >= ask.memory_mb)
        .min_by(|(_, a), (_, b)| {
            b.free_cores
                .cmp(&a.free_cores)
                .then(b.free_memory_mb.cmp(&a.free_memory_mb))
                .then(a.drivers.cmp(&b.drivers))
                .then(a.worker_id.cmp(&b.worker_id))
        })
        .map(|(i, _)| i)
}

#[test]
fn indexed_placement_decides_exactly_as_the_plain_rule() {
    let mut rng = StdRng::seed_from_u64(11);
    for round in 0..300 {
        let workers = rng.random_range(0..12);
        let mut offers: Vec<Offer> = (0..workers).map(|i| random_offer(&mut rng, i)).collect();
        for o in &mut offers {
            o.drivers = rng.random_range(0..3);
        }
        let asks: Vec<Ask> = (0..rng.random_range(0..40))
            .map(|n| {
                ask(
                    &format!("d{n}"),
                    rng.random_range(1..6),
                    rng.random_range(1..8) * 512,
                )
            })
            .collect();
        let mut plain_offers = offers.clone();
        let indexed = place_drivers(&mut offers, &asks);
        let plain = place_drivers_plainly(&mut plain_offers, &asks);
        assert_eq!(indexed, plain, "round {round}");
        assert_eq!(offers, plain_offers, "round {round}");
    }
}

pub(super) fn offer(id: &str, cores: u32, memory_mb: u64) -> Offer {
    Offer {
        free_resources: Default::default(),
        resources: Default::default(),
        worker_id: id.into(),
        cores,
        memory_mb,
        free_cores: cores,
        free_memory_mb: memory_mb,
        drivers: 0,
    }
}

pub(super) fn ask(id: &str, cores: u32, memory_mb: u64) -> Ask {
    Ask {
        resources: Default::default(),
        driver_id: id.into(),
        cores,
        memory_mb,
    }
}

fn placed_on(decisions: &[Decision], driver: &str) -> Option<String> {
    decisions.iter().find_map(|d| match d {
        Decision::Place {
            driver_id,
            worker_id,
        } if driver_id == driver => Some(worker_id.clone()),
        _ => None,
    })
}

fn reason_of(decisions: &[Decision], driver: &str) -> String {
    decisions
        .iter()
        .find_map(|d| match d {
            Decision::Wait {
                driver_id, reason, ..
            } if driver_id == driver => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn a_three_core_driver_never_lands_on_a_two_core_worker() {
    let mut offers = vec![offer("w-small", 2, 8192), offer("w-big", 4, 8192)];
    let decisions = place_drivers(&mut offers, &[ask("d1", 3, 512)]);
    assert_eq!(placed_on(&decisions, "d1").as_deref(), Some("w-big"));

    let mut offers = vec![offer("w-small", 2, 8192)];
    let decisions = place_drivers(&mut offers, &[ask("d1", 3, 512)]);
    assert_eq!(
        reason_of(&decisions, "d1"),
        "needs 3 cores; the largest worker offers 2"
    );
}

#[test]
fn memory_must_fit_as_well_as_cores() {
    let mut offers = vec![offer("w-a", 8, 1024), offer("w-b", 1, 8192)];
    let decisions = place_drivers(&mut offers, &[ask("d1", 2, 2048)]);
    assert_eq!(
        reason_of(&decisions, "d1"),
        "needs 2 cores and 2.0 GiB on one worker; no worker offers both"
    );
    let decisions = place_drivers(&mut offers, &[ask("d2", 1, 16384)]);
    assert_eq!(
        reason_of(&decisions, "d2"),
        "needs 16.0 GiB of memory; the largest worker offers 8.0 GiB"
    );
}

#[test]
fn drivers_spread_over_workers() {
    let mut offers = vec![offer("w-a", 4, 4096), offer("w-b", 4, 4096)];
    let decisions = place_drivers(&mut offers, &[ask("d1", 1, 100), ask("d2", 1, 100)]);
    assert_ne!(placed_on(&decisions, "d1"), placed_on(&decisions, "d2"));
}

#[test]
fn a_full_cluster_queues_in_fifo_order_without_head_of_line_blocking() {
    let mut offers = vec![offer("w-a", 2, 4096)];
    let asks = [ask("d1", 2, 100), ask("d2", 2, 100), ask("d3", 8, 100)];
    let decisions = place_drivers(&mut offers, &asks);
    assert_eq!(placed_on(&decisions, "d1").as_deref(), Some("w-a"));
    assert!(reason_of(&decisions, "d2").starts_with("waiting for free slots: needs 2 cores"));
    assert!(reason_of(&decisions, "d3").contains("largest worker offers 2"));

    // a small driver behind a big one that waits still runs
    let mut offers = vec![offer("w-a", 2, 4096)];
    let decisions = place_drivers(&mut offers, &[ask("big", 3, 100), ask("small", 1, 100)]);
    assert!(placed_on(&decisions, "small").is_some());
}

#[test]
fn no_workers_is_said_plainly() {
    let decisions = place_drivers(&mut [], &[ask("d1", 1, 1)]);
    assert!(reason_of(&decisions, "d1").starts_with("no alive workers"));
}

/// A worker of random size, partly used.
fn random_offer(rng: &mut StdRng, i: usize) -> Offer {
    let cores = rng.random_range(1..=16);
    let memory = rng.random_range(1..=64) * 256;
    let mut o = offer(&format!("w{i}"), cores, memory);
    o.free_cores = rng.random_range(0..=cores);
    o.free_memory_mb = rng.random_range(0..=memory);
    o
}

fn app(id: &str, cores: u32, memory_mb: u64, wanted: u32) -> AppAsk {
    AppAsk {
        resources: Default::default(),
        app_id: id.into(),
        gang_size: 0,
        cores,
        memory_mb,
        wanted,
    }
}

fn counts(offers: &[Offer], placement: &AppPlacement) -> Vec<usize> {
    offers
        .iter()
        .map(|o| {
            placement
                .workers
                .iter()
                .filter(|w| ***w == *o.worker_id)
                .count()
        })
        .collect()
}

#[test]
fn spread_out_deals_executors_round_robin() {
    let mut offers = vec![
        offer("w1", 4, 4096),
        offer("w2", 4, 4096),
        offer("w3", 4, 4096),
    ];
    let placed = place_executors(&mut offers, &[app("a", 1, 256, 4)], true);
    assert_eq!(counts(&offers, &placed[0]), [2, 1, 1]);
    assert_eq!(placed[0].waiting, None);
}

#[test]
fn consolidation_fills_one_worker_before_the_next() {
    let mut offers = vec![
        offer("w1", 4, 4096),
        offer("w2", 4, 4096),
        offer("w3", 4, 4096),
    ];
    let placed = place_executors(&mut offers, &[app("a", 1, 256, 6)], false);
    assert_eq!(counts(&offers, &placed[0]), [4, 2, 0]);
}

#[test]
fn executors_need_cores_and_memory_on_one_worker() {
    let mut offers = vec![offer("w-cores", 8, 512), offer("w-mem", 1, 8192)];
    let placed = place_executors(&mut offers, &[app("a", 2, 1024, 1)], true);
    assert!(placed[0].workers.is_empty());
    assert_eq!(
        placed[0].waiting.as_ref().map(|w| w.1.as_str()),
        Some(
            "1 more executor wanted; each needs 2 cores and 1.0 GiB on one worker; no worker offers both"
        )
    );
    let mut offers = vec![offer("w1", 4, 4096)];
    let placed = place_executors(&mut offers, &[app("big", 8, 256, 2)], true);
    assert_eq!(
        placed[0].waiting.as_ref().map(|w| w.1.as_str()),
        Some("2 more executors wanted; each needs 8 cores; the largest worker offers 4")
    );
}

#[test]
fn applications_are_served_in_order_and_never_beyond_what_they_want() {
    let mut offers = vec![offer("w1", 2, 4096), offer("w2", 2, 4096)];
    let placed = place_executors(
        &mut offers,
        &[app("first", 1, 256, 3), app("second", 1, 256, 3)],
        true,
    );
    assert_eq!(placed[0].workers.len(), 3);
    assert_eq!(placed[1].workers.len(), 1);
    assert!(
        placed[1]
            .waiting
            .as_ref()
            .unwrap()
            .1
            .starts_with("2 more executors wanted")
    );
}

/// Random clusters and applications: no over-commit, no application beyond what it wants,
/// and with equal workers and equal executors the executor counts per worker differ by at
/// most one (spread out), for each application and for all of them together.
#[test]
fn randomized_executor_placement_is_exact_and_fair() {
    let mut rng = StdRng::seed_from_u64(0xe8ec);
    for round in 0..2000 {
        let spread_out = rng.random_bool(0.5);
        let equal = rng.random_bool(0.5);
        let workers = rng.random_range(0..8);
        let (eq_cores, eq_mem) = (rng.random_range(1..=16), rng.random_range(1..=32) * 256);
        let mut offers: Vec<Offer> = (0..workers)
            .map(|i| {
                if equal {
                    offer(&format!("w{i}"), eq_cores, eq_mem)
                } else {
                    random_offer(&mut rng, i)
                }
            })
            .collect();
        let before = offers.clone();
        let (ex_cores, ex_mem) = (rng.random_range(1..=4), rng.random_range(1..=8) * 128);
        let apps: Vec<AppAsk> = (0..rng.random_range(0..6))
            .map(|i| {
                if equal {
                    app(&format!("a{i}"), ex_cores, ex_mem, rng.random_range(0..20))
                } else {
                    app(
                        &format!("a{i}"),
                        rng.random_range(1..=8),
                        rng.random_range(1..=8192),
                        rng.random_range(0..20),
                    )
                }
            })
            .collect();
        let placed = place_executors(&mut offers, &apps, spread_out);
        assert_eq!(placed.len(), apps.len());
        let mut free: Vec<(u32, u64)> = before
            .iter()
            .map(|o| (o.free_cores, o.free_memory_mb))
            .collect();
        let mut total = vec![0usize; offers.len()];
        for (p, a) in placed.iter().zip(&apps) {
            assert!(
                p.workers.len() as u32 <= a.wanted,
                "round {round}: over the cap"
            );
            assert_eq!(p.waiting.is_some(), (p.workers.len() as u32) < a.wanted);
            for w in &p.workers {
                let i = before.iter().position(|o| *o.worker_id == **w).unwrap();
                assert!(
                    free[i].0 >= a.cores && free[i].1 >= a.memory_mb,
                    "round {round}"
                );
                free[i].0 -= a.cores;
                free[i].1 -= a.memory_mb;
                total[i] += 1;
            }
            if p.waiting.is_some() {
                assert!(
                    !free.iter().any(|f| f.0 >= a.cores && f.1 >= a.memory_mb),
                    "round {round}: {} waits although a worker had room",
                    a.app_id
                );
            }
            if equal && spread_out {
                let c = counts(&offers, p);
                let (min, max) = (c.iter().min(), c.iter().max());
                if let (Some(min), Some(max)) = (min, max) {
                    let some_full = free.iter().any(|f| f.0 < a.cores || f.1 < a.memory_mb);
                    assert!(
                        max - min <= 1 || some_full,
                        "round {round}: {} spread as {c:?}",
                        a.app_id
                    );
                }
            }
        }
        if equal && spread_out && !total.is_empty() {
            let (min, max) = (total.iter().min().unwrap(), total.iter().max().unwrap());
            assert!(
                max - min <= 1,
                "round {round}: executors per worker {total:?}"
            );
        }
        for (o, f) in offers.iter().zip(&free) {
            assert_eq!((o.free_cores, o.free_memory_mb), *f);
        }
    }
}

/// Random clusters and queues: no worker is ever over-committed, every placed driver fits
/// where it went, and a driver waits only when no worker had room for it at its turn.
#[test]
fn randomized_placements_never_overcommit() {
    let mut rng = StdRng::seed_from_u64(0x4ea47);
    for round in 0..2000 {
        let workers = rng.random_range(0..8);
        let mut offers: Vec<Offer> = (0..workers).map(|i| random_offer(&mut rng, i)).collect();
        let before = offers.clone();
        let asks: Vec<Ask> = (0..rng.random_range(0..40))
            .map(|i| {
                ask(
                    &format!("d{i}"),
                    rng.random_range(1..=20),
                    rng.random_range(1..=20000),
                )
            })
            .collect();
        let decisions = place_drivers(&mut offers, &asks);
        assert_eq!(decisions.len(), asks.len());

        let mut free: Vec<(u32, u64)> = before
            .iter()
            .map(|o| (o.free_cores, o.free_memory_mb))
            .collect();
        for (decision, a) in decisions.iter().zip(&asks) {
            match decision {
                Decision::Place {
                    worker_id,
                    driver_id,
                } => {
                    assert_eq!(driver_id, &a.driver_id);
                    let i = before
                        .iter()
                        .position(|o| *o.worker_id == **worker_id)
                        .unwrap();
                    assert!(free[i].0 >= a.cores, "round {round}: cores over-committed");
                    assert!(
                        free[i].1 >= a.memory_mb,
                        "round {round}: memory over-committed"
                    );
                    free[i].0 -= a.cores;
                    free[i].1 -= a.memory_mb;
                }
                Decision::Wait { reason, .. } => {
                    assert!(!reason.is_empty());
                    assert!(
                        !free.iter().any(|f| f.0 >= a.cores && f.1 >= a.memory_mb),
                        "round {round}: {} waited although a worker had room",
                        a.driver_id
                    );
                }
            }
        }
        for (o, f) in offers.iter().zip(&free) {
            assert_eq!((o.free_cores, o.free_memory_mb), *f);
            assert!(o.free_cores <= o.cores && o.free_memory_mb <= o.memory_mb);
        }
    }
}
