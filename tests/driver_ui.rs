//! Drivers' own web UIs through the master, with real processes: a driver serving a small web
//! application (Python's standard library, `tests/fixtures/driver_ui.py`) is reached at
//! `/drivers/{id}/ui/` through the tunnel its worker opens: pages, a streamed response, an
//! upload, a websocket round trip, the forwarded headers, `--ui-auth` (the master's secret
//! never reaches the driver), `--ui-keep-prefix`, and in headless Chromium under a base path.

mod support;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use base64::Engine;
use fantoccini::Locator;
use hearth_common::proto::WorkerState;
use support::*;

const LIMIT: Duration = Duration::from_secs(20);

fn fixture() -> String {
    format!("{}/tests/fixtures/driver_ui.py", env!("CARGO_MANIFEST_DIR"))
}

/// Submits a driver serving the fixture on a free port and waits until it listens.
async fn ui_driver(cluster: &Cluster, extra: &[&str], fixture_args: &[&str]) -> String {
    let port = free_port().to_string();
    let script = fixture();
    let mut args = vec!["--memory", "64m", "--ui-port", &port];
    args.extend_from_slice(extra);
    args.extend(["--", "python3", "-u", &script]);
    args.extend_from_slice(fixture_args);
    let id = cluster.submit(&args);
    cluster.wait_state(&id, "RUNNING", LIMIT).await;
    wait_for("the driver's UI to listen", LIMIT, || {
        let out = cluster.hearth(&["logs", &id]);
        async move { stdout(&out).contains("driver ui on").then_some(()) }
    })
    .await;
    id
}

