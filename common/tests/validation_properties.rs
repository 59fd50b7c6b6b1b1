//! Property tests of the validation at the edge, with random and adversarial input: nothing
//! panics, everything accepted keeps the limits the master relies on, everything refused names
//! a field and a reason, and parsers round-trip what the formatters print.

use std::collections::HashMap;

use hearth_common::{
    duration::parse_duration,
    ids::{self, IdKind},
    proto::{ApplicationSpec, DriverSpec},
    resources::{MAX_CORES, MAX_MEMORY_MB, format_mb, parse_cores, parse_memory_mb},
    spec::{
        MAX_COMMAND_ARGS, MAX_EXECUTORS, MAX_QUEUE_NAME_BYTES, MAX_RETRIES_LIMIT, MAX_SPEC_BYTES,
        max_executors, validate_app_spec, validate_driver_spec, validate_labels,
        validate_submission_id,
    },
};
use proptest::prelude::*;

/// Numbers that matter: zero, one, the limits and around them, the type's extremes, and any.
fn edgy_u32(limit: u32) -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(limit.saturating_sub(1)),
        Just(limit),
        Just(limit.saturating_add(1)),
        Just(u32::MAX),
        any::<u32>(),
        0..=limit.saturating_add(2),
    ]
}

fn edgy_u64(limit: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(limit),
        Just(limit + 1),
        Just(u64::MAX),
        any::<u64>(),
        0..=limit + 2,
    ]
}

/// Strings as users and attackers write them: ordinary words, control characters, NULs,
/// unicode, long runs.
fn edgy_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_./-]{0,12}",
        "\\PC{0,20}",
        ".{0,8}\u{0}.{0,4}",
        "[\n\r\t ]{0,4}",
        Just(String::new()),
        Just("x".repeat(300)),
    ]
}

fn command() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        proptest::collection::vec(edgy_string(), 0..6),
        Just(vec!["sh".to_string(); MAX_COMMAND_ARGS + 1]),
        Just(vec!["x".repeat(MAX_SPEC_BYTES)]),
    ]
}

fn env() -> impl Strategy<Value = HashMap<String, String>> {
    proptest::collection::hash_map(edgy_string(), edgy_string(), 0..4)
}

fn driver_spec() -> impl Strategy<Value = DriverSpec> {
    (
        command(),
        edgy_u32(MAX_CORES),
        edgy_u64(MAX_MEMORY_MB),
        any::<bool>(),
        edgy_u32(MAX_RETRIES_LIMIT),
        edgy_string(),
        env(),
        edgy_string(),
        any::<i32>(),
    )
        .prop_map(
            |(command, cores, memory_mb, supervise, max_retries, name, env, queue, priority)| {
                DriverSpec {
                    command,
                    cores,
                    memory_mb,
                    supervise,
                    max_retries,
                    name,
                    env,
                    queue,
                    priority,
                    ..Default::default()
                }
            },
        )
}

fn app_spec() -> impl Strategy<Value = ApplicationSpec> {
    (
        command(),
        edgy_u32(MAX_CORES),
        edgy_u64(MAX_MEMORY_MB),
        edgy_u32(MAX_EXECUTORS),
        edgy_u32(MAX_CORES),
        proptest::option::of(edgy_u32(1000)),
        edgy_string(),
        env(),
    )
        .prop_map(
            |(
                command,
                executor_cores,
                executor_memory_mb,
                executors,
                max_cores,
                retries,
                name,
                env,
            )| {
                ApplicationSpec {
                    command,
                    executor_cores,
                    executor_memory_mb,
                    executors,
                    max_cores,
                    executor_retries: retries,
                    name,
                    env,
                    ..Default::default()
                }
            },
        )
}

/// A program as a careful user writes it: a plain program name, ordinary arguments, a short
/// name, and environment variables with plain names (none reserved) and printable values.
fn sound_program() -> impl Strategy<Value = (Vec<String>, String, HashMap<String, String>)> {
    (
        proptest::collection::vec("[a-zA-Z0-9_./=-]{1,16}", 1..6),
        "[a-zA-Z0-9 _.-]{0,40}",
        proptest::collection::hash_map("[A-GI-Z][A-Z0-9_]{0,10}", "\\PC{0,30}", 0..4),
    )
}

