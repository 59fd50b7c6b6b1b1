//! What a keeper started ahead of its launch (a spare) is told to run, as the worker writes it
//! on the keeper's stdin: one length-prefixed message, before the lease numbers that follow on
//! the same pipe.
//!
//! Layout, all integers little-endian: the body's length (u32), then the body: the lease
//! deadline (u64), the work directory, the stdout and stderr files, the program (each a u32
//! length and its bytes), the number of arguments (u32) and each argument, the number of
//! environment variables (u32) and each name and value. Paths and strings are raw bytes: a
//! Unix path need not be UTF-8.

use std::{
    ffi::OsString,
    io::Read,
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::PathBuf,
};

/// The longest message a keeper reads: far above any real command line and environment
/// (Linux's own limit on both together is a quarter of the stack limit, 2 MiB by default).
pub const MAX_SPEC_BYTES: u32 = 16 << 20;

/// One process to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The lease's end (`CLOCK_BOOTTIME` ns), or [`super::NO_LEASE`].
    pub deadline: u64,
    /// The process's work directory: its working directory and where its files are.
    pub dir: PathBuf,
    /// Appended to, created when missing.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub program: OsString,
    pub args: Vec<OsString>,
    /// The program's whole environment.
    pub env: Vec<(OsString, OsString)>,
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The worker closed the pipe before a message began: the spare is not needed.
    #[error("the worker closed the pipe before sending a process")]
    Closed,
    #[error("reading the process to run: {0}")]
    Read(#[from] std::io::Error),
    #[error("the process to run is {0} bytes, more than the {MAX_SPEC_BYTES} a keeper reads")]
    TooLong(u32),
    #[error("the process to run is malformed: {0}")]
    Malformed(&'static str),
}

impl Spec {
    /// The message, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        body.extend_from_slice(&self.deadline.to_le_bytes());
        for field in [
            self.dir.as_os_str(),
            self.stdout.as_os_str(),
            self.stderr.as_os_str(),
            self.program.as_os_str(),
        ] {
            put(&mut body, field.as_bytes());
        }
        put_count(&mut body, self.args.len());
        for arg in &self.args {
            put(&mut body, arg.as_bytes());
        }
        put_count(&mut body, self.env.len());
        for (key, value) in &self.env {
            put(&mut body, key.as_bytes());
            put(&mut body, value.as_bytes());
        }
        let mut message = Vec::with_capacity(body.len() + 4);
        put(&mut message, &body);
        message
    }

    /// Reads exactly one message from `input`, nothing after it (the lease numbers that
    /// follow are the caller's).
    pub fn read_from(input: &mut impl Read) -> Result<Self, SpecError> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < len.len() {
            match input.read(&mut len[got..]) {
                Ok(0) if got == 0 => return Err(SpecError::Closed),
                Ok(0) => return Err(SpecError::Malformed("the length is cut short")),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let len = u32::from_le_bytes(len);
        if len > MAX_SPEC_BYTES {
            return Err(SpecError::TooLong(len));
        }
        let mut body = vec![0u8; len as usize];
        input.read_exact(&mut body)?;
        Self::decode(&body)
    }

    fn decode(body: &[u8]) -> Result<Self, SpecError> {
        let mut r = Reader(body);
        let deadline = u64::from_le_bytes(
            r.take(8)?
                .try_into()
                .map_err(|_| SpecError::Malformed("the deadline"))?,
        );
        let dir = PathBuf::from(r.string()?);
        let stdout = PathBuf::from(r.string()?);
        let stderr = PathBuf::from(r.string()?);
        let program = r.string()?;
        let args = (0..r.count()?)
            .map(|_| r.string())
            .collect::<Result<_, _>>()?;
        let env = (0..r.count()?)
            .map(|_| Ok((r.string()?, r.string()?)))
            .collect::<Result<_, SpecError>>()?;
        if !r.0.is_empty() {
            return Err(SpecError::Malformed("bytes after the environment"));
        }
        Ok(Self {
            deadline,
            dir,
            stdout,
            stderr,
            program,
            args,
            env,
        })
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths fit: the whole message is refused above MAX_SPEC_BYTES when read.
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SpecError> {
        if self.0.len() < n {
            return Err(SpecError::Malformed("a field runs past the end"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn count(&mut self) -> Result<usize, SpecError> {
        let bytes = self.take(4)?;
        let n = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        // Each item takes at least 4 bytes: a count beyond that is a lie, not an allocation.
        if n > self.0.len() / 4 {
            return Err(SpecError::Malformed("a count larger than the message"));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<OsString, SpecError> {
        let n = self.count_bytes()?;
        Ok(OsString::from_vec(self.take(n)?.to_vec()))
    }

    fn count_bytes(&mut self) -> Result<usize, SpecError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            deadline: 42,
            dir: "/work/driver-1".into(),
            stdout: "/work/driver-1/stdout".into(),
            stderr: "/work/driver-1/stderr".into(),
            program: "sh".into(),
            args: vec!["-c".into(), OsString::from_vec(vec![b'e', 0xff, b'x'])],
            env: vec![("A".into(), "1".into()), ("EMPTY".into(), "".into())],
        }
    }

    #[test]
    fn a_message_reads_back_whole_and_leaves_what_follows() {
        let mut bytes = spec().encode();
        bytes.extend_from_slice(&7u64.to_le_bytes());
        let mut input = &bytes[..];
        assert_eq!(Spec::read_from(&mut input).expect("reads"), spec());
        assert_eq!(input, &7u64.to_le_bytes()[..], "the lease number is left");
    }

    #[test]
    fn a_closed_pipe_a_cut_message_and_a_huge_length_are_told_apart() {
        assert!(matches!(
            Spec::read_from(&mut &[][..]),
            Err(SpecError::Closed)
        ));
        let bytes = spec().encode();
        assert!(matches!(
            Spec::read_from(&mut &bytes[..bytes.len() - 3]),
            Err(SpecError::Read(_))
        ));
        let huge = (MAX_SPEC_BYTES + 1).to_le_bytes();
        assert!(matches!(
            Spec::read_from(&mut &huge[..]),
            Err(SpecError::TooLong(_))
        ));
        // A body whose argument count claims more than it holds.
        let mut body = 0u64.to_le_bytes().to_vec();
        for _ in 0..4 {
            put(&mut body, b"x");
        }
        put_count(&mut body, 1_000_000);
        let mut message = Vec::new();
        put(&mut message, &body);
        assert!(matches!(
            Spec::read_from(&mut &message[..]),
            Err(SpecError::Malformed(_))
        ));
    }
}
