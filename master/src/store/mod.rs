//! The master's durable state: one redb file, `hearth.redb`, and its journal,
//! `hearth.journal` ([`journal`]), in the state directory.
//!
//! Drivers (with their specs and any application spec), applications (with their executors),
//! workers (what they offer and what they hold) and the id counters are kept as JSON records
//! keyed by id. The actor writes what a turn changed in one unsynced transaction and one
//! journal record, synced, before it answers anyone, so an acknowledged submission is on disk;
//! a checkpoint syncs the file now and then and empties the journal. What changed is found by
//! comparing the state with the last one written: every change to a record makes a new `Arc`,
//! so unchanged records are skipped by pointer.
//!
//! Completed drivers past the in-memory window (`--retained-drivers`) move to the `history`
//! table, up to `--retained-history` of them: they are read from the file when asked for (by
//! id, or a page at a time), so what is retained grows the file, not the master's memory or its
//! turns. A restarted master reads only the other tables.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

pub mod journal;
pub mod rows;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;

pub use crate::error::StoreError;
use crate::state::{
    DriverInfo, State,
    stored::{Loaded, Meta, StoredWorker},
};

/// Bumped when a record's meaning changes so an older master refuses a newer file.
const FORMAT: u32 = 1;
pub const FILE_NAME: &str = "hearth.redb";

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const DRIVERS: TableDefinition<&str, &[u8]> = TableDefinition::new("drivers");
const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
const WORKERS: TableDefinition<&str, &[u8]> = TableDefinition::new("workers");
/// Completed drivers no longer kept in memory, by id.
const HISTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("history");
/// The sequence number of the last journal record the tables took (key `applied`); not one of
/// the tables a standby is sent.
const JOURNAL: TableDefinition<&str, u64> = TableDefinition::new("journal");

