//! Spark-style ids and the wall clock they are made from.
//!
//! `driver-20261121143000-0000` and `app-20261121143000-0001` carry the master's start time and a
//! sequence number; `worker-20261121143000-10.1.2.3-8081` the worker's start time, host and port.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::InvalidInput;

/// Milliseconds since the Unix epoch, the unit every timestamp in the protocol uses.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `YYYYMMDDHHMMSS` in UTC, as Spark's ids use.
pub fn compact_timestamp(ms: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms);
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}")
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, for people.
pub fn display_time(ms: i64) -> String {
    if ms <= 0 {
        return "-".to_string();
    }
    let (y, mo, d, h, mi, s) = civil(ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// `EEE MMM dd HH:mm:ss zzz yyyy` in UTC, the way Java's `Date.toString` prints, as Spark's
/// `/json/` shows `submitdate`.
pub fn java_date(ms: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s) = civil(ms);
    let weekday = DAYS[ms.div_euclid(86_400_000).rem_euclid(7) as usize];
    let month = MONTHS[(mo as usize).saturating_sub(1) % 12];
    format!("{weekday} {month} {d:02} {h:02}:{mi:02}:{s:02} UTC {y}")
}

/// Splits epoch milliseconds into UTC calendar fields (Howard Hinnant's `civil_from_days`).
fn civil(ms: i64) -> (i64, u32, u32, u32, u32, u32) {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (sod / 3600) as u32,
        ((sod % 3600) / 60) as u32,
        (sod % 60) as u32,
    )
}

/// A new driver id: `driver-<master start>-<seq>`.
pub fn driver_id(master_started_ms: i64, seq: u64) -> String {
    format!("driver-{}-{seq:04}", compact_timestamp(master_started_ms))
}

/// A new application id: `app-<master start>-<seq>`.
pub fn app_id(master_started_ms: i64, seq: u64) -> String {
    format!("app-{}-{seq:04}", compact_timestamp(master_started_ms))
}

/// A new worker id: `worker-<start>-<host>-<port>`.
pub fn worker_id(started_ms: i64, host: &str, port: u16) -> String {
    format!("worker-{}-{host}-{port}", compact_timestamp(started_ms))
}

/// What kind of object an id names, judged by its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Driver,
    App,
    Worker,
}

/// Checks that `id` looks like an id of `kind`, naming `field` when it does not.
pub fn check_id(field: &str, id: &str, kind: IdKind) -> Result<(), InvalidInput> {
    let (prefix, what, example) = match kind {
        IdKind::Driver => ("driver-", "a driver", "driver-20261121143000-0000"),
        IdKind::App => ("app-", "an application", "app-20261121143000-0001"),
        IdKind::Worker => ("worker-", "a worker", "worker-20261121143000-10.1.2.3-8081"),
    };
    if id.is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    let well_formed = id.len() <= 256
        && id.starts_with(prefix)
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    if !well_formed {
        return Err(InvalidInput::new(
            field,
            format!("{id:?} is not {what} id (like {example})"),
        ));
    }
    Ok(())
}

/// A process a worker runs: a driver, or one executor of an application. Its text form
/// (`driver-...` or `app-.../3`) names it in logs requests and is its directory under the
/// worker's work directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProcessRef {
    Driver(String),
    Executor { app_id: String, executor_id: u32 },
}

impl ProcessRef {
    /// Parses `driver-...` or `app-.../N`, naming `field` when it is neither.
    pub fn parse(field: &str, text: &str) -> Result<Self, InvalidInput> {
        if let Some((app, executor)) = text.split_once('/') {
            check_id(field, app, IdKind::App)?;
            let executor_id = executor.parse::<u32>().map_err(|_| {
                InvalidInput::new(
                    field,
                    format!("{text:?}: an executor is named app-.../N with N a number"),
                )
            })?;
            return Ok(Self::Executor {
                app_id: app.to_string(),
                executor_id,
            });
        }
        if text.starts_with("app-") {
            return Err(InvalidInput::new(
                field,
                format!(
                    "{text:?} is an application; name one of its executors as {text}/N (see hearth status {text})"
                ),
            ));
        }
        check_id(field, text, IdKind::Driver)?;
        Ok(Self::Driver(text.to_string()))
    }

    /// Its directory, relative to a worker's work directory.
    pub fn dir_in(&self, work_dir: &std::path::Path) -> std::path::PathBuf {
        match self {
            Self::Driver(id) => work_dir.join(id),
            Self::Executor {
                app_id,
                executor_id,
            } => work_dir.join(app_id).join(executor_id.to_string()),
        }
    }
}

impl std::fmt::Display for ProcessRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Driver(id) => f.write_str(id),
            Self::Executor {
                app_id,
                executor_id,
            } => write!(f, "{app_id}/{executor_id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_dates_read_like_spark_shows_them() {
        // 2026-11-21 16:40:09 UTC was a Saturday; the epoch a Thursday.
        assert_eq!(java_date(1_795_279_209_000), "Sat Nov 21 16:40:09 UTC 2026");
        assert_eq!(java_date(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(java_date(951_782_400_000), "Tue Feb 29 00:00:00 UTC 2000");
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        // 2026-11-21 14:30:00 UTC
        assert_eq!(compact_timestamp(1_795_271_400_000), "20261121143000");
        assert_eq!(display_time(0), "-");
        assert_eq!(display_time(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn ids_have_spark_shapes() {
        assert_eq!(
            driver_id(1_795_271_400_000, 7),
            "driver-20261121143000-0007"
        );
        assert_eq!(
            worker_id(1_795_271_400_000, "10.1.2.3", 8081),
            "worker-20261121143000-10.1.2.3-8081"
        );
        assert!(check_id("driver_id", "driver-20261121143000-0007", IdKind::Driver).is_ok());
        let err = check_id("driver_id", "app-1", IdKind::Driver).unwrap_err();
        assert_eq!(err.field, "driver_id");
        assert!(err.reason.contains("not a driver id"), "{err}");
        assert!(check_id("driver_id", "driver-x/../y", IdKind::Driver).is_err());
        assert_eq!(app_id(1_795_271_400_000, 1), "app-20261121143000-0001");
    }

    #[test]
    fn process_refs_round_trip_and_refuse_paths() {
        for text in ["driver-20261121143000-0007", "app-20261121143000-0001/12"] {
            assert_eq!(ProcessRef::parse("id", text).unwrap().to_string(), text);
        }
        let exec = ProcessRef::parse("id", "app-1/3").unwrap();
        assert_eq!(
            exec.dir_in(std::path::Path::new("/w")),
            std::path::Path::new("/w/app-1/3")
        );
        for bad in [
            "app-1/../x",
            "app-1/x",
            "app-1",
            "../etc",
            "driver-1/2",
            "app-1/-1",
        ] {
            let err = ProcessRef::parse("id", bad).unwrap_err();
            assert_eq!(err.field, "id", "{bad}");
        }
    }
}
