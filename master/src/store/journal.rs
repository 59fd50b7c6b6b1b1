//! The state file's journal, `hearth.journal` beside it: each turn's rows are appended and synced
//! before the turn is acknowledged, while the B-tree takes the same rows in a commit that is not
//! synced. One synced write of one short record instead of a B-tree's scattered pages is what an
//! acknowledgement waits for; a checkpoint (one synced commit of the B-tree) now and then makes
//! the journal's records redundant and empties it.
//!
//! A record is its payload's length (u32), a CRC-32 of its sequence number and payload (u32),
//! the sequence number (u64) and the payload, all little-endian. The B-tree keeps the sequence
//! number of the last record it took; at open, the records after it are written again. Reading
//! stops at the first record that is cut off, fails its checksum or does not follow the one
//! before: what a crash in the middle of an append, or a checkpoint's emptying that never
//! reached the disk, leaves behind.

use std::{
    fs::File,
    io::{Read, Write},
    path::{Path, PathBuf},
};

use super::{Changes, rows::Row};

pub const FILE_NAME: &str = "hearth.journal";

/// A checkpoint is made once the journal holds this many bytes or records: what a restart
/// replays stays small, and so do the B-tree pages a checkpoint syncs at once.
const CHECKPOINT_BYTES: u64 = 4 << 20;
const CHECKPOINT_RECORDS: u64 = 256;

/// A turn whose record would be larger than this goes to the B-tree with a synced commit of its
/// own (a snapshot's chunk, a benchmark's retained past): the journal would only copy it.
pub const RECORD_MAX: usize = 1 << 20;

const HEADER: usize = 16;

/// The tables as a record names them: one byte, their place here.
const TABLES: [&str; 5] = ["meta", "drivers", "apps", "workers", "history"];

#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    bytes: u64,
    records: u64,
}

impl Journal {
    /// Opens (or creates) the journal in `dir` for appending, with the records it holds.
    pub fn open(dir: &Path) -> std::io::Result<(Self, Vec<Record>)> {
        let path = dir.join(FILE_NAME);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        super::restrict(&path, 0o600);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let records = decode(&bytes);
        let journal = Self {
            file,
            path,
            bytes: bytes.len() as u64,
            records: records.len() as u64,
        };
        Ok((journal, records))
    }

    /// The records of the journal in `dir`, read without writing anything (none when there is
    /// no journal).
    pub fn read(dir: &Path) -> std::io::Result<Vec<Record>> {
        match std::fs::read(dir.join(FILE_NAME)) {
            Ok(bytes) => Ok(decode(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Appends `record` (from [`encode`]) and returns once it is on disk.
    pub fn append(&mut self, record: &[u8]) -> std::io::Result<()> {
        self.file.write_all(record)?;
        self.file.sync_data()?;
        self.bytes += record.len() as u64;
        self.records += 1;
        Ok(())
    }

    /// Whether the journal has grown enough for a checkpoint.
    pub fn wants_checkpoint(&self) -> bool {
        self.bytes >= CHECKPOINT_BYTES || self.records >= CHECKPOINT_RECORDS
    }

    /// Empties the journal once the B-tree holds everything in it durably. The emptying need
    /// not reach the disk: records left behind are ones the B-tree already took.
    pub fn clear(&mut self) -> std::io::Result<()> {
        if self.bytes > 0 {
            self.file.set_len(0)?;
        }
        self.bytes = 0;
        self.records = 0;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The records after `applied`, the last record the state file took. They must start right
/// after it: a journal beginning later than that belongs with another copy of the file (one
/// restored from a backup beside the live journal, say), and its turns would be laid over a
/// file missing the ones between; the master refuses to start rather than guess.
pub fn after(records: Vec<Record>, applied: u64, dir: &Path) -> Result<Vec<Record>, String> {
    let unapplied: Vec<Record> = records.into_iter().filter(|r| r.seq > applied).collect();
    match unapplied.first() {
        Some(first) if first.seq != applied + 1 => Err(format!(
            "the journal {} does not follow the state file: the file took records up to {applied} and the journal goes on from {}, so the two are not from the same master's directory. Put back the file that belongs with this journal, or move the journal away to start from the file alone (losing the turns only the journal holds)",
            dir.join(FILE_NAME).display(),
            first.seq
        )),
        _ => Ok(unapplied),
    }
}

/// One turn's rows, as the journal holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub rows: Vec<Row>,
}

/// The length [`encode`] gives `changes`, found without copying them.
pub fn encoded_len(changes: &Changes) -> usize {
    let row =
        |key: &str, value: Option<&[u8]>| 1 + 4 + key.len() + 1 + value.map_or(0, |v| 4 + v.len());
    let mut len = HEADER + changes.meta.as_deref().map_or(0, |m| row("meta", Some(m)));
    for changed in [&changes.drivers, &changes.apps, &changes.workers] {
        len += changed
            .iter()
            .map(|(key, value)| row(key, value.as_deref()))
            .sum::<usize>();
    }
    len + changes
        .history
        .iter()
        .map(|(key, value)| row(key, Some(value)))
        .sum::<usize>()
}

/// `changes` as the record numbered `seq`.
pub fn encode(seq: u64, changes: &Changes) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 64 * changes.records());
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&seq.to_le_bytes());
    let mut row = |table: u8, key: &str, value: Option<&[u8]>| {
        out.push(table);
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        match value {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.push(0),
        }
    };
    if let Some(meta) = &changes.meta {
        row(0, "meta", Some(meta));
    }
    for (table, changed) in [
        (1, &changes.drivers),
        (2, &changes.apps),
        (3, &changes.workers),
    ] {
        for (key, value) in changed {
            row(table, key, value.as_deref());
        }
    }
    for (key, value) in &changes.history {
        row(4, key, Some(value));
    }
    let payload = (out.len() - HEADER) as u32;
    let crc = crc32fast::hash(&out[8..]);
    out[0..4].copy_from_slice(&payload.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The sound records at the start of `bytes`, each following the one before.
fn decode(mut bytes: &[u8]) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    while bytes.len() >= HEADER {
        let len = u32_at(bytes, 0) as usize;
        let crc = u32_at(bytes, 4);
        let Some(body) = bytes.get(8..HEADER + len) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        let seq = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
        if records.last().is_some_and(|last| last.seq + 1 != seq) {
            break;
        }
        let Some(rows) = decode_rows(&body[8..]) else {
            break;
        };
        records.push(Record { seq, rows });
        bytes = &bytes[HEADER + len..];
    }
    records
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default())
}

fn decode_rows(mut p: &[u8]) -> Option<Vec<Row>> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = p.split_at_checked(n)?;
        *p = rest;
        Some(head)
    }
    fn len(p: &mut &[u8]) -> Option<usize> {
        Some(u32::from_le_bytes(take(p, 4)?.try_into().ok()?) as usize)
    }
    let mut rows = Vec::new();
    while !p.is_empty() {
        let table = *TABLES.get(usize::from(take(&mut p, 1)?[0]))?;
        let key_len = len(&mut p)?;
        let key = std::str::from_utf8(take(&mut p, key_len)?)
            .ok()?
            .to_string();
        let value = match take(&mut p, 1)?[0] {
            0 => None,
            1 => {
                let value_len = len(&mut p)?;
                Some(take(&mut p, value_len)?.to_vec())
            }
            _ => return None,
        };
        rows.push(Row { table, key, value });
    }
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(n: u8) -> Changes {
        Changes::from_rows(vec![
            Row {
                table: "meta",
                key: "meta".into(),
                value: Some(vec![n]),
            },
            Row {
                table: "drivers",
                key: format!("driver-{n}"),
                value: Some(vec![n; 40]),
            },
            Row {
                table: "apps",
                key: "app-gone".into(),
                value: None,
            },
            Row {
                table: "history",
                key: format!("driver-old-{n}"),
                value: Some(b"{}".to_vec()),
            },
        ])
        .unwrap_or_default()
    }

