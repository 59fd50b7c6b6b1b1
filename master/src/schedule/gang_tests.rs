//! Gangs on random clusters, turn after turn with executors ending between turns: no gang is
//! ever partly placed, the accounting of every worker is exact, and a gang that waits did not
//! fit (or its queue's cap stopped it).

use super::{
    gangs::gang_fit,
    queue_tests::{random_offers, random_tree, total},
    *,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

struct App {
    ask: AppAsk,
    size: u32,
    gang: bool,
    queued: Queued,
    /// The offer each live executor is on.
    live: Vec<usize>,
}

#[test]
fn on_random_clusters_no_gang_is_ever_partly_placed_and_accounting_is_exact() {
    let (mut whole, mut waited) = (0, 0);
    for seed in 0..300 {
        let mut rng = StdRng::seed_from_u64(seed);
        let tree = random_tree(&mut rng);
        let mut offers = random_offers(&mut rng, 1);
        // Start from idle workers: every slot taken below is one of these executors.
        for o in &mut offers {
            o.free_cores = o.cores;
            o.free_memory_mb = o.memory_mb;
        }
        let mut apps: Vec<App> = (0..rng.random_range(1..8))
            .map(|i| {
                let size = rng.random_range(1..10);
                App {
                    ask: AppAsk {
                        resources: Default::default(),
                        app_id: format!("app{i}"),
                        cores: rng.random_range(1..4),
                        memory_mb: rng.random_range(1..5) * 256,
                        wanted: size,
                        gang_size: 0,
                    },
                    size,
                    gang: rng.random_bool(0.6),
                    queued: Queued {
                        queue: Some(rng.random_range(0..tree.len())),
                        ..Default::default()
                    },
                    live: Vec::new(),
                }
            })
            .collect();
        for turn in 0..6 {
            // Some executors end between turns.
            for app in &mut apps {
                app.live.retain(|&o| {
                    let ends = rng.random_bool(0.3);
                    if ends {
                        offers[o].free_cores += app.ask.cores;
                        offers[o].free_memory_mb += app.ask.memory_mb;
                    }
                    !ends
                });
            }
            let asks: Vec<AppAsk> = apps
                .iter()
                .map(|a| AppAsk {
                    wanted: a.size - a.live.len() as u32,
                    // Whole while none runs; a member lost from a running gang is replaced alone.
                    gang_size: if a.gang && a.live.is_empty() {
                        a.size
                    } else {
                        0
                    },
                    ..a.ask.clone()
                })
                .collect();
            let queued: Vec<Queued> = apps.iter().map(|a| a.queued).collect();
            let mut usage = Usage::new(&tree, total(&offers));
            for a in &apps {
                if let Some(q) = a.queued.queue {
                    let n = a.live.len() as u64;
                    usage.charge(
                        &tree,
                        q,
                        Amount::new(u64::from(a.ask.cores) * n, a.ask.memory_mb * n),
                    );
                }
            }
            let placements =
                place_executors_fairly(&mut offers, &asks, &queued, &tree, &mut usage, true);
            for p in &placements {
                let i = apps.iter().position(|a| a.ask.app_id == p.app_id).unwrap();
                let ask = &asks[i];
                if ask.gang_size > 0 {
                    assert!(
                        p.workers.is_empty() || p.workers.len() as u32 == ask.wanted,
                        "seed {seed} turn {turn}: gang {} partly placed: {} of {}",
                        p.app_id,
                        p.workers.len(),
                        ask.wanted
                    );
                    if p.workers.is_empty() {
                        waited += 1;
                    } else {
                        whole += 1;
                    }
                }
                for w in &p.workers {
                    let o = offers.iter().position(|o| *o.worker_id == **w).unwrap();
                    apps[i].live.push(o);
                }
            }
            // Exact accounting: each worker's free room is its size less its live executors.
            for (o, offer) in offers.iter().enumerate() {
                let (mut cores, mut memory) = (0, 0);
                for a in &apps {
                    let n = a.live.iter().filter(|&&x| x == o).count() as u64;
                    cores += u64::from(a.ask.cores) * n;
                    memory += a.ask.memory_mb * n;
                }
                assert_eq!(
                    u64::from(offer.cores - offer.free_cores),
                    cores,
                    "seed {seed}"
                );
                assert_eq!(
                    offer.memory_mb - offer.free_memory_mb,
                    memory,
                    "seed {seed}"
                );
            }
            // A gang that waits did not fit in what was left, or its queue's cap stopped it.
            for p in &placements {
                let i = apps.iter().position(|a| a.ask.app_id == p.app_id).unwrap();
                let ask = &asks[i];
                if ask.gang_size == 0 || !p.workers.is_empty() || ask.wanted == 0 {
                    continue;
                }
                let (code, why) = p.waiting.clone().expect("a waiting gang says why");
                assert!(
                    why.starts_with(&format!("gang of {}", ask.gang_size)),
                    "{why}"
                );
                if code != WaitCode::QueueCap {
                    let (fit, _) = gang_fit(&offers, ask);
                    assert!(
                        fit < u64::from(ask.wanted),
                        "seed {seed}: {} waits though {fit} of {} fit: {why}",
                        p.app_id,
                        ask.wanted
                    );
                }
            }
        }
    }
    assert!(
        whole > 100 && waited > 100,
        "the cases cover both: {whole} placed whole, {waited} waited"
    );
}
