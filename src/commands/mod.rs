//! The client-side subcommands of `hearth`: submit, status, kill, list, logs and queues.
//!
//! Each writes what a person (or, with `--json`, a program) reads to stdout and returns the
//! process exit code; errors go back to the caller, which prints them and exits non-zero.

mod table;

use std::io::Write;

use hearth_common::{
    Result,
    client::Client,
    ids::display_time,
    proto::{
        Application, ApplicationSpec, Driver, DriverSpec, DriverState, DriverStateChange,
        ExecutorState, LogStream,
    },
    resources::format_mb,
    state_names::{StateName, app_state, driver_state, executor_state},
    views::{AmountView, AppView, DriverView, ExecutorView, QueueView, WorkerView},
};

use table::{print_list, to_json, write_table};

/// The exit code `hearth submit --wait` ends with for a driver in a terminal state: the driver's
/// own code when it has one, 143 (128 + SIGTERM) when it was killed, 1 otherwise.
pub fn exit_code_of(driver: &Driver) -> i32 {
    match driver_state(driver.state) {
        DriverState::Finished => 0,
        DriverState::Killed => 143,
        DriverState::Failed => match driver.exit_code {
            Some(code) if (1..=255).contains(&code) => code,
            _ => 1,
        },
        _ => 1,
    }
}

/// Submits; prints the id alone on the first line. With `wait`, follows the driver (progress on
/// stderr) and returns its exit code.
pub async fn submit(
    client: &Client,
    spec: DriverSpec,
    application: Option<ApplicationSpec>,
    submission_id: Option<String>,
    wait: bool,
) -> Result<i32> {
    hearth_common::spec::validate_driver_spec(&spec)?;
    if let Some(app) = &application {
        hearth_common::spec::validate_app_spec(app)?;
    }
    let submission_id = submission_id.unwrap_or_else(hearth_common::spec::new_submission_id);
    let id = client.submit_as(spec, application, submission_id).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{id}")?;
    out.flush()?;
    drop(out);
    if !wait {
        return Ok(0);
    }
    let mut seen = 0usize;
    let driver = client
        .wait(&id, |d| {
            for change in d.history.iter().skip(seen) {
                eprintln!("{}", describe_change(&id, change));
            }
            seen = seen.max(d.history.len());
        })
        .await?;
    Ok(exit_code_of(&driver))
}

fn describe_change(id: &str, change: &DriverStateChange) -> String {
    let mut line = format!(
        "{id}: {} (attempt {})",
        driver_state(change.state).name(),
        change.attempt
    );
    if !change.worker_id.is_empty() {
        line.push_str(&format!(" on {}", change.worker_id));
    }
    if !change.message.is_empty() {
        line.push_str(&format!(": {}", change.message));
    }
    line
}

/// Prints a driver's or an application's state and details.
pub async fn status(client: &Client, id: &str, json: bool) -> Result<i32> {
    if id.starts_with("app-") {
        return app_status(client, id, json).await;
    }
    let driver = client.driver(id).await?;
    let mut out = std::io::stdout().lock();
    let view = DriverView::from(&driver);
    if json {
        writeln!(out, "{}", to_json(&view)?)?;
        return Ok(0);
    }
    write_header(
        &mut out,
        Header {
            id: &view.id,
            state: view.state,
            waiting: view.waiting_reason.as_deref(),
            waiting_code: view.waiting_code.as_deref(),
            message: view.message.as_deref(),
            name: &view.name,
            queue: &view.queue,
            priority: view.priority,
            position: view.queue_position.zip(view.queue_waiting),
            estimate: match (view.estimated_start, &view.estimate) {
                (Some(at), Some(why)) => Some(format!("{} ({why})", display_time(at))),
                (None, Some(why)) => Some(why.clone()),
                _ => None,
            },
        },
    )?;
    writeln!(out, "command:    {}", view.command.join(" "))?;
    writeln!(
        out,
        "resources:  {} cores, {}",
        view.cores,
        format_mb(view.memory_mb)
    )?;
    writeln!(
        out,
        "worker:     {}",
        view.worker_id.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "attempt:    {}", view.attempt)?;
    if !view.resources.is_empty() {
        let asked: Vec<String> = view
            .resources
            .iter()
            .map(|(name, n)| format!("{n} {name}"))
            .collect();
        let given: Vec<String> = view
            .resource_addresses
            .iter()
            .map(|(name, a)| format!("{name} {}", a.join(",")))
            .collect();
        writeln!(
            out,
            "resources:  {}{}",
            asked.join(", "),
            if given.is_empty() {
                String::new()
            } else {
                format!(" (given {})", given.join("; "))
            }
        )?;
    }
    if let Some(port) = view.ui_port {
        match &view.ui_path {
            Some(path) => writeln!(
                out,
                "ui:         {path} on the master's web UI (the driver's port {port})"
            )?,
            None => writeln!(
                out,
                "ui:         port {port}, served through the master while it runs"
            )?,
        }
    }
    if let Some(app) = &view.app_id {
        writeln!(out, "app:        {app}")?;
    }
    if view.supervise {
        writeln!(
            out,
            "supervise:  yes, up to {} relaunches{}",
            view.max_retries,
            if view.at_most_one {
                ", never two copies at once (at-most-one)"
            } else {
                ""
            }
        )?;
    }
    if let Some(code) = view.exit_code {
        writeln!(out, "exit code:  {code}")?;
    }
    writeln!(out, "submitted:  {}", display_time(view.submitted_at_ms))?;
    write_preemptions(&mut out, &view.id, &view.preemptions)?;
    Ok(0)
}

