//! The queue rules checked case by case, then on random clusters after every step: no cap
//! exceeded, accounting exact, no slot idle while a fitting item under its caps waits, every
//! waiting item with a reason.

use super::{
    tests::{ask, offer},
    *,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn queue(name: &str, weight: u32, guaranteed: (u64, u64), max: Option<(u64, u64)>) -> QueueDef {
    QueueDef {
        name: name.to_string(),
        weight,
        guaranteed: Amount::new(guaranteed.0, guaranteed.1),
        max: max.map(|(c, m)| Amount::new(c, m)),
        ..QueueDef::named(name)
    }
}

pub(super) fn total(offers: &[Offer]) -> Amount {
    let mut t = Amount::default();
    for o in offers {
        t.add(Amount::new(u64::from(o.cores), o.memory_mb));
    }
    t
}

/// `n` one-core asks in queue `q`, named `{prefix}{i}`.
fn backlog(tree: &QueueTree, q: &str, prefix: &str, n: usize) -> (Vec<Ask>, Vec<Queued>) {
    let queue = tree.index(q);
    (0..n)
        .map(|i| {
            (
                ask(&format!("{prefix}{i}"), 1, 100),
                Queued {
                    queue,
                    ..Default::default()
                },
            )
        })
        .unzip()
}

/// Places with no reservations held.
fn place(
    offers: &mut [Offer],
    asks: &[Ask],
    queued: &[Queued],
    tree: &QueueTree,
    usage: &mut Usage,
) -> Vec<Decision> {
    place_drivers_fairly(offers, asks, queued, tree, usage, &[], 0).decisions
}

fn placed(decisions: &[Decision]) -> Vec<&str> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Place { driver_id, .. } => Some(driver_id.as_str()),
            Decision::Wait { .. } => None,
        })
        .collect()
}

fn wait_of<'a>(decisions: &'a [Decision], id: &str) -> Option<(WaitCode, &'a str)> {
    decisions.iter().find_map(|d| match d {
        Decision::Wait {
            driver_id,
            code,
            reason,
        } if driver_id == id => Some((*code, reason.as_str())),
        _ => None,
    })
}

#[test]
fn dotted_names_make_a_tree_and_default_is_always_there() {
    let tree = QueueTree::new(vec![
        queue("ml", 1, (0, 0), None),
        queue("ml.training", 1, (0, 0), None),
    ])
    .unwrap();
    assert_eq!(
        tree.parent(tree.index("ml.training").unwrap()),
        tree.index("ml")
    );
    assert!(tree.index("default").is_some());
    let err = QueueTree::new(vec![queue("ml.training", 1, (0, 0), None)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "queue ml.training: its parent ml is not defined; define ml too"
    );
}

#[test]
fn a_queue_at_its_max_waits_with_the_cap_named_while_another_runs() {
    let tree = QueueTree::new(vec![
        queue("capped", 1, (0, 0), Some((2, u64::MAX))),
        queue("free", 1, (0, 0), None),
    ])
    .unwrap();
    let mut offers = vec![offer("w1", 8, 8192)];
    let (mut asks, mut queued) = backlog(&tree, "capped", "c", 4);
    let (more, more_q) = backlog(&tree, "free", "f", 2);
    asks.extend(more);
    queued.extend(more_q);
    let mut usage = Usage::new(&tree, total(&offers));
    let decisions = place(&mut offers, &asks, &queued, &tree, &mut usage);
    let mut got = placed(&decisions);
    got.sort();
    assert_eq!(got, ["c0", "c1", "f0", "f1"]);
    let (code, reason) = wait_of(&decisions, "c2").unwrap();
    assert_eq!(code, WaitCode::QueueCap);
    assert!(
        reason.contains("queue capped is at its max of 2 cores"),
        "{reason}"
    );
    assert_eq!(usage.subtree(tree.index("capped").unwrap()).cores, 2);
}

#[test]
fn a_parents_cap_bounds_its_children_together() {
    let tree = QueueTree::new(vec![
        queue("ml", 1, (0, 0), Some((3, u64::MAX))),
        queue("ml.a", 1, (0, 0), None),
        queue("ml.b", 1, (0, 0), None),
    ])
    .unwrap();
    let mut offers = vec![offer("w1", 16, 16384)];
    let (mut asks, mut queued) = backlog(&tree, "ml.a", "a", 3);
    let (more, more_q) = backlog(&tree, "ml.b", "b", 3);
    asks.extend(more);
    queued.extend(more_q);
    let mut usage = Usage::new(&tree, total(&offers));
    let decisions = place(&mut offers, &asks, &queued, &tree, &mut usage);
    assert_eq!(placed(&decisions).len(), 3);
    let waits: Vec<_> = decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Wait { code, reason, .. } => Some((*code, reason.clone())),
            Decision::Place { .. } => None,
        })
        .collect();
    assert_eq!(waits.len(), 3);
    assert!(
        waits
            .iter()
            .all(|(c, r)| *c == WaitCode::QueueCap && r.contains("queue ml is at its max"))
    );
}

