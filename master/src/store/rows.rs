//! The state file as rows, for the standby master: a turn's changes as rows and back, the whole
//! file read as one consistent snapshot, and a file emptied before a snapshot goes in.

use redb::{ReadableTable, TableDefinition};

use super::{APPS, Changes, DRIVERS, Db, HISTORY, META, Store, WORKERS};
use crate::error::StoreError;

/// One row to write (`Some`) or delete (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub table: &'static str,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

const TABLES: [(&str, TableDefinition<&str, &[u8]>); 5] = [
    ("meta", META),
    ("drivers", DRIVERS),
    ("apps", APPS),
    ("workers", WORKERS),
    ("history", HISTORY),
];

/// The table named `name` as it is spelled on the wire.
pub fn table_named(name: &str) -> Option<&'static str> {
    TABLES.iter().find(|(n, _)| *n == name).map(|(n, _)| *n)
}

impl Changes {
    /// Every row this turn writes or deletes.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::with_capacity(self.records());
        if let Some(meta) = &self.meta {
            rows.push(Row {
                table: "meta",
                key: "meta".into(),
                value: Some(meta.clone()),
            });
        }
        for (table, changed) in [
            ("drivers", &self.drivers),
            ("apps", &self.apps),
            ("workers", &self.workers),
        ] {
            rows.extend(changed.iter().map(|(key, value)| Row {
                table,
                key: key.clone(),
                value: value.clone(),
            }));
        }
        rows.extend(self.history.iter().map(|(key, value)| Row {
            table: "history",
            key: key.clone(),
            value: Some(value.clone()),
        }));
        rows
    }

    /// The changes `rows` make; a history row is never deleted (the file trims its oldest).
    pub fn from_rows(rows: impl IntoIterator<Item = Row>) -> Result<Self, String> {
        let mut changes = Self::default();
        for row in rows {
            match (row.table, row.value) {
                ("meta", value) => changes.meta = value,
                ("drivers", value) => changes.drivers.push((row.key, value)),
                ("apps", value) => changes.apps.push((row.key, value)),
                ("workers", value) => changes.workers.push((row.key, value)),
                ("history", Some(value)) => changes.history.push((row.key, value)),
                ("history", None) => {
                    return Err(format!("history row {}: a delete", row.key));
                }
                (table, _) => return Err(format!("row {}: unknown table {table:?}", row.key)),
            }
        }
        Ok(changes)
    }
}

/// The whole file as of the moment it was taken, whatever is written after.
pub struct Snapshot {
    txn: redb::ReadTransaction,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}

impl Snapshot {
    /// Hands every row to `each` in chunks of about `chunk_bytes` of keys and values (a chunk
    /// ends with the row that reaches it), table by table; stops early when `each` returns
    /// false.
    pub fn chunks(
        &self,
        chunk_bytes: usize,
        mut each: impl FnMut(Vec<Row>) -> bool,
    ) -> Result<(), String> {
        let mut rows = Vec::new();
        let mut bytes = 0;
        for (name, def) in TABLES {
            let table = match self.txn.open_table(def) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => continue,
                Err(e) => return Err(e.to_string()),
            };
            for row in table.iter().map_err(|e| e.to_string())? {
                let (k, v) = row.map_err(|e| e.to_string())?;
                let (key, value) = (k.value().to_string(), v.value().to_vec());
                bytes += key.len() + value.len();
                rows.push(Row {
                    table: name,
                    key,
                    value: Some(value),
                });
                if bytes >= chunk_bytes {
                    bytes = 0;
                    if !each(std::mem::take(&mut rows)) {
                        return Ok(());
                    }
                }
            }
        }
        if !rows.is_empty() {
            each(rows);
        }
        Ok(())
    }
}

impl Store {
    /// The file as it is now: everything committed so far, nothing committed later.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let fail = |e: &dyn std::fmt::Display| StoreError::Read {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let db = self.db();
        let db = db
            .as_ref()
            .ok_or_else(|| fail(&"the state file is closed"))?;
        let txn = db.begin_read().map_err(|e| fail(&e))?;
        Ok(Snapshot { txn })
    }

    /// Empties every table, in one transaction: the standby's file before a snapshot.
    pub fn clear(&self) -> Result<(), StoreError> {
        let fail = |e: &dyn std::fmt::Display| StoreError::Write {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let db = self.db();
        let Some(Db::Writable(db)) = db.as_ref() else {
            return Err(fail(&"the state file is not open for writing"));
        };
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let writer = writer
            .as_mut()
            .ok_or_else(|| fail(&"the journal is closed after a failed write"))?;
        let txn = db.begin_write().map_err(|e| fail(&e))?;
        for (_, def) in TABLES {
            txn.delete_table(def).map_err(|e| fail(&e))?;
        }
        super::set_applied(&txn, writer.next_seq).map_err(|e| fail(&e))?;
        txn.commit().map_err(|e| fail(&e))?;
        // Synced: nothing in the journal may be written again over the emptied tables.
        writer.next_seq += 1;
        writer.journal.clear().map_err(|e| fail(&e))?;
        self.history_rows
            .store(0, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_applied_to_an_empty_file_gives_the_same_rows() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (leader, _) = Store::open(from.path()).unwrap();
        let rows = vec![
            Row {
                table: "drivers",
                key: "d1".into(),
                value: Some(b"{\"a\":1}".to_vec()),
            },
            Row {
                table: "workers",
                key: "w1".into(),
                value: Some(b"{}".to_vec()),
            },
            Row {
                table: "history",
                key: "d0".into(),
                value: Some(b"{}".to_vec()),
            },
        ];
        leader
            .save(&Changes::from_rows(rows.clone()).unwrap())
            .unwrap();
        let (standby, _) = Store::open(to.path()).unwrap();
        standby
            .save(
                &Changes::from_rows(vec![Row {
                    table: "apps",
                    key: "stale".into(),
                    value: Some(b"{}".to_vec()),
                }])
                .unwrap(),
            )
            .unwrap();
        standby.clear().unwrap();
        let mut copied = Vec::new();
        leader
            .snapshot()
            .unwrap()
            .chunks(2, |chunk| {
                standby
                    .save(&Changes::from_rows(chunk.clone()).unwrap())
                    .unwrap();
                copied.extend(chunk);
                true
            })
            .unwrap();
        assert_eq!(copied.len(), 3);
        let mut again = Vec::new();
        standby
            .snapshot()
            .unwrap()
            .chunks(10, |c| {
                again.extend(c);
                true
            })
            .unwrap();
        assert_eq!(
            again, copied,
            "the standby holds exactly the leader's rows, the stale one gone"
        );
    }
}
