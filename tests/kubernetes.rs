//! The Kubernetes manifests: valid against the API's schema (strict, so a misspelt field fails),
//! consistent with each other and with the binary (what schemas cannot check), and working:
//! `hearth master` and `hearth worker` started with exactly the manifests' args and env
//! register and answer their probes.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use hearth_common::{auth::Secret, client::Client, duration::parse_duration, proto::WorkerState};
use serde::Deserialize;
use serde_json::Value;
use support::{HEARTH, Proc, free_port, try_http_get, wait_for};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const NAMESPACE: &str = "hearth";
const LIMIT: Duration = Duration::from_secs(20);

fn manifests_dir() -> PathBuf {
    Path::new(ROOT).join("manifests")
}

/// The YAML files directly in `dir`, sorted as `kubectl create -f` reads them.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the manifests folder")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every document of a YAML file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read manifest");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// The objects `kubectl create -f manifests/` makes, with the file each came from.
fn objects() -> Vec<(PathBuf, Value)> {
    yaml_files(&manifests_dir())
        .into_iter()
        .flat_map(|f| documents(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

fn find<'a>(objects: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in manifests/"))
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every `selector` entry is among `labels` (and the selector is not empty).
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pod_labels(deployment: &Value) -> BTreeMap<String, String> {
    str_map(&deployment["spec"]["template"]["metadata"]["labels"])
}

fn only_container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

/// A container's port number by name.
fn named_port(container: &Value, name: &str) -> u16 {
    container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}")) as u16
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq)]
enum EnvSource {
    Value(String),
    Secret { name: String, key: String },
    Field(String),
}

fn env_of(container: &Value) -> Vec<(String, EnvSource)> {
    container["env"]
        .as_array()
        .map(|vars| {
            vars.iter()
                .map(|v| {
                    let name = v["name"].as_str().expect("env name").to_string();
                    let source = if let Some(value) = v["value"].as_str() {
                        EnvSource::Value(value.to_string())
                    } else if let Some(s) = v["valueFrom"]["secretKeyRef"].as_object() {
                        assert_ne!(s.get("optional"), Some(&Value::Bool(true)), "{name}");
                        EnvSource::Secret {
                            name: s["name"].as_str().expect("secret name").into(),
                            key: s["key"].as_str().expect("secret key").into(),
                        }
                    } else if let Some(path) = v["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                        EnvSource::Field(path.to_string())
                    } else {
                        panic!("{name}: a value source this test does not know")
                    };
                    (name, source)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    env_of(container)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, s)| match s {
            EnvSource::Value(v) => Some(v),
            _ => None,
        })
}

/// `hearth <role> --help`.
fn help_text(role: &str) -> String {
    let out = support::output_within(
        Command::new(HEARTH).args([role, "--help"]),
        support::CLI_LIMIT,
    );
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The `HEARTH_*` variables `hearth <role>` reads, from its own `--help`.
fn variables_read_by(role: &str) -> BTreeSet<String> {
    let help = help_text(role);
    let mut names = BTreeSet::new();
    for marker in ["[env: ", "$"] {
        for (i, _) in help.match_indices(marker) {
            let rest = &help[i + marker.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.starts_with("HEARTH_") {
                names.insert(name);
            }
        }
    }
    assert!(
        names.len() > 5,
        "too few variables found in the help of {role}: {names:?}"
    );
    names
}

/// A `--help` default, e.g. the worker's web port.
fn help_default(role: &str, flag: &str) -> String {
    let help = help_text(role);
    let at = help
        .find(flag)
        .unwrap_or_else(|| panic!("{flag} in the help of {role}"));
    let rest = &help[at..];
    let start = rest.find("[default: ").expect("a default") + "[default: ".len();
    rest[start..]
        .split(']')
        .next()
        .expect("closing bracket")
        .to_string()
}

fn args_of(container: &Value) -> Vec<String> {
    assert!(
        container["command"].is_null(),
        "the image's entrypoint is `hearth`"
    );
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------

/// `kubernetes-validate`, installed by `scripts/test` into a venv under `target/`.
fn validator() -> PathBuf {
    let path = std::env::var_os("HEARTH_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("target/tools-venv/bin/kubernetes-validate"));
    assert!(
        path.is_file(),
        "{} is missing: run ./scripts/test, which installs kubernetes-validate into a venv \
         (or set HEARTH_KUBERNETES_VALIDATE)",
        path.display()
    );
    path
}

#[test]
#[ignore = "needs kubernetes-validate in target/tools-venv; ./scripts/test installs it and runs it, or: cargo test -- --include-ignored"]
fn every_manifest_passes_strict_validation_against_the_kubernetes_schema() {
    let validator = validator();
    let mut files = yaml_files(&manifests_dir());
    files.extend(
        yaml_files(&manifests_dir().join("extras"))
            .into_iter()
            .filter(|f| {
                // The kustomization is kustomize's, not an API object.
                f.file_name().is_some_and(|n| n != "kustomization.yaml")
            }),
    );
    let out = Command::new(&validator)
        .arg("--strict")
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for f in &files {
        assert!(
            text.contains(&format!("{} passed", f.display())),
            "{} not reported as passed:\n{text}",
            f.display()
        );
    }

    // The check has teeth: one misspelt field fails it.
    let dir = tempfile::tempdir().expect("temp dir");
    let workers = std::fs::read_to_string(manifests_dir().join("40-workers.yaml")).expect("read");
    assert!(workers.contains("  replicas: 2\n"));
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, workers.replace("  replicas: 2\n", "  replica: 2\n")).expect("write");
    let out = Command::new(&validator)
        .args(["--strict", "--quiet"])
        .arg(&bad)
        .output()
        .expect("run kubernetes-validate");
    assert!(!out.status.success(), "a misspelt field passed");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("'replica' was unexpected"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_manifests_folder_holds_only_kubernetes_objects_namespace_first_and_no_secret() {
    let files = yaml_files(&manifests_dir());
    assert!(files.len() >= 5);
    for f in &files {
        assert!(
            f.extension().is_some_and(|e| e == "yaml"),
            "{} is not a manifest: `kubectl create -f manifests/` would read it",
            f.display()
        );
    }
    let objects = objects();
    let (first_file, first) = &objects[0];
    assert_eq!(
        (first["kind"].as_str(), first["metadata"]["name"].as_str()),
        (Some("Namespace"), Some(NAMESPACE)),
        "{} comes first",
        first_file.display()
    );
    for (file, o) in &objects {
        let what = format!("{}: {}", file.display(), o["kind"]);
        assert!(
            o["apiVersion"].is_string() && o["kind"].is_string(),
            "{what}"
        );
        assert!(o["metadata"]["name"].is_string(), "{what}");
        if o["kind"] != "Namespace" {
            assert_eq!(o["metadata"]["namespace"], NAMESPACE, "{what}");
        }
        assert_ne!(o["kind"], "Secret", "{what}: the secret is never committed");
    }

    // Both pods take the secret from the one Secret the README has you create.
    for name in ["hearth-master", "hearth-worker"] {
        let c = only_container(find(&objects, "Deployment", name));
        assert!(
            env_of(c).contains(&(
                "HEARTH_SECRET".into(),
                EnvSource::Secret {
                    name: "hearth-secret".into(),
                    key: "secret".into()
                }
            )),
            "{name}"
        );
    }
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README");
    assert!(
        readme.contains(
            "kubectl -n hearth create secret generic hearth-secret --from-literal=secret="
        ),
        "the README gives the command that creates the secret"
    );

    // The kustomization at the top lists exactly the same objects.
    let kustomization: Value = documents(&Path::new(ROOT).join("kustomization.yaml"))
        .pop()
        .expect("kustomization.yaml");
    let listed: Vec<PathBuf> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| Path::new(ROOT).join(r.as_str().expect("path")))
        .collect();
    assert_eq!(listed, files);
}

#[test]
fn services_policy_and_budget_select_the_pods_they_mean() {
    let objects = objects();
    let master = find(&objects, "Deployment", "hearth-master");
    let worker = find(&objects, "Deployment", "hearth-worker");
    let (master_labels, worker_labels) = (pod_labels(master), pod_labels(worker));
    for d in [master, worker] {
        assert_eq!(
            str_map(&d["spec"]["selector"]["matchLabels"]),
            pod_labels(d)
        );
    }

    for (service, port, target) in [
        ("hearth-master", 7077, "grpc"),
        ("hearth-webui", 8080, "http"),
    ] {
        let s = find(&objects, "Service", service);
        let selector = str_map(&s["spec"]["selector"]);
        assert!(
            selects(&selector, &master_labels),
            "{service} selects the master"
        );
        assert!(
            !selects(&selector, &worker_labels),
            "{service} selects no worker"
        );
        let ports = s["spec"]["ports"].as_array().expect("ports");
        assert_eq!(ports.len(), 1, "{service}");
        assert_eq!(ports[0]["port"], port, "{service}");
        assert_eq!(ports[0]["targetPort"], target, "{service}");
        assert!(ports[0]["name"].is_string(), "{service}: named port");
        named_port(only_container(master), target);
    }

    let budget = find(&objects, "PodDisruptionBudget", "hearth-worker");
    let selector = str_map(&budget["spec"]["selector"]["matchLabels"]);
    assert!(selects(&selector, &worker_labels) && !selects(&selector, &master_labels));

    // Only workers and labelled clients reach gRPC; the policy covers the master alone.
    let policy = find(&objects, "NetworkPolicy", "hearth-master");
    let selector = str_map(&policy["spec"]["podSelector"]["matchLabels"]);
    assert!(selects(&selector, &master_labels) && !selects(&selector, &worker_labels));
    let rules = policy["spec"]["ingress"].as_array().expect("ingress rules");
    let grpc_rules: Vec<&Value> = rules
        .iter()
        .filter(|r| {
            r["ports"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["port"] == "grpc"))
        })
        .collect();
    assert_eq!(grpc_rules.len(), 1);
    let peers: Vec<BTreeMap<String, String>> = grpc_rules[0]["from"]
        .as_array()
        .expect("from")
        .iter()
        .map(|p| {
            assert!(p["namespaceSelector"].is_null() && p["ipBlock"].is_null());
            str_map(&p["podSelector"]["matchLabels"])
        })
        .collect();
    let client: BTreeMap<String, String> =
        [("hearth/client".to_string(), "true".to_string())].into();
    assert!(
        peers.iter().any(|p| selects(p, &worker_labels)),
        "workers reach gRPC"
    );
    assert!(
        peers.iter().any(|p| selects(p, &client)),
        "labelled clients reach gRPC"
    );
    assert!(!peers.iter().any(|p| p.is_empty()), "not everyone");
    let client_pod = documents(&manifests_dir().join("extras/client-pod.yaml")).remove(0);
    assert!(selects(
        &client,
        &str_map(&client_pod["metadata"]["labels"])
    ));
}

#[test]
fn the_pods_are_configured_with_what_the_binary_reads() {
    let objects = objects();
    let master = find(&objects, "Deployment", "hearth-master");
    let worker = find(&objects, "Deployment", "hearth-worker");
    let master_service = find(&objects, "Service", "hearth-master");

    for (deployment, role, web_default) in [(master, "master", "8080"), (worker, "worker", "8081")]
    {
        let c = only_container(deployment);
        assert_eq!(args_of(c), [role]);
        let read = variables_read_by(role);
        for (name, _) in env_of(c) {
            if name.starts_with("HEARTH_") {
                assert!(
                    read.contains(&name),
                    "{role}: {name} is not read by `hearth {role}`"
                );
            }
        }
        // The image's own defaults too.
        let dockerfile =
            std::fs::read_to_string(Path::new(ROOT).join(format!("images/{role}/Dockerfile")))
                .expect("Dockerfile");
        for line in dockerfile.lines().filter(|l| l.starts_with("ENV ")) {
            for pair in line["ENV ".len()..].split_whitespace() {
                let name = pair.split('=').next().unwrap_or_default();
                assert!(
                    !name.starts_with("HEARTH_") || read.contains(name),
                    "images/{role}/Dockerfile: {name} is not read by `hearth {role}`"
                );
            }
        }
        // The web port the binary listens on is the one the probes and Services use.
        assert_eq!(help_default(role, "--webui-port"), web_default);
        let web = env_value(c, "HEARTH_WEBUI_PORT").unwrap_or(web_default.to_string());
        assert_eq!(named_port(c, "http").to_string(), web, "{role}");
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{role} {probe}");
            assert_eq!(c[probe]["httpGet"]["port"], "http", "{role} {probe}");
        }
        // Drivers and state survive only on volumes that are mounted.
        let dir_var = if role == "master" {
            "HEARTH_STATE_DIR"
        } else {
            "HEARTH_WORK_DIR"
        };
        let dir = env_value(c, dir_var).unwrap_or_else(|| panic!("{role} sets {dir_var}"));
        let mounts = c["volumeMounts"].as_array().expect("volume mounts");
        assert!(
            mounts
                .iter()
                .any(|m| dir.starts_with(m["mountPath"].as_str().expect("path"))),
            "{role}: {dir} is on a volume"
        );
    }

    // The master: one replica, never two at once on its state, which lives on the claim.
    assert_eq!(master["spec"]["replicas"], 1);
    assert_eq!(master["spec"]["strategy"]["type"], "Recreate");
    let claim = &master["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"];
    find(
        &objects,
        "PersistentVolumeClaim",
        claim["claimName"].as_str().expect("claim"),
    );
    let c = only_container(master);
    assert_eq!(
        env_value(c, "HEARTH_MASTER_PORT").as_deref(),
        Some(named_port(c, "grpc").to_string().as_str())
    );
    assert!(c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object());

    // Workers dial the master Service by its DNS name, on the Service's port.
    let w = only_container(worker);
    let url = env_value(w, "HEARTH_MASTER_URL").expect("HEARTH_MASTER_URL");
    let service_port = master_service["spec"]["ports"][0]["port"]
        .as_u64()
        .expect("port");
    let allowed = [
        format!("http://hearth-master:{service_port}"),
        format!("http://hearth-master.{NAMESPACE}:{service_port}"),
        format!("http://hearth-master.{NAMESPACE}.svc:{service_port}"),
        format!("http://hearth-master.{NAMESPACE}.svc.cluster.local:{service_port}"),
    ];
    assert!(allowed.contains(&url), "{url}");
    assert_eq!(worker["spec"]["replicas"], 2);

    // The offer is the pod's real size: requests equal limits.
    let resources = &w["resources"];
    for r in ["cpu", "memory"] {
        assert!(resources["limits"][r].is_string(), "worker {r} limit");
        assert_eq!(
            resources["requests"][r], resources["limits"][r],
            "worker {r}"
        );
    }
    // The pod IP is advertised; pod, namespace and node become labels.
    let env = env_of(w);
    for (name, path) in [
        ("HEARTH_WORKER_HOST", "status.podIP"),
        ("HEARTH_POD_NAME", "metadata.name"),
        ("HEARTH_POD_NAMESPACE", "metadata.namespace"),
        ("HEARTH_NODE_NAME", "spec.nodeName"),
    ] {
        assert!(
            env.contains(&(name.into(), EnvSource::Field(path.into()))),
            "{name}"
        );
    }
    // Kubernetes waits long enough for a decommission to play out.
    let grace = |var: &str, flag: &str| {
        let text = env_value(w, var).unwrap_or_else(|| help_default("worker", flag));
        parse_duration(var, &text).expect("a duration")
    };
    let needed = grace("HEARTH_DECOMMISSION_GRACE", "--decommission-grace")
        + grace("HEARTH_KILL_GRACE", "--kill-grace")
        + Duration::from_secs(5);
    let given = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        Duration::from_secs(given) >= needed,
        "terminationGracePeriodSeconds {given} < {needed:?}"
    );
}

// ---------------------------------------------------------------------------------------------

/// Runs a container's `args` and `env` as a process on loopback: Service names resolve to
/// 127.0.0.1, downward-API fields get pod-like values, the Secret gives `secret`, paths move
/// under `root`, and the fixed container ports move to free ones (`ports`) so tests can run side
/// by side.
fn pod_command(
    container: &Value,
    pod: &str,
    root: &Path,
    secret: &str,
    ports: &BTreeMap<u16, u16>,
) -> Command {
    let mut cmd = Command::new(HEARTH);
    cmd.args(args_of(container))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(root.join(format!("{pod}.log"))).expect("log file"),
        ));
    let remap = |text: &str| -> String {
        let mut text = text.replace(
            &format!("hearth-master.{NAMESPACE}.svc.cluster.local"),
            "127.0.0.1",
        );
        for (from, to) in ports {
            text = text.replace(&format!(":{from}"), &format!(":{to}"));
            if text == from.to_string() {
                text = to.to_string();
            }
        }
        if text.starts_with("/var/lib/hearth") {
            text = root
                .join(pod)
                .join(text.trim_start_matches('/'))
                .display()
                .to_string();
        }
        text
    };
    for (name, source) in env_of(container) {
        let value = match source {
            EnvSource::Value(v) => remap(&v),
            EnvSource::Secret { .. } => secret.to_string(),
            EnvSource::Field(path) => match path.as_str() {
                "status.podIP" => "127.0.0.1".to_string(),
                "metadata.name" => pod.to_string(),
                "metadata.namespace" => NAMESPACE.to_string(),
                "spec.nodeName" => "node-a".to_string(),
                other => panic!("unknown field {other}"),
            },
        };
        cmd.env(name, value);
    }
    cmd
}

fn spawn(mut cmd: Command, name: &str) -> Proc {
    Proc {
        child: cmd.spawn().expect("spawn hearth"),
        name: name.to_string(),
    }
}

async fn wait_http(what: &str, addr: &str, path: &str, status: u16) {
    wait_for(what, LIMIT, || {
        let got = try_http_get(addr, path).ok().map(|(s, _)| s);
        async move { (got == Some(status)).then_some(()) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_started_as_the_manifests_say_register_and_answer_their_probes() {
    let objects = objects();
    let master = only_container(find(&objects, "Deployment", "hearth-master"));
    let worker_deployment = find(&objects, "Deployment", "hearth-worker");
    let worker = only_container(worker_deployment);
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = "manifest-test-secret-7d1c";

    let master_ports: BTreeMap<u16, u16> = [
        (named_port(master, "grpc"), free_port()),
        (named_port(master, "http"), free_port()),
    ]
    .into();
    let master_http = format!("127.0.0.1:{}", master_ports[&named_port(master, "http")]);
    let master_url = format!(
        "http://127.0.0.1:{}",
        master_ports[&named_port(master, "grpc")]
    );

    // Without the Secret the master does not start.
    let mut without = pod_command(master, "master-nosecret", dir.path(), secret, &master_ports);
    without.env_remove("HEARTH_SECRET").stderr(Stdio::piped());
    let out = support::output_within(&mut without, support::CLI_LIMIT);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HEARTH_SECRET"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The replicas come up first and wait, alive but not ready, until the master is there.
    let replicas = worker_deployment["spec"]["replicas"]
        .as_u64()
        .expect("replicas");
    let mut workers = Vec::new();
    for n in 0..replicas {
        let pod = format!("hearth-worker-{n}");
        let mut ports = master_ports.clone();
        let web = free_port();
        ports.insert(named_port(worker, "http"), web);
        workers.push((
            pod.clone(),
            format!("127.0.0.1:{web}"),
            spawn(pod_command(worker, &pod, dir.path(), secret, &ports), &pod),
        ));
    }
    for (pod, web, _) in &workers {
        wait_http(&format!("{pod} /healthz"), web, "/healthz", 200).await;
        let (status, _) = try_http_get(web, "/readyz").expect("worker web port");
        assert_eq!(status, 503, "{pod} is not ready before it registered");
    }

    let _master = spawn(
        pod_command(master, "hearth-master", dir.path(), secret, &master_ports),
        "master",
    );
    wait_http("master /healthz", &master_http, "/healthz", 200).await;
    wait_http("master /readyz", &master_http, "/readyz", 200).await;
    for (pod, web, _) in &workers {
        wait_http(&format!("{pod} /readyz"), web, "/readyz", 200).await;
    }

    let client = Client::connect(&master_url, Some(&Secret::new(secret).expect("secret")))
        .await
        .expect("connect");
    let listed = wait_for("both workers ALIVE", LIMIT, || {
        let client = client.clone();
        async move {
            let ws = client.workers().await.ok()?;
            (ws.iter()
                .filter(|w| w.state == WorkerState::Alive as i32)
                .count() as u64
                == replicas)
                .then_some(ws)
        }
    })
    .await;
    for (pod, _, _) in &workers {
        let w = listed
            .iter()
            .find(|w| &w.name == pod)
            .unwrap_or_else(|| panic!("{pod} listed by its pod name: {listed:?}"));
        assert_eq!(w.host, "127.0.0.1", "advertised at the pod IP");
        assert_eq!(w.labels.get("pod"), Some(pod));
        assert_eq!(
            w.labels.get("namespace").map(String::as_str),
            Some(NAMESPACE)
        );
        assert_eq!(w.labels.get("node").map(String::as_str), Some("node-a"));
    }
}
