//! The queues page: a bar per queue (in use, guarantee, cap), and what waits in each, in the
//! order the queue serves it.

use askama::Template;
use axum::{
    extract::State as Axum,
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use hearth_common::{ids::display_time, resources::format_mb};

use super::pages::error_page;
use crate::{actor::MasterHandle, state::State};

/// Waiting drivers listed per queue; the rest are counted.
const SHOWN_PER_QUEUE: usize = 50;

struct QueueRow {
    name: String,
    /// rem of left padding: deeper queues further in.
    indent: String,
    weight: u32,
    cores_used: u64,
    memory_used: String,
    /// Cores the bar is drawn against: the cap, else the cluster's.
    scale: u64,
    used_pct: u64,
    guaranteed_pct: u64,
    guaranteed: String,
    max: String,
    waiting: u32,
    wanted: u32,
    share: String,
}

struct WaitingRow {
    queue: String,
    id: String,
    priority: i32,
    cores: u32,
    memory: String,
    code: &'static str,
    reason: String,
    estimate: String,
}

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesPage {
    base: String,
    refused: Option<String>,
    total_cores: u64,
    queues: Vec<QueueRow>,
    waiting: Vec<WaitingRow>,
    shown_per_queue: usize,
    more: usize,
}

fn amount(cores: u64, memory_mb: u64) -> String {
    let cores = if cores == u64::MAX {
        "-".to_string()
    } else {
        cores.to_string()
    };
    let memory = if memory_mb == u64::MAX {
        "-".to_string()
    } else {
        format_mb(memory_mb)
    };
    format!("{cores} / {memory}")
}

fn pct(part: u64, whole: u64) -> u64 {
    (part.saturating_mul(100))
        .checked_div(whole)
        .unwrap_or(0)
        .min(100)
}

fn page(state: &State, base: String) -> QueuesPage {
    let total_cores: u64 = state.alive_workers().map(|w| u64::from(w.cores)).sum();
    let queues = state
        .queue_views()
        .into_iter()
        .map(|q| {
            let used = q.used.unwrap_or_default();
            let guaranteed = q.guaranteed.unwrap_or_default();
            let scale = match &q.max {
                Some(m) if m.cores != u64::MAX => m.cores,
                _ => total_cores,
            };
            QueueRow {
                indent: format!("{:.1}", q.name.matches('.').count() as f64 * 1.2 + 0.6),
                weight: q.weight,
                cores_used: used.cores,
                memory_used: format_mb(used.memory_mb),
                scale,
                used_pct: pct(used.cores, scale),
                guaranteed_pct: pct(guaranteed.cores, scale),
                // A guarantee of 0 in a resource is none there.
                guaranteed: if guaranteed.cores == 0 && guaranteed.memory_mb == 0 {
                    "-".into()
                } else {
                    let none = |v: u64| if v == 0 { u64::MAX } else { v };
                    amount(none(guaranteed.cores), none(guaranteed.memory_mb))
                },
                max: q
                    .max
                    .map_or_else(|| "-".into(), |m| amount(m.cores, m.memory_mb)),
                waiting: q.waiting_drivers,
                wanted: q.wanted_executors,
                share: format!("{:.0} %", q.share * 100.0),
                name: q.name,
            }
        })
        .collect();
    // Each queue's waiting drivers in the order it serves them: priority, then submission.
    let mut by_queue: std::collections::BTreeMap<&str, Vec<(usize, &crate::state::DriverInfo)>> =
        Default::default();
    for (pos, d) in state
        .waiting
        .iter()
        .enumerate()
        .filter_map(|(pos, id)| Some((pos, state.drivers.get(id)?.as_ref())))
    {
        by_queue
            .entry(d.spec.queue.as_str())
            .or_default()
            .push((pos, d));
    }
    let mut waiting = Vec::new();
    let mut more = 0;
    for (queue, mut drivers) in by_queue {
        drivers.sort_by_key(|(pos, d)| (std::cmp::Reverse(d.spec.priority), *pos));
        more += drivers.len().saturating_sub(SHOWN_PER_QUEUE);
        for (_, d) in drivers.into_iter().take(SHOWN_PER_QUEUE) {
            let p = d.to_proto();
            waiting.push(WaitingRow {
                queue: queue.to_string(),
                id: d.id.clone(),
                priority: d.spec.priority,
                cores: d.spec.cores,
                memory: format_mb(d.spec.memory_mb),
                code: d.waiting_code.map_or("", |c| c.as_str()),
                reason: d.waiting_reason.clone().unwrap_or_default(),
                estimate: match p.estimated_start_ms {
                    Some(at) => format!("{} ({})", display_time(at), p.estimate),
                    None => p.estimate,
                },
            });
        }
    }
    QueuesPage {
        base,
        refused: state.queues_refused.clone(),
        total_cores,
        queues,
        waiting,
        shown_per_queue: SHOWN_PER_QUEUE,
        more,
    }
}

pub async fn queues(Axum(master): Axum<MasterHandle>) -> Response {
    let snap = master.snapshot();
    let base = super::base(&master);
    match page(&snap, base.clone()).render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => error_page(
            &base,
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the queues: {e}"),
        ),
    }
}
