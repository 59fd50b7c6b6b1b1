//! The container images, built from `images/*/Dockerfile` and run: a master and two workers as
//! containers on their own network, with CPU and memory limits, the workers reaching the master
//! by its container name as they would the Service.
//!
//! No registry is reachable here, so the base image is made with debootstrap and imported, the
//! Docker daemon is started (and stopped) by the test, and the Dockerfiles take the binaries
//! this build made (`BINARY_FROM=context`) instead of compiling in their Rust stage.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use hearth_common::{auth::Secret, client::Client, proto::WorkerState};
use support::{HEARTH, stderr, stdout, wait_for};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SECRET: &str = "image-test-secret-29b7";
const LIMIT: Duration = Duration::from_secs(30);
/// The docker.io client, which builds with BuildKit on its own (no buildx plugin needed).
const DOCKER: &str = "/usr/bin/docker";

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package {package} (./scripts/test does)"
    );
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// A Debian bookworm root file system as a tar, made once with debootstrap and kept under
/// target/ for later runs.
fn base_rootfs_tar(scratch: &Path) -> PathBuf {
    let cache = Path::new(ROOT).join("target/image-cache");
    let tar = cache.join("bookworm-minbase.tar");
    if tar.is_file() {
        return tar;
    }
    std::fs::create_dir_all(&cache).expect("cache dir");
    let rootfs = scratch.join("rootfs");
    run(
        Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&rootfs)
            .arg("http://deb.debian.org/debian"),
        "debootstrap",
    );
    let partial = cache.join("bookworm-minbase.tar.partial");
    run(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&partial)
            .arg("."),
        "tar the root file system",
    );
    std::fs::rename(&partial, &tar).expect("keep the base");
    let _ = std::fs::remove_dir_all(&rootfs);
    tar
}

/// A Docker daemon of the test's own: its own data, exec root and socket, no default bridge.
/// Stopped, with everything it made, when dropped.
struct Daemon {
    dir: PathBuf,
    socket: String,
    child: std::process::Child,
}

