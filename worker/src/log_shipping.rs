//! Shipping the tails of logs to the master, so they outlive this worker: the new output of
//! running processes every few seconds, and the rest of each one when it ends (including when
//! the worker decommissions and ends them). A worker killed without warning loses only what
//! was written since the last round.

use std::{
    collections::{HashMap, VecDeque},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use hearth_common::{
    ids::ProcessRef,
    proto::{LogStream, LogTail},
};

/// The most bytes one piece carries (well under the stream's message limit).
const PIECE_BYTES: u64 = 256 * 1024;
/// The most bytes one round ships, so a chatty process cannot hog the stream; the rest goes
/// in the next round.
const ROUND_BYTES: u64 = 8 * 1024 * 1024;
/// Ended processes remembered for shipping while the master cannot be reached.
const MAX_ENDED: usize = 1024;

const STREAMS: [(LogStream, &str); 2] =
    [(LogStream::Stdout, "stdout"), (LogStream::Stderr, "stderr")];

/// How far each process's two streams have been shipped.
type Shipped = HashMap<ProcessRef, [u64; 2]>;

#[derive(Debug, Default)]
struct Progress {
    shipped: Shipped,
    /// Ended processes whose last output is still to be shipped, with their attempts.
    ended: VecDeque<(ProcessRef, u32)>,
    /// Before the last round: what was shipped, and the ended processes it took. Pieces of the
    /// last round may not have left when a stream breaks; a new stream ships them again.
    before_last: Option<(Shipped, Vec<(ProcessRef, u32)>)>,
}

/// What has been shipped of which log; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shipper {
    work_dir: PathBuf,
    /// How much of the end of each log the master is asked to keep.
    keep: u64,
    progress: Arc<Mutex<Progress>>,
}