#[test]
fn weights_one_and_three_share_a_full_cluster_one_to_three() {
    let tree = QueueTree::new(vec![
        queue("a", 1, (0, 0), None),
        queue("b", 3, (0, 0), None),
    ])
    .unwrap();
    let mut offers = vec![offer("w1", 8, 8192), offer("w2", 8, 8192)];
    // The lighter queue submitted first, and more: order alone would give it everything.
    let (mut asks, mut queued) = backlog(&tree, "a", "a", 40);
    let (more, more_q) = backlog(&tree, "b", "b", 40);
    asks.extend(more);
    queued.extend(more_q);
    let mut usage = Usage::new(&tree, total(&offers));
    place(&mut offers, &asks, &queued, &tree, &mut usage);
    let a = usage.subtree(tree.index("a").unwrap()).cores;
    let b = usage.subtree(tree.index("b").unwrap()).cores;
    assert_eq!((a, b), (4, 12));
}

#[test]
fn a_queue_below_its_guarantee_is_served_first() {
    let tree = QueueTree::new(vec![
        queue("big", 10, (0, 0), None),
        queue("small", 1, (3, 0), None),
    ])
    .unwrap();
    let mut offers = vec![offer("w1", 4, 8192)];
    let mut usage = Usage::new(&tree, total(&offers));
    let (mut asks, mut queued) = backlog(&tree, "big", "big", 4);
    let (more, more_q) = backlog(&tree, "small", "small", 4);
    asks.extend(more);
    queued.extend(more_q);
    let decisions = place(&mut offers, &asks, &queued, &tree, &mut usage);
    let mut got = placed(&decisions);
    got.sort();
    // Three to reach the guarantee; the fourth slot goes by weight, to `big`.
    assert_eq!(got, ["big0", "small0", "small1", "small2"]);
}

#[test]
fn within_a_queue_priority_then_submission_order() {
    let tree = QueueTree::default();
    let q = tree.index(DEFAULT_QUEUE);
    let asks = vec![
        ask("low", 1, 100),
        ask("high", 1, 100),
        ask("high2", 1, 100),
    ];
    let queued = [
        Queued {
            queue: q,
            priority: 0,
            ..Default::default()
        },
        Queued {
            queue: q,
            priority: 5,
            ..Default::default()
        },
        Queued {
            queue: q,
            priority: 5,
            ..Default::default()
        },
    ];
    let mut offers = vec![offer("w1", 2, 8192)];
    let mut usage = Usage::new(&tree, total(&offers));
    let decisions = place(&mut offers, &asks, &queued, &tree, &mut usage);
    assert_eq!(placed(&decisions), ["high", "high2"]);
    assert_eq!(wait_of(&decisions, "low").unwrap().0, WaitCode::NoFreeSlots);
}