    #[test]
    fn records_read_back_as_written_in_order() {
        let bytes: Vec<u8> = (1..=3).flat_map(|n| encode(n, &changes(n as u8))).collect();
        let back = decode(&bytes);
        assert_eq!(back.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(back[1].rows, changes(2).rows());
        assert_eq!(encoded_len(&changes(2)), encode(2, &changes(2)).len());
    }

    /// An append cut anywhere, a record whose bytes changed, and older records left after a
    /// newer one (an emptying that never reached the disk) all end the reading there.
    #[test]
    fn reading_stops_at_a_cut_a_damaged_or_an_older_record() {
        let first = encode(7, &changes(1));
        let second = encode(8, &changes(2));
        let whole: Vec<u8> = [first.clone(), second.clone()].concat();
        for cut in first.len()..whole.len() {
            assert_eq!(decode(&whole[..cut]).len(), 1, "cut at {cut}");
        }
        for at in first.len()..whole.len() {
            let mut damaged = whole.clone();
            damaged[at] ^= 0x40;
            assert_eq!(decode(&damaged).len(), 1, "byte {at} changed");
        }
        let stale: Vec<u8> = [second, encode(3, &changes(3))].concat();
        assert_eq!(decode(&stale).len(), 1);
    }

    /// Records the file already took are skipped; a journal that starts after the record
    /// following the file's last is refused, naming both numbers.
    #[test]
    fn only_records_right_after_the_files_last_are_taken() {
        let dir = Path::new("/state");
        let records = |seqs: &[u64]| -> Vec<Record> {
            seqs.iter()
                .map(|&seq| Record {
                    seq,
                    rows: Vec::new(),
                })
                .collect()
        };
        let taken = after(records(&[4, 5, 6, 7]), 5, dir).unwrap();
        assert_eq!(taken.iter().map(|r| r.seq).collect::<Vec<_>>(), [6, 7]);
        assert!(after(records(&[1, 2]), 9, dir).unwrap().is_empty());
        let refused = after(records(&[8, 9]), 5, dir).unwrap_err();
        assert!(
            refused.contains("up to 5") && refused.contains("from 8"),
            "{refused}"
        );
    }

    #[test]
    fn appended_records_are_read_at_open_and_gone_after_clearing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, found) = Journal::open(dir.path()).unwrap();
        assert!(found.is_empty());
        journal.append(&encode(1, &changes(1))).unwrap();
        journal.append(&encode(2, &changes(2))).unwrap();
        drop(journal);
        let (mut journal, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(Journal::read(dir.path()).unwrap(), found);
        journal.clear().unwrap();
        journal.append(&encode(3, &changes(3))).unwrap();
        let found = Journal::read(dir.path()).unwrap();
        assert_eq!(found.iter().map(|r| r.seq).collect::<Vec<_>>(), [3]);
    }
}