/// "preempted:  <time> by driver-... (reclaim): <why>" or "preempted:  <time> app-.../3 for it".
fn write_preemptions(
    out: &mut impl Write,
    id: &str,
    preemptions: &[hearth_common::views::PreemptionView],
) -> Result<()> {
    for p in preemptions {
        let at = display_time(p.at_ms);
        if p.preemptor == id {
            writeln!(
                out,
                "preempted:  {at} {} of queue {} for it ({})",
                p.victim, p.victim_queue, p.rule
            )?;
        } else {
            writeln!(
                out,
                "preempted:  {at} {} by {} of queue {} ({}): {}",
                p.victim, p.preemptor, p.preemptor_queue, p.rule, p.reason
            )?;
        }
    }
    Ok(())
}

/// The first lines of `hearth status`, the same for drivers and applications.
/// What `hearth status` prints first, for drivers and applications alike.
struct Header<'a> {
    id: &'a str,
    state: &'a str,
    waiting: Option<&'a str>,
    waiting_code: Option<&'a str>,
    message: Option<&'a str>,
    name: &'a str,
    queue: &'a str,
    priority: i32,
    /// Its place in its queue while it waits, and how many wait there.
    position: Option<(u32, u32)>,
    /// When it should start, or why that is unknown.
    estimate: Option<String>,
}

fn write_header(out: &mut impl Write, h: Header<'_>) -> Result<()> {
    writeln!(out, "id:         {}", h.id)?;
    writeln!(out, "state:      {}", h.state)?;
    if let Some(reason) = h.waiting {
        match h.waiting_code {
            Some(code) => writeln!(out, "waiting:    {code}: {reason}")?,
            None => writeln!(out, "waiting:    {reason}")?,
        }
    }
    if let Some(message) = h.message {
        writeln!(out, "message:    {message}")?;
    }
    writeln!(out, "name:       {}", h.name)?;
    match h.position {
        Some((position, of)) => writeln!(
            out,
            "queue:      {} (priority {}), {position} of {of} waiting there",
            h.queue, h.priority
        )?,
        None => writeln!(out, "queue:      {} (priority {})", h.queue, h.priority)?,
    }
    if let Some(estimate) = h.estimate {
        writeln!(out, "expected:   {estimate}")?;
    }
    Ok(())
}

async fn app_status(client: &Client, id: &str, json: bool) -> Result<i32> {
    let app = client.app(id).await?;
    let view = AppView::from(&app);
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", to_json(&view)?)?;
        return Ok(0);
    }
    write_header(
        &mut out,
        Header {
            id: &view.id,
            state: view.state,
            waiting: view.waiting_reason.as_deref(),
            waiting_code: view.waiting_code.as_deref(),
            message: view.message.as_deref(),
            name: &view.name,
            queue: &view.queue,
            priority: view.priority,
            position: None,
            estimate: view.estimate.clone(),
        },
    )?;
    writeln!(
        out,
        "driver:     {}",
        view.driver_id.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "command:    {}", view.command.join(" "))?;
    writeln!(
        out,
        "executors:  {} wanted (at most {}), {} cores and {} each, {} cores granted, {} failed",
        view.target_executors,
        view.max_executors,
        view.executor_cores,
        format_mb(view.executor_memory_mb),
        view.cores_granted,
        view.executor_failures
    )?;
    if view.gang {
        writeln!(
            out,
            "gang:       all {} start together or none; a failed or lost member {}",
            view.target_executors,
            if view.gang_restart {
                "restarts the whole gang"
            } else {
                "is replaced alone"
            }
        )?;
    }
    writeln!(out, "registered: {}", display_time(view.registered_at_ms))?;
    if let Some(ended) = view.ended_at_ms {
        writeln!(out, "ended:      {}", display_time(ended))?;
    }
    write_preemptions(&mut out, &view.id, &view.preemptions)?;
    writeln!(out)?;
    write_executors(&mut out, &app)?;
    Ok(0)
}

