//! Drivers that prove when they ran: each copy appends a nanosecond timestamp to
//! `DIR/<tag>-<attempt>` every 50 ms, so a test can check that copies never overlapped.

use std::path::Path;

/// The shell script of such a driver (`$TICKS` names the directory).
pub fn script(tag: &str) -> String {
    format!(
        "f=\"$TICKS/{tag}-$HEARTH_ATTEMPT\"; while :; do date +%s%N >> \"$f\"; sleep 0.05; done"
    )
}

/// Each copy's (attempt, first, last) timestamps for `tag`, by attempt.
pub fn intervals(dir: &Path, tag: &str) -> Vec<(u32, u128, u128)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("the ticks directory")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(attempt) = name
            .strip_prefix(&format!("{tag}-"))
            .and_then(|a| a.parse().ok())
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let ticks: Vec<u128> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if let (Some(first), Some(last)) = (ticks.first(), ticks.last()) {
            found.push((attempt, *first, *last));
        }
    }
    found.sort();
    found
}

/// Whether any copy started before the one before it had stopped.
pub fn overlaps(copies: &[(u32, u128, u128)]) -> bool {
    copies.windows(2).any(|w| w[1].1 <= w[0].2)
}

/// The last timestamp of `tag`'s `attempt`.
pub fn last(dir: &Path, tag: &str, attempt: u32) -> Option<u128> {
    intervals(dir, tag)
        .into_iter()
        .find(|(a, _, _)| *a == attempt)
        .map(|(_, _, last)| last)
}
