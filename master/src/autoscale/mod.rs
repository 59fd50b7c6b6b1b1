//! Workers that follow demand: with `--autoscale`, the master sizes its worker Deployment.
//!
//! A task watches the published snapshots (and a 1 s tick) and, each round (at most every
//! 300 ms; the Deployment read at most every 5 s, and at once after a patch of its own),
//! works out what the waiting work needs in workers of the Deployment's shape
//! ([`decide`]), and acts: it patches the `scale` subresource at once for more workers; for
//! fewer, it drains the workers idle past `--scale-down-idle` (nothing new is placed on them),
//! marks their pods cheapest to delete and every busy pod dearer by the work on it, and only
//! then lowers the replicas, so the ReplicaSet removes exactly those pods, whose workers leave
//! gracefully. A drained worker needed again before its pod is gone is taken back.

pub mod decide;
pub mod deployment;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use hearth_common::{Shutdown, proto::WorkerState};
use tokio::time::Instant;

pub use crate::config::AutoscaleConfig;
use crate::{actor::MasterHandle, command::Command, scaling_status::Status};
use decide::{Inputs, Step, WorkerSeen};
use deployment::WorkerDeployment;

/// Rounds are at least this far apart, however often the state changes.
const ROUND_GAP: Duration = Duration::from_millis(300);

/// The Deployment is read again after this long (at once after a patch of ours).
const READ_AGAIN: Duration = Duration::from_secs(5);

