//! Validation of what a user submits, shared by the CLI (early, friendly) and the master (the
//! edge that counts).

use crate::error::InvalidInput;
use std::collections::HashMap;

use crate::ids::{IdKind, check_id};
use crate::proto::{ApplicationSpec, DriverSpec, Register};
use crate::resources::{MAX_CORES, MAX_MEMORY_MB};

/// Most arguments a driver command may have.
pub const MAX_COMMAND_ARGS: usize = 4096;
/// Most bytes in all of a driver's command, environment and name together.
pub const MAX_SPEC_BYTES: usize = 1024 * 1024;
/// Most relaunches a supervised driver may ask for.
pub const MAX_RETRIES_LIMIT: u32 = 100;
/// Most bytes in a name or a host: a driver's name, a worker's name and host, the host an
/// application's driver gives.
pub const MAX_NAME_BYTES: usize = 256;

/// Checks a driver submission, naming the first field that is wrong and why.
pub fn validate_driver_spec(spec: &DriverSpec) -> Result<(), InvalidInput> {
    if spec.cores == 0 {
        return Err(InvalidInput::new("cores", "must be at least 1, got 0"));
    }
    if spec.cores > MAX_CORES {
        return Err(InvalidInput::new(
            "cores",
            format!("{} is more than {MAX_CORES}", spec.cores),
        ));
    }
    if spec.memory_mb == 0 {
        return Err(InvalidInput::new("memory", "must be at least 1m, got 0"));
    }
    if spec.memory_mb > MAX_MEMORY_MB {
        return Err(InvalidInput::new(
            "memory",
            format!("{} MiB is more than {MAX_MEMORY_MB} MiB", spec.memory_mb),
        ));
    }
    if spec.at_most_one && !spec.supervise {
        return Err(InvalidInput::new(
            "at_most_one",
            "needs supervise: an unsupervised driver is never relaunched, so never runs twice",
        ));
    }
    if spec.max_retries > MAX_RETRIES_LIMIT {
        return Err(InvalidInput::new(
            "max_retries",
            format!("{} is more than {MAX_RETRIES_LIMIT}", spec.max_retries),
        ));
    }
    if !spec.queue.is_empty() {
        validate_queue_name("queue", &spec.queue)?;
    }
    validate_time_limit(spec.time_limit_ms)?;
    if spec.ui_port > u32::from(u16::MAX) {
        return Err(InvalidInput::new(
            "ui_port",
            format!("{} is not a TCP port (1 to 65535)", spec.ui_port),
        ));
    }
    crate::named_resources::validate_asks("resources", &spec.resources)?;
    if spec.ui_keep_prefix && spec.ui_port == 0 {
        return Err(InvalidInput::new(
            "ui_keep_prefix",
            "applies to a driver UI: set ui_port too",
        ));
    }
    validate_program(
        Fields {
            name: "name",
            command: "command",
            env: "env",
        },
        &spec.name,
        &spec.command,
        &spec.env,
    )
}

/// The longest time limit: a year.
pub const MAX_TIME_LIMIT_MS: u64 = 366 * 24 * 3600 * 1000;

fn validate_time_limit(ms: u64) -> Result<(), InvalidInput> {
    if ms > MAX_TIME_LIMIT_MS {
        return Err(InvalidInput::new(
            "time_limit",
            format!("{ms} ms is more than a year ({MAX_TIME_LIMIT_MS} ms)"),
        ));
    }
    Ok(())
}

/// Most bytes in a queue's name, dots included.
pub const MAX_QUEUE_NAME_BYTES: usize = 128;

/// Checks a queue's name: dot-separated parts (`ml.training`), each of lowercase letters,
/// digits, `-` and `_`, so it reads the same in a URL, a metric label and a file.
pub fn validate_queue_name(field: &'static str, name: &str) -> Result<(), InvalidInput> {
    if name.len() > MAX_QUEUE_NAME_BYTES {
        return Err(InvalidInput::new(
            field,
            format!("{} bytes is longer than {MAX_QUEUE_NAME_BYTES}", name.len()),
        ));
    }
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    };
    if !name.split('.').all(part_ok) {
        return Err(InvalidInput::new(
            field,
            format!(
                "{name:?} is not a queue name: dot-separated parts of lowercase letters, digits, \
                 - and _ (e.g. ml.training)"
            ),
        ));
    }
    Ok(())
}

