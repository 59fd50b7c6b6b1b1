//! Server-rendered pages (askama): the overview and the worker, driver and application pages.

use askama::Template;
use axum::{
    extract::{Path, Query, State as Axum},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use hearth_common::{ids::display_time, resources::format_mb, state_names::StateName};
use serde::Deserialize;

use super::{
    chart::utilisation_svg,
    paging::Pager,
    rows::{AppRow, DriverRow, ExecutorRow, PreemptionRow, WorkerRow},
    status_of,
};
use crate::{
    actor::MasterHandle,
    config::{CHART_WINDOW_MS, UiConfig},
    error::Error,
    state::State,
    telemetry::Sample,
};

/// Which page of each long table the overview shows (1-based; absent means the first).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct OverviewQuery {
    pub workers_page: Option<usize>,
    pub running_page: Option<usize>,
    pub completed_page: Option<usize>,
    pub apps_page: Option<usize>,
    pub completed_apps_page: Option<usize>,
}

impl OverviewQuery {
    /// The overview's URL with one table moved to `page`, the others kept where they are.
    fn href(&self, base: &str, table: &str, page: usize) -> String {
        let params = [
            ("workers_page", self.workers_page),
            ("running_page", self.running_page),
            ("completed_page", self.completed_page),
            ("apps_page", self.apps_page),
            ("completed_apps_page", self.completed_apps_page),
        ];
        let query: Vec<String> = params
            .iter()
            .filter_map(|(name, current)| {
                let value = if *name == table { Some(page) } else { *current };
                value.filter(|&v| v > 1).map(|v| format!("{name}={v}"))
            })
            .collect();
        let anchor = match table {
            "running_page" => "running-drivers",
            "completed_page" => "completed-drivers",
            "apps_page" => "running-apps",
            "completed_apps_page" => "completed-apps",
            _ => "workers",
        };
        format!("{base}/?{}#{anchor}", query.join("&"))
    }
}

/// A bar's share, 0 to 100, for its width.
fn share(used: u64, total: u64) -> u64 {
    (used * 100).checked_div(total).unwrap_or(0).min(100)
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    base: String,
    url: String,
    /// ALIVE, or RECOVERING after a restart until the known workers are back.
    status: &'static str,
    alive_workers: usize,
    dead_workers: usize,
    other_workers: usize,
    cores: u64,
    cores_used: u64,
    cores_share: u64,
    memory: String,
    memory_used: String,
    memory_share: u64,
    waiting_drivers: usize,
    chart: String,
    workers: Vec<WorkerRow>,
    workers_pager: Pager,
    running: Vec<DriverRow>,
    running_pager: Pager,
    completed: Vec<DriverRow>,
    completed_pager: Pager,
    running_apps: Vec<AppRow>,
    apps_pager: Pager,
    completed_apps: Vec<AppRow>,
    completed_apps_pager: Pager,
    /// Why the state file cannot be written now (changes are refused), if it cannot.
    store_trouble: Option<String>,
    leader: Option<LeaderView>,
    /// The autoscaler's bounds, wants and last decisions, when it is on.
    autoscale: Option<AutoscaleView>,
}

struct AutoscaleView {
    target: String,
    wanted: u32,
    replicas: u32,
    min: u32,
    max: u32,
    trouble: Option<String>,
    decisions: Vec<(String, String, String)>,
}

impl AutoscaleView {
    fn of(s: crate::scaling_status::StatusInner) -> Option<Self> {
        let config = s.config?;
        Some(Self {
            target: format!("{}/{}", config.namespace, config.deployment),
            wanted: s.wanted,
            replicas: s.replicas,
            min: config.min_workers,
            max: config.max_workers,
            trouble: s.trouble,
            decisions: s
                .decisions
                .into_iter()
                .map(|d| (display_time(d.at_ms), d.what, d.reason))
                .collect(),
        })
    }
}

/// What the overview shows beside the snapshot of the state: the state file and the streams.
#[derive(Default)]
pub struct BesideState<'a> {
    /// Why the state file cannot be written now, if it cannot.
    pub trouble: Option<String>,
    /// Its history of completed drivers, paged on after those in memory.
    pub history: Option<&'a crate::store::Store>,
    /// Under a Lease: this leader's term and the standby that copies the file.
    pub leader: Option<LeaderView>,
    /// The workers' streams, where their heartbeats are recorded (the state has only the
    /// registration and what its turns saw).
    pub heard: Option<&'a crate::links::Links>,
}

