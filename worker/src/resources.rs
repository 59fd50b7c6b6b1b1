//! What a worker offers: the container's CPU and memory limits from its cgroup (v2 or v1),
//! else the host's.
//!
//! In Kubernetes a pod's limits are its cgroup's; offering them (and not the node's) keeps the
//! slots honest. Quotas of a fraction of a core round down (1.5 CPUs offer 1 core), never below 1.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// Offered resources and where each figure came from, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub cores: u32,
    pub cores_source: String,
    pub memory_mb: u64,
    pub memory_source: String,
}

/// Limits at or above this are "unlimited" (cgroup v1 writes a huge page-aligned number).
const UNLIMITED_BYTES: u64 = 1 << 60;

/// Detects the cores and memory to offer, looking under `cgroup_root` (normally
/// `/sys/fs/cgroup`) at this process's own cgroup first, then the mount's top.
pub fn detect(cgroup_root: &Path) -> Detected {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    detect_with(cgroup_root, &own, host_cores(), host_memory_mb())
}

/// [`detect`] with the inputs spelled out, for tests.
pub fn detect_with(
    cgroup_root: &Path,
    proc_self_cgroup: &str,
    host_cores: u32,
    host_memory_mb: u64,
) -> Detected {
    let (cores, cores_source) = match cpu_limit(cgroup_root, proc_self_cgroup) {
        Some((cpus, source)) => (
            (cpus.floor() as u32).clamp(1, host_cores.max(1)),
            format!("cgroup {source} ({cpus:.2} CPUs)"),
        ),
        None => (host_cores.max(1), "host CPUs".to_string()),
    };
    let (memory_mb, memory_source) = match memory_limit(cgroup_root, proc_self_cgroup) {
        Some((bytes, source)) => (
            (bytes / (1024 * 1024)).clamp(1, host_memory_mb.max(1)),
            format!("cgroup {source}"),
        ),
        None => (host_memory_mb.max(1), "host memory".to_string()),
    };
    Detected {
        cores,
        cores_source,
        memory_mb,
        memory_source,
    }
}

fn host_cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

fn host_memory_mb() -> u64 {
    match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_memory();
            (sys.total_memory() / (1024 * 1024)).max(1)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the host's memory; offering 1 GiB");
            1024
        }
    }
}

/// Directories to look in for a controller: this process's cgroup, then the mount's top.
/// `controller` is `None` for cgroup v2's unified hierarchy.
fn candidates(root: &Path, proc_self_cgroup: &str, controller: Option<&str>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        match controller {
            None if controllers.is_empty() => dirs.push(root.join(rel)),
            Some(c) if controllers.split(',').any(|x| x == c) => {
                dirs.push(root.join(controllers).join(rel));
                dirs.push(root.join(c).join(rel));
            }
            _ => {}
        }
    }
    match controller {
        None => dirs.push(root.to_path_buf()),
        Some(c) => {
            dirs.push(root.join(c));
            if c == "cpu" {
                dirs.push(root.join("cpu,cpuacct"));
            }
        }
    }
    dirs
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// CPUs allowed by the CFS quota, and which file said so.
fn cpu_limit(root: &Path, own: &str) -> Option<(f64, String)> {
    for dir in candidates(root, own, None) {
        let file = dir.join("cpu.max");
        if let Some(text) = read_trimmed(&file) {
            let mut parts = text.split_whitespace();
            let (Some(quota), Some(period)) = (parts.next(), parts.next()) else {
                continue;
            };
            if quota == "max" {
                continue;
            }
            if let (Ok(q), Ok(p)) = (quota.parse::<f64>(), period.parse::<f64>())
                && q > 0.0
                && p > 0.0
            {
                return Some((q / p, format!("v2 {}", file.display())));
            }
        }
    }
    for dir in candidates(root, own, Some("cpu")) {
        let quota = read_trimmed(&dir.join("cpu.cfs_quota_us")).and_then(|s| s.parse::<i64>().ok());
        let period =
            read_trimmed(&dir.join("cpu.cfs_period_us")).and_then(|s| s.parse::<i64>().ok());
        if let (Some(q), Some(p)) = (quota, period)
            && q > 0
            && p > 0
        {
            return Some((
                q as f64 / p as f64,
                format!("v1 {}", dir.join("cpu.cfs_quota_us").display()),
            ));
        }
    }
    None
}

/// The memory limit in bytes, and which file said so.
fn memory_limit(root: &Path, own: &str) -> Option<(u64, String)> {
    for dir in candidates(root, own, None) {
        let file = dir.join("memory.max");
        if let Some(text) = read_trimmed(&file)
            && let Ok(bytes) = text.parse::<u64>()
            && bytes < UNLIMITED_BYTES
        {
            return Some((bytes, format!("v2 {}", file.display())));
        }
    }
    for dir in candidates(root, own, Some("memory")) {
        let file = dir.join("memory.limit_in_bytes");
        if let Some(text) = read_trimmed(&file)
            && let Ok(bytes) = text.parse::<u64>()
            && bytes < UNLIMITED_BYTES
        {
            return Some((bytes, format!("v1 {}", file.display())));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn cgroup_v2_limits_at_the_mount_top_as_in_a_container() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "cpu.max", "250000 100000\n");
        write(dir.path(), "memory.max", "2147483648\n");
        let d = detect_with(dir.path(), "0::/\n", 16, 65536);
        assert_eq!((d.cores, d.memory_mb), (2, 2048));
        assert!(d.cores_source.contains("v2"), "{d:?}");
    }

    #[test]
    fn cgroup_v2_own_cgroup_wins_and_max_means_unlimited() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "cpu.max", "max 100000\n");
        write(dir.path(), "memory.max", "max\n");
        write(dir.path(), "kubepods/pod1/cpu.max", "150000 100000\n");
        write(dir.path(), "kubepods/pod1/memory.max", "536870912\n");
        let d = detect_with(dir.path(), "0::/kubepods/pod1\n", 16, 65536);
        assert_eq!((d.cores, d.memory_mb), (1, 512));

        let d = detect_with(dir.path(), "0::/\n", 16, 65536);
        assert_eq!((d.cores, d.memory_mb), (16, 65536));
        assert_eq!(d.cores_source, "host CPUs");
    }

    #[test]
    fn cgroup_v1_quota_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "cpu,cpuacct/cpu.cfs_quota_us", "400000\n");
        write(dir.path(), "cpu,cpuacct/cpu.cfs_period_us", "100000\n");
        write(dir.path(), "memory/memory.limit_in_bytes", "1073741824\n");
        let d = detect_with(dir.path(), "4:cpu,cpuacct:/\n3:memory:/\n", 8, 32768);
        assert_eq!((d.cores, d.memory_mb), (4, 1024));
        assert!(d.memory_source.contains("v1"), "{d:?}");
    }

    #[test]
    fn cgroup_v1_unlimited_falls_back_to_the_host() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "cpu/cpu.cfs_quota_us", "-1\n");
        write(dir.path(), "cpu/cpu.cfs_period_us", "100000\n");
        write(
            dir.path(),
            "memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        let d = detect_with(dir.path(), "", 8, 32768);
        assert_eq!((d.cores, d.memory_mb), (8, 32768));
    }

    #[test]
    fn a_limit_above_the_host_is_capped_at_the_host() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "cpu.max", "6400000 100000\n");
        let d = detect_with(dir.path(), "0::/\n", 2, 1024);
        assert_eq!(d.cores, 2);
    }
}
