//! The web UI in a real headless Chromium (driven over WebDriver by `chromedriver`) against a
//! cluster of real processes: counts match the API, detail pages and logs render, kill buttons
//! work only when enabled and with the secret, and links hold under a proxy base path.
//! Also: `/json/` in Spark's shape and `/metrics` as valid Prometheus text.

mod support;

use std::{path::PathBuf, time::Duration};

use fantoccini::Locator;
use serde_json::{Value, json};
use support::*;

const LIMIT: Duration = Duration::from_secs(20);

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver (Debian chromium, chromium-driver); ./scripts/test installs them and runs it, or: cargo test -- --include-ignored"]
async fn the_ui_shows_the_cluster_its_logs_and_kills_a_driver_when_enabled() {
    let mut cluster = Cluster::start_with(MasterOptions {
        extra: vec!["--ui-kill".into()],
        ..Default::default()
    });
    let secret = cluster.secret.clone().expect("a secret");
    cluster.add_worker(2, "1g").await;
    cluster.add_worker(2, "1g").await;
    let driver = cluster.submit(&[
        "--name",
        "ui-driver",
        "--memory",
        "256m",
        "--env",
        "API_TOKEN=do-not-show-9d2c",
        "--",
        "sh",
        "-c",
        "echo hello-from-the-driver; echo warn-from-the-driver >&2; exec sleep 600",
    ]);
    let finished = cluster.submit(&["--memory", "64m", "--", "true"]);
    cluster.wait_state(&finished, "FINISHED", LIMIT).await;
    let app_driver = cluster.submit_app(2, "exec sleep 600", &[], &["sleep", "600"]);
    let running = cluster.wait_state(&driver, "RUNNING", LIMIT).await;
    let app_id = cluster
        .wait_state(&app_driver, "RUNNING", LIMIT)
        .await
        .app_id;
    cluster
        .wait_app(&app_id, "2 executors RUNNING", LIMIT, |a| {
            a["executors"]
                .as_array()
                .is_some_and(|e| e.iter().filter(|e| e["state"] == "RUNNING").count() == 2)
        })
        .await;

    let browser = Browser::start().await;
    let c = &browser.client;

    // Overview: the figures agree with the JSON API.
    c.goto(&format!("http://{}/", cluster.web))
        .await
        .expect("open overview");
    let spark = cluster.json("/json/");
    assert_eq!(browser.text("#status").await, "ALIVE");
    assert_eq!(
        browser.text("#alive-workers").await,
        spark["aliveworkers"].to_string()
    );
    assert_eq!(
        browser.text("#cores").await,
        format!("{} / {}", spark["coresused"], spark["cores"])
    );
    let count = |key: &str| spark[key].as_array().map_or(0, Vec::len).to_string();
    assert_eq!(
        browser.text("#drivers-running").await,
        count("activedrivers")
    );
    assert_eq!(
        browser.text("#drivers-completed").await,
        count("completeddrivers")
    );
    assert_eq!(browser.text("#apps-running").await, count("activeapps"));
    assert_eq!(browser.count("#workers-table tbody tr").await, 2);
    assert_eq!(browser.count("#running-drivers-table tbody tr").await, 2);
    assert_eq!(browser.count("#completed-drivers-table tbody tr").await, 1);
    // The chart ends at the present: every core is in use now.
    assert_eq!(browser.count("svg#utilisation polyline").await, 2);
    let overview = c.source().await.expect("page source");
    assert!(overview.contains("cores 100% and memory"), "{overview}");
    let shot = c.screenshot().await.expect("screenshot");
    std::fs::create_dir_all(target_dir()).expect("target dir");
    std::fs::write(target_dir().join("ui-overview.png"), &shot).expect("save screenshot");

    // Worker page, reached by its link: it runs the driver.
    let worker_id = running.worker_id.clone();
    browser
        .click(&format!("#workers-table a[href='/workers/{worker_id}']"))
        .await;
    assert_eq!(browser.text("#state").await, "ALIVE");
    assert!(browser.text("#drivers").await.contains(&driver));

    // Driver page: state, env names but never values, and its log through the master.
    browser
        .click(&format!("#drivers a[href='/drivers/{driver}']"))
        .await;
    assert_eq!(browser.text("#state").await, "RUNNING");
    assert_eq!(browser.text("#env-names").await, "API_TOKEN");
    let source = c.source().await.expect("page source");
    assert!(!source.contains("do-not-show-9d2c") && !source.contains(&secret));
    browser.click("#stdout-link").await;
    browser
        .wait_text("#log", "the driver's stdout on its log page", |t| {
            t.contains("hello-from-the-driver")
        })
        .await;
    browser.click("a[href$='/logs/stderr']").await;
    browser
        .wait_text("#log", "the driver's stderr", |t| {
            t.contains("warn-from-the-driver")
        })
        .await;

    // Application page: its executors and cores.
    c.goto(&format!("http://{}/apps/{app_id}", cluster.web))
        .await
        .expect("open app page");
    assert_eq!(browser.count("#executors tbody tr").await, 2);
    assert_eq!(browser.text("#cores-granted").await, "2");
    assert_eq!(browser.text("#state").await, "RUNNING");

    // Kill: a wrong secret kills nothing; the right one, confirmed, kills the driver.
    c.goto(&format!("http://{}/drivers/{driver}", cluster.web))
        .await
        .expect("open driver page");
    let field = c
        .find(Locator::Css("#kill-secret"))
        .await
        .expect("secret field");
    field.send_keys("not-the-secret").await.expect("type");
    browser.click("#kill-button").await;
    c.accept_alert()
        .await
        .expect("a confirmation before killing");
    let refused = browser.text("#error").await;
    assert!(refused.contains("nothing was killed"), "{refused}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = cluster.json(&format!("/api/v1/drivers/{driver}"));
    assert_eq!(after["state"], "RUNNING", "{after}");
    assert!(!after.to_string().contains("KILLED"), "{after}");
    c.goto(&format!("http://{}/drivers/{driver}", cluster.web))
        .await
        .expect("open driver page");
    let field = c
        .find(Locator::Css("#kill-secret"))
        .await
        .expect("secret field");
    field.send_keys(&secret).await.expect("type");
    browser.click("#kill-button").await;
    c.accept_alert()
        .await
        .expect("a confirmation before killing");
    cluster.wait_state(&driver, "KILLED", LIMIT).await;
    browser
        .wait_text("#state", "the driver page to show KILLED", |t| {
            t == "KILLED"
        })
        .await;
    assert_eq!(
        browser.count("#kill-form").await,
        0,
        "no kill button once ended"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver (Debian chromium, chromium-driver); ./scripts/test installs them and runs it, or: cargo test -- --include-ignored"]
async fn without_ui_kill_there_is_no_button_and_links_hold_under_a_base_path() {
    let mut cluster = Cluster::start_with(MasterOptions {
        extra: vec!["--ui-base-path".into(), "/proxy/hearth/".into()],
        ..Default::default()
    });
    let secret = cluster.secret.clone().expect("a secret");
    cluster.add_worker(2, "1g").await;
    let driver = cluster.submit(&["--memory", "64m", "--", "sleep", "600"]);
    cluster.wait_state(&driver, "RUNNING", LIMIT).await;

    let browser = Browser::start().await;
    let c = &browser.client;
    c.goto(&format!("http://{}/proxy/hearth/", cluster.web))
        .await
        .expect("open overview under the base path");
    assert_eq!(browser.text("#status").await, "ALIVE");
    let links = c.find_all(Locator::Css("a[href]")).await.expect("links");
    assert!(links.len() > 5);
    for link in links {
        let href = link.attr("href").await.expect("href").unwrap_or_default();
        assert!(
            href.is_empty() || href.starts_with("/proxy/hearth/"),
            "a link outside the base path: {href}"
        );
    }
    browser
        .click(&format!(
            "#running-drivers-table a[href='/proxy/hearth/drivers/{driver}']"
        ))
        .await;
    let url = c.current_url().await.expect("url");
    assert_eq!(url.path(), format!("/proxy/hearth/drivers/{driver}"));
    assert_eq!(browser.text("#state").await, "RUNNING");
    assert_eq!(
        browser.count("#kill-form").await,
        0,
        "no kill button without --ui-kill"
    );
    browser.close().await;

    // A POST with the secret is refused too, and the driver keeps running.
    let form = format!("secret={secret}");
    let headers = [("Content-Type", "application/x-www-form-urlencoded")];
    let (status, _, body) = http_request(
        &cluster.web,
        "POST",
        &format!("/proxy/hearth/drivers/{driver}/kill"),
        &headers,
        &form,
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--ui-kill"), "{body}");
    assert_eq!(
        cluster.json(&format!("/api/v1/drivers/{driver}"))["state"],
        "RUNNING"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver (Debian chromium, chromium-driver); ./scripts/test installs them and runs it, or: cargo test -- --include-ignored"]
async fn the_queues_page_shows_each_queues_bar_and_why_its_work_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("queues.yaml");
    std::fs::write(
        &file,
        "queues:\n  - name: ml\n    max: {cores: 2}\n    guaranteed: {cores: 1}\n  - name: ml.training\n",
    )
    .expect("queues file");
    let mut cluster = Cluster::start_with(MasterOptions {
        extra: vec!["--queues".into(), file.display().to_string()],
        ..Default::default()
    });
    cluster.add_worker(4, "1g").await;
    let mut ids = Vec::new();
    for priority in ["0", "4", "0"] {
        ids.push(cluster.submit(&[
            "--queue",
            "ml.training",
            "--priority",
            priority,
            "--memory",
            "32m",
            "--",
            "sleep",
            "600",
        ]));
    }
    cluster.wait_state(&ids[0], "RUNNING", LIMIT).await;
    cluster.wait_state(&ids[1], "RUNNING", LIMIT).await;

    let browser = Browser::start().await;
    let c = &browser.client;
    c.goto(&format!("http://{}/", cluster.web))
        .await
        .expect("overview");
    browser.click("header a[href='/queues']").await;
    assert_eq!(c.current_url().await.expect("url").path(), "/queues");
    // ml holds 2 of its 2 cores: a full bar, its guarantee marked at half.
    let row = browser.text("#queue-ml").await;
    assert!(row.contains("2 / -") && row.contains("1 / -"), "{row}");
    let bar = c
        .find(Locator::Css("#queue-ml .queue-bar span"))
        .await
        .expect("ml's bar");
    assert_eq!(
        bar.attr("style").await.expect("style").as_deref(),
        Some("width: 100%")
    );
    let mark = c
        .find(Locator::Css("#queue-ml .queue-bar i"))
        .await
        .expect("ml's guarantee mark");
    assert_eq!(
        mark.attr("style").await.expect("style").as_deref(),
        Some("left: 50%")
    );
    assert!(
        browser
            .text("#queue-ml\\.training")
            .await
            .contains("ml.training")
    );
    let waiting = browser.text("#waiting-drivers").await;
    assert!(waiting.contains(&ids[2]), "{waiting}");
    assert!(
        waiting.contains("QUEUE_CAP queue ml is at its max of 2 cores"),
        "{waiting}"
    );

    // A broken file shows on the page, and the old queues stay.
    std::fs::write(&file, "queues: [\n").expect("write");
    let banner = browser
        .wait_text("#refused", "the refusal banner", |t| t.contains("refused"))
        .await;
    assert!(banner.contains("line"), "{banner}");
    assert!(browser.text("#queue-ml").await.contains("2 / -"));
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver (Debian chromium, chromium-driver); ./scripts/test installs them and runs it, or: cargo test -- --include-ignored"]
async fn ui_auth_asks_every_page_for_the_secret_but_not_the_probes() {
    let cluster = Cluster::start_with(MasterOptions {
        extra: vec!["--ui-auth".into()],
        ..Default::default()
    });
    let secret = cluster.secret.clone().expect("a secret");
    for path in [
        "/",
        "/json/",
        "/api/v1/workers",
        "/metrics",
        "/drivers/x/logs/stdout",
    ] {
        let (status, head, _) = http_request(&cluster.web, "GET", path, &[], "");
        assert_eq!(status, 401, "{path} without the secret");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{head}"
        );
        let wrong = [("Authorization", "Bearer wrong")];
        assert_eq!(http_request(&cluster.web, "GET", path, &wrong, "").0, 401);
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(http_get(&cluster.web, path).0, 200, "{path} stays open");
    }
    // No page can be framed by another site.
    let (_, head, _) = http_request(&cluster.web, "GET", "/", &[], "");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert!(
        head.contains("content-security-policy: frame-ancestors 'none'"),
        "{head}"
    );
    let bearer = format!("Bearer {secret}");
    let (status, _, body) = http_request(
        &cluster.web,
        "GET",
        "/json/",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("anyone:{secret}"),
        )
    );
    let (status, _, body) =
        http_request(&cluster.web, "GET", "/", &[("Authorization", &basic)], "");
    assert_eq!(status, 200);
    assert!(body.contains("id=\"status\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver (Debian chromium, chromium-driver); ./scripts/test installs them and runs it, or: cargo test -- --include-ignored"]
async fn json_speaks_sparks_shape_and_metrics_parse_as_prometheus_text() {
    let mut cluster = Cluster::start();
    cluster.add_worker(2, "1g").await;
    let done = cluster.submit(&["--memory", "64m", "--", "true"]);
    cluster.wait_state(&done, "FINISHED", LIMIT).await;
    let driver = cluster.submit_app(1, "exec sleep 600", &[], &["sleep", "600"]);
    let app_id = cluster.wait_state(&driver, "RUNNING", LIMIT).await.app_id;
    cluster
        .wait_app(&app_id, "1 executor RUNNING", LIMIT, |a| {
            a["state"] == "RUNNING"
                && a["executors"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|x| x["state"] == "RUNNING"))
        })
        .await;

    let spark = cluster.json("/json/");
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let sorted = |names: &[&str]| {
        let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(
        keys(&spark),
        sorted(&[
            "url",
            "workers",
            "aliveworkers",
            "cores",
            "coresused",
            "memory",
            "memoryused",
            "resources",
            "resourcesused",
            "activeapps",
            "completedapps",
            "activedrivers",
            "completeddrivers",
            "status",
            // Hearth's own, beside Spark's: which master this is.
            "role",
            "epoch",
            "standby",
            "standbyInSync",
        ])
    );
    assert_eq!(spark["role"], "single", "no --lease: {spark}");
    assert_eq!(spark["epoch"], 0);
    assert!(spark["standby"].is_null());
    assert_eq!(spark["standbyInSync"], false);
    assert_eq!(
        keys(&spark["workers"][0]),
        sorted(&[
            "id",
            "host",
            "port",
            "webuiaddress",
            "cores",
            "coresused",
            "coresfree",
            "memory",
            "memoryused",
            "memoryfree",
            "resources",
            "resourcesused",
            "resourcesfree",
            "state",
            "lastheartbeat",
        ])
    );
    assert_eq!(
        keys(&spark["activeapps"][0]),
        sorted(&[
            "id",
            "starttime",
            "name",
            "cores",
            "user",
            "memoryperexecutor",
            "memoryperslave",
            "resourcesperexecutor",
            "resourcesperslave",
            "submitdate",
            "state",
            "duration",
        ])
    );
    let driver_keys = sorted(&[
        "id",
        "starttime",
        "state",
        "cores",
        "memory",
        "resources",
        "submitdate",
        "worker",
        "mainclass",
    ]);
    assert_eq!(keys(&spark["activedrivers"][0]), driver_keys);
    assert_eq!(keys(&spark["completeddrivers"][0]), driver_keys);
    // Spark's units and types: MiB, epoch ms (a string for drivers), Java's date format.
    assert_eq!(spark["memory"], 1024);
    assert_eq!(spark["workers"][0]["memoryfree"], 1024 - 128);
    assert!(spark["activeapps"][0]["starttime"].is_i64());
    assert_eq!(spark["activeapps"][0]["memoryperexecutor"], 64);
    let starttime = spark["activedrivers"][0]["starttime"]
        .as_str()
        .unwrap_or_default();
    assert!(
        starttime
            .parse::<i64>()
            .is_ok_and(|t| t > 1_700_000_000_000),
        "{starttime}"
    );
    let date = spark["activedrivers"][0]["submitdate"]
        .as_str()
        .unwrap_or_default();
    let parts: Vec<&str> = date.split(' ').collect();
    assert!(
        parts.len() == 6 && parts[4] == "UTC" && parts[3].len() == 8,
        "{date}"
    );
    assert_eq!(
        spark["completeddrivers"][0]["worker"],
        spark["workers"][0]["id"]
    );
    assert_eq!(
        cluster.json("/json/aliveworkers"),
        json!({ "aliveworkers": 1 })
    );
    let usage = cluster.json("/json/clusterutilization");
    assert_eq!(usage["coresutilization"], 100);
    assert_eq!(usage["memory"], 1024);

    let (status, text) = cluster.http_get("/metrics");
    assert_eq!(status, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let value = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| s.value.clone())
    };
    use prometheus_parse::Value as P;
    assert!(
        matches!(value("hearth_workers", Some(("state", "ALIVE"))), Some(P::Gauge(n)) if n == 1.0)
    );
    assert!(matches!(value("hearth_cores_used", None), Some(P::Gauge(n)) if n == 2.0));
    assert!(
        matches!(value("hearth_drivers", Some(("state", "FINISHED"))), Some(P::Gauge(n)) if n == 1.0)
    );
    assert!(
        matches!(value("hearth_executors", Some(("state", "RUNNING"))), Some(P::Gauge(n)) if n == 1.0)
    );
    let submits = value(
        "hearth_rpc_seconds",
        Some(("method", "ClientService/SubmitDriver")),
    );
    assert!(
        matches!(&submits, Some(P::Histogram(buckets)) if buckets.last().is_some_and(|b| b.count >= 2.0)),
        "{submits:?}"
    );
    assert!(matches!(
        value("hearth_schedule_seconds", None),
        Some(P::Histogram(_))
    ));
    // Every sample belongs to a family that declared its type.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            text.contains(&format!("# TYPE {family} "))
                || text.contains(&format!("# TYPE {name} ")),
            "{name} has no TYPE line"
        );
    }
}
