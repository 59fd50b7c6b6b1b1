//! Logs kept by the master: the last part of every driver's and executor's stdout and stderr,
//! shipped by the workers (new output every few seconds, the rest when a process ends), so the
//! logs outlive the worker pods that wrote them.
//!
//! Kept in a file of their own beside the state file, so writing them never delays the state's
//! commits; bounded in total, the least recently written stream going first.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use hearth_common::{
    ids::ProcessRef,
    proto::{LogStream, LogTail},
};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

pub const FILE_NAME: &str = "kept-logs.redb";
/// What the master keeps of all logs together unless told otherwise.
pub const DEFAULT_LIMIT_BYTES: u64 = 256 * 1024 * 1024;
/// The tail of one stream a worker that says nothing asks to keep.
pub const DEFAULT_TAIL_BYTES: u64 = 1024 * 1024;
/// The most kept of one stream, whatever a worker asks.
pub const MAX_TAIL_BYTES: u64 = 64 * 1024 * 1024;
/// Shipped pieces waiting to be written (each at most a few hundred KiB, so the queue holds
/// tens of MiB at worst); a full queue slows the streams of the workers that ship.
const QUEUE: usize = 64;
/// How long a written piece may wait for the fsync that makes it survive a crash of the
/// master. Nothing waits for these writes (a worker ships and forgets), so they are not each
/// synced on their own: an fsync per piece (2.7 ms each when traced, a driver's end ships its
/// last output at once) competed for the disk with the state's commits of new submissions.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The kept stream, by `process/stream`.
const TAILS: TableDefinition<&str, &[u8]> = TableDefinition::new("tails");
/// When each was last written and how many bytes it holds: read at start instead of the tails.
const AGES: TableDefinition<&str, (u64, u64)> = TableDefinition::new("ages");

#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    #[prost(uint32, tag = "1")]
    attempt: u32,
    /// The file offset of `data`'s first byte: what came before was cut.
    #[prost(uint64, tag = "2")]
    start: u64,
    /// The file's size when last shipped.
    #[prost(uint64, tag = "3")]
    size: u64,
    #[prost(bytes = "vec", tag = "4")]
    data: Vec<u8>,
    #[prost(bool, tag = "5")]
    ended: bool,
    // Tag 6 was the time of the last write; the `ages` table keeps it.
    #[prost(string, tag = "7")]
    worker_id: String,
}

/// A piece of a kept log, as asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    pub data: Vec<u8>,
    /// The file offset of `data`'s first byte.
    pub offset: u64,
    /// The first offset kept; the bytes before it were cut.
    pub kept_from: u64,
    /// The file's size when last shipped.
    pub size: u64,
    /// The process had ended when it was last shipped: nothing after `size` is missing.
    pub ended: bool,
    pub attempt: u32,
    pub worker_id: String,
}

/// What is kept, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub bytes: u64,
    pub streams: u64,
    pub limit: u64,
    pub dropped: u64,
}

/// Streams by age, for cutting the oldest when over the limit. Never copied: a batch notes
/// what it changes ([`Undo`]).
#[derive(Debug, Default)]
#[cfg_attr(test, derive(Clone, PartialEq))]
struct Index {
    by_key: HashMap<String, (u64, u64)>,
    by_age: BTreeMap<u64, String>,
    total: u64,
    next_seq: u64,
}

impl Index {
    fn put(&mut self, key: &str, len: u64) {
        self.forget(key);
        self.next_seq += 1;
        self.by_key.insert(key.to_string(), (self.next_seq, len));
        self.by_age.insert(self.next_seq, key.to_string());
        self.total += len;
    }

    fn forget(&mut self, key: &str) {
        if let Some((seq, len)) = self.by_key.remove(key) {
            self.by_age.remove(&seq);
            self.total -= len;
        }
    }

    fn oldest(&self) -> Option<String> {
        self.by_age.values().next().cloned()
    }

    /// Puts `key` back as it was (absent for `None`).
    fn restore(&mut self, key: &str, was: Option<(u64, u64)>) {
        self.forget(key);
        if let Some((seq, len)) = was {
            self.by_key.insert(key.to_string(), (seq, len));
            self.by_age.insert(seq, key.to_string());
            self.total += len;
        }
    }
}