impl Shipper {
    pub fn new(work_dir: PathBuf, keep: u64) -> Self {
        Self {
            work_dir,
            keep: keep.max(1),
            progress: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new stream to the master: the last round's pieces are shipped again (the master skips
    /// what it already has), as they may have been lost with the old stream.
    pub fn reconnected(&self) {
        let mut progress = self.lock();
        if let Some((shipped, ended)) = progress.before_last.take() {
            progress.shipped = shipped;
            for e in ended.into_iter().rev() {
                progress.ended.push_front(e);
            }
        }
    }

    /// Remembers that `process` ended: its last output goes in the next round.
    pub fn ended(&self, process: ProcessRef, attempt: u32) {
        let mut progress = self.lock();
        if progress.ended.len() >= MAX_ENDED {
            progress.ended.pop_front();
        }
        progress.ended.push_back((process, attempt));
    }

    /// The pieces of one round: what ended processes and then (given) running ones wrote
    /// since their last round, the end of each log only (`keep`), at most [`ROUND_BYTES`] in
    /// all. Reads files: call off the async threads.
    pub fn round(&self, running: Option<&[(ProcessRef, u32)]>) -> Vec<LogTail> {
        let mut progress = self.lock();
        let mut budget = ROUND_BYTES;
        let mut pieces = Vec::new();
        let shipped_before = progress.shipped.clone();
        let mut taken = Vec::new();
        let mut all_ended = true;
        while let Some((process, attempt)) = progress.ended.front().cloned() {
            let done = self.ship(
                &mut progress,
                &process,
                attempt,
                true,
                &mut budget,
                &mut pieces,
            );
            if !done {
                all_ended = false;
                break;
            }
            progress.ended.pop_front();
            progress.shipped.remove(&process);
            taken.push((process, attempt));
        }
        if let Some(running) = running.filter(|_| all_ended) {
            for (process, attempt) in running {
                let done = self.ship(
                    &mut progress,
                    process,
                    *attempt,
                    false,
                    &mut budget,
                    &mut pieces,
                );
                if !done {
                    break;
                }
            }
            // Forget what neither runs nor waits to be shipped (ended before a round saw it).
            let ended: Vec<ProcessRef> = progress.ended.iter().map(|(p, _)| p.clone()).collect();
            progress
                .shipped
                .retain(|p, _| running.iter().any(|(r, _)| r == p) || ended.contains(p));
        }
        if !pieces.is_empty() || !taken.is_empty() {
            progress.before_last = Some((shipped_before, taken));
        }
        pieces
    }

    /// Adds the new output of `process`'s two logs to `pieces`; whether all of it fit.
    fn ship(
        &self,
        progress: &mut Progress,
        process: &ProcessRef,
        attempt: u32,
        ended: bool,
        budget: &mut u64,
        pieces: &mut Vec<LogTail>,
    ) -> bool {
        let dir = process.dir_in(&self.work_dir);
        let shipped = progress.shipped.entry(process.clone()).or_default();
        for (i, (stream, name)) in STREAMS.iter().enumerate() {
            let path = dir.join(name);
            let Ok(size) = std::fs::metadata(&path).map(|m| m.len()) else {
                continue;
            };
            if size < shipped[i] {
                // Truncated or replaced: start over.
                shipped[i] = 0;
            }
            let from = shipped[i].max(size.saturating_sub(self.keep));
            if from >= size {
                if ended {
                    // Nothing new, but the master learns that the log is complete.
                    pieces.push(piece(
                        process,
                        attempt,
                        *stream,
                        from,
                        Vec::new(),
                        size,
                        true,
                        self.keep,
                    ));
                }
                continue;
            }
            let mut at = from;
            while at < size {
                if *budget == 0 {
                    shipped[i] = at;
                    return false;
                }
                let want = (size - at).min(PIECE_BYTES).min(*budget);
                let Ok(data) = read_at(&path, at, want) else {
                    break;
                };
                if data.is_empty() {
                    break;
                }
                *budget -= data.len() as u64;
                let next = at + data.len() as u64;
                let last = next >= size;
                pieces.push(piece(
                    process,
                    attempt,
                    *stream,
                    at,
                    data,
                    size,
                    ended && last,
                    self.keep,
                ));
                at = next;
            }
            shipped[i] = at;
        }
        true
    }
}

#[allow(clippy::too_many_arguments)]
fn piece(
    process: &ProcessRef,
    attempt: u32,
    stream: LogStream,
    offset: u64,
    data: Vec<u8>,
    size: u64,
    ended: bool,
    keep: u64,
) -> LogTail {
    LogTail {
        process: process.to_string(),
        attempt,
        stream: stream as i32,
        offset,
        data,
        size,
        ended,
        keep,
    }
}

fn read_at(path: &Path, at: u64, want: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(at))?;
    let mut data = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    file.take(want).read_to_end(&mut data)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRIVER: &str = "driver-20261121143000-0000";

    fn setup(keep: u64) -> (tempfile::TempDir, Shipper, ProcessRef) {
        let dir = tempfile::tempdir().unwrap();
        let process = ProcessRef::parse("p", DRIVER).unwrap();
        std::fs::create_dir_all(process.dir_in(dir.path())).unwrap();
        let shipper = Shipper::new(dir.path().to_path_buf(), keep);
        (dir, shipper, process)
    }

    fn append(dir: &Path, process: &ProcessRef, name: &str, text: &[u8]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(process.dir_in(dir).join(name))
            .unwrap();
        f.write_all(text).unwrap();
    }

    #[test]
    fn a_new_stream_ships_the_last_round_again() {
        let (dir, shipper, process) = setup(1024);
        append(dir.path(), &process, "stdout", b"first ");
        let running = vec![(process.clone(), 1)];
        assert_eq!(shipper.round(Some(&running)).len(), 1);
        append(dir.path(), &process, "stdout", b"last");
        shipper.ended(process.clone(), 1);
        let lost = shipper.round(Some(&[]));
        assert_eq!(lost[0].data, b"last");
        // That round never reached the master: the new stream gets it again, not the first.
        shipper.reconnected();
        let again = shipper.round(Some(&[]));
        assert_eq!(
            (again[0].offset, again[0].data.as_slice()),
            (6, &b"last"[..])
        );
        assert!(again[0].ended);
    }

    #[test]
    fn each_round_ships_only_new_output_and_the_end_marks_the_log_complete() {
        let (dir, shipper, process) = setup(1024);
        append(dir.path(), &process, "stdout", b"first ");
        let running = vec![(process.clone(), 1)];
        let round = shipper.round(Some(&running));
        assert_eq!(round.len(), 1);
        assert_eq!(
            (round[0].offset, round[0].data.as_slice()),
            (0, &b"first "[..])
        );
        assert!(
            shipper.round(Some(&running)).is_empty(),
            "nothing new, nothing shipped"
        );
        append(dir.path(), &process, "stdout", b"second");
        append(dir.path(), &process, "stderr", b"oops");
        shipper.ended(process.clone(), 1);
        let round = shipper.round(None);
        let out: Vec<_> = round
            .iter()
            .map(|p| (p.stream, p.offset, p.data.clone(), p.ended))
            .collect();
        assert_eq!(
            out,
            vec![
                (LogStream::Stdout as i32, 6, b"second".to_vec(), true),
                (LogStream::Stderr as i32, 0, b"oops".to_vec(), true),
            ]
        );
        assert!(shipper.round(None).is_empty());
    }

    #[test]
    fn only_the_kept_tail_is_read_and_big_output_goes_in_pieces() {
        let (dir, shipper, process) = setup(600 * 1024);
        append(dir.path(), &process, "stdout", &vec![b'x'; 2 * 1024 * 1024]);
        let round = shipper.round(Some(&[(process.clone(), 1)]));
        let total: usize = round.iter().map(|p| p.data.len()).sum();
        assert_eq!(total, 600 * 1024);
        assert_eq!(round[0].offset, 2 * 1024 * 1024 - 600 * 1024);
        assert!(round.iter().all(|p| p.data.len() as u64 <= PIECE_BYTES));
    }
}
