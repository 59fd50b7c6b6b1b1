//! The queues file (`--queues FILE`, YAML, meant to be a mounted ConfigMap): parsed into a
//! [`QueueTree`], every mistake reported with its line and the reason.

use std::{path::PathBuf, sync::Arc, time::Duration};

use hearth_common::Shutdown;

use hearth_common::{
    duration::parse_duration,
    resources::{parse_cores, parse_memory_mb},
    spec::validate_queue_name,
};
use serde::Deserialize;

use crate::{
    actor::MasterHandle,
    command::Command,
    schedule::{Amount, QueueDef, QueueTree, preemption::Preempt},
    tenants::{Tenant, Tenants, token_hash},
};

/// Why a queues file cannot be used; the message names the line where one is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct QueueFileError {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    queues: Vec<Entry>,
    #[serde(default)]
    tenants: Vec<TenantEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantEntry {
    name: String,
    /// A file holding the token (a mounted Secret); read when the queues file is.
    #[serde(default)]
    token_file: Option<PathBuf>,
    /// Or the token's SHA-256, as 64 hex digits, so the file itself holds no secret.
    #[serde(default)]
    token_sha256: Option<String>,
    #[serde(default)]
    queues: Vec<String>,
}

/// What the queues file says: the queues, and who may submit into which.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueConfig {
    pub tree: QueueTree,
    pub tenants: Tenants,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    guaranteed: Option<Size>,
    #[serde(default)]
    max: Option<Size>,
    #[serde(default)]
    preempt: Option<PreemptEntry>,
}

/// When a queue takes back its guarantee from others (`reclaim`) or lets higher priorities
/// displace lower ones (`priority`), and how its own work is protected (`min_runtime`) and
/// warned (`grace`) when it is preempted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreemptEntry {
    #[serde(default)]
    reclaim: bool,
    #[serde(default)]
    priority: bool,
    #[serde(default)]
    min_runtime: Option<String>,
    #[serde(default)]
    grace: Option<String>,
}

fn one() -> u32 {
    1
}

/// `{cores: 4, memory: 8g}`; memory as a size (`8g`, `512m`) or a number of MiB. A max may also
/// cap named resources: `{cores: 8, resources: {gpu: 4}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Size {
    #[serde(default)]
    cores: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    memory: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    resources: Option<std::collections::BTreeMap<String, serde_yaml_ng::Value>>,
}

fn text_of(value: &serde_yaml_ng::Value) -> String {
    match value {
        serde_yaml_ng::Value::String(s) => s.clone(),
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

impl Size {
    /// The amount, with `unset` for what is not given (0 for a guarantee, no cap for a max).
    fn amount(&self, field: &str, unset: Amount) -> Result<Amount, String> {
        let cores = match &self.cores {
            Some(v) => u64::from(
                parse_cores(&format!("{field}.cores"), &text_of(v)).map_err(|e| e.to_string())?,
            ),
            None => unset.cores,
        };
        let memory_mb = match &self.memory {
            Some(v) => parse_memory_mb(&format!("{field}.memory"), &text_of(v))
                .map_err(|e| e.to_string())?,
            None => unset.memory_mb,
        };
        Ok(Amount::new(cores, memory_mb))
    }

    /// The caps on named resources (`max.resources`), each a whole number.
    fn named(&self, field: &str) -> Result<Vec<(String, u32)>, String> {
        let Some(resources) = &self.resources else {
            return Ok(Default::default());
        };
        let mut caps = Vec::new();
        for (name, value) in resources {
            let at = format!("{field}.resources.{name}");
            hearth_common::named_resources::validate_name(&at, name).map_err(|e| e.to_string())?;
            let n: u32 = text_of(value)
                .trim()
                .parse()
                .map_err(|_| format!("{at}: {:?} is not a whole number", text_of(value)))?;
            caps.push((name.clone(), n));
        }
        Ok(caps)
    }
}

/// The 1-based line where the queue `name` is defined, for messages about it.
fn line_of(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let rest = line.trim_start().trim_start_matches('-').trim_start();
            rest.strip_prefix("name:").is_some_and(|value| {
                let value = value.split('#').next().unwrap_or_default().trim();
                value.trim_matches(|c| c == '"' || c == '\'') == name
            })
        })
        .map(|i| i + 1)
}