/// Records to write (`Some`) or delete (`None`), by table.
#[derive(Debug, Default)]
pub struct Changes {
    meta: Option<Vec<u8>>,
    drivers: Vec<(String, Option<Vec<u8>>)>,
    apps: Vec<(String, Option<Vec<u8>>)>,
    workers: Vec<(String, Option<Vec<u8>>)>,
    /// Completed drivers leaving memory for the history table.
    history: Vec<(String, Vec<u8>)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.meta.is_none()
            && self.drivers.is_empty()
            && self.apps.is_empty()
            && self.workers.is_empty()
            && self.history.is_empty()
    }

    pub fn records(&self) -> usize {
        usize::from(self.meta.is_some())
            + self.drivers.len()
            + self.apps.len()
            + self.workers.len()
            + self.history.len()
    }

    /// Completed drivers written straight to the history table (a benchmark's retained past).
    pub fn history_of<'a>(drivers: impl IntoIterator<Item = &'a DriverInfo>) -> Self {
        Self {
            history: drivers
                .into_iter()
                .map(|d| (d.id.clone(), encode(d)))
                .collect(),
            ..Self::default()
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data of strings, numbers and maps with string keys: serializing cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn meta(s: &State) -> Meta {
    Meta {
        format: FORMAT,
        started_ms: s.started_ms,
        next_driver_seq: s.next_driver_seq,
        next_app_seq: s.next_app_seq,
        lease_ms: s.limits.lease_ms,
    }
}

/// What changed between the state last written (`old`) and `new`.
pub fn diff(old: &State, new: &State) -> Changes {
    let mut changes = Changes::default();
    if meta(old) != meta(new) {
        changes.meta = Some(encode(&meta(new)));
    }
    changes.drivers = diff_map(&old.drivers, &new.drivers, |d| Some(encode(d.as_ref())));
    // A completed driver leaving memory (pruned) is kept in the history table.
    changes.history = changes
        .drivers
        .iter()
        .filter(|(_, bytes)| bytes.is_none())
        .filter_map(|(id, _)| old.drivers.get(id))
        .filter(|d| d.state.is_terminal())
        .map(|d| (d.id.clone(), encode(d.as_ref())))
        .collect();
    changes.apps = diff_map(&old.apps, &new.apps, |a| Some(encode(a.as_ref())));
    // Heartbeats change a worker's record in memory but not what is kept of it.
    changes.workers = diff_map(&old.workers, &new.workers, |w| {
        let stored = StoredWorker::from(w.as_ref());
        let before = old
            .workers
            .get(&w.id)
            .map(|o| StoredWorker::from(o.as_ref()));
        (before.as_ref() != Some(&stored)).then(|| encode(&stored))
    });
    changes
}

/// Changed and removed entries; `encode` may say an entry changed in no way that is kept.
/// The maps share structure with the last state written, and only the parts not shared are
/// visited, so the cost follows what changed rather than how much is kept.
fn diff_map<T: PartialEq>(
    old: &imbl::OrdMap<String, Arc<T>>,
    new: &imbl::OrdMap<String, Arc<T>>,
    encode: impl Fn(&Arc<T>) -> Option<Vec<u8>>,
) -> Vec<(String, Option<Vec<u8>>)> {
    old.diff(new)
        .filter_map(|item| match item {
            imbl::ordmap::DiffItem::Add(id, value)
            | imbl::ordmap::DiffItem::Update {
                new: (id, value), ..
            } => encode(value).map(|bytes| (id.clone(), Some(bytes))),
            imbl::ordmap::DiffItem::Remove(id, _) => Some((id.clone(), None)),
        })
        .collect()
}

/// How much of a redb file the master caches in memory. redb's default (1 GiB) would let a
/// long history, or a large kept log, grow the master by that much; what a turn writes and a
/// page reads is far less, and the rest is the kernel's page cache, not the master's memory.
pub const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Opens or creates a redb file with the master's cache size.
pub fn create_db(path: &Path) -> Result<redb::Database, redb::DatabaseError> {
    redb::Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
}

/// Narrows a path's permissions; a failure (another owner, a read-only mount) is only logged.
fn restrict(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot restrict permissions");
    }
}

pub struct Store {
    /// `None` between closing the file after a failed write and opening it again.
    db: Mutex<Option<Db>>,
    /// The journal and the next record's number; `None` while the file cannot be written.
    /// Locked after `db`, by writers only.
    writer: Mutex<Option<Writer>>,
    path: PathBuf,
    /// Why the file could be opened only for reading, when it could not be written at start
    /// (a read-only or full volume).
    read_only: Option<String>,
    /// Rows in the history table, and the most it keeps (the oldest go first).
    history_rows: std::sync::atomic::AtomicU64,
    history_limit: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Writer {
    journal: journal::Journal,
    next_seq: u64,
}

/// Completed drivers kept in the history table unless told otherwise.
pub const DEFAULT_RETAINED_HISTORY: u64 = 1_000_000;

/// The file, open for writing, or for reading only while it cannot be written.
enum Db {
    Writable(redb::Database),
    ReadOnly(redb::ReadOnlyDatabase),
    /// A file left by an unclean stop needs a repair before it can be read, and a repair writes:
    /// on a volume that cannot be written, a copy elsewhere is repaired and read instead.
    RepairedCopy(RepairedCopy),
}

impl Db {
    fn begin_read(&self) -> Result<redb::ReadTransaction, redb::TransactionError> {
        match self {
            Db::Writable(db) => db.begin_read(),
            Db::ReadOnly(db) => db.begin_read(),
            Db::RepairedCopy(copy) => copy.db.begin_read(),
        }
    }
}

/// A repaired copy of the state file in the temporary directory, removed when closed.
struct RepairedCopy {
    db: redb::Database,
    path: PathBuf,
}

impl RepairedCopy {
    fn open(original: &Path) -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!(
            "hearth-state-{}-{}.redb",
            std::process::id(),
            hearth_common::ids::now_ms()
        ));
        std::fs::copy(original, &path)
            .map_err(|e| format!("copying it to {} to repair: {e}", path.display()))?;
        restrict(&path, 0o600);
        match create_db(&path) {
            Ok(db) => Ok(Self { db, path }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(format!("repairing a copy: {e}"))
            }
        }
    }
}

