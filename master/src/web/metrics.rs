//! `/metrics` in Prometheus text format.

use std::fmt::Write;

use axum::{extract::State, http::header, response::IntoResponse};
use hearth_common::{
    proto::{ApplicationState, DriverState, ExecutorState, WorkerState},
    state_names::StateName,
};

use crate::{
    actor::MasterHandle,
    telemetry::{HistogramSnapshot, Sample},
};

pub async fn metrics(State(master): State<MasterHandle>) -> impl IntoResponse {
    let snap = master.snapshot();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP hearth_workers Workers by state.\n# TYPE hearth_workers gauge"
    );
    for state in [
        WorkerState::Alive,
        WorkerState::Dead,
        WorkerState::Decommissioned,
        WorkerState::Unknown,
    ] {
        let n = snap.workers.values().filter(|w| w.state == state).count();
        let _ = writeln!(out, "hearth_workers{{state=\"{}\"}} {n}", state.name());
    }
    let in_use = Sample::of(&snap, hearth_common::ids::now_ms());
    let sizing = snap.sizing();
    let kept = master.kept_logs.usage();
    let replication = master
        .replication
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let gauges = [
        (
            "hearth_kept_logs_bytes",
            "Bytes of shipped logs the master keeps.",
            kept.bytes,
        ),
        (
            "hearth_kept_logs_limit_bytes",
            "The most bytes of shipped logs the master keeps (--kept-logs).",
            kept.limit,
        ),
        (
            "hearth_kept_log_streams",
            "Stdout and stderr streams the master keeps a tail of.",
            kept.streams,
        ),
        (
            "hearth_kept_log_pieces_dropped",
            "Shipped log pieces dropped since the master started because writing kept logs fell behind.",
            kept.dropped,
        ),
        (
            "hearth_cores_total",
            "Cores offered by alive workers.",
            in_use.cores,
        ),
        (
            "hearth_cores_used",
            "Cores in use on alive workers.",
            in_use.cores_used,
        ),
        (
            "hearth_memory_mb_total",
            "Memory offered by alive workers, MiB.",
            in_use.memory_mb,
        ),
        (
            "hearth_memory_mb_used",
            "Memory in use on alive workers, MiB.",
            in_use.memory_used_mb,
        ),
        (
            "hearth_drivers_waiting",
            "Drivers waiting for a slot.",
            snap.waiting.len() as u64,
        ),
        (
            "hearth_workers_connected",
            "Open worker streams.",
            master.links.connected() as u64,
        ),
        (
            "hearth_leader",
            "Whether this master leads (1; a single master always does) or stands by (0).",
            u64::from(master.leadership.acting()),
        ),
        (
            "hearth_leader_epoch",
            "This leader's term, from its Lease (0: a single master without one).",
            master.leadership.epoch,
        ),
        (
            "hearth_failovers_total",
            "Terms before this one: each later term began with a takeover.",
            master.leadership.epoch.saturating_sub(1),
        ),
        (
            "hearth_replication_lag_turns",
            "Turns committed here that the standby has not yet confirmed.",
            replication.lag_turns,
        ),
        (
            "hearth_standby_in_sync",
            "Whether a standby is in sync (every acknowledged turn waits for it).",
            u64::from(replication.in_sync),
        ),
        (
            "hearth_workers_wanted",
            "Workers the cluster wants: the alive ones plus those its waiting drivers and executors need, packed onto workers shaped like most alive ones (for an HPA or KEDA sizing the worker Deployment).",
            u64::from(sizing.wanted),
        ),
        (
            "hearth_workers_idle",
            "Alive workers running no driver or executor.",
            u64::from(sizing.idle),
        ),
        (
            "hearth_waiting_too_large",
            "Waiting drivers and executors larger than any worker of today's shape (more workers would not help).",
            sizing.too_large as u64,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    named_resource_metrics(&snap, &mut out);
    queue_metrics(&snap, &mut out);
    let _ = writeln!(
        out,
        "# HELP hearth_drivers Drivers by state.\n# TYPE hearth_drivers gauge"
    );
    for state in [
        DriverState::Submitted,
        DriverState::Running,
        DriverState::Finished,
        DriverState::Failed,
        DriverState::Killed,
        DriverState::Relaunching,
        DriverState::Error,
        DriverState::Unknown,
    ] {
        let n = snap.drivers.values().filter(|d| d.state == state).count();
        let _ = writeln!(out, "hearth_drivers{{state=\"{}\"}} {n}", state.name());
    }
    let _ = writeln!(
        out,
        "# HELP hearth_apps Applications by state.\n# TYPE hearth_apps gauge"
    );
    for state in [
        ApplicationState::Waiting,
        ApplicationState::Running,
        ApplicationState::Finished,
        ApplicationState::Failed,
        ApplicationState::Killed,
    ] {
        let n = snap.apps.values().filter(|a| a.state == state).count();
        let _ = writeln!(out, "hearth_apps{{state=\"{}\"}} {n}", state.name());
    }
    let _ = writeln!(
        out,
        "# HELP hearth_executors Executors of retained applications by state.\n# TYPE hearth_executors gauge"
    );
    for state in [
        ExecutorState::Launching,
        ExecutorState::Running,
        ExecutorState::Exited,
        ExecutorState::Failed,
        ExecutorState::Killed,
        ExecutorState::Lost,
    ] {
        let n: usize = snap
            .apps
            .values()
            .map(|a| a.executors.values().filter(|e| e.state == state).count())
            .sum();
        let _ = writeln!(out, "hearth_executors{{state=\"{}\"}} {n}", state.name());
    }
    let wanted: u64 = snap
        .active_apps
        .iter()
        .filter_map(|id| snap.apps.get(id))
        .map(|a| u64::from(a.wanted()))
        .sum();
    let _ = writeln!(
        out,
        "# HELP hearth_executors_waiting Executors wanted but not placed.\n# TYPE hearth_executors_waiting gauge\nhearth_executors_waiting {wanted}"
    );
    let _ = writeln!(
        out,
        "# HELP hearth_master_recovering 1 while a restarted master waits for its workers.\n# TYPE hearth_master_recovering gauge\nhearth_master_recovering {}",
        u8::from(snap.recovering)
    );
    let scaler = master.autoscale.get();
    if let Some(config) = &scaler.config {
        let _ = writeln!(
            out,
            "# HELP hearth_autoscale_replicas Replicas the worker Deployment asks for.\n# TYPE hearth_autoscale_replicas gauge\nhearth_autoscale_replicas {}\n\
             # HELP hearth_autoscale_wanted_workers Workers the autoscaler wants, within its bounds.\n# TYPE hearth_autoscale_wanted_workers gauge\nhearth_autoscale_wanted_workers {}\n\
             # HELP hearth_autoscale_min_workers The fewest workers autoscaling keeps.\n# TYPE hearth_autoscale_min_workers gauge\nhearth_autoscale_min_workers {}\n\
             # HELP hearth_autoscale_max_workers The most workers autoscaling asks for.\n# TYPE hearth_autoscale_max_workers gauge\nhearth_autoscale_max_workers {}\n\
             # HELP hearth_autoscale_scale_ups_total Scale-ups patched.\n# TYPE hearth_autoscale_scale_ups_total counter\nhearth_autoscale_scale_ups_total {}\n\
             # HELP hearth_autoscale_scale_downs_total Scale-ins patched.\n# TYPE hearth_autoscale_scale_downs_total counter\nhearth_autoscale_scale_downs_total {}\n\
             # HELP hearth_autoscale_demand_to_alive_seconds From waiting work seen to the workers it asked for ALIVE.\n# TYPE hearth_autoscale_demand_to_alive_seconds summary\nhearth_autoscale_demand_to_alive_seconds_count {}\nhearth_autoscale_demand_to_alive_seconds_sum {}",
            scaler.replicas,
            scaler.wanted,
            config.min_workers,
            config.max_workers,
            scaler.scale_ups,
            scaler.scale_downs,
            scaler.demand_to_alive_count,
            scaler.demand_to_alive_seconds
        );
    }
    let t = &master.telemetry;
    let trouble = master.store_trouble.get();
    let _ = writeln!(
        out,
        "# HELP hearth_state_writable 1 while the state file can be written; 0 while changes are refused.\n# TYPE hearth_state_writable gauge\nhearth_state_writable {}",
        u8::from(trouble.is_none())
    );
    let _ = writeln!(
        out,
        "# HELP hearth_state_write_failures_total Writes of the state file that failed.\n# TYPE hearth_state_write_failures_total counter\nhearth_state_write_failures_total {}",
        t.store_failures.load(std::sync::atomic::Ordering::Relaxed)
    );
    write_histogram(
        &mut out,
        "hearth_schedule_seconds",
        "Time of one scheduling pass of the master.",
        &[("", t.schedule.snapshot())],
    );
    write_histogram(
        &mut out,
        "hearth_store_write_seconds",
        "Time to write one turn's changes to the state file, fsync included.",
        &[("", t.store_write.snapshot())],
    );
    let rpcs: Vec<(String, HistogramSnapshot)> = t
        .rpc_snapshots()
        .into_iter()
        .map(|(name, h)| (format!("method=\"{name}\""), h))
        .collect();
    let rpcs: Vec<(&str, HistogramSnapshot)> =
        rpcs.iter().map(|(l, h)| (l.as_str(), h.clone())).collect();
    write_histogram(
        &mut out,
        "hearth_rpc_seconds",
        "gRPC call latency until the response headers (a unary call's whole time), by method.",
        &rpcs,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

/// One histogram family; each entry is `(labels without braces, figures)`.
fn write_histogram(out: &mut String, name: &str, help: &str, series: &[(&str, HistogramSnapshot)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (labels, h) in series {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in &h.cumulative {
            let le = bound.map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {count}");
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", h.sum_seconds);
        let _ = writeln!(out, "{name}_count{braces} {}", h.count);
    }
}

/// One number of a queue, if it has it.
type QueueSeries = fn(&hearth_common::proto::Queue) -> Option<f64>;

/// Per queue: what it holds, its caps and guarantees, what waits in it and its share; the
/// waiting drivers by the code of their wait; whether the queues file was refused.
fn queue_metrics(snap: &crate::state::State, out: &mut String) {
    let queues = snap.queue_views();
    let series: [(&str, &str, QueueSeries); 7] = [
        (
            "hearth_queue_cores_used",
            "Cores held by a queue's work, its children's included.",
            |q| q.used.as_ref().map(|u| u.cores as f64),
        ),
        (
            "hearth_queue_memory_mb_used",
            "Memory held by a queue's work, its children's included, MiB.",
            |q| q.used.as_ref().map(|u| u.memory_mb as f64),
        ),
        (
            "hearth_queue_cores_guaranteed",
            "Cores guaranteed to a queue.",
            |q| q.guaranteed.as_ref().map(|g| g.cores as f64),
        ),
        (
            "hearth_queue_cores_max",
            "A queue's cap on cores (absent: none).",
            |q| {
                q.max
                    .as_ref()
                    .filter(|m| m.cores != u64::MAX)
                    .map(|m| m.cores as f64)
            },
        ),
        (
            "hearth_queue_drivers_waiting",
            "Drivers waiting in a queue.",
            |q| Some(f64::from(q.waiting_drivers)),
        ),
        (
            "hearth_queue_executors_wanted",
            "Executors a queue's applications still want.",
            |q| Some(f64::from(q.wanted_executors)),
        ),
        (
            "hearth_queue_share",
            "A queue's dominant share of the alive cluster (0 to 1).",
            |q| Some(q.share),
        ),
    ];
    for (name, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for q in &queues {
            if let Some(v) = value(q) {
                let _ = writeln!(out, "{name}{{queue=\"{}\"}} {v}", q.name);
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP hearth_waiting_drivers Waiting drivers by the code of their wait.\n# TYPE hearth_waiting_drivers gauge"
    );
    let mut by_code: std::collections::BTreeMap<&str, usize> = Default::default();
    for d in snap.waiting.iter().filter_map(|id| snap.drivers.get(id)) {
        if let Some(code) = d.waiting_code {
            *by_code.entry(code.as_str()).or_default() += 1;
        }
    }
    for (code, n) in by_code {
        let _ = writeln!(out, "hearth_waiting_drivers{{code=\"{code}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP hearth_queues_file_refused 1 while the queues file last read was refused (older queues are in force).\n# TYPE hearth_queues_file_refused gauge\nhearth_queues_file_refused {}",
        u8::from(snap.queues_refused.is_some())
    );
    let _ = writeln!(
        out,
        "# HELP hearth_queues_file_refusals_total Times the queues file was refused since the master started.\n# TYPE hearth_queues_file_refusals_total counter\nhearth_queues_file_refusals_total {}",
        snap.queue_files_refused
    );
    let _ = writeln!(
        out,
        "# HELP hearth_preemptions_total Preemptions ordered since the master started, by the victim's queue, the rule (reclaim, priority) and the kind of victim (driver, executor).\n# TYPE hearth_preemptions_total counter"
    );
    for ((queue, rule, kind), n) in &snap.preemptions_total {
        let _ = writeln!(
            out,
            "hearth_preemptions_total{{queue=\"{queue}\",rule=\"{rule}\",kind=\"{kind}\"}} {n}"
        );
    }
}

/// Named resources (GPUs, ...) offered and handed out by alive workers, by name.
fn named_resource_metrics(snap: &crate::state::State, out: &mut String) {
    let mut totals: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for w in snap.alive_workers() {
        for r in &w.resources {
            let t = totals.entry(r.name.as_str()).or_default();
            t.0 += r.addresses.len();
            t.1 += w.resources_used.get(&r.name).map_or(0, |u| u.len());
        }
    }
    let _ = writeln!(
        out,
        "# HELP hearth_resources Named resources (GPUs, ...) offered by alive workers, by name.\n# TYPE hearth_resources gauge"
    );
    for (name, (total, _)) in &totals {
        let _ = writeln!(out, "hearth_resources{{name=\"{name}\"}} {total}");
    }
    let _ = writeln!(
        out,
        "# HELP hearth_resources_used Named resources handed out to drivers and executors, by name.\n# TYPE hearth_resources_used gauge"
    );
    for (name, (_, used)) in &totals {
        let _ = writeln!(out, "hearth_resources_used{{name=\"{name}\"}} {used}");
    }
}