impl Daemon {
    fn start(dir: &Path) -> Self {
        let socket = format!("unix://{}", dir.join("d.sock").display());
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("d.pid"))
            .args(["--host", &socket, "--bridge=none"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("dockerd.log")).expect("log"),
            ))
            .spawn()
            .expect("start dockerd");
        let daemon = Self {
            dir: dir.to_path_buf(),
            socket,
            child,
        };
        let deadline = Instant::now() + LIMIT;
        while !daemon.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer: {}",
                std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        daemon
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.env("DOCKER_HOST", &self.socket)
            .env("DOCKER_BUILDKIT", "1")
            .stdin(Stdio::null());
        cmd
    }

    fn docker(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run docker")
    }

    fn ok(&self, args: &[&str]) -> String {
        stdout(&run(self.command().args(args), &format!("docker {args:?}")))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let ids = stdout(&self.docker(&["ps", "-aq"]));
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if std::thread::panicking() {
            for id in &ids {
                let out = self.docker(&["logs", id]);
                eprintln!("--- docker logs {id}:\n{}{}", stdout(&out), stderr(&out));
            }
        }
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.docker(&args);
        }
        // Networks hold host bridges and firewall rules that outlive the daemon.
        let _ = self.docker(&["network", "prune", "-f"]);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Leftover mounts (overlays, netns) would keep the directory from being removed.
        for dir in ["exec", "data"] {
            let _ = Command::new("umount")
                .args(["-R", "--lazy"])
                .arg(self.dir.join(dir))
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The build context: this build's binaries, stripped, where `BIN_DIR=bin` finds them.
fn context(scratch: &Path) -> PathBuf {
    let ctx = scratch.join("context");
    std::fs::create_dir_all(ctx.join("bin/examples")).expect("context dir");
    let hearth = Path::new(HEARTH);
    let pi = hearth.parent().expect("target dir").join("examples/pi");
    assert!(
        pi.is_file(),
        "{} is missing: `cargo test` builds the examples",
        pi.display()
    );
    for (from, to) in [
        (hearth.to_path_buf(), "bin/hearth"),
        (pi, "bin/examples/pi"),
    ] {
        run(
            Command::new("strip").arg("-o").arg(ctx.join(to)).arg(&from),
            "strip",
        );
    }
    ctx
}

fn build(daemon: &Daemon, image: &str, ctx: &Path) {
    let dockerfile = Path::new(ROOT).join(format!("images/{image}/Dockerfile"));
    run(
        daemon
            .command()
            .args(["build", "-q", "--network", "host"])
            .arg("-f")
            .arg(&dockerfile)
            .args([
                "--build-arg",
                "BINARY_FROM=context",
                "--build-arg",
                "BIN_DIR=bin",
            ])
            .args(["-t", &format!("hearth-{image}:test")])
            .arg(ctx),
        &format!("docker build {image}"),
    );
}

fn published(daemon: &Daemon, container: &str, port: u16) -> String {
    let out = daemon.ok(&["port", container, &format!("{port}/tcp")]);
    out.lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("{container}:{port} not published: {out}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, Docker (docker.io) and debootstrap; ./scripts/test installs them and runs it, or: cargo test -- --include-ignored"]
async fn the_images_build_and_run_a_cluster_of_containers() {
    require("/usr/sbin/dockerd", "docker.io");
    require(DOCKER, "docker.io");
    require("/usr/sbin/debootstrap", "debootstrap");
    // Short paths: dockerd's sockets live under it.
    let scratch = tempfile::Builder::new()
        .prefix("hearth-img")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let base = base_rootfs_tar(scratch.path());
    let daemon = Daemon::start(scratch.path());

    // The Dockerfiles' default base image, made here.
    run(
        daemon
            .command()
            .args(["import", "-", "debian:bookworm-slim"])
            .stdin(std::fs::File::open(&base).expect("base tar")),
        "docker import",
    );
    let ctx = context(scratch.path());
    build(&daemon, "master", &ctx);
    build(&daemon, "worker", &ctx);
    for image in ["master", "worker"] {
        let user = daemon.ok(&[
            "image",
            "inspect",
            "-f",
            "{{.Config.User}} {{json .Config.Entrypoint}}",
            &format!("hearth-{image}:test"),
        ]);
        assert_eq!(
            user.trim(),
            "10001:10001 [\"/usr/local/bin/hearth\"]",
            "{image} runs `hearth` as the non-root user"
        );
    }

    daemon.ok(&[
        "network",
        "create",
        "--subnet",
        "198.18.1.0/24",
        "hearth-net",
    ]);
    let secret = format!("HEARTH_SECRET={SECRET}");
    daemon.ok(&[
        "run",
        "-d",
        "--name",
        "hearth-master",
        "--network",
        "hearth-net",
        "--cpus",
        "1",
        "--memory",
        "256m",
        "-e",
        &secret,
        "-p",
        "127.0.0.1::7077",
        "-p",
        "127.0.0.1::8080",
        "hearth-master:test",
    ]);
    // Two workers of different sizes: each must offer exactly its own limits.
    let sizes = [
        ("hearth-worker-1", "1", "384m", 1, 384),
        ("hearth-worker-2", "2", "512m", 2, 512),
    ];
    for (name, cpus, memory, _, _) in sizes {
        daemon.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--hostname",
            name,
            "--network",
            "hearth-net",
            "--cpus",
            cpus,
            "--memory",
            memory,
            "-e",
            &secret,
            "-e",
            "HEARTH_MASTER_URL=http://hearth-master:7077",
            "hearth-worker:test",
        ]);
    }

    let grpc = published(&daemon, "hearth-master", 7077);
    let web = published(&daemon, "hearth-master", 8080);
    let url = format!("http://{grpc}");
    let client = wait_for("the master container", LIMIT, || {
        let url = url.clone();
        async move {
            Client::connect(&url, Some(&Secret::new(SECRET).expect("secret")))
                .await
                .ok()
        }
    })
    .await;
    let workers = wait_for("both worker containers ALIVE", LIMIT, || {
        let client = client.clone();
        async move {
            let ws = client.workers().await.ok()?;
            (ws.iter()
                .filter(|w| w.state == WorkerState::Alive as i32)
                .count()
                == 2)
                .then_some(ws)
        }
    })
    .await;
    for (name, _, _, cores, memory_mb) in sizes {
        let w = workers
            .iter()
            .find(|w| w.name == name)
            .unwrap_or_else(|| panic!("{name} registered: {workers:?}"));
        assert_eq!(
            (w.cores, w.memory_mb),
            (cores, memory_mb),
            "{name} offers its limits"
        );
        assert!(
            w.host.starts_with("198.18.1."),
            "{name} at its container address: {}",
            w.host
        );
    }
    assert_eq!(support::http_get(&web, "/readyz").0, 200);

    // A driver runs in a worker container, as the non-root user, with python3 there; its log
    // is read through the master.
    let hearth = |args: &[&str]| {
        let out = Command::new(HEARTH)
            .args(args)
            .env("HEARTH_MASTER_URL", &url)
            .env("HEARTH_SECRET", SECRET)
            .output()
            .expect("run hearth");
        assert!(out.status.success(), "hearth {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let driver = hearth(&[
        "submit",
        "--wait",
        "--memory",
        "64m",
        "--",
        "python3",
        "-c",
        "import os; print('hello from', os.environ['HEARTH_DRIVER_ID'], 'as uid', os.getuid())",
    ]);
    let driver = driver.lines().next().expect("driver id").to_string();
    let log = hearth(&["logs", &driver]);
    assert_eq!(log.trim(), format!("hello from {driver} as uid 10001"));

    // The example from the image: a driver in one container, executors in the other, talking
    // over the containers' network.
    let pi = hearth(&[
        "submit",
        "--wait",
        "--memory",
        "128m",
        "--",
        "/opt/hearth/examples/pi",
        "--executors",
        "2",
        "--samples",
        "1000000",
        "--tasks",
        "8",
    ]);
    let pi = pi.lines().next().expect("driver id").to_string();
    let log = hearth(&["logs", &pi]);
    assert!(log.contains("Pi is roughly 3.14"), "{log}");
}