/// What a batch changed in the index, put back when it is dropped before [`Undo::keep`] (the
/// batch's write failed, or panicked): the streams the batch touched as they were before, not
/// a copy of the whole index (which holds a stream for every process whose log is kept, a
/// million and more in a large cluster's history, and was copied for every batch).
#[derive(Debug)]
struct Undo<'a> {
    index: &'a Mutex<Index>,
    next_seq: u64,
    before: HashMap<String, Option<(u64, u64)>>,
    kept: bool,
}

impl<'a> Undo<'a> {
    fn of(index: &'a Mutex<Index>) -> Self {
        let next_seq = lock_index(index).next_seq;
        Self {
            index,
            next_seq,
            before: HashMap::new(),
            kept: false,
        }
    }

    /// Keeps what `key` was before its first change in this batch; `index` is the locked
    /// index about to change it.
    fn note(&mut self, index: &Index, key: &str) {
        if !self.before.contains_key(key) {
            self.before
                .insert(key.to_string(), index.by_key.get(key).copied());
        }
    }

    /// The batch is written: its changes stay.
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut index = lock_index(self.index);
        for (key, was) in self.before.drain() {
            index.restore(&key, was);
        }
        index.next_seq = self.next_seq;
    }
}

fn lock_index(index: &Mutex<Index>) -> std::sync::MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(|p| p.into_inner())
}

struct Inner {
    db: redb::Database,
    path: PathBuf,
    limit: u64,
    index: Mutex<Index>,
}

/// The kept logs; cheap to clone.
#[derive(Clone)]
pub struct KeptLogs {
    inner: Arc<Inner>,
    ship: mpsc::Sender<(String, LogTail)>,
    /// Pieces dropped because the writer was behind.
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for KeptLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptLogs")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn key_of(process: &ProcessRef, stream: LogStream) -> String {
    let stream = match stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
    };
    format!("{process}/{stream}")
}

/// The most kept in memory when the file cannot be written.
const IN_MEMORY_LIMIT: u64 = 16 * 1024 * 1024;