#[test]
fn one_that_cannot_fit_does_not_block_smaller_ones_and_says_why() {
    let tree = QueueTree::default();
    let q = tree.index(DEFAULT_QUEUE);
    let asks = vec![
        ask("huge", 16, 100),
        ask("split", 3, 100),
        ask("small", 1, 100),
    ];
    let queued = [Queued {
        queue: q,
        ..Default::default()
    }; 3];
    let mut offers = vec![offer("w1", 2, 8192), offer("w2", 2, 8192)];
    let mut usage = Usage::new(&tree, total(&offers));
    let decisions = place(&mut offers, &asks, &queued, &tree, &mut usage);
    assert_eq!(placed(&decisions), ["small"]);
    assert_eq!(wait_of(&decisions, "huge").unwrap().0, WaitCode::TooLarge);
    assert_eq!(wait_of(&decisions, "split").unwrap().0, WaitCode::TooLarge);
    // Room for three cores in total, but not on one worker.
    let asks = vec![ask("spread", 2, 100)];
    let mut offers = vec![offer("w1", 2, 8192), offer("w2", 2, 8192)];
    offers[0].free_cores = 1;
    offers[1].free_cores = 1;
    let decisions = place(&mut offers, &asks, &queued[..1], &tree, &mut usage);
    assert_eq!(
        wait_of(&decisions, "spread").unwrap().0,
        WaitCode::Fragmented
    );
}

#[test]
fn work_in_a_removed_queue_waits_with_that_reason() {
    let tree = QueueTree::default();
    let asks = vec![ask("orphan", 1, 100)];
    let queued = [Queued::default()];
    let mut offers = vec![offer("w1", 2, 8192)];
    let mut usage = Usage::new(&tree, total(&offers));
    let decisions = place(&mut offers, &asks, &queued, &tree, &mut usage);
    assert_eq!(
        wait_of(&decisions, "orphan").unwrap().0,
        WaitCode::QueueUnknown
    );
}

#[test]
fn executors_stop_at_their_queues_cap() {
    let tree = QueueTree::new(vec![queue("capped", 1, (0, 0), Some((3, u64::MAX)))]).unwrap();
    let apps = vec![AppAsk {
        resources: Default::default(),
        app_id: "app".into(),
        gang_size: 0,
        cores: 1,
        memory_mb: 100,
        wanted: 5,
    }];
    let queued = [Queued {
        queue: tree.index("capped"),
        ..Default::default()
    }];
    let mut offers = vec![offer("w1", 8, 8192)];
    let mut usage = Usage::new(&tree, total(&offers));
    let placements = place_executors_fairly(&mut offers, &apps, &queued, &tree, &mut usage, true);
    assert_eq!(placements[0].workers.len(), 3);
    let (code, reason) = placements[0].waiting.clone().unwrap();
    assert_eq!(code, WaitCode::QueueCap);
    assert!(reason.starts_with("2 more executors wanted"), "{reason}");
    assert_eq!(usage.subtree(tree.index("capped").unwrap()).cores, 3);
}

/// A random tree of up to 8 queues over 2 levels, some with caps and guarantees.
pub(super) fn random_tree(rng: &mut StdRng) -> QueueTree {
    let mut defs = Vec::new();
    for top in 0..rng.random_range(1..4) {
        let name = format!("q{top}");
        let cap = rng
            .random_bool(0.5)
            .then(|| (rng.random_range(4..12), rng.random_range(512..16384)));
        defs.push(queue(
            &name,
            rng.random_range(1..5),
            (rng.random_range(0..4), 0),
            cap,
        ));
        for child in 0..rng.random_range(0..3) {
            let cap = rng
                .random_bool(0.3)
                .then(|| (rng.random_range(1..8), u64::MAX));
            defs.push(queue(
                &format!("{name}.c{child}"),
                rng.random_range(1..5),
                (0, 0),
                cap,
            ));
        }
    }
    QueueTree::new(defs).unwrap()
}

/// Up to 5 workers (at least `fewest`) of random sizes, each partly taken.
pub(super) fn random_offers(rng: &mut StdRng, fewest: usize) -> Vec<Offer> {
    (0..rng.random_range(fewest..6))
        .map(|i| {
            let mut o = offer(
                &format!("w{i}"),
                rng.random_range(1..9),
                rng.random_range(1..9) * 1024,
            );
            o.free_cores = rng.random_range(0..=o.cores);
            o.free_memory_mb = rng.random_range(0..=o.memory_mb);
            o
        })
        .collect()
}

