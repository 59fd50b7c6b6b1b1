//! Reading a driver's or executor's stdout/stderr files for the master, one chunk per request.

use std::{
    io::{Read, Seek, SeekFrom},
    path::Path,
};

use hearth_common::proto::{LogData, LogStream, ReadLogChunk};

/// Most bytes sent in one chunk, whatever was asked.
const MAX_CHUNK: u32 = 1024 * 1024;

/// Answers a log request. A missing file reads as empty (the driver has not written yet).
pub fn read_chunk(work_dir: &Path, request: &ReadLogChunk) -> LogData {
    let mut answer = LogData {
        request_id: request.request_id,
        ..Default::default()
    };
    // The name becomes a path: only well-formed ids, never `..` or absolute paths.
    let process = match hearth_common::ids::ProcessRef::parse("process", &request.process) {
        Ok(p) => p,
        Err(e) => {
            answer.error = e.to_string();
            return answer;
        }
    };
    let name = match LogStream::try_from(request.stream) {
        Ok(LogStream::Stderr) => "stderr",
        _ => "stdout",
    };
    let path = process.dir_in(work_dir).join(name);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return answer,
        Err(e) => {
            answer.error = format!("{}: {e}", path.display());
            return answer;
        }
    };
    let result = (|| -> std::io::Result<()> {
        let size = file.metadata()?.len();
        let start = if request.offset < 0 {
            size.saturating_sub(request.offset.unsigned_abs())
        } else {
            (request.offset as u64).min(size)
        };
        let want = u64::from(request.max_bytes.clamp(1, MAX_CHUNK)).min(size - start);
        file.seek(SeekFrom::Start(start))?;
        let mut data = Vec::with_capacity(want as usize);
        file.take(want).read_to_end(&mut data)?;
        answer.offset = start;
        answer.size = size;
        answer.data = data;
        Ok(())
    })();
    if let Err(e) = result {
        answer.error = format!("{}: {e}", path.display());
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(offset: i64, max_bytes: u32) -> ReadLogChunk {
        ReadLogChunk {
            request_id: 7,
            process: "driver-20261121143000-0000".into(),
            stream: LogStream::Stdout as i32,
            offset,
            max_bytes,
        }
    }

    #[test]
    fn reads_from_an_offset_and_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let ddir = dir.path().join("driver-20261121143000-0000");
        std::fs::create_dir_all(&ddir).unwrap();
        std::fs::write(ddir.join("stdout"), b"hello world").unwrap();

        let a = read_chunk(dir.path(), &request(0, 5));
        assert_eq!(
            (a.data.as_slice(), a.offset, a.size, a.request_id),
            (&b"hello"[..], 0, 11, 7)
        );
        let a = read_chunk(dir.path(), &request(6, 100));
        assert_eq!(a.data, b"world");
        let a = read_chunk(dir.path(), &request(-5, 100));
        assert_eq!((a.data.as_slice(), a.offset), (&b"world"[..], 6));
        let a = read_chunk(dir.path(), &request(50, 100));
        assert!(a.data.is_empty() && a.error.is_empty());
    }

    #[test]
    fn missing_files_read_empty_and_bad_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = read_chunk(dir.path(), &request(0, 10));
        assert!(a.data.is_empty() && a.error.is_empty());
        let mut r = request(0, 10);
        for bad in ["../../etc/passwd", "app-1/../../x", "/etc/passwd"] {
            r.process = bad.into();
            assert!(!read_chunk(dir.path(), &r).error.is_empty(), "{bad}");
        }
        let exec = dir.path().join("app-20261121143000-0001").join("2");
        std::fs::create_dir_all(&exec).unwrap();
        std::fs::write(exec.join("stdout"), b"from an executor").unwrap();
        r.process = "app-20261121143000-0001/2".into();
        r.max_bytes = 100;
        assert_eq!(read_chunk(dir.path(), &r).data, b"from an executor");
    }
}
