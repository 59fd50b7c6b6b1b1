//! The preemption rule checked case by case, and on random clusters: victims free no more than
//! the waiting item lacks plus one victim's worth, the item then fits, and nothing younger than
//! its queue's `min_runtime` or below a guarantee is chosen.

use super::{
    QueueDef,
    preemption::*,
    queues::{Amount, QueueTree, Usage},
};

fn tree() -> QueueTree {
    let q = |name: &str, g: u64| QueueDef {
        guaranteed: Amount::new(g, 0),
        ..QueueDef::named(name)
    };
    QueueTree::new(vec![q("owed", 4), q("lender", 0)]).unwrap_or_default()
}

fn policy(tree: &QueueTree, reclaim: &str, min_runtime_ms: u64) -> Vec<Preempt> {
    (0..tree.len())
        .map(|i| Preempt {
            reclaim: tree.def(i).name == reclaim,
            priority: true,
            min_runtime_ms,
            grace_ms: 1000,
        })
        .collect()
}

fn running(queue: usize, worker: usize, cores: u32, started_ms: i64) -> Running {
    Running {
        queue,
        priority: 0,
        started_ms,
        is_driver: false,
        ending: false,
        pieces: vec![(worker, cores, 100)],
    }
}

fn usage_of(tree: &QueueTree, running: &[Running]) -> Usage {
    let mut usage = Usage::new(tree, Amount::new(8, 8000));
    for r in running {
        usage.charge(tree, r.queue, r.amount());
    }
    usage
}

/// A need in `queue` of `count` pieces of `cores` and 100 MiB.
fn need(queue: usize, priority: i32, cores: u32, count: u32, whole: bool) -> Need {
    Need {
        queue,
        priority,
        cores,
        memory_mb: 100,
        count,
        whole,
    }
}

/// [`choose`] on offers with `free` room and nothing held.
fn decide(
    tree: &QueueTree,
    usage: &mut Usage,
    policy: &[Preempt],
    free: &[(u32, u64)],
    work: &[Running],
    needs: &[Need],
    now_ms: i64,
) -> Vec<Decision> {
    let cluster = Cluster {
        free,
        running: work,
        held: &[],
    };
    choose(tree, usage, policy, &cluster, needs, now_ms)
}

#[test]
fn a_queue_below_its_guarantee_takes_just_enough_from_a_lender_newest_first() {
    let tree = tree();
    let (owed, lender) = (tree.index("owed").unwrap(), tree.index("lender").unwrap());
    // The lender fills both workers with 1-core executors, started at 0..8 s.
    let work: Vec<Running> = (0..8)
        .map(|i| running(lender, (i % 2) as usize, 1, i * 1000))
        .collect();
    let mut usage = usage_of(&tree, &work);
    let need = need(owed, 0, 2, 1, false);
    let decisions = decide(
        &tree,
        &mut usage,
        &policy(&tree, "owed", 0),
        &[(0, 7000), (0, 7000)],
        &work,
        &[need],
        100_000,
    );
    assert_eq!(decisions.len(), 1);
    let d = &decisions[0];
    assert_eq!(d.rule, Rule::Reclaim);
    // Two newest executors on one worker: 7 s is on worker 1, and 5 s is the next there.
    assert_eq!(d.victims, [7, 5]);
    assert_eq!(usage.subtree(owed).cores, 2);
    assert_eq!(usage.subtree(lender).cores, 6);
}

#[test]
fn work_younger_than_min_runtime_is_never_chosen_and_nothing_ends_for_nothing() {
    let tree = tree();
    let (owed, lender) = (tree.index("owed").unwrap(), tree.index("lender").unwrap());
    let work = vec![running(lender, 0, 4, 95_000), running(lender, 1, 4, 10_000)];
    let need = need(owed, 0, 4, 2, true);
    let mut usage = usage_of(&tree, &work);
    // Only the old one may go, and one is not enough for a gang of two: nothing is
    // preempted.
    let decisions = decide(
        &tree,
        &mut usage,
        &policy(&tree, "owed", 60_000),
        &[(0, 7000), (0, 7000)],
        &work,
        std::slice::from_ref(&need),
        100_000,
    );
    assert!(decisions.is_empty(), "{decisions:?}");
    let one = Need {
        count: 1,
        whole: false,
        ..need
    };
    let decisions = decide(
        &tree,
        &mut usage,
        &policy(&tree, "owed", 60_000),
        &[(0, 7000), (0, 7000)],
        &work,
        &[one],
        100_000,
    );
    assert_eq!(decisions[0].victims, [1]);
}

#[test]
fn a_queue_at_its_guarantee_does_not_reclaim_and_a_lender_at_its_own_is_no_victim() {
    let q = |name: &str, g: u64| QueueDef {
        guaranteed: Amount::new(g, 0),
        ..QueueDef::named(name)
    };
    let tree = QueueTree::new(vec![q("owed", 2), q("lender", 4)]).unwrap_or_default();
    let (owed, lender) = (tree.index("owed").unwrap(), tree.index("lender").unwrap());
    let work: Vec<Running> = (0..6).map(|_| running(lender, 0, 1, 0)).collect();
    let need = |cores| need(owed, 0, cores, 1, false);
    let policy = policy(&tree, "owed", 0);
    // 3 cores would take owed past its guarantee of 2.
    let mut usage = usage_of(&tree, &work);
    assert!(decide(&tree, &mut usage, &policy, &[(0, 0)], &work, &[need(3)], 1).is_empty());
    // 2 cores: the lender has 6 of a guarantee of 4, so exactly 2 may go.
    let decisions = decide(&tree, &mut usage, &policy, &[(0, 0)], &work, &[need(2)], 1);
    assert_eq!(decisions[0].victims.len(), 2);
    // Another 2 would take the lender below its guarantee.
    let again = decide(&tree, &mut usage, &policy, &[(0, 0)], &work, &[need(2)], 1);
    assert!(again.iter().all(|d| d.victims.is_empty()), "{again:?}");
}