/// The leader's term and its standby, for the overview.
#[derive(Debug, Clone, Default)]
pub struct LeaderView {
    pub epoch: u64,
    pub standby: Option<String>,
    pub in_sync: bool,
}

/// The overview of `state` as HTML; `samples` feed the chart. Public so the benchmark can
/// time it without a network in between.
pub fn overview_html(
    state: &State,
    ui: &UiConfig,
    samples: &[Sample],
    now_ms: i64,
    query: &OverviewQuery,
    store: BesideState<'_>,
    autoscale: Option<crate::scaling_status::StatusInner>,
) -> Result<String, askama::Error> {
    let store_trouble = store.trouble;
    let leader = store.leader;
    let base = ui.base_path.clone();
    let pager = |table: &str, total: usize, requested: Option<usize>| {
        Pager::new(total, requested, |n| query.href(&base, table, n))
    };
    let alive_workers = state.alive_workers().count();
    // Alive workers' offer and use now: the summary's figures and the chart's last point.
    let now = Sample::of(state, now_ms);
    let dead_workers = state
        .workers
        .values()
        .filter(|w| w.state == hearth_common::proto::WorkerState::Dead)
        .count();

    let workers_pager = pager("workers_page", state.workers.len(), query.workers_page);
    let workers = state
        .workers
        .values()
        .skip(workers_pager.range().start)
        .take(workers_pager.range().len())
        .map(|w| WorkerRow::new(w, store.heard))
        .collect();

    let running_total = state.drivers.len() - state.completed.len().min(state.drivers.len());
    let running_pager = pager("running_page", running_total, query.running_page);
    let running = state
        .drivers
        .values()
        .filter(|d| !d.state.is_terminal())
        .skip(running_pager.range().start)
        .take(running_pager.range().len())
        .map(|d| DriverRow::from(d.as_ref()))
        .collect();

    // Most recent first: those in memory, then the history in the state file.
    let kept = store.history.map_or(0, |h| h.history_len() as usize);
    let completed_pager = pager(
        "completed_page",
        state.completed.len() + kept,
        query.completed_page,
    );
    let rows = completed_pager.range();
    let mut completed: Vec<DriverRow> = state
        .completed
        .iter()
        .rev()
        .skip(rows.start)
        .take(rows.len())
        .filter_map(|id| state.drivers.get(id))
        .map(|d| DriverRow::from(d.as_ref()))
        .collect();
    if completed.len() < rows.len()
        && let Some(history) = store.history
    {
        let skip = rows.start.saturating_sub(state.completed.len());
        match history.history_page(None, skip, rows.len() - completed.len()) {
            Ok(older) => completed.extend(older.iter().map(DriverRow::from)),
            Err(e) => tracing::warn!(error = %e, "completed drivers in the history not shown"),
        }
    }

    let apps_pager = pager("apps_page", state.active_apps.len(), query.apps_page);
    let running_apps = state
        .active_apps
        .iter()
        .skip(apps_pager.range().start)
        .take(apps_pager.range().len())
        .filter_map(|id| state.apps.get(id))
        .map(|a| AppRow::from(a.as_ref()))
        .collect();

    let completed_apps_pager = pager(
        "completed_apps_page",
        state.completed_apps.len(),
        query.completed_apps_page,
    );
    let completed_apps = state
        .completed_apps
        .iter()
        .rev()
        .skip(completed_apps_pager.range().start)
        .take(completed_apps_pager.range().len())
        .filter_map(|id| state.apps.get(id))
        .map(|a| AppRow::from(a.as_ref()))
        .collect();

    Overview {
        store_trouble,
        leader,
        autoscale: autoscale.and_then(AutoscaleView::of),
        url: state.master_url.clone(),
        status: if state.recovering {
            "RECOVERING"
        } else {
            "ALIVE"
        },
        alive_workers,
        dead_workers,
        other_workers: state.workers.len() - alive_workers - dead_workers,
        cores: now.cores,
        cores_used: now.cores_used,
        cores_share: share(now.cores_used, now.cores),
        memory: format_mb(now.memory_mb),
        memory_used: format_mb(now.memory_used_mb),
        memory_share: share(now.memory_used_mb, now.memory_mb),
        waiting_drivers: state.waiting.len(),
        chart: {
            // The line ends at the present, not at the last sample.
            let mut points = samples.to_vec();
            points.push(now);
            utilisation_svg(&points, now_ms, CHART_WINDOW_MS)
        },
        workers,
        workers_pager,
        running,
        running_pager,
        completed,
        completed_pager,
        running_apps,
        apps_pager,
        completed_apps,
        completed_apps_pager,
        base,
    }
    .render()
}

