//! Log pages: the tail of a driver's or executor's stdout/stderr, read through the master from
//! its worker over the worker's own stream, so a browser never needs to reach a worker pod.

use askama::Template;
use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use hearth_common::{
    ids::{IdKind, ProcessRef, check_id},
    proto::LogStream,
};
use serde::Deserialize;

use super::{pages::error_page, status_of};
use crate::{actor::MasterHandle, error::Error, kept_logs::Kept as KeptLog};

/// Bytes shown when the page is opened.
const TAIL_BYTES: u64 = 64 * 1024;
/// Most bytes one page shows.
const MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes asked of the worker per read (well under the stream's message limit).
const READ_CHUNK: u64 = 1024 * 1024;

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    /// How much of the end of the log to show.
    bytes: Option<u64>,
}

#[derive(Template)]
#[template(path = "logs.html")]
struct LogPage {
    base: String,
    process: String,
    stream: &'static str,
    back: String,
    other: &'static str,
    other_href: String,
    unavailable: Option<String>,
    start: u64,
    end: u64,
    size: u64,
    shown: String,
    more: Option<String>,
    more_label: String,
    text: String,
    /// Set when the text is the master's kept tail, saying so.
    kept: Option<String>,
}

fn format_bytes(n: u64) -> String {
    if n >= 1024 * 1024 && n % (1024 * 1024) == 0 {
        format!("{} MiB", n / (1024 * 1024))
    } else if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

fn parse_stream(text: &str) -> Result<(LogStream, &'static str), Error> {
    match text {
        "stdout" => Ok((LogStream::Stdout, "stdout")),
        "stderr" => Ok((LogStream::Stderr, "stderr")),
        other => Err(Error::NotFound(format!(
            "stream {other:?}: a process has stdout and stderr"
        ))),
    }
}

pub async fn driver_log(
    State(master): State<MasterHandle>,
    Path((id, stream)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    let base = super::base(&master);
    if let Err(e) = check_id("driver", &id, IdKind::Driver) {
        let e = Error::from(e);
        return error_page(&base, status_of(&e), e.to_string());
    }
    let page = format!("{base}/drivers/{id}");
    log_page(&master, ProcessRef::Driver(id), &stream, query, page).await
}

pub async fn executor_log(
    State(master): State<MasterHandle>,
    Path((id, executor, stream)): Path<(String, String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    let base = super::base(&master);
    let process = match ProcessRef::parse("executor", &format!("{id}/{executor}")) {
        Ok(p) => p,
        Err(e) => {
            let e = Error::from(e);
            return error_page(&base, status_of(&e), e.to_string());
        }
    };
    let page = format!("{base}/apps/{id}");
    log_page(&master, process, &stream, query, page).await
}

async fn log_page(
    master: &MasterHandle,
    process: ProcessRef,
    stream: &str,
    query: LogQuery,
    back: String,
) -> Response {
    let base = super::base(master);
    let (stream, stream_name) = match parse_stream(stream) {
        Ok(s) => s,
        Err(e) => return error_page(&base, status_of(&e), e.to_string()),
    };
    let bytes = query.bytes.unwrap_or(TAIL_BYTES).clamp(1, MAX_BYTES);
    let here = match &process {
        ProcessRef::Driver(id) => format!("{base}/drivers/{id}/logs"),
        ProcessRef::Executor {
            app_id,
            executor_id,
        } => format!("{base}/apps/{app_id}/executors/{executor_id}/logs"),
    };
    let other = if stream_name == "stdout" {
        "stderr"
    } else {
        "stdout"
    };
    let mut page = LogPage {
        base: base.clone(),
        process: process.to_string(),
        stream: stream_name,
        back,
        other,
        other_href: format!("{here}/{other}"),
        unavailable: None,
        start: 0,
        end: 0,
        size: 0,
        shown: format_bytes(bytes),
        more: None,
        more_label: String::new(),
        text: String::new(),
        kept: None,
    };
    let snap = master.snapshot();
    let mut status = StatusCode::OK;
    let source = match snap.log_source(&process) {
        Err(e) => return error_page(&base, status_of(&e), e.to_string()),
        Ok((worker_id, _)) => worker_id.filter(|w| master.links.get(w).is_some()),
    };
    // From the worker while it is connected; else the tail the master kept.
    let mut read = None;
    if let Some(worker_id) = &source {
        match read_tail(master, worker_id, &process, stream, bytes).await {
            Ok((start, size, data)) => read = Some(Ok((start, size, data, 0))),
            // Gone while reading: what was kept may still tell.
            Err(_) if master.links.get(worker_id).is_none() => {}
            Err(e) => read = Some(Err(e)),
        }
    }
    if read.is_none() {
        read = match master
            .kept_logs
            .read(&process, stream, -(bytes as i64), bytes)
            .await
        {
            Ok(Some(kept)) => {
                page.kept = Some(kept_note(&kept));
                Some(Ok((kept.offset, kept.size, kept.data, kept.kept_from)))
            }
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        };
    }
    match read {
        None => {
            let (worker_id, _) = snap.log_source(&process).unwrap_or((None, false));
            page.unavailable = Some(match worker_id {
                None => format!("{process} has no logs yet: it has not been placed on a worker."),
                Some(w) => format!(
                    "the logs of {process} are on {w}, which is not connected, and the master \
                     kept none of them (it ended before shipping any, or they were cut to keep \
                     the master's store within its bound)"
                ),
            });
        }
        Some(Ok((start, size, data, first))) => {
            page.start = start;
            page.end = start.saturating_add(data.len() as u64);
            page.size = size;
            page.text = String::from_utf8_lossy(&data).into_owned();
            if start > first && bytes < MAX_BYTES {
                let more = (bytes * 2).min(MAX_BYTES);
                page.more = Some(format!("{here}/{stream_name}?bytes={more}"));
                page.more_label = format_bytes(more - bytes);
            }
        }
        Some(Err(e)) => {
            status = status_of(&e);
            page.unavailable = Some(e.to_string());
        }
    }
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => error_page(
            &base,
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering a log page: {e}"),
        ),
    }
}

/// Says that the text is the master's copy, and how much of the log it holds.
pub fn kept_note(kept: &KeptLog) -> String {
    let held = kept.size.saturating_sub(kept.kept_from);
    let mut note = format!(
        "Kept by the master: {} (which ran attempt {}) is gone or not connected. ",
        kept.worker_id, kept.attempt
    );
    if kept.kept_from > 0 {
        note.push_str(&format!(
            "The last {} of {} bytes were kept; the first {} bytes were cut.",
            format_bytes(held),
            kept.size,
            kept.kept_from
        ));
    } else {
        note.push_str(&format!("All {} bytes were kept.", kept.size));
    }
    if !kept.ended {
        note.push_str(
            " It was still running when last shipped: output of its last few seconds may be \
             missing.",
        );
    }
    note
}

/// The last `bytes` of the log as `(offset of the first byte, file size, data)`, read in
/// chunks; a log that grows meanwhile is cut where it ended at the first read.
async fn read_tail(
    master: &MasterHandle,
    worker_id: &str,
    process: &ProcessRef,
    stream: LogStream,
    bytes: u64,
) -> Result<(u64, u64, Vec<u8>), Error> {
    let chunk = |n: u64| u32::try_from(n.min(READ_CHUNK)).unwrap_or(u32::MAX);
    let back = i64::try_from(bytes).unwrap_or(i64::MAX);
    let first = master
        .links
        .read_log(worker_id, process, stream, -back, chunk(bytes))
        .await?;
    let (start, size) = (first.offset, first.size);
    let odd = |what: String| {
        Error::Unavailable(format!(
            "{worker_id} answered a log read for {process} with {what}"
        ))
    };
    if start > size {
        return Err(odd(format!("offset {start} past the file's size {size}")));
    }
    let end = start.saturating_add(bytes).min(size);
    let mut data = first.data;
    loop {
        let at = start.saturating_add(data.len() as u64);
        if at >= end {
            break;
        }
        let next = master
            .links
            .read_log(
                worker_id,
                process,
                stream,
                i64::try_from(at).unwrap_or(i64::MAX),
                chunk(end - at),
            )
            .await?;
        if next.offset != at {
            // The file was truncated or replaced between reads: do not stitch pieces.
            return Err(odd(format!("offset {} where {at} was asked", next.offset)));
        }
        if next.data.is_empty() {
            break;
        }
        data.extend_from_slice(&next.data);
    }
    data.truncate(usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX));
    Ok((start, size, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(format_bytes(65_536), "64 KiB");
        assert_eq!(format_bytes(2 * 1024 * 1024), "2 MiB");
        assert_eq!(format_bytes(1000), "1000 bytes");
    }

    #[test]
    fn only_stdout_and_stderr_are_streams() {
        assert!(parse_stream("stdout").is_ok() && parse_stream("stderr").is_ok());
        let err = parse_stream("../etc").err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("stdout and stderr"));
    }
}