impl Drop for RepairedCopy {
    fn drop(&mut self) {
        // Unlinked while still open: the space goes when the handle closes just after.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Rows of one table as the file holds them.
type Rows = BTreeMap<String, Vec<u8>>;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the state file in `dir` and reads everything in it.
    pub fn open(dir: &Path) -> Result<(Self, Loaded), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let shown = path.display().to_string();
        let open_error = |reason: String| StoreError::Open {
            path: shown.clone(),
            reason,
        };
        // Specs carry environment values (often credentials): only the master's user reads them.
        restrict(dir, 0o700);
        let (db, read_only) = match create_db(&path) {
            Ok(mut db) => {
                restrict(&path, 0o600);
                // A file that fails its checksums is refused, never half-read.
                match db.check_integrity() {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(path = %shown, "state file repaired after an unclean stop")
                    }
                    Err(e) => return Err(open_error(e.to_string())),
                }
                (Db::Writable(db), None)
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::InUse {
                    path: shown.clone(),
                });
            }
            // A volume that cannot be written (read-only, full) need not keep the master down:
            // it serves what the file holds and refuses changes until it can write.
            Err(redb::DatabaseError::Storage(e)) if path.exists() => {
                let why = format!("cannot write the state file {shown}: {e}");
                let db = match redb::ReadOnlyDatabase::open(&path) {
                    Ok(db) => Db::ReadOnly(db),
                    Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                        return Err(StoreError::InUse {
                            path: shown.clone(),
                        });
                    }
                    Err(redb::DatabaseError::RepairAborted) => Db::RepairedCopy(
                        RepairedCopy::open(&path)
                            .map_err(|copy| open_error(format!("{e}; {copy}")))?,
                    ),
                    Err(ro) => return Err(open_error(format!("{e}; read-only: {ro}"))),
                };
                tracing::error!(path = %shown, error = %e,
                    "state file opened for reading only; changes are refused until it can be written");
                (db, Some(why))
            }
            Err(e) => return Err(open_error(e.to_string())),
        };
        let store = Self {
            db: Mutex::new(Some(db)),
            writer: Mutex::new(None),
            path,
            read_only,
            history_rows: Default::default(),
            history_limit: DEFAULT_RETAINED_HISTORY.into(),
        };
        // What the journal holds beyond the tables: written into them when the file can be
        // written, read over them when it cannot.
        let unapplied = if store.read_only.is_none() {
            store.recover_journal().map_err(&open_error)?;
            Vec::new()
        } else {
            let applied = store.applied().map_err(&open_error)?;
            let records = journal::Journal::read(dir).map_err(|e| {
                open_error(format!(
                    "reading the journal {}: {e}",
                    dir.join(journal::FILE_NAME).display()
                ))
            })?;
            journal::after(records, applied, dir).map_err(&open_error)?
        };
        let loaded = store.load(&unapplied)?;
        let rows = store
            .count_history()
            .map_err(|e| open_error(e.to_string()))?;
        store
            .history_rows
            .store(rows, std::sync::atomic::Ordering::Relaxed);
        Ok((store, loaded))
    }

    /// Keeps at most `limit` completed drivers in the history table; the next write trims it.
    pub fn set_history_limit(&self, limit: u64) {
        self.history_limit
            .store(limit, std::sync::atomic::Ordering::Relaxed);
    }

    /// Completed drivers in the history table.
    pub fn history_len(&self) -> u64 {
        self.history_rows.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_history(&self) -> Result<u64, String> {
        use redb::ReadableTableMetadata;
        let txn = self.read_txn()?;
        match txn.open_table(HISTORY) {
            Ok(t) => t.len().map_err(|e| e.to_string()),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A read transaction; the lock is held only to begin it.
    fn read_txn(&self) -> Result<redb::ReadTransaction, String> {
        let db = self.db();
        let db = db.as_ref().ok_or("the state file is closed")?;
        db.begin_read().map_err(|e| e.to_string())
    }

    /// A completed driver no longer in memory, read from the history table.
    pub fn history_driver(&self, id: &str) -> Result<Option<DriverInfo>, StoreError> {
        let fail = |reason: String| StoreError::Read {
            path: self.path.display().to_string(),
            reason,
        };
        let txn = self.read_txn().map_err(fail)?;
        let table = match txn.open_table(HISTORY) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(fail(e.to_string())),
        };
        let Some(bytes) = table.get(id).map_err(|e| fail(e.to_string()))? else {
            return Ok(None);
        };
        serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(|e| fail(format!("history record {id}: {e}")))
    }

    /// Up to `limit` completed drivers from the history table, newest id first: those with an
    /// id below `before` when given, after skipping `skip`.
    pub fn history_page(
        &self,
        before: Option<&str>,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<DriverInfo>, StoreError> {
        let fail = |reason: String| StoreError::Read {
            path: self.path.display().to_string(),
            reason,
        };
        let txn = self.read_txn().map_err(fail)?;
        let table = match txn.open_table(HISTORY) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(fail(e.to_string())),
        };
        let rows = match before {
            Some(before) => table.range::<&str>(..before),
            None => table.range::<&str>(..),
        }
        .map_err(|e| fail(e.to_string()))?;
        let mut page = Vec::with_capacity(limit.min(1000));
        for row in rows.rev().skip(skip).take(limit) {
            let (key, value) = row.map_err(|e| fail(e.to_string()))?;
            page.push(
                serde_json::from_slice(value.value())
                    .map_err(|e| fail(format!("history record {}: {e}", key.value())))?,
            );
        }
        Ok(page)
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Option<Db>> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the file was opened for reading only at start, if it was.
    pub fn read_only(&self) -> Option<&str> {
        self.read_only.as_deref()
    }

    /// After a failed write: closes the file and opens it again (redb refuses every write after
    /// an I/O error until then), and writes whatever of `state` the file does not hold, so it
    /// matches the state exactly whichever way the failed write ended.
    pub fn resync(&self, state: &State) -> Result<(), StoreError> {
        let fail = |reason: String| StoreError::Write {
            path: self.path.display().to_string(),
            reason,
        };
        {
            let mut db = self.db();
            // The old handle holds the file's lock: it goes before the file is opened again.
            db.take();
            self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
            let mut reopened = create_db(&self.path).map_err(|e| fail(e.to_string()))?;
            if let Ok(false) = reopened.check_integrity() {
                tracing::warn!(path = %self.path.display(), "state file repaired after a failed write");
            }
            *db = Some(Db::Writable(reopened));
        }
        // The tables are as of their last synced commit: the journal has every turn since.
        self.recover_journal().map_err(fail)?;
        let (meta_rows, drivers, apps, workers) = self.raw().map_err(|e| fail(e.to_string()))?;
        let mut changes = Changes::default();
        let meta_now = encode(&meta(state));
        if meta_rows.get("meta") != Some(&meta_now) {
            changes.meta = Some(meta_now);
        }
        changes.drivers = differences(
            &drivers,
            state.drivers.iter().map(|(k, d)| (k, encode(d.as_ref()))),
        );
        changes.apps = differences(
            &apps,
            state.apps.iter().map(|(k, a)| (k, encode(a.as_ref()))),
        );
        changes.workers = differences(
            &workers,
            state
                .workers
                .iter()
                .map(|(k, w)| (k, encode(&StoredWorker::from(w.as_ref())))),
        );
        if !changes.is_empty() {
            tracing::info!(
                records = changes.records(),
                "state file brought up to date after a failed write"
            );
        }
        self.save(&changes)?;
        self.checkpoint()
    }

    /// Every row of every table, as bytes.
    fn raw(&self) -> Result<(Rows, Rows, Rows, Rows), String> {
        let db = self.db();
        let db = db.as_ref().ok_or("the state file is closed")?;
        let txn = db.begin_read().map_err(|e| e.to_string())?;
        let read = |def: TableDefinition<&str, &[u8]>| -> Result<Rows, String> {
            let table = match txn.open_table(def) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Rows::new()),
                Err(e) => return Err(e.to_string()),
            };
            let mut rows = Rows::new();
            for row in table.iter().map_err(|e| e.to_string())? {
                let (k, v) = row.map_err(|e| e.to_string())?;
                rows.insert(k.value().to_string(), v.value().to_vec());
            }
            Ok(rows)
        };
        Ok((read(META)?, read(DRIVERS)?, read(APPS)?, read(WORKERS)?))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every record but the history's; `unapplied` journal records are read over the
    /// tables (a file open for reading only, whose journal could not be written into it).
    fn load(&self, unapplied: &[journal::Record]) -> Result<Loaded, StoreError> {
        let shown = self.path.display().to_string();
        let io = |e: &dyn std::fmt::Display| StoreError::Open {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let (mut metas, mut drivers, mut apps, mut workers) = self.raw().map_err(|e| io(&e))?;
        for row in unapplied.iter().flat_map(|r| &r.rows) {
            let rows = match row.table {
                "meta" => &mut metas,
                "drivers" => &mut drivers,
                "apps" => &mut apps,
                "workers" => &mut workers,
                _ => continue,
            };
            match &row.value {
                Some(value) => rows.insert(row.key.clone(), value.clone()),
                None => rows.remove(&row.key),
            };
        }
        let mut loaded = Loaded::default();
        let record = |table: &'static str, key: &str, e: serde_json::Error| StoreError::Record {
            path: shown.clone(),
            table,
            key: key.to_string(),
            reason: e.to_string(),
        };
        if let Some(bytes) = metas.get("meta") {
            let meta: Meta =
                serde_json::from_slice(bytes).map_err(|e| record("meta", "meta", e))?;
            if meta.format > FORMAT {
                return Err(StoreError::Format {
                    path: shown.clone(),
                    found: meta.format,
                    reads: FORMAT,
                });
            }
            loaded.meta = Some(meta);
        }
        for (key, bytes) in &drivers {
            loaded
                .drivers
                .push(serde_json::from_slice(bytes).map_err(|e| record("driver", key, e))?);
        }
        for (key, bytes) in &apps {
            loaded
                .apps
                .push(serde_json::from_slice(bytes).map_err(|e| record("application", key, e))?);
        }
        for (key, bytes) in &workers {
            loaded
                .workers
                .push(serde_json::from_slice(bytes).map_err(|e| record("worker", key, e))?);
        }
        Ok(loaded)
    }

    /// The number of the last journal record the tables took (0 for none).
    fn applied(&self) -> Result<u64, String> {
        applied_in(&self.read_txn()?)
    }

    /// Opens the journal for writing and writes what it holds beyond the tables into them, with
    /// a synced commit, before it is emptied. After a crash the tables are as of their last
    /// synced commit, and the journal holds every acknowledged turn since.
    fn recover_journal(&self) -> Result<(), String> {
        let db = self.db();
        let Some(Db::Writable(file)) = db.as_ref() else {
            return Err("the state file is not open for writing".into());
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let (journal, records) = journal::Journal::open(dir).map_err(|e| {
            format!(
                "opening the journal {}: {e}",
                dir.join(journal::FILE_NAME).display()
            )
        })?;
        let applied = applied_in(&file.begin_read().map_err(|e| e.to_string())?)?;
        let unapplied = journal::after(records, applied, dir)?;
        let last = unapplied.last().map_or(applied, |r| r.seq);
        let mut writer = Writer {
            journal,
            next_seq: last + 1,
        };
        if !unapplied.is_empty() {
            let txn = file.begin_write().map_err(|e| e.to_string())?;
            let mut history_rows = None;
            for record in &unapplied {
                let changes = Changes::from_rows(record.rows.iter().cloned())?;
                history_rows = self.write_changes(&txn, &changes)?.or(history_rows);
            }
            set_applied(&txn, last)?;
            txn.commit().map_err(|e| e.to_string())?;
            if let Some(rows) = history_rows {
                self.history_rows
                    .store(rows, std::sync::atomic::Ordering::Relaxed);
            }
            tracing::info!(
                records = unapplied.len(),
                journal = %writer.journal.path().display(),
                "journal records written into the state file"
            );
        }
        writer
            .journal
            .clear()
            .map_err(|e| format!("emptying the journal: {e}"))?;
        *self.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(writer);
        Ok(())
    }

    /// Writes `changes` into the tables of `txn`; the history table's rows after, when it was
    /// written.
    fn write_changes(
        &self,
        txn: &redb::WriteTransaction,
        changes: &Changes,
    ) -> Result<Option<u64>, String> {
        let fail = |e: &dyn std::fmt::Display| e.to_string();
        if let Some(meta) = &changes.meta {
            let mut table = txn.open_table(META).map_err(|e| fail(&e))?;
            table
                .insert("meta", meta.as_slice())
                .map_err(|e| fail(&e))?;
        }
        for (def, rows) in [
            (DRIVERS, &changes.drivers),
            (APPS, &changes.apps),
            (WORKERS, &changes.workers),
        ] {
            if rows.is_empty() {
                continue;
            }
            let mut table = txn.open_table(def).map_err(|e| fail(&e))?;
            for (key, value) in rows {
                match value {
                    Some(bytes) => {
                        table
                            .insert(key.as_str(), bytes.as_slice())
                            .map_err(|e| fail(&e))?;
                    }
                    None => {
                        table.remove(key.as_str()).map_err(|e| fail(&e))?;
                    }
                }
            }
        }
        if changes.history.is_empty() {
            return Ok(None);
        }
        use redb::ReadableTableMetadata;
        let mut table = txn.open_table(HISTORY).map_err(|e| fail(&e))?;
        for (key, bytes) in &changes.history {
            table
                .insert(key.as_str(), bytes.as_slice())
                .map_err(|e| fail(&e))?;
        }
        let limit = self
            .history_limit
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut rows = table.len().map_err(|e| fail(&e))?;
        // The oldest ids go first.
        while rows > limit {
            if table.pop_first().map_err(|e| fail(&e))?.is_none() {
                break;
            }
            rows -= 1;
        }
        Ok(Some(rows))
    }

    /// Writes `changes` in one transaction and returns once it is durable: its journal record
    /// synced, or (a large one) the tables' commit synced.
    pub fn save(&self, changes: &Changes) -> Result<(), StoreError> {
        let fail = |e: &dyn std::fmt::Display| StoreError::Write {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let db = self.db();
        let db = match db.as_ref() {
            Some(Db::Writable(db)) => db,
            Some(Db::ReadOnly(_) | Db::RepairedCopy(_)) => {
                return Err(fail(&"the state file is open for reading only"));
            }
            None => return Err(fail(&"the state file is closed after a failed write")),
        };
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let writer = writer
            .as_mut()
            .ok_or_else(|| fail(&"the journal is closed after a failed write"))?;
        let seq = writer.next_seq;
        let journaled = journal::encoded_len(changes) <= journal::RECORD_MAX;
        let record = if journaled {
            journal::encode(seq, changes)
        } else {
            Vec::new()
        };
        let mut txn = db.begin_write().map_err(|e| fail(&e))?;
        if journaled {
            // The journal's synced record makes the turn durable; the tables' pages are synced
            // at the next checkpoint.
            txn.set_durability(redb::Durability::None)
                .map_err(|e| fail(&e))?;
        }
        let history_rows = self.write_changes(&txn, changes).map_err(|e| fail(&e))?;
        set_applied(&txn, seq).map_err(|e| fail(&e))?;
        txn.commit().map_err(|e| fail(&e))?;
        writer.next_seq = seq + 1;
        if journaled {
            writer.journal.append(&record).map_err(|e| {
                fail(&format!(
                    "appending to the journal {}: {e}",
                    writer.journal.path().display()
                ))
            })?;
        } else {
            // Synced with everything before it: the journal's records are in the tables.
            writer.journal.clear().map_err(|e| fail(&e))?;
        }
        if let Some(rows) = history_rows {
            self.history_rows
                .store(rows, std::sync::atomic::Ordering::Relaxed);
        }
        if writer.journal.wants_checkpoint()
            && let Err(e) = checkpoint(db, &mut writer.journal)
        {
            // This turn is durable in the journal; the file's next write meets the trouble.
            tracing::warn!(path = %self.path.display(), error = %e, "checkpoint of the state file failed");
        }
        Ok(())
    }

    /// Syncs the tables and empties the journal, so a restart has nothing to write again.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let fail = |e: &dyn std::fmt::Display| StoreError::Write {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let db = self.db();
        let Some(Db::Writable(db)) = db.as_ref() else {
            return Ok(());
        };
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        match writer.as_mut() {
            Some(writer) => checkpoint(db, &mut writer.journal).map_err(|e| fail(&e)),
            None => Ok(()),
        }
    }
}

/// A synced commit of the tables (making every unsynced commit before it durable), then an
/// empty journal.
fn checkpoint(db: &redb::Database, journal: &mut journal::Journal) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())?;
    journal
        .clear()
        .map_err(|e| format!("emptying the journal: {e}"))
}

