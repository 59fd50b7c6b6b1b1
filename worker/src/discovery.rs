//! The named resources a worker offers (GPUs and the like), found in this order, a later one
//! replacing an earlier one of the same name:
//!
//! 1. GPUs the way a pod sees them: `NVIDIA_VISIBLE_DEVICES` as the NVIDIA device plugin and
//!    container runtime set it (indexes or `GPU-...` UUIDs; `all` means every device file;
//!    `none`, `void` or empty mean none), else the device files `nvidia0`, `nvidia1`, ... in
//!    the device directory (`/dev`), their numbers being the addresses;
//! 2. a discovery program's output, in Spark's format (`{"name":"gpu","addresses":["0"]}`);
//! 3. `--resource NAME=ADDR,...` or `NAME=COUNT` given by the operator.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use hearth_common::{named_resources, proto::ResourceAddresses};

use crate::error::{Error, Result};

/// How long a discovery program may run.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the worker was told to look at.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--resource` settings.
    pub given: Vec<ResourceAddresses>,
    /// `--resource-discovery`: a program printing Spark's discovery format.
    pub program: Option<PathBuf>,
    /// Where GPU device files are looked for.
    pub device_dir: PathBuf,
    /// `NVIDIA_VISIBLE_DEVICES`, if set.
    pub nvidia_visible_devices: Option<String>,
    /// Look for GPUs (the variable and the device files) at all.
    pub detect_gpus: bool,
}

/// What was found, and where each came from (for the log).
pub async fn discover(sources: &Sources) -> Result<(Vec<ResourceAddresses>, Vec<String>)> {
    let mut found = Vec::new();
    let mut from = Vec::new();
    if let Some((gpus, source)) = gpus(sources).filter(|_| sources.detect_gpus) {
        from.push(format!("gpu from {source}"));
        found.push(gpus);
    }
    if let Some(program) = &sources.program {
        let printed = run_program(program).await?;
        for r in &printed {
            from.push(format!("{} from {}", r.name, program.display()));
        }
        found.extend(printed);
    }
    for r in &sources.given {
        from.push(format!("{} from --resource", r.name));
    }
    found.extend(sources.given.iter().cloned());
    let merged = named_resources::merge(found);
    named_resources::validate_offer("resource", &merged)
        .map_err(|e| Error::Config(e.to_string()))?;
    Ok((merged, from))
}

/// How each offered GPU address is named to CUDA where the two differ: in a container given a
/// list of GPUs (`NVIDIA_VISIBLE_DEVICES=2,3` or UUIDs), CUDA numbers them from 0 in that
/// order, so `2` is `0` to CUDA. UUIDs (`GPU-...`, `MIG-...`) name themselves everywhere.
pub fn cuda_ids(
    nvidia_visible_devices: Option<&str>,
    offer: &[ResourceAddresses],
) -> std::collections::HashMap<String, String> {
    let list: Vec<&str> = match nvidia_visible_devices.map(str::trim) {
        None | Some("" | "all" | "none" | "void") => return Default::default(),
        Some(list) => list.split(',').map(str::trim).collect(),
    };
    offer
        .iter()
        .filter(|r| r.name == "gpu")
        .flat_map(|r| r.addresses.iter())
        .filter(|a| !a.starts_with("GPU-") && !a.starts_with("MIG-"))
        .filter_map(|a| {
            let at = list.iter().position(|x| x == a)?;
            Some((a.clone(), at.to_string()))
        })
        .collect()
}

/// GPUs as a pod sees them, and what said so.
fn gpus(sources: &Sources) -> Option<(ResourceAddresses, String)> {
    let gpu = |addresses: Vec<String>| ResourceAddresses {
        name: "gpu".into(),
        addresses,
    };
    match sources.nvidia_visible_devices.as_deref().map(str::trim) {
        Some("" | "none" | "void") => return None,
        Some("all") => {}
        Some(list) => {
            let addresses: Vec<String> = list
                .split(',')
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect();
            return (!addresses.is_empty())
                .then(|| (gpu(addresses), "NVIDIA_VISIBLE_DEVICES".to_string()));
        }
        None => {}
    }
    let mut numbers: Vec<u32> = std::fs::read_dir(&sources.device_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("nvidia")?.parse::<u32>().ok()
        })
        .collect();
    numbers.sort_unstable();
    (!numbers.is_empty()).then(|| {
        (
            gpu(numbers.iter().map(u32::to_string).collect()),
            format!("{}/nvidia*", sources.device_dir.display()),
        )
    })
}

async fn run_program(program: &Path) -> Result<Vec<ResourceAddresses>> {
    let shown = program.display().to_string();
    let refused = |why: String| Error::Config(format!("resource discovery {shown}: {why}"));
    let child = tokio::process::Command::new(program)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| refused(format!("cannot run it: {e}")))?;
    let output = tokio::time::timeout(DISCOVERY_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            refused(format!(
                "it did not finish within {} s",
                DISCOVERY_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| refused(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(refused(format!(
            "it exited with {}; stdout {:?}, stderr {:?}",
            output.status,
            stdout.chars().take(400).collect::<String>(),
            stderr.chars().take(400).collect::<String>()
        )));
    }
    named_resources::parse_discovery("resource discovery", &stdout).map_err(|e| refused(e.reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(dir: &Path) -> Sources {
        Sources {
            device_dir: dir.to_path_buf(),
            detect_gpus: true,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn gpus_come_from_the_visible_devices_variable_else_the_device_files() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "nvidia0",
            "nvidia1",
            "nvidia10",
            "nvidiactl",
            "nvidia-uvm",
            "null",
        ] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let (found, from) = discover(&sources(dir.path())).await.unwrap();
        assert_eq!(found[0].addresses, vec!["0", "1", "10"]);
        assert!(from[0].contains("nvidia*"), "{from:?}");

        let mut s = sources(dir.path());
        s.nvidia_visible_devices = Some("GPU-aaaa,GPU-bbbb".into());
        let (found, _) = discover(&s).await.unwrap();
        assert_eq!(found[0].addresses, vec!["GPU-aaaa", "GPU-bbbb"]);
        s.nvidia_visible_devices = Some("none".into());
        assert!(discover(&s).await.unwrap().0.is_empty());
        s.nvidia_visible_devices = Some("all".into());
        assert_eq!(discover(&s).await.unwrap().0[0].addresses.len(), 3);
        // What the operator gives replaces what was found.
        s.given = vec![named_resources::parse_offer("resource", "gpu=7,8").unwrap()];
        assert_eq!(discover(&s).await.unwrap().0[0].addresses, vec!["7", "8"]);
    }

    #[test]
    fn in_a_container_given_some_gpus_cuda_numbers_them_from_zero() {
        let offer = vec![named_resources::parse_offer("resource", "gpu=2,3").unwrap()];
        let ids = cuda_ids(Some("2,3"), &offer);
        assert_eq!(ids.get("2").map(String::as_str), Some("0"));
        assert_eq!(ids.get("3").map(String::as_str), Some("1"));
        // Every GPU visible (or none said): the host's numbers are CUDA's.
        assert!(cuda_ids(Some("all"), &offer).is_empty());
        assert!(cuda_ids(None, &offer).is_empty());
        let uuids = vec![named_resources::parse_offer("resource", "gpu=GPU-aa,GPU-bb").unwrap()];
        assert!(cuda_ids(Some("GPU-aa,GPU-bb"), &uuids).is_empty());
    }
}