impl KeptLogs {
    /// Opens (or creates) the kept logs in `dir` and starts the task that writes what workers
    /// ship. A damaged file is moved aside and started afresh: kept logs are not worth
    /// refusing to start over.
    pub fn open(dir: &Path, limit: u64) -> Result<Self> {
        let path = dir.join(FILE_NAME);
        let mut limit = limit;
        let db = match crate::store::create_db(&path) {
            Ok(db) => db,
            // The volume cannot be written (read-only, full): the master still starts, and
            // keeps what workers ship in memory, a little of it, until it restarts.
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => {
                limit = limit.min(IN_MEMORY_LIMIT);
                tracing::warn!(path = %path.display(), error = %e, limit,
                    "kept logs cannot be written; keeping them in memory until the master restarts");
                redb::Database::builder()
                    .create_with_backend(redb::backends::InMemoryBackend::new())
                    .map_err(|e| Error::Config(format!("kept logs in memory: {e}")))?
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::Config(format!(
                    "the kept logs {} are in use by another process (is another master running \
                     on this state directory?)",
                    path.display()
                )));
            }
            Err(e) => {
                let aside = path.with_extension("redb.damaged");
                tracing::warn!(path = %path.display(), error = %e, aside = %aside.display(),
                    "kept logs unreadable; moved aside, starting empty");
                std::fs::rename(&path, &aside)
                    .map_err(|e| Error::Config(format!("moving {} aside: {e}", path.display())))?;
                crate::store::create_db(&path)
                    .map_err(|e| Error::Config(format!("kept logs {}: {e}", path.display())))?
            }
        };
        let inner = Arc::new(Inner {
            db,
            path,
            limit,
            index: Mutex::new(Index::default()),
        });
        inner.load()?;
        let (ship, rx) = mpsc::channel(QUEUE);
        // Weak: the file closes when the last handle goes, not when the writer notices.
        tokio::spawn(write_shipped(Arc::downgrade(&inner), rx));
        Ok(Self {
            inner,
            ship,
            dropped: Default::default(),
        })
    }

    /// Queues a piece a worker shipped. Never waits: when the writer is that far behind (a
    /// disk slower than the logs), the piece is dropped and counted, so a worker's heartbeats
    /// on the same stream are never held up by the disk.
    pub fn ship(&self, worker_id: &str, tail: LogTail) {
        if let Err(mpsc::error::TrySendError::Full((_, tail))) =
            self.ship.try_send((worker_id.to_string(), tail))
        {
            let dropped = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if dropped.is_power_of_two() {
                tracing::warn!(worker_id, process = %tail.process, dropped = dropped + 1,
                    "kept logs are behind; shipped pieces dropped");
            }
        }
    }

    /// Up to `max_bytes` of a kept log from `offset` (negative: that many bytes before the
    /// end), or `None` when nothing of it is kept.
    pub async fn read(
        &self,
        process: &ProcessRef,
        stream: LogStream,
        offset: i64,
        max_bytes: u64,
    ) -> Result<Option<Kept>> {
        let inner = self.inner.clone();
        let key = key_of(process, stream);
        tokio::task::spawn_blocking(move || inner.read(&key, offset, max_bytes))
            .await
            .map_err(|e| Error::Internal(format!("reading kept logs: {e}")))?
    }

    /// Whether anything of this log is kept (from memory: no read of the file).
    pub fn holds(&self, process: &ProcessRef, stream: LogStream) -> bool {
        self.inner
            .lock()
            .by_key
            .contains_key(&key_of(process, stream))
    }

    pub fn usage(&self) -> Usage {
        let index = self.inner.lock();
        Usage {
            bytes: index.total,
            streams: index.by_key.len() as u64,
            limit: self.inner.limit,
            dropped: self.dropped.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Makes every piece written so far survive a crash (the writer does so about once a
    /// second on its own).
    pub fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    /// Writes shipped pieces now, synced (the writer task does this as they arrive).
    #[cfg(test)]
    pub fn apply_now(&self, batch: Vec<(String, LogTail)>) -> Result<()> {
        self.inner.apply(
            batch,
            hearth_common::ids::now_ms(),
            redb::Durability::Immediate,
        )
    }

    /// Writes shipped pieces now, as the writer task writes most of them: not synced until
    /// [`Self::sync`] (for the benchmark).
    pub fn apply_unsynced_now(&self, batch: Vec<(String, LogTail)>) -> Result<()> {
        self.inner
            .apply(batch, hearth_common::ids::now_ms(), redb::Durability::None)
    }
}

async fn write_shipped(inner: std::sync::Weak<Inner>, mut rx: mpsc::Receiver<(String, LogTail)>) {
    // Since when something written is not yet synced.
    let mut unsynced: Option<tokio::time::Instant> = None;
    loop {
        let next = match unsynced {
            None => rx.recv().await,
            Some(since) => match tokio::time::timeout_at(since + SYNC_EVERY, rx.recv()).await {
                Ok(next) => next,
                Err(_sync_due) => {
                    let Some(inner) = inner.upgrade() else {
                        return;
                    };
                    match tokio::task::spawn_blocking(move || inner.sync()).await {
                        Ok(Ok(())) => unsynced = None,
                        Ok(Err(e)) => tracing::warn!(error = %e, "kept logs not synced"),
                        Err(e) => tracing::warn!(error = %e, "kept logs not synced"),
                    }
                    continue;
                }
            },
        };
        let Some(first) = next else {
            if let (Some(_), Some(inner)) = (unsynced, inner.upgrade()) {
                let _ = tokio::task::spawn_blocking(move || inner.sync()).await;
            }
            return;
        };
        let mut batch = vec![first];
        while batch.len() < QUEUE {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let now = tokio::time::Instant::now();
        let durable = unsynced.is_some_and(|since| now >= since + SYNC_EVERY);
        let durability = if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        let written = tokio::task::spawn_blocking(move || {
            inner.apply(batch, hearth_common::ids::now_ms(), durability)
        })
        .await;
        match written {
            Ok(Ok(())) => {
                unsynced = if durable {
                    None
                } else {
                    unsynced.or(Some(now))
                };
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "shipped logs not kept"),
            Err(e) => tracing::warn!(error = %e, "shipped logs not kept"),
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        lock_index(&self.index)
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Internal(format!("kept logs {}: {what}: {e}", self.path.display()))
    }

    fn load(&self) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.failed("open", e))?;
        let mut ages: Vec<(u64, String, u64)> = Vec::new();
        {
            // Created here so a fresh file reads as empty.
            txn.open_table(TAILS).map_err(|e| self.failed("open", e))?;
            let table = txn.open_table(AGES).map_err(|e| self.failed("open", e))?;
            for entry in table.iter().map_err(|e| self.failed("read", e))? {
                let (key, value) = entry.map_err(|e| self.failed("read", e))?;
                let (updated, len) = value.value();
                ages.push((updated, key.value().to_string(), len));
            }
        }
        txn.commit().map_err(|e| self.failed("open", e))?;
        ages.sort();
        let mut index = self.lock();
        for (_, key, len) in ages {
            index.put(&key, len);
        }
        tracing::info!(path = %self.path.display(), streams = index.by_key.len(),
            bytes = index.total, limit = self.limit, "kept logs opened");
        Ok(())
    }

    fn read(&self, key: &str, offset: i64, max_bytes: u64) -> Result<Option<Kept>> {
        let txn = self.db.begin_read().map_err(|e| self.failed("read", e))?;
        let table = match txn.open_table(TAILS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.failed("read", e)),
        };
        let Some(value) = table.get(key).map_err(|e| self.failed("read", e))? else {
            return Ok(None);
        };
        let record: Record =
            prost::Message::decode(value.value()).map_err(|e| self.failed(key, e))?;
        let end = record.start.saturating_add(record.data.len() as u64);
        let from = if offset < 0 {
            end.saturating_sub(offset.unsigned_abs())
        } else {
            offset as u64
        }
        .clamp(record.start, end);
        let to = from.saturating_add(max_bytes).min(end);
        let at = |offset: u64| usize::try_from(offset - record.start).unwrap_or(usize::MAX);
        let slice = record.data.get(at(from)..at(to)).unwrap_or_default();
        Ok(Some(Kept {
            data: slice.to_vec(),
            offset: from,
            kept_from: record.start,
            size: record.size,
            ended: record.ended,
            attempt: record.attempt,
            worker_id: record.worker_id,
        }))
    }

    /// Makes every write so far survive a crash.
    fn sync(&self) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.failed("sync", e))?;
        txn.commit().map_err(|e| self.failed("sync", e))
    }

    /// Merges shipped pieces into what is kept, then cuts the oldest streams while over the
    /// limit; one transaction for the batch.
    fn apply(
        &self,
        batch: Vec<(String, LogTail)>,
        now_ms: i64,
        durability: redb::Durability,
    ) -> Result<()> {
        // Only this writer changes the index. It changes it as it goes (the lock held for each
        // change, not over the commit, so readers of the usage are not held up), and puts back
        // what it changed when the write fails, so the index stays as the file is.
        let mut undo = Undo::of(&self.index);
        self.write(batch, now_ms, durability, &mut undo)?;
        undo.keep();
        Ok(())
    }

    /// [`Self::apply`]'s transaction, changing the index as it goes and noting in `undo`
    /// what it was.
    fn write(
        &self,
        batch: Vec<(String, LogTail)>,
        now_ms: i64,
        durability: redb::Durability,
        undo: &mut Undo<'_>,
    ) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(|e| self.failed("write", e))?;
        txn.set_durability(durability)
            .map_err(|e| self.failed("write", e))?;
        {
            let mut tails = txn.open_table(TAILS).map_err(|e| self.failed("write", e))?;
            let mut ages = txn.open_table(AGES).map_err(|e| self.failed("write", e))?;
            for (worker_id, tail) in batch {
                // The name becomes a key: only well-formed ids.
                let Ok(process) = ProcessRef::parse("process", &tail.process) else {
                    tracing::warn!(worker_id, process = %tail.process,
                        "shipped log of a malformed process name ignored");
                    continue;
                };
                // Offsets past what a file can hold would overflow the arithmetic below.
                let fits = tail.offset <= i64::MAX as u64
                    && tail.size <= i64::MAX as u64
                    && tail.offset.checked_add(tail.data.len() as u64).is_some();
                if !fits {
                    tracing::warn!(worker_id, process = %tail.process, offset = tail.offset,
                        "shipped log with an impossible offset ignored");
                    continue;
                }
                let stream = LogStream::try_from(tail.stream).unwrap_or(LogStream::Stdout);
                let key = key_of(&process, stream);
                let old = match tails
                    .get(key.as_str())
                    .map_err(|e| self.failed("read", e))?
                {
                    Some(v) => prost::Message::decode(v.value()).ok(),
                    None => None,
                };
                let Some(record) = merge(old, &tail, &worker_id) else {
                    continue;
                };
                let bytes = prost::Message::encode_to_vec(&record);
                tails
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(|e| self.failed("write", e))?;
                let len = record.data.len() as u64;
                ages.insert(key.as_str(), (now_ms.max(0) as u64, len))
                    .map_err(|e| self.failed("write", e))?;
                let mut index = self.lock();
                undo.note(&index, &key);
                index.put(&key, len);
            }
            loop {
                let oldest = {
                    let index = self.lock();
                    if index.total <= self.limit {
                        break;
                    }
                    index.oldest()
                };
                let Some(oldest) = oldest else { break };
                tails
                    .remove(oldest.as_str())
                    .map_err(|e| self.failed("write", e))?;
                ages.remove(oldest.as_str())
                    .map_err(|e| self.failed("write", e))?;
                let mut index = self.lock();
                undo.note(&index, &oldest);
                index.forget(&oldest);
            }
        }
        txn.commit().map_err(|e| self.failed("commit", e))
    }
}

