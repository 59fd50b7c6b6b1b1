//! What the autoscaler does next, from what the master knows: a pure function, tested alone.
//!
//! Up: the waiting work's need, bin-packed by the worker shape (the state's demand rule), on
//! top of the workers alive, within `[min, max]`; patched at once when above the replicas asked
//! for. Down: only workers idle for the idle time, emptiest and newest first, and never below
//! `min` or below what the waiting work needs; each is drained (nothing new placed) and its pod
//! marked cheapest to delete before the replicas drop. A drained worker that is needed again
//! before its pod is gone is taken back.

use std::time::Duration;

/// A worker as the autoscaler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSeen {
    pub id: String,
    /// Its pod, from the worker's `pod` label; a worker without one is never removed.
    pub pod: Option<String>,
    /// Drivers and executors on it.
    pub work: usize,
    /// How long it has run nothing.
    pub idle_for: Duration,
    /// When it registered (epoch ms): newer ones go first.
    pub registered_at_ms: i64,
    /// Drained by the autoscaler, waiting for its pod to go.
    pub drained: bool,
}

/// What the autoscaler knows this round.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub min: u32,
    pub max: u32,
    /// The replicas the Deployment asks for now.
    pub replicas: u32,
    /// Alive (and drained) workers.
    pub workers: Vec<WorkerSeen>,
    /// Workers more the waiting work needs, of the Deployment's shape.
    pub more_needed: u32,
    pub scale_down_idle: Duration,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Patch the Deployment's replicas.
    ScaleTo { replicas: u32, reason: String },
    /// Drain these workers and mark their pods cheapest to delete, then scale to `replicas`.
    ScaleIn {
        workers: Vec<(String, String)>,
        replicas: u32,
        reason: String,
    },
    /// Drained workers needed again: put them back.
    TakeBack {
        workers: Vec<String>,
        reason: String,
    },
}

/// The steps for this round, in order.
pub fn decide(inputs: &Inputs) -> Vec<Step> {
    let mut steps = Vec::new();
    let serving = inputs.workers.iter().filter(|w| !w.drained).count() as u32;
    let drained: Vec<&WorkerSeen> = inputs.workers.iter().filter(|w| w.drained).collect();
    if inputs.more_needed > 0 && !drained.is_empty() {
        let back: Vec<String> = drained
            .iter()
            .take(inputs.more_needed as usize)
            .map(|w| w.id.clone())
            .collect();
        let n = back.len() as u32;
        steps.push(Step::TakeBack {
            workers: back,
            reason: format!("waiting work needs {} more workers", inputs.more_needed),
        });
        let still = inputs.more_needed - n;
        let want = (serving + n + still).clamp(inputs.min, inputs.max);
        if want > inputs.replicas {
            steps.push(Step::ScaleTo {
                replicas: want,
                reason: format!("waiting work needs {still} more workers"),
            });
        }
        return steps;
    }
    let want = (serving + inputs.more_needed).clamp(inputs.min, inputs.max);
    if inputs.more_needed > 0 || want > inputs.replicas {
        if want > inputs.replicas {
            steps.push(Step::ScaleTo {
                replicas: want,
                reason: if inputs.more_needed > 0 {
                    format!(
                        "waiting work needs {} more workers ({} alive, at most {})",
                        inputs.more_needed, serving, inputs.max
                    )
                } else {
                    format!("below the minimum of {}", inputs.min)
                },
            });
        }
        return steps;
    }
    // Nothing waits: idle workers past the idle time may go, newest first, down to the minimum.
    let mut idle: Vec<&WorkerSeen> = inputs
        .workers
        .iter()
        .filter(|w| !w.drained && w.work == 0 && w.pod.is_some())
        .filter(|w| w.idle_for >= inputs.scale_down_idle)
        .collect();
    idle.sort_by_key(|w| (w.work, std::cmp::Reverse(w.registered_at_ms)));
    // Pods not registered yet are not counted as removable room: the ReplicaSet takes those
    // (not ready) before any other, so counting them could leave fewer than the minimum.
    let removable = inputs.replicas.min(serving).saturating_sub(inputs.min);
    let chosen: Vec<(String, String)> = idle
        .into_iter()
        .take(removable as usize)
        .filter_map(|w| w.pod.clone().map(|pod| (w.id.clone(), pod)))
        .collect();
    if !chosen.is_empty() {
        let replicas = inputs.replicas - chosen.len() as u32;
        steps.push(Step::ScaleIn {
            reason: format!(
                "{} workers idle for {} s or more, nothing waiting",
                chosen.len(),
                inputs.scale_down_idle.as_secs()
            ),
            workers: chosen,
            replicas,
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(n: i64, work: usize, idle_s: u64) -> WorkerSeen {
        WorkerSeen {
            id: format!("w{n}"),
            pod: Some(format!("pod-{n}")),
            work,
            idle_for: Duration::from_secs(idle_s),
            registered_at_ms: n,
            drained: false,
        }
    }

    fn inputs(workers: Vec<WorkerSeen>, replicas: u32, more: u32) -> Inputs {
        Inputs {
            min: 1,
            max: 4,
            replicas,
            workers,
            more_needed: more,
            scale_down_idle: Duration::from_secs(60),
        }
    }

    #[test]
    fn demand_scales_up_at_once_within_the_maximum() {
        let steps = decide(&inputs(vec![worker(1, 1, 0)], 1, 5));
        assert!(
            matches!(&steps[..], [Step::ScaleTo { replicas: 4, .. }]),
            "{steps:?}"
        );
        // Pods already asked for are not asked for again.
        assert!(decide(&inputs(vec![worker(1, 1, 0)], 4, 2)).is_empty());
    }

    #[test]
    fn only_long_idle_workers_go_newest_first_never_below_the_minimum() {
        let workers = vec![
            worker(1, 0, 120),
            worker(2, 0, 120),
            worker(3, 2, 0),
            worker(4, 0, 10),
        ];
        let steps = decide(&inputs(workers, 4, 0));
        let [
            Step::ScaleIn {
                workers, replicas, ..
            },
        ] = &steps[..]
        else {
            panic!("{steps:?}");
        };
        assert_eq!(
            workers.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(),
            ["w2", "w1"]
        );
        assert_eq!(*replicas, 2);
        let lone = decide(&inputs(vec![worker(1, 0, 600)], 1, 0));
        assert!(lone.is_empty(), "the minimum stays: {lone:?}");
    }

    #[test]
    fn nothing_is_removed_while_work_waits_and_drained_workers_are_taken_back_first() {
        let mut drained = worker(2, 0, 120);
        drained.drained = true;
        let steps = decide(&inputs(vec![worker(1, 1, 0), drained], 2, 2));
        assert_eq!(
            steps,
            vec![
                Step::TakeBack {
                    workers: vec!["w2".into()],
                    reason: "waiting work needs 2 more workers".into()
                },
                Step::ScaleTo {
                    replicas: 3,
                    reason: "waiting work needs 1 more workers".into()
                }
            ]
        );
    }

    #[test]
    fn a_worker_without_a_pod_is_never_chosen() {
        let mut bare = worker(2, 0, 600);
        bare.pod = None;
        let steps = decide(&inputs(vec![worker(1, 0, 600), bare], 2, 0));
        let [Step::ScaleIn { workers, .. }] = &steps[..] else {
            panic!("{steps:?}");
        };
        assert_eq!(workers[0].0, "w1");
    }
}
