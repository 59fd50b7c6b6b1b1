//! The overview's picture: cores and memory in use over the last hour, as inline SVG drawn
//! on the server from the master's samples (no script, works in any browser and in tests).

use std::fmt::Write;

use crate::telemetry::Sample;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 710.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 150.0;

fn percent(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (used as f64 * 100.0 / total as f64).clamp(0.0, 100.0)
    }
}

/// The chart for `samples` (oldest first) in the `window_ms` before `now_ms`. Everything in
/// it is a number this function formats, so it is safe to embed unescaped.
pub fn utilisation_svg(samples: &[Sample], now_ms: i64, window_ms: i64) -> String {
    let window = window_ms.max(1) as f64;
    let x = |at_ms: i64| {
        let age = (now_ms - at_ms).clamp(0, window_ms) as f64;
        RIGHT - (RIGHT - LEFT) * age / window
    };
    let y = |pct: f64| BOTTOM - (BOTTOM - TOP) * pct / 100.0;
    let line = |pick: &dyn Fn(&Sample) -> f64| {
        let mut points = String::new();
        for s in samples {
            let _ = write!(points, "{:.1},{:.1} ", x(s.at_ms), y(pick(s)));
        }
        points.trim_end().to_string()
    };
    let cores = |s: &Sample| percent(s.cores_used, s.cores);
    let memory = |s: &Sample| percent(s.memory_used_mb, s.memory_mb);
    let summary = match samples.last() {
        Some(s) => format!(
            "Cluster use over the last hour: cores {:.0}% and memory {:.0}% now, {} samples.",
            cores(s),
            memory(s),
            samples.len()
        ),
        None => "Cluster use over the last hour: no samples yet.".to_string(),
    };
    let minutes = window_ms / 60_000;
    let mut svg = String::with_capacity(4096 + samples.len() * 24);
    let _ = write!(
        svg,
        r##"<svg id="utilisation" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="utilisation-title"><title id="utilisation-title">{summary}</title>"##
    );
    for pct in [0.0, 50.0, 100.0] {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{RIGHT}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" font-size="11" text-anchor="end" fill="#555">{pct:.0}%</text>"##,
            y = y(pct),
            tx = LEFT - 6.0,
            ty = y(pct) + 4.0,
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="168" font-size="11" fill="#555">{minutes} min ago</text><text x="{RIGHT}" y="168" font-size="11" text-anchor="end" fill="#555">now</text>"##
    );
    if samples.is_empty() {
        let _ = write!(
            svg,
            r##"<text x="{cx}" y="85" font-size="13" text-anchor="middle" fill="#777">No samples yet</text>"##,
            cx = (LEFT + RIGHT) / 2.0
        );
    } else {
        let _ = write!(
            svg,
            r##"<polyline class="cores" fill="none" stroke="#c2410c" stroke-width="2" points="{}"/><polyline class="memory" fill="none" stroke="#2563eb" stroke-width="2" stroke-dasharray="5 3" points="{}"/>"##,
            line(&cores),
            line(&memory)
        );
    }
    let _ = write!(
        svg,
        r##"<rect x="{lx}" y="172" width="10" height="3" fill="#c2410c"/><text x="{tx}" y="177" font-size="11" fill="#333">cores</text><rect x="{mx}" y="172" width="10" height="3" fill="#2563eb"/><text x="{mtx}" y="177" font-size="11" fill="#333">memory</text></svg>"##,
        lx = LEFT + 200.0,
        tx = LEFT + 214.0,
        mx = LEFT + 270.0,
        mtx = LEFT + 284.0,
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, cores_used: u64, memory_used_mb: u64) -> Sample {
        Sample {
            at_ms,
            cores_used,
            cores: 4,
            memory_used_mb,
            memory_mb: 1000,
        }
    }

    #[test]
    fn plots_each_sample_at_its_age_and_share() {
        let now = 10_000_000;
        let svg = utilisation_svg(
            &[sample(now - 3_600_000, 0, 0), sample(now, 4, 500)],
            now,
            3_600_000,
        );
        // Oldest at the left edge at 0%; newest at the right edge, cores 100%, memory 50%.
        assert!(
            svg.contains(r##"class="cores" fill="none" stroke="#c2410c" stroke-width="2" points="44.0,150.0 710.0,12.0""##),
            "{svg}"
        );
        assert!(svg.contains("points=\"44.0,150.0 710.0,81.0\""), "{svg}");
        assert!(svg.contains("cores 100% and memory 50% now, 2 samples"));
    }

    #[test]
    fn says_when_there_is_nothing_to_plot() {
        let svg = utilisation_svg(&[], 0, 3_600_000);
        assert!(svg.contains("No samples yet") && !svg.contains("polyline"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn an_empty_cluster_is_zero_percent_not_nan() {
        let s = Sample {
            at_ms: 5,
            cores_used: 0,
            cores: 0,
            memory_used_mb: 0,
            memory_mb: 0,
        };
        let svg = utilisation_svg(&[s], 5, 1000);
        assert!(!svg.contains("NaN") && svg.contains("cores 0% and memory 0%"));
    }
}