#[derive(Template)]
#[template(path = "worker.html")]
struct WorkerPage {
    base: String,
    w: WorkerRow,
    name: String,
    registered: String,
    labels: Vec<(String, String)>,
    drivers: Vec<DriverRow>,
    executors: Vec<ExecutorRow>,
    /// Every address of its named resources: `gpu 0,1`.
    offered: String,
}

/// "all 8 start together or none; restarts whole; fails after 10m waiting".
fn gang_words(spec: &hearth_common::proto::ApplicationSpec) -> String {
    if !spec.gang {
        return String::new();
    }
    let mut words = format!("all {} start together or none", spec.executors);
    words.push_str(if spec.gang_restart {
        "; a failed or lost member restarts the whole gang"
    } else {
        "; a failed or lost member is replaced alone, keeping its rank"
    });
    if spec.gang_timeout_ms > 0 {
        words.push_str(&format!(
            "; fails if not started within {}",
            hearth_common::duration::format_duration(std::time::Duration::from_millis(
                spec.gang_timeout_ms
            ))
        ));
    }
    words
}

#[derive(Template)]
#[template(path = "app.html")]
struct AppPage {
    base: String,
    a: AppRow,
    live: bool,
    ui_kill: bool,
    command: String,
    env_names: String,
    executor_cores: u32,
    cores_requested: u32,
    max_executors: u32,
    /// Empty: not a gang.
    gang: String,
    failures: String,
    driver_host: String,
    ended: String,
    executors: Vec<ExecutorRow>,
    preemptions: Vec<PreemptionRow>,
}

#[derive(Template)]
#[template(path = "driver.html")]
struct DriverPage {
    base: String,
    d: DriverRow,
    live: bool,
    placed: bool,
    ui_kill: bool,
    attempt: u32,
    supervise: String,
    command: String,
    env_names: String,
    app_id: String,
    history: Vec<HistoryRow>,
    preemptions: Vec<PreemptionRow>,
    /// The port of the driver's own UI (0: none), linked while it runs.
    ui_port: u32,
    running: bool,
}

struct HistoryRow {
    at: String,
    state: &'static str,
    attempt: u32,
    worker: String,
    message: String,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    base: String,
    status: u16,
    message: String,
}

/// A page, or the error as a page with its status.
pub(super) fn render(base: &str, page: Result<impl Template, Error>) -> Response {
    let rendered = page.and_then(|p| {
        p.render()
            .map_err(|e| Error::Internal(format!("rendering a page: {e}")))
    });
    match rendered {
        Ok(html) => Html(html).into_response(),
        Err(e) => error_page(base, status_of(&e), e.to_string()),
    }
}

pub(super) fn error_page(base: &str, status: StatusCode, message: String) -> Response {
    let page = ErrorPage {
        base: base.to_string(),
        status: status.as_u16(),
        message,
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => status.into_response(),
    }
}

pub async fn overview(
    Axum(master): Axum<MasterHandle>,
    Query(query): Query<OverviewQuery>,
) -> Response {
    // On a blocking thread: a page of completed drivers deep in the history reads the state
    // file, and the runtime's threads carry every worker's heartbeats.
    // The base is read here: the forwarded prefix lives in this task, not on the blocking thread.
    let base = super::base(&master);
    let page_base = base.clone();
    tokio::task::spawn_blocking(move || overview_page(&master, &query, page_base))
        .await
        .unwrap_or_else(|e| {
            error_page(
                &base,
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rendering the overview: {e}"),
            )
        })
}

fn overview_page(master: &MasterHandle, query: &OverviewQuery, base: String) -> Response {
    let snap = master.snapshot();
    let now_ms = hearth_common::ids::now_ms();
    let samples = master.telemetry.samples_since(now_ms - CHART_WINDOW_MS);
    let replication = master
        .replication
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let store = BesideState {
        trouble: master.store_trouble.get(),
        history: Some(&master.store),
        leader: master.leadership.elected_by_lease().then(|| LeaderView {
            epoch: master.leadership.epoch,
            standby: replication.standby,
            in_sync: replication.in_sync,
        }),
        heard: Some(&master.links),
    };
    let ui = UiConfig {
        base_path: base.clone(),
        ..master.config.ui.clone()
    };
    let scaler = Some(master.autoscale.get());
    match overview_html(&snap, &ui, &samples, now_ms, query, store, scaler) {
        Ok(html) => Html(html).into_response(),
        Err(e) => error_page(
            &base,
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the overview: {e}"),
        ),
    }
}