/// One raw HTTP/1.1 exchange on a fresh connection: what came back before the server closed.
fn raw(web: &str, request: &str) -> String {
    let mut tcp = TcpStream::connect(web).expect("connect");
    tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
    tcp.write_all(request.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn element<'a>(page: &'a str, id: &str) -> &'a str {
    let open = format!("<p id=\"{id}\">");
    let start = page
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in {page}"))
        + open.len();
    let end = page[start..].find("</p>").expect("closed") + start;
    &page[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_ui_is_served_through_the_master_streams_uploads_and_keeps_the_secret() {
    let mut cluster = Cluster::start_with(MasterOptions {
        extra: vec!["--ui-auth".into()],
        ..Default::default()
    });
    let worker = cluster.spawn_worker(4, "2g", &["--kill-grace", "1s"]);
    cluster
        .wait_worker(&worker, WorkerState::Alive, LIMIT)
        .await;
    let secret = cluster.secret.clone().expect("a secret");
    let bearer = format!("Bearer {secret}");
    let auth = [("authorization", bearer.as_str())];
    let id = ui_driver(&cluster, &[], &[]).await;
    let ui = format!("/drivers/{id}/ui/");

    // Behind --ui-auth like every page.
    let (status, _, _) = http_request(&cluster.web, "GET", &ui, &[], "");
    assert_eq!(status, 401);
    let (status, head, page) = http_request(&cluster.web, "GET", &ui, &auth, "");
    assert_eq!(status, 200, "{page}");
    assert!(head.contains("text/html"), "{head}");
    assert_eq!(element(&page, "path"), "/", "the prefix is taken off");
    assert_eq!(element(&page, "prefix"), format!("/drivers/{id}/ui"));
    assert_eq!(element(&page, "base"), format!("/drivers/{id}/ui"));
    assert_eq!(element(&page, "fhost"), cluster.web);
    assert_eq!(element(&page, "proto"), "http");
    assert_eq!(
        element(&page, "auth"),
        "absent",
        "the master's secret stays with the master"
    );
    let (status, head, _) =
        http_request(&cluster.web, "GET", &format!("/drivers/{id}/ui"), &auth, "");
    assert_eq!(status, 308);
    assert!(
        head.contains(&format!("location: /drivers/{id}/ui/")),
        "{head}"
    );
    let (_, _, second) = http_request(&cluster.web, "GET", &format!("{ui}page2?x=1"), &auth, "");
    assert!(second.contains("second page"), "{second}");

    // A body goes through whole.
    let upload = "u".repeat(300_000);
    let (status, _, answer) =
        http_request(&cluster.web, "POST", &format!("{ui}upload"), &auth, &upload);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.starts_with("300000 "), "{answer}");

    // A streamed answer arrives as it is written, not when it ends (50 lines, 100 ms apart).
    let started = Instant::now();
    let mut tcp = TcpStream::connect(&cluster.web).expect("connect");
    tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
    write!(
        tcp,
        "GET {ui}stream HTTP/1.1\r\nHost: {}\r\nAuthorization: {bearer}\r\nConnection: close\r\n\r\n",
        cluster.web
    )
    .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let first_tick = loop {
        let n = tcp.read(&mut buf).expect("read");
        assert!(n > 0, "closed before the first line");
        seen.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&seen).contains("tick 1\n") {
            break started.elapsed();
        }
    };
    assert!(
        first_tick < Duration::from_secs(3),
        "the first lines took {first_tick:?}: buffered, not streamed"
    );
    let _ = tcp.read_to_end(&mut seen);
    let all = String::from_utf8_lossy(&seen);
    assert!(all.contains("tick 49\n"), "{all}");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "the whole stream came at once"
    );

    // A websocket, joined end to end: a masked text frame out, its echo back.
    let mut tcp = TcpStream::connect(&cluster.web).expect("connect");
    tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
    let key = base64::engine::general_purpose::STANDARD.encode(b"0123456789abcdef");
    write!(
        tcp,
        "GET {ui}ws HTTP/1.1\r\nHost: {}\r\nAuthorization: {bearer}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        cluster.web
    )
    .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).expect("the handshake's answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-accept: "), "{head}");
    let mask = [1u8, 2, 3, 4];
    let word = b"hello-through-the-tunnel";
    let mut frame = vec![0x81, 0x80 | word.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(word.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).expect("send a frame");
    let mut echo = [0u8; 2];
    tcp.read_exact(&mut echo).expect("the echo's header");
    assert_eq!(echo, [0x81, word.len() as u8]);
    let mut body = vec![0u8; word.len()];
    tcp.read_exact(&mut body).expect("the echo");
    assert_eq!(body, word);
    drop(tcp);

    // The driver page links its UI while it runs; the API says where it is.
    let (_, _, page) = http_request(&cluster.web, "GET", &format!("/drivers/{id}"), &auth, "");
    assert!(page.contains("id=\"driver-ui-link\""), "{page}");
    let (_, _, api) = http_request(
        &cluster.web,
        "GET",
        &format!("/api/v1/drivers/{id}"),
        &auth,
        "",
    );
    let api: serde_json::Value = serde_json::from_str(&api).expect("json");
    assert_eq!(api["uiPath"], format!("/drivers/{id}/ui/"));
    let status = cluster.hearth(&["status", &id]);
    assert!(
        stdout(&status).contains(&format!("ui:         /drivers/{id}/ui/")),
        "{}",
        stdout(&status)
    );

    // A driver without a UI, and one that ended, say so.
    let plain = cluster.submit(&["--memory", "64m", "--", "sleep", "600"]);
    cluster.wait_state(&plain, "RUNNING", LIMIT).await;
    let (status, _, page) = http_request(
        &cluster.web,
        "GET",
        &format!("/drivers/{plain}/ui/"),
        &auth,
        "",
    );
    assert_eq!(status, 404);
    assert!(page.contains("submitted without --ui-port"), "{page}");
    let out = cluster.hearth(&["kill", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    cluster.wait_state(&id, "KILLED", LIMIT).await;
    let (status, _, page) = http_request(&cluster.web, "GET", &ui, &auth, "");
    assert_eq!(status, 503);
    assert!(page.contains("served only while it runs"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ui_keep_prefix_the_driver_is_asked_with_its_public_path() {
    let mut cluster = Cluster::start_with(MasterOptions {
        extra: vec!["--ui-base-path".into(), "/hearth".into()],
        ..Default::default()
    });
    let worker = cluster.spawn_worker(2, "1g", &["--kill-grace", "1s"]);
    cluster
        .wait_worker(&worker, WorkerState::Alive, LIMIT)
        .await;
    let id = ui_driver(&cluster, &["--ui-keep-prefix"], &["--under-base"]).await;
    let public = format!("/hearth/drivers/{id}/ui");
    // The same page whether the ingress in front keeps the base path or strips it.
    for path in [format!("{public}/"), format!("/drivers/{id}/ui/")] {
        let (status, page) = cluster.http_get(&path);
        assert_eq!(status, 200, "{path}: {page}");
        assert_eq!(element(&page, "path"), format!("{public}/"));
        assert_eq!(element(&page, "base"), public);
        assert_eq!(element(&page, "prefix"), public);
    }
    // A port nobody listens on: the worker says so.
    let port = free_port().to_string();
    let dark = cluster.submit(&["--memory", "64m", "--ui-port", &port, "--", "sleep", "600"]);
    cluster.wait_state(&dark, "RUNNING", LIMIT).await;
    let (status, page) = cluster.http_get(&format!("/drivers/{dark}/ui/"));
    assert_eq!(status, 503, "{page}");
    assert!(page.contains("is not answering"), "{page}");
    assert!(raw(&cluster.web, "GET /healthz HTTP/1.0\r\n\r\n").contains("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_uis_nobody_reads_cannot_starve_their_worker_or_each_other() {
    let mut cluster = Cluster::start();
    let worker = cluster.spawn_worker(4, "2g", &["--kill-grace", "1s"]);
    cluster
        .wait_worker(&worker, WorkerState::Alive, LIMIT)
        .await;
    let id = ui_driver(&cluster, &[], &[]).await;
    let page = format!("/drivers/{id}/ui/");
    // Answers that never end, to clients that never read: all of the worker's 32 tunnels.
    // Each one is answered (its tunnel open and streaming) before the next is asked for, then
    // never read again.
    let endless = || {
        let mut tcp = TcpStream::connect(&cluster.web).expect("connect");
        tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
        write!(
            tcp,
            "GET /drivers/{id}/ui/forever HTTP/1.1\r\nHost: {}\r\n\r\n",
            cluster.web
        )
        .expect("write");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).expect("the answer's head");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        tcp
    };
    let mut stalled: Vec<TcpStream> = (0..32).map(|_| endless()).collect();
    // Once all 32 stream, the next connection is refused, saying why.
    let refusal = wait_for("the 33rd connection refused", LIMIT, || {
        let (status, body) = cluster.http_get(&page);
        async move { (status == 429).then_some(body) }
    })
    .await;
    assert!(
        refusal.contains("32 driver UI connections open"),
        "{refusal}"
    );
    // The worker's own stream is untouched: it stays ALIVE, takes orders and answers log reads.
    let other = cluster.submit(&[
        "--memory",
        "64m",
        "--",
        "sh",
        "-c",
        "echo still-here; exec sleep 600",
    ]);
    cluster
        .wait_state(&other, "RUNNING", Duration::from_secs(5))
        .await;
    // RUNNING is reported when its keeper starts: its first line follows a moment later.
    wait_for("its log read through the worker", LIMIT, || {
        let out = cluster.hearth(&["logs", &other]);
        async move { stdout(&out).contains("still-here").then_some(()) }
    })
    .await;
    cluster
        .wait_worker(&worker, WorkerState::Alive, LIMIT)
        .await;
    // One closed, its tunnel serves pages beside the 31 stalled ones, at once: they hold only
    // their own room.
    drop(stalled.pop());
    let took = wait_for("a tunnel free again", LIMIT, || {
        let started = Instant::now();
        let (status, _) = cluster.http_get(&page);
        let took = started.elapsed();
        async move { (status == 200).then_some(took) }
    })
    .await;
    assert!(
        took < Duration::from_secs(3),
        "a page took {took:?} beside the stalled streams"
    );
    // Closing them all gives the room back.
    drop(stalled);
    wait_for("the tunnels closed", LIMIT, || {
        let free: Vec<u16> = (0..4).map(|_| cluster.http_get(&page).0).collect();
        async move { free.iter().all(|s| *s == 200).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver (Debian chromium, chromium-driver); ./scripts/test installs them and runs it, or: cargo test -- --include-ignored"]
async fn a_driver_ui_is_browsed_in_chromium_under_a_base_path_and_ui_auth_with_its_websocket() {
    let mut cluster = Cluster::start_with(MasterOptions {
        extra: vec![
            "--ui-base-path".into(),
            "/hearth".into(),
            "--ui-auth".into(),
        ],
        ..Default::default()
    });
    let worker = cluster.spawn_worker(2, "1g", &["--kill-grace", "1s"]);
    cluster
        .wait_worker(&worker, WorkerState::Alive, LIMIT)
        .await;
    let id = ui_driver(&cluster, &[], &[]).await;

    let browser = Browser::start().await;
    let c = &browser.client;
    // Signed in the way a browser is (basic auth, the secret as password), then through the
    // driver page's link like a person.
    let secret = cluster.secret.clone().expect("a secret");
    c.goto(&format!(
        "http://hearth:{secret}@{}/hearth/drivers/{id}",
        cluster.web
    ))
    .await
    .expect("the driver page");
    browser.click("#driver-ui-link").await;
    assert_eq!(browser.text("#title").await, "driver ui");
    assert_eq!(
        c.current_url().await.expect("url").path(),
        format!("/hearth/drivers/{id}/ui/")
    );
    assert_eq!(
        browser.text("#prefix").await,
        format!("/hearth/drivers/{id}/ui")
    );
    assert_eq!(
        browser.text("#auth").await,
        "absent",
        "the browser's credentials stay"
    );
    let echo = wait_for("the websocket's echo", LIMIT, || async {
        let text = c.find(Locator::Css("#ws")).await.ok()?.text().await.ok()?;
        (text != "pending").then_some(text)
    })
    .await;
    assert_eq!(echo, "echo:ping-42");
    browser.click("#next").await;
    assert_eq!(browser.text("#second").await, "second page");
    assert_eq!(
        c.current_url().await.expect("url").path(),
        format!("/hearth/drivers/{id}/ui/page2")
    );
    browser.close().await;
}