/// `n` drivers `d0`, `d1`, ... of 1 to 5 cores and 512 MiB to 2.5 GiB.
fn random_asks(rng: &mut StdRng, n: usize) -> Vec<Ask> {
    (0..n)
        .map(|i| {
            ask(
                &format!("d{i}"),
                rng.random_range(1..6),
                rng.random_range(1..6) * 512,
            )
        })
        .collect()
}

#[test]
fn on_random_clusters_caps_hold_accounting_is_exact_and_no_fitting_item_idles() {
    let mut rng = StdRng::seed_from_u64(0x0fa1_5ea5);
    for round in 0..400 {
        let tree = random_tree(&mut rng);
        let mut offers: Vec<Offer> = random_offers(&mut rng, 0);
        // What already runs, charged to random queues, within what is taken on the workers.
        let mut usage = Usage::new(&tree, total(&offers));
        for o in &offers {
            let q = rng.random_range(0..tree.len());
            usage.charge(
                &tree,
                q,
                Amount::new(
                    u64::from(o.cores - o.free_cores),
                    o.memory_mb - o.free_memory_mb,
                ),
            );
        }
        let before: Vec<Amount> = (0..tree.len()).map(|q| usage.subtree(q)).collect();
        let n = rng.random_range(0..30);
        let asks = random_asks(&mut rng, n);
        let queued: Vec<Queued> = (0..n)
            .map(|_| Queued {
                queue: (!rng.random_bool(0.05)).then(|| rng.random_range(0..tree.len())),
                priority: rng.random_range(-2..3),
                time_limit_ms: if rng.random_bool(0.3) {
                    rng.random_range(1..5_000)
                } else {
                    0
                },
            })
            .collect();
        let free_before: (u64, u64) = offers.iter().fold((0, 0), |t, o| {
            (t.0 + u64::from(o.free_cores), t.1 + o.free_memory_mb)
        });
        let decisions = place(&mut offers, &asks, &queued, &tree, &mut usage);
        assert_eq!(decisions.len(), asks.len(), "round {round}");

        // Accounting: what the workers gave is what was placed is what the queues were charged.
        let mut given = (0u64, 0u64);
        let mut charged = vec![Amount::default(); tree.len()];
        for (idx, d) in decisions.iter().enumerate() {
            let a = &asks[idx];
            match d {
                Decision::Place { driver_id, .. } => {
                    assert_eq!(
                        driver_id, &a.driver_id,
                        "round {round}: decisions out of order"
                    );
                    given.0 += u64::from(a.cores);
                    given.1 += a.memory_mb;
                    let q = queued[idx].queue.expect("placed in a known queue");
                    for anc in tree.lineage(q) {
                        charged[anc].add(Amount::new(u64::from(a.cores), a.memory_mb));
                    }
                }
                Decision::Wait {
                    driver_id, reason, ..
                } => {
                    assert_eq!(
                        driver_id, &a.driver_id,
                        "round {round}: decisions out of order"
                    );
                    assert!(!reason.is_empty(), "round {round}: a wait without a reason");
                }
            }
        }
        let free_after: (u64, u64) = offers.iter().fold((0, 0), |t, o| {
            (t.0 + u64::from(o.free_cores), t.1 + o.free_memory_mb)
        });
        assert_eq!(
            (free_before.0 - free_after.0, free_before.1 - free_after.1),
            given,
            "round {round}"
        );
        for q in 0..tree.len() {
            let mut expected = before[q];
            expected.add(charged[q]);
            assert_eq!(usage.subtree(q), expected, "round {round}: queue {q}");
            // No cap exceeded by what was placed (a queue over its cap already gets nothing).
            if let Some(max) = tree.def(q).max
                && charged[q] != Amount::default()
            {
                assert!(
                    usage.subtree(q).cores <= max.cores
                        && usage.subtree(q).memory_mb <= max.memory_mb,
                    "round {round}: {} over its cap",
                    tree.def(q).name
                );
            }
        }
        // Work-conserving: a waiting item that fits a worker's room now was held by a cap (or
        // its queue is gone).
        for (idx, d) in decisions.iter().enumerate() {
            if let Decision::Wait { code, .. } = d {
                let a = &asks[idx];
                let fits = offers
                    .iter()
                    .any(|o| o.free_cores >= a.cores && o.free_memory_mb >= a.memory_mb);
                if fits {
                    assert!(
                        matches!(code, WaitCode::QueueCap | WaitCode::QueueUnknown),
                        "round {round}: {} fits but waits with {code:?}",
                        a.driver_id
                    );
                }
            }
        }
    }
}

