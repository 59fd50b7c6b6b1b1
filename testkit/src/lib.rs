//! What Hearth's end-to-end tests and `hearth-bench` share to drive the real thing: `hearth`
//! processes started on loopback and reaped when dropped, HTTP requests to their web ports, and
//! readings of `/proc`.
//!
//! - [`process`]: a child killed when dropped, the line a process prints when it is up, and
//!   `/proc` readings (liveness, a driver's copies, CPU time, resident memory).
//! - [`master`]: `hearth master` on loopback ports, started and read back (URL, web address).
//! - [`http`]: plain HTTP requests and their status, headers and body.
//! - [`wait`]: polling a condition until it holds or a limit passes.
//!
//! Functions return errors rather than panic: the tests turn them into failures with their
//! message, the benchmark into its own errors.

pub mod http;
pub mod master;
pub mod process;
pub mod wait;

/// What went wrong driving a process or reading its answers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unexpected(String),
    #[error("{what}: not within {limit:?}")]
    Timeout {
        what: String,
        limit: std::time::Duration,
    },
    #[error("HTTP {method} {url}: {reason}")]
    Http {
        method: String,
        url: String,
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