/// Most executors an application may ask for.
pub const MAX_EXECUTORS: u32 = 10_000;
/// Most failed executors an application may replace.
pub const MAX_EXECUTOR_RETRIES: u32 = 1000;
/// Failed executors replaced before an application fails, unless it says otherwise (Spark's).
pub const DEFAULT_EXECUTOR_RETRIES: u32 = 10;

/// What the fields of a program are called in a driver's or an application's spec.
struct Fields {
    name: &'static str,
    command: &'static str,
    env: &'static str,
}

/// The parts drivers and executors share: a name for people, an argv and an environment, all
/// bounded in size.
fn validate_program(
    fields: Fields,
    name: &str,
    command: &[String],
    env: &HashMap<String, String>,
) -> Result<(), InvalidInput> {
    validate_command(fields.command, command)?;
    validate_name(fields.name, name)?;
    validate_env(fields.env, env)?;
    let bytes = name.len()
        + command.iter().map(String::len).sum::<usize>()
        + env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    if bytes > MAX_SPEC_BYTES {
        return Err(InvalidInput::new(
            fields.command,
            format!("command, name and environment take {bytes} bytes; at most {MAX_SPEC_BYTES}"),
        ));
    }
    Ok(())
}

/// An argv: a program, not too many arguments, no NUL bytes.
fn validate_command(field: &str, command: &[String]) -> Result<(), InvalidInput> {
    if command.is_empty() || command[0].trim().is_empty() {
        return Err(InvalidInput::new(
            field,
            "must not be empty: give the program to run and its arguments",
        ));
    }
    if command.len() > MAX_COMMAND_ARGS {
        return Err(InvalidInput::new(
            field,
            format!(
                "has {} arguments; at most {MAX_COMMAND_ARGS}",
                command.len()
            ),
        ));
    }
    if command.iter().any(|a| a.contains('\0')) {
        return Err(InvalidInput::new(field, "must not contain NUL bytes"));
    }
    Ok(())
}

fn validate_env(field: &str, env: &HashMap<String, String>) -> Result<(), InvalidInput> {
    for (key, value) in env {
        let valid_key = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key {
            return Err(InvalidInput::new(
                field,
                format!(
                    "{key:?} is not a variable name (letters, digits and _, not starting with a digit)"
                ),
            ));
        }
        if key.starts_with("HEARTH_") {
            return Err(InvalidInput::new(
                field,
                format!("{key} is set by the worker; HEARTH_* names are reserved"),
            ));
        }
        if value.contains('\0') {
            return Err(InvalidInput::new(
                field,
                format!("the value of {key} contains a NUL byte"),
            ));
        }
    }
    Ok(())
}

/// How many executors an application may hold at once: its cap in executors.
pub fn max_executors(spec: &ApplicationSpec) -> u32 {
    if spec.max_cores > 0 {
        spec.max_cores / spec.executor_cores.max(1)
    } else {
        spec.executors
    }
}