/// The 1-based line where the tenant `name` is defined: its `name:` line after `tenants:`.
fn tenant_line(text: &str, name: &str) -> Option<usize> {
    let start = text
        .lines()
        .position(|l| l.trim_start().starts_with("tenants:"))?;
    let rest: String = text.lines().skip(start).collect::<Vec<_>>().join("\n");
    line_of(&rest, name).map(|l| l + start)
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Parses the queues file's `text` (reading the tenants' token files); `path` only names it in
/// errors.
pub fn parse(path: &str, text: &str) -> Result<QueueConfig, QueueFileError> {
    let fail = |message: String| QueueFileError {
        path: path.to_string(),
        message,
    };
    let file: File = if text.trim().is_empty() {
        File {
            queues: Vec::new(),
            tenants: Vec::new(),
        }
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| fail(e.to_string()))?
    };
    let at = |name: &str, message: String| match line_of(text, name) {
        Some(line) => fail(format!("line {line}: {message}")),
        None => fail(message),
    };
    let mut defs = Vec::with_capacity(file.queues.len());
    for entry in file.queues {
        let mut preempt = Preempt::default();
        if let Some(p) = &entry.preempt {
            preempt.reclaim = p.reclaim;
            preempt.priority = p.priority;
            for (field, value, into) in [
                ("min_runtime", &p.min_runtime, &mut preempt.min_runtime_ms),
                ("grace", &p.grace, &mut preempt.grace_ms),
            ] {
                if let Some(text) = value {
                    let d = parse_duration(&format!("preempt.{field}"), text)
                        .map_err(|e| at(&entry.name, format!("queue {}: {e}", entry.name)))?;
                    *into = d.as_millis().try_into().unwrap_or(u64::MAX);
                }
            }
        }
        validate_queue_name("name", &entry.name).map_err(|e| at(&entry.name, e.to_string()))?;
        let guaranteed = match &entry.guaranteed {
            Some(size) => {
                if size.resources.is_some() {
                    return Err(at(
                        &entry.name,
                        format!(
                            "queue {}: guaranteed.resources: guarantees are of cores and memory; \
                             named resources can be capped (max.resources)",
                            entry.name
                        ),
                    ));
                }
                size.amount("guaranteed", Amount::default())
                    .map_err(|e| at(&entry.name, format!("queue {}: {e}", entry.name)))?
            }
            None => Amount::default(),
        };
        let max_named = match &entry.max {
            Some(size) => size
                .named("max")
                .map_err(|e| at(&entry.name, format!("queue {}: {e}", entry.name)))?,
            None => Default::default(),
        };
        let max = match &entry.max {
            Some(size) => Some(
                size.amount("max", Amount::new(u64::MAX, u64::MAX))
                    .map_err(|e| at(&entry.name, format!("queue {}: {e}", entry.name)))?,
            ),
            None => None,
        };
        defs.push(QueueDef {
            name: entry.name,
            weight: entry.weight,
            guaranteed,
            max,
            max_named,
            preempt,
        });
    }
    let tree = QueueTree::new(defs).map_err(|e| {
        let name = match &e {
            crate::schedule::queues::TreeError::Duplicate(n) => n.clone(),
            crate::schedule::queues::TreeError::NoParent { child, .. } => child.clone(),
            crate::schedule::queues::TreeError::ZeroWeight { name }
            | crate::schedule::queues::TreeError::GuaranteeOverMax { name, .. } => name.clone(),
        };
        at(&name, e.to_string())
    })?;
    let mut tenants: Vec<Tenant> = Vec::with_capacity(file.tenants.len());
    for entry in file.tenants {
        let here = |message: String| match tenant_line(text, &entry.name) {
            Some(line) => fail(format!("line {line}: tenant {}: {message}", entry.name)),
            None => fail(format!("tenant {}: {message}", entry.name)),
        };
        validate_queue_name("name", &entry.name).map_err(|e| {
            here(format!(
                "{e} (tenant names follow the rules of queue names)"
            ))
        })?;
        if tenants.iter().any(|t| t.name == entry.name) {
            return Err(here("defined twice".into()));
        }
        let token_sha256 = match (&entry.token_file, &entry.token_sha256) {
            (Some(file), None) => {
                let token = std::fs::read(file).map_err(|e| {
                    here(format!(
                        "token_file {}: cannot read it: {e}",
                        file.display()
                    ))
                })?;
                if token.trim_ascii().is_empty() {
                    return Err(here(format!("token_file {}: is empty", file.display())));
                }
                token_hash(&token)
            }
            (None, Some(hash)) => parse_hash(hash)
                .ok_or_else(|| here("token_sha256: must be 64 hex digits".into()))?,
            _ => {
                return Err(here(
                    "give exactly one of token_file and token_sha256".into(),
                ));
            }
        };
        if entry.queues.is_empty() {
            return Err(here(
                "queues: name at least one queue it may submit into".into(),
            ));
        }
        for q in &entry.queues {
            if tree.index(q).is_none() {
                return Err(here(format!(
                    "queues: no queue named {q:?}; the queues are: {}",
                    tree.names()
                )));
            }
        }
        if let Some(other) = tenants.iter().find(|t| t.token_sha256 == token_sha256) {
            return Err(here(format!("has the same token as tenant {}", other.name)));
        }
        tenants.push(Tenant {
            name: entry.name,
            token_sha256,
            queues: entry.queues,
        });
    }
    Ok(QueueConfig {
        tree,
        tenants: Tenants::new(tenants),
    })
}

/// How often the file is read again. A mounted ConfigMap changes by an atomic swap of a
/// symlink, which inotify on the file itself does not see; a read every few seconds does.
pub const QUEUES_POLL: Duration = Duration::from_secs(2);

