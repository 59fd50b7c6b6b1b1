//! A short, bounded soak: a random (seeded) mix of submissions, kills, worker restarts and
//! master restarts against real processes, after which the cluster must be consistent: every
//! acknowledged submission is there, each worker's use is exactly what runs on it, every
//! running driver has exactly one live process, and no process is left that nobody runs.

mod support;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use hearth_common::{
    proto::{DriverSpec, WorkerState},
    state_names::{StateName, driver_state},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use support::{Cluster, MasterOptions};

const LIMIT: Duration = Duration::from_secs(30);
const SOAK: Duration = Duration::from_secs(40);

fn spec(rng: &mut StdRng) -> DriverSpec {
    let command = if rng.random_bool(0.5) {
        format!("sleep {}", rng.random_range(1..4))
    } else {
        "exec sleep 300".to_string()
    };
    DriverSpec {
        command: vec!["sh".into(), "-c".into(), command],
        cores: rng.random_range(1..=2),
        memory_mb: 32,
        supervise: rng.random_bool(0.5),
        max_retries: 3,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow (40 s of random faults); ./scripts/test runs it, or: cargo test -- --include-ignored"]
async fn a_random_mix_of_submits_kills_and_restarts_ends_consistent() {
    let mut rng = StdRng::seed_from_u64(0x50a4);
    let mut cluster = Cluster::start_with(MasterOptions {
        extra: vec![
            "--worker-timeout".into(),
            "2s".into(),
            "--recovery-timeout".into(),
            "3s".into(),
        ],
        ..Default::default()
    });
    for _ in 0..3 {
        cluster.add_worker(4, "1g").await;
    }
    let mut acknowledged: Vec<String> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    let mut steps = std::collections::BTreeMap::<&str, usize>::new();
    let started = Instant::now();
    while started.elapsed() < SOAK {
        let client = cluster.client().await;
        let step = match rng.random_range(0..20) {
            0..=9 => {
                match client.submit(spec(&mut rng)).await {
                    Ok(id) => acknowledged.push(id),
                    Err(e) => refused.push(e.to_string()),
                }
                "submit"
            }
            10..=13 => {
                if !acknowledged.is_empty() {
                    let id = &acknowledged[rng.random_range(0..acknowledged.len())];
                    let _ = client.kill(id).await;
                }
                "kill"
            }
            14..=16 => {
                // A worker process dies (SIGKILL) and a new one takes its place.
                let alive: Vec<usize> = (0..cluster.workers.len())
                    .filter(|&i| {
                        cluster.workers[i]
                            .1
                            .child
                            .try_wait()
                            .ok()
                            .flatten()
                            .is_none()
                    })
                    .collect();
                if alive.len() > 1 {
                    let i = alive[rng.random_range(0..alive.len())];
                    cluster.workers[i].1.kill();
                }
                cluster.spawn_worker(4, "1g", &["--kill-grace", "1s"]);
                "worker restart"
            }
            17 => {
                cluster.restart_master(&[]);
                "master restart"
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
                "pause"
            }
        };
        *steps.entry(step).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..150))).await;
    }
    assert!(
        steps.get("master restart").copied().unwrap_or(0) >= 1,
        "{steps:?}"
    );
    assert!(
        steps.get("worker restart").copied().unwrap_or(0) >= 2,
        "{steps:?}"
    );

    // Submissions reach a master that is up (restarts wait for it): nearly all are taken.
    let submits = steps.get("submit").copied().unwrap_or(0);
    assert!(
        acknowledged.len() >= 30 && refused.len() * 10 <= submits,
        "{} of {submits} submissions acknowledged; refused: {refused:#?}",
        acknowledged.len()
    );

    // Let it settle with room for everything: two large workers join, so every driver that
    // waits (new, or to be relaunched) must start, and one that stays waiting is stranded.
    for _ in 0..2 {
        cluster.add_worker(64, "8g").await;
    }
    let client = cluster.client().await;
    let deadline = Instant::now() + LIMIT;
    let settled = loop {
        let drivers = client.drivers().await.expect("drivers");
        let workers = client.workers().await.expect("workers");
        let mut blockers: Vec<String> = workers
            .iter()
            .filter(|w| w.state == WorkerState::Unknown as i32)
            .map(|w| format!("{} UNKNOWN", w.id))
            .collect();
        for d in &drivers {
            let long = d
                .spec
                .as_ref()
                .is_some_and(|s| s.command[2].contains("300"));
            let state = driver_state(d.state).name();
            match state {
                "SUBMITTED" | "RELAUNCHING" | "UNKNOWN" => {}
                "RUNNING" if !long => {}
                _ => continue,
            }
            blockers.push(format!("{} {state} {:?}", d.id, d.history.last()));
        }
        if blockers.is_empty() {
            break drivers;
        }
        assert!(
            Instant::now() < deadline,
            "not settled after {LIMIT:?} (steps {steps:?}): {blockers:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Nothing acknowledged is lost, nothing unasked appears.
    let listed: BTreeSet<&str> = settled.iter().map(|d| d.id.as_str()).collect();
    let asked: BTreeSet<&str> = acknowledged.iter().map(String::as_str).collect();
    assert_eq!(listed, asked, "steps: {steps:?}");

    // Each alive worker's use is exactly what runs on it, and each running driver has exactly
    // one live process, on this machine, while ended ones have none.
    let workers = client.workers().await.expect("workers");
    for w in &workers {
        let on_it: Vec<_> = settled
            .iter()
            .filter(|d| d.worker_id == w.id && driver_state(d.state).name() == "RUNNING")
            .collect();
        if w.state == WorkerState::Alive as i32 {
            let cores: u32 = on_it
                .iter()
                .map(|d| d.spec.as_ref().map_or(0, |s| s.cores))
                .sum();
            assert_eq!(w.cores_used, cores, "{w:?}");
            assert_eq!(w.memory_used_mb, 32 * on_it.len() as u64, "{w:?}");
        } else {
            assert!(on_it.is_empty(), "{w:?} holds {on_it:?}");
            assert_eq!((w.cores_used, w.memory_used_mb), (0, 0), "{w:?}");
        }
    }
    for d in &settled {
        let state = driver_state(d.state).name();
        let expected = usize::from(state == "RUNNING");
        // A process that has just ended or been killed may take a moment to be reaped.
        let copies = support::wait_for(
            &format!("{} ({state}) with {expected} process", d.id),
            LIMIT,
            || {
                let n = support::driver_processes(&d.id).len();
                async move { (n == expected).then_some(n) }
            },
        )
        .await;
        assert_eq!(copies, expected);
    }
    eprintln!("soak steps: {steps:?}; drivers: {}", settled.len());
}