#[test]
fn room_already_being_freed_is_not_taken_twice() {
    let tree = tree();
    let (owed, lender) = (tree.index("owed").unwrap(), tree.index("lender").unwrap());
    let mut work: Vec<Running> = (0..4).map(|i| running(lender, 0, 2, i)).collect();
    work[3].ending = true;
    let mut usage = usage_of(&tree, &work);
    let need = need(owed, 0, 2, 1, false);
    let decisions = decide(
        &tree,
        &mut usage,
        &policy(&tree, "owed", 0),
        &[(0, 8000)],
        &work,
        &[need],
        10,
    );
    assert!(decisions.is_empty(), "{decisions:?}");
}

#[test]
fn priority_preempts_lower_priority_in_the_same_queue_executors_first() {
    let tree = tree();
    let lender = tree.index("lender").unwrap();
    let mut work = vec![running(lender, 0, 2, 0), running(lender, 0, 2, 0)];
    work[0].is_driver = true;
    work[1].priority = 5;
    let mut usage = usage_of(&tree, &work);
    let need = need(lender, 3, 2, 1, false);
    let decisions = decide(
        &tree,
        &mut usage,
        &policy(&tree, "none", 0),
        &[(0, 8000)],
        &work,
        &[need],
        10,
    );
    // The executor has priority 5, above the need's 3: only the driver (0) may go.
    assert_eq!(decisions[0].rule, Rule::Priority);
    assert_eq!(decisions[0].victims, [0]);
}

/// Random full clusters of executors and drivers in a lending queue, random needs of a queue
/// owed its guarantee: whenever victims are chosen they free no more than the need lacked
/// plus one victim's worth, the need then fits, none is younger than `min_runtime`, and the
/// lender stays at or above its guarantee.
#[test]
fn on_random_clusters_victims_free_just_enough_and_only_what_is_allowed() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut decided = 0;
    for seed in 0..400 {
        let mut rng = StdRng::seed_from_u64(seed);
        let lender_guarantee = rng.random_range(0..8);
        let tree = QueueTree::new(vec![
            QueueDef {
                guaranteed: Amount::new(64, 0),
                ..QueueDef::named("owed")
            },
            QueueDef {
                guaranteed: Amount::new(lender_guarantee, 0),
                ..QueueDef::named("lender")
            },
        ])
        .unwrap_or_default();
        let (owed, lender) = (tree.index("owed").unwrap(), tree.index("lender").unwrap());
        let workers = rng.random_range(1..6);
        let mut work = Vec::new();
        let mut free = Vec::new();
        for w in 0..workers {
            let mut left: u32 = rng.random_range(4..17);
            while left > 0 {
                let cores = rng.random_range(1..=left.min(4));
                let mut r = running(lender, w, cores, rng.random_range(0..100_000));
                r.is_driver = rng.random_bool(0.3);
                r.priority = rng.random_range(0..3);
                work.push(r);
                left -= cores;
                if rng.random_bool(0.1) {
                    break;
                }
            }
            free.push((left, 7000));
        }
        let need = need(
            owed,
            0,
            rng.random_range(1..9),
            rng.random_range(1..3),
            false,
        );
        let min_runtime_ms = 30_000;
        let mut usage = usage_of(&tree, &work);
        let lender_before = usage.subtree(lender).cores;
        let decisions = decide(
            &tree,
            &mut usage,
            &policy(&tree, "owed", min_runtime_ms),
            &free,
            &work,
            std::slice::from_ref(&need),
            100_000,
        );
        for d in &decisions {
            if d.victims.is_empty() {
                continue;
            }
            decided += 1;
            let freed: u64 = d.victims.iter().map(|&v| work[v].amount().cores).sum();
            let largest = d
                .victims
                .iter()
                .map(|&v| work[v].amount().cores)
                .max()
                .unwrap_or(0);
            let wanted = u64::from(need.cores) * u64::from(need.count);
            assert!(
                freed <= wanted + largest,
                "seed {seed}: freed {freed} for {wanted} (largest victim {largest})"
            );
            assert_eq!(d.places.len() as u32, need.count, "seed {seed}");
            for &v in &d.victims {
                assert!(
                    100_000 - work[v].started_ms >= min_runtime_ms as i64,
                    "seed {seed}"
                );
            }
            assert!(
                lender_before - freed >= lender_guarantee,
                "seed {seed}: the lender went below its guarantee"
            );
            // The need fits where it was placed once the victims are gone.
            let mut room: Vec<(u64, u64)> = free.iter().map(|&(c, m)| (u64::from(c), m)).collect();
            for &v in &d.victims {
                for &(w, c, m) in &work[v].pieces {
                    room[w].0 += u64::from(c);
                    room[w].1 += m;
                }
            }
            for &w in &d.places {
                assert!(
                    room[w].0 >= u64::from(need.cores),
                    "seed {seed}: no room at {w}"
                );
                room[w].0 -= u64::from(need.cores);
            }
        }
    }
    assert!(decided > 50, "the cases preempt at all: {decided}");
}