/// Checks an application's executor request, naming the first field that is wrong and why.
/// Field names are those of the `hearth submit --executor-*` options.
pub fn validate_app_spec(spec: &ApplicationSpec) -> Result<(), InvalidInput> {
    if !spec.queue.is_empty() {
        validate_queue_name("queue", &spec.queue)?;
    }
    crate::named_resources::validate_asks("executor_resources", &spec.executor_resources)?;
    validate_time_limit(spec.time_limit_ms)?;
    if spec.executor_cores == 0 || spec.executor_cores > MAX_CORES {
        return Err(InvalidInput::new(
            "executor_cores",
            format!(
                "must be between 1 and {MAX_CORES}, got {}",
                spec.executor_cores
            ),
        ));
    }
    if spec.executor_memory_mb == 0 || spec.executor_memory_mb > MAX_MEMORY_MB {
        return Err(InvalidInput::new(
            "executor_memory",
            format!(
                "must be between 1m and {MAX_MEMORY_MB}m, got {}m",
                spec.executor_memory_mb
            ),
        ));
    }
    if spec.executors == 0 && spec.max_cores == 0 {
        return Err(InvalidInput::new(
            "executors",
            "must be at least 1 (or give max_cores to take as many as the cap allows)",
        ));
    }
    if spec.max_cores > 0 && spec.max_cores < spec.executor_cores {
        return Err(InvalidInput::new(
            "max_cores",
            format!(
                "{} is smaller than one executor ({} cores): no executor could ever run",
                spec.max_cores, spec.executor_cores
            ),
        ));
    }
    if spec.max_cores > 0 && spec.executors > max_executors(spec) {
        return Err(InvalidInput::new(
            "executors",
            format!(
                "{} executors of {} cores need {} cores, more than max_cores {}",
                spec.executors,
                spec.executor_cores,
                u64::from(spec.executors) * u64::from(spec.executor_cores),
                spec.max_cores
            ),
        ));
    }
    if max_executors(spec) > MAX_EXECUTORS {
        return Err(InvalidInput::new(
            "executors",
            format!("at most {MAX_EXECUTORS} executors per application"),
        ));
    }
    if spec.gang && spec.executors == 0 {
        return Err(InvalidInput::new(
            "executors",
            "a gang needs its size: how many executors start together",
        ));
    }
    if !spec.gang && spec.gang_timeout_ms > 0 {
        return Err(InvalidInput::new(
            "gang_timeout",
            "applies to a gang only (add --gang)",
        ));
    }
    if !spec.gang && spec.gang_restart {
        return Err(InvalidInput::new(
            "gang_restart",
            "applies to a gang only (add --gang)",
        ));
    }
    if spec.gang_timeout_ms > MAX_TIME_LIMIT_MS {
        return Err(InvalidInput::new(
            "gang_timeout",
            format!(
                "{} ms is more than a year ({MAX_TIME_LIMIT_MS} ms)",
                spec.gang_timeout_ms
            ),
        ));
    }
    if spec.executor_retries.unwrap_or(0) > MAX_EXECUTOR_RETRIES {
        return Err(InvalidInput::new(
            "executor_retries",
            format!("at most {MAX_EXECUTOR_RETRIES}"),
        ));
    }
    validate_program(
        Fields {
            name: "app_name",
            command: "executor_command",
            env: "executor_env",
        },
        &spec.name,
        &spec.command,
        &spec.env,
    )
}

/// Checks a name or host: at most [`MAX_NAME_BYTES`], no control characters (it is shown
/// as it is on the UI and in logs).
pub fn validate_name(field: &'static str, text: &str) -> Result<(), InvalidInput> {
    if text.len() > MAX_NAME_BYTES || text.chars().any(char::is_control) {
        return Err(InvalidInput::new(
            field,
            format!("must be at most {MAX_NAME_BYTES} bytes, without control characters"),
        ));
    }
    Ok(())
}

/// Checks what a worker says of itself when it registers: its id, offer, name, host and
/// labels. The worker checks its own before it dials; the master checks every one it gets.
pub fn validate_register(reg: &Register) -> Result<(), InvalidInput> {
    check_id("worker_id", &reg.worker_id, IdKind::Worker)?;
    validate_labels(&reg.labels)?;
    if reg.cores == 0 || reg.cores > MAX_CORES {
        return Err(InvalidInput::new(
            "cores",
            format!("must be between 1 and {MAX_CORES}, got {}", reg.cores),
        ));
    }
    if reg.memory_mb == 0 || reg.memory_mb > MAX_MEMORY_MB {
        return Err(InvalidInput::new(
            "memory_mb",
            format!(
                "must be between 1 and {MAX_MEMORY_MB}, got {}",
                reg.memory_mb
            ),
        ));
    }
    validate_name("name", &reg.name)?;
    validate_name("host", &reg.host)?;
    crate::named_resources::validate_offer("resources", &reg.resources)
}

/// Checks a client's submission id: 1 to 128 letters, digits, `-`, `_`, `.` or `:`.
pub fn validate_submission_id(id: &str) -> Result<(), InvalidInput> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::new(
            "submission_id",
            "must be 1 to 128 letters, digits, '-', '_', '.' or ':'",
        ))
    }
}

/// A fresh random submission id (128 bits, hex).
pub fn new_submission_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Parses `K=V` for `--env`.
pub fn parse_env_pair(text: &str) -> Result<(String, String), InvalidInput> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(InvalidInput::new(
            "env",
            format!("{text:?} is not KEY=VALUE"),
        )),
    }
}

/// Most labels a worker may carry.
pub const MAX_LABELS: usize = 32;

/// Checks a worker's labels: short keys of letters, digits and `._-/`, values of printable
/// text, so they show as they are on the UI.
pub fn validate_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), InvalidInput> {
    let mut n = 0;
    for (key, value) in labels {
        n += 1;
        if n > MAX_LABELS {
            return Err(InvalidInput::new(
                "labels",
                format!("more than {MAX_LABELS}"),
            ));
        }
        let key_ok = !key.is_empty()
            && key.len() <= 63
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
        if !key_ok {
            return Err(InvalidInput::new(
                "labels",
                format!("key {key:?}: 1 to 63 letters, digits, '.', '_', '-' or '/'"),
            ));
        }
        if value.len() > 253 || value.chars().any(char::is_control) {
            return Err(InvalidInput::new(
                "labels",
                format!("value of {key:?}: at most 253 bytes, no control characters"),
            ));
        }
    }
    Ok(())
}