/// A drained worker whose pod is still there after this long is taken back: the ReplicaSet
/// removed another pod (one not ready yet goes before any other).
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Runs the autoscaler until `shutdown`.
pub async fn run(
    master: MasterHandle,
    config: AutoscaleConfig,
    status: Arc<Status>,
    shutdown: Shutdown,
) {
    status.lock().config = Some(config.clone());
    let target = loop {
        match WorkerDeployment::connect(&config.namespace, &config.deployment).await {
            Ok(target) => break target,
            Err(e) => {
                status.lock().trouble = Some(format!("cannot reach the Kubernetes API: {e}"));
                tracing::warn!(error = %e, "autoscaler: cannot reach the Kubernetes API; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    tracing::info!(namespace = %config.namespace, deployment = %config.deployment,
        min = config.min_workers, max = config.max_workers, "autoscaler started");
    let mut changes = master.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = Round::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            changed = changes.changed() => if changed.is_err() { return },
        }
        // Several snapshots in a burst make one round.
        changes.borrow_and_update();
        let started = Instant::now();
        if let Err(e) = round.run(&master, &config, &target, &status).await {
            round.read = None;
            status.lock().trouble = Some(e.to_string());
            tracing::warn!(error = %e, "autoscaler: a Kubernetes API call failed");
        } else {
            status.lock().trouble = None;
        }
        tokio::time::sleep_until(started + ROUND_GAP).await;
    }
}

/// What the autoscaler remembers between rounds.
#[derive(Default)]
struct Round {
    /// Since when each worker has run nothing.
    idle_since: BTreeMap<String, Instant>,
    /// A scale-up not yet met: when its demand was first seen, and the ALIVE count it wants.
    pending_up: Option<(Instant, u32)>,
    /// The Deployment as last read, and when.
    read: Option<(Instant, deployment::Read)>,
    /// When each worker drained by the autoscaler was drained.
    drained_at: BTreeMap<String, Instant>,
}

impl Round {
    async fn run(
        &mut self,
        master: &MasterHandle,
        config: &AutoscaleConfig,
        target: &WorkerDeployment,
        status: &Status,
    ) -> Result<(), kube::Error> {
        let snap = master.snapshot();
        // A leader past its renew deadline patches nothing: the next leader scales.
        if snap.recovering || !master.leadership.acting() {
            return Ok(());
        }
        let now = Instant::now();
        let read = match self.read {
            Some((at, read)) if now.saturating_duration_since(at) < READ_AGAIN => read,
            _ => {
                let read = target.read().await?;
                self.read = Some((now, read));
                read
            }
        };
        let workers: Vec<WorkerSeen> = snap
            .workers
            .values()
            .filter(|w| {
                w.connected
                    && (w.state == WorkerState::Alive
                        || (w.state == WorkerState::Decommissioned && w.drained))
            })
            .map(|w| {
                let work = w.drivers.len() + w.executors.len();
                let since = if work == 0 {
                    *self.idle_since.entry(w.id.clone()).or_insert(now)
                } else {
                    self.idle_since.remove(&w.id);
                    now
                };
                WorkerSeen {
                    id: w.id.clone(),
                    pod: w.labels.get("pod").cloned(),
                    work,
                    idle_for: now.saturating_duration_since(since),
                    registered_at_ms: w.registered_at_ms,
                    drained: w.drained,
                }
            })
            .collect();
        self.idle_since
            .retain(|id, _| workers.iter().any(|w| w.id == *id));
        self.drained_at
            .retain(|id, _| workers.iter().any(|w| w.id == *id && w.drained));
        for (worker_id, since) in self.drained_at.clone() {
            if now.saturating_duration_since(since) >= DRAIN_LIMIT {
                let pod = workers
                    .iter()
                    .find(|w| w.id == worker_id)
                    .and_then(|w| w.pod.clone())
                    .unwrap_or_default();
                take_back(master, target, &[(worker_id.clone(), pod)]).await;
                self.drained_at.remove(&worker_id);
                status.decided(
                    format!("took back {worker_id}"),
                    format!(
                        "its pod was still there {} s after the scale-in",
                        DRAIN_LIMIT.as_secs()
                    ),
                );
            }
        }
        let shape = read.shape.or_else(|| snap.worker_shape());
        let more_needed = match shape {
            Some(shape) => snap.demand_for(shape).more_workers,
            None => u32::from(!snap.waiting.is_empty()),
        };
        let alive = workers.iter().filter(|w| !w.drained).count() as u32;
        {
            let mut s = status.lock();
            s.replicas = read.replicas;
            s.wanted = (alive + more_needed).clamp(config.min_workers, config.max_workers);
            if let Some((since, wanted)) = self.pending_up
                && alive >= wanted
            {
                s.demand_to_alive_count += 1;
                s.demand_to_alive_seconds += since.elapsed().as_secs_f64();
                self.pending_up = None;
            }
        }
        let inputs = Inputs {
            min: config.min_workers,
            max: config.max_workers,
            replicas: read.replicas,
            workers: workers.clone(),
            more_needed,
            scale_down_idle: config.scale_down_idle,
        };
        for step in decide::decide(&inputs) {
            match step {
                Step::ScaleTo { replicas, reason } => {
                    target.scale_to(replicas).await?;
                    self.read = Some((now, deployment::Read { replicas, ..read }));
                    if replicas > read.replicas {
                        self.pending_up.get_or_insert((now, replicas));
                        status.lock().scale_ups += 1;
                    }
                    status.decided(format!("replicas {} → {replicas}", read.replicas), reason);
                }
                Step::TakeBack {
                    workers: back,
                    reason,
                } => {
                    let back_pods: Vec<(String, String)> = workers
                        .iter()
                        .filter(|w| back.contains(&w.id))
                        .filter_map(|w| w.pod.clone().map(|pod| (w.id.clone(), pod)))
                        .collect();
                    take_back(master, target, &back_pods).await;
                    for worker_id in &back {
                        self.drained_at.remove(worker_id);
                    }
                    status.decided(format!("took back {}", back.join(", ")), reason);
                }
                Step::ScaleIn {
                    workers: leaving,
                    replicas: _,
                    reason,
                } => {
                    // Busy pods dearer by their work; the leaving ones cheapest of all.
                    for w in workers.iter().filter(|w| w.work > 0) {
                        if let Some(pod) = &w.pod {
                            target.set_deletion_cost(pod, 100 * w.work as i64).await?;
                        }
                    }
                    // Only workers still idle when drained go: one given work meanwhile stays.
                    let mut drained = Vec::new();
                    for (worker_id, pod) in &leaving {
                        let done = master
                            .ask(|reply| Command::Drain {
                                worker_id: worker_id.clone(),
                                drain: true,
                                reply,
                            })
                            .await
                            .unwrap_or(false);
                        if !done {
                            continue;
                        }
                        drained.push((worker_id.clone(), pod.clone()));
                        if let Err(e) = target.set_deletion_cost(pod, -1000).await {
                            take_back(master, target, &drained).await;
                            return Err(e);
                        }
                    }
                    if drained.is_empty() {
                        continue;
                    }
                    let leaving = drained;
                    let replicas = read.replicas.saturating_sub(leaving.len() as u32);
                    if let Err(e) = target.scale_to(replicas).await {
                        take_back(master, target, &leaving).await;
                        return Err(e);
                    }
                    self.read = Some((now, deployment::Read { replicas, ..read }));
                    for (worker_id, _) in &leaving {
                        self.drained_at.insert(worker_id.clone(), now);
                    }
                    status.lock().scale_downs += 1;
                    let names: Vec<&str> = leaving.iter().map(|(w, _)| w.as_str()).collect();
                    status.decided(
                        format!(
                            "replicas {} → {replicas}, removing {}",
                            read.replicas,
                            names.join(", ")
                        ),
                        reason,
                    );
                }
            }
        }
        Ok(())
    }
}

/// Drained workers that are not removed after all: they take work again, and their pods are
/// no longer marked first to go.
async fn take_back(master: &MasterHandle, target: &WorkerDeployment, workers: &[(String, String)]) {
    for (worker_id, pod) in workers {
        let _ = master
            .ask(|reply| Command::Drain {
                worker_id: worker_id.clone(),
                drain: false,
                reply,
            })
            .await;
        if !pod.is_empty()
            && let Err(e) = target.set_deletion_cost(pod, 0).await
        {
            tracing::warn!(worker_id, pod, error = %e, "autoscaler: cannot reset a pod's deletion cost");
        }
    }
}