fn sound_driver_spec() -> impl Strategy<Value = DriverSpec> {
    (
        sound_program(),
        1..=MAX_CORES,
        1..=MAX_MEMORY_MB,
        any::<bool>(),
        0..=MAX_RETRIES_LIMIT,
    )
        .prop_map(
            |((command, name, env), cores, memory_mb, supervise, max_retries)| DriverSpec {
                command,
                cores,
                memory_mb,
                supervise,
                max_retries,
                name,
                env,
                ..Default::default()
            },
        )
}

/// Executors within every cap: a count with no core cap, or a core cap they fit under.
fn sound_app_spec() -> impl Strategy<Value = ApplicationSpec> {
    (
        sound_program(),
        1..=64u32,
        1..=MAX_MEMORY_MB,
        1..=100u32,
        any::<bool>(),
        proptest::option::of(0..=1000u32),
    )
        .prop_map(
            |((command, name, env), cores, memory_mb, executors, capped, retries)| {
                ApplicationSpec {
                    command,
                    executor_cores: cores,
                    executor_memory_mb: memory_mb,
                    executors,
                    max_cores: if capped { cores * executors } else { 0 },
                    executor_retries: retries,
                    name,
                    env,
                    ..Default::default()
                }
            },
        )
}

fn spec_bytes(name: &str, command: &[String], env: &HashMap<String, String>) -> usize {
    name.len()
        + command.iter().map(String::len).sum::<usize>()
        + env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn an_accepted_driver_spec_keeps_every_limit(spec in driver_spec()) {
        match validate_driver_spec(&spec) {
            Ok(()) => {
                prop_assert!((1..=MAX_CORES).contains(&spec.cores));
                prop_assert!((1..=MAX_MEMORY_MB).contains(&spec.memory_mb));
                prop_assert!(spec.max_retries <= MAX_RETRIES_LIMIT);
                prop_assert!(!spec.command.is_empty() && !spec.command[0].trim().is_empty());
                prop_assert!(spec.command.len() <= MAX_COMMAND_ARGS);
                prop_assert!(spec.command.iter().all(|a| !a.contains('\0')));
                prop_assert!(!spec.name.chars().any(char::is_control));
                prop_assert!(spec.queue.len() <= MAX_QUEUE_NAME_BYTES);
                prop_assert!(spec.queue.split('.').all(|part| spec.queue.is_empty() || (!part.is_empty()
                    && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'))));
                prop_assert!(spec_bytes(&spec.name, &spec.command, &spec.env) <= MAX_SPEC_BYTES);
                for (k, v) in &spec.env {
                    prop_assert!(!k.is_empty() && !k.contains('=') && !k.contains('\0'));
                    prop_assert!(!v.contains('\0'));
                }
            }
            Err(e) => {
                prop_assert!(
                    ["cores", "memory", "max_retries", "command", "name", "env", "queue"]
                        .contains(&e.field.as_str()),
                    "unexpected field {:?}", e.field
                );
                prop_assert!(!e.reason.is_empty());
            }
        }
    }

    #[test]
    fn an_accepted_application_fits_its_caps(spec in app_spec()) {
        match validate_app_spec(&spec) {
            Ok(()) => {
                prop_assert!((1..=MAX_CORES).contains(&spec.executor_cores));
                prop_assert!((1..=MAX_MEMORY_MB).contains(&spec.executor_memory_mb));
                prop_assert!(max_executors(&spec) >= 1);
                prop_assert!(max_executors(&spec) <= MAX_EXECUTORS);
                if spec.max_cores > 0 {
                    prop_assert!(
                        u64::from(spec.executors) * u64::from(spec.executor_cores)
                            <= u64::from(spec.max_cores)
                    );
                    prop_assert!(
                        u64::from(max_executors(&spec)) * u64::from(spec.executor_cores)
                            <= u64::from(spec.max_cores)
                    );
                }
                prop_assert!(!spec.command.is_empty());
            }
            Err(e) => {
                prop_assert!(!e.field.is_empty() && !e.reason.is_empty());
            }
        }
    }

    #[test]
    fn memory_and_cores_parse_what_is_printed_and_refuse_the_rest(mb in 1..=MAX_MEMORY_MB, text in "\\PC{0,12}") {
        prop_assert_eq!(parse_memory_mb("memory", &format!("{mb}m")).ok(), Some(mb));
        // What people are shown reads back: exactly below 1 GiB, to the shown tenth above.
        let shown = parse_memory_mb("memory", &format_mb(mb));
        prop_assert!(shown.is_ok(), "{:?} does not read back", format_mb(mb));
        let back = shown.unwrap_or_default();
        if mb < 1024 {
            prop_assert_eq!(back, mb);
        } else {
            let tenth = if mb < 1024 * 1024 { 1024 / 10 } else { 1024 * 1024 / 10 };
            prop_assert!(back.abs_diff(mb) <= tenth, "{} -> {} -> {}", mb, format_mb(mb), back);
        }
        if let Ok(parsed) = parse_memory_mb("memory", &text) {
            prop_assert!((1..=MAX_MEMORY_MB).contains(&parsed));
        }
        if let Ok(cores) = parse_cores("cores", &text) {
            prop_assert!((1..=MAX_CORES).contains(&cores));
        }
        if let Err(e) = parse_duration("timeout", &text) {
            prop_assert_eq!(e.field.as_str(), "timeout");
        }
    }

    #[test]
    fn ids_the_master_makes_are_ids_it_accepts(started in 0i64..4_102_444_800_000, seq in any::<u64>(), text in "\\PC{0,40}") {
        let driver = ids::driver_id(started, seq);
        prop_assert!(ids::check_id("driver_id", &driver, IdKind::Driver).is_ok());
        let app = ids::app_id(started, seq);
        prop_assert!(ids::check_id("app_id", &app, IdKind::App).is_ok());
        prop_assert!(ids::check_id("app_id", &driver, IdKind::App).is_err());
        // Anything else: refused or a well-formed id, never a path or a control character.
        if ids::check_id("driver_id", &text, IdKind::Driver).is_ok() {
            prop_assert!(text.starts_with("driver-"));
            prop_assert!(!text.contains('/') && !text.chars().any(char::is_control));
        }
        let accepted = validate_submission_id(&text).is_ok();
        let expected = !text.is_empty() && text.len() <= 128
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        prop_assert_eq!(accepted, expected);
    }

    #[test]
    fn labels_are_bounded_and_clean(labels in proptest::collection::vec((edgy_string(), edgy_string()), 0..40)) {
        if validate_labels(labels.iter().map(|(k, v)| (k, v))).is_ok() {
            prop_assert!(labels.len() <= hearth_common::spec::MAX_LABELS);
            for (k, v) in &labels {
                prop_assert!(!k.is_empty() && k.len() <= 63 && !k.contains(' '));
                prop_assert!(!k.chars().any(char::is_control) && !v.chars().any(char::is_control));
            }
        }
    }
}

proptest! {
    // Sound input has fewer corners than hostile input: fewer cases find what there is.
    #![proptest_config(ProptestConfig {
        cases: 500,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    // The other side: what a careful user sends is taken. (Without these, a validator that
    // refused everything would pass every property above.)
    #[test]
    fn a_sound_driver_spec_is_accepted(spec in sound_driver_spec()) {
        let verdict = validate_driver_spec(&spec);
        prop_assert!(verdict.is_ok(), "{:?} refused: {:?}", spec, verdict);
    }

    #[test]
    fn a_sound_application_is_accepted(spec in sound_app_spec()) {
        let verdict = validate_app_spec(&spec);
        prop_assert!(verdict.is_ok(), "{:?} refused: {:?}", spec, verdict);
    }

    #[test]
    fn sound_labels_are_accepted(labels in proptest::collection::btree_map("[a-z0-9._/-]{1,63}", "[a-zA-Z0-9 ._-]{0,60}", 0..8)) {
        let verdict = validate_labels(&labels);
        prop_assert!(verdict.is_ok(), "{:?} refused: {:?}", labels, verdict);
    }
}
