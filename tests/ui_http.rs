//! What the web UI promises, checked over plain HTTP (no browser needed): log pages that show
//! a log's tail and load more of it up to their limit, executors' log pages, the cap on log
//! reads in flight to one worker, the kill forms for drivers and applications, which take
//! the current secret and, during a rotation, the previous one, and each worker's last
//! heartbeat.

mod support;

use std::time::{Duration, Instant};

use hearth_common::{
    auth::{Secret, SendSecret},
    proto::{
        DriverState, DriverStatus, MasterMessage, Register, WorkerMessage, WorkerState,
        master_message, worker_message::Msg, worker_service_client::WorkerServiceClient,
    },
};
use support::{Cluster, MasterOptions, http_get, http_request};

const LIMIT: Duration = Duration::from_secs(20);
const MIB: u64 = 1024 * 1024;

/// `Bytes START–END of SIZE` on a log page.
fn log_range(page: &str) -> (u64, u64, u64) {
    let line = page
        .split("id=\"log-range\">")
        .nth(1)
        .unwrap_or_else(|| panic!("no log range in {page:.2000}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(3)
        .map(|s| s.parse().expect("a number"))
        .collect();
    assert_eq!(numbers.len(), 3, "{line:.200}");
    (numbers[0], numbers[1], numbers[2])
}

/// The "Load more" link of a log page, if it has one.
fn load_more(page: &str) -> Option<String> {
    let (before, _) = page.split_once("id=\"load-more\"")?;
    let href = before.rsplit_once("href=\"")?.1;
    Some(href.split('"').next()?.replace("&amp;", "&"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_pages_show_the_tail_and_load_more_up_to_16_mib() {
    let mut cluster = Cluster::start();
    cluster.add_worker(2, "1g").await;
    // About 20 MiB of numbered lines (8 bytes each), more than a page ever shows.
    let id = cluster.submit(&[
        "--memory",
        "64m",
        "--",
        "sh",
        "-c",
        "seq -w 1 2600000; echo done; exec sleep 600",
    ]);
    let path = format!("/drivers/{id}/logs/stdout");
    let first = support::wait_for("the whole log written", LIMIT, || {
        let (code, page) = http_get(&cluster.web, &path);
        async move { (code == 200 && page.contains("done\n")).then_some(page) }
    })
    .await;
    let size = 2_600_000 * 8 + 5;
    assert_eq!(log_range(&first), (size - 64 * 1024, size, size));
    assert!(first.contains("2600000\ndone"), "the tail ends the page");
    assert!(!first.contains("\n0000001\n"), "only the tail is shown");

    // Each "Load more" doubles what is shown, until the page's limit of 16 MiB.
    let mut page = first;
    let mut shown = 64 * 1024;
    while let Some(href) = load_more(&page) {
        shown *= 2;
        assert_eq!(href, format!("{path}?bytes={shown}"));
        let (code, next) = http_get(&cluster.web, &href);
        assert_eq!(code, 200, "{href}");
        page = next;
        assert_eq!(log_range(&page), (size - shown, size, size), "{href}");
    }
    assert_eq!(shown, 16 * MIB, "loading more stops at 16 MiB");
    // Asking for more than the limit shows the limit.
    let (code, huge) = http_get(&cluster.web, &format!("{path}?bytes=1000000000"));
    assert_eq!(code, 200);
    assert_eq!(log_range(&huge), (size - 16 * MIB, size, size));
    assert!(load_more(&huge).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_have_log_pages_read_through_the_master() {
    let mut cluster = Cluster::start();
    cluster.add_worker(4, "2g").await;
    let driver = cluster.submit_app(
        2,
        "echo executor $HEARTH_EXECUTOR_ID of $HEARTH_APP_ID; echo to-stderr >&2; exec sleep 600",
        &[],
        &["sleep", "600"],
    );
    let d = cluster
        .wait_driver(&driver, "an application", LIMIT, |d| !d.app_id.is_empty())
        .await;
    let app = d.app_id;
    cluster
        .wait_app(&app, "2 executors RUNNING", LIMIT, |a| {
            a["executors"]
                .as_array()
                .is_some_and(|e| e.iter().filter(|e| e["state"] == "RUNNING").count() == 2)
        })
        .await;
    for n in 0..2 {
        let stdout = format!("/apps/{app}/executors/{n}/logs/stdout");
        let page = support::wait_for(&format!("{stdout} written"), LIMIT, || {
            let (code, page) = http_get(&cluster.web, &stdout);
            async move { (code == 200 && page.contains("executor")).then_some(page) }
        })
        .await;
        assert!(
            page.contains(&format!("executor {n} of {app}")),
            "{page:.2000}"
        );
        assert!(
            page.contains(&format!("href=\"/apps/{app}\"")),
            "links back"
        );
        let (code, err) = http_get(
            &cluster.web,
            &format!("/apps/{app}/executors/{n}/logs/stderr"),
        );
        assert_eq!(code, 200);
        assert!(err.contains("to-stderr"), "{err:.2000}");
    }
    let (code, _) = http_get(
        &cluster.web,
        &format!("/apps/{app}/executors/7/logs/stdout"),
    );
    assert_eq!(code, 404, "an executor the application never had");
}

/// A worker that runs what it is told (it only says so) and never answers a log read: reads
/// of its logs pile up to the cap, and the next is refused at once, while the logs of other
/// workers still read and the stuck one stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_reads_to_one_worker_are_capped_without_cutting_it_off() {
    let mut cluster = Cluster::start();
    let secret = Secret::new(cluster.secret.as_deref().expect("secret")).expect("secret");
    let channel = hearth_common::client::channel(&cluster.url, &Default::default())
        .await
        .expect("channel");
    let mut raw = WorkerServiceClient::with_interceptor(
        channel,
        SendSecret::new(Some(&secret)).expect("header"),
    );
    let silent = "worker-20261121000000-127.0.0.9-9998".to_string();
    let (up, up_rx) = tokio::sync::mpsc::channel(64);
    up.send(WorkerMessage {
        msg: Some(Msg::Register(Register {
            worker_id: silent.clone(),
            name: "silent".into(),
            host: "127.0.0.9".into(),
            web_port: 9998,
            cores: 1,
            memory_mb: 1024,
            ..Default::default()
        })),
    })
    .await
    .expect("queue Register");
    let mut orders = raw
        .session(tokio_stream::wrappers::ReceiverStream::new(up_rx))
        .await
        .expect("session accepted")
        .into_inner();
    let (reads_tx, mut reads) = tokio::sync::mpsc::unbounded_channel();
    let answering = up.clone();
    tokio::spawn(async move {
        while let Ok(Some(MasterMessage { msg: Some(msg), .. })) = orders.message().await {
            match msg {
                master_message::Msg::LaunchDriver(launch) => {
                    let running = DriverStatus {
                        driver_id: launch.driver_id,
                        attempt: launch.attempt,
                        state: DriverState::Running as i32,
                        ..Default::default()
                    };
                    let report = WorkerMessage {
                        msg: Some(Msg::DriverStatus(running)),
                    };
                    if answering.send(report).await.is_err() {
                        return;
                    }
                }
                master_message::Msg::ReadLog(read) => {
                    let _ = reads_tx.send(read.request_id);
                }
                _ => {}
            }
        }
    });
    cluster
        .wait_worker(&silent, WorkerState::Alive, LIMIT)
        .await;
    let on_silent = cluster.submit(&["--memory", "64m", "--", "sleep", "600"]);
    let d = cluster.wait_state(&on_silent, "RUNNING", LIMIT).await;
    assert_eq!(d.worker_id, silent);
    // A real worker beside it, with a driver whose log has something in it.
    cluster.add_worker(1, "512m").await;
    let on_real = cluster.submit(&[
        "--memory",
        "64m",
        "--",
        "sh",
        "-c",
        "echo hello; exec sleep 600",
    ]);
    cluster.wait_state(&on_real, "RUNNING", LIMIT).await;

    // Eight reads of the silent worker's log, each waiting for an answer that never comes.
    let web = cluster.web.clone();
    let path = format!("/drivers/{on_silent}/logs/stdout");
    let mut waiting = Vec::new();
    for _ in 0..8 {
        let (web, path) = (web.clone(), path.clone());
        waiting.push(std::thread::spawn(move || {
            support::try_http_get(&web, &path)
        }));
    }
    let mut asked = 0;
    while asked < 8 {
        tokio::time::timeout(LIMIT, reads.recv())
            .await
            .expect("the master asks the worker for the log")
            .expect("the silent worker runs");
        asked += 1;
    }
    // The ninth is refused at once, saying why.
    let started = Instant::now();
    let (code, page) = http_get(&web, &path);
    assert_eq!(code, 503, "{page:.2000}");
    assert!(
        page.contains("is answering 8 log reads already"),
        "{page:.2000}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Other workers' logs are read as ever, and the silent worker is still there.
    let (code, page) = http_get(&web, &format!("/drivers/{on_real}/logs/stdout"));
    assert_eq!(code, 200);
    assert!(page.contains("hello"), "{page:.2000}");
    let workers = cluster.client().await.workers().await.expect("workers");
    let w = workers
        .iter()
        .find(|w| w.id == silent)
        .expect("the silent worker");
    assert_eq!(w.state, WorkerState::Alive as i32);
    // The eight waiting reads are not awaited (they would answer after the master's 10 s log
    // timeout); they end with the cluster.
    drop(waiting);
    drop(up);
}

/// POSTs the kill form of `page` (`/drivers/ID` or `/apps/ID`) with `secret`: the status.
fn kill_form(cluster: &Cluster, page: &str, secret: &str) -> u16 {
    let body = format!("secret={secret}");
    let (status, _, _) = http_request(
        &cluster.web,
        "POST",
        &format!("{page}/kill"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    );
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_forms_take_the_secret_and_during_a_rotation_the_previous_one() {
    let old = "old-secret-7c1e";
    let dir = tempfile::tempdir().expect("temp dir");
    let previous = dir.path().join("previous");
    std::fs::write(&previous, format!("{old}\n")).expect("write the previous secret");
    let mut cluster = Cluster::start_with(MasterOptions {
        secret: Some("new-secret-52ab".into()),
        extra: vec![
            "--previous-secret-file".into(),
            previous.display().to_string(),
            "--ui-kill".into(),
        ],
        ..Default::default()
    });
    cluster.add_worker(4, "2g").await;
    let with_app =
        |name: &str| cluster.submit_app(1, "sleep 600", &["--name", name], &["sleep", "600"]);
    let first = with_app("first");
    let second = with_app("second");
    let mut apps = Vec::new();
    for driver in [&first, &second] {
        let d = cluster
            .wait_driver(driver, "RUNNING with its application", LIMIT, |d| {
                !d.app_id.is_empty() && d.state == DriverState::Running as i32
            })
            .await;
        apps.push(d.app_id);
    }

    // A wrong secret kills nothing and changes nothing (once the executors' own reports,
    // which change their records, are in).
    let before = cluster
        .wait_app(&apps[0], "its executor RUNNING", LIMIT, |a| {
            a["executors"][0]["state"] == "RUNNING"
        })
        .await;
    assert_eq!(
        kill_form(&cluster, &format!("/apps/{}", apps[0]), "neither"),
        403
    );
    assert_eq!(kill_form(&cluster, &format!("/drivers/{first}"), ""), 403);
    assert_eq!(cluster.json(&format!("/api/v1/apps/{}", apps[0])), before);
    let d = cluster.client().await.driver(&first).await.expect("driver");
    assert_eq!(d.state, DriverState::Running as i32);

    // The application is killed from its page with the previous secret, the driver from its
    // page with the new one; each form answers by going back to the page.
    assert_eq!(kill_form(&cluster, &format!("/apps/{}", apps[0]), old), 303);
    cluster
        .wait_app(&apps[0], "KILLED", LIMIT, |a| a["state"] == "KILLED")
        .await;
    // As with `hearth kill app-...`, its driver is killed too.
    cluster.wait_state(&first, "KILLED", LIMIT).await;
    assert_eq!(
        kill_form(&cluster, &format!("/drivers/{second}"), "new-secret-52ab"),
        303
    );
    cluster.wait_state(&second, "KILLED", LIMIT).await;
    cluster
        .wait_app(&apps[1], "ended with its driver", LIMIT, |a| {
            a["state"] != "RUNNING" && a["state"] != "WAITING"
        })
        .await;
}

/// An idle worker's heartbeats are answered beside the master's state, never written into it;
/// its page, the overview and Spark's `/json/` still show the last one, not its registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_last_heartbeat_moves_on_though_it_reports_nothing() {
    // Heartbeats every 0.5 s.
    let mut cluster = Cluster::start_with(MasterOptions {
        extra: vec!["--worker-timeout".into(), "2s".into()],
        ..Default::default()
    });
    let worker = cluster.add_worker(1, "256m").await;
    let last_heartbeat = |cluster: &Cluster| -> i64 {
        let (code, body) = http_get(&cluster.web, "/json/");
        assert_eq!(code, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        json["workers"][0]["lastheartbeat"]
            .as_i64()
            .unwrap_or_else(|| panic!("no lastheartbeat in {json}"))
    };
    // The time in the worker's page, and in the last cell of its row in the overview.
    let shown = |cluster: &Cluster| -> (String, String) {
        let (code, page) = http_get(&cluster.web, &format!("/workers/{worker}"));
        assert_eq!(code, 200, "{page}");
        let on_page = page
            .split("Last heartbeat:</strong> ")
            .nth(1)
            .and_then(|rest| rest.split("</li>").next())
            .unwrap_or_else(|| panic!("no last heartbeat on the worker's page:\n{page}"))
            .to_string();
        let (code, overview) = http_get(&cluster.web, "/");
        assert_eq!(code, 200, "{overview}");
        let in_row = overview
            .split("<tr>")
            .find(|row| row.contains(&format!("/workers/{worker}\"")))
            .and_then(|row| row.rsplit("<td>").next())
            .and_then(|cell| cell.split("</td>").next())
            .unwrap_or_else(|| panic!("no row of {worker} in the overview:\n{overview}"))
            .to_string();
        (on_page, in_row)
    };
    let first = last_heartbeat(&cluster);
    let (page, row) = shown(&cluster);
    assert!(page.starts_with("20"), "worker page: {page}");
    assert!(row.starts_with("20"), "overview row: {row}");
    // A heartbeat at least 2 s after `first` is at least 1.5 s after what the pages showed
    // (read within an interval of `first`), so in another second.
    let moved_on = format!("/json/'s last heartbeat 2 s past {first} ms");
    support::wait_for(&moved_on, LIMIT, || {
        let later = last_heartbeat(&cluster);
        async move { (later >= first + 2000).then_some(()) }
    })
    .await;
    let (page_later, row_later) = shown(&cluster);
    assert_ne!(
        page_later, page,
        "the worker's page shows the same last heartbeat"
    );
    assert_ne!(row_later, row, "the overview shows the same last heartbeat");
}

/// The UI under kubectl's service proxy path, given as the base path: every page the overview
/// links to answers under it, and every link stays inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_serves_under_kubectls_service_proxy_path() {
    let prefix = "/api/v1/namespaces/hearth/services/hearth-webui:8080/proxy";
    let mut cluster = Cluster::start_with(MasterOptions {
        extra: vec!["--ui-base-path".into(), prefix.into()],
        ..Default::default()
    });
    let worker = cluster.add_worker(2, "1g").await;
    let driver = cluster.submit(&["--memory", "64m", "--", "sh", "-c", "echo hi; sleep 600"]);
    cluster.wait_state(&driver, "RUNNING", LIMIT).await;
    let seen = crawl(&cluster.web, prefix);
    assert!(
        seen.contains(&format!("{prefix}/workers/{worker}")),
        "{seen:?}"
    );
    assert!(
        seen.contains(&format!("{prefix}/drivers/{driver}")),
        "{seen:?}"
    );
    // The master's own paths still answer at the root.
    let (code, _) = http_get(&cluster.web, "/api/v1/workers");
    assert_eq!(code, 200);
}

/// A reverse proxy as an ingress with a rewrite rule is one: requests under `prefix` go to the
/// master with the prefix taken off and `X-Forwarded-Prefix` set; answers come back untouched
/// (no link is rewritten). Its address; it serves until the test process ends.
fn stripping_proxy(upstream: &str, prefix: &'static str) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let addr = listener.local_addr().expect("address").to_string();
    let upstream = upstream.to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().expect("clone"));
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    return;
                }
                let mut parts = request_line.split_whitespace();
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let mut headers = Vec::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if !lower.starts_with("connection:") {
                        headers.push(line);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let mut client = client;
                let Some(rest) = target.strip_prefix(prefix) else {
                    let _ = client.write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot here\n",
                    );
                    return;
                };
                let rest = if rest.is_empty() { "/" } else { rest };
                let Ok(mut up) = std::net::TcpStream::connect(&upstream) else {
                    return;
                };
                let mut head = format!("{method} {rest} HTTP/1.1\r\n");
                for h in &headers {
                    head.push_str(h);
                }
                head.push_str(&format!(
                    "x-forwarded-prefix: {prefix}\r\nconnection: close\r\n\r\n"
                ));
                let _ = up.write_all(head.as_bytes());
                let _ = up.write_all(&body);
                let _ = std::io::copy(&mut up, &mut client);
            });
        }
    });
    addr
}

/// Crawls every page linked from the overview under `prefix` through `web` (at most 40): each
/// answers 200 and every link stays under `prefix`. The paths seen.
fn crawl(web: &str, prefix: &str) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![format!("{prefix}/")];
    while let Some(path) = todo.pop() {
        if !seen.insert(path.clone()) || seen.len() > 40 {
            continue;
        }
        let (code, page) = http_get(web, &path);
        assert_eq!(code, 200, "{path}: {page:.600}");
        for link in page
            .split("href=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(|l| l.replace("&amp;", "&"))
        {
            if link.is_empty() || link.starts_with('#') || link.starts_with('?') {
                continue;
            }
            assert!(
                link.starts_with(prefix),
                "{path} links to {link}, outside {prefix}"
            );
            if !link.contains("/logs/") && !link.contains("/ui/") {
                todo.push(link.split('?').next().unwrap_or_default().to_string());
            }
        }
    }
    seen
}

/// Behind a proxy that takes kubectl's service proxy path off and rewrites nothing, every page
/// is served and every link stays inside the prefix: without any flag (the master reads the
/// prefix from `X-Forwarded-Prefix`), and with `--ui-base-path` naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_behind_a_path_stripping_proxy_keeps_every_link_inside_its_prefix() {
    const PREFIX: &str = "/api/v1/namespaces/hearth/services/hearth-webui:8080/proxy";
    for flag in [false, true] {
        let mut extra = vec!["--ui-kill".to_string()];
        if flag {
            extra.extend(["--ui-base-path".into(), PREFIX.into()]);
        }
        let mut cluster = Cluster::start_with(MasterOptions {
            extra,
            ..Default::default()
        });
        let worker = cluster.add_worker(2, "1g").await;
        let driver = cluster.submit(&["--memory", "64m", "--", "sh", "-c", "echo hi; sleep 600"]);
        cluster.wait_state(&driver, "RUNNING", LIMIT).await;
        let proxy = stripping_proxy(&cluster.web, PREFIX);
        let seen = crawl(&proxy, PREFIX);
        for page in [
            format!("{PREFIX}/workers/{worker}"),
            format!("{PREFIX}/drivers/{driver}"),
            format!("{PREFIX}/queues"),
        ] {
            assert!(
                seen.contains(&page),
                "flag {flag}: {page} not reached: {seen:?}"
            );
        }
        // The kill form posts inside the prefix and comes back there.
        let secret = cluster.secret.clone().unwrap_or_default();
        let (code, head, _) = http_request(
            &proxy,
            "POST",
            &format!("{PREFIX}/drivers/{driver}/kill"),
            &[("content-type", "application/x-www-form-urlencoded")],
            &format!("secret={secret}"),
        );
        assert!(
            code == 303 && head.contains(&format!("location: {PREFIX}/drivers/{driver}")),
            "flag {flag}: {code} {head}"
        );
    }
}