fn applied_in(txn: &redb::ReadTransaction) -> Result<u64, String> {
    let table = match txn.open_table(JOURNAL) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.to_string()),
    };
    Ok(table
        .get("applied")
        .map_err(|e| e.to_string())?
        .map_or(0, |v| v.value()))
}

fn set_applied(txn: &redb::WriteTransaction, seq: u64) -> Result<(), String> {
    let mut table = txn.open_table(JOURNAL).map_err(|e| e.to_string())?;
    table.insert("applied", seq).map_err(|e| e.to_string())?;
    Ok(())
}

/// The rows to write or delete so that `file` holds exactly `now`.
fn differences<'a>(
    file: &Rows,
    now: impl Iterator<Item = (&'a String, Vec<u8>)>,
) -> Vec<(String, Option<Vec<u8>>)> {
    let mut changes = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (key, bytes) in now {
        seen.insert(key.as_str());
        if file.get(key) != Some(&bytes) {
            changes.push((key.clone(), Some(bytes)));
        }
    }
    changes.extend(
        file.keys()
            .filter(|k| !seen.contains(k.as_str()))
            .map(|k| (k.clone(), None)),
    );
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Limits;
    use hearth_common::proto::{ApplicationSpec, DriverSpec, DriverState, Register, WorkerState};
    use tokio::time::Instant;

    /// Every change between two versions of a map sharing structure is found, as a plain
    /// comparison finds it. (imbl 6.1's `OrdMap::diff` missed some: records the store never
    /// wrote, found by the random-kill recovery test.)
    #[test]
    fn the_diff_finds_every_change_a_plain_comparison_finds() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let mut map: imbl::OrdMap<String, Arc<u32>> = imbl::OrdMap::new();
            for _ in 0..rng.random_range(0..3000) {
                map.insert(
                    format!("{:05}", rng.random_range(0..5000)),
                    Arc::new(rng.random()),
                );
            }
            for _ in 0..10 {
                let old = map.clone();
                for _ in 0..rng.random_range(0..50) {
                    let key = format!("{:05}", rng.random_range(0..5000));
                    match rng.random_range(0..3) {
                        0 => {
                            map.insert(key, Arc::new(rng.random()));
                        }
                        1 => {
                            if let Some(v) = map.get_mut(&key) {
                                *Arc::make_mut(v) = v.wrapping_add(1);
                            }
                        }
                        _ => {
                            map.remove(&key);
                        }
                    }
                }
                let mut plain: Vec<(String, Option<u32>)> = map
                    .iter()
                    .filter(|(k, v)| old.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), Some(**v)))
                    .chain(
                        old.keys()
                            .filter(|k| !map.contains_key(*k))
                            .map(|k| (k.clone(), None)),
                    )
                    .collect();
                plain.sort();
                let mut found: Vec<(String, Option<u32>)> =
                    diff_map(&old, &map, |v| Some(v.to_le_bytes().to_vec()))
                        .into_iter()
                        .map(|(k, bytes)| {
                            let value = bytes
                                .map(|b| u32::from_le_bytes(b.try_into().expect("four bytes")));
                            (k, value)
                        })
                        .collect();
                found.sort();
                assert_eq!(found, plain);
            }
        }
    }

    fn cluster() -> State {
        let mut state = State::new("http://m".into(), 1_795_271_400_000, Limits::retaining(50));
        let mut effects = Vec::new();
        let register = Register {
            worker_id: "worker-a".into(),
            name: "a".into(),
            cores: 4,
            memory_mb: 4096,
            ..Default::default()
        };
        state.register_worker(
            register,
            "10.0.0.1".into(),
            1,
            Instant::now(),
            0,
            &mut effects,
        );
        let spec = DriverSpec {
            command: vec!["run".into()],
            cores: 1,
            memory_mb: 256,
            ..Default::default()
        };
        let app = ApplicationSpec {
            command: vec!["exec".into()],
            executor_cores: 1,
            executor_memory_mb: 128,
            executors: 2,
            ..Default::default()
        };
        state
            .submit_once(spec.clone(), Some(app), Some("sub-1".into()), 1)
            .expect("admitted");
        state
            .submit(DriverSpec { cores: 64, ..spec }, None, 2)
            .expect("admitted");
        state.schedule(3, &mut effects);
        state
    }

    #[test]
    fn what_is_written_is_what_a_restarted_master_reads() {
        let dir = tempfile::tempdir().unwrap();
        let empty = State::new("http://m".into(), 1_795_271_400_000, Limits::retaining(50));
        let state = cluster();
        {
            let (store, loaded) = Store::open(dir.path()).unwrap();
            assert!(loaded.meta.is_none() && loaded.drivers.is_empty());
            let changes = diff(&empty, &state);
            assert_eq!(
                changes.records(),
                1 + 2 + 1 + 1,
                "meta, 2 drivers, 1 app, 1 worker"
            );
            store.save(&changes).unwrap();
            // Nothing changed since: nothing to write.
            assert!(diff(&state, &state.clone()).is_empty());
        }
        let (_, loaded) = Store::open(dir.path()).unwrap();
        let back = State::recover(
            loaded,
            "http://new".into(),
            Instant::now(),
            10,
            Limits::retaining(50),
        );
        assert!(back.recovering, "the worker must come back first");
        assert_eq!(back.next_driver_seq, 2);
        assert_eq!(back.waiting.len(), 1, "the 64-core driver still waits");
        assert_eq!(
            back.submissions.get("sub-1").map(String::as_str),
            Some("driver-20261121143000-0000")
        );
        let running = back.driver("driver-20261121143000-0000").unwrap();
        assert_eq!(running.state, DriverState::Running);
        let w = back.worker("worker-a").unwrap();
        assert_eq!(w.state, WorkerState::Unknown);
        assert_eq!((w.cores_used, w.memory_used_mb), (3, 256 + 2 * 128));
        assert_eq!(
            back.app(running.app_id.as_deref().unwrap()).unwrap().live(),
            2
        );
        back.check_invariants().unwrap();

        // While recovering, nothing is placed; afterwards the lost worker's work is settled.
        let mut back = back;
        let mut effects = Vec::new();
        back.schedule(11, &mut effects);
        assert!(effects.is_empty());
        back.finish_recovery(12, &mut effects);
        assert_eq!(back.worker("worker-a").unwrap().state, WorkerState::Dead);
        assert_eq!(
            back.driver("driver-20261121143000-0000").unwrap().state,
            DriverState::Error
        );
        back.check_invariants().unwrap();
    }

    #[test]
    fn a_worker_that_left_is_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = cluster();
        let mut effects = Vec::new();
        state.decommission_worker("worker-a", 1, "scaled down");
        assert!(state.worker_lost("worker-a", 1, "stream closed", 5, &mut effects));
        let (store, _) = Store::open(dir.path()).unwrap();
        let empty = State::new("http://m".into(), 1_795_271_400_000, Limits::retaining(50));
        store.save(&diff(&empty, &state)).unwrap();
        drop(store);
        let (_, loaded) = Store::open(dir.path()).unwrap();
        let back = State::recover(
            loaded,
            "http://m".into(),
            Instant::now(),
            10,
            Limits::retaining(50),
        );
        assert!(!back.recovering);
        assert_eq!(
            back.worker("worker-a").unwrap().state,
            WorkerState::Decommissioned
        );
        back.check_invariants().unwrap();
    }

    /// Copies the state files of `from` into `to` while `from`'s store is open: what a crash
    /// at this moment leaves on disk (redb's header on disk names its last synced commit).
    fn crash_copy(from: &Path, to: &Path, names: &[&str]) {
        for name in names {
            std::fs::copy(from.join(name), to.join(name)).unwrap();
        }
    }

    /// Acknowledged turns whose pages the file has not synced are in the journal: a crash
    /// loses none, whether or not a checkpoint came between them, and the restart writes them
    /// into the file, so the next start finds them without the journal.
    #[test]
    fn a_crash_loses_no_saved_turn_and_the_restart_writes_them_into_the_file() {
        let live = tempfile::tempdir().unwrap();
        let empty = State::new("http://m".into(), 1_795_271_400_000, Limits::retaining(50));
        let state = cluster();
        let (store, _) = Store::open(live.path()).unwrap();
        store.save(&diff(&empty, &state)).unwrap();
        let template = state.driver("driver-20261121143000-0000").unwrap();
        let past: Vec<DriverInfo> = (0..300)
            .map(|n| DriverInfo {
                id: format!("driver-20000101000000-{n:04}"),
                ..template.as_ref().clone()
            })
            .collect();
        // One turn each: a checkpoint comes after the 256th record, the rest only journaled.
        for driver in &past {
            store.save(&Changes::history_of([driver])).unwrap();
        }

        let file_alone = tempfile::tempdir().unwrap();
        crash_copy(live.path(), file_alone.path(), &[FILE_NAME]);
        let (without_journal, loaded) = Store::open(file_alone.path()).unwrap();
        assert!(
            without_journal.history_len() < 300,
            "the file alone has only what a checkpoint synced"
        );
        drop((without_journal, loaded));

        let crashed = tempfile::tempdir().unwrap();
        crash_copy(
            live.path(),
            crashed.path(),
            &[FILE_NAME, journal::FILE_NAME],
        );
        {
            let (back, loaded) = Store::open(crashed.path()).unwrap();
            assert_eq!(loaded.drivers.len(), 2);
            assert_eq!(back.history_len(), 300);
            assert!(journal::Journal::read(crashed.path()).unwrap().is_empty());
        }
        std::fs::remove_file(crashed.path().join(journal::FILE_NAME)).unwrap();
        let (again, loaded) = Store::open(crashed.path()).unwrap();
        assert_eq!(loaded.drivers.len(), 2);
        assert_eq!(again.history_len(), 300);
        for driver in &past {
            assert!(
                again.history_driver(&driver.id).unwrap().is_some(),
                "{}",
                driver.id
            );
        }
        // And turns saved after the replay follow its numbers.
        again
            .save(&Changes::history_of([&DriverInfo {
                id: "driver-20000101000000-9999".into(),
                ..template.as_ref().clone()
            }]))
            .unwrap();
        let records = journal::Journal::read(crashed.path()).unwrap();
        assert_eq!(records.len(), 1);
        drop(again);

        // The live journal beside a file that is not its own (an empty one here) is refused,
        // and left as it was.
        let mismatched = tempfile::tempdir().unwrap();
        crash_copy(live.path(), mismatched.path(), &[journal::FILE_NAME]);
        let before = std::fs::read(mismatched.path().join(journal::FILE_NAME)).unwrap();
        let refused = Store::open(mismatched.path()).unwrap_err().to_string();
        assert!(
            refused.contains("does not follow the state file"),
            "{refused}"
        );
        assert_eq!(
            std::fs::read(mismatched.path().join(journal::FILE_NAME)).unwrap(),
            before
        );
    }

    #[test]
    fn heartbeats_alone_write_nothing() {
        let mut state = cluster();
        let before = state.clone();
        state.heartbeat("worker-a", 1, Instant::now(), 99);
        assert!(!Arc::ptr_eq(
            &before.workers["worker-a"],
            &state.workers["worker-a"]
        ));
        assert!(diff(&before, &state).is_empty());
    }

    #[test]
    fn records_written_before_later_fields_still_read() {
        let state = cluster();
        let driver = state.driver("driver-20261121143000-0000").unwrap();
        let mut record = serde_json::to_value(driver.as_ref()).unwrap();
        // As an older master wrote it: none of the fields added since.
        for field in ["ui_port", "ui_keep_prefix", "resources"] {
            record["spec"].as_object_mut().unwrap().remove(field);
        }
        for field in [
            "gang",
            "gang_timeout_ms",
            "gang_restart",
            "executor_resources",
        ] {
            record["app_spec"].as_object_mut().unwrap().remove(field);
        }
        let back: crate::state::DriverInfo = serde_json::from_value(record).unwrap();
        assert_eq!(back.spec.ui_port, 0);
        assert!(!back.app_spec.unwrap().gang);
    }
}