/// Reads the queues file at `path` (and the tenants' token files) every [`QUEUES_POLL`]; when
/// what it says differs from what is in force (`current`), puts the new queues in force, or
/// keeps the old ones and reports why the new ones cannot be, once per change. Token files are
/// read every time, so a rotated token (a mounted Secret changed) takes effect too.
pub async fn watch(
    path: PathBuf,
    current: QueueConfig,
    handle: MasterHandle,
    shutdown: Shutdown,
) -> crate::error::Result<()> {
    let mut last: Result<QueueConfig, String> = Ok(current);
    let mut tick = tokio::time::interval(QUEUES_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let file = path.clone();
        let read = tokio::task::spawn_blocking(move || {
            let shown = file.display().to_string();
            match std::fs::read(&file) {
                Ok(bytes) => parse(&shown, &String::from_utf8_lossy(&bytes))
                    .map_err(|e| format!("queues file {e}")),
                Err(e) => Err(format!("queues file {shown}: cannot read it: {e}")),
            }
        })
        .await;
        let Ok(outcome) = read else {
            continue;
        };
        if outcome == last {
            continue;
        }
        last = outcome.clone();
        let command = Command::SetQueues(outcome.map(|c| (Arc::new(c.tree), Arc::new(c.tenants))));
        if handle.send(command).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "\
queues:
  - name: ml                      # hierarchy by dotted names
    weight: 3
    guaranteed: {cores: 4, memory: 8g}
    max: {cores: 8, memory: 16g}
    preempt: {reclaim: true, priority: false, min_runtime: 60s, grace: 30s}
  - name: ml.training
  - name: adhoc
    max: {cores: 2}
";

    #[test]
    fn a_max_may_cap_named_resources_and_a_guarantee_may_not_name_them() {
        let tree = parse(
            "q.yaml",
            "queues:\n  - name: ml\n    max: {cores: 8, resources: {gpu: 4, fpga: 0}}\n",
        )
        .unwrap()
        .tree;
        let ml = tree.def(tree.index("ml").unwrap());
        assert_eq!(ml.max_named, vec![("fpga".into(), 0), ("gpu".into(), 4)]);
        for (text, says) in [
            (
                "queues:\n  - name: a\n    guaranteed: {resources: {gpu: 1}}\n",
                "guaranteed.resources: guarantees are of cores and memory",
            ),
            (
                "queues:\n  - name: a\n    max: {resources: {GPU: 1}}\n",
                "max.resources.GPU",
            ),
            (
                "queues:\n  - name: a\n    max: {resources: {gpu: two}}\n",
                "max.resources.gpu: \"two\" is not a whole number",
            ),
        ] {
            let e = parse("q.yaml", text).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn the_documented_example_reads_as_a_tree_with_default_added() {
        let tree = parse("q.yaml", EXAMPLE).unwrap().tree;
        let names: Vec<&str> = tree.defs().iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["adhoc", "default", "ml", "ml.training"]);
        let ml = tree.def(tree.index("ml").unwrap());
        assert_eq!(ml.weight, 3);
        assert_eq!(ml.guaranteed, Amount::new(4, 8192));
        assert_eq!(ml.max, Some(Amount::new(8, 16384)));
        let training = tree.index("ml.training").unwrap();
        assert_eq!(tree.parent(training), tree.index("ml"));
        let adhoc = tree.def(tree.index("adhoc").unwrap());
        assert_eq!(adhoc.max, Some(Amount::new(2, u64::MAX)));
        let parsed = parse("q.yaml", EXAMPLE).unwrap();
        let ml = parsed.tree.def(parsed.tree.index("ml").unwrap());
        assert_eq!(
            ml.preempt,
            Preempt {
                reclaim: true,
                priority: false,
                min_runtime_ms: 60_000,
                grace_ms: 30_000
            }
        );
    }

    #[test]
    fn mistakes_name_their_line_and_reason() {
        let cases = [
            (
                "queues:\n  - name: a\n  - name: b.c\n",
                "line 3: queue b.c: its parent b",
            ),
            (
                "queues:\n  - name: a\n  - name: a\n",
                "queue a is defined twice",
            ),
            (
                "queues:\n  - name: Big\n",
                "line 2: name: \"Big\" is not a queue name",
            ),
            (
                "queues:\n  - name: a\n    weight: 0\n",
                "line 2: queue a: weight must be at least 1",
            ),
            (
                "queues:\n  - name: a\n    max: {cores: 1}\n    guaranteed: {cores: 2}\n",
                "guaranteed cores is more than its max",
            ),
            (
                "queues:\n  - name: a\n    max: {memory: lots}\n",
                "line 2: queue a: max.memory: \"lots\" is not a memory size",
            ),
            ("queues:\n  - name: a\n    wieght: 2\n", "line 3"),
            (
                "queues:\n  - name: a\n    preempt: {grace: soon}\n",
                "line 2: queue a: preempt.grace",
            ),
            ("queues: [\n", "line"),
        ];
        for (text, expected) in cases {
            let err = parse("q.yaml", text).unwrap_err().to_string();
            assert!(err.starts_with("q.yaml: "), "{err}");
            assert!(err.contains(expected), "{text:?} gave {err}");
        }
    }

    #[test]
    fn an_empty_file_is_the_default_queue_alone() {
        let config = parse("q.yaml", "").unwrap();
        assert_eq!(config, QueueConfig::default());
    }
}