fn env_names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names.cloned().collect::<Vec<_>>().join(", ")
}

pub async fn worker(Axum(master): Axum<MasterHandle>, Path(id): Path<String>) -> Response {
    let snap = master.snapshot();
    let base = super::base(&master);
    let page = snap.worker(&id).map(|w| WorkerPage {
        base: base.clone(),
        w: WorkerRow::new(w, Some(&master.links)),
        name: w.name.clone(),
        offered: super::rows::addresses(&w.resources),
        registered: display_time(w.registered_at_ms),
        labels: w
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        drivers: w
            .drivers
            .iter()
            .filter_map(|id| snap.drivers.get(id))
            .map(|d| DriverRow::from(d.as_ref()))
            .collect(),
        executors: w
            .executors
            .iter()
            .filter_map(|k| snap.executor(k).map(|e| ExecutorRow::new(&k.app_id, e)))
            .collect(),
    });
    render(&base, page)
}

pub async fn app(Axum(master): Axum<MasterHandle>, Path(id): Path<String>) -> Response {
    let snap = master.snapshot();
    let base = super::base(&master);
    let page = snap.app(&id).map(|a| AppPage {
        base: base.clone(),
        a: AppRow::from(a.as_ref()),
        live: !a.state.is_terminal(),
        ui_kill: master.config.ui.kill,
        command: a.spec.command.join(" "),
        env_names: env_names(a.spec.env.keys()),
        executor_cores: a.spec.executor_cores,
        cores_requested: a.target.saturating_mul(a.spec.executor_cores),
        max_executors: a.max_executors,
        gang: gang_words(&a.spec),
        preemptions: PreemptionRow::rows(&a.preemptions),
        failures: format!("{} of {} allowed", a.failures, a.retries),
        driver_host: a.driver_host.clone(),
        ended: if a.ended_at_ms > 0 {
            display_time(a.ended_at_ms)
        } else {
            String::new()
        },
        executors: a
            .executors
            .values()
            .rev()
            .map(|e| ExecutorRow::new(&a.id, e))
            .collect(),
    });
    render(&base, page)
}

pub async fn driver(Axum(master): Axum<MasterHandle>, Path(id): Path<String>) -> Response {
    let base = super::base(&master);
    let page = master.find_driver(&id).await.map(|d| DriverPage {
        base: base.clone(),
        d: DriverRow::from(d.as_ref()),
        live: !d.state.is_terminal(),
        // A driver placed once has logs, on its worker or kept by the master.
        placed: d.worker_id.is_some() || d.attempt > 0,
        ui_port: d.spec.ui_port,
        running: d.state == hearth_common::proto::DriverState::Running,
        ui_kill: master.config.ui.kill,
        attempt: d.attempt,
        supervise: if d.spec.supervise {
            format!(
                "yes, up to {} relaunches ({} used)",
                d.spec.max_retries, d.relaunches
            )
        } else {
            "no".into()
        },
        command: d.spec.command.join(" "),
        env_names: env_names(d.spec.env.keys()),
        app_id: d.app_id.clone().unwrap_or_default(),
        preemptions: PreemptionRow::rows(&d.preemptions),
        history: d
            .history
            .iter()
            .map(|h| HistoryRow {
                at: display_time(h.at_ms),
                state: hearth_common::state_names::driver_state(h.state).name(),
                attempt: h.attempt,
                worker: h.worker_id.clone(),
                message: h.message.clone(),
            })
            .collect(),
    });
    render(&base, page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_links_keep_the_other_tables_where_they_are() {
        let q = OverviewQuery {
            workers_page: Some(3),
            completed_page: Some(2),
            ..Default::default()
        };
        assert_eq!(
            q.href("/ui", "completed_page", 4),
            "/ui/?workers_page=3&completed_page=4#completed-drivers"
        );
        assert_eq!(q.href("", "workers_page", 1), "/?completed_page=2#workers");
    }

    #[test]
    fn bars_are_bounded_shares() {
        assert_eq!(share(0, 0), 0);
        assert_eq!(share(3, 4), 75);
        assert_eq!(share(9, 4), 100);
    }
}
