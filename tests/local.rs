//! `hearth local`: the embedded cluster the README starts with, the Pi example on it, and clean
//! shutdown on SIGTERM.

mod support;

use std::{
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use std::io::{BufRead, BufReader};
use support::{HEARTH, Proc, http_get, stderr, stdout};

#[test]
fn local_cluster_runs_the_readme_example_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(HEARTH)
        .args([
            "local",
            "--port",
            "0",
            "--webui-port",
            "0",
            "--cores",
            "3",
            "--memory",
            "1g",
        ])
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env_remove("HEARTH_SECRET")
        .env_remove("HEARTH_SECRET_FILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("local.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut local = Proc {
        child,
        name: "local".into(),
    };
    let (mut web, mut master) = (String::new(), String::new());
    while web.is_empty() || master.is_empty() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("local prints its URLs");
        if let Some(w) = line.trim().strip_prefix("web UI:") {
            web = w.trim().trim_start_matches("http://").to_string();
        }
        if let Some(m) = line.trim().strip_prefix("master:") {
            master = m.trim().to_string();
        }
    }

    // The UI lists 2 ALIVE workers.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = http_get(&web, "/");
        if page.matches("class=\"state-ALIVE\">ALIVE</td>").count() == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "2 ALIVE workers on the page: {page}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let hearth = |args: &[&str]| {
        support::output_within(
            Command::new(HEARTH)
                .args(args)
                .env("HEARTH_MASTER_URL", &master)
                .env_remove("HEARTH_SECRET"),
            support::CLI_LIMIT,
        )
    };
    let out = hearth(&["submit", "--wait", "--", "sh", "-c", "echo hello; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    assert!(id.starts_with("driver-"));
    assert_eq!(stdout(&hearth(&["logs", &id])), "hello\n");
    let status = stdout(&hearth(&["status", &id]));
    assert!(status.contains("state:      FAILED"), "{status}");

    // The README's Pi: the same digits with 4 executors and with 1.
    let pi = std::path::Path::new(HEARTH)
        .parent()
        .expect("target directory")
        .join("examples")
        .join("pi");
    assert!(pi.exists(), "the pi example is built: {}", pi.display());
    let pi = pi.display().to_string();
    let mut answers = Vec::new();
    for executors in ["4", "1"] {
        let out = hearth(&[
            "submit",
            "--wait",
            "--memory",
            "256m",
            "--",
            &pi,
            "--executors",
            executors,
            "--samples",
            "16000000",
            "--seed",
            "7",
        ]);
        assert!(
            out.status.success(),
            "pi with {executors}: {}",
            stderr(&out)
        );
        let id = stdout(&out).lines().next().unwrap_or_default().to_string();
        let printed = stdout(&hearth(&["logs", &id]));
        let value: f64 = printed
            .trim()
            .strip_prefix("Pi is roughly ")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("pi printed {printed:?}"));
        assert_eq!(format!("{value:.3}"), "3.142", "{printed}");
        // Its application had that many executors, and the work went through them.
        let driver: serde_json::Value =
            serde_json::from_str(&stdout(&hearth(&["status", "--json", &id]))).unwrap();
        let app_id = driver["appId"]
            .as_str()
            .expect("the driver registered an application");
        let app: serde_json::Value =
            serde_json::from_str(&stdout(&hearth(&["status", "--json", app_id]))).unwrap();
        assert_eq!(app["state"], "FINISHED", "{app}");
        assert_eq!(
            app["executors"].as_array().unwrap().len().to_string(),
            executors,
            "{app}"
        );
        let log = stdout(&hearth(&["logs", "--stderr", &id]));
        assert!(log.contains(" connected from "), "{log}");
        answers.push(printed);
    }
    assert_eq!(
        answers[0], answers[1],
        "the same seed gives the same digits"
    );

    // A long driver is killed when the cluster stops.
    let out = hearth(&["submit", "--", "sh", "-c", "echo $$; exec sleep 300"]);
    let long = stdout(&out).trim().to_string();
    let pid: i32 = {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(pid) = stdout(&hearth(&["logs", &long])).trim().parse() {
                break pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "driver printed its pid"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(support::process_alive(pid));
    let status = local
        .terminate(Duration::from_secs(20))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!support::process_alive(pid), "its drivers are gone");
}