/// Reads `KEY=VALUE`, as `--label` takes it.
pub fn parse_label(text: &str) -> Result<(String, String), InvalidInput> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| InvalidInput::new("label", format!("{text:?} is not KEY=VALUE")))?;
    let (key, value) = (key.trim().to_string(), value.trim().to_string());
    validate_labels([(&key, &value)])?;
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked_by_key_and_value() {
        assert_eq!(
            parse_label("node=kind-worker-2").ok(),
            Some(("node".into(), "kind-worker-2".into()))
        );
        for (text, why) in [
            ("node", "not KEY=VALUE"),
            ("=x", "key \"\""),
            ("a b=x", "key \"a b\""),
            ("k=a\u{7}b", "control characters"),
        ] {
            let err = parse_label(text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(why), "{text}: {err}");
        }
        let many: HashMap<String, String> = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(validate_labels(&many).is_err());
    }

    fn spec() -> DriverSpec {
        DriverSpec {
            name: "job".into(),
            command: vec!["sh".into(), "-c".into(), "true".into()],
            cores: 1,
            memory_mb: 512,
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_spec_is_valid() {
        assert_eq!(validate_driver_spec(&spec()), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        type Change = Box<dyn Fn(&mut DriverSpec)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|s| s.command.clear()), "command"),
            (Box::new(|s| s.command = vec![" ".into()]), "command"),
            (Box::new(|s| s.cores = 0), "cores"),
            (Box::new(|s| s.memory_mb = 0), "memory"),
            (Box::new(|s| s.max_retries = 1000), "max_retries"),
            (
                Box::new(|s| {
                    s.env.insert("1X".into(), "v".into());
                }),
                "env",
            ),
            (
                Box::new(|s| {
                    s.env.insert("HEARTH_SECRET".into(), "v".into());
                }),
                "env",
            ),
            (Box::new(|s| s.name = "a\nb".into()), "name"),
        ];
        for (change, field) in cases {
            let mut s = spec();
            change(&mut s);
            assert_eq!(validate_driver_spec(&s).unwrap_err().field, field);
        }
    }

    fn app() -> ApplicationSpec {
        ApplicationSpec {
            name: "pi".into(),
            command: vec!["worker".into()],
            executor_cores: 2,
            executor_memory_mb: 256,
            executors: 2,
            ..Default::default()
        }
    }

    #[test]
    fn application_caps_are_checked() {
        assert_eq!(validate_app_spec(&app()), Ok(()));
        assert_eq!(max_executors(&app()), 2);
        let capped = ApplicationSpec {
            executors: 0,
            max_cores: 7,
            ..app()
        };
        assert_eq!(validate_app_spec(&capped), Ok(()));
        assert_eq!(max_executors(&capped), 3);
        type Change = Box<dyn Fn(&mut ApplicationSpec)>;
        let cases: Vec<(Change, &str, &str)> = vec![
            (Box::new(|s| s.executors = 0), "executors", "at least 1"),
            (
                Box::new(|s| s.max_cores = 1),
                "max_cores",
                "smaller than one",
            ),
            (
                Box::new(|s| {
                    s.max_cores = 4;
                    s.executors = 3;
                }),
                "executors",
                "more than max_cores",
            ),
            (Box::new(|s| s.executor_cores = 0), "executor_cores", ""),
            (
                Box::new(|s| s.executor_memory_mb = 0),
                "executor_memory",
                "",
            ),
            (Box::new(|s| s.command.clear()), "executor_command", ""),
            (
                Box::new(|s| {
                    s.env.insert("HEARTH_X".into(), "1".into());
                }),
                "executor_env",
                "reserved",
            ),
        ];
        for (change, field, words) in cases {
            let mut s = app();
            change(&mut s);
            let err = validate_app_spec(&s).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.reason.contains(words), "{err}");
        }
    }

    #[test]
    fn env_pairs_split_at_the_first_equals() {
        assert_eq!(parse_env_pair("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env_pair("novalue").is_err());
        assert!(parse_env_pair("=x").is_err());
    }
}