fn write_executors(out: &mut impl Write, app: &Application) -> Result<()> {
    let rows = app
        .executors
        .iter()
        .map(ExecutorView::from)
        .map(|e| {
            vec![
                format!("{}/{}", app.id, e.id),
                e.rank.to_string(),
                e.state.to_string(),
                e.worker_id.unwrap_or_else(|| "-".into()),
                e.cores.to_string(),
                format_mb(e.memory_mb),
                e.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                e.message.unwrap_or_default(),
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "EXECUTOR", "RANK", "STATE", "WORKER", "CORES", "MEMORY", "EXIT", "MESSAGE",
        ],
        rows,
    )
}

/// Orders a driver (or an application) killed and prints its state after the order.
pub async fn kill(client: &Client, id: &str) -> Result<i32> {
    if id.starts_with("app-") {
        let app = client.kill_app(id).await?;
        println!("{id}: {}", app_state(app.state).name());
        return Ok(0);
    }
    match client.kill(id).await? {
        DriverState::Running => println!("{id}: kill ordered; its worker stops it"),
        state => println!("{id}: {}", state.name()),
    }
    Ok(0)
}

/// What `hearth list` lists; clap reads it from the command line as `workers`, `drivers` or
/// `apps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListWhat {
    Workers,
    Drivers,
    Apps,
}

/// Prints a table of the workers, drivers or applications, or with `json` their views.
pub async fn list(client: &Client, what: ListWhat, json: bool) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    match what {
        ListWhat::Workers => {
            let views: Vec<WorkerView> = client.workers().await?.iter().map(Into::into).collect();
            print_list(
                &mut out,
                json,
                &views,
                &[
                    "ID",
                    "HOST",
                    "STATE",
                    "CORES",
                    "MEMORY",
                    "DRIVERS",
                    "RESOURCES",
                ],
                |w| {
                    let resources: Vec<String> = w
                        .resources
                        .iter()
                        .map(|(name, all)| {
                            let used = w.resources_used.get(name).map_or(0, Vec::len);
                            format!("{name} {used}/{}", all.len())
                        })
                        .collect();
                    vec![
                        w.id.clone(),
                        w.host.clone(),
                        w.state.to_string(),
                        format!("{}/{}", w.cores_used, w.cores),
                        format!("{}/{}", format_mb(w.memory_used_mb), format_mb(w.memory_mb)),
                        w.drivers.len().to_string(),
                        resources.join(" "),
                    ]
                },
            )?;
        }
        ListWhat::Drivers => {
            let views: Vec<DriverView> = client.drivers().await?.iter().map(Into::into).collect();
            print_list(
                &mut out,
                json,
                &views,
                &[
                    "ID",
                    "NAME",
                    "STATE",
                    "WORKER",
                    "CORES",
                    "MEMORY",
                    "RESOURCES",
                    "EXIT",
                    "WAITING",
                ],
                |d| {
                    let resources: Vec<String> = d
                        .resource_addresses
                        .iter()
                        .map(|(name, given)| format!("{name} {}", given.join(",")))
                        .collect();
                    vec![
                        d.id.clone(),
                        d.name.clone(),
                        d.state.to_string(),
                        d.worker_id.clone().unwrap_or_else(|| "-".into()),
                        d.cores.to_string(),
                        format_mb(d.memory_mb),
                        resources.join(" "),
                        d.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                        d.waiting_reason.clone().unwrap_or_default(),
                    ]
                },
            )?;
        }
        ListWhat::Apps => {
            let views: Vec<AppView> = client.apps().await?.iter().map(Into::into).collect();
            print_list(
                &mut out,
                json,
                &views,
                &[
                    "ID",
                    "NAME",
                    "STATE",
                    "DRIVER",
                    "EXECUTORS",
                    "CORES",
                    "MEM/EXECUTOR",
                    "WAITING",
                ],
                |a| {
                    let live = a
                        .executors
                        .iter()
                        .filter(|e| matches!(e.state, "LAUNCHING" | "RUNNING"))
                        .count();
                    vec![
                        a.id.clone(),
                        a.name.clone(),
                        a.state.to_string(),
                        a.driver_id.clone().unwrap_or_else(|| "-".into()),
                        format!("{live}/{}", a.target_executors),
                        a.cores_granted.to_string(),
                        format_mb(a.executor_memory_mb),
                        a.waiting_reason.clone().unwrap_or_default(),
                    ]
                },
            )?;
        }
    }
    Ok(0)
}