/// What is kept after `tail` arrives, or `None` to keep what was (a piece of an older attempt).
fn merge(old: Option<Record>, tail: &LogTail, worker_id: &str) -> Option<Record> {
    if old.as_ref().is_some_and(|o| tail.attempt < o.attempt) {
        return None;
    }
    let fresh = || Record {
        attempt: tail.attempt,
        start: tail.offset,
        size: 0,
        data: Vec::new(),
        ended: false,
        worker_id: worker_id.to_string(),
    };
    let mut record = match old {
        Some(o) if o.attempt == tail.attempt => o,
        _ => fresh(),
    };
    let end = record.start.saturating_add(record.data.len() as u64);
    if tail.offset < record.start || tail.offset > end {
        // A gap (more was written than shipped between two pieces) or a file started over:
        // what is kept must be one run of the file.
        record.start = tail.offset;
        record.data = tail.data.clone();
    } else {
        let overlap = usize::try_from(end - tail.offset).unwrap_or(usize::MAX);
        if overlap < tail.data.len() {
            record.data.extend_from_slice(&tail.data[overlap..]);
        }
    }
    let keep = match tail.keep {
        0 => DEFAULT_TAIL_BYTES,
        n => n.min(MAX_TAIL_BYTES),
    };
    let len = record.data.len() as u64;
    if len > keep {
        let cut = (len - keep) as usize;
        record.data.drain(..cut);
        record.start += cut as u64;
    }
    record.size = record
        .size
        .max(tail.size)
        .max(record.start.saturating_add(record.data.len() as u64));
    record.ended |= tail.ended;
    record.worker_id = worker_id.to_string();
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(process: &str, offset: u64, data: &[u8], keep: u64) -> LogTail {
        LogTail {
            process: process.into(),
            attempt: 1,
            stream: LogStream::Stdout as i32,
            offset,
            data: data.to_vec(),
            size: offset + data.len() as u64,
            ended: false,
            keep,
        }
    }

    const DRIVER: &str = "driver-20261121143000-0000";

    #[test]
    fn pieces_append_overlaps_are_skipped_and_the_front_is_cut_to_the_tail() {
        let r = merge(None, &tail(DRIVER, 0, b"hello ", 8), "w").unwrap();
        let r = merge(Some(r), &tail(DRIVER, 6, b"world", 8), "w").unwrap();
        // Kept to the last 8 bytes: "lo world" from offset 3.
        assert_eq!(
            (r.start, r.data.as_slice(), r.size),
            (3, &b"lo world"[..], 11)
        );
        // The same piece again (a resend after a reconnect) changes nothing.
        let again = merge(Some(r.clone()), &tail(DRIVER, 6, b"world", 8), "w").unwrap();
        assert_eq!((again.start, again.data), (r.start, r.data.clone()));
        // A gap starts over at the new piece.
        let gap = merge(Some(r), &tail(DRIVER, 100, b"late", 8), "w").unwrap();
        assert_eq!((gap.start, gap.data.as_slice()), (100, &b"late"[..]));
    }

    #[test]
    fn a_newer_attempt_replaces_and_an_older_one_is_ignored() {
        let mut t = tail(DRIVER, 0, b"second", 100);
        t.attempt = 2;
        let r = merge(None, &t, "w2").unwrap();
        assert!(merge(Some(r.clone()), &tail(DRIVER, 6, b"old", 100), "w1").is_none());
        t.attempt = 3;
        t.data = b"third".to_vec();
        let r = merge(Some(r), &t, "w3").unwrap();
        assert_eq!((r.attempt, r.data.as_slice()), (3, &b"third"[..]));
    }

    #[test]
    fn a_batch_not_kept_leaves_the_index_as_it_was_and_a_kept_one_stays() {
        let index = Mutex::new(Index::default());
        for (key, len) in [("a", 10), ("b", 20), ("c", 30)] {
            lock_index(&index).put(key, len);
        }
        let before = lock_index(&index).clone();
        // Written again (twice), new, and cut: each noted before its first change.
        let batch = |undo: &mut Undo<'_>| {
            let mut index = lock_index(&index);
            for (key, len) in [("b", 5), ("d", 7), ("b", 9)] {
                undo.note(&index, key);
                index.put(key, len);
            }
            let oldest = index.oldest().unwrap();
            assert_eq!(oldest, "a");
            undo.note(&index, &oldest);
            index.forget(&oldest);
        };
        let mut undo = Undo::of(&index);
        batch(&mut undo);
        let changed = lock_index(&index).clone();
        assert_eq!((changed.total, changed.by_key.len()), (30 + 7 + 9, 3));
        drop(undo);
        assert_eq!(*lock_index(&index), before);
        // And it goes on from there as if the batch had never been.
        lock_index(&index).put("e", 1);
        assert_eq!(lock_index(&index).by_key["e"], (4, 1));

        let mut undo = Undo::of(&index);
        batch(&mut undo);
        undo.keep();
        let index = lock_index(&index);
        assert_eq!((index.total, index.by_key.len()), (30 + 7 + 9 + 1, 4));
        assert!(!index.by_key.contains_key("a"));
    }

    #[tokio::test]
    async fn kept_logs_survive_reopening_and_stay_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let process = ProcessRef::parse("p", DRIVER).unwrap();
        {
            let kept = KeptLogs::open(dir.path(), 1000).unwrap();
            kept.apply_now(vec![("w".into(), tail(DRIVER, 0, b"0123456789", 100))])
                .unwrap();
            let got = kept
                .read(&process, LogStream::Stdout, -4, 100)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (got.data.as_slice(), got.offset, got.size),
                (&b"6789"[..], 6, 10)
            );
        }
        let kept = KeptLogs::open(dir.path(), 1000).unwrap();
        assert_eq!(kept.usage().bytes, 10);
        // Many streams of 100 bytes each: the oldest go, the total stays at the limit.
        for i in 0..30u32 {
            let name = format!("driver-20261121143000-{i:04}");
            kept.apply_now(vec![("w".into(), tail(&name, 0, &[b'x'; 100], 100))])
                .unwrap();
        }
        let usage = kept.usage();
        assert!(usage.bytes <= 1000, "{usage:?}");
        assert_eq!(usage.streams, 10);
        let first = ProcessRef::parse("p", "driver-20261121143000-0000").unwrap();
        assert!(
            kept.read(&first, LogStream::Stdout, 0, 10)
                .await
                .unwrap()
                .is_none()
        );
        let last = ProcessRef::parse("p", "driver-20261121143000-0029").unwrap();
        assert!(
            kept.read(&last, LogStream::Stdout, 0, 10)
                .await
                .unwrap()
                .is_some()
        );
        // A malformed name is ignored, never a key.
        kept.apply_now(vec![("w".into(), tail("../etc", 0, b"x", 10))])
            .unwrap();
        assert_eq!(kept.usage().streams, 10);
    }
}