fn hold(worker: usize, driver: &str, ready_at_ms: Option<i64>) -> reservations::Hold {
    reservations::Hold {
        worker,
        driver_id: driver.to_string(),
        ready_at_ms,
    }
}

#[test]
fn held_room_goes_to_its_holder_or_to_work_that_ends_before_it_is_needed() {
    let tree = QueueTree::default();
    let q = tree.index(DEFAULT_QUEUE);
    let queued = |limit: u64| Queued {
        queue: q,
        time_limit_ms: limit,
        ..Default::default()
    };
    // w1 has 2 of 4 cores free, held for `big`, which needs all 4 by t=1000.
    let mut offers = vec![offer("w1", 4, 8192), offer("w2", 1, 8192)];
    offers[0].free_cores = 2;
    let asks = vec![
        ask("big", 4, 100),
        ask("small", 1, 100),
        ask("quick", 1, 100),
        ask("slow", 1, 100),
        ask("endless", 1, 100),
    ];
    let queued = [queued(0), queued(0), queued(500), queued(5_000), queued(0)];
    let mut usage = Usage::new(&tree, total(&offers));
    let holds = [hold(0, "big", Some(1_000))];
    let out = place_drivers_fairly(&mut offers, &asks, &queued, &tree, &mut usage, &holds, 0);
    let d = &out.decisions;
    // The free core elsewhere goes to the first in line; `quick` ends by t=500 and backfills.
    assert_eq!(placed(d), ["small", "quick"]);
    assert!(matches!(&d[2], Decision::Place { worker_id, .. } if worker_id == "w1"));
    assert_eq!(wait_of(d, "big").unwrap().0, WaitCode::NoFreeSlots);
    for id in ["slow", "endless"] {
        let (code, reason) = wait_of(d, id).unwrap();
        assert_eq!(code, WaitCode::Reserved, "{id}");
        assert!(reason.contains("held for big"), "{reason}");
    }
    // What is still held stays hidden from what is placed after (the executors).
    assert_eq!(out.withheld, [(0, 1, 8092)]);
    assert_eq!((offers[0].free_cores, offers[0].free_memory_mb), (0, 0));

    // Once the room is there, the holder takes it before anyone.
    let mut offers = vec![offer("w1", 4, 8192)];
    let asks = vec![ask("small", 1, 100), ask("big", 4, 100)];
    let queued = [Queued {
        queue: q,
        ..Default::default()
    }; 2];
    let mut usage = Usage::new(&tree, total(&offers));
    let holds = [hold(0, "big", None)];
    let out = place_drivers_fairly(&mut offers, &asks, &queued, &tree, &mut usage, &holds, 0);
    assert_eq!(placed(&out.decisions), ["big"]);
    assert!(out.withheld.is_empty());
}

