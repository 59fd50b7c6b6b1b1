//! The project's container images, built from `images/*/Dockerfile` by a Docker daemon of the
//! test's own: the base image made with debootstrap (no registry is reachable here) and the
//! binaries this build made put in the build context (`BINARY_FROM=context`).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use super::{HEARTH, stderr, stdout};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The docker.io client, which builds with BuildKit on its own (no buildx plugin needed).
pub const DOCKER: &str = "/usr/bin/docker";
const LIMIT: Duration = Duration::from_secs(30);

pub fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package {package} (./scripts/test does)"
    );
}

pub fn run(cmd: &mut Command, what: &str) -> Output {
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
pub fn base_rootfs_tar(scratch: &Path) -> PathBuf {
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
pub struct Daemon {
    dir: PathBuf,
    socket: String,
    child: std::process::Child,
}

impl Daemon {
    pub fn start(dir: &Path) -> Self {
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

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.env("DOCKER_HOST", &self.socket)
            .env("DOCKER_BUILDKIT", "1")
            .stdin(Stdio::null());
        cmd
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run docker")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        stdout(&run(self.command().args(args), &format!("docker {args:?}")))
    }

    /// Imports the Dockerfiles' default base image, `debian:bookworm-slim`, made with
    /// debootstrap (no registry is reachable).
    pub fn import_base(&self, scratch: &Path) {
        let base = base_rootfs_tar(scratch);
        run(
            self.command()
                .args(["import", "-", "debian:bookworm-slim"])
                .stdin(std::fs::File::open(&base).expect("base tar")),
            "docker import",
        );
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
    let keeper = Path::new(env!("CARGO_BIN_EXE_hearth-keeper"));
    for (from, to) in [
        (hearth.to_path_buf(), "bin/hearth"),
        (keeper.to_path_buf(), "bin/hearth-keeper"),
        (pi, "bin/examples/pi"),
    ] {
        run(
            Command::new("strip").arg("-o").arg(ctx.join(to)).arg(&from),
            "strip",
        );
    }
    ctx
}

/// Builds `images/{image}/Dockerfile` as `hearth-{image}:{tag}` from `ctx`.
fn build(daemon: &Daemon, image: &str, ctx: &Path, tag: &str) {
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
            .args(["-t", &format!("hearth-{image}:{tag}")])
            .arg(ctx),
        &format!("docker build {image}"),
    );
}

/// A Docker daemon of the test's own holding both images, built as `hearth-{master,worker}:{tag}`.
pub struct Built {
    pub daemon: Daemon,
    /// Where the daemon keeps everything; removed after it stops (fields drop in order).
    _scratch: tempfile::TempDir,
}

/// Starts a daemon, makes the base image and builds both images with this build's binaries.
pub fn build_images(tag: &str) -> Built {
    require("/usr/sbin/dockerd", "docker.io");
    require(DOCKER, "docker.io");
    require("/usr/sbin/debootstrap", "debootstrap");
    // Short paths: dockerd's sockets live under it.
    let scratch = tempfile::Builder::new()
        .prefix("hearth-img")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let daemon = Daemon::start(scratch.path());
    daemon.import_base(scratch.path());
    let ctx = context(scratch.path());
    for image in ["master", "worker"] {
        build(&daemon, image, &ctx, tag);
    }
    Built {
        daemon,
        _scratch: scratch,
    }
}

/// Builds both images as `hearth-{master,worker}:{tag}` and saves them as archives a container
/// runtime imports (`docker save`), in `target/image-cache/`: their paths, master first.
pub fn save_images(tag: &str) -> (PathBuf, PathBuf) {
    let built = build_images(tag);
    let cache = Path::new(ROOT).join("target/image-cache");
    std::fs::create_dir_all(&cache).expect("cache dir");
    let save = |image: &str| {
        let tar = cache.join(format!("hearth-{image}-{tag}.tar"));
        built.daemon.ok(&[
            "save",
            "-o",
            &tar.display().to_string(),
            &format!("hearth-{image}:{tag}"),
        ]);
        tar
    };
    (save("master"), save("worker"))
}
