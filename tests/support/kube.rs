//! The single-node Kubernetes of `scripts/kube`, started for a test and taken down (everything
//! it made) when dropped, even after a failed or timed-out start.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{output_within, stderr, stdout};

/// Pods starting, probes passing, a decommission: each well within this.
pub const LIMIT: Duration = Duration::from_secs(180);
pub const KUBECTL_LIMIT: Duration = Duration::from_secs(120);

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub struct Kube {
    pub kubeconfig: String,
    /// Where kubectl and the other binaries are.
    pub bin: PathBuf,
    _down: Down,
}

struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let _ = script(&["down"]).stdout(Stdio::null()).status();
    }
}

fn script(args: &[&str]) -> Command {
    let mut cmd = Command::new(Path::new(ROOT).join("scripts/kube"));
    cmd.args(args).stdin(Stdio::null());
    cmd
}

impl Kube {
    /// `scripts/kube up` with `images` imported, then its environment.
    pub fn up(images: &[&Path]) -> Self {
        let down = Down;
        let joined: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
        let out = output_within(
            script(&["up"]).env("HEARTH_IMAGES", joined.join(":")),
            Duration::from_secs(30 * 60),
        );
        let text = stdout(&out);
        assert!(
            out.status.success() && text.lines().last() == Some("ready"),
            "scripts/kube up failed:\n{text}\n{}",
            stderr(&out)
        );
        let env = stdout(&output_within(
            &mut script(&["env"]),
            Duration::from_secs(120),
        ));
        let value = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("no {name} in `scripts/kube env`: {env}"))
                .to_string()
        };
        let path = value("PATH");
        let bin = path
            .strip_suffix(":$PATH")
            .unwrap_or_else(|| panic!("PATH={path}"));
        Self {
            kubeconfig: value("KUBECONFIG"),
            bin: PathBuf::from(bin),
            _down: down,
        }
    }
}

impl Kube {
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig).stdin(Stdio::null());
        cmd
    }

    /// `kubectl ARGS`, which must succeed: its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = output_within(self.kubectl().args(args), KUBECTL_LIMIT);
        assert!(
            out.status.success(),
            "kubectl {args:?}:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("kubectl's JSON")
    }

    /// Waits until `kubectl -n hearth get pods -l SELECTOR` shows `n` pods, all Running and
    /// Ready; returns their names.
    pub fn wait_ready(&self, selector: &str, n: usize) -> Vec<String> {
        self.wait(&format!("{n} {selector} pods ready"), || {
            let pods = self.json(&["-n", "hearth", "get", "pods", "-l", selector]);
            let items = pods["items"].as_array()?;
            let ready: Vec<String> = items
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter(|p| {
                    p["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .map(|p| {
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect();
            (ready.len() == n && items.len() == n).then_some(ready)
        })
    }

    /// The Secret `hearth-secret` the README has you create, holding `secret`.
    pub fn create_secret(&self, secret: &str) {
        self.ok(&[
            "-n",
            "hearth",
            "create",
            "secret",
            "generic",
            "hearth-secret",
            &format!("--from-literal=secret={secret}"),
        ]);
    }

    pub fn wait<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(v) = probe() {
                return v;
            }
            if Instant::now() > deadline {
                let pods = output_within(
                    self.kubectl()
                        .args(["-n", "hearth", "get", "pods,events", "-o", "wide"]),
                    KUBECTL_LIMIT,
                );
                panic!("timed out waiting for {what}:\n{}", stdout(&pods));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A `kubectl` that keeps running (port-forward, proxy) and the local port it printed.
    pub fn forward(&self, args: &[&str], prefix: &str) -> (super::Proc, u16) {
        let child = self
            .kubectl()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kubectl");
        // Reaped on drop even if it never prints its port.
        let mut kubectl = super::Proc::new(child, "kubectl");
        let line = super::first_line(&mut kubectl.child, prefix, Duration::from_secs(30));
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        (kubectl, port)
    }

    /// `hearth ARGS` inside the client pod.
    pub fn hearth_in_pod(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", "hearth", "exec", "hearth-client", "--", "hearth"];
        all.extend_from_slice(args);
        output_within(self.kubectl().args(&all), KUBECTL_LIMIT)
    }

    /// `hearth submit ARGS` inside the client pod, which must succeed: the driver's id.
    pub fn submit_in_pod(&self, args: &[&str]) -> String {
        let mut all = vec!["submit"];
        all.extend_from_slice(args);
        let out = self.hearth_in_pod(&all);
        assert!(out.status.success(), "submit {args:?}: {}", stderr(&out));
        stdout(&out).lines().next().unwrap_or_default().to_string()
    }

    /// The master's view of its workers, asked from the client pod; `None` while the master
    /// cannot be reached (between pods, or before kube-proxy routes to the new one).
    pub fn workers(&self) -> Option<Vec<Value>> {
        let out = self.hearth_in_pod(&["list", "workers", "--json"]);
        if !out.status.success() {
            eprintln!("list workers: {}", stderr(&out));
            return None;
        }
        let list: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
        list.as_array().cloned()
    }

    /// `hearth status --json ID` from the client pod; `None` while the master cannot be reached.
    pub fn driver(&self, id: &str) -> Option<Value> {
        let out = self.hearth_in_pod(&["status", "--json", id]);
        if !out.status.success() {
            eprintln!("status {id}: {}", stderr(&out));
            return None;
        }
        Some(serde_json::from_str(&stdout(&out)).expect("JSON"))
    }
}

impl Drop for Kube {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for what in [
                "pods,events",
                "deployments,statefulsets,replicasets,pvc,leases",
            ] {
                if let Ok(out) = self
                    .kubectl()
                    .args(["-n", "hearth", "get", what, "-o", "wide"])
                    .output()
                {
                    eprintln!("--- kubectl get {what}:\n{}", stdout(&out));
                }
            }
            // Every master pod's log (the single master, or both of a pair), and the log of a
            // container that restarted.
            for previous in [false, true] {
                let mut cmd = self.kubectl();
                cmd.args(["-n", "hearth", "logs", "--prefix", "--tail=60"])
                    .args(["-l", "app.kubernetes.io/component=master"]);
                if previous {
                    cmd.arg("--previous");
                }
                if let Ok(out) = cmd.output() {
                    let which = if previous {
                        "restarted master"
                    } else {
                        "master"
                    };
                    eprintln!("--- {which} log:\n{}{}", stdout(&out), stderr(&out));
                }
            }
        }
    }
}