#[test]
fn on_random_clusters_with_reservations_held_room_is_used_only_as_allowed() {
    let mut rng = StdRng::seed_from_u64(0x5e5e_7e5e);
    for round in 0..400 {
        let tree = random_tree(&mut rng);
        let mut offers: Vec<Offer> = random_offers(&mut rng, 1);
        let before = offers.clone();
        let n = rng.random_range(1..30);
        let asks = random_asks(&mut rng, n);
        let queued: Vec<Queued> = (0..n)
            .map(|_| Queued {
                queue: Some(rng.random_range(0..tree.len())),
                priority: rng.random_range(-2..3),
                time_limit_ms: if rng.random_bool(0.5) {
                    rng.random_range(1..5_000)
                } else {
                    0
                },
            })
            .collect();
        // Up to two holds, on distinct workers, for distinct drivers.
        let mut holds = Vec::new();
        for w in 0..offers.len().min(rng.random_range(0..3)) {
            let holder = format!("d{}", rng.random_range(0..n));
            if holds
                .iter()
                .any(|h: &reservations::Hold| h.driver_id == holder)
            {
                continue;
            }
            let ready = rng.random_bool(0.5).then(|| rng.random_range(0..6_000));
            holds.push(hold(w, &holder, ready));
        }
        let now = 1_000;
        let mut usage = Usage::new(&tree, total(&offers));
        let out = place_drivers_fairly(&mut offers, &asks, &queued, &tree, &mut usage, &holds, now);
        let mut given = (0u64, 0u64);
        for (i, d) in out.decisions.iter().enumerate() {
            let a = &asks[i];
            match d {
                Decision::Place { worker_id, .. } => {
                    given.0 += u64::from(a.cores);
                    given.1 += a.memory_mb;
                    // On a held worker: its holder, or work done before the room is needed.
                    if let Some(h) = holds
                        .iter()
                        .find(|h| *offers[h.worker].worker_id == **worker_id)
                        && h.driver_id != a.driver_id
                    {
                        // Held for the turn: its holder did not fit there at once.
                        let held = out.withheld.iter().any(|w| w.0 == h.worker);
                        if held {
                            let limit = queued[i].time_limit_ms;
                            assert!(
                                limit > 0 && h.ready_at_ms.is_some_and(|r| now + limit as i64 <= r),
                                "round {round}: {} took room held for {}",
                                a.driver_id,
                                h.driver_id
                            );
                        }
                    }
                }
                Decision::Wait { code, reason, .. } => {
                    assert!(!reason.is_empty(), "round {round}");
                    let fits_open = offers
                        .iter()
                        .any(|o| o.free_cores >= a.cores && o.free_memory_mb >= a.memory_mb);
                    if fits_open {
                        assert!(
                            *code == WaitCode::QueueCap,
                            "round {round}: {} fits open room but waits with {code:?}",
                            a.driver_id
                        );
                    }
                    if *code == WaitCode::Reserved {
                        assert!(
                            out.withheld
                                .iter()
                                .any(|w| w.1 >= a.cores && w.2 >= a.memory_mb)
                                || holds.iter().any(|h| {
                                    let o = &before[h.worker];
                                    o.free_cores >= a.cores && o.free_memory_mb >= a.memory_mb
                                }),
                            "round {round}: {} waits for held room it would not fit",
                            a.driver_id
                        );
                    }
                }
            }
        }
        // Accounting: room given plus room still held is what the workers had free.
        let free = |os: &[Offer]| {
            os.iter().fold((0u64, 0u64), |t, o| {
                (t.0 + u64::from(o.free_cores), t.1 + o.free_memory_mb)
            })
        };
        let (after, was) = (free(&offers), free(&before));
        let held = out
            .withheld
            .iter()
            .fold((0u64, 0u64), |t, w| (t.0 + u64::from(w.1), t.1 + w.2));
        assert_eq!(
            (was.0 - after.0 - held.0, was.1 - after.1 - held.1),
            given,
            "round {round}"
        );
    }
}

#[test]
fn a_queue_that_just_ran_a_burst_yields_to_one_that_did_not() {
    let tree = QueueTree::new(vec![
        queue("burst", 1, (0, 0), None),
        queue("quiet", 1, (0, 0), None),
    ])
    .unwrap();
    let (mut asks, mut queued) = backlog(&tree, "burst", "b", 2);
    let (more, more_q) = backlog(&tree, "quiet", "q", 2);
    asks.extend(more);
    queued.extend(more_q);
    let mut recent = vec![0.0; tree.len()];
    recent[tree.index("burst").unwrap()] = 0.8;
    // Nobody holds anything now; only the recent past tells them apart.
    let mut offers = vec![offer("w1", 2, 8192)];
    let mut usage = Usage::new(&tree, total(&offers)).with_recent(recent);
    let decisions = place(&mut offers, &asks, &queued, &tree, &mut usage);
    assert_eq!(placed(&decisions), ["q0", "q1"]);
    // Without the past, the two share.
    let mut offers = vec![offer("w1", 2, 8192)];
    let mut usage = Usage::new(&tree, total(&offers));
    let decisions = place(&mut offers, &asks, &queued, &tree, &mut usage);
    assert_eq!(placed(&decisions), ["b0", "q0"]);
}