/// Prints the queues as a table (or JSON), and on stderr why the queues file was refused.
pub async fn queues(client: &Client, json: bool) -> Result<i32> {
    let answer = client.queues().await?;
    let views: Vec<QueueView> = answer.queues.iter().map(Into::into).collect();
    let mut out = std::io::stdout().lock();
    let amount = |a: &AmountView| {
        let cores = if a.cores == u64::MAX {
            "-".to_string()
        } else {
            a.cores.to_string()
        };
        let memory = if a.memory_mb == u64::MAX {
            "-".to_string()
        } else {
            format_mb(a.memory_mb)
        };
        format!("{cores} / {memory}")
    };
    print_list(
        &mut out,
        json,
        &views,
        &[
            "QUEUE",
            "WEIGHT",
            "USED",
            "GUARANTEED",
            "MAX",
            "WAITING",
            "WANTED",
            "SHARE",
        ],
        |q| {
            vec![
                q.name.clone(),
                q.weight.to_string(),
                amount(&q.used),
                amount(&q.guaranteed),
                q.max.as_ref().map_or_else(|| "-".to_string(), amount),
                q.waiting.to_string(),
                q.wanted_executors.to_string(),
                format!("{:.0}%", q.share * 100.0),
            ]
        },
    )?;
    if !answer.config_error.is_empty() {
        eprintln!(
            "the queues file was refused; the queues above stay in force: {}",
            answer.config_error
        );
    }
    Ok(0)
}

/// Asks for `add` more executors of `app_id`, or ends those in `kill`; prints how many it
/// wants and runs after.
pub async fn executors(
    client: &Client,
    app_id: &str,
    add: Option<u32>,
    kill: &[u32],
) -> Result<i32> {
    let app = match add {
        Some(n) => client.request_executors(app_id, n).await?,
        None => client.kill_executors(app_id, kill).await?,
    };
    let live = app
        .executors
        .iter()
        .filter(|e| {
            matches!(
                executor_state(e.state),
                ExecutorState::Launching | ExecutorState::Running
            )
        })
        .count();
    println!(
        "{app_id}: {} executors wanted, {live} running or launching",
        app.target_executors
    );
    Ok(0)
}

/// Copies a driver's or executor's log to stdout; with `follow`, until it ends.
pub async fn logs(client: &Client, id: &str, stream: LogStream, follow: bool) -> Result<i32> {
    let mut chunks = client.logs(id, stream, 0, follow).await?;
    let mut out = std::io::stdout().lock();
    let mut told = false;
    while let Some(chunk) = chunks.message().await? {
        if chunk.kept && !told {
            told = true;
            let cut = if chunk.kept_from > 0 {
                format!("; the first {} bytes were cut", chunk.kept_from)
            } else {
                String::new()
            };
            eprintln!(
                "hearth: the worker that ran {id} is gone; this is the tail the master kept \
                 (up to byte {}{cut})",
                chunk.size
            );
        }
        out.write_all(&chunk.data)?;
        out.flush()?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_driver() {
        let mut d = Driver {
            state: DriverState::Failed as i32,
            exit_code: Some(3),
            ..Default::default()
        };
        assert_eq!(exit_code_of(&d), 3);
        d.exit_code = None;
        assert_eq!(exit_code_of(&d), 1);
        d.state = DriverState::Finished as i32;
        assert_eq!(exit_code_of(&d), 0);
        d.state = DriverState::Killed as i32;
        assert_eq!(exit_code_of(&d), 143);
    }
}
